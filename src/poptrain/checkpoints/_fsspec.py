"""Checkpoints behind an fsspec URL (``s3://bucket/runs/x``, ``gs://...``, ``file:///...``)
for workers on several machines: written to a temporary name, then moved into place."""

from __future__ import annotations

import uuid
from typing import Any

from poptrain.checkpoints._base import CheckpointStore
from poptrain.errors import CheckpointError, ConfigError


class FsspecCheckpointStore(CheckpointStore):
    """Files under ``url`` on any filesystem fsspec knows; URIs are paths relative to it."""

    def __init__(self, url: str, **storage_options: Any) -> None:
        try:
            import fsspec
        except ImportError:  # pragma: no cover - fsspec comes with torch
            raise ConfigError("checkpoint URLs need fsspec: pip install fsspec") from None
        try:
            self.fs, self.root = fsspec.core.url_to_fs(url, **storage_options)
        except (ImportError, ValueError) as exc:
            raise ConfigError(
                f"cannot use checkpoint URL {url!r}: {exc}; install the filesystem's package (e.g. s3fs)"
            ) from None
        self.url = url
        self.root = self.root.rstrip("/")

    def _path(self, uri: str) -> str:
        if uri.startswith("/") or ".." in uri.split("/"):
            raise CheckpointError(f"checkpoint URI {uri!r} points outside {self.url}")
        return f"{self.root}/{uri}"

    def write(self, key: str, data: bytes) -> str:
        path = self._path(key)
        tmp = f"{path}.{uuid.uuid4().hex}.tmp"
        try:
            self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            with self.fs.open(tmp, "wb") as handle:
                handle.write(data)
            self.fs.mv(tmp, path)
        except OSError as exc:
            try:
                self.fs.rm(tmp)
            except OSError:
                pass
            raise CheckpointError(f"cannot write checkpoint {self.url}/{key}: {exc}") from exc
        return key

    def read(self, uri: str) -> bytes:
        path = self._path(uri)
        try:
            with self.fs.open(path, "rb") as handle:
                return handle.read()
        except FileNotFoundError:
            raise CheckpointError(f"checkpoint {self.url}/{uri} is missing; it was deleted or moved") from None
        except OSError as exc:
            raise CheckpointError(f"cannot read checkpoint {self.url}/{uri}: {exc}") from exc

    def delete(self, uri: str) -> None:
        try:
            self.fs.rm(self._path(uri))
        except FileNotFoundError:
            pass
