"""``poptrain report``: the HTML report and its PNGs written beside a run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from poptrain.report.data import ReportData, report_data


def run_report_data(run: Any, summary: dict[str, Any] | None = None) -> ReportData:
    """A run's report data, read from its storage once."""
    run.refresh()
    return report_data(run.record, run.members(), run.lineage(), run.scores(), run.best(), summary=summary)


def write_report(run: Any, folder: str | Path, *, summary: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write ``report.html`` (self-contained), ``scores.png``, ``schedules.png`` and
    ``lineage.png`` into ``folder``; return their paths. Files are written whole (a temporary
    name, then renamed), so a reader never sees half a report."""
    from poptrain.atomic import write_text_atomic
    from poptrain.report.figures import plot_lineage, plot_schedules, plot_scores
    from poptrain.report.html import report_html

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = run_report_data(run, summary)
    paths = {"html": write_text_atomic(folder / "report.html", report_html(data))}
    import matplotlib.pyplot as plt

    for name, draw in (("scores", plot_scores), ("schedules", plot_schedules), ("lineage", plot_lineage)):
        figure = draw(data)
        target = folder / f"{name}.png"
        partial = folder / f".{name}.png.tmp"
        figure.savefig(partial, dpi=110, format="png")
        plt.close(figure)
        partial.replace(target)
        paths[name] = target
    return paths
