"""``poptrain report``: the HTML report and its PNGs written beside a run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from poptrain.report.data import ReportData, report_data

SUMMARY_FILE = "summary.json"  # what an experiment's summarize(run) said, kept beside the run by `poptrain run`


def save_summary(folder: Path | None, summary: dict[str, Any]) -> None:
    """Keep ``summary`` in ``folder/summary.json`` (when the run has a folder), for its report."""
    if folder is None or not folder.is_dir():
        return
    import json

    from poptrain.atomic import write_text_atomic

    write_text_atomic(folder / SUMMARY_FILE, json.dumps(summary, indent=2, default=str) + "\n")


def stored_summary(folder: Path | None) -> dict[str, Any]:
    """The summary ``save_summary`` kept in ``folder`` (plain data: no code is run to get it);
    empty when there is none or it cannot be read."""
    import json

    path = None if folder is None else folder / SUMMARY_FILE
    if path is None or not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def run_report_data(run: Any, summary: dict[str, Any] | None = None) -> ReportData:
    """A run's report data, read from its storage once."""
    run.refresh()
    return report_data(
        run.record,
        run.members(),
        run.lineage(),
        run.scores(),
        run.best(),
        summary=summary,
        checkpoints=run.storage.get_checkpoints(run.record.id),
    )


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
