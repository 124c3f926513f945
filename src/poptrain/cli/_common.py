"""What the commands share: finding a run from --root/--storage without creating anything."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from poptrain.errors import ConfigError, RunNotFoundError


def where_flags(args: argparse.Namespace) -> str:
    """The --root/--storage flags that find the same run again (empty for the defaults)."""
    if args.storage is not None:
        return f" --storage {args.storage}"
    return f" --root {args.root}" if args.root != "runs" else ""


def iso_time(seconds: float, *, short: bool = False) -> str:
    """Seconds since the epoch as ISO-8601 in UTC: ``2026-11-30T11:40:19.123456+00:00``, or
    with ``short`` to the second, ``2026-11-30T11:40:19Z``."""
    from datetime import UTC, datetime

    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if short else moment.isoformat()


def check_root(root: str) -> None:
    """Refuse a --root that is a file."""
    if Path(root).exists() and not Path(root).is_dir():
        raise ConfigError(f"--root {root} is a file, not a folder; give the folder that holds run folders")


_opened: list[Any] = []


def opened(run: Any) -> Any:
    """Keep ``run`` to be closed when the command ends (``close_opened``), so that SQLite folds
    its write-ahead log back into the database file and leaves the run folder as it found it."""
    _opened.append(run)
    return run


def close_opened() -> None:
    """Close every run the command opened."""
    while _opened:
        _opened.pop().close()


def load(args: argparse.Namespace, name: str) -> Any:
    """The run ``name`` of the command's --root/--storage, opened without creating anything."""
    import poptrain
    from poptrain.run_folders import DATABASE, run_folder

    database = run_folder(args.root, name) / DATABASE
    if args.storage is None and not database.exists():
        raise RunNotFoundError(f"no run named {name!r}: {database} does not exist; check the name and --root")
    return opened(poptrain.load_run(name, storage=args.storage, root=args.root))
