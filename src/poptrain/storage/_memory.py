"""An in-memory storage: the contract with dicts, for tests and throwaway runs."""

from __future__ import annotations

import copy
import math
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

from poptrain.errors import RunExistsError, RunNotFoundError, StaleWriteError, StrategyError
from poptrain.lineage import NextGeneration, advance, held_by
from poptrain.records import (
    COPY_KINDS,
    CheckpointRecord,
    Decision,
    GenerationRecord,
    MemberRecord,
    ReadyPoint,
    RunRecord,
    ScoreRecord,
)
from poptrain.space import HParams
from poptrain.storage._base import Storage, lost_lease, stale_score


class InMemoryStorage(Storage):
    """Keeps everything in this process; lost when it ends."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._runs: dict[str, RunRecord] = {}
        self._members: dict[int, dict[int, MemberRecord]] = {}
        self._generations: dict[int, list[GenerationRecord]] = {}
        self._scores: dict[int, list[ScoreRecord]] = {}
        self._score_keys: dict[int, set[tuple[int, int]]] = {}  # (generation id, step) of each score
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
            self._score_keys[run.id] = set()
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

    def set_run_state(self, run_id: int, state: str, reason: str | None = None) -> None:
        with self._lock:
            run = self._run_by_id(run_id)
            self._runs[run.name] = replace(run, state=state, reason=reason)

    def set_run_steps(self, run_id: int, steps: int) -> None:
        with self._lock:
            run = self._run_by_id(run_id)
            spec = copy.deepcopy(run.spec)
            spec["meta"] = {**dict(spec.get("meta") or {}), "steps": int(steps)}
            self._runs[run.name] = replace(run, spec=spec)

    def delete_run(self, run_id: int) -> None:
        with self._lock:
            run = self._run_by_id(run_id)
            del self._runs[run.name]
            for table in (self._members, self._generations, self._scores, self._score_keys):
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

    def _check_lease(self, run_id: int, slots: Iterable[int], lease: int | None) -> None:
        """``StaleWriteError`` unless each member in ``slots`` is leased with token ``lease``."""
        if lease is None:
            return
        now = time.time()
        for slot in sorted(set(slots)):
            member = self._member(run_id, slot)
            holder = self._leases.get((run_id, slot))
            if member.lease != lease or holder is None or holder[1] <= now:
                raise StaleWriteError(lost_lease(self._run_by_id(run_id).name, slot, lease))

    def rewind_member(self, run_id: int, slot: int, *, lease: int | None = None) -> MemberRecord:
        with self._lock:
            self._check_lease(run_id, [slot], lease)
            member = self._member(run_id, slot)
            keep = member.last_ready_step
            self._drop_scores_after(run_id, member.generation_id, keep)
            rewound = replace(member, step=keep, score=member.ready_score if keep > 0 else None)
            self._members[run_id][slot] = rewound
            return copy.deepcopy(rewound)

    def _drop_scores_after(self, run_id: int, generation_id: int, step: int) -> None:
        """Drop generation ``generation_id``'s scores past ``step`` (an earlier generation's steps
        past it are another model's, which a copy may descend from)."""
        self._scores[run_id] = [s for s in self._scores[run_id] if s.generation_id != generation_id or s.step <= step]
        self._score_keys[run_id] = {k for k in self._score_keys[run_id] if k[0] != generation_id or k[1] <= step}

    def record_failure(self, run_id: int, slot: int, error: str, *, lease: int | None = None) -> MemberRecord:
        with self._lock:
            self.rewind_member(run_id, slot, lease=lease)
            member = self._members[run_id][slot]
            failed = replace(member, state="failed", error=error, failures=member.failures + 1)
            self._members[run_id][slot] = failed
            return copy.deepcopy(failed)

    def record_replacement(self, run_id: int, decision: Decision) -> MemberRecord:
        with self._lock:
            member = self._member(run_id, decision.slot)
            if not decision.copies or decision.donor is None:
                raise StrategyError(f"a replacement of member {decision.slot} must copy a donor (an exploit decision)")
            donor = self._member(run_id, decision.donor)
            loaded = self._checkpoints[held_by(donor, decision.donor, decision.slot)]
            new = advance(
                decision, member, member.step, donor=donor, loaded=loaded, generations=self._generations[run_id]
            )
            generation = _generation(self._next_id(), decision.slot, new)
            self._generations[run_id].append(generation)
            replaced = replace(_advanced(member, generation, new), state="pending")
            self._members[run_id][member.slot] = replaced
            return copy.deepcopy(replaced)

    def set_member_state(self, run_id: int, slot: int, state: str, error: str | None = None) -> None:
        self.set_members_state(run_id, [slot], state, error)

    def set_members_state(self, run_id: int, slots: Sequence[int], state: str, error: str | None = None) -> None:
        with self._lock:
            members = {slot: self._member(run_id, slot) for slot in slots}  # every slot checked first
            for slot, member in members.items():
                self._members[run_id][slot] = replace(
                    member, state=state, error=member.error if error is None else error
                )

    def _scored(
        self, run_id: int, members: dict[int, MemberRecord], scores: Sequence[ScoreRecord]
    ) -> tuple[list[ScoreRecord], set[tuple[int, int]]]:
        """Apply ``scores`` to a copy of the members; return the score list and the (generation,
        step) keys of the new scores to commit. ``StaleWriteError`` for a step that has a score."""
        for score in scores:
            self._member(run_id, score.slot)
        keys = self._score_keys[run_id]
        new: set[tuple[int, int]] = set()
        for score in scores:
            key = (score.generation_id, score.step)
            if key in keys or key in new:
                raise StaleWriteError(stale_score(self._run_by_id(run_id).name, score.slot, score.step))
            new.add(key)
        for score in scores:
            members[score.slot] = replace(members[score.slot], step=score.step, score=_finite(score.value))
        return self._scores[run_id] + [copy.deepcopy(s) for s in scores], new

    def record_scores(self, run_id: int, scores: Sequence[ScoreRecord], *, lease: int | None = None) -> None:
        with self._lock:
            self._check_lease(run_id, [s.slot for s in scores], lease)
            members = dict(self._members[run_id])
            self._scores[run_id], new = self._scored(run_id, members, scores)
            self._score_keys[run_id] |= new
            self._members[run_id] = members

    def record_ready(
        self,
        run_id: int,
        points: Sequence[ReadyPoint],
        scores: Sequence[ScoreRecord] = (),
        *,
        in_turn: bool = False,
        lease: int | None = None,
    ) -> list[MemberRecord]:
        with self._lock:
            self._check_lease(run_id, [p.slot for p in points] + [s.slot for s in scores], lease)
            members = dict(self._members[run_id])
            all_scores, new_keys = self._scored(run_id, members, scores)
            generations = list(self._generations[run_id])
            checkpoints: dict[int, CheckpointRecord] = {}

            def checkpoint(point: ReadyPoint) -> None:
                member = members[point.slot] if point.slot in members else self._member(run_id, point.slot)
                ckpt = CheckpointRecord(
                    self._next_id(),
                    point.slot,
                    point.step,
                    point.checkpoint.uri,
                    point.checkpoint.sha256,
                    point.checkpoint.size_bytes,
                    _finite(point.score),
                    generation_id=member.generation_id,
                )
                checkpoints[ckpt.id] = ckpt
                members[point.slot] = replace(
                    member,
                    step=max(member.step, point.step),
                    last_ready_step=point.step,
                    ready_score=_finite(point.score),
                    checkpoint_id=ckpt.id,
                    resume_checkpoint_id=ckpt.id,
                    ready_hparams=dict(member.hparams),
                    failures=0,
                )

            def decide(point: ReadyPoint, donors: dict[int, MemberRecord]) -> None:
                decision = point.decision
                if decision is None:
                    return
                donor = loaded = None
                if decision.copies:
                    slot = decision.donor
                    donor = None if slot is None else donors.get(slot) or self._member(run_id, slot)
                    held = held_by(donor, decision.donor, point.slot)
                    loaded = checkpoints.get(held) or self._checkpoints[held]
                member = members[point.slot]
                new = advance(decision, member, point.step, donor=donor, loaded=loaded, generations=generations)
                generation = _generation(self._next_id(), point.slot, new)
                generations.append(generation)
                members[point.slot] = _advanced(member, generation, new)

            if in_turn:
                for point in points:
                    checkpoint(point)
                    decide(point, members)
            else:
                for point in points:
                    checkpoint(point)
                snapshot = dict(members)  # every decision sees the members after the checkpoints
                for point in points:
                    decide(point, snapshot)
            self._members[run_id] = members
            self._generations[run_id] = generations
            self._scores[run_id] = all_scores
            self._score_keys[run_id] |= new_keys
            for ckpt in checkpoints.values():
                self._checkpoints[ckpt.id] = ckpt
                self._checkpoint_run[ckpt.id] = run_id
            return [copy.deepcopy(members[p.slot]) for p in points]

    def acquire_member(
        self, run_id: int, worker: str, *, total_steps: int, lease_seconds: float
    ) -> MemberRecord | None:
        with self._lock:
            now = time.time()
            for member in sorted(self._members[run_id].values(), key=lambda m: (m.last_ready_step, m.slot)):
                if not _trainable(member, total_steps):
                    continue
                holder = self._leases.get((run_id, member.slot))
                if holder is not None and holder[1] > now and holder[0] != worker:
                    continue
                self._leases[(run_id, member.slot)] = (worker, now + lease_seconds)
                leased = replace(member, lease=(member.lease or 0) + 1)
                self._members[run_id][member.slot] = leased
                return copy.deepcopy(leased)
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

    def get_scores(self, run_id: int, *, step: int | None = None, since: int | None = None) -> list[ScoreRecord]:
        with self._lock:
            scores = self._scores[run_id]
            if step is not None or since is not None:
                scores = [s for s in scores if (step is None or s.step == step) and (since is None or s.step >= since)]
            return copy.deepcopy(scores)

    def get_checkpoint(self, checkpoint_id: int) -> CheckpointRecord:
        with self._lock:
            if checkpoint_id not in self._checkpoints:
                raise KeyError(f"no checkpoint with id {checkpoint_id}")
            return self._checkpoints[checkpoint_id]

    def get_checkpoints(self, run_id: int) -> list[CheckpointRecord]:
        with self._lock:
            return [c for i, c in sorted(self._checkpoints.items()) if self._checkpoint_run[i] == run_id]


def _trainable(member: MemberRecord, total_steps: int) -> bool:
    """Whether a member still has training (or its final bookkeeping) to do: not finished, not retired."""
    return not ((member.state == "finished" and member.step >= total_steps) or member.state == "retired")


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _generation(generation_id: int, slot: int, new: NextGeneration) -> GenerationRecord:
    """The generation record of what ``lineage.advance`` decided."""
    return GenerationRecord(
        generation_id,
        slot,
        new.number,
        new.start_step,
        dict(new.hparams),
        new.kind,
        new.parent_id,
        new.donor,
        new.loaded_checkpoint_id,
        dict(new.operations),
        time.time(),
    )


def _advanced(member: MemberRecord, generation: GenerationRecord, new: NextGeneration) -> MemberRecord:
    """``member`` in its new generation, holding what ``lineage.advance`` decided (after a copy,
    at the copied model's step: one clock)."""
    advanced = replace(
        member,
        hparams=dict(new.hparams),
        generation_id=generation.id,
        generation=new.number,
        resume_checkpoint_id=new.resume_checkpoint_id,
        ready_score=new.ready_score,
        ready_hparams=None if new.ready_hparams is None else dict(new.ready_hparams),
    )
    if new.kind in COPY_KINDS and new.start_step != member.step:
        advanced = replace(advanced, step=new.start_step, last_ready_step=new.start_step, score=new.ready_score)
    return advanced
