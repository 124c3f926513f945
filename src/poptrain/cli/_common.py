"""What the commands share: finding a run from --root/--storage without creating anything."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from poptrain.errors import ConfigError, RunNotFoundError


def where_flags(args: argparse.Namespace) -> str:
    """The --root/--storage flags that find the same run again (empty for the defaults); with
    --storage, --root still says where the checkpoints are."""
    flags = f" --root {args.root}" if args.root != "runs" else ""
    return flags + (f" --storage {args.storage}" if args.storage is not None else "")


def check_output_file(path: Path) -> None:
    """Refuse an output file that is a run's database or checkpoint (or a folder)."""
    from poptrain.run_folders import DATABASE

    if path.is_dir():
        raise ConfigError(f"--output {path} is a folder; give a file name")
    if not path.is_file():
        return
    with open(path, "rb") as handle:
        head = handle.read(16)
    if head.startswith(b"SQLite format 3") or path.name.startswith(DATABASE) or path.suffix == ".pt":
        raise ConfigError(
            f"--output {path} is a database or checkpoint file; nothing was written: give a new file name"
        )


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
