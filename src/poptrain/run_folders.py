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

import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from poptrain.errors import ConfigError, RunNotFoundError

if TYPE_CHECKING:
    from poptrain.checkpoints import CheckpointStore
    from poptrain.storage import Storage

DATABASE = "poptrain.db"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_name(name: object) -> str:
    """``name`` if it is usable as a run's folder name, else ``ConfigError``."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(
            f"run name {name!r} is not usable as a folder name; use letters, digits, '.', '_' and '-' "
            "(starting with a letter or digit, at most 128)"
        )
    return name


def run_folder(root: str | Path, name: str) -> Path:
    """``<root>/<name>``, the folder of a run kept by the default storage."""
    return Path(root) / check_name(name)


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


def _inside(root: str | Path, name: str) -> Path:
    """The run folder, refused if it is a link or resolves anywhere but directly inside ``root``."""
    folder = run_folder(root, name)
    if folder.is_symlink():
        raise ConfigError(f"{folder} is a symbolic link, not a run folder; nothing was deleted (remove the link yourself)")
    if folder.exists() and folder.resolve().parent != Path(root).resolve():
        raise ConfigError(f"{folder} is not directly inside the runs folder {root}; nothing was deleted")
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
            raise RunNotFoundError(f"no run named {name!r}: {folder} does not exist; check the name and the runs folder")
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
            raise RunNotFoundError(f"{where} holds no run named {name!r}; nothing was deleted (runs there: {', '.join(names) or 'none'})")
        if storage is None and names == [name]:
            close()
            shutil.rmtree(folder)
            return f"deleted the run folder {folder}"
        record = store.get_run(name)
        from poptrain.run import checkpoint_store

        files = checkpoint_store(checkpoints or record.spec.get("checkpoints"), run_folder(root, name), store)
        removed = 0
        for checkpoint in store.get_checkpoints(record.id):
            if not checkpoint.deleted:
                files.delete(checkpoint.uri)
                removed += 1
        store.delete_run(record.id)
        return f"deleted run {name!r} from its storage ({removed} checkpoint files); other runs there are kept"
    finally:
        close()
