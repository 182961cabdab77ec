"""PNG plots (matplotlib, Agg backend): power over time with the marks, and modelled energy by layer."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

MAX_MARK_LINES = 200  # beyond this the mark lines would hide the curves: draw every n-th


def plot_power(recorder_or_frame, path, title: str = "power") -> str:
    """Power of every sensor over time; marks as vertical lines (colour per label)."""
    frame = recorder_or_frame.frame() if hasattr(recorder_or_frame, "frame") else recorder_or_frame
    sensors = [c for c in frame.columns if c not in ("t", "mark")]
    fig, ax = plt.subplots(figsize=(10, 4))
    for name in sensors:
        ax.plot(frame["t"], frame[name], label=f"{name} (W)", lw=1.2)
    marks = frame[frame["mark"] != ""]
    colours = {lab: f"C{(i + len(sensors)) % 10}" for i, lab in enumerate(dict.fromkeys(marks["mark"]))}
    step = max(1, len(marks) // MAX_MARK_LINES)
    for lab, colour in colours.items():
        times = marks[marks["mark"] == lab]["t"].iloc[::step]
        for k, t in enumerate(times):
            ax.axvline(t, color=colour, lw=0.6, alpha=0.5, ls="--", label=f"mark: {lab}" if k == 0 else None)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("power (W)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if sensors or colours:
        ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def plot_energy_breakdown(estimate, path, top: int = 60) -> str:
    """Stacked bars: modelled energy (uJ) per layer and op type, with each layer's baseline total.

    The ``top`` most expensive layers are shown, in model order."""
    by_op = estimate.by_op()
    base = estimate.baseline_frame.groupby("layer", sort=False)["uj"].sum()
    base_name = str(estimate.baseline.fmt)
    keep = by_op.sum(axis=1).add(base.reindex(by_op.index).fillna(0), fill_value=0).nlargest(top).index
    by_op = by_op.loc[[name for name in by_op.index if name in keep]]
    by_op = by_op.loc[:, by_op.sum() > 0]
    fig, ax = plt.subplots(figsize=(max(8, 0.32 * len(by_op) + 3), 5))
    x = range(len(by_op))
    bottom = pd.Series(0.0, index=by_op.index)
    for i, op in enumerate(by_op.columns):
        ax.bar(x, by_op[op], bottom=bottom, label=op, color=f"C{i % 10}", width=0.7)
        bottom += by_op[op]
    ax.plot(x, base.reindex(by_op.index).values, "k_", ms=12, mew=2, label=f"{base_name} total")
    ax.set_xticks(list(x))
    ax.set_xticklabels(by_op.index, rotation=75, ha="right", fontsize=7)
    ax.set_ylabel("energy per step (uJ)")
    c = estimate.counts
    ax.set_title(f"{c.fmt} ({c.mul_label}), table {estimate.table.name}: "
                 f"{estimate.total_uj():.1f} uJ vs {base_name} {estimate.baseline_uj():.1f} uJ ({estimate.ratio:.2f}x)")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)
