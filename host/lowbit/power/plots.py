"""Plots: power over time with the marks, and modelled energy by layer.

Figures are built with ``matplotlib.figure.Figure`` (no pyplot, no backend switch), so importing
lowbit never changes what ``plt.show()`` does in Jupyter. Each function returns the Figure (a
notebook displays it) and also writes it when given ``path``.
"""
from __future__ import annotations

import math

import pandas as pd
from matplotlib.figure import Figure

MAX_MARK_LINES = 200  # beyond this the mark lines would hide the curves: draw every n-th
DECADES_FOR_LOG = 2  # bars whose heights span more than 10^2 get a log axis


def _split(recorder_or_frame):
    """(frame, measured columns, modelled columns): model sensors from the Recorder, or columns named model*."""
    if hasattr(recorder_or_frame, "frame"):
        frame = recorder_or_frame.frame()
        modelled = [s.name for s in recorder_or_frame.sensors if hasattr(s, "on_mark")]
    else:
        frame = recorder_or_frame
        modelled = [c for c in frame.columns if str(c).startswith("model")]
    sensors = [c for c in frame.columns if c not in ("t", "mark")]
    return frame, [c for c in sensors if c not in modelled], [c for c in sensors if c in modelled]


def _draw_marks(ax, frame, first_colour: int, legend: bool) -> None:
    marks = frame[frame["mark"] != ""]
    colours = {lab: f"C{(i + first_colour) % 10}" for i, lab in enumerate(dict.fromkeys(marks["mark"]))}
    step = max(1, len(marks) // MAX_MARK_LINES)
    for lab, colour in colours.items():
        times = marks[marks["mark"] == lab]["t"].iloc[::step]
        for k, t in enumerate(times):
            ax.axvline(t, color=colour, lw=0.6, alpha=0.5, ls="--", label=f"mark: {lab}" if legend and k == 0 else None)


def _title(what: str, fmt, device) -> str:
    details = ", ".join(str(x) for x in (fmt, device) if x)
    return f"{what} ({details})" if details else what


def plot_power(recorder_or_frame, path=None, title: str = "power over time", *, fmt=None, device=None) -> "Figure | str":
    """Power of every sensor over time, marks as dashed lines. Measured sensors (W) and the energy
    model (its own axis and unit: arithmetic alone is orders of magnitude below a board's watts)
    are drawn on separate axes. ``fmt``/``device`` go into the title."""
    frame, measured, modelled = _split(recorder_or_frame)
    panels = [("measured", measured)] + ([("modelled", modelled)] if modelled else [])  # measured: always, or say none
    fig = Figure(figsize=(10, 3.2 * len(panels) + 0.6))
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (kind, columns) in zip(axes, panels):
        scale, unit = _power_unit(frame, columns)
        for i, name in enumerate(columns):
            ax.plot(frame["t"], frame[name] * scale, label=f"{name} ({unit})", lw=1.2, color=f"C{i % 10}")
        _draw_marks(ax, frame, len(columns), legend=ax is axes[0])
        ax.set_ylabel(f"{kind} power ({unit})")
        if not columns:
            ax.text(0.5, 0.5, "no power sensor found on this machine", ha="center", va="center",
                    transform=ax.transAxes, color="0.4")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper right", fontsize=8)
    axes[-1].set_xlabel("time since the recorder started (s)")
    fig.suptitle(_title(title, fmt, device))
    fig.tight_layout()
    return _finish(fig, path)


def _power_unit(frame, columns) -> tuple:
    peak = max((float(frame[c].abs().max()) for c in columns if frame[c].notna().any()), default=1.0)
    for scale, unit in ((1.0, "W"), (1e3, "mW"), (1e6, "uW"), (1e9, "nW")):
        if peak * scale >= 1.0 or unit == "nW":
            return scale, unit
    return 1.0, "W"


def plot_energy_breakdown(estimate, path=None, top: int = 60, *, device=None) -> "Figure | str":
    """Stacked bars: modelled energy (uJ) per layer and op type, with each layer's baseline total;
    a log axis when the bars span more than two decades. The ``top`` most expensive layers are
    shown, in model order."""
    by_op = estimate.by_op()
    base = estimate.baseline_frame.groupby("layer", sort=False)["uj"].sum()
    base_name = str(estimate.baseline.fmt)
    keep = by_op.sum(axis=1).add(base.reindex(by_op.index).fillna(0), fill_value=0).nlargest(top).index
    by_op = by_op.loc[[name for name in by_op.index if name in keep]]
    by_op = by_op.loc[:, by_op.sum() > 0]
    fig = Figure(figsize=(max(8, 0.32 * len(by_op) + 3), 5))
    ax = fig.subplots()
    x = range(len(by_op))
    bottom = pd.Series(0.0, index=by_op.index)
    for i, op in enumerate(by_op.columns):
        ax.bar(x, by_op[op], bottom=bottom, label=op, color=f"C{i % 10}", width=0.7)
        bottom += by_op[op]
    baseline = base.reindex(by_op.index).values
    ax.plot(x, baseline, "k_", ms=12, mew=2, label=f"{base_name} total")
    heights = [v for v in list(bottom.values) + list(baseline) if v > 0 and math.isfinite(v)]
    if heights and max(heights) / min(heights) > 10 ** DECADES_FOR_LOG:
        ax.set_yscale("log")
    ax.set_xticks(list(x))
    ax.set_xticklabels(by_op.index, rotation=75, ha="right", fontsize=7)
    ax.set_xlabel("layer")
    ax.set_ylabel("modelled energy per training step (uJ)")
    c = estimate.counts
    what = (f"modelled energy by layer, {c.fmt} ({c.mul_label}), table {estimate.table.name}: "
            f"{estimate.total_uj():.1f} uJ vs {base_name} {estimate.baseline_uj():.1f} uJ ({estimate.ratio:.2f}x)")
    ax.set_title(_title(what, None, device), fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return _finish(fig, path)


def _finish(fig: Figure, path):
    if path is None:
        return fig
    fig.savefig(path, dpi=110)
    return str(path)
