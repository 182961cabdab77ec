"""Number formats, quantizers and their numpy definitions."""
