"""Checkpoint stores: atomic, hashed, checked on load."""

from poptrain.checkpoints._base import CheckpointStore, deserialize, serialize, sha256
from poptrain.checkpoints._fsspec import FsspecCheckpointStore
from poptrain.checkpoints._gc import collectable
from poptrain.checkpoints._local import LocalCheckpointStore
from poptrain.checkpoints._memory import InMemoryCheckpointStore

__all__ = ["FsspecCheckpointStore", "collectable", "CheckpointStore", "InMemoryCheckpointStore", "LocalCheckpointStore", "deserialize", "serialize", "sha256"]
