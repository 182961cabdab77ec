"""Energy = op counts x per-op energy, with the MLS paper's figures reproduced from the counts."""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch.nn as nn

from lowbit.energy.counting import PRODUCT_OPS, OpCounts, count_training_step
from lowbit.energy.tables import EnergyTable, get_table

PART_NAMES = {"conv": "Conv", "fc": "FC", "matmul": "MatMul", "rnn": "RNN", "bn": "BN", "ewadd": "EW-Add", "sgd": "SGD Update",
              "dq": "DQ", "bias": "Bias"}
LINEAR_PARTS = ("conv", "fc", "dq", "bias")  # the "linear layers" of ALS-POTQ's energy claim


def energy_frame(counts: OpCounts, table) -> pd.DataFrame:
    """The counts frame with ``pj`` (per op) and ``uj`` (total, microjoules) columns."""
    table = get_table(table)
    frame = counts.frame.copy()
    frame["pj"] = [table.pj(op) for op in frame["op"]]
    frame["uj"] = frame["count"] * frame["pj"] * 1e-6
    return frame


@dataclass
class Estimate:
    """Modelled energy of one training step in ``fmt`` next to the same step in a baseline (fp32)."""

    counts: OpCounts
    baseline: OpCounts
    table: EnergyTable

    @property
    def frame(self) -> pd.DataFrame:
        return energy_frame(self.counts, self.table)

    @property
    def baseline_frame(self) -> pd.DataFrame:
        return energy_frame(self.baseline, self.table)

    def total_uj(self, per_image: bool = False) -> float:
        return float(self.frame["uj"].sum()) / (self.counts.batch if per_image else 1)

    def baseline_uj(self, per_image: bool = False) -> float:
        return float(self.baseline_frame["uj"].sum()) / (self.counts.batch if per_image else 1)

    @property
    def ratio(self) -> float:
        """Baseline energy / low-bit energy (the paper's "x higher energy efficiency")."""
        return self.baseline_uj() / self.total_uj()

    def joules_per_step(self) -> float:
        return self.total_uj() * 1e-6

    def saving(self, parts=LINEAR_PARTS) -> float:
        """Fraction of the baseline's energy saved on the given parts (default: the linear layers)."""
        low = self.frame[self.frame.part.isin(parts)]["uj"].sum()
        fp = self.baseline_frame[self.baseline_frame.part.isin(parts)]["uj"].sum()
        return 1.0 - float(low / fp)

    def by_layer(self) -> pd.DataFrame:
        """Per layer: forward MACs, baseline and low-bit energy (uJ) and their ratio, in model order."""
        low = self.frame.groupby("layer", sort=False)["uj"].sum()
        fp = self.baseline_frame.groupby("layer", sort=False)["uj"].sum()
        f = self.counts.frame
        macs = f[(f.phase == "fwd") & f.part.isin(["conv", "fc", "matmul"]) & f.op.isin(
            PRODUCT_OPS)].groupby("layer", sort=False)["count"].sum()
        modules = f.groupby("layer", sort=False)["module"].first()
        out = pd.DataFrame({"module": modules, "fwd_macs": macs, "base_uj": fp, "uj": low}).reindex(modules.index)
        out["fwd_macs"] = out["fwd_macs"].fillna(0).astype("int64")
        out["ratio"] = out["base_uj"] / out["uj"]
        return out

    def by_part(self) -> pd.DataFrame:
        """Table-5 style: per part and op, count and energy in both designs."""
        def side(frame):
            return frame.groupby(["part", "op"], sort=False)[["count", "uj"]].sum()
        out = side(self.baseline_frame).join(side(self.frame), how="outer", lsuffix="_base", rsuffix="")
        return out.fillna(0)

    def by_op(self) -> pd.DataFrame:
        return self.frame.groupby(["layer", "op"], sort=False)["uj"].sum().unstack("op", fill_value=0.0)

    def summary(self) -> dict:
        parts = self.by_part().groupby(level="part")[["uj_base", "uj"]].sum()
        return {
            "format": str(self.counts.fmt),
            "table": self.table.name,
            "batch": self.counts.batch,
            "input": list(self.counts.input_shape),
            "lowbit_mul": self.counts.mul_label,
            "fwd_conv_macs": self.counts.macs("fwd", "conv"),
            "total_uj": self.total_uj(),
            "baseline": str(self.baseline.fmt),
            "baseline_total_uj": self.baseline_uj(),
            "ratio_vs_baseline": self.ratio,
            "linear_layer_saving": self.saving(),
            "parts_uj": {PART_NAMES[p]: {"baseline": float(r.uj_base), "lowbit": float(r.uj)}
                         for p, r in parts.iterrows()},
        }


def estimate(model: nn.Module, input_shape, fmt="mls:2,4", table="mls65", batch: int = 1,
             baseline="fp32", **kwargs) -> Estimate:
    """Count one training step in ``fmt`` and in ``baseline`` (fp32, or "fp8": Sun et al. 2019's FP8
    multiply with fp32 accumulation, the MLS paper's other comparison), and price both with ``table``.

    A model from lowbit.convert is counted as it runs (each twin in its format) against its plain
    original in ``baseline``, so its ratio is the plain model's in the same format."""
    counts = count_training_step(model, input_shape, batch=batch, fmt=fmt, **kwargs)
    baseline = count_training_step(model, input_shape, batch=batch, fmt=baseline, as_converted=False, **kwargs)
    return Estimate(counts, baseline, get_table(table))


def conv3x3_ratio(table="mls65", muls: int = 9, local_acc: int = 8, tree_add: int = 1, group_scale: int = 1) -> float:
    """Eq. 9 of the MLS paper: fp32 / MLS energy of a 3x3 conv's MACs (per 9 MULs)."""
    t = get_table(table)
    fp = t.pj("fp32_mul") * muls + t.pj("fp32_add") * (local_acc + tree_add)
    low = t.pj("lowbit_mul") * muls + t.pj("int_add") * local_acc + t.pj("group_scale") * group_scale \
        + t.pj("tree_add") * tree_add
    return fp / low


# Table 5 of the MLS paper (ResNet-34/ImageNet, per image, uJ) as printed, for comparison.
TABLE5_PRINTED = {
    "Conv": (25900 + 5740, 1390 + 729 + 620),
    "BN": (101 + 24.9, 101 + 24.9),
    "FC": (7.1 + 1.57, 7.1 + 1.57),
    "SGD Update": (119 + 26.4, 119 + 26.4),
    "DQ": (0.0, 249 + 27.6),
    "EW-Add": (1.47, 1.47 + 6.66),
    "Sum (printed)": (32000, 3130),
}


def table5(model, input_shape=(3, 224, 224), fmt="mls:2,4", table="mls65") -> pd.DataFrame:
    """Our Table 5: per part, fp32 and MLS energy (uJ, batch 1), every conv low-bit, FC fp32.

    ``model`` may also be an Estimate made with ``fp32_layers="linear"``."""
    est = model if isinstance(model, Estimate) else estimate(model, input_shape, fmt, table, batch=1,
                                                              fp32_layers="linear")
    parts = est.by_part().groupby(level="part", sort=False)[["uj_base", "uj"]].sum()
    parts.index = [PART_NAMES[p] for p in parts.index]
    parts.loc["Sum"] = parts.sum()
    parts["ratio"] = parts["uj_base"] / parts["uj"]
    return parts
