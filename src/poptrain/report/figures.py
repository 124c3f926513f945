"""Matplotlib figures of a ``ReportData``: score curves, hyperparameter schedules, family tree."""

from __future__ import annotations

from typing import Any

from poptrain.records import COPY_KINDS
from poptrain.report.data import ReportData


def _plain(label: str) -> str:
    """``label`` shown as written: a ``$`` in run data does not start matplotlib's math text."""
    return label.replace("$", r"\$")


def _pyplot() -> Any:
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline"):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _numeric(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, (int, float)) for v in value):
        return float(sum(value))  # widths: the total number of hidden units
    return None


def plot_scores(data: ReportData) -> Any:
    """Every member's score over its steps, the best so far, and exploits marked."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(8, 4.5))
    for curve in data.curves:
        axis.plot(curve.steps, curve.values, linewidth=0.8, alpha=0.6)
    axis.plot(data.best_so_far.steps, data.best_so_far.values, color="black", linewidth=2, label="best so far")
    scores = {(c.slot, s): v for c in data.curves for s, v in zip(c.steps, c.values)}
    marks = [(step, scores[(slot, step)]) for slot, step, _ in data.exploits if (slot, step) in scores]
    if marks:
        axis.scatter(*zip(*marks), marker="v", color="red", s=18, zorder=3, label="exploit (copied a better member)")
    axis.set_xlabel("step")
    axis.set_ylabel(_plain(data.metric))
    axis.set_title(_plain(f"{data.run}: {data.metric} of every member"))
    axis.legend(loc="best")
    figure.tight_layout()
    return figure


def plot_schedules(data: ReportData) -> Any:
    """Each hyperparameter per member (step plots), the best model's ancestry drawn thick."""
    plt = _pyplot()
    names = [n for n, segments in data.schedules.items() if any(_numeric(s.value) is not None for s in segments)]
    figure, axes = plt.subplots(
        max(1, len(names)), 1, figsize=(8, 2.2 * max(1, len(names))), sharex=True, squeeze=False
    )
    for axis, name in zip(axes[:, 0], names):
        for segment in data.schedules[name]:
            value = _numeric(segment.value)
            if value is not None:
                axis.plot([segment.start, segment.end], [value, value], color="tab:gray", alpha=0.35, linewidth=1)
        xs, ys = [], []
        for segment in data.best_ancestry:
            value = _numeric(segment.value.get(name))
            if value is not None:
                xs += [segment.start, segment.end]
                ys += [value, value]
        if xs:
            axis.plot(xs, ys, color="tab:red", linewidth=2.2, label="best model's schedule")
        axis.set_ylabel(_plain(name))
        values = [v for v in (_numeric(s.value) for s in data.schedules[name]) if v is not None and v > 0]
        if values and min(values) > 0 and max(values) / min(values) > 50:
            axis.set_yscale("log")
    axes[0, 0].set_title(_plain(f"{data.run}: hyperparameter schedules (grey: every member)"))
    if data.best_ancestry:
        axes[0, 0].legend(loc="best")
    axes[-1, 0].set_xlabel("step")
    figure.tight_layout()
    return figure


def plot_lineage(data: ReportData) -> Any:
    """The family tree: each generation a bar on its member's row coloured by its last score,
    an arrow from the donor at every exploit."""
    plt = _pyplot()
    from matplotlib import cm, colors

    figure, axis = plt.subplots(figsize=(8, max(2.5, 0.35 * data.population + 1)))
    scores = [n.score for n in data.tree if n.score is not None]
    low, high = (min(scores), max(scores)) if scores else (0.0, 1.0)
    if data.mode == "min":
        low, high = high, low
    norm = colors.Normalize(vmin=min(low, high), vmax=max(low, high) if high != low else low + 1)
    cmap = cm.get_cmap("viridis") if hasattr(cm, "get_cmap") else plt.get_cmap("viridis")
    for node in data.tree:
        colour = cmap(norm(node.score)) if node.score is not None else "lightgrey"
        axis.plot(
            [node.start, max(node.end, node.start + 0.3)],
            [node.slot, node.slot],
            color=colour,
            linewidth=6,
            solid_capstyle="butt",
        )
        if node.kind in COPY_KINDS and node.donor is not None:
            axis.annotate(
                "",
                xy=(node.start, node.slot),
                xytext=(node.start, node.donor),
                arrowprops={"arrowstyle": "->", "color": "tab:red", "alpha": 0.6, "linewidth": 0.8},
            )
    mappable = cm.ScalarMappable(norm=norm, cmap=cmap)
    figure.colorbar(mappable, ax=axis, label=_plain(f"last {data.metric} of the generation"))
    axis.set_xlabel("step")
    axis.set_ylabel("member")
    axis.set_yticks(range(data.population))
    axis.set_title(_plain(f"{data.run}: population development (arrows: who copied whom)"))
    axis.invert_yaxis()
    figure.tight_layout()
    return figure
