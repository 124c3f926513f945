"""Where a run lives, and removing one safely.

A run name is one safe folder name. The default storage keeps a run in ``<root>/<name>/``
(``poptrain.db`` and ``checkpoints/``). Removing a run (``create_run(if_exists="overwrite")``,
``poptrain run --overwrite``, ``poptrain rm``) deletes only:

- a folder strictly inside ``root`` (no symlink, no way out of it) whose ``poptrain.db`` holds
  poptrain's schema and a run of that name, and no other run; or
- in a database shared by several runs (``storage=URL``, or a run folder holding other runs),
  that run's rows and the checkpoint files it recorded, nothing else.

Everything is checked before anything is deleted; a folder that is not a run's is refused.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

from poptrain.errors import ConfigError, RunNotFoundError

if TYPE_CHECKING:
    from poptrain.checkpoints import CheckpointStore
    from poptrain.records import RunRecord
    from poptrain.storage import Storage

DATABASE = "poptrain.db"
# What poptrain writes in a run folder: a folder holding anything else is not removed whole.
RUN_FILES = frozenset(
    {
        DATABASE,
        f"{DATABASE}-wal",
        f"{DATABASE}-shm",
        f"{DATABASE}-journal",
        "checkpoints",
        "replays",
        "report.html",
        "scores.png",
        "schedules.png",
        "lineage.png",
        "summary.json",
    }
)
RECENT_SECONDS = 60.0  # a run in state "running" that scored this recently is taken to be training now
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_name(name: object) -> str:
    """``name`` if it is usable as a run's folder name, else ``ConfigError``."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(
            f"run name {name!r} is not usable as a folder name; use letters, digits, '.', '_' and '-' "
            "(starting with a letter or digit, at most 128)"
        )
    return name


def run_folder(root: str | Path, name: str) -> Path:
    """``<root>/<name>``, the folder of a run kept by the default storage (``~`` expanded)."""
    return Path(root).expanduser() / check_name(name)


def check_free(root: str | Path, name: str) -> None:
    """Refuse to make a run in ``<root>/<name>`` when that folder holds something that is not a
    run (an empty folder, or a run folder, is fine)."""
    folder = run_folder(root, name)
    if folder.is_dir() and not (folder / DATABASE).exists() and any(folder.iterdir()):
        raise ConfigError(
            f"{folder} exists and is not a poptrain run folder (it has no {DATABASE}); nothing was written: "
            "choose another name, or move that folder away"
        )
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{folder} is a file, not a run folder; nothing was written: choose another name")


def check_checkpoint_folder(folder: Path, own: set[str]) -> None:
    """Refuse a checkpoint folder holding checkpoint files other than ``own`` (relative paths):
    two runs writing ``member-0000/step-00000004.pt`` into one folder would overwrite each other."""
    if not folder.is_dir():
        return
    foreign = sorted(str(p.relative_to(folder)) for p in folder.rglob("*.pt") if str(p.relative_to(folder)) not in own)
    if foreign:
        raise ConfigError(
            f"the checkpoint folder {folder} holds another run's checkpoints ({foreign[0]}, {len(foreign)} in all); "
            "nothing was written: give this run a folder of its own (another name or root, or checkpoints=)"
        )


def _foreign_entries(folder: Path) -> list[str]:
    """What a run folder holds that poptrain did not put there: other names at its top, and any
    other run's database or a mount point anywhere below it."""
    found = [p.name + ("/" if p.is_dir() else "") for p in folder.iterdir() if p.name not in RUN_FILES]
    for below in folder.rglob("*"):
        if below.name == DATABASE and below.parent != folder:
            found.append(f"{below.relative_to(folder)} (another run)")
        elif below.is_dir() and os.path.ismount(below):
            found.append(f"{below.relative_to(folder)} (a mount point)")
    return sorted(found)


def _inside(root: str | Path, name: str) -> Path:
    """The run folder, refused if it is a link or resolves anywhere but directly inside ``root``."""
    folder = run_folder(root, name)
    if folder.is_symlink():
        raise ConfigError(
            f"{folder} is a symbolic link, not a run folder; nothing was deleted (remove the link yourself)"
        )
    if folder.exists() and folder.resolve().parent != Path(root).expanduser().resolve():
        raise ConfigError(f"{folder} is not directly inside the runs folder {root}; nothing was deleted")
    if folder.exists() and os.path.ismount(folder):
        raise ConfigError(f"{folder} is a mount point, not a run folder; nothing was deleted (unmount it yourself)")
    return folder


def delete_run(
    name: str,
    *,
    root: str | Path,
    storage: str | Storage | None = None,
    checkpoints: CheckpointStore | str | Path | None = None,
) -> str:
    """Remove run ``name`` and return a sentence saying what was removed.

    With the default storage (``storage=None``) the run's folder goes, when it is a run folder
    as described in this module's docstring; otherwise only the run's rows and its checkpoint
    files. ``RunNotFoundError`` when there is no such run; ``ConfigError`` (and nothing deleted)
    for a folder or database that is not what it should be.
    """
    from poptrain.storage import open_storage

    check_name(name)
    database: Path | None = None
    if storage is None:
        folder = _inside(root, name)
        database = folder / DATABASE
        if not folder.exists():
            raise RunNotFoundError(
                f"no run named {name!r}: {folder} does not exist; check the name and the runs folder"
            )
        if not database.is_file():
            raise ConfigError(
                f"{folder} is not a poptrain run folder (it has no {DATABASE}); nothing was deleted: "
                "remove it yourself or choose another name"
            )
    from poptrain.storage import Storage

    store = open_storage(storage, default_path=str(database) if database else None, create=False)
    close = store.close if not isinstance(storage, Storage) else (lambda: None)
    try:
        names = [r.name for r in store.list_runs()]
        if name not in names:
            where = f"{folder / DATABASE}" if storage is None else "this storage"
            raise RunNotFoundError(
                f"{where} holds no run named {name!r}; nothing was deleted (runs there: {', '.join(names) or 'none'})"
            )
        record = store.get_run(name)
        _check_not_training(store, record)
        if storage is None and names == [name]:
            foreign = _foreign_entries(folder)
            if foreign:
                raise ConfigError(
                    f"{folder} holds what poptrain did not write there ({', '.join(foreign[:5])}"
                    f"{', ...' if len(foreign) > 5 else ''}); nothing was deleted: move those out first"
                )
            close()
            shutil.rmtree(folder)
            return f"deleted the run folder {folder}"
        from poptrain.checkpoints import LocalCheckpointStore
        from poptrain.run import checkpoint_store

        files = checkpoint_store(checkpoints or record.settings.checkpoints, run_folder(root, name), False)
        uris = [c.uri for c in store.get_checkpoints(record.id) if not c.deleted]
        if isinstance(files, LocalCheckpointStore):  # every path checked before the first file goes
            uris = [uri for uri in uris if files.path(uri).exists()]
        for uri in uris:
            files.delete(uri)
        store.delete_run(record.id)
        return f"deleted run {name!r} from its storage ({len(uris)} checkpoint files); other runs there are kept"
    finally:
        close()


def _check_not_training(store: Storage, record: RunRecord) -> None:
    """Refuse to delete a run that a process is training now (it scored moments ago)."""
    if record.state != "running":
        return
    scores = store.get_scores(record.id)
    last = max([record.created_at, *(score.wall_time for score in scores[-1:])])
    idle = time.time() - last
    if idle < RECENT_SECONDS:
        raise ConfigError(
            f"run {record.name!r} is training now (its last score is {idle:.0f} s old); nothing was deleted: stop it "
            f"first (Ctrl-C), or, if it was killed, try again in {RECENT_SECONDS - idle:.0f} s"
        )
