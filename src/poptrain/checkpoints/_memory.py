"""Checkpoints kept as bytes in this process."""

from __future__ import annotations

import threading

from poptrain.checkpoints._base import CheckpointStore
from poptrain.errors import CheckpointError


class InMemoryCheckpointStore(CheckpointStore):
    """A dict of serialised states: exploit copies are deep, and the sha256 is still checked."""

    def __init__(self) -> None:
        self._data: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def write(self, key: str, data: bytes) -> str:
        with self._lock:
            self._data[key] = bytes(data)
        return key

    def read(self, uri: str) -> bytes:
        with self._lock:
            if uri not in self._data:
                raise CheckpointError(f"checkpoint {uri} is missing from the in-memory store")
            return self._data[uri]

    def delete(self, uri: str) -> None:
        with self._lock:
            self._data.pop(uri, None)
