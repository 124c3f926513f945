"""The storage contract every backend keeps.

Rules:
- Ids in, frozen records out. A record never changes once returned; ask again for news.
- ``get_run`` of an unknown name raises ``RunNotFoundError``; unknown ids raise ``KeyError``.
- Every ``record_*`` call is one transaction: all of it is written, or none of it. The reads
  that decide a write (the donors of ``record_ready``, the member a rewind or a replacement
  changes, the members ``acquire_member`` chooses from) are made in that same transaction and
  see no other writer's changes until it ends (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: the
  member rows are read ``FOR UPDATE``).
- ``record_ready`` first records every point's checkpoint, then applies the points'
  decisions against the members as they stand after the checkpoints, before any decision
  (synchronous PBT decides a whole generation against one snapshot, so a donor's checkpoint
  may be recorded in the same call). With ``in_turn=True`` it records each point's
  checkpoint and then its decision before the next point (asynchronous PBT: a decision sees
  the members as of its turn, earlier decisions of the call included).
- The lineage follows ``poptrain.lineage``: a decision starts a new generation (``advance``).
  An explore resumes from the member's own newest checkpoint and descends from its current
  generation. An exploit loads the model the donor holds: its ``resume_checkpoint_id`` (its
  newest checkpoint, unless it exploited since: then the checkpoint it copied). The new
  generation descends from the generation that trained that checkpoint (``lineage.trained``);
  the member's ``resume_checkpoint_id`` becomes that checkpoint, its ``ready_score`` that
  checkpoint's score (the copied model is what it is ranked by, never its discarded score)
  and its ``ready_hparams`` the donor's ``ready_hparams``; its ``checkpoint_id`` stays its
  own newest checkpoint. One clock: a member's ``step`` counts the steps its model has
  trained, so after an exploit the member (and its new generation's ``start_step``) is at the
  loaded checkpoint's step, and its scores past that step, if any, are deleted (trained again).
  In both, the member's hyperparameters become the decision's.
  An exploit (or replacement) whose donor holds no checkpoint raises ``StrategyError`` (a
  ``ValueError``) naming the member and the donor, and writes nothing.
- Scores are appended; a member's ``step`` and ``score`` follow its newest score. A member
  has at most one score per step: a score for a step that has one raises ``StaleWriteError``
  (another worker trained that step) and nothing of the call is written. Rewinds delete
  the scores past the ready point, so the steps after it may be trained again.
- Non-finite scores (NaN, inf) are kept as ``None`` on members and checkpoints (a member
  that has been ready with such a score ranks last); score records keep NaN as NaN.
- Fenced leases: ``acquire_member`` returns the member with a new ``lease`` token (one more
  than its previous one). ``record_scores``, ``record_ready``, ``record_failure`` and
  ``rewind_member`` given ``lease=`` write only while the members they write are leased with
  that token (not expired, not taken over); otherwise ``StaleWriteError`` and nothing written.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from poptrain.records import (
    CheckpointRecord,
    Decision,
    GenerationRecord,
    MemberRecord,
    ReadyPoint,
    RunRecord,
    ScoreRecord,
)
from poptrain.space import HParams

SCHEMA_VERSION = 4


class Storage(ABC):
    """Where runs, members, scores, the lineage and checkpoint references live."""

    @abstractmethod
    def create_run(
        self, name: str, *, spec: dict[str, Any], seed: int, initial_hparams: Sequence[HParams] = ()
    ) -> RunRecord:
        """Create a run, and its members from ``initial_hparams`` (as ``add_members``), in one
        transaction; ``RunExistsError`` if the name is taken."""

    @abstractmethod
    def get_run(self, name: str) -> RunRecord:
        """The run of that name; ``RunNotFoundError`` if there is none."""

    @abstractmethod
    def list_runs(self) -> list[RunRecord]:
        """All runs, oldest first."""

    @abstractmethod
    def set_run_state(self, run_id: int, state: str, reason: str | None = None) -> None:
        """Change a run's state (one of ``records.RUN_STATES``), with why (``reason``, e.g. the
        stop rule that stopped it; ``None`` clears it)."""

    @abstractmethod
    def set_run_steps(self, run_id: int, steps: int) -> None:
        """Record the steps each member trains to (the run's plan, ``RunSpec.steps``): what
        progress and ETA are measured against. Nothing else in the spec changes."""

    @abstractmethod
    def delete_run(self, run_id: int) -> None:
        """Delete the run and everything recorded for it (members, lineage, scores, leases,
        checkpoint references) in one transaction; other runs are untouched. Checkpoint files
        are not the storage's: delete them first (``get_checkpoints``)."""

    @abstractmethod
    def add_members(self, run_id: int, initial_hparams: Sequence[HParams]) -> list[MemberRecord]:
        """Create members in slots 0..n-1, each with generation 0 at step 0."""

    @abstractmethod
    def get_members(self, run_id: int) -> list[MemberRecord]:
        """The run's members by slot."""

    @abstractmethod
    def set_member_state(self, run_id: int, slot: int, state: str, error: str | None = None) -> None:
        """Change a member's state (one of ``records.MEMBER_STATES``); ``error`` replaces the stored
        error text, which otherwise stays (the last failure remains visible)."""

    def set_members_state(self, run_id: int, slots: Sequence[int], state: str, error: str | None = None) -> None:
        """``set_member_state`` for each of ``slots``: a slot with no member is a ``KeyError``
        and changes nothing. The bundled storages write them in one transaction; this default
        (for other storages) checks the slots first, then writes them one by one."""
        if len(slots) == 1:
            self.set_member_state(run_id, slots[0], state, error)
            return
        members = {m.slot for m in self.get_members(run_id)}
        missing = sorted(set(slots) - members)
        if missing:
            raise KeyError(f"no member in slot {missing[0]} of run {run_id}")
        for slot in slots:
            self.set_member_state(run_id, slot, state, error)

    @abstractmethod
    def rewind_member(self, run_id: int, slot: int, *, lease: int | None = None) -> MemberRecord:
        """Undo what a member did after its newest ready point (resume after a crash): delete its
        scores past ``last_ready_step`` and set its ``step`` and ``score`` back to that point.
        With ``lease``, only while the member is leased with that token (``StaleWriteError``)."""

    @abstractmethod
    def record_failure(self, run_id: int, slot: int, error: str, *, lease: int | None = None) -> MemberRecord:
        """A failed attempt: mark the member ``failed`` with ``error``, count it in ``failures``
        and rewind it to its newest ready point (as ``rewind_member``), in one transaction.
        A later ready point of the member sets ``failures`` back to 0. ``lease`` as in
        ``rewind_member``."""

    @abstractmethod
    def record_replacement(self, run_id: int, decision: Decision) -> MemberRecord:
        """Replace a member that failed too often: ``decision`` (an exploit) starts a new
        generation at the member's ``step`` from the model the donor holds, as in
        ``record_ready``; the member becomes ``pending`` and keeps its ``failures`` count.
        ``StrategyError`` if the decision is no exploit or its donor holds no checkpoint."""

    @abstractmethod
    def record_scores(self, run_id: int, scores: Sequence[ScoreRecord], *, lease: int | None = None) -> None:
        """Append evaluations; each member's ``step`` and ``score`` follow its newest one.
        ``StaleWriteError`` for a step that has a score already, or, with ``lease``, for a
        member not leased with that token; nothing is written then."""

    @abstractmethod
    def record_ready(
        self,
        run_id: int,
        points: Sequence[ReadyPoint],
        scores: Sequence[ScoreRecord] = (),
        *,
        in_turn: bool = False,
        lease: int | None = None,
    ) -> list[MemberRecord]:
        """Record ``scores`` (as ``record_scores``), then the checkpoints and decisions of members
        at ready points, in one transaction; return the updated members of the points. With
        ``lease``, every member written (points and scores) must be leased with that token."""

    @abstractmethod
    def acquire_member(
        self, run_id: int, worker: str, *, total_steps: int, lease_seconds: float
    ) -> MemberRecord | None:
        """Lease the least-trained member (by ``last_ready_step``, then slot) that is neither
        finished nor retired, is below ``total_steps`` and has no live lease, to ``worker`` for ``lease_seconds``;
        ``None`` if there is none. Two workers never hold the same member: a lease that
        expired (its worker stopped renewing it) may be taken over. The member is returned with
        its new ``lease`` token (one more than the last), for fenced writes."""

    @abstractmethod
    def renew_lease(self, run_id: int, slot: int, worker: str, lease_seconds: float) -> bool:
        """Extend ``worker``'s lease on ``slot``; ``False`` if it no longer holds it (released,
        or taken over by another worker)."""

    @abstractmethod
    def release_member(self, run_id: int, slot: int, worker: str) -> None:
        """Give up ``worker``'s lease on ``slot`` (nothing happens if it holds none)."""

    @abstractmethod
    def mark_checkpoints_deleted(self, run_id: int, checkpoint_ids: Sequence[int]) -> None:
        """Record that these checkpoints' files were removed (their rows stay for the lineage)."""

    @abstractmethod
    def get_generations(self, run_id: int) -> list[GenerationRecord]:
        """The lineage: every generation of every member, in the order they were created."""

    @abstractmethod
    def get_scores(self, run_id: int, *, step: int | None = None, since: int | None = None) -> list[ScoreRecord]:
        """Every score of the run, in the order recorded; only those at ``step`` and only those
        at ``since`` or later when given (a ready point reads what it compares, not the whole run)."""

    @abstractmethod
    def get_checkpoint(self, checkpoint_id: int) -> CheckpointRecord:
        """A checkpoint reference; ``KeyError`` if unknown."""

    @abstractmethod
    def get_checkpoints(self, run_id: int) -> list[CheckpointRecord]:
        """Every checkpoint reference of the run, oldest first."""

    def close(self) -> None:
        """Release connections."""


def stale_score(run: str, slot: int, step: int) -> str:
    """The message of a second score for one step of a member."""
    return (
        f"member {slot} of run {run!r} already has a score at step {step}: another worker trained it "
        "(a stale lease); nothing of this write was recorded"
    )


def lost_lease(run: str, slot: int, lease: int) -> str:
    """The message of a write with a lease token its worker no longer holds."""
    return (
        f"member {slot} of run {run!r} is no longer leased with token {lease} (the lease expired or another "
        "worker took it over); nothing of this write was recorded: stop training this member"
    )
