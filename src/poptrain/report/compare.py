"""``poptrain compare A B ...``: several runs of one metric on one page.

``comparison(reports)`` is pure: from each run's ``ReportData`` it keeps the best-so-far curve
(checkpointed scores, the ones ``run.best()`` ranks) and a row of the final table (strategy in
words, population, best score, best untouched member, steps trained, wall time). The page draws
the curves on one plot and the table beside; a PNG of the curves is written next to it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from poptrain.errors import ConfigError
from poptrain.report.data import Curve, ReportData

STRATEGY_ROLES = ("ready", "exploit", "explore")


@dataclass(frozen=True)
class ComparedRun:
    """One run's row of the comparison and its best-so-far curve."""

    run: str
    state: str
    strategy: str  # ready, exploit and explore in words
    population: int
    best_score: float | None
    best_slot: int | None
    untouched_score: float | None  # the best member PBT never touched (random search inside the run)
    untouched_slot: int | None
    steps_trained: int
    wall_seconds: float | None
    best_so_far: Curve


@dataclass(frozen=True)
class Comparison:
    """Runs of one metric, compared."""

    metric: str
    mode: str
    runs: list[ComparedRun]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (what the page reads)."""
        return asdict(self)


def comparison(reports: Sequence[ReportData]) -> Comparison:
    """The comparison of ``reports`` (pure). A ``ConfigError`` when fewer than two are given or
    their metrics (or modes) differ."""
    if len(reports) < 2:
        raise ConfigError(f"compare needs at least two runs, got {len(reports)}; name two or more runs")
    first = reports[0]
    for other in reports[1:]:
        if (other.metric, other.mode) != (first.metric, first.mode):
            raise ConfigError(
                f"runs {first.run!r} ({first.metric}, {first.mode}) and {other.run!r} ({other.metric}, {other.mode}) "
                "measure different metrics; compare runs of one metric"
            )
    return Comparison(first.metric, first.mode, [_compared(r) for r in reports])


def _compared(data: ReportData) -> ComparedRun:
    settings = {row[0]: row[1] for row in data.settings_rows if len(row) == 2}
    strategy = "; ".join(f"{role} {settings[role]}" for role in STRATEGY_ROLES if role in settings) or "not recorded"
    winner, untouched = data.winner, data.winner.untouched if data.winner else None
    wall = data.summary.get("wall_seconds")
    return ComparedRun(
        data.run,
        data.state,
        strategy,
        data.population,
        winner.score if winner else None,
        winner.slot if winner else None,
        untouched.score if untouched else None,
        untouched.slot if untouched else None,
        int(data.summary.get("steps_trained", 0)),
        float(wall) if isinstance(wall, (int, float)) else None,
        data.best_so_far,
    )


COMPARE_JS = r"""
function fmt(v) {
  if (v === null || v === undefined) return "-";
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : String(Number(v.toPrecision(4)));
  return String(v);
}
function label(v) { return String(v).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;"); }
function duration(s) { if (s === null) return "-"; s = Math.round(s); const m = Math.floor(s / 60); return m ? m + " min " + (s % 60) + " s" : s + " s"; }
function render(d) {
  const traces = d.runs.map(r => ({x: r.best_so_far.steps, y: r.best_so_far.values, mode: "lines", line: {shape: "hv", width: 2.5},
    name: label(r.run), text: r.best_so_far.values.map((v, i) => label(r.run + ", step " + r.best_so_far.steps[i] + ": " + fmt(v))), hoverinfo: "text"}));
  Plotly.react("curves", traces, {title: {text: label("best " + d.metric + " so far (" + (d.mode === "min" ? "lower" : "higher") + " is better)")},
    xaxis: {title: {text: "step"}}, yaxis: {title: {text: label(d.metric)}}, height: 460, margin: {t: 40}, hovermode: "closest"},
    {displaylogo: false, responsive: true});
  const table = document.getElementById("runs");
  table.replaceChildren();
  const columns = [["run", r => r.run + (r.state === "finished" ? "" : " (" + r.state + ")")], ["strategy", r => r.strategy], ["population", r => r.population],
    ["best " + d.metric, r => r.best_score === null ? "-" : fmt(r.best_score) + " (member " + r.best_slot + ")"],
    ["best untouched member", r => r.untouched_score === null ? "- (every member was touched)" : fmt(r.untouched_score) + " (member " + r.untouched_slot + ")"],
    ["steps trained", r => r.steps_trained], ["wall time", r => duration(r.wall_seconds)]];
  const head = document.createElement("tr");
  columns.forEach(([h]) => { const th = document.createElement("th"); th.textContent = h; head.appendChild(th); });
  table.appendChild(head);
  d.runs.forEach(r => {
    const tr = document.createElement("tr");
    columns.forEach(([, f]) => { const td = document.createElement("td"); td.textContent = String(f(r)); tr.appendChild(td); });
    table.appendChild(tr);
  });
  window.poptrainRendered = (window.poptrainRendered || 0) + 1;
}
"""


def compare_html(data: Comparison) -> str:
    """A self-contained page comparing the runs of ``data``."""
    import html

    from poptrain.report.bundle import plotly_js
    from poptrain.report.html import STYLE, _clean, _inside_script

    title = "poptrain compare: " + ", ".join(r.run for r in data.runs)
    payload = _inside_script(json.dumps(_clean(data.to_dict()), allow_nan=False, default=str))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,"><title>{html.escape(title)}</title><style>{STYLE}</style>
<script>{plotly_js()[0]}</script></head>
<body><h1>{html.escape(title)}</h1>
<div id="curves"></div>
<h2>Runs</h2><table id="runs"></table>
<script>{COMPARE_JS}
const data = {payload};
render(data);</script>
</body></html>"""


def plot_comparison(data: Comparison) -> Any:
    """The best-so-far curves as a matplotlib figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 4.5))
    for run in data.runs:
        axes.step(run.best_so_far.steps, run.best_so_far.values, where="post", label=run.run.replace("$", r"\$"))
    better = "lower" if data.mode == "min" else "higher"
    axes.set_title(f"best {data.metric} so far ({better} is better)".replace("$", r"\$"))
    axes.set_xlabel("step")
    axes.set_ylabel(data.metric.replace("$", r"\$"))
    axes.legend()
    axes.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def write_comparison(runs: Sequence[Any], output: str | Path) -> dict[str, Path]:
    """Write the comparison page of ``runs`` (opened ``poptrain.Run`` objects) to ``output`` and
    a PNG of its curves beside it (same name, ``.png``); return both paths."""
    import matplotlib.pyplot as plt

    from poptrain.atomic import write_text_atomic
    from poptrain.report.writer import run_report_data

    data = comparison([run_report_data(run) for run in runs])
    target = Path(output)
    target.parent.mkdir(parents=True, exist_ok=True)
    paths = {"html": write_text_atomic(target, compare_html(data))}
    figure = plot_comparison(data)
    png = target.with_suffix(".png")
    partial = png.with_name(f".{png.name}.tmp")
    figure.savefig(partial, dpi=110, format="png")
    plt.close(figure)
    partial.replace(png)
    paths["png"] = png
    return paths
