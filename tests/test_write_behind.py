"""Checkpoint files written by a background thread (``WriteBehindStore``): ``save`` returns at
once, the bytes are served until the file exists, a failed write is raised at ``flush``, and
the scheduler never records a checkpoint whose file is not written yet."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch

import poptrain
from poptrain.checkpoints import InMemoryCheckpointStore, LocalCheckpointStore, WriteBehindStore
from poptrain.errors import CheckpointError
from poptrain.experiments.toy import SPACE, ToyQuadratic
from poptrain.records import CheckpointRecord, NewCheckpoint
from poptrain.storage._sql import SQLStorage


class Gated(InMemoryCheckpointStore):
    """Writes wait until ``gate`` is set; ``fail`` makes them raise instead."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.fail: Exception | None = None
        self.rename = False

    def write(self, key: str, data: bytes) -> str:
        self.gate.wait(10)
        if self.fail is not None:
            raise self.fail
        super().write(key, data)
        return "elsewhere/" + key if self.rename else key


def record(new: NewCheckpoint) -> CheckpointRecord:
    return CheckpointRecord(1, 0, 4, new.uri, new.sha256, new.size_bytes, None)


def state() -> dict[str, Any]:
    return {"w": torch.arange(4.0), "step": 4}


def test_save_returns_before_the_file_is_written_and_flush_waits_for_it() -> None:
    inner = Gated()
    store = WriteBehindStore(inner)
    new = store.save(0, 4, state())
    with pytest.raises(CheckpointError, match="missing"):
        inner.read(new.uri)  # not written yet
    assert torch.equal(store.load(record(new))["w"], torch.arange(4.0))  # served from memory, sha256 checked
    threading.Timer(0.05, inner.gate.set).start()
    store.flush()
    assert inner.read(new.uri) == store.read(new.uri)
    store.close()


def test_a_failed_write_is_raised_by_flush_once() -> None:
    inner = Gated()
    inner.fail = CheckpointError("cannot write checkpoint x: No space left on device")
    inner.gate.set()
    store = WriteBehindStore(inner)
    store.save(0, 4, state())
    store.save(1, 4, state())
    with pytest.raises(CheckpointError, match="No space left on device"):
        store.flush()
    store.flush()  # both writes were waited for, and forgotten
    store.close()


def test_delete_waits_for_the_write_it_deletes() -> None:
    inner = Gated()
    store = WriteBehindStore(inner)
    new = store.save(0, 4, state())
    threading.Timer(0.05, inner.gate.set).start()
    store.delete(new.uri)
    with pytest.raises(CheckpointError, match="missing"):
        inner.read(new.uri)
    store.close()


def test_a_store_that_renames_what_it_writes_is_refused() -> None:
    inner = Gated()
    inner.rename = True
    inner.gate.set()
    store = WriteBehindStore(inner)
    store.save(0, 4, state())
    with pytest.raises(CheckpointError, match="URIs are its keys"):
        store.close()


def test_storage_records_a_checkpoint_only_once_its_file_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sequential run whose checkpoint files take 20 ms each to write: the next member trains
    meanwhile, and every checkpoint the storage records is on disk when it is recorded."""
    real_write, real_record, real_flush = LocalCheckpointStore.write, SQLStorage.record_ready, WriteBehindStore.flush
    seen = {"recorded": 0, "flushes_that_waited": 0}

    def slow_write(self: LocalCheckpointStore, key: str, data: bytes) -> str:
        time.sleep(0.02)
        return real_write(self, key, data)

    def checked_record(self: SQLStorage, run_id: int, points: Any, *args: Any, **kwargs: Any) -> Any:
        for point in points:
            assert (run.checkpoints.root / point.checkpoint.uri).is_file(), f"{point.checkpoint.uri} not written yet"
            seen["recorded"] += 1
        return real_record(self, run_id, points, *args, **kwargs)

    def counting_flush(self: WriteBehindStore) -> None:
        seen["flushes_that_waited"] += any(not future.done() for future, _ in self._pending.values())
        real_flush(self)

    monkeypatch.setattr(LocalCheckpointStore, "write", slow_write)
    monkeypatch.setattr(SQLStorage, "record_ready", checked_record)
    monkeypatch.setattr(WriteBehindStore, "flush", counting_flush)
    run = poptrain.create_run(name="behind", space=SPACE, population_size=4, metric="Q", seed=3, root=tmp_path)
    run.optimize(ToyQuadratic, steps=12)
    assert seen["recorded"] == 4 * 3 and seen["flushes_that_waited"] > 0
    assert sorted((s.slot, s.step) for s in run.scores()) == [(m, s) for m in range(4) for s in range(1, 13)]
    for checkpoint in run.storage.get_checkpoints(run.record.id):
        if not checkpoint.deleted:
            run.load_state(checkpoint)  # written whole: its sha256 matches
    assert run.checkpoints is not None and not isinstance(run.checkpoints, WriteBehindStore)
    run.close()
