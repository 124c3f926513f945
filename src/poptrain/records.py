"""Frozen records: what storage returns. A record never changes once returned."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from poptrain.space import HParams

RUN_STATES = ("created", "running", "finished", "failed", "interrupted")
MEMBER_STATES = ("pending", "running", "finished", "failed")


@dataclass(frozen=True)
class RunRecord:
    """A run: its name, its frozen configuration (``spec``) and its state."""

    id: int
    name: str
    spec: dict[str, Any]
    seed: int
    state: str
    created_at: float

    @property
    def metric(self) -> str:
        return str(self.spec.get("metric", "score"))

    @property
    def mode(self) -> str:
        return str(self.spec.get("mode", "max"))

    def fitness(self, value: float | None) -> float | None:
        """A score oriented so that higher is better."""
        if value is None:
            return None
        return value if self.mode == "max" else -value


@dataclass(frozen=True)
class CheckpointRecord:
    """Where a member's state at a step is stored, with the sha256 checked on load."""

    id: int
    slot: int
    step: int
    uri: str
    sha256: str
    size_bytes: int
    score: float | None = None
    deleted: bool = False


@dataclass(frozen=True)
class MemberRecord:
    """A member of the population as it stands now.

    ``ready_score``, ``checkpoint_id`` and ``ready_hparams`` describe its newest ready point:
    the score, the checkpoint and the hyperparameters that trained that checkpoint (what a
    member copying it inherits). ``resume_checkpoint_id`` is what it continues from (a donor's
    checkpoint after an exploit). Non-finite scores are stored as ``None``.
    """

    id: int
    slot: int
    state: str
    step: int
    hparams: HParams
    generation_id: int
    generation: int
    last_ready_step: int = 0
    score: float | None = None
    ready_score: float | None = None
    checkpoint_id: int | None = None
    resume_checkpoint_id: int | None = None
    error: str | None = None
    ready_hparams: HParams | None = None
    failures: int = 0
    lease: int | None = None


@dataclass(frozen=True)
class GenerationRecord:
    """One stretch of a member's life with fixed hyperparameters: the lineage is these rows.

    Generation 0 starts each member from its prior sample. Each later one records the decision
    that began it: ``kind`` (``"exploit"`` or ``"explore"``), the ``donor`` whose checkpoint was
    loaded, the ``parent`` generation it descends from, and the ``operations`` applied.
    """

    id: int
    slot: int
    number: int
    start_step: int
    hparams: HParams
    kind: str = "init"
    parent_id: int | None = None
    donor: int | None = None
    loaded_checkpoint_id: int | None = None
    operations: dict[str, str] = field(default_factory=dict)
    created_at: float = 0.0


@dataclass(frozen=True)
class ScoreRecord:
    """One evaluation of a member after a training step."""

    slot: int
    step: int
    value: float
    generation_id: int
    metrics: dict[str, float] = field(default_factory=dict)
    wall_time: float = 0.0


@dataclass(frozen=True)
class NewCheckpoint:
    """A checkpoint written by a store, not yet recorded in storage."""

    uri: str
    sha256: str
    size_bytes: int


@dataclass(frozen=True)
class Decision:
    """What a ready member does next, as data.

    ``kind`` is ``"exploit"`` (weights copied from ``donor``, then explored) or ``"explore"``
    (own weights kept, hyperparameters explored). ``operations`` maps each changed
    hyperparameter to a readable description such as ``"* 0.8"``.
    """

    slot: int
    step: int
    kind: Literal["exploit", "explore"]
    hparams: HParams
    donor: int | None = None
    operations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ReadyPoint:
    """A member reaching a ready point: its checkpoint, and the decision taken (if any)."""

    slot: int
    step: int
    checkpoint: NewCheckpoint
    score: float | None
    decision: Decision | None = None
