"""Energy model of training: op counts of one step (``counting``), per-op energy tables with their
sources (``tables``), and energy = counts x table with the papers' reproductions (``model``)."""
from lowbit.energy.counting import OPS, Gemm, OpCounts, count_training_step, gemm_ops, lowbit_mul_label
from lowbit.energy.tables import EnergyTable, get_table, table_names
from lowbit.energy.model import conv3x3_ratio, energy_frame, estimate

__all__ = [
    "OPS", "Gemm", "OpCounts", "count_training_step", "gemm_ops", "lowbit_mul_label",
    "EnergyTable", "get_table", "table_names", "conv3x3_ratio", "energy_frame", "estimate",
]
