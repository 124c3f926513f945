"""Contract suites for ``Storage`` backends and ``CheckpointStore`` implementations.

Subclass in a test module (the class name must start with ``Test`` for pytest to collect it)
and override the factory::

    class TestMyStorage(StorageContract):
        def make_storage(self, tmp_path):
            return MyStorage(f"sqlite:///{tmp_path}/poptrain.db")

    class TestMyCheckpoints(CheckpointStoreContract):
        def make_store(self, tmp_path):
            return MyCheckpointStore(tmp_path / "checkpoints")

Every test gets a fresh backend from the factory, built in pytest's ``tmp_path``.
Requires pytest.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from pathlib import Path
from typing import Any

import pytest

from poptrain.checkpoints import CheckpointStore, sha256
from poptrain.errors import CheckpointError, RunExistsError, RunNotFoundError, StaleWriteError, StorageError
from poptrain.records import (
    CheckpointRecord,
    Decision,
    GenerationRecord,
    MemberRecord,
    NewCheckpoint,
    ReadyPoint,
    RunRecord,
    ScoreRecord,
)
from poptrain.storage import Storage

__all__ = ["CheckpointStoreContract", "StorageContract"]

SPEC: dict[str, Any] = {
    "space": {"lr": {"type": "float", "low": 0.001, "high": 0.1, "log": True}},
    "population_size": 3,
    "metric": "acc",
    "mode": "max",
}


def _hparams(slot: int) -> dict[str, Any]:
    return {"lr": 0.01 * (slot + 1), "layers": slot + 1, "act": "relu"}


def _ckpt(tag: str) -> NewCheckpoint:
    """A checkpoint reference as a store would return it (no bytes needed for storage tests)."""
    return NewCheckpoint(f"ckpt/{tag}.pt", hashlib.sha256(tag.encode()).hexdigest(), len(tag) + 100)


def _score(slot: int, step: int, value: float, generation_id: int) -> ScoreRecord:
    return ScoreRecord(slot, step, value, generation_id, {"acc": value, "loss": 1.0 - value}, 1000.0 + step)


def _exploit(slot: int, step: int, donor: int, hparams: dict[str, Any]) -> Decision:
    return Decision(slot, step, "exploit", hparams, donor, {"lr": "* 1.2"})


def _explore(slot: int, step: int, hparams: dict[str, Any]) -> Decision:
    return Decision(slot, step, "explore", hparams, None, {"lr": "* 0.8"})


class StorageContract:
    """The rules of ``poptrain.storage.Storage`` as tests. Override ``make_storage``."""

    def make_storage(self, tmp_path: Path) -> Storage:
        raise NotImplementedError("override make_storage(tmp_path) to return a fresh, empty storage")

    @pytest.fixture
    def storage(self, tmp_path: Path) -> Any:
        store = self.make_storage(tmp_path)
        yield store
        store.close()

    # --- helpers ------------------------------------------------------------------
    @staticmethod
    def new_run(storage: Storage, name: str = "run", n: int = 2) -> tuple[RunRecord, list[MemberRecord]]:
        run = storage.create_run(name, spec=SPEC, seed=3)
        members = storage.add_members(run.id, [_hparams(slot) for slot in range(n)])
        return run, members

    @staticmethod
    def member(storage: Storage, run_id: int, slot: int) -> MemberRecord:
        return {m.slot: m for m in storage.get_members(run_id)}[slot]

    @staticmethod
    def generation(storage: Storage, run_id: int, generation_id: int) -> GenerationRecord:
        return {g.id: g for g in storage.get_generations(run_id)}[generation_id]

    @staticmethod
    def checkpoint(storage: Storage, checkpoint_id: int | None) -> CheckpointRecord:
        """The checkpoint of an id a record holds (failing the test if it holds none)."""
        if checkpoint_id is None:
            pytest.fail("expected a checkpoint id, got None")
        return storage.get_checkpoint(checkpoint_id)

    @staticmethod
    def everything(storage: Storage, run_id: int) -> tuple[Any, ...]:
        """All that is stored for a run: what a refused write must leave as it was."""
        return (
            storage.get_members(run_id),
            storage.get_generations(run_id),
            storage.get_scores(run_id),
            storage.get_checkpoints(run_id),
        )

    # --- rewinding a member to its newest ready point ----------------------------------
    def test_rewind_member_drops_what_came_after_the_ready_point(self, storage: Storage) -> None:
        run, (m0, m1) = self.new_run(storage)
        storage.record_scores(run.id, [_score(0, s, 0.1 * s, m0.generation_id) for s in (1, 2)])
        storage.record_ready(run.id, [ReadyPoint(0, 2, _ckpt("r"), 0.2)])
        storage.record_scores(run.id, [_score(0, 3, 0.3, m0.generation_id), _score(1, 1, 0.5, m1.generation_id)])
        member = storage.rewind_member(run.id, 0)
        assert (member.step, member.score, member.last_ready_step) == (2, 0.2, 2)
        assert [(s.slot, s.step) for s in storage.get_scores(run.id)] == [(0, 1), (0, 2), (1, 1)]
        fresh = storage.rewind_member(run.id, 1)  # never ready: back to the start
        assert (fresh.step, fresh.score) == (0, None)
        assert [(s.slot, s.step) for s in storage.get_scores(run.id)] == [(0, 1), (0, 2)]
        with pytest.raises(KeyError):
            storage.rewind_member(run.id, 9)

    # --- checkpoints collected ----------------------------------------------------------
    def test_mark_checkpoints_deleted_keeps_the_rows(self, storage: Storage) -> None:
        run, _ = self.new_run(storage)
        [member] = storage.record_ready(run.id, [ReadyPoint(0, 2, _ckpt("old"), 0.1)])
        old = self.checkpoint(storage, member.checkpoint_id).id
        [member] = storage.record_ready(run.id, [ReadyPoint(0, 4, _ckpt("new"), 0.2)])
        storage.mark_checkpoints_deleted(run.id, [old])
        assert storage.get_checkpoint(old).deleted and not self.checkpoint(storage, member.checkpoint_id).deleted
        assert [c.deleted for c in storage.get_checkpoints(run.id)] == [True, False]
        with pytest.raises(KeyError):
            storage.mark_checkpoints_deleted(run.id, [old, 99999])

    # --- leases ----------------------------------------------------------------------
    def test_leases_hand_out_least_trained_members_once(self, storage: Storage) -> None:
        run, _ = self.new_run(storage, n=3)
        storage.record_ready(run.id, [ReadyPoint(0, 4, _ckpt("a"), 0.1)])
        got = [storage.acquire_member(run.id, f"w{i}", total_steps=8, lease_seconds=60) for i in range(4)]
        assert [m.slot if m else None for m in got] == [1, 2, 0, None]  # least trained first, each once
        assert storage.renew_lease(run.id, 1, "w0", 60) and not storage.renew_lease(run.id, 1, "w1", 60)
        storage.release_member(run.id, 1, "w1")  # not w1's: nothing happens
        assert storage.acquire_member(run.id, "w9", total_steps=8, lease_seconds=60) is None
        storage.release_member(run.id, 1, "w0")
        again = storage.acquire_member(run.id, "w9", total_steps=8, lease_seconds=60)
        assert again is not None and again.slot == 1

    def test_a_retired_member_is_never_leased(self, storage: Storage) -> None:
        run, _ = self.new_run(storage, n=2)
        storage.set_member_state(run.id, 0, "retired", "scored nan")
        got = storage.acquire_member(run.id, "w0", total_steps=8, lease_seconds=60)
        assert got is not None and got.slot == 1
        assert storage.acquire_member(run.id, "w1", total_steps=8, lease_seconds=60) is None

    def test_expired_lease_is_taken_over_and_finished_members_are_not_leased(self, storage: Storage) -> None:
        run, _ = self.new_run(storage, n=2)
        first = storage.acquire_member(run.id, "dead", total_steps=8, lease_seconds=-1.0)  # expired at once
        assert first is not None and first.slot == 0
        taken = storage.acquire_member(run.id, "alive", total_steps=8, lease_seconds=60)
        assert taken is not None and taken.slot == 0
        assert not storage.renew_lease(run.id, 0, "dead", 60)
        storage.record_scores(run.id, [_score(1, 8, 0.5, self.member(storage, run.id, 1).generation_id)])
        storage.record_ready(run.id, [ReadyPoint(1, 8, _ckpt("f"), 0.5)])
        storage.set_member_state(run.id, 1, "finished")
        assert storage.acquire_member(run.id, "other", total_steps=8, lease_seconds=60) is None
        # asking for more steps makes a finished member trainable again
        more = storage.acquire_member(run.id, "other", total_steps=12, lease_seconds=60)
        assert more is not None and more.slot == 1

    # --- scores written with a ready point ------------------------------------------
    def test_ready_point_with_scores_is_one_transaction(self, storage: Storage) -> None:
        run, (m0, _) = self.new_run(storage)
        scores = [_score(0, step, 0.1 * step, m0.generation_id) for step in (1, 2)]
        [member] = storage.record_ready(run.id, [ReadyPoint(0, 2, _ckpt("a"), 0.2)], scores)
        assert [(s.slot, s.step) for s in storage.get_scores(run.id)] == [(0, 1), (0, 2)]
        assert (member.step, member.score, member.last_ready_step) == (2, 0.2, 2)
        with pytest.raises(KeyError):
            storage.record_ready(run.id, [ReadyPoint(7, 3, _ckpt("b"), 0.3)], [_score(0, 3, 0.3, m0.generation_id)])
        assert len(storage.get_scores(run.id)) == 2 and self.member(storage, run.id, 0).step == 2

    def test_ready_hparams_are_those_that_trained_the_checkpoint(self, storage: Storage) -> None:
        run, _ = self.new_run(storage)
        new = {**_hparams(0), "lr": 0.5}
        [member] = storage.record_ready(run.id, [ReadyPoint(0, 4, _ckpt("x"), 0.4, _explore(0, 4, new))])
        assert member.hparams == new
        assert member.ready_hparams == _hparams(0)

    # --- runs -----------------------------------------------------------------------
    def test_create_run_returns_the_run(self, storage: Storage) -> None:
        run = storage.create_run("alpha", spec=SPEC, seed=7)
        assert (run.name, run.spec, run.seed, run.state) == ("alpha", SPEC, 7, "created")
        assert run.metric == "acc" and run.mode == "max"
        assert run.created_at > 0

    def test_get_run_returns_what_was_created(self, storage: Storage) -> None:
        run = storage.create_run("alpha", spec=SPEC, seed=7)
        storage.create_run("beta", spec={}, seed=1)
        assert storage.get_run("alpha") == run

    def test_list_runs_oldest_first(self, storage: Storage) -> None:
        assert storage.list_runs() == []
        for name in ("b", "a", "c"):
            storage.create_run(name, spec=SPEC, seed=0)
        assert [r.name for r in storage.list_runs()] == ["b", "a", "c"]

    def test_set_run_state(self, storage: Storage) -> None:
        run = storage.create_run("alpha", spec=SPEC, seed=0)
        storage.create_run("beta", spec=SPEC, seed=0)
        storage.set_run_state(run.id, "running")
        assert storage.get_run("alpha").state == "running"
        assert storage.get_run("beta").state == "created"
        storage.set_run_state(run.id, "stopped", reason="the time budget of 2h is spent")
        assert (storage.get_run("alpha").state, storage.get_run("alpha").reason) == (
            "stopped",
            "the time budget of 2h is spent",
        )
        storage.set_run_state(run.id, "running")
        assert storage.get_run("alpha").reason is None  # a new state clears the reason

    def test_set_run_steps_records_the_plan_and_nothing_else(self, storage: Storage) -> None:
        run = storage.create_run("alpha", spec={**SPEC, "meta": {"target": "x"}}, seed=0)
        storage.create_run("beta", spec=SPEC, seed=0)
        storage.set_run_steps(run.id, 40)
        stored = storage.get_run("alpha")
        assert stored.settings.steps == 40 and stored.settings.target == "x"
        assert {k: v for k, v in stored.spec.items() if k != "meta"} == {k: v for k, v in SPEC.items() if k != "meta"}
        assert storage.get_run("beta").settings.steps is None
        with pytest.raises(KeyError):
            storage.set_run_steps(run.id + 1000, 3)

    def test_delete_run_removes_only_that_run(self, storage: Storage) -> None:
        run, (m0, _) = self.new_run(storage, "gone")
        kept, (k0, _) = self.new_run(storage, "kept")
        for r, m in ((run, m0), (kept, k0)):
            storage.record_scores(r.id, [_score(0, 1, 0.1, m.generation_id)])
            storage.record_ready(r.id, [ReadyPoint(0, 2, _ckpt(f"{r.name}"), 0.2, _explore(0, 2, _hparams(5)))])
            assert storage.acquire_member(r.id, "w", total_steps=10, lease_seconds=60) is not None
        before = (
            storage.get_members(kept.id),
            storage.get_generations(kept.id),
            storage.get_scores(kept.id),
            storage.get_checkpoints(kept.id),
        )
        gone_checkpoint = storage.get_checkpoints(run.id)[0].id
        storage.delete_run(run.id)
        assert [r.name for r in storage.list_runs()] == ["kept"]
        with pytest.raises(RunNotFoundError):
            storage.get_run("gone")
        with pytest.raises(KeyError):
            storage.get_members(run.id)
        with pytest.raises(KeyError):
            storage.get_checkpoint(gone_checkpoint)
        assert (
            storage.get_members(kept.id),
            storage.get_generations(kept.id),
            storage.get_scores(kept.id),
            storage.get_checkpoints(kept.id),
        ) == before
        with pytest.raises(KeyError):
            storage.delete_run(run.id)
        again = storage.create_run("gone", spec=SPEC, seed=1)  # the name is free again
        assert storage.get_members(again.id) == []

    def test_duplicate_name_raises_run_exists(self, storage: Storage) -> None:
        storage.create_run("alpha", spec=SPEC, seed=0)
        with pytest.raises(RunExistsError, match="alpha") as info:
            storage.create_run("alpha", spec={"other": 1}, seed=5)
        assert isinstance(info.value, StorageError)
        [run] = storage.list_runs()
        assert (run.spec, run.seed) == (SPEC, 0)

    def test_unknown_name_raises_run_not_found(self, storage: Storage) -> None:
        storage.create_run("alpha", spec=SPEC, seed=0)
        with pytest.raises(RunNotFoundError, match="nope") as info:
            storage.get_run("nope")
        assert isinstance(info.value, KeyError)

    def test_unknown_ids_raise_key_error(self, storage: Storage) -> None:
        run, members = self.new_run(storage)
        missing = run.id + 10_000
        with pytest.raises(KeyError):
            storage.get_members(missing)
        with pytest.raises(KeyError):
            storage.add_members(missing, [_hparams(0)])
        with pytest.raises(KeyError):
            storage.set_run_state(missing, "running")
        with pytest.raises(KeyError):
            storage.get_checkpoint(10_000)
        with pytest.raises(KeyError):
            storage.set_member_state(run.id, 99, "running")
        with pytest.raises(KeyError):
            storage.record_scores(run.id, [_score(99, 1, 0.5, members[0].generation_id)])
        with pytest.raises(KeyError):
            storage.record_ready(run.id, [ReadyPoint(99, 1, _ckpt("x"), 0.5)])

    # --- members ----------------------------------------------------------------------
    def test_add_members_creates_generation_zero(self, storage: Storage) -> None:
        run, members = self.new_run(storage, n=3)
        assert members == storage.get_members(run.id)
        generations = {g.id: g for g in storage.get_generations(run.id)}
        assert len(generations) == 3
        for slot, member in enumerate(members):
            assert (member.slot, member.state, member.step, member.generation) == (slot, "pending", 0, 0)
            assert member.hparams == _hparams(slot)
            assert (member.score, member.ready_score, member.last_ready_step) == (None, None, 0)
            assert (member.checkpoint_id, member.resume_checkpoint_id, member.error) == (None, None, None)
            gen = generations[member.generation_id]
            assert (gen.slot, gen.number, gen.start_step, gen.kind) == (slot, 0, 0, "init")
            assert (gen.parent_id, gen.donor, gen.loaded_checkpoint_id, gen.operations) == (None, None, None, {})
            assert gen.hparams == _hparams(slot)

    def test_add_members_again_appends_slots(self, storage: Storage) -> None:
        run, _ = self.new_run(storage, n=2)
        members = storage.add_members(run.id, [_hparams(5)])
        assert [m.slot for m in members] == [0, 1, 2]
        assert members[2].hparams == _hparams(5)

    def test_members_belong_to_their_run(self, storage: Storage) -> None:
        run_a, _ = self.new_run(storage, "a", n=2)
        run_b, _ = self.new_run(storage, "b", n=3)
        assert len(storage.get_members(run_a.id)) == 2
        assert len(storage.get_members(run_b.id)) == 3
        assert len(storage.get_generations(run_a.id)) == 2

    def test_set_member_state(self, storage: Storage) -> None:
        run, _ = self.new_run(storage)
        storage.set_member_state(run.id, 1, "failed", "Traceback: boom")
        assert (self.member(storage, run.id, 1).state, self.member(storage, run.id, 1).error) == (
            "failed",
            "Traceback: boom",
        )
        assert self.member(storage, run.id, 0).state == "pending"
        storage.set_member_state(run.id, 1, "running")  # the last error stays, for `poptrain status`
        assert (self.member(storage, run.id, 1).state, self.member(storage, run.id, 1).error) == (
            "running",
            "Traceback: boom",
        )

    def test_set_members_state_is_all_or_nothing(self, storage: Storage) -> None:
        run, _ = self.new_run(storage, n=3)
        storage.set_members_state(run.id, [2, 0], "finished")
        assert [m.state for m in storage.get_members(run.id)] == ["finished", "pending", "finished"]
        with pytest.raises(KeyError, match="slot 7"):
            storage.set_members_state(run.id, [1, 7], "retired", "gone")
        assert [(m.state, m.error) for m in storage.get_members(run.id)] == [
            ("finished", None),
            ("pending", None),
            ("finished", None),
        ]
        storage.set_members_state(run.id, [], "running")  # nothing to change
        assert [m.state for m in storage.get_members(run.id)] == ["finished", "pending", "finished"]

    # --- scores -------------------------------------------------------------------------
    def test_record_scores_appends_and_updates_members(self, storage: Storage) -> None:
        run, (m0, m1) = self.new_run(storage)
        first = [
            _score(0, 1, 0.5, m0.generation_id),
            _score(0, 2, 0.7, m0.generation_id),
            _score(1, 1, 0.1, m1.generation_id),
        ]
        storage.record_scores(run.id, first)
        assert storage.get_scores(run.id) == first
        assert (self.member(storage, run.id, 0).step, self.member(storage, run.id, 0).score) == (2, 0.7)
        assert (self.member(storage, run.id, 1).step, self.member(storage, run.id, 1).score) == (1, 0.1)
        second = [_score(1, 2, 0.3, m1.generation_id)]
        storage.record_scores(run.id, second)
        assert storage.get_scores(run.id) == first + second
        assert (self.member(storage, run.id, 1).step, self.member(storage, run.id, 1).score) == (2, 0.3)

    def test_get_scores_at_a_step_or_since_one(self, storage: Storage) -> None:
        # a ready point reads the scores it compares (at its step, or its recent window), not the whole run
        run, (m0, m1) = self.new_run(storage)
        other, (o0, _) = self.new_run(storage, name="other")
        gens = {0: m0.generation_id, 1: m1.generation_id}
        scores = [_score(slot, step, 0.1 * step + slot, gens[slot]) for step in (1, 2, 3) for slot in (0, 1)]
        storage.record_scores(run.id, scores[:4])
        storage.record_scores(other.id, [_score(0, 2, 9.0, o0.generation_id)])
        storage.record_scores(run.id, scores[4:])
        assert storage.get_scores(run.id, step=2) == [s for s in scores if s.step == 2]
        assert storage.get_scores(run.id, since=2) == [s for s in scores if s.step >= 2]
        assert storage.get_scores(run.id, since=0) == storage.get_scores(run.id) == scores
        assert storage.get_scores(run.id, step=3, since=2) == scores[4:]
        assert storage.get_scores(run.id, step=2, since=3) == []
        assert storage.get_scores(run.id, step=4) == []
        assert storage.get_scores(other.id, step=2) == [_score(0, 2, 9.0, o0.generation_id)]
        storage.rewind_member(run.id, 1)  # deleted scores are not read back
        assert [(s.slot, s.step) for s in storage.get_scores(run.id, since=2)] == [(0, 2), (0, 3)]

    def test_record_scores_is_all_or_nothing(self, storage: Storage) -> None:
        run, (m0, _) = self.new_run(storage)
        with pytest.raises(KeyError):
            storage.record_scores(run.id, [_score(0, 1, 0.5, m0.generation_id), _score(42, 1, 0.5, m0.generation_id)])
        assert storage.get_scores(run.id) == []
        assert self.member(storage, run.id, 0).step == 0

    def test_nan_and_infinite_scores(self, storage: Storage) -> None:
        run, (m0, m1) = self.new_run(storage)
        nan = float("nan")
        storage.record_scores(
            run.id,
            [
                ScoreRecord(0, 1, nan, m0.generation_id, {"acc": nan}),
                ScoreRecord(1, 1, float("-inf"), m1.generation_id, {"acc": float("-inf")}),
            ],
        )
        s0, s1 = storage.get_scores(run.id)
        assert math.isnan(s0.value) and math.isnan(s0.metrics["acc"])
        # a metric that is not finite may come back as NaN (JSON has no infinities)
        assert s1.value == float("-inf") and (s1.metrics["acc"] == float("-inf") or math.isnan(s1.metrics["acc"]))
        member = self.member(storage, run.id, 0)
        assert member.step == 1 and member.score is None  # non-finite scores are None on members
        [member] = storage.record_ready(run.id, [ReadyPoint(0, 1, _ckpt("nan"), nan)])
        assert member.last_ready_step == 1 and member.ready_score is None
        assert self.checkpoint(storage, member.checkpoint_id).score is None

    # --- ready points -----------------------------------------------------------------
    def test_record_ready_without_decision(self, storage: Storage) -> None:
        run, (m0, _) = self.new_run(storage)
        storage.record_scores(run.id, [_score(0, 4, 0.9, m0.generation_id)])
        [member] = storage.record_ready(run.id, [ReadyPoint(0, 4, _ckpt("0-4"), 0.9)])
        assert member == self.member(storage, run.id, 0)
        assert (member.step, member.last_ready_step, member.ready_score, member.score) == (4, 4, 0.9, 0.9)
        assert member.checkpoint_id is not None and member.resume_checkpoint_id == member.checkpoint_id
        assert (member.generation_id, member.generation, member.hparams) == (m0.generation_id, 0, m0.hparams)
        ckpt = self.checkpoint(storage, member.checkpoint_id)
        new = _ckpt("0-4")
        assert ckpt == CheckpointRecord(
            member.checkpoint_id, 0, 4, new.uri, new.sha256, new.size_bytes, 0.9, generation_id=m0.generation_id
        )
        assert storage.get_checkpoints(run.id) == [ckpt]
        assert len(storage.get_generations(run.id)) == 2  # no decision, no generation

    def test_record_ready_is_all_or_nothing(self, storage: Storage) -> None:
        run, (m0, _) = self.new_run(storage)
        with pytest.raises(KeyError):
            storage.record_ready(run.id, [ReadyPoint(0, 4, _ckpt("0-4"), 0.9), ReadyPoint(42, 4, _ckpt("42-4"), 0.1)])
        assert storage.get_checkpoints(run.id) == []
        assert self.member(storage, run.id, 0) == m0

    def test_explore_decision_descends_from_own_generation(self, storage: Storage) -> None:
        run, (m0, _) = self.new_run(storage)
        first = {**m0.hparams, "lr": 0.008}
        [member] = storage.record_ready(run.id, [ReadyPoint(0, 4, _ckpt("0-4"), 0.5, _explore(0, 4, first))])
        gen = self.generation(storage, run.id, member.generation_id)
        assert (gen.slot, gen.number, gen.start_step, gen.kind) == (0, 1, 4, "explore")
        assert (gen.parent_id, gen.donor, gen.hparams, gen.operations) == (
            m0.generation_id,
            None,
            first,
            {"lr": "* 0.8"},
        )
        assert gen.loaded_checkpoint_id == member.checkpoint_id == member.resume_checkpoint_id
        assert self.checkpoint(storage, member.checkpoint_id).step == 4
        assert (member.hparams, member.generation) == (first, 1)

        second = {**m0.hparams, "lr": 0.0064}
        [member2] = storage.record_ready(run.id, [ReadyPoint(0, 8, _ckpt("0-8"), 0.6, _explore(0, 8, second))])
        gen2 = self.generation(storage, run.id, member2.generation_id)
        assert (gen2.number, gen2.parent_id, gen2.start_step) == (2, gen.id, 8)
        assert gen2.loaded_checkpoint_id == member2.checkpoint_id != member.checkpoint_id
        assert self.member(storage, run.id, 0) == member2

    def test_exploit_decision_loads_donors_newest_checkpoint(self, storage: Storage) -> None:
        run, (m0, _) = self.new_run(storage)
        # the donor explores at its first ready point, then trains its 2nd generation to step 8
        storage.record_ready(run.id, [ReadyPoint(0, 4, _ckpt("0-4"), 0.8, _explore(0, 4, {**m0.hparams, "lr": 0.008}))])
        [donor] = storage.record_ready(run.id, [ReadyPoint(0, 8, _ckpt("0-8"), 0.9)])
        assert donor.generation == 1
        copied = {**donor.hparams, "lr": 0.0096}
        [member] = storage.record_ready(run.id, [ReadyPoint(1, 4, _ckpt("1-4"), 0.1, _exploit(1, 4, 0, copied))])
        gen = self.generation(storage, run.id, member.generation_id)
        # one clock: the member continues from the copied model's step (8), not its own (4)
        assert (gen.slot, gen.number, gen.start_step, gen.kind, gen.donor) == (1, 1, 8, "exploit", 0)
        assert (member.step, member.last_ready_step, member.score) == (8, 8, 0.9)
        assert gen.parent_id == donor.generation_id
        assert gen.loaded_checkpoint_id == donor.checkpoint_id
        assert self.checkpoint(storage, gen.loaded_checkpoint_id).uri == _ckpt("0-8").uri
        assert (gen.hparams, gen.operations) == (copied, {"lr": "* 1.2"})
        assert (member.hparams, member.generation, member.resume_checkpoint_id) == (copied, 1, donor.checkpoint_id)
        assert (member.ready_score, member.ready_hparams) == (0.9, donor.ready_hparams)  # the copied model's
        own = self.checkpoint(storage, member.checkpoint_id)
        assert (own.slot, own.step, own.uri) == (1, 4, _ckpt("1-4").uri)
        assert self.member(storage, run.id, 1) == member
        assert self.member(storage, run.id, 0) == donor  # the donor is not changed by being copied
        assert [c.uri for c in storage.get_checkpoints(run.id)] == [_ckpt(t).uri for t in ("0-4", "0-8", "1-4")]

    def test_exploit_of_a_donor_that_decided_at_its_newest_checkpoint(self, storage: Storage) -> None:
        # asynchronous PBT: the donor's newest checkpoint was taken just before its own decision,
        # so the weights copied were trained by the donor's previous generation
        run, (m0, _) = self.new_run(storage)
        storage.record_ready(run.id, [ReadyPoint(0, 4, _ckpt("0-4"), 0.8)])
        [donor] = storage.record_ready(
            run.id, [ReadyPoint(0, 8, _ckpt("0-8"), 0.9, _explore(0, 8, {**m0.hparams, "lr": 0.008}))]
        )
        assert donor.generation_id != m0.generation_id
        [member] = storage.record_ready(run.id, [ReadyPoint(1, 8, _ckpt("1-8"), 0.1, _exploit(1, 8, 0, donor.hparams))])
        gen = self.generation(storage, run.id, member.generation_id)
        assert gen.loaded_checkpoint_id == donor.checkpoint_id == member.resume_checkpoint_id
        assert self.checkpoint(storage, gen.loaded_checkpoint_id).uri == _ckpt("0-8").uri
        assert gen.parent_id == m0.generation_id

    def test_copying_an_older_model_keeps_the_steps_another_lineage_holds(self, storage: Storage) -> None:
        # asynchronous PBT, one clock: member 0 is copied at step 8, trains on to 12, then copies
        # member 2's older model (step 4) and trains steps 5..8 again. Member 1's model descends
        # from member 0's first generation: those steps and their scores stay, beside the new ones.
        run, (m0, m1, m2) = self.new_run(storage, n=3)
        storage.record_ready(run.id, [ReadyPoint(2, 4, _ckpt("2-4"), 0.95)], [_score(2, 4, 0.95, m2.generation_id)])
        first = [_score(0, s, 0.1 * s, m0.generation_id) for s in range(1, 13)]
        storage.record_ready(run.id, [ReadyPoint(0, 8, _ckpt("0-8"), 0.8)], first[:8])
        [copier] = storage.record_ready(
            run.id,
            [ReadyPoint(1, 8, _ckpt("1-8"), 0.2, _exploit(1, 8, 0, m0.hparams))],
            [_score(1, 8, 0.2, m1.generation_id)],
        )
        [back] = storage.record_ready(
            run.id, [ReadyPoint(0, 12, _ckpt("0-12"), 1.2, _exploit(0, 12, 2, m2.hparams))], first[8:]
        )
        assert (back.step, back.last_ready_step) == (4, 4)  # one clock: the copied model's step
        again = [_score(0, s, 0.5, back.generation_id) for s in range(5, 9)]
        storage.record_scores(run.id, again)
        with pytest.raises(StaleWriteError):  # a step of one generation is scored once
            storage.record_scores(run.id, again[:1])
        kept = storage.get_scores(run.id)
        assert [(s.step, s.value) for s in kept if s.generation_id == m0.generation_id] == [
            (s.step, s.value) for s in first
        ]
        assert [s.step for s in kept if s.generation_id == back.generation_id] == [5, 6, 7, 8]
        assert storage.get_scores(run.id, step=6) == [first[5], again[1]]
        copied = self.checkpoint(storage, self.generation(storage, run.id, copier.generation_id).loaded_checkpoint_id)
        assert (copied.slot, copied.step, copied.generation_id) == (0, 8, m0.generation_id)
        # a rewind drops only the steps of the member's current generation past its ready point
        storage.rewind_member(run.id, 0)
        kept = storage.get_scores(run.id)
        assert [s.step for s in kept if s.generation_id == m0.generation_id] == list(range(1, 13))
        assert [s for s in kept if s.generation_id == back.generation_id] == []

    def test_synchronous_batch_uses_donor_checkpoint_of_the_same_call(self, storage: Storage) -> None:
        run, (m0, _) = self.new_run(storage)
        storage.record_ready(run.id, [ReadyPoint(0, 4, _ckpt("0-4"), 0.8), ReadyPoint(1, 4, _ckpt("1-4"), 0.1)])
        # the donor's point comes after the member that copies it
        updated = storage.record_ready(
            run.id,
            [
                ReadyPoint(1, 8, _ckpt("1-8"), 0.2, _exploit(1, 8, 0, m0.hparams)),
                ReadyPoint(0, 8, _ckpt("0-8"), 0.9),
            ],
        )
        member, donor = updated
        assert (member.slot, donor.slot) == (1, 0)
        assert self.checkpoint(storage, donor.checkpoint_id).uri == _ckpt("0-8").uri
        assert member.resume_checkpoint_id == donor.checkpoint_id
        gen = self.generation(storage, run.id, member.generation_id)
        assert (gen.loaded_checkpoint_id, gen.parent_id, gen.start_step) == (donor.checkpoint_id, m0.generation_id, 8)
        assert (donor.generation_id, donor.generation) == (m0.generation_id, 0)
        assert storage.get_members(run.id) == [donor, member]

    @pytest.mark.parametrize("order", [(0, 1, 2), (1, 0, 2), (2, 1, 0)])
    def test_synchronous_batch_parent_is_the_generation_the_donor_checkpoint_came_from(
        self, storage: Storage, order: tuple[int, ...]
    ) -> None:
        # slot 2 is best, slot 1 copies it, slot 0 copies slot 1: all decided against one snapshot,
        # so slot 0's weights (and parent) are slot 1's from before this call, whatever the order.
        run, members = self.new_run(storage, n=3)
        points = {
            0: ReadyPoint(0, 4, _ckpt("0-4"), 0.1, _exploit(0, 4, 1, members[1].hparams)),
            1: ReadyPoint(1, 4, _ckpt("1-4"), 0.5, _exploit(1, 4, 2, members[2].hparams)),
            2: ReadyPoint(2, 4, _ckpt("2-4"), 0.9),
        }
        updated = {m.slot: m for m in storage.record_ready(run.id, [points[s] for s in order])}
        gen0 = self.generation(storage, run.id, updated[0].generation_id)
        gen1 = self.generation(storage, run.id, updated[1].generation_id)
        assert gen1.parent_id == members[2].generation_id
        assert gen0.parent_id == members[1].generation_id
        assert gen0.loaded_checkpoint_id == updated[1].checkpoint_id
        assert self.checkpoint(storage, gen0.loaded_checkpoint_id).uri == _ckpt("1-4").uri
        assert gen1.loaded_checkpoint_id == updated[2].checkpoint_id

    def test_in_turn_batch_copies_donor_checkpoints_as_of_each_turn(self, storage: Storage) -> None:
        # asynchronous PBT in one call: slot 0 decides before slot 2 reaches its new point, so it
        # copies slot 2's older checkpoint; slot 1 decides after slot 0's turn and copies the model
        # slot 0 holds then: the one slot 0 copied, not slot 0's own discarded checkpoint
        run, members = self.new_run(storage, n=3)
        first = {
            m.slot: m
            for m in storage.record_ready(run.id, [ReadyPoint(s, 4, _ckpt(f"{s}-4"), 0.1 * s) for s in range(3)])
        }
        updated = {
            m.slot: m
            for m in storage.record_ready(
                run.id,
                [
                    ReadyPoint(0, 8, _ckpt("0-8"), 0.6, _exploit(0, 8, 2, members[2].hparams)),
                    ReadyPoint(1, 8, _ckpt("1-8"), 0.1, _exploit(1, 8, 0, members[0].hparams)),
                    ReadyPoint(2, 8, _ckpt("2-8"), 0.9),
                ],
                in_turn=True,
            )
        }
        gen0 = self.generation(storage, run.id, updated[0].generation_id)
        gen1 = self.generation(storage, run.id, updated[1].generation_id)
        assert gen0.loaded_checkpoint_id == first[2].checkpoint_id == updated[0].resume_checkpoint_id
        assert gen1.loaded_checkpoint_id == first[2].checkpoint_id == updated[1].resume_checkpoint_id
        assert self.checkpoint(storage, gen1.loaded_checkpoint_id).uri == _ckpt("2-4").uri
        assert (gen0.parent_id, gen1.parent_id) == (members[2].generation_id, members[2].generation_id)
        for slot in (0, 1):  # both rank by the model they copied, with the hyperparameters that trained it
            assert (updated[slot].ready_score, updated[slot].ready_hparams) == (0.2, _hparams(2))
        assert self.checkpoint(storage, updated[0].checkpoint_id).uri == _ckpt("0-8").uri  # its own, kept

    def test_in_turn_batch_copies_a_donor_that_explored_in_its_turn(self, storage: Storage) -> None:
        run, members = self.new_run(storage, n=2)
        storage.record_ready(run.id, [ReadyPoint(s, 4, _ckpt(f"{s}-4"), 0.1 * s) for s in range(2)])
        explored = {**members[0].hparams, "lr": 0.5}
        updated = storage.record_ready(
            run.id,
            [
                ReadyPoint(0, 8, _ckpt("0-8"), 0.6, _explore(0, 8, explored)),
                ReadyPoint(1, 8, _ckpt("1-8"), 0.1, _exploit(1, 8, 0, explored)),
            ],
            in_turn=True,
        )
        donor, member = updated
        gen1 = self.generation(storage, run.id, member.generation_id)
        assert gen1.loaded_checkpoint_id == donor.checkpoint_id == donor.resume_checkpoint_id
        assert gen1.parent_id == members[0].generation_id  # 0-8 was trained before slot 0 explored
        assert (member.ready_score, member.ready_hparams) == (0.6, members[0].hparams)

    # --- what an exploiter holds, and ranks by ------------------------------------------------
    def test_exploiter_holds_and_ranks_by_the_copied_model(self, storage: Storage) -> None:
        run, (m0, _) = self.new_run(storage)
        storage.record_ready(run.id, [ReadyPoint(0, 4, _ckpt("0-4"), 0.9)])
        [member] = storage.record_ready(run.id, [ReadyPoint(1, 4, _ckpt("1-4"), 0.1, _exploit(1, 4, 0, {"lr": 0.5}))])
        donor = self.member(storage, run.id, 0)
        assert member.resume_checkpoint_id == donor.checkpoint_id
        assert member.ready_score == 0.9  # the copied model's evaluation, not its own discarded 0.1
        assert member.ready_hparams == m0.hparams  # what trained the copied model
        assert member.hparams == {"lr": 0.5} and member.last_ready_step == 4
        own = self.checkpoint(storage, member.checkpoint_id)
        assert (own.slot, own.step, own.score) == (1, 4, 0.1)  # its own newest checkpoint stays
        assert self.member(storage, run.id, 1) == member

    def test_exploit_of_a_donor_that_exploited_copies_what_it_holds(self, storage: Storage) -> None:
        # slot 1 copied slot 2 and has not reached a ready point since: it holds slot 2's model,
        # so slot 0 copying slot 1 gets slot 2's checkpoint, descends from slot 2's generation
        # and inherits that model's score and the hyperparameters that trained it
        run, members = self.new_run(storage, n=3)
        first = {
            m.slot: m
            for m in storage.record_ready(run.id, [ReadyPoint(s, 4, _ckpt(f"{s}-4"), 0.1 * s) for s in (1, 2)])
        }
        storage.record_ready(run.id, [ReadyPoint(1, 8, _ckpt("1-8"), 0.05, _exploit(1, 8, 2, {"lr": 0.7}))])
        [member] = storage.record_ready(run.id, [ReadyPoint(0, 8, _ckpt("0-8"), 0.0, _exploit(0, 8, 1, {"lr": 0.8}))])
        gen = self.generation(storage, run.id, member.generation_id)
        assert gen.loaded_checkpoint_id == first[2].checkpoint_id == member.resume_checkpoint_id
        assert (gen.donor, gen.parent_id) == (1, members[2].generation_id)
        assert (member.ready_score, member.ready_hparams) == (0.2, _hparams(2))

    def test_copying_a_member_that_holds_no_checkpoint_is_refused(self, storage: Storage) -> None:
        run, _ = self.new_run(storage, n=3)
        storage.record_ready(run.id, [ReadyPoint(2, 4, _ckpt("2-4"), 0.5)])
        before = self.everything(storage, run.id)
        with pytest.raises(ValueError, match=r"member 0 .*member 1") as info:
            storage.record_ready(
                run.id,
                [
                    ReadyPoint(2, 8, _ckpt("2-8"), 0.6),
                    ReadyPoint(0, 4, _ckpt("0-4"), 0.1, _exploit(0, 4, 1, {"lr": 0.5})),
                ],
            )
        assert "checkpoint" in str(info.value)
        with pytest.raises(ValueError, match=r"member 0 .*member 1"):
            storage.record_replacement(run.id, _exploit(0, 0, 1, {"lr": 0.5}))
        assert self.everything(storage, run.id) == before

    def test_replacement_copies_what_the_donor_holds(self, storage: Storage) -> None:
        run, members = self.new_run(storage, n=3)
        storage.record_ready(run.id, [ReadyPoint(s, 4, _ckpt(f"{s}-4"), 0.1 * s) for s in range(3)])
        storage.record_ready(run.id, [ReadyPoint(1, 8, _ckpt("1-8"), 0.05, _exploit(1, 8, 2, {"lr": 0.7}))])
        storage.record_scores(run.id, [_score(0, 5, 0.3, members[0].generation_id)])
        failed = storage.record_failure(run.id, 0, "boom")
        assert (failed.state, failed.failures, failed.step) == ("failed", 1, 4)
        replaced = storage.record_replacement(run.id, _exploit(0, 4, 1, {"lr": 0.9}))
        gen = self.generation(storage, run.id, replaced.generation_id)
        two = self.member(storage, run.id, 2)
        assert (gen.kind, gen.number, gen.start_step, gen.donor) == ("exploit", 1, 4, 1)
        assert gen.loaded_checkpoint_id == two.checkpoint_id == replaced.resume_checkpoint_id
        assert gen.parent_id == members[2].generation_id
        assert (replaced.state, replaced.failures, replaced.hparams) == ("pending", 1, {"lr": 0.9})
        assert (replaced.ready_score, replaced.ready_hparams) == (0.2, _hparams(2))
        assert self.checkpoint(storage, replaced.checkpoint_id).uri == _ckpt("0-4").uri
        assert self.member(storage, run.id, 0) == replaced

    # --- one score per member and step ----------------------------------------------------------
    def test_a_second_score_for_a_step_is_a_stale_write(self, storage: Storage) -> None:
        run, (m0, m1) = self.new_run(storage)
        storage.record_scores(run.id, [_score(0, 1, 0.1, m0.generation_id), _score(0, 2, 0.2, m0.generation_id)])
        before = self.everything(storage, run.id)
        with pytest.raises(StaleWriteError, match=r"member 0 of run 'run' already has a score at step 2") as info:
            storage.record_scores(run.id, [_score(1, 1, 0.5, m1.generation_id), _score(0, 2, 0.3, m0.generation_id)])
        assert isinstance(info.value, StorageError)
        with pytest.raises(StaleWriteError, match="member 1 .* at step 3"):  # twice in one call
            storage.record_scores(run.id, [_score(1, 3, 0.5, m1.generation_id), _score(1, 3, 0.6, m1.generation_id)])
        with pytest.raises(StaleWriteError, match="at step 1"):
            storage.record_ready(
                run.id,
                [ReadyPoint(0, 3, _ckpt("0-3"), 0.3)],
                [
                    _score(0, 3, 0.3, m0.generation_id),
                    _score(0, 1, 0.3, m0.generation_id),
                ],
            )
        assert self.everything(storage, run.id) == before

    def test_steps_after_a_rewind_may_be_scored_again(self, storage: Storage) -> None:
        run, (m0, _) = self.new_run(storage)
        storage.record_ready(
            run.id, [ReadyPoint(0, 2, _ckpt("0-2"), 0.2)], [_score(0, s, 0.1 * s, m0.generation_id) for s in (1, 2)]
        )
        storage.record_scores(run.id, [_score(0, 3, 0.3, m0.generation_id)])
        storage.rewind_member(run.id, 0)
        storage.record_scores(run.id, [_score(0, 3, 0.35, m0.generation_id)])
        storage.record_failure(run.id, 0, "boom")
        storage.record_scores(run.id, [_score(0, 3, 0.4, m0.generation_id)])
        assert [(s.step, s.value) for s in storage.get_scores(run.id)] == [(1, 0.1), (2, 0.2), (3, 0.4)]
        with pytest.raises(StaleWriteError):
            storage.record_scores(run.id, [_score(0, 2, 0.9, m0.generation_id)])  # before the ready point: kept

    # --- fenced leases ------------------------------------------------------------------------
    def test_each_acquisition_gives_a_new_lease_token(self, storage: Storage) -> None:
        run, members = self.new_run(storage, n=2)
        assert [m.lease for m in members] == [None, None]
        first = storage.acquire_member(run.id, "w1", total_steps=8, lease_seconds=60)
        assert first is not None and (first.slot, first.lease) == (0, 1)
        assert self.member(storage, run.id, 0).lease == 1
        storage.release_member(run.id, 0, "w1")
        again = storage.acquire_member(run.id, "w2", total_steps=8, lease_seconds=60)
        assert again is not None and (again.slot, again.lease) == (0, 2)
        other = storage.acquire_member(run.id, "w1", total_steps=8, lease_seconds=60)
        assert other is not None and (other.slot, other.lease) == (1, 1)

    def test_a_worker_whose_lease_was_taken_over_writes_nothing(self, storage: Storage) -> None:
        run, (m0, _) = self.new_run(storage, n=2)
        dead = storage.acquire_member(run.id, "dead", total_steps=8, lease_seconds=-1.0)  # expired at once
        assert dead is not None and dead.slot == 0 and dead.lease is not None
        alive = storage.acquire_member(run.id, "alive", total_steps=8, lease_seconds=60)
        assert alive is not None and alive.slot == 0 and alive.lease == dead.lease + 1
        before = self.everything(storage, run.id)
        score = _score(0, 1, 0.5, m0.generation_id)
        with pytest.raises(
            StaleWriteError, match=rf"member 0 of run 'run' is no longer leased with token {dead.lease}"
        ):
            storage.record_scores(run.id, [score], lease=dead.lease)
        with pytest.raises(StaleWriteError):
            storage.record_ready(run.id, [ReadyPoint(0, 1, _ckpt("0-1"), 0.5)], [score], lease=dead.lease)
        with pytest.raises(StaleWriteError):
            storage.rewind_member(run.id, 0, lease=dead.lease)
        with pytest.raises(StaleWriteError):
            storage.record_failure(run.id, 0, "boom", lease=dead.lease)
        assert not storage.renew_lease(run.id, 0, "dead", 60)
        assert self.everything(storage, run.id)[1:] == before[1:]
        assert self.member(storage, run.id, 0) == before[0][0]
        # the worker holding the lease writes
        storage.record_scores(run.id, [score], lease=alive.lease)
        [member] = storage.record_ready(
            run.id, [ReadyPoint(0, 2, _ckpt("0-2"), 0.6)], [_score(0, 2, 0.6, m0.generation_id)], lease=alive.lease
        )
        assert (member.step, member.last_ready_step) == (2, 2)
        assert storage.rewind_member(run.id, 0, lease=alive.lease).step == 2

    def test_an_expired_or_released_lease_writes_nothing(self, storage: Storage) -> None:
        run, (m0, _) = self.new_run(storage, n=2)
        expired = storage.acquire_member(run.id, "slow", total_steps=8, lease_seconds=-1.0)
        assert expired is not None
        with pytest.raises(StaleWriteError):
            storage.record_scores(run.id, [_score(0, 1, 0.5, m0.generation_id)], lease=expired.lease)
        held = storage.acquire_member(run.id, "slow", total_steps=8, lease_seconds=60)  # its own lease, again
        assert held is not None and held.slot == 0 and held.lease == (expired.lease or 0) + 1
        with pytest.raises(StaleWriteError):  # the older token is stale even for the same worker
            storage.record_scores(run.id, [_score(0, 1, 0.5, m0.generation_id)], lease=expired.lease)
        storage.release_member(run.id, 0, "slow")
        with pytest.raises(StaleWriteError):
            storage.record_scores(run.id, [_score(0, 1, 0.5, m0.generation_id)], lease=held.lease)
        assert storage.get_scores(run.id) == []

    # --- records are values -----------------------------------------------------------------
    def test_records_are_frozen_copies(self, storage: Storage) -> None:
        spec: dict[str, Any] = {"metric": "acc", "nested": {"a": [1, 2]}}
        run = storage.create_run("alpha", spec=spec, seed=0)
        spec["nested"]["a"].append(3)
        hparams = [_hparams(0)]
        [member] = storage.add_members(run.id, hparams)
        hparams[0]["lr"] = 123.0
        storage.record_scores(run.id, [_score(0, 1, 0.5, member.generation_id)])

        run.spec["nested"]["a"].append(4)
        storage.get_run("alpha").spec["metric"] = "changed"
        member.hparams["lr"] = 99.0
        storage.get_members(run.id)[0].hparams["layers"] = 99
        storage.get_generations(run.id)[0].hparams["lr"] = 99.0
        storage.get_scores(run.id)[0].metrics["acc"] = 99.0

        assert storage.get_run("alpha").spec == {"metric": "acc", "nested": {"a": [1, 2]}}
        assert storage.get_members(run.id)[0].hparams == _hparams(0)
        assert storage.get_generations(run.id)[0].hparams == _hparams(0)
        assert storage.get_scores(run.id)[0].metrics == {"acc": 0.5, "loss": 0.5}
        with pytest.raises(dataclasses.FrozenInstanceError):
            member.step = 5  # type: ignore[misc]

    def test_decision_dicts_are_copied(self, storage: Storage) -> None:
        run, (m0, _) = self.new_run(storage)
        new = {**m0.hparams, "lr": 0.008}
        decision = Decision(0, 4, "explore", new, None, {"lr": "* 0.8"})
        storage.record_ready(run.id, [ReadyPoint(0, 4, _ckpt("0-4"), 0.5, decision)])
        new["lr"] = 55.0
        decision.operations["lr"] = "changed"  # type: ignore[index]
        gen = storage.get_generations(run.id)[-1]
        assert (gen.hparams["lr"], gen.operations) == (0.008, {"lr": "* 0.8"})
        assert self.member(storage, run.id, 0).hparams["lr"] == 0.008


class CheckpointStoreContract:
    """The rules of ``poptrain.checkpoints.CheckpointStore`` as tests. Override ``make_store``."""

    def make_store(self, tmp_path: Path) -> CheckpointStore:
        raise NotImplementedError("override make_store(tmp_path) to return a fresh, empty checkpoint store")

    @pytest.fixture
    def store(self, tmp_path: Path) -> CheckpointStore:
        return self.make_store(tmp_path)

    @staticmethod
    def record(new: NewCheckpoint, slot: int = 0, step: int = 1, **changes: Any) -> CheckpointRecord:
        return dataclasses.replace(
            CheckpointRecord(1, slot, step, new.uri, new.sha256, new.size_bytes, None), **changes
        )

    @staticmethod
    def state(seed: float = 0.0) -> dict[str, Any]:
        import torch

        return {
            "model": {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3) + seed, "b": torch.zeros(3)},
            "optimizer": {"lr": 0.01, "betas": [0.9, 0.999]},
            "step": 4,
            "name": "member",
            "history": [0.1, 0.2, float("nan")],
        }

    @staticmethod
    def assert_same_state(loaded: Any, expected: Any) -> None:
        import torch

        assert loaded.keys() == expected.keys()
        for key in ("w", "b"):
            assert torch.equal(loaded["model"][key], expected["model"][key])
        assert loaded["optimizer"] == expected["optimizer"]
        assert (loaded["step"], loaded["name"]) == (expected["step"], expected["name"])
        assert loaded["history"][:2] == expected["history"][:2] and math.isnan(loaded["history"][2])

    def test_save_load_round_trip(self, store: CheckpointStore) -> None:
        new = store.save(3, 8, self.state())
        self.assert_same_state(store.load(self.record(new, 3, 8)), self.state())

    def test_new_checkpoint_describes_the_stored_bytes(self, store: CheckpointStore) -> None:
        new = store.save(0, 1, self.state())
        data = store.read(new.uri)
        assert (sha256(data), len(data)) == (new.sha256, new.size_bytes)

    def test_each_slot_and_step_has_its_own_checkpoint(self, store: CheckpointStore) -> None:
        news = {
            (slot, step): store.save(slot, step, self.state(10 * slot + step)) for slot in (0, 1) for step in (4, 8)
        }
        assert len({n.uri for n in news.values()}) == 4
        for (slot, step), new in news.items():
            self.assert_same_state(store.load(self.record(new, slot, step)), self.state(10 * slot + step))

    def test_population_checkpoint_is_one_file_cut_per_member(self, store: CheckpointStore) -> None:
        import torch

        from poptrain.checkpoints.population import FORMAT

        state = {
            "format": FORMAT,
            "slots": [0, 1],
            "steps": [4, 4],
            "params": {"w": torch.tensor([[1.0, 2.0], [3.0, 4.0]])},
            "buffers": {},
            "optimizer": {
                "slots": {},
                "count": torch.tensor([4.0, 4.0]),
                "count_in_state": False,
                "groups": [[{"lr": 0.1}], [{"lr": 0.2}]],
            },
        }
        new = store.save_population(4, state)
        assert new.uri != store.save_population(4, state).uri  # two rounds at one step never collide
        member = store.load_member(self.record(new, 1, 4))
        assert torch.equal(member["model"]["w"], torch.tensor([3.0, 4.0]))
        assert member["optimizer"]["param_groups"][0]["lr"] == 0.2 and member["step"] == 4
        assert store.load(self.record(new, 1, 4))["slots"] == [0, 1]
        cut, random_state = store.load_member_and_random_state(self.record(new, 1, 4))
        assert random_state is None and torch.equal(cut["model"]["w"], torch.tensor([3.0, 4.0]))  # none is kept

    def test_loads_are_independent_copies(self, store: CheckpointStore) -> None:
        record = self.record(store.save(0, 1, self.state()))
        first = store.load(record)
        first["model"]["w"].add_(100.0)
        first["optimizer"]["lr"] = 5.0
        self.assert_same_state(store.load(record), self.state())

    def test_sha_mismatch_is_corrupt(self, store: CheckpointStore) -> None:
        record = self.record(store.save(0, 1, self.state()), sha256="0" * 64)
        with pytest.raises(CheckpointError, match="corrupt") as info:
            store.load(record)
        assert isinstance(info.value, OSError)

    def test_overwritten_bytes_are_corrupt(self, store: CheckpointStore) -> None:
        new = store.save(0, 1, self.state())
        store.write(new.uri, b"tampered")
        with pytest.raises(CheckpointError, match="corrupt"):
            store.load(self.record(new))

    def test_unreadable_bytes_are_corrupt(self, store: CheckpointStore) -> None:
        garbage = b"this is not a torch checkpoint"
        uri = store.write("member-0000/step-00000001.pt", garbage)
        record = CheckpointRecord(1, 0, 1, uri, sha256(garbage), len(garbage))
        assert store.read(uri) == garbage
        with pytest.raises(CheckpointError, match="corrupt"):
            store.load(record)

    def test_missing_checkpoint(self, store: CheckpointStore) -> None:
        never = NewCheckpoint("member-0009/step-00000001.pt", "0" * 64, 10)
        with pytest.raises(CheckpointError):
            store.load(self.record(never))
        new = store.save(0, 1, self.state())
        store.delete(new.uri)
        with pytest.raises(CheckpointError):
            store.load(self.record(new))
        store.delete(new.uri)  # deleting what is gone is fine

    def test_state_that_cannot_be_saved(self, store: CheckpointStore) -> None:
        with pytest.raises(CheckpointError, match="cannot save"):
            store.save(0, 1, {"fn": lambda: 1})
