"""The checkpoint-store contract over both stores, and the local store's files."""

from __future__ import annotations

import os

import pytest

from poptrain import CheckpointError
from poptrain.checkpoints import InMemoryCheckpointStore, LocalCheckpointStore
from poptrain.testing import CheckpointStoreContract


class TestInMemoryCheckpointStore(CheckpointStoreContract):
    def make_store(self, tmp_path):
        return InMemoryCheckpointStore()


class TestLocalCheckpointStore(CheckpointStoreContract):
    def make_store(self, tmp_path):
        return LocalCheckpointStore(tmp_path / "checkpoints")

    def test_files_only_no_temp_files(self, store, tmp_path):
        for slot in range(3):
            for step in (4, 8):
                store.save(slot, step, self.state(step))
        store.save(0, 4, self.state(99))  # overwrite in place
        files = sorted(str(p.relative_to(store.root)) for p in store.root.rglob("*") if p.is_file())
        assert files == [f"member-{slot:04d}/step-{step:08d}.pt" for slot in range(3) for step in (4, 8)]

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
