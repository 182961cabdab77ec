"""Process-level runtime: native-library builds and memory settings."""
