"""The terminal view: one line per member, columns and rows fitted to the terminal, numbers
never cut, the first row drawn by the score that brings it, plurals right, and the end summary
sized to the stream. A real ``poptrain run`` in an 80x24 (and a 160x24) pseudo-terminal is
replayed through a small terminal emulator; its final screens are kept in test-artifacts/."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.cells import cell_len
from rich.console import Console

from poptrain.report.terminal import (
    ColumnSpec,
    TerminalProgress,
    fit_columns,
    fit_pieces,
    pack,
    plural,
    print_summary,
    stream_width,
    table_width,
)
from poptrain.results import BestMember, ScheduleSegment
from poptrain.strategy import Decision

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
TEXT_HEADERS = ("optimizer", "last decision", "decision")  # every other table column holds numbers

# --- a small terminal ----------------------------------------------------------------------------
_SEQUENCE = re.compile(r"\x1b\[([0-9;?]*)([A-Za-z])|\x1b\]([^\x07]*)\x07|([\r\n\b])|([^\x1b\r\n\b]+)")


class Screen:
    """Enough of a terminal to replay rich's output: characters, carriage return, line feed,
    cursor up, erase line; colours ignored. A character written past the last column wraps
    to the next line, as a terminal does, and the line is recorded in ``wrapped``: a program
    that fits its lines never makes it wrap. Any other control sequence fails the test. Keeps
    the scrollback: ``text()`` is every line ever shown, the screen being the last rows."""

    def __init__(self, columns: int) -> None:
        self.columns = columns
        self.lines: list[list[str]] = [[]]
        self.row = 0
        self.col = 0
        self.wrapped: set[int] = set()
        self.most_up = 0

    def _newline(self) -> None:
        self.row += 1
        if self.row == len(self.lines):
            self.lines.append([])

    def _put(self, char: str) -> None:
        width = cell_len(char)
        if self.col + width > self.columns:
            self.wrapped.add(self.row)
            self._newline()
            self.col = 0
        line = self.lines[self.row]
        line.extend(" " * (self.col + 1 - len(line)))
        line[self.col] = char
        self.col += width

    def feed(self, data: str) -> None:
        for match in _SEQUENCE.finditer(data):
            params, final, osc, control, chars = match.groups()
            if chars is not None:
                for char in chars:
                    self._put(char)
            elif control == "\r":
                self.col = 0
            elif control == "\n":
                self._newline()
            elif control == "\b":
                self.col = max(0, self.col - 1)
            elif osc is not None or final == "m" or (final in "hl" and params.startswith("?")):
                pass  # a title, colours, the cursor hidden or shown
            elif final == "A":
                self.most_up = max(self.most_up, int(params or 1))
                self.row = max(0, self.row - int(params or 1))
            elif final == "K" and params == "2":
                self.lines[self.row] = []
            else:
                raise AssertionError(f"unexpected terminal sequence {match.group()!r}")

    def text(self) -> list[str]:
        return ["".join(line).rstrip() for line in self.lines]


def test_the_screen_replays_what_rich_draws_and_sees_a_wrap() -> None:
    screen = Screen(10)
    screen.feed("abc\r\n\x1b[1mde\x1b[0m\r\x1b[2K\x1b[1A\x1b[2Kxy\r\n0123456789\r\n01234567890")
    assert screen.text() == ["xy", "0123456789", "0123456789", "0"]  # "de" erased, written over
    assert screen.wrapped == {2} and screen.most_up == 1


def members_table(lines: list[str]) -> tuple[str, list[str], list[list[str]]]:
    """The last members table in ``lines``: its title, headers and rows (cells stripped)."""
    titles = [i for i, line in enumerate(lines) if line.strip().startswith("members")]
    assert titles, "no members table"
    top = titles[-1]
    assert lines[top + 1].startswith("┏") and lines[top + 3].startswith("┡"), lines[top : top + 4]
    headers = [cell.strip() for cell in lines[top + 2].strip("┃").split("┃")]
    rows = []
    for line in lines[top + 4 :]:
        if line.startswith("└"):
            break
        assert line.startswith("│") and line.endswith("│"), f"a member takes more than one line: {line!r}"
        rows.append([cell.strip() for cell in line.strip("│").split("│")])
    return lines[top].strip(), headers, rows


def assert_numbers_whole(headers: list[str], rows: list[list[str]]) -> None:
    for row in rows:
        assert len(row) == len(headers)
        for header, cell in zip(headers, row):
            if header not in TEXT_HEADERS and cell != "-":
                float(cell)  # raises on a number cut short ("0.97…")


def assert_plurals(output: str) -> None:
    counted = re.findall(r"\b(\d+) (decisions?|members?|steps?)\b", output)
    assert counted
    for count, word in counted:
        assert (count == "1") == (not word.endswith("s")), f"{count} {word}"


# --- fitting columns and pieces --------------------------------------------------------------------
DIGITS_COLUMNS = [  # what a 64-member digits run shows: widths of the widest cells
    ColumnSpec("member", "member", 2, priority=0, short="#"),
    ColumnSpec("score", "val_acc", 6, priority=0),
    ColumnSpec("step", "step", 2, priority=0),
    ColumnSpec("gen", "gen", 1, priority=0),
    ColumnSpec("hp:lr", "lr", 9, priority=1),
    ColumnSpec("hp:momentum", "momentum", 6, priority=4),
    ColumnSpec("hp:weight_decay", "weight_decay", 9, priority=5),
    ColumnSpec("hp:dropout", "dropout", 6, priority=6),
    ColumnSpec("decision", "last decision", 40, numeric=False, priority=2, short="decision"),
]


@pytest.mark.parametrize(
    ("width", "keys", "headers"),
    [
        (60, ["member", "score", "step", "gen", "hp:lr", "decision"], {"member": "member", "decision": "decision"}),
        (
            80,
            ["member", "score", "step", "gen", "hp:lr", "hp:momentum", "hp:weight_decay", "decision"],
            {"hp:momentum": "momen…", "hp:weight_decay": "weight_d…"},
        ),
        (120, [c.key for c in DIGITS_COLUMNS], {"hp:weight_decay": "weight_decay", "decision": "last decision"}),
        (200, [c.key for c in DIGITS_COLUMNS], {"decision": "last decision"}),
    ],
)
def test_columns_are_chosen_by_priority_to_fit_the_width(width: int, keys: list[str], headers: dict) -> None:
    fitted = fit_columns(DIGITS_COLUMNS, width)
    assert [c.key for c in fitted] == keys
    used = table_width([c.width for c in fitted])
    assert used <= width
    specs = {c.key: c for c in DIGITS_COLUMNS}
    for column in fitted:
        assert cell_len(column.header) <= column.width
        if column.numeric:  # a number is never cut: its column holds the widest cell whole
            assert column.width >= specs[column.key].content
        else:
            assert column.width >= 10
    for key, header in headers.items():
        assert next(c.header for c in fitted if c.key == key) == header
    if width < 120:  # a dropped column would not have fitted: the width is used up
        assert width - used < min(specs[k].minimum + 3 for k in specs if k not in keys)
    if width >= 200:  # room for everything: every column at its natural width
        assert [c.width for c in fitted] == [c.natural for c in DIGITS_COLUMNS]


def test_columns_at_a_width_too_narrow_for_all_keep_the_first_and_cut_no_number() -> None:
    fitted = fit_columns(DIGITS_COLUMNS, 30)
    assert [c.key for c in fitted] == ["member", "score", "step", "gen"]
    assert [c.header for c in fitted] == ["#", "val_acc", "step", "gen"]
    assert fit_columns(DIGITS_COLUMNS, 5) == []


def test_pieces_and_packed_lines() -> None:
    pieces = [("12/128 steps", 0), ("ETA 0:05", 1), ("best val_acc so far 0.9", 2), ("3 decisions", 3)]
    assert fit_pieces(pieces, 200) == [0, 1, 2, 3]
    assert fit_pieces(pieces, 40) == [0, 1, 3]  # the best score does not fit whole: left out, not cut
    assert fit_pieces(pieces, 5) == []
    assert pack(["a 1", "bb 22", "c 3"], 9) == ["a 1,", "bb 22,", "c 3"]
    assert pack(["a 1", "b 2"], 20) == ["a 1, b 2"]
    assert [plural(n, "decision") for n in (0, 1, 2)] == ["0 decisions", "1 decision", "2 decisions"]


# --- the live view, drawn into a console of a fixed size ---------------------------------------------
def population(members: int = 64, decisions: int = 5) -> TerminalProgress:
    progress = TerminalProgress("val_acc", "max", stream=io.StringIO(), live=False)
    progress.on_start("digits", members, members * 30, 0)
    for slot in range(members):
        hparams = {"lr": 0.001 * (slot + 1) / 3, "momentum": 0.9, "weight_decay": 1.4e-6 * slot, "dropout": 0.25}
        progress.on_score(slot, 4, 0.5 + slot / (3 * members), hparams, 0)
    for slot in range(decisions):
        progress.on_decision(
            Decision(
                slot, members - 1, "exploit", {"lr": 0.1, "momentum": 0.8}, 1, {"lr": "* 0.8", "momentum": "* 1.2"}
            )
        )
    progress.on_checkpoint(members - 1, 4, 0.8)
    return progress


def draw(progress: TerminalProgress, width: int, height: int) -> list[str]:
    console = Console(file=io.StringIO(), width=width, height=height, color_system=None)
    progress._console = console
    console.print(progress._view())
    return console.file.getvalue().splitlines()  # type: ignore[attr-defined]


@pytest.mark.parametrize(("width", "height"), [(60, 24), (80, 24), (120, 30), (200, 50)])
def test_the_view_fits_the_terminal_one_line_per_member(width: int, height: int) -> None:
    progress = population()
    lines = draw(progress, width, height)
    assert len(lines) <= height - 1 and max(map(cell_len, lines)) <= width
    title, headers, rows = members_table(lines)
    shown = height - 7  # less the status line, the table's title and borders, the cursor's line
    assert title == f"members (best {shown} of 64)" and len(rows) == shown
    assert [int(row[0]) for row in rows] == list(range(63, 63 - shown, -1))  # the best first
    assert_numbers_whole(headers, rows)
    assert re.match(r"digits .*64/1920 steps {2}ETA ", lines[0])
    if width >= 80:
        assert lines[0].endswith("best val_acc so far 0.8000  5 decisions")
    if width >= 120:
        assert headers == ["member", "val_acc", "step", "gen", "lr", "momentum", "weight_decay", "dropout"] + [
            "last decision"
        ]


def test_the_view_follows_a_resize_and_shows_all_members_when_they_fit() -> None:
    progress = population(members=64)
    assert len(members_table(draw(progress, 80, 24))[2]) == 17
    assert len(members_table(draw(progress, 80, 40))[2]) == 33
    small = population(members=3, decisions=1)
    lines = draw(small, 80, 24)
    title, _, rows = members_table(lines)
    assert title == "members" and len(rows) == 3
    assert lines[0].endswith("1 decision")


def test_text_cells_are_ellipsised_and_stay_on_one_line() -> None:
    progress = TerminalProgress("acc", "max", stream=io.StringIO(), live=False)
    progress.on_start("run", 2, 8, 0)
    progress.on_score(0, 1, 0.5, {"optimizer": "adam\nwith a very long name indeed", "lr": 0.1}, 0)
    progress.on_score(1, 1, 0.25, {"optimizer": "sgd", "lr": 1.23456789e-7}, 0)
    _, headers, rows = members_table(draw(progress, 40, 24))
    assert headers == ["#", "acc", "step", "gen", "optimizer"] and len(rows) == 2  # lr left out whole
    assert rows[0][4] == "adam\\x0awit…"  # the newline escaped, the text cut
    _, headers, rows = members_table(draw(progress, 50, 24))
    assert headers == ["#", "acc", "step", "gen", "optimizer", "lr"]
    assert [row[5] for row in rows] == ["0.1", "1.235e-07"]


class Writes(io.StringIO):
    """A stream that counts the writes made to it."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def isatty(self) -> bool:
        return False

    def write(self, s: str) -> int:
        self.count += 1
        return super().write(s)


def test_the_first_score_is_drawn_by_the_call_that_brings_it() -> None:
    stream = Writes()
    progress = TerminalProgress("acc", "max", stream=stream, live=True, refresh_per_second=0.001)
    progress.on_start("run", 4, 40, 0)  # rich's own refresh thread would wait 1000 s to draw
    try:
        progress.on_decision(Decision(0, 1, "exploit", {"lr": 0.2}, 1, {"lr": "* 2"}))  # e.g. on resume
        before = stream.getvalue()
        assert "waiting for the first score" in before and "│" not in before
        progress.on_score(2, 1, 0.5, {"lr": 0.1}, 0)
        after = stream.getvalue()[len(before) :]
        assert re.search(r"│ +2 │ +0\.5 │ +1 │", after), after  # drawn before on_score returned
        assert "1/40 steps" in after
        written = stream.count
        progress.on_score(3, 1, 0.4, {"lr": 0.1}, 0)  # the next scores wait for the refresh thread
        assert stream.count == written
    finally:
        progress.on_finish()
    assert re.search(r"│ +3 │ +0\.4 │", stream.getvalue())  # and the last view is drawn at the end


def test_plain_lines_say_members_steps_and_decisions_in_the_right_number() -> None:
    stream = io.StringIO()
    progress = TerminalProgress("acc", "max", stream=stream, live=False, lines=1)
    progress.on_start("one", 1, 1, 0)
    progress.on_decision(Decision(0, 0, "explore", {"lr": 0.2}, 1, {"lr": "* 1.2"}))
    progress.on_score(0, 1, 0.5, {"lr": 0.2}, 1)
    out = stream.getvalue()
    assert "[one] training 1 member, 1 step in all" in out and "1 decision," in out
    assert_plurals(out)


# --- the end summary ---------------------------------------------------------------------------------
def best_member(names: int) -> BestMember:
    hparams = {f"hyperparameter_{i}": 0.001234 * (i + 1) for i in range(names)}
    ops = {name: "* 0.8" for name in hparams}
    schedule = [ScheduleSegment(3, 0, 4, hparams, "init"), ScheduleSegment(7, 4, 12, hparams, "exploit", 3, ops)]
    return BestMember(7, 0.97, 12, {"acc": 0.97, "loss": 0.1}, hparams, None, schedule)


def test_summary_width_is_the_streams_or_100(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    assert stream_width(io.StringIO()) == 100
    monkeypatch.setenv("COLUMNS", "72")
    assert stream_width(io.StringIO()) == 72


@pytest.mark.parametrize("width", [60, 80, 160])
def test_summary_fits_its_width_as_a_table_or_as_plain_lines(width: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", str(width))
    for names, table_fits in ((1, True), (6, width >= 160)):
        stream = io.StringIO()
        print_summary("run", "acc", best_member(names), {"test_acc": 0.9}, wall_time=1.0, stream=stream)
        lines = stream.getvalue().splitlines()
        assert max(map(cell_len, lines)) <= width, lines
        assert any(line.startswith("┏") for line in lines) == table_fits, "\n".join(lines)
        if not table_fits:  # one line per segment, its settings packed below it, none split
            assert "  steps 4-12, member 7: copied member 3" in lines
            settings = " ".join(line.strip() for line in lines if line.startswith("    hyperparameter_"))
            for i in range(names):
                assert f"hyperparameter_{i} {0.001234 * (i + 1):.4g} (* 0.8)" in settings
        assert_plurals(stream.getvalue() + "1 decision")


# --- a real run in a pseudo-terminal -----------------------------------------------------------------
EXPERIMENT = """
import poptrain
from poptrain.experiments.toy import SPACE, ToyQuadratic

def experiment():
    space = {
        **SPACE,
        "weight_decay": poptrain.Float(1e-6, 1e-2, log=True),
        "optimizer": poptrain.Choice(["sgd", "adam", "[/bold]"]),
        "warmup_steps": poptrain.Int(0, 1000),
    }
    return {
        "trainable": ToyQuadratic, "space": space, "population_size": 40, "steps": 24, "metric": "Q",
        "mode": "max", "ready": poptrain.every(4), "exploit": poptrain.truncation(0.25),
        "explore": poptrain.perturb((0.8, 1.2)),
    }
"""


def run_in_terminal(folder: Path, columns: int, rows: int) -> tuple[str, Screen]:
    """``poptrain run`` of the experiment above in a pseudo-terminal of ``columns`` x ``rows``:
    what it wrote, and the terminal that replayed it."""
    pty = pytest.importorskip("pty")
    import fcntl
    import select
    import struct
    import termios

    (folder / "wide.py").write_text(EXPERIMENT)
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR")}
    env["TERM"] = "xterm-256color"
    process = subprocess.Popen(
        [sys.executable, "-m", "poptrain", "run", "wide.py", "--root", "r"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        cwd=folder,
        env=env,
        start_new_session=True,
    )
    os.close(slave)
    output = bytearray()
    deadline = time.monotonic() + 300  # a bound on a hung run, not a measure of speed
    try:
        while time.monotonic() < deadline:
            if select.select([master], [], [], 0.5)[0]:
                try:
                    data = os.read(master, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not data:
                    break
                output += data
            elif process.poll() is not None:
                break
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        os.close(master)
    raw = output.decode()
    assert process.returncode == 0, raw[-2000:]
    screen = Screen(columns)
    screen.feed(raw)
    return raw, screen


@pytest.mark.parametrize("columns", [80, 160])
def test_a_real_run_in_a_terminal_fits_it(tmp_path: Path, columns: int) -> None:
    raw, screen = run_in_terminal(tmp_path, columns, 24)
    lines = screen.text()
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / f"terminal-{columns}x24.txt").write_text("\n".join(lines) + "\n")
    assert not screen.wrapped, [lines[i] for i in sorted(screen.wrapped)]  # no line was wider than the terminal
    assert max(map(cell_len, lines)) <= columns
    assert screen.most_up <= 24 - 1  # the live view never reached above the screen
    title, headers, rows = members_table(lines)
    assert title == "members (best 17 of 40)" and len(rows) == 17  # one line each, as many as fit
    assert_numbers_whole(headers, rows)
    assert headers[:4] == ["member" if columns > 80 else "#", "Q", "step", "gen"]
    if columns == 160:
        assert headers == ["member", "Q", "step", "gen", "h0", "h1", "weight_decay", "optimizer", "warmup_steps"] + [
            "last decision"
        ]
    status = next(line for line in reversed(lines) if "960/960 steps" in line)
    assert re.search(r"\d+ decisions?$", status)
    assert_plurals("\n".join(lines))
    assert any(line.startswith("Run wide finished in") for line in lines)
    # the first row was drawn by the score that brought it: its frame counts one step done
    first_row = re.search(r"│ +\d+ │", raw)
    assert first_row is not None
    assert re.findall(r"(\d+)/960 steps", raw[: first_row.start()])[-1] == "1"
