"""``poptrain ls`` and ``poptrain rm``: the runs under a runs folder (or in one database), and
removing one safely (see ``poptrain.run_folders``)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from poptrain.cli._common import check_root, iso_time, load
from poptrain.errors import ConfigError, PoptrainError


@dataclass(frozen=True)
class RunRow:
    """One line of ``poptrain ls``."""

    name: str
    state: str
    best: str
    steps: str
    updated: str


def _row(run: Any) -> RunRow:
    """The run's line, from the row the dashboard's index shows (``poptrain.report.index``)."""
    from poptrain.report.index import read_index_row

    row = read_index_row(run.storage, run.record)
    planned = run.record.settings.steps
    return RunRow(
        run.name,
        row.label,
        "-" if row.best is None else f"{row.best:.4g} (member {row.best_slot})",
        f"{row.slowest_step}/{planned if planned else '?'}",
        iso_time(row.updated or run.record.created_at, short=True),
    )


def _names(args: argparse.Namespace) -> list[str]:
    """The runs in the --storage database, or the run folders under --root."""
    from poptrain.run_folders import DATABASE
    from poptrain.storage import open_storage

    if args.storage is not None:
        store = open_storage(args.storage, create=False)
        try:
            return [r.name for r in store.list_runs()]
        finally:
            store.close()
    check_root(args.root)
    return [database.parent.name for database in sorted(Path(args.root).glob(f"*/{DATABASE}"))]


def _rows(args: argparse.Namespace) -> list[RunRow]:
    rows = []
    for name in _names(args):
        try:
            run = load(args, name)
        except PoptrainError as exc:  # one unreadable run does not hide the others
            rows.append(RunRow(name, "unreadable", "-", "-", str(exc)))
            continue
        try:
            rows.append(_row(run))
        finally:
            run.close()
    return rows


def cmd_ls(args: argparse.Namespace) -> int:
    """List runs: name, state, best score, steps done of planned (per member), last update (UTC)."""
    from rich.console import Console
    from rich.table import Table

    from poptrain.report.terminal import text

    rows = _rows(args)
    console = Console(width=160)
    if not rows:
        where = args.storage or f"{args.root}/" + ("" if Path(args.root).is_dir() else " (the folder does not exist)")
        console.print(text(f"no runs in {where}"))
        return 0
    table = Table()
    for column in ("run", "state", "best score", "steps", "last update"):
        table.add_column(column)
    for row in rows:
        table.add_row(*(text(cell) for cell in (row.name, row.state, row.best, row.steps, row.updated)))
    console.print(table)
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    """Delete a run after asking (``--yes``: without asking)."""
    from poptrain.run_folders import delete_run

    run = load(args, args.name)  # refuses a missing run before asking anything
    try:
        state, steps = run.record.state, min((m.step for m in run.members()), default=0)
    finally:
        run.close()
    if not args.yes:
        if not sys.stdin or not sys.stdin.isatty():
            raise ConfigError(
                f"poptrain rm asks before deleting, and there is no terminal to ask on; add --yes to delete run {args.name}"
            )
        where = args.storage or f"{Path(args.root) / args.name}"
        try:
            answer = input(f"Delete run {args.name} ({state}, {steps} steps per member) from {where}? [y/N] ")
        except EOFError:
            answer = ""
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return 1
    print(delete_run(args.name, root=args.root, storage=args.storage))
    return 0
