"""A checkpoint store that other processes or machines can open again: a folder or a URL."""

from __future__ import annotations

from poptrain.checkpoints._base import CheckpointStore
from poptrain.checkpoints._fsspec import FsspecCheckpointStore
from poptrain.checkpoints._local import LocalCheckpointStore


def shared_location(store: CheckpointStore) -> str | None:
    """Where another process finds ``store``: its folder (absolute) or its fsspec URL; ``None``
    for a store that lives in this process only."""
    if isinstance(store, LocalCheckpointStore):
        return str(store.root.resolve())
    if isinstance(store, FsspecCheckpointStore):
        return store.url
    return None


def open_shared(location: str) -> CheckpointStore:
    """The store at a ``shared_location``: a URL (``scheme://...``) or a folder path."""
    return FsspecCheckpointStore(location) if "://" in location else LocalCheckpointStore(location)
