"""Progress on the terminal: a live view (a status line with a progress bar and ETA, and a table
of the best members, one line each, sized to the terminal) when attached to a terminal, plain
log lines otherwise (CI, files); and the end-of-run summary.

Data (run, metric and hyperparameter names, values, decisions) reaches rich only as ``text()``,
never as a string rich would read as markup: a Choice option ``"[/bold]"`` prints as it is."""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

from poptrain.printable import printable
from poptrain.progress import ProgressListener
from poptrain.results import BestMember
from poptrain.strategy import Decision

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

SUMMARY_WIDTH = 100  # the end summary's width when the stream is not a terminal (nor COLUMNS set)
REFRESH_SECONDS = 0.25  # the live view redraws at most this often, however fast scores arrive
ETA_WINDOW_SECONDS = 30.0  # the ETA extrapolates the speed over this much recent time
TEXT_MIN_WIDTH = 10  # a text column narrower than this is dropped rather than shown
HEADER_MIN_WIDTH = 6  # a number column's header is abbreviated to no fewer cells (unless short)
_BAR_WIDTHS = (20, 10)
_TABLE_CHROME = 5  # title, top border, header, header rule, bottom border


def _fmt(value: Any) -> str:
    """A value as shown: a float with 4 significant digits (at most 10 characters), the rest as
    ``str()``."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def plural(count: int, word: str) -> str:
    """``"1 decision"``, ``"2 decisions"``, ``"0 decisions"``."""
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def text(value: object, style: str = "", *, lines: bool = True) -> Text:
    """``value`` (``str()`` of it) as rich text, shown as it is: never read as markup
    (``[/bold]``) or emoji codes (``:smile:``), and control characters escaped (``\x1b``).
    ``style`` styles all of it (``"bold"``); with ``lines=False`` newlines are escaped too
    (``\\x0a``), so the text stays on one line."""
    from rich.text import Text

    return Text(printable(value, lines=lines), style=style)


def _cells(value: str) -> int:
    from rich.cells import cell_len

    return cell_len(value)


# --- fitting columns to a width ---------------------------------------------------------------
@dataclass(frozen=True)
class ColumnSpec:
    """A column the table could show: ``content`` is the width of its widest cell, ``numeric``
    says its cells are numbers (shown whole or not at all), ``priority`` orders which columns
    are kept when the width runs out (0 first), ``short`` is the header to use when the column
    is narrower than ``header`` (default: ``header`` cut with an ellipsis)."""

    key: str
    header: str
    content: int
    numeric: bool = True
    priority: int = 0
    short: str | None = None

    @property
    def natural(self) -> int:
        """The width that shows the header and every cell whole."""
        return max(_cells(self.header), self.content, 1)

    @property
    def minimum(self) -> int:
        """The narrowest width the column is shown at: every number whole (the header
        abbreviated), a text column at least ``TEXT_MIN_WIDTH`` (ellipsised)."""
        if not self.numeric:
            return min(self.natural, TEXT_MIN_WIDTH)
        header = _cells(self.short) if self.short is not None else min(_cells(self.header), HEADER_MIN_WIDTH)
        return max(self.content, header, 1)


@dataclass(frozen=True)
class FittedColumn:
    """A column chosen by :func:`fit_columns`: its header as shown and its width (cells)."""

    key: str
    header: str
    width: int
    numeric: bool


def table_width(widths: Sequence[int]) -> int:
    """The width of a bordered rich table (one cell of padding each side) with these column
    widths."""
    return sum(widths) + 3 * len(widths) + 1 if widths else 0


def abbreviate(header: str, width: int, short: str | None = None) -> str:
    """``header`` within ``width`` cells: whole, else ``short`` if given and it fits, else cut
    with an ellipsis."""
    if _cells(header) <= width:
        return header
    if short is not None and _cells(short) <= width:
        return short
    from rich.text import Text

    cut = Text(header)
    cut.truncate(width, overflow="ellipsis")
    return cut.plain


def fit_columns(columns: Sequence[ColumnSpec], width: int) -> list[FittedColumn]:
    """The columns to show in a bordered table ``width`` cells wide, in their given order.

    Columns are taken by priority (then order) at their minimum width while they fit; a column
    that does not fit is dropped (a narrower one of lower priority may still fit). The width
    left then shows the numeric columns' headers whole where it can (by priority), and then
    widens the text columns up to their natural width. A numeric column is never narrower than
    its widest cell: its header is abbreviated instead, never a number cut. A pure function:
    widths in, columns out."""
    budget = width - 1  # the table's left edge
    order = sorted(range(len(columns)), key=lambda i: (columns[i].priority, i))
    chosen: dict[int, int] = {}
    for i in order:
        need = columns[i].minimum + 3  # padding each side and the right border
        if need <= budget:
            chosen[i] = columns[i].minimum
            budget -= need
    for numeric in (True, False):  # a header cut by one cell less reads no better: all or nothing
        for i in order:
            if i in chosen and columns[i].numeric == numeric:
                grow = columns[i].natural - chosen[i]
                if not numeric:
                    grow = min(grow, budget)
                if grow <= budget:
                    chosen[i] += grow
                    budget -= grow
    return [
        FittedColumn(c.key, abbreviate(c.header, chosen[i], c.short), chosen[i], c.numeric)
        for i, c in enumerate(columns)
        if i in chosen
    ]


def fit_pieces(pieces: Sequence[tuple[str, int]], width: int, sep: str = "  ") -> list[int]:
    """Which of ``pieces`` ``(text, priority)`` fit on one line ``width`` cells wide, joined by
    ``sep``: their indexes, taken whole by priority (then order), in their given order."""
    budget = width
    chosen: list[int] = []
    for i in sorted(range(len(pieces)), key=lambda i: (pieces[i][1], i)):
        need = _cells(pieces[i][0]) + (_cells(sep) if chosen else 0)
        if need <= budget:
            chosen.append(i)
            budget -= need
    return sorted(chosen)


def pack(items: Sequence[str], width: int, sep: str = ", ") -> list[str]:
    """``items`` joined by ``sep`` into lines of at most ``width`` cells, an item never split
    across lines (one longer than ``width`` gets a line of its own)."""
    lines: list[str] = []
    for item in items:
        if lines and _cells(lines[-1] + sep + item) <= width:
            lines[-1] += sep + item
        else:
            if lines:
                lines[-1] += sep.rstrip()
            lines.append(item)
    return lines


def _duration(seconds: float) -> str:
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


# --- the live view and the log lines -------------------------------------------------------------
class TerminalProgress(ProgressListener):
    """Shows steps done out of all, the best score so far and the decisions taken; on a
    terminal also a table of the members (score, step, generation, hyperparameters, last
    decision), best first, one line each, as many as fit the terminal, refreshed in place.

    ``live`` forces the live view on (or off) whatever ``stream`` is; ``lines`` is how many log
    lines a run prints without it; ``rows`` caps the members shown (default: as many as fit);
    ``refresh_per_second`` is how often the live view redraws by itself (it also redraws as the
    first score arrives)."""

    def __init__(
        self,
        metric: str,
        mode: str,
        *,
        stream: IO[str] | None = None,
        live: bool | None = None,
        lines: int = 10,
        rows: int | None = None,
        refresh_per_second: float = 1 / REFRESH_SECONDS,
    ) -> None:
        self.metric = metric
        self.mode = mode
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.lines = lines
        self.rows = rows
        self.refresh_per_second = refresh_per_second
        self.total = 0
        self.done = 0
        self.population_size = 0
        self.best: float | None = None
        self.decisions = 0
        self.members: dict[int, dict[str, Any]] = {}
        self._next_line = 0
        self._started = 0.0
        self._name = ""
        self._console: Console | None = None
        self._live: Any = None
        self._lock = threading.Lock()  # the live view is drawn by rich's refresh thread
        self._speed: deque[tuple[float, int]] = deque([(time.monotonic(), 0)])  # (when, steps done)
        self._scored = False  # whether a score has arrived: the table shows from the first one

    def _better(self, value: float) -> bool:
        if math.isnan(value):
            return False
        return self.best is None or (value > self.best if self.mode == "max" else value < self.best)

    def _best_text(self) -> str:
        best = "-" if self.best is None else f"{self.best:.4f}"
        return f"best {printable(self.metric, lines=False)} so far {best}"

    def _status(self) -> str:
        return f"{self._best_text()}, {plural(self.decisions, 'decision')}"

    def on_start(self, run_name: str, population_size: int, total_steps: int, done_steps: int) -> None:
        self.total, self.done, self._name, self._started = total_steps, done_steps, run_name, time.monotonic()
        self.population_size = population_size
        self._scored = False
        self._speed = deque([(self._started, done_steps)])
        self._next_line = done_steps + max(1, total_steps // self.lines)
        if self.live:
            from rich.console import Console
            from rich.live import Live

            self._console = Console(file=self.stream, force_terminal=True)
            self._live = Live(
                console=self._console,
                get_renderable=self._view,
                refresh_per_second=self.refresh_per_second,
                transient=False,
            )
            self._live.start(refresh=True)
        else:
            print(
                f"[{printable(run_name)}] training {plural(population_size, 'member')}, "
                f"{plural(total_steps, 'step')} in all",
                file=self.stream,
                flush=True,
            )

    def on_checkpoint(self, slot: int, step: int, value: float) -> None:
        # "best so far" is the best saved model's score: the one run.best() hands over
        if math.isfinite(value) and self._better(value):
            with self._lock:
                self.best = value

    def on_score(self, slot: int, step: int, value: float, hparams: dict, generation: int) -> None:
        with self._lock:
            first, self._scored = not self._scored, True
            self.done += 1
            row = self.members.setdefault(slot, {"decision": "-"})
            row.update(step=step, score=value, generation=generation, hparams=hparams)
            now = time.monotonic()
            if now - self._speed[-1][0] >= 1.0:
                self._speed.append((now, self.done))
                while len(self._speed) > 2 and now - self._speed[1][0] >= ETA_WINDOW_SECONDS:
                    self._speed.popleft()
        if self._live is not None:
            if first:  # the first row shows now; rich's refresh thread redraws the rest
                self._live.refresh()
        elif self.done >= self._next_line:
            self._next_line += max(1, self.total // self.lines)
            elapsed = time.monotonic() - self._started
            print(
                f"[{printable(self._name)}] {self.done}/{plural(self.total, 'step')} "
                f"({100 * self.done / max(1, self.total):.0f}%), {self._status()}, {elapsed:.1f}s",
                file=self.stream,
                flush=True,
            )

    def on_decision(self, decision: Decision) -> None:
        changes = ", ".join(f"{k} {v}" for k, v in decision.operations.items())
        described = (f"copied {decision.donor}" if decision.copies else "explored") + (
            f": {changes}" if changes else ""
        )
        with self._lock:
            self.decisions += 1
            row = self.members.setdefault(decision.slot, {})
            row["decision"] = described
            row["hparams"] = dict(decision.hparams)

    def eta(self) -> float | None:
        """Seconds left at the recent speed (``None`` before any step is timed)."""
        if self.done >= self.total:
            return 0.0
        then, done_then = self._speed[0]
        elapsed = time.monotonic() - then
        if self.done <= done_then or elapsed <= 0:
            return None
        return (self.total - self.done) * elapsed / (self.done - done_then)

    def status_line(self, width: int) -> Text:
        """The run's name, a progress bar, steps done, ETA, best score and decisions, on one
        line of at most ``width`` cells: the least needed pieces are left out whole, the run's
        name ellipsised, never a number cut."""
        from rich.text import Text

        eta = self.eta()
        count = f"{self.done}/{plural(self.total, 'step')}"
        pieces = [
            (count, 0),
            (f"ETA {'-:--' if eta is None else _duration(eta)}", 1),
            (self._best_text(), 2),
            (plural(self.decisions, "decision"), 3),
        ]
        chosen = fit_pieces(pieces, width)
        line = Text(no_wrap=True, overflow="ellipsis")
        rest = "  ".join(pieces[i][0] for i in chosen)
        left = width - _cells(rest) - 1  # what the name and the bar may take, each followed by a space
        bar = next((w for w in _BAR_WIDTHS if w + 1 <= left - 6), 0)  # keeps a few cells for the name
        name_room = left - (bar + 1 if bar else 0)
        if name_room >= 4:
            name = text(self._name, "bold", lines=False)
            name.truncate(min(name_room, 24), overflow="ellipsis")
            line.append_text(name)
            line.append(" ")
        if bar:
            filled = round(bar * self.done / max(1, self.total))
            line.append("━" * filled, style="green" if self.done >= self.total else "magenta")
            line.append("━" * (bar - filled), style="grey23")
            line.append(" ")
        line.append(rest)
        line.truncate(width)
        return line

    def _ranked(self) -> list[tuple[int, dict[str, Any]]]:
        sign = 1 if self.mode == "max" else -1

        def key(item: tuple[int, dict[str, Any]]) -> tuple[float, int]:
            score = item[1].get("score")
            if not isinstance(score, (int, float)) or math.isnan(score):
                return (math.inf, item[0])
            return (-sign * score, item[0])

        return sorted(self.members.items(), key=key)

    def table(self, width: int = 100, rows: int | None = None) -> Table:
        """The members table within ``width`` cells: the best ``rows`` members (default: all,
        capped by ``self.rows``) by their newest score, one line each; columns that do not
        fit are left out (member, score, step and generation first, then the first
        hyperparameter, the last decision, the other hyperparameters)."""
        from rich import box
        from rich.table import Table

        ranked = self._ranked()
        limit = len(ranked) if rows is None else rows
        if self.rows is not None:
            limit = min(limit, self.rows)
        shown = ranked[: max(0, limit)]
        names: list[str] = []
        for _, row in shown:
            names.extend(n for n in row.get("hparams", {}) if n not in names)
        cells: list[dict[str, str]] = []
        numeric = {"member": True, "score": True, "step": True, "gen": True, "decision": False}
        for slot, row in shown:
            hparams: Mapping[str, Any] = row.get("hparams", {})
            values = {
                "member": str(slot),
                "score": _fmt(row["score"]) if "score" in row else "-",
                "step": str(row.get("step", "-")),
                "gen": str(row.get("generation", "-")),
                "decision": printable(row.get("decision", "-"), lines=False),
            }
            for n in names:
                value = hparams.get(n, "-")
                values[f"hp:{n}"] = printable(_fmt(value), lines=False)
                is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
                numeric[f"hp:{n}"] = numeric.get(f"hp:{n}", True) and (is_number or value == "-")
            cells.append(values)

        def spec(key: str, header: str, priority: int, short: str | None = None) -> ColumnSpec:
            content = max((_cells(c[key]) for c in cells), default=1)
            return ColumnSpec(key, header, content, numeric.get(key, False), priority, short)

        specs = [
            spec("member", "member", 0, "#"),
            spec("score", printable(self.metric, lines=False), 0),
            spec("step", "step", 0),
            spec("gen", "gen", 0),
            *(spec(f"hp:{n}", printable(n, lines=False), 1 if i == 0 else 3 + i) for i, n in enumerate(names)),
            spec("decision", "last decision", 2, "decision"),
        ]
        fitted = fit_columns(specs, width)
        title = "members"
        if len(self.members) > len(shown):
            title = f"members (best {len(shown)} of {len(self.members)})"
        caption = text(title, lines=False)
        caption.no_wrap, caption.overflow = True, "ellipsis"
        table = Table(box=box.HEAVY_HEAD, expand=False, title=caption, title_style="italic")
        for column in fitted:
            table.add_column(
                text(column.header, lines=False),
                width=column.width,
                no_wrap=True,
                overflow="ellipsis",
                justify="right" if column.numeric else "left",
            )
        for values in cells:
            table.add_row(*(text(values[c.key], lines=False) for c in fitted))
        return table

    def _view(self) -> Any:
        """What the live view shows, sized to the terminal as it is now (a resize shows at the
        next refresh)."""
        from rich.console import Group

        assert self._console is not None
        width, height = self._console.size
        with self._lock:
            line = self.status_line(width)
            if not self._scored:
                return Group(line, text("members: waiting for the first score", "dim"))
            room = height - 1 - 1 - _TABLE_CHROME  # the status line, and the line the cursor rests on
            return Group(line, self.table(width, rows=max(1, room)))

    def on_finish(self) -> None:
        if self._live is not None:
            self._live.refresh()
            self._live.stop()
            self._live = None


# --- the end summary -------------------------------------------------------------------------
def stream_width(stream: IO[str]) -> int:
    """Columns to print ``stream`` in: the terminal's width, else ``COLUMNS``, else
    ``SUMMARY_WIDTH``."""
    try:
        if stream.isatty():
            return max(20, os.get_terminal_size(stream.fileno()).columns)
    except (AttributeError, ValueError, OSError):
        pass
    columns = os.environ.get("COLUMNS", "")
    return int(columns) if columns.isdigit() and int(columns) >= 20 else SUMMARY_WIDTH


def print_summary(
    run_name: str,
    metric: str,
    best: BestMember | None,
    extra: dict[str, Any],
    *,
    wall_time: float,
    stream: IO[str] | None = None,
) -> None:
    """The best member, its metrics and its hyperparameter schedule, sized to the stream's
    width: the schedule as a table where it fits, as plain lines where it does not."""
    from rich.console import Console
    from rich.padding import Padding
    from rich.table import Table
    from rich.text import Text

    out = stream or sys.stdout
    console = Console(file=out, width=stream_width(out))
    if best is None:
        console.print(text(f"Run {run_name}: no member has a checkpointed score yet."))
        return
    console.print(Text.assemble(text(f"Run {run_name}", "bold"), f" finished in {wall_time:.1f}s"))
    console.print(
        text(f"Best member: {best.slot}, {metric} = {best.score:.4f} at step {best.step} (the best model ever saved)")
    )
    if best.checkpoint is not None:
        where = f"  its checkpoint: {best.checkpoint.uri}"
        how = f"(poptrain export {run_name} --best-model FILE writes it out)"
        if _cells(f"{where} {how}") <= console.width:
            console.print(text(f"{where} {how}"))
        else:
            console.print(text(where))
            console.print(Padding(text(how), (0, 0, 0, 4)))
    for key, value in {**{k: v for k, v in best.metrics.items() if k != metric}, **extra}.items():
        console.print(text(f"  {key} = {_fmt(value)}"))
    title = "Hyperparameter schedule of the best model (through its ancestry)"
    names = list(best.hparams)
    rows: list[tuple[str, ...]] = []
    for seg in best.schedule:
        began = {
            "init": "initial sample",
            "exploit": f"copied member {seg.donor}",
            "replace": f"replaced: copy of {seg.donor}",
        }.get(seg.kind, "explored")
        values = []
        for name in names:
            op = seg.operations.get(name)
            values.append(_fmt(seg.hparams.get(name)) + (f" ({op})" if op else ""))
        rows.append((f"{seg.start_step}-{seg.end_step}", str(seg.slot), began, *values))
    table = Table(title=text(title))
    for header in ("steps", "member", "how it began", *names):
        table.add_column(text(header, lines=False), no_wrap=True)
    for cells in rows:
        table.add_row(*(text(cell, lines=False) for cell in cells))
    natural = console.measure(table, options=console.options.update_width(1_000_000)).maximum
    if natural <= console.width:
        console.print(table)
    else:  # a table wider than the terminal would cut every cell: plain lines instead
        console.print(text(f"{title}:"))
        for steps, slot, began, *values in rows:
            console.print(text(f"  steps {steps}, member {slot}: {began}", lines=False))
            for line in pack([f"{n} {v}" for n, v in zip(names, values)], console.width - 4):
                console.print(Padding(text(line, lines=False), (0, 0, 0, 4)))
    if len(best.schedule) > 1:
        console.print(
            "Steps count the steps the model had trained: a copy continues from the copied checkpoint's step."
        )
