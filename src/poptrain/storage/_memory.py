"""An in-memory storage: the contract with dicts, for tests and throwaway runs."""

from __future__ import annotations

import copy
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from poptrain.errors import RunExistsError, RunNotFoundError
from poptrain.records import (
    CheckpointRecord,
    GenerationRecord,
    MemberRecord,
    ReadyPoint,
    RunRecord,
    ScoreRecord,
)
from poptrain.space import HParams
from poptrain.storage._base import Storage


class InMemoryStorage(Storage):
    """Keeps everything in this process; lost when it ends."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._runs: dict[str, RunRecord] = {}
        self._members: dict[int, dict[int, MemberRecord]] = {}
        self._generations: dict[int, list[GenerationRecord]] = {}
        self._scores: dict[int, list[ScoreRecord]] = {}
        self._checkpoints: dict[int, CheckpointRecord] = {}
        self._checkpoint_run: dict[int, int] = {}
        self._leases: dict[tuple[int, int], tuple[str, float]] = {}
        self._ids = 0

    def _next_id(self) -> int:
        self._ids += 1
        return self._ids

    def _run_by_id(self, run_id: int) -> RunRecord:
        for run in self._runs.values():
            if run.id == run_id:
                return run
        raise KeyError(f"no run with id {run_id}")

    def create_run(
        self, name: str, *, spec: dict[str, Any], seed: int, initial_hparams: Sequence[HParams] = ()
    ) -> RunRecord:
        with self._lock:
            if name in self._runs:
                raise RunExistsError(f"a run named {name!r} exists already; pick another name or resume it")
            run = RunRecord(self._next_id(), name, copy.deepcopy(spec), seed, "created", time.time())
            self._runs[name] = run
            self._members[run.id] = {}
            self._generations[run.id] = []
            self._scores[run.id] = []
            self.add_members(run.id, initial_hparams)
            return copy.deepcopy(run)

    def get_run(self, name: str) -> RunRecord:
        with self._lock:
            if name not in self._runs:
                raise RunNotFoundError(f"no run named {name!r} in this storage")
            return copy.deepcopy(self._runs[name])

    def list_runs(self) -> list[RunRecord]:
        with self._lock:
            return [copy.deepcopy(r) for r in sorted(self._runs.values(), key=lambda r: r.id)]

    def set_run_state(self, run_id: int, state: str) -> None:
        with self._lock:
            run = self._run_by_id(run_id)
            self._runs[run.name] = replace(run, state=state)

    def delete_run(self, run_id: int) -> None:
        with self._lock:
            run = self._run_by_id(run_id)
            del self._runs[run.name]
            for table in (self._members, self._generations, self._scores):
                table.pop(run_id, None)
            for checkpoint_id in [i for i, owner in self._checkpoint_run.items() if owner == run_id]:
                del self._checkpoint_run[checkpoint_id]
                self._checkpoints.pop(checkpoint_id, None)
            for key in [k for k in self._leases if k[0] == run_id]:
                del self._leases[key]

    def add_members(self, run_id: int, initial_hparams: Sequence[HParams]) -> list[MemberRecord]:
        with self._lock:
            self._run_by_id(run_id)
            members = self._members[run_id]
            start = len(members)
            for offset, hparams in enumerate(initial_hparams):
                slot = start + offset
                generation = GenerationRecord(self._next_id(), slot, 0, 0, dict(hparams), created_at=time.time())
                self._generations[run_id].append(generation)
                members[slot] = MemberRecord(self._next_id(), slot, "pending", 0, dict(hparams), generation.id, 0)
            return self.get_members(run_id)

    def get_members(self, run_id: int) -> list[MemberRecord]:
        with self._lock:
            if run_id not in self._members:
                raise KeyError(f"no run with id {run_id}")
            return [copy.deepcopy(m) for _, m in sorted(self._members[run_id].items())]

    def _member(self, run_id: int, slot: int) -> MemberRecord:
        try:
            return self._members[run_id][slot]
        except KeyError:
            raise KeyError(f"no member in slot {slot} of run {run_id}") from None

    def rewind_member(self, run_id: int, slot: int) -> MemberRecord:
        with self._lock:
            member = self._member(run_id, slot)
            keep = member.last_ready_step
            self._scores[run_id] = [s for s in self._scores[run_id] if s.slot != slot or s.step <= keep]
            rewound = replace(member, step=keep, score=member.ready_score if keep > 0 else None)
            self._members[run_id][slot] = rewound
            return copy.deepcopy(rewound)

    def record_failure(self, run_id: int, slot: int, error: str) -> MemberRecord:
        with self._lock:
            self.rewind_member(run_id, slot)
            member = self._members[run_id][slot]
            failed = replace(member, state="failed", error=error, failures=member.failures + 1)
            self._members[run_id][slot] = failed
            return copy.deepcopy(failed)

    def record_replacement(self, run_id: int, decision: Any) -> MemberRecord:
        with self._lock:
            member = self._member(run_id, decision.slot)
            donor = self._member(run_id, decision.donor)
            ckpt = self._checkpoints.get(donor.checkpoint_id) if donor.checkpoint_id is not None else None
            parent_id = _trained_by(self._generations[run_id], donor.slot, ckpt.step) if ckpt else donor.generation_id
            generation = GenerationRecord(
                self._next_id(), member.slot, member.generation + 1, member.step, dict(decision.hparams), "exploit",
                parent_id, donor.slot, donor.checkpoint_id, dict(decision.operations), time.time(),
            )
            self._generations[run_id].append(generation)
            replaced = replace(
                member, state="pending", hparams=dict(decision.hparams), generation_id=generation.id,
                generation=generation.number, resume_checkpoint_id=donor.checkpoint_id,
            )
            self._members[run_id][member.slot] = replaced
            return copy.deepcopy(replaced)

    def set_member_state(self, run_id: int, slot: int, state: str, error: str | None = None) -> None:
        with self._lock:
            member = self._member(run_id, slot)
            self._members[run_id][slot] = replace(member, state=state, error=member.error if error is None else error)

    def _scored(self, run_id: int, members: dict[int, MemberRecord], scores: Sequence[ScoreRecord]) -> list[ScoreRecord]:
        """Apply ``scores`` to a copy of the members; return the score list to commit."""
        for score in scores:
            self._member(run_id, score.slot)
        for score in scores:
            members[score.slot] = replace(members[score.slot], step=score.step, score=_finite(score.value))
        return self._scores[run_id] + [copy.deepcopy(s) for s in scores]

    def record_scores(self, run_id: int, scores: Sequence[ScoreRecord]) -> None:
        with self._lock:
            members = dict(self._members[run_id])
            self._scores[run_id] = self._scored(run_id, members, scores)
            self._members[run_id] = members

    def record_ready(
        self, run_id: int, points: Sequence[ReadyPoint], scores: Sequence[ScoreRecord] = (), *, in_turn: bool = False
    ) -> list[MemberRecord]:
        with self._lock:
            members = dict(self._members[run_id])
            all_scores = self._scored(run_id, members, scores)
            generations = list(self._generations[run_id])
            checkpoints: dict[int, CheckpointRecord] = {}

            def checkpoint(point: ReadyPoint) -> None:
                member = members[point.slot] if point.slot in members else self._member(run_id, point.slot)
                ckpt = CheckpointRecord(
                    self._next_id(), point.slot, point.step, point.checkpoint.uri,
                    point.checkpoint.sha256, point.checkpoint.size_bytes, _finite(point.score),
                )
                checkpoints[ckpt.id] = ckpt
                members[point.slot] = replace(
                    member, step=max(member.step, point.step), last_ready_step=point.step,
                    ready_score=_finite(point.score), checkpoint_id=ckpt.id, resume_checkpoint_id=ckpt.id,
                    ready_hparams=dict(member.hparams), failures=0,
                )

            def decide(point: ReadyPoint) -> None:
                decision = point.decision
                if decision is None:
                    return
                member = members[point.slot]
                if decision.kind == "exploit":
                    donor = members.get(decision.donor) or self._member(run_id, decision.donor)
                    loaded = donor.checkpoint_id
                    copied = checkpoints.get(loaded) or self._checkpoints.get(loaded)  # type: ignore[arg-type]
                    parent_id = _trained_by(generations, donor.slot, copied.step) if copied else donor.generation_id
                else:
                    parent_id, loaded = member.generation_id, member.checkpoint_id
                generation = GenerationRecord(
                    self._next_id(), point.slot, member.generation + 1, point.step, dict(decision.hparams),
                    decision.kind, parent_id, decision.donor, loaded, dict(decision.operations), time.time(),
                )
                generations.append(generation)
                members[point.slot] = replace(
                    member, hparams=dict(decision.hparams), generation_id=generation.id,
                    generation=generation.number, resume_checkpoint_id=loaded,
                )

            if in_turn:
                for point in points:
                    checkpoint(point)
                    decide(point)
            else:
                for point in points:
                    checkpoint(point)
                for point in points:
                    decide(point)
            self._members[run_id] = members
            self._generations[run_id] = generations
            self._scores[run_id] = all_scores
            for ckpt in checkpoints.values():
                self._checkpoints[ckpt.id] = ckpt
                self._checkpoint_run[ckpt.id] = run_id
            return [copy.deepcopy(members[p.slot]) for p in points]

    def acquire_member(self, run_id: int, worker: str, *, total_steps: int, lease_seconds: float) -> MemberRecord | None:
        with self._lock:
            now = time.time()
            for member in sorted(self._members[run_id].values(), key=lambda m: (m.last_ready_step, m.slot)):
                if not _trainable(member, total_steps):
                    continue
                holder = self._leases.get((run_id, member.slot))
                if holder is not None and holder[1] > now and holder[0] != worker:
                    continue
                self._leases[(run_id, member.slot)] = (worker, now + lease_seconds)
                return copy.deepcopy(member)
            return None

    def renew_lease(self, run_id: int, slot: int, worker: str, lease_seconds: float) -> bool:
        with self._lock:
            holder = self._leases.get((run_id, slot))
            if holder is None or holder[0] != worker:
                return False
            self._leases[(run_id, slot)] = (worker, time.time() + lease_seconds)
            return True

    def release_member(self, run_id: int, slot: int, worker: str) -> None:
        with self._lock:
            holder = self._leases.get((run_id, slot))
            if holder is not None and holder[0] == worker:
                del self._leases[(run_id, slot)]

    def mark_checkpoints_deleted(self, run_id: int, checkpoint_ids: Sequence[int]) -> None:
        with self._lock:
            for checkpoint_id in checkpoint_ids:
                if self._checkpoint_run.get(checkpoint_id) != run_id:
                    raise KeyError(f"no checkpoint with id {checkpoint_id} in run {run_id}")
            for checkpoint_id in checkpoint_ids:
                self._checkpoints[checkpoint_id] = replace(self._checkpoints[checkpoint_id], deleted=True)

    def get_generations(self, run_id: int) -> list[GenerationRecord]:
        with self._lock:
            return copy.deepcopy(self._generations[run_id])

    def get_scores(self, run_id: int) -> list[ScoreRecord]:
        with self._lock:
            return copy.deepcopy(self._scores[run_id])

    def get_checkpoint(self, checkpoint_id: int) -> CheckpointRecord:
        with self._lock:
            if checkpoint_id not in self._checkpoints:
                raise KeyError(f"no checkpoint with id {checkpoint_id}")
            return self._checkpoints[checkpoint_id]

    def get_checkpoints(self, run_id: int) -> list[CheckpointRecord]:
        with self._lock:
            return [c for i, c in sorted(self._checkpoints.items()) if self._checkpoint_run[i] == run_id]


def _trainable(member: MemberRecord, total_steps: int) -> bool:
    """Whether a member still has training (or its final bookkeeping) to do."""
    return not (member.state == "finished" and member.step >= total_steps)


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _trained_by(generations: Sequence[GenerationRecord], slot: int, step: int) -> int:
    """The generation of ``slot`` whose training produced its checkpoint at ``step``: a generation
    begun by a decision at ``step`` itself started after that checkpoint was taken."""
    active = max(
        (g for g in generations if g.slot == slot and (g.start_step < step or g.number == 0)), key=lambda g: g.number
    )
    return active.id
