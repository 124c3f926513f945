"""Checkpoint stores: atomic, hashed, checked on load."""

from poptrain.checkpoints._base import CheckpointStore, check_loadable, deserialize, serialize, sha256
from poptrain.checkpoints._behind import WriteBehindStore
from poptrain.checkpoints._fsspec import FsspecCheckpointStore
from poptrain.checkpoints._gc import collectable
from poptrain.checkpoints._local import LocalCheckpointStore
from poptrain.checkpoints._memory import InMemoryCheckpointStore
from poptrain.checkpoints._shared import open_shared, shared_location

__all__ = [
    "CheckpointStore",
    "FsspecCheckpointStore",
    "InMemoryCheckpointStore",
    "LocalCheckpointStore",
    "WriteBehindStore",
    "check_loadable",
    "collectable",
    "deserialize",
    "open_shared",
    "serialize",
    "sha256",
    "shared_location",
]
