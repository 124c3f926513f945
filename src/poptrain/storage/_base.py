"""The storage contract every backend keeps.

Rules:
- Ids in, frozen records out. A record never changes once returned; ask again for news.
- ``get_run`` of an unknown name raises ``RunNotFoundError``; unknown ids raise ``KeyError``.
- Every ``record_*`` call is one transaction: all of it is written, or none of it.
- ``record_ready`` first records every point's checkpoint, then applies the points'
  decisions, so a decision's donor checkpoint is the donor's newest one, including one
  recorded in the same call (synchronous PBT decides a whole generation at once). With
  ``in_turn=True`` it records each point's checkpoint and then its decision before the next
  point (asynchronous PBT: a decision copies the donor's checkpoint as of its turn).
- A decision starts a new generation whose parent is the donor's generation that trained the
  loaded checkpoint (exploit; the donor's current one unless the donor itself decided at that
  checkpoint) or the member's own (explore); the member's hyperparameters become the
  decision's, and its ``resume_checkpoint_id`` becomes the loaded checkpoint.
- Scores are appended; a member's ``step`` and ``score`` follow its newest score.
- Non-finite scores (NaN, inf) are kept as ``None`` on members and checkpoints (a member
  that has been ready with such a score ranks last); score records keep NaN as NaN.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from poptrain.records import (
    CheckpointRecord,
    GenerationRecord,
    MemberRecord,
    ReadyPoint,
    RunRecord,
    ScoreRecord,
)
from poptrain.space import HParams

SCHEMA_VERSION = 1


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
    def set_run_state(self, run_id: int, state: str) -> None:
        """Change a run's state (one of ``records.RUN_STATES``)."""

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

    @abstractmethod
    def rewind_member(self, run_id: int, slot: int) -> MemberRecord:
        """Undo what a member did after its newest ready point (resume after a crash): delete its
        scores past ``last_ready_step`` and set its ``step`` and ``score`` back to that point."""

    @abstractmethod
    def record_failure(self, run_id: int, slot: int, error: str) -> MemberRecord:
        """A failed attempt: mark the member ``failed`` with ``error``, count it in ``failures``
        and rewind it to its newest ready point (as ``rewind_member``), in one transaction.
        A later ready point of the member sets ``failures`` back to 0."""

    @abstractmethod
    def record_replacement(self, run_id: int, decision: Any) -> MemberRecord:
        """Replace a member that failed too often: ``decision`` (an exploit) starts a new
        generation from the donor's newest checkpoint, as in ``record_ready``; the member
        becomes ``pending`` and keeps its ``failures`` count."""

    @abstractmethod
    def record_scores(self, run_id: int, scores: Sequence[ScoreRecord]) -> None:
        """Append evaluations; each member's ``step`` and ``score`` follow its newest one."""

    @abstractmethod
    def record_ready(
        self, run_id: int, points: Sequence[ReadyPoint], scores: Sequence[ScoreRecord] = (), *, in_turn: bool = False
    ) -> list[MemberRecord]:
        """Record ``scores`` (as ``record_scores``), then the checkpoints and decisions of members
        at ready points, in one transaction; return the updated members of the points."""

    @abstractmethod
    def acquire_member(self, run_id: int, worker: str, *, total_steps: int, lease_seconds: float) -> MemberRecord | None:
        """Lease the least-trained member (by ``last_ready_step``, then slot) that is not finished,
        is below ``total_steps`` and has no live lease, to ``worker`` for ``lease_seconds``;
        ``None`` if there is none. Two workers never hold the same member: a lease that
        expired (its worker stopped renewing it) may be taken over."""

    @abstractmethod
    def renew_lease(self, run_id: int, slot: int, worker: str, lease_seconds: float) -> bool:
        """Extend ``worker``'s lease on ``slot``; ``False`` if it no longer holds it."""

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
    def get_scores(self, run_id: int) -> list[ScoreRecord]:
        """Every score of the run, in the order recorded."""

    @abstractmethod
    def get_checkpoint(self, checkpoint_id: int) -> CheckpointRecord:
        """A checkpoint reference; ``KeyError`` if unknown."""

    @abstractmethod
    def get_checkpoints(self, run_id: int) -> list[CheckpointRecord]:
        """Every checkpoint reference of the run, oldest first."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
