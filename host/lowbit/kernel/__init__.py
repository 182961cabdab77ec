"""Kernel-side facts: the board-configuration record (boards), the cycle and resource model
(model), the measured per-PE cost (hw_cost)."""
