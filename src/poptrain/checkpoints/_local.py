"""Checkpoints in a local folder, written atomically (temp file + ``os.replace``)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from poptrain.checkpoints._base import CheckpointStore
from poptrain.errors import CheckpointError


class LocalCheckpointStore(CheckpointStore):
    """Files under ``root``; URIs are paths relative to it, so the run folder can move.

    ``fsync=True`` also flushes each file to disk before the rename (survives power loss,
    not just a killed process) at some cost per checkpoint.
    """

    def __init__(self, root: str | os.PathLike[str], *, fsync: bool = False) -> None:
        self.root = Path(root)
        self.fsync = fsync
        self._resolved: Path | None = None  # the root's real path, once it exists
        self._folders: set[Path] = set()  # folders this store made or found (not made again per write)

    def path(self, uri: str) -> Path:
        """The file of ``uri``; ``CheckpointError`` for one that points outside the folder."""
        return self._path(uri)

    def _path(self, uri: str) -> Path:
        path = (self.root / uri).resolve()
        if self._resolved is None or self._resolved not in path.parents:  # resolved again when it may have changed
            root = self.root.resolve()
            self._resolved = root if root.is_dir() else None
        else:
            root = self._resolved
        if root not in path.parents:
            raise CheckpointError(f"checkpoint URI {uri!r} points outside the checkpoint folder {self.root}")
        return path

    def write(self, key: str, data: bytes) -> str:
        path = self._path(key)
        try:
            if path.parent not in self._folders:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._folders.add(path.parent)
            try:
                fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
            except FileNotFoundError:  # the folder went away since (a run folder deleted): made again
                self._folders.discard(path.parent)
                path.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                    if self.fsync:
                        handle.flush()
                        os.fsync(handle.fileno())
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise CheckpointError(
                f"cannot write checkpoint {path}: {exc.strerror or exc}; free disk space or choose another checkpoint folder"
            ) from exc
        return key

    def read(self, uri: str) -> bytes:
        path = self._path(uri)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise CheckpointError(
                f"checkpoint file {path} is missing; it was deleted or the run folder moved"
            ) from None
        except OSError as exc:
            raise CheckpointError(f"cannot read checkpoint {path}: {exc.strerror or exc}") from exc

    def delete(self, uri: str) -> None:
        self._path(uri).unlink(missing_ok=True)
