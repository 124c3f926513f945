"""Progress on the terminal: a rich progress bar with ETA when attached to a terminal, plain
log lines otherwise (CI, files); and the end-of-run summary.

Data (run, metric and hyperparameter names, values, decisions) reaches rich only as ``text()``,
never as a string rich would read as markup: a Choice option ``"[/bold]"`` prints as it is."""

from __future__ import annotations

import math
import sys
import time
from typing import IO, TYPE_CHECKING, Any

from poptrain.progress import ProgressListener
from poptrain.results import BestMember
from poptrain.strategy import Decision

if TYPE_CHECKING:
    from rich.text import Text


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def text(value: object, style: str = "") -> Text:
    """``value`` (``str()`` of it) as rich text, shown as it is: never read as markup
    (``[/bold]``) or emoji codes (``:smile:``), and control characters escaped (``\x1b``).
    ``style`` styles all of it (``"bold"``)."""
    from rich.text import Text

    from poptrain.printable import printable

    return Text(printable(value), style=style)


class TerminalProgress(ProgressListener):
    """Shows steps done out of all, the best score so far and the decisions taken; on a
    terminal also a table of the members (score, step, generation, hyperparameters, last
    decision), best first, refreshed in place."""

    def __init__(
        self, metric: str, mode: str, *, stream: IO[str] | None = None, live: bool | None = None, lines: int = 10
    ) -> None:
        self.metric = metric
        self.mode = mode
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.lines = lines
        self.total = 0
        self.done = 0
        self.best: float | None = None
        self.decisions = 0
        self._progress: Any = None
        self._task: Any = None
        self._next_line = 0
        self._started = 0.0
        self._name = ""
        self._live: Any = None
        self.members: dict[int, dict[str, Any]] = {}
        self.rows = 12  # members shown in the live table (the best ones)
        self._shown_at = 0.0

    def _better(self, value: float) -> bool:
        if math.isnan(value):
            return False
        return self.best is None or (value > self.best if self.mode == "max" else value < self.best)

    def _status(self) -> str:
        best = "-" if self.best is None else f"{self.best:.4f}"
        from poptrain.printable import printable

        return f"best {printable(self.metric)} so far {best}, {self.decisions} decisions"

    def on_start(self, run_name: str, population_size: int, total_steps: int, done_steps: int) -> None:
        self.total, self.done, self._name, self._started = total_steps, done_steps, run_name, time.monotonic()
        self._next_line = done_steps + max(1, total_steps // self.lines)
        if self.live:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(  # data goes in as task fields, shown without markup
                TextColumn("{task.fields[run]}", style="bold", markup=False),
                BarColumn(bar_width=20),
                MofNCompleteColumn(),
                TextColumn("steps, ETA"),
                TimeRemainingColumn(compact=True),
                TextColumn("{task.fields[status]}", markup=False),
                console=Console(file=self.stream),
                transient=False,
            )
            from rich.live import Live

            self._task = self._progress.add_task(
                "train", total=total_steps, completed=done_steps, status=self._status(), run=run_name
            )
            self._live = Live(self._view(), console=self._progress.console, refresh_per_second=4, transient=False)
            self._live.start()
        else:
            print(
                f"[{run_name}] training {population_size} members, {total_steps} steps in all",
                file=self.stream,
                flush=True,
            )

    def on_checkpoint(self, slot: int, step: int, value: float) -> None:
        # "best so far" is the best saved model's score: the one run.best() hands over
        if math.isfinite(value) and self._better(value):
            self.best = value

    def on_score(self, slot: int, step: int, value: float, hparams: dict, generation: int) -> None:
        self.done += 1
        row = self.members.setdefault(slot, {"decision": "-"})
        row.update(step=step, score=value, generation=generation, hparams=hparams)
        if self._progress is not None:
            self._progress.update(self._task, completed=self.done, status=self._status())
            now = time.monotonic()
            if now - self._shown_at >= 0.25:  # a big population scores thousands of times a second
                self._shown_at = now
                self._live.update(self._view())
        elif self.done >= self._next_line:
            self._next_line += max(1, self.total // self.lines)
            elapsed = time.monotonic() - self._started
            print(
                f"[{self._name}] {self.done}/{self.total} steps ({100 * self.done / max(1, self.total):.0f}%), "
                f"{self._status()}, {elapsed:.1f}s",
                file=self.stream,
                flush=True,
            )

    def on_decision(self, decision: Decision) -> None:
        self.decisions += 1
        row = self.members.setdefault(decision.slot, {})
        changes = ", ".join(f"{k} {v}" for k, v in decision.operations.items())
        row["decision"] = (f"copied {decision.donor}" if decision.copies else "explored") + (
            f": {changes}" if changes else ""
        )
        row["hparams"] = dict(decision.hparams)

    def table(self) -> Any:
        """The members table: the best ``rows`` members by their newest score."""
        from rich.table import Table

        table = Table(
            expand=False,
            title=f"members (best {self.rows} of {len(self.members)})" if len(self.members) > self.rows else "members",
        )
        for column in ("member", "step", self.metric, "gen", "hyperparameters", "last decision"):
            table.add_column(text(column))
        sign = 1 if self.mode == "max" else -1
        ranked = sorted(
            self.members.items(),
            key=lambda item: (
                -sign * item[1]["score"]
                if item[1].get("score") == item[1].get("score") and "score" in item[1]
                else float("inf")
            ),
        )
        for slot, row in ranked[: self.rows]:
            hparams = ", ".join(f"{k}={_fmt(v)}" for k, v in row.get("hparams", {}).items())
            cells = (
                slot,
                row.get("step", 0),
                _fmt(row.get("score", "-")),
                row.get("generation", 0),
                hparams,
                row.get("decision", "-"),
            )
            table.add_row(*map(text, cells))
        return table

    def _view(self) -> Any:
        from rich.console import Group

        return Group(self._progress, self.table())

    def on_finish(self) -> None:
        if self._progress is not None:
            self._live.update(self._view())
            self._live.stop()
            self._live = None
            self._progress = None


def print_summary(
    run_name: str,
    metric: str,
    best: BestMember | None,
    extra: dict[str, Any],
    *,
    wall_time: float,
    stream: IO[str] | None = None,
) -> None:
    """The best member, its metrics and its hyperparameter schedule, as rich tables."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(file=stream or sys.stdout, width=160)
    if best is None:
        console.print(text(f"Run {run_name}: no member has a checkpointed score yet."))
        return
    console.print(Text.assemble(text(f"Run {run_name}", "bold"), f" finished in {wall_time:.1f}s"))
    console.print(
        text(f"Best member: {best.slot}, {metric} = {best.score:.4f} at step {best.step} (the best model ever saved)")
    )
    if best.checkpoint is not None:
        console.print(
            text(
                f"  its checkpoint: {best.checkpoint.uri} (poptrain export {run_name} --best-model FILE writes it out)"
            )
        )
    for key, value in {**{k: v for k, v in best.metrics.items() if k != metric}, **extra}.items():
        console.print(text(f"  {key} = {_fmt(value)}"))
    table = Table(title="Hyperparameter schedule of the best model (through its ancestry)")
    table.add_column("steps")
    table.add_column("member")
    table.add_column("how it began")
    names = list(best.hparams)
    for name in names:
        table.add_column(text(name))
    for seg in best.schedule:
        began = {
            "init": "initial sample",
            "exploit": f"copied member {seg.donor}",
            "replace": f"replaced: copy of {seg.donor}",
        }.get(seg.kind, "explored")
        cells = []
        for name in names:
            op = seg.operations.get(name)
            cells.append(_fmt(seg.hparams.get(name)) + (f" ({op})" if op else ""))
        table.add_row(*map(text, (f"{seg.start_step}-{seg.end_step}", seg.slot, began, *cells)))
    console.print(table)
    if len(best.schedule) > 1:
        console.print(
            "Steps count the steps the model had trained: a copy continues from the copied checkpoint's step."
        )
