"""The checkpoint store contract: bytes in, a hashed reference out; load checks the hash."""

from __future__ import annotations

import hashlib
import io
import uuid
from abc import ABC, abstractmethod
from typing import Any

from poptrain.errors import CheckpointError
from poptrain.records import CheckpointRecord, NewCheckpoint


def serialize(state: Any) -> bytes:
    """Serialise a member's state (tensors, numbers, strings, lists and dicts) with ``torch.save``."""
    import torch

    buffer = io.BytesIO()
    try:
        torch.save(state, buffer)
    except Exception as exc:  # pickling errors come in many types
        raise CheckpointError(
            f"cannot save the trainable's state ({type(exc).__name__}: {exc}); "
            "state_dict() must return tensors, numbers, strings, lists and dicts"
        ) from exc
    return buffer.getvalue()


def deserialize(data: bytes, where: str) -> Any:
    """Read a state written by ``serialize``, allowing only plain data (``weights_only=True``)."""
    import torch

    try:
        return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except Exception as exc:
        raise CheckpointError(f"checkpoint {where} cannot be read ({type(exc).__name__}); it is corrupt: delete it") from exc


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class CheckpointStore(ABC):
    """Where member states are kept. ``save`` is atomic; ``load`` verifies the sha256."""

    @abstractmethod
    def write(self, key: str, data: bytes) -> str:
        """Store ``data`` under ``key`` atomically and return its URI."""

    @abstractmethod
    def read(self, uri: str) -> bytes:
        """The bytes at ``uri``; ``CheckpointError`` if missing."""

    @abstractmethod
    def delete(self, uri: str) -> None:
        """Remove the bytes at ``uri`` if present."""

    def save(self, slot: int, step: int, state: Any) -> NewCheckpoint:
        """Serialise and store a member's state at a step."""
        data = serialize(state)
        uri = self.write(f"member-{slot:04d}/step-{step:08d}.pt", data)
        return NewCheckpoint(uri, sha256(data), len(data))

    def save_population(self, step: int, state: Any) -> NewCheckpoint:
        """Serialise and store a whole population's state (one file that many members' checkpoint
        records share, each naming its own slot)."""
        data = serialize(state)
        uri = self.write(f"population/step-{step:08d}-{uuid.uuid4().hex[:8]}.pt", data)
        return NewCheckpoint(uri, sha256(data), len(data))

    def load_member(self, record: CheckpointRecord) -> Any:
        """The state of the member that saved ``record``, cut out of a population checkpoint
        when it is one."""
        state = self.load(record)
        from poptrain.vectorized.population import is_population_checkpoint, member_from_checkpoint

        return member_from_checkpoint(state, record.slot) if is_population_checkpoint(state) else state

    def load(self, record: CheckpointRecord) -> Any:
        """Read a checkpoint back, refusing one whose bytes do not match the recorded sha256."""
        data = self.read(record.uri)
        if sha256(data) != record.sha256:
            raise CheckpointError(
                f"checkpoint {record.uri} of member {record.slot} at step {record.step} is corrupt "
                "(sha256 mismatch); delete it, or restore it from a backup"
            )
        return deserialize(data, record.uri)
