"""Matplotlib figures of a ``ReportData``: score curves, hyperparameter schedules, family tree.

Every member is drawn in grey and only the winner's ancestry in colour: with 64 or 256 members
no qualitative colormap has enough distinct colours, and the question a reader asks first is
how the best model came about. Axes are logarithmic exactly where the search space says so.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

from poptrain.records import COPY_KINDS
from poptrain.report.data import ParamInfo, ReportData

WINNER = "#d62728"  # the winner's ancestry, its schedule and its star
MEMBER = "#7f7f7f"  # every other member
WIDTH = 10.0  # inches; every figure keeps this width and at most MAX_HEIGHT
MAX_HEIGHT = 9.0


def _plain(label: str) -> str:
    """``label`` shown as written: a ``$`` in run data does not start matplotlib's math text."""
    return label.replace("$", r"\$")


def _tidy(figure: Any) -> None:
    """Tight layout where it can be had; a label too long for it (a long choice option) keeps the
    default layout instead of printing matplotlib's warning."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Tight layout not applied", category=UserWarning)
        figure.tight_layout()


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
        return float(value) if math.isfinite(value) else None
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, (int, float)) for v in value):
        return float(sum(value))  # widths: the total number of hidden units
    return None


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _pieces(data: ReportData) -> list[tuple[int, int, list[int], list[float]]]:
    """Each member's curve cut where a copy starts a new generation: (slot, generation, steps, values)."""
    kinds = {n.id: n.kind for n in data.tree}
    pieces: list[tuple[int, int, list[int], list[float]]] = []
    for curve in data.curves:
        gens = curve.generations or [-1] * len(curve.steps)
        for step, value, gen in zip(curve.steps, curve.values, gens):
            last = pieces[-1] if pieces and pieces[-1][0] == curve.slot else None
            if last is None or (gen != last[1] and kinds.get(gen) in COPY_KINDS) or step <= last[2][-1]:
                pieces.append((curve.slot, gen, [step], [value]))
            else:
                last[2].append(step)
                last[3].append(value)
    return pieces


def plot_scores(data: ReportData) -> Any:
    """Every member's score over its steps (grey), the winner's ancestry in colour across the
    generations it inherited, copies as markers with a dashed jump (never a training line),
    the best-so-far curve and the winner starred with its margin over the runner-up."""
    plt = _pyplot()
    from matplotlib.collections import LineCollection

    figure, axis = plt.subplots(figsize=(WIDTH, 5.6))
    pieces = _pieces(data)
    path = set(data.ancestry_generations)
    spans = [(s.slot, s.start, s.end) for s in data.best_ancestry]
    many = len(data.curves) > 32
    grey = [list(zip(steps, values)) for _, _, steps, values in pieces if len(steps) > 1]
    axis.add_collection(
        LineCollection(grey, colors=MEMBER, linewidths=0.5 if many else 0.8, alpha=0.35 if many else 0.55, zorder=1)
    )
    single = [(steps[0], values[0]) for _, _, steps, values in pieces if len(steps) == 1]
    if single:
        axis.scatter(*zip(*single), s=3, color=MEMBER, alpha=0.5, zorder=1)
    axis.plot([], [], color=MEMBER, linewidth=0.8, label="members")
    at = {(c.slot, s): v for c in data.curves for s, v in zip(c.steps, c.values)}
    jumps: list[list[tuple[float, float]]] = []
    marks: list[tuple[float, float]] = []
    for copy in data.copies:
        donor_value = at.get((copy.donor, copy.step))
        if donor_value is not None:
            marks.append((copy.step, donor_value))
            if copy.previous_step is not None and copy.score_before is not None and math.isfinite(copy.score_before):
                jumps.append([(copy.previous_step, copy.score_before), (copy.step, donor_value)])
    if jumps:
        axis.add_collection(
            LineCollection(jumps, colors="tab:blue", linestyles="dashed", linewidths=0.6, alpha=0.45, zorder=2)
        )
    if marks:
        axis.scatter(
            *zip(*marks),
            marker="v",
            s=10 if many else 22,
            color="tab:blue",
            alpha=0.7,
            zorder=3,
            label="copy (dashed: the member's jump to the copied model)",
        )
    # the winner's ancestry: the stretches of its path, joined at each copy by a dashed jump
    drawn = False
    previous_end: tuple[float, float] | None = None
    for slot, start, end in spans:
        xs = [s for s, v, g in _points(data, slot) if g in path and start <= s <= end]
        ys = [v for s, v, g in _points(data, slot) if g in path and start <= s <= end]
        if not xs:
            continue
        if previous_end is not None and xs[0] >= previous_end[0]:
            axis.plot(
                [previous_end[0], xs[0]],
                [previous_end[1], ys[0]],
                color=WINNER,
                linewidth=1.2,
                linestyle="--",
                zorder=4,
            )
        axis.plot(xs, ys, color=WINNER, linewidth=2.6, zorder=5, label=None if drawn else "the winner's ancestry")
        drawn = True
        previous_end = (xs[-1], ys[-1])
    if data.best_so_far.steps:
        axis.plot(
            data.best_so_far.steps,
            data.best_so_far.values,
            color="black",
            linewidth=1.6,
            drawstyle="steps-post",
            zorder=6,
            label="best checkpointed score so far",
        )
    winner = data.winner
    if winner is not None:
        axis.scatter(
            [winner.step], [winner.score], marker="*", s=260, color="gold", edgecolor="black", zorder=7, label="winner"
        )
        text = f"winner: member {winner.slot}, {_fmt(winner.score)} at step {winner.step}"
        if winner.runner_up is not None:
            text += f"\n{_fmt(winner.runner_up.margin):s} better than member {winner.runner_up.slot}"
        if winner.untouched is not None and winner.untouched.slot != winner.slot:
            text += f"\n{_fmt(winner.untouched.margin)} better than the best untouched (member {winner.untouched.slot})"
        below = 1 if data.mode == "max" else -1  # the text sits on the side of the population
        axis.annotate(
            _plain(text),
            xy=(winner.step, winner.score),
            xytext=(-14, -14 * below),
            textcoords="offset points",
            ha="right",
            va="top" if below > 0 else "bottom",
            fontsize=8.5,
            zorder=8,
            bbox={"boxstyle": "round,pad=0.3", "facecolor": "white", "edgecolor": "0.7", "alpha": 0.9},
        )
    axis.autoscale_view()
    if data.y_range is not None:
        axis.set_ylim(*data.y_range)
    axis.set_xlabel("step")
    axis.set_ylabel(_plain(f"{data.metric} ({'higher' if data.mode == 'max' else 'lower'} is better)"))
    axis.set_title(_plain(f"{data.run}: {data.metric} of every member ({data.population} members)"))
    axis.legend(loc="upper left", bbox_to_anchor=(0.0, -0.12), ncol=3, fontsize=8, frameon=False)
    axis.grid(alpha=0.25)
    _tidy(figure)
    return figure


def _points(data: ReportData, slot: int) -> list[tuple[int, float, int]]:
    for curve in data.curves:
        if curve.slot == slot:
            gens = curve.generations or [-1] * len(curve.steps)
            return list(zip(curve.steps, curve.values, gens))
    return []


def _axis_values(info: ParamInfo | None, values: list[Any]) -> tuple[list[float | None], list[str] | None]:
    """Values as numbers on the parameter's axis: choices as the index of their option."""
    if info is not None and info.kind == "choice":
        options = list(info.options or [])
        labels = [str(o) for o in options]
        out: list[float | None] = []
        for v in values:
            if v not in options:
                options.append(v)
                labels.append(str(v))
            out.append(float(options.index(v)))
        return out, labels
    return [_numeric(v) for v in values], None


def plot_schedules(data: ReportData) -> Any:
    """Each hyperparameter per member (grey), the winner's schedule red; a value is drawn only
    over the steps its model trained, so a copy shows as a break, not a diagonal. Log axes
    exactly where the search space declares a log scale."""
    plt = _pyplot()
    from matplotlib.collections import LineCollection

    info = {p.name: p for p in data.params}
    names = [p.name for p in data.params if p.name in data.schedules]
    names += [n for n in data.schedules if n not in names]
    names = [
        n
        for n in names
        if (info.get(n) is not None and info[n].kind == "choice")
        or any(_numeric(s.value) is not None for s in data.schedules[n])
    ]
    rows = max(1, len(names))
    figure, axes = plt.subplots(rows, 1, figsize=(WIDTH, min(MAX_HEIGHT, 1.0 + 2.0 * rows)), sharex=True, squeeze=False)
    many = len(data.curves) > 32
    for axis, name in zip(axes[:, 0], names):
        segments = data.schedules[name]
        values, labels = _axis_values(info.get(name), [s.value for s in segments])
        lines = [[(s.start, v), (s.end, v)] for s, v in zip(segments, values) if v is not None]
        axis.add_collection(
            LineCollection(lines, colors=MEMBER, linewidths=0.8 if many else 1.1, alpha=0.3 if many else 0.45)
        )
        best_values, _ = _axis_values(info.get(name), [s.value.get(name) for s in data.best_ancestry])
        previous: tuple[float, float, int] | None = None
        for segment, value in zip(data.best_ancestry, best_values):
            if value is None:
                continue
            axis.plot([segment.start, segment.end], [value, value], color=WINNER, linewidth=2.4, solid_capstyle="butt")
            if previous is not None and previous[2] == segment.slot and previous[0] == segment.start:
                axis.plot([segment.start] * 2, [previous[1], value], color=WINNER, linewidth=1.0, linestyle=":")
            previous = (segment.end, value, segment.slot)
        param = info.get(name)
        if param is not None and param.log:
            axis.set_yscale("log")
        axis.autoscale_view()
        if labels is not None:
            axis.set_yticks(range(len(labels)))
            axis.set_yticklabels([_plain(label) for label in labels])
        scale = " (log)" if param is not None and param.log else ""
        axis.set_ylabel(_plain(name + scale), fontsize=9)
        axis.grid(alpha=0.25)
    axes[0, 0].set_title(_plain(f"{data.run}: hyperparameter schedules (grey: every member; red: the winner's)"))
    if data.best_ancestry and names:
        axes[0, 0].plot([], [], color=WINNER, linewidth=2.4, label="the winner's schedule")
        axes[0, 0].plot([], [], color=MEMBER, linewidth=1.1, label="members")
        axes[0, 0].legend(loc="upper right", fontsize=8)
    axes[-1, 0].set_xlabel("step")
    _tidy(figure)
    return figure


def plot_lineage(data: ReportData) -> Any:
    """The family tree: each generation a bar on its member's row coloured by its last score,
    lineages that died out faded, a connector from donor to copier at every copy (side by side
    when several happen at one step), the winner's path outlined in red."""
    plt = _pyplot()
    from matplotlib import colormaps, colors
    from matplotlib.collections import LineCollection
    from matplotlib.ticker import MaxNLocator

    population = max(1, data.population, *(n.slot + 1 for n in data.tree)) if data.tree else max(1, data.population)
    height = min(MAX_HEIGHT, 2.6 + 0.22 * population)
    figure, axis = plt.subplots(figsize=(WIDTH, height))
    rows_points = (height - 1.4) * 72  # the plot area's height in points, about
    bar = max(0.6, min(7.0, 0.7 * rows_points / population))
    scores = [n.score for n in data.tree if n.score is not None]
    low, high = (min(scores), max(scores)) if scores else (0.0, 1.0)
    norm = colors.Normalize(vmin=low, vmax=high if high > low else low + 1)
    cmap = colormaps["viridis"] if data.mode == "max" else colormaps["viridis_r"]
    xmax = max([n.end for n in data.tree] + [1])
    for faded in (True, False):
        nodes = [n for n in data.tree if n.survives != faded]
        if not nodes:
            continue
        lines = [[(n.start, n.slot), (max(n.end, n.start + xmax * 0.002), n.slot)] for n in nodes]
        tint = [cmap(norm(n.score)) if n.score is not None else (0.8, 0.8, 0.8, 1.0) for n in nodes]
        axis.add_collection(
            LineCollection(lines, colors=tint, linewidths=bar, alpha=0.25 if faded else 1.0, capstyle="butt", zorder=2)
        )
    path = [n for n in data.tree if n.on_winner_path]
    if data.best_ancestry:  # outlined only over the steps the winner's weights were trained there
        lines = [[(s.start, s.slot), (max(s.end, s.start + xmax * 0.002), s.slot)] for s in data.best_ancestry]
        axis.add_collection(LineCollection(lines, colors=WINNER, linewidths=bar + 3, capstyle="butt", zorder=1))
        axis.plot([], [], color=WINNER, linewidth=4, label="the winner's path")
    # connectors: several copies at one step sit side by side, so none hides another
    by_step: dict[int, list[Any]] = {}
    for copy in data.copies:
        by_step.setdefault(copy.step, []).append(copy)
    steps = sorted(by_step)
    gap = min([b - a for a, b in itertools.pairwise(steps)] + [max(1.0, xmax * 0.05)])
    widest = max([len(c) for c in by_step.values()] + [1])
    spread = min(xmax * 0.004, 0.5 * gap / widest)  # a step's connectors stay within half the gap to the next
    plain: list[list[tuple[float, int]]] = []
    on_path: list[list[tuple[float, int]]] = []
    heads: list[tuple[float, int, str]] = []
    path_ids = {(n.slot, n.start) for n in path if n.kind in COPY_KINDS}
    for step, copies in by_step.items():
        for i, copy in enumerate(sorted(copies, key=lambda c: (c.donor, c.slot))):
            x = step + (i - (len(copies) - 1) / 2) * spread
            segment = [(x, copy.donor), (x, copy.slot)]
            (on_path if (copy.slot, copy.step) in path_ids else plain).append(segment)
            heads.append((x, copy.slot, "v" if copy.slot > copy.donor else "^"))
    if plain:
        axis.add_collection(
            LineCollection(plain, colors="0.25", linewidths=0.5, alpha=0.5 if population <= 64 else 0.3, zorder=3)
        )
    if on_path:
        axis.add_collection(LineCollection(on_path, colors=WINNER, linewidths=1.6, zorder=4))
    size = 6 if population > 64 else 14
    for marker in ("v", "^"):
        points = [(x, y) for x, y, m in heads if m == marker]
        if points:
            axis.scatter(*zip(*points), marker=marker, s=size, color="0.2", zorder=5, linewidths=0)
    if heads:
        axis.plot([], [], color="0.25", linewidth=0.8, marker="v", markersize=4, label="copy: donor → copier")
    if data.winner is not None:
        axis.scatter(
            [data.winner.step],
            [data.winner.slot],
            marker="*",
            s=200,
            color="gold",
            edgecolor="black",
            zorder=6,
            label="winner",
        )
    mappable = plt.cm.ScalarMappable(norm=norm, cmap=cmap)
    better = "higher" if data.mode == "max" else "lower"
    bar_axis = figure.colorbar(mappable, ax=axis, pad=0.015, fraction=0.04)
    bar_axis.set_label(_plain(f"last {data.metric} of the generation ({better} is better)"))
    if data.mode == "min":
        bar_axis.ax.invert_yaxis()  # the best (lowest) at the top, as in max mode
    axis.set_xlim(-xmax * 0.01, xmax * 1.01)
    axis.set_ylim(population - 0.5, -0.5)
    axis.yaxis.set_major_locator(MaxNLocator(nbins=min(population, 17), integer=True))
    axis.set_xlabel("step")
    axis.set_ylabel("member")
    axis.set_title(_plain(f"{data.run}: population development (faded: lineages that died out)"), fontsize=11)
    axis.legend(loc="upper left", bbox_to_anchor=(0.0, -0.09), ncol=3, fontsize=8, frameon=False)
    _tidy(figure)
    return figure
