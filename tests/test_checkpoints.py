"""The checkpoint-store contract over both stores, and the local store's files."""

from __future__ import annotations

import os

import pytest

import poptrain
from poptrain import CheckpointError
from poptrain.checkpoints import FsspecCheckpointStore, InMemoryCheckpointStore, LocalCheckpointStore
from poptrain.testing import CheckpointStoreContract


class TestInMemoryCheckpointStore(CheckpointStoreContract):
    def make_store(self, tmp_path):
        return InMemoryCheckpointStore()


class TestFsspecMemoryCheckpointStore(CheckpointStoreContract):
    def make_store(self, tmp_path):
        return FsspecCheckpointStore(f"memory://poptrain-tests/{tmp_path.name}")


class TestFsspecFileCheckpointStore(CheckpointStoreContract):
    def make_store(self, tmp_path):
        return FsspecCheckpointStore(f"file://{tmp_path}/remote")

    def test_no_temp_files_left(self, store, tmp_path):
        for step in (2, 4):
            store.save(0, step, {"w": step})
        names = sorted(p.name for p in (tmp_path / "remote").rglob("*") if p.is_file())
        assert [n[:13] for n in names] == ["step-00000002", "step-00000004"] and all(n.endswith(".pt") for n in names)


def test_unknown_filesystem_is_a_clear_error():
    with pytest.raises(poptrain.ConfigError, match="cannot use checkpoint URL 'nosuchfs://x'"):
        FsspecCheckpointStore("nosuchfs://x")


def test_run_with_checkpoint_url_resumes_from_it(tmp_path):
    from pbt_helpers import SPACE, Tracer

    url = f"file://{tmp_path}/bucket/run"
    run = poptrain.create_run(
        name="u",
        space=SPACE,
        population_size=3,
        metric="score",
        root=tmp_path / "runs",
        checkpoints=url,
        ready=poptrain.every(2),
    )
    run.optimize(Tracer, steps=4)
    assert any((tmp_path / "bucket" / "run").rglob("*.pt"))
    assert not (tmp_path / "runs" / "u" / "checkpoints").exists()
    reloaded = poptrain.load_run("u", root=tmp_path / "runs")  # finds the URL in the run's record
    assert str(reloaded.checkpoints.root).endswith("bucket/run")  # a file:// URL is a local folder
    reloaded.optimize(Tracer, steps=8)
    assert all(m.step == 8 for m in reloaded.members())


class TestLocalCheckpointStore(CheckpointStoreContract):
    def make_store(self, tmp_path):
        return LocalCheckpointStore(tmp_path / "checkpoints")

    def test_files_only_no_temp_files(self, store, tmp_path):
        saved = [store.save(slot, step, self.state(step)) for slot in range(3) for step in (4, 8)]
        saved.append(store.save(0, 4, self.state(99)))  # the same step again: a new file, the first one kept
        files = sorted(str(p.relative_to(store.root)) for p in store.root.rglob("*") if p.is_file())
        assert files == sorted(c.uri for c in saved) and len(set(files)) == 7
        expected = [f"member-{slot:04d}/step-{step:08d}" for slot in range(3) for step in (4, 8)]
        assert [f[:25] for f in files] == sorted([*expected, "member-0000/step-00000004"])
        self.assert_same_state(store.load(self.record(saved[0])), self.state(4))  # not replaced by the later save

    def test_failed_write_leaves_no_temp_file(self, store, monkeypatch):
        def broken_replace(src, dst):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(os, "replace", broken_replace)
        with pytest.raises(CheckpointError, match="No space left on device"):
            store.save(0, 1, self.state())
        assert [p for p in store.root.rglob("*") if p.is_file()] == []

    def test_fsync_store_round_trips(self, tmp_path):
        store = LocalCheckpointStore(tmp_path / "synced", fsync=True)
        new = store.save(1, 2, self.state())
        self.assert_same_state(store.load(self.record(new, 1, 2)), self.state())

    def test_uris_are_relative_so_the_folder_can_move(self, store, tmp_path):
        new = store.save(0, 1, self.state())
        assert not os.path.isabs(new.uri)
        moved = tmp_path / "moved"
        store.root.rename(moved)
        self.assert_same_state(LocalCheckpointStore(moved).load(self.record(new)), self.state())

    def test_uri_outside_the_folder_is_refused(self, store):
        with pytest.raises(CheckpointError, match="outside"):
            store.read("../../etc/passwd")

    def test_unwritable_folder(self, tmp_path):
        blocker = tmp_path / "a-file"
        blocker.write_text("in the way")
        store = LocalCheckpointStore(blocker / "checkpoints")
        with pytest.raises(CheckpointError, match="cannot write checkpoint"):
            store.save(0, 1, self.state())

    @pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can write anywhere")
    def test_read_only_folder(self, tmp_path):
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o500)
        try:
            with pytest.raises(CheckpointError, match="cannot write checkpoint"):
                LocalCheckpointStore(folder).save(0, 1, self.state())
        finally:
            folder.chmod(0o700)


@pytest.mark.parametrize("kind", ["memory", "local", "fsspec"])
def test_a_state_safe_loading_refuses_is_not_written(tmp_path, kind):
    """The save refuses it (naming where it is) before writing anything, in every store."""
    import numpy as np

    store = {
        "memory": InMemoryCheckpointStore,
        "local": lambda: LocalCheckpointStore(tmp_path / "c"),
        "fsspec": lambda: FsspecCheckpointStore(f"file://{tmp_path}/c"),
    }[kind]()
    with pytest.raises(CheckpointError, match=r"^state_dict\(\)\['opt'\]\['lr'\] holds a numpy.float32, "):
        store.save(
            0, 1, {"model": {"w": CheckpointStoreContract.state()["model"]["w"]}, "opt": {"lr": np.float32(0.1)}}
        )
    with pytest.raises(CheckpointError, match=r"^the population's state\['slots'\]\[1\] holds a numpy.int64, "):
        store.save_population(1, {"slots": [0, np.int64(1)]})
    assert not (tmp_path / "c").exists()
    with pytest.raises(CheckpointError, match="missing"):
        store.read("member-0000/step-00000001.pt")


def test_a_store_loads_its_own_checkpoints_without_safe_loadings_cost(tmp_path, monkeypatch):
    """Bytes whose sha256 the store computed when it wrote them are read with torch's full
    unpickler (the same objects, faster); any other checkpoint, even of the same folder, with
    safe loading (weights_only=True)."""
    import torch

    from poptrain.records import CheckpointRecord

    calls = []
    real_load = torch.load

    def spying_load(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spying_load)
    writer = LocalCheckpointStore(tmp_path)
    new = writer.save(0, 4, {"w": torch.arange(3.0), "step": 4})
    record = CheckpointRecord(1, 0, 4, new.uri, new.sha256, new.size_bytes, None)
    assert torch.equal(writer.load(record)["w"], torch.arange(3.0)) and calls == [False]
    reader = LocalCheckpointStore(tmp_path)  # another process's view of the same folder
    assert torch.equal(reader.load(record)["w"], torch.arange(3.0)) and calls == [False, True]
