"""Frozen records: what storage returns. A record never changes once returned."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

from poptrain.space import HParams

RUN_STATES = ("created", "running", "finished", "failed", "interrupted", "stopped")
MEMBER_STATES = ("pending", "running", "finished", "failed", "retired")


@dataclass(frozen=True)
class RunSpec:
    """A run's frozen configuration, typed: what ``create_run`` stores (as JSON, in
    ``RunRecord.spec``) and everything reads back through ``RunRecord.settings``.

    ``checkpoints``: a checkpoint URL given at creation (``None``: the run folder's).
    ``meta``: what created the run; ``poptrain run`` records ``target`` (the experiment) and
    ``steps`` (the steps it planned), read back as ``target`` and ``steps``.
    """

    space: Mapping[str, Any]
    population_size: int
    metric: str = "score"
    mode: str = "max"
    strategy: Mapping[str, Any] = field(default_factory=dict)
    checkpoints: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_stored(cls, stored: Mapping[str, Any]) -> RunSpec:
        """The spec of a stored run (keys a run of an older version lacks take their defaults)."""
        return cls(
            space=dict(stored.get("space") or {}),
            population_size=int(stored.get("population_size") or 1),
            metric=str(stored.get("metric") or "score"),
            mode=str(stored.get("mode") or "max"),
            strategy=dict(stored.get("strategy") or {}),
            checkpoints=stored.get("checkpoints") or None,
            meta=dict(stored.get("meta") or {}),
        )

    def to_stored(self) -> dict[str, Any]:
        """The JSON form storage keeps."""
        return {
            "space": dict(self.space),
            "population_size": self.population_size,
            "metric": self.metric,
            "mode": self.mode,
            "strategy": dict(self.strategy),
            "meta": dict(self.meta),
            "checkpoints": self.checkpoints,
        }

    @property
    def target(self) -> str | None:
        """The experiment ``poptrain run`` ran (``None`` for a run made by ``create_run``)."""
        target = self.meta.get("target")
        return str(target) if target is not None else None

    @property
    def steps(self) -> int | None:
        """The steps ``poptrain run`` planned (``None`` for a run made by ``create_run``)."""
        steps = self.meta.get("steps")
        return int(steps) if steps is not None else None


@dataclass(frozen=True)
class RunRecord:
    """A run: its name, its frozen configuration (``spec``) and its state."""

    id: int
    name: str
    spec: dict[str, Any]
    seed: int
    state: str
    created_at: float
    reason: str | None = None  # why the run is in its state: the stop rule that stopped it

    @cached_property
    def settings(self) -> RunSpec:
        """``spec``, typed (read once)."""
        return RunSpec.from_stored(self.spec)

    @property
    def metric(self) -> str:
        return self.settings.metric

    @property
    def mode(self) -> str:
        return self.settings.mode

    def fitness(self, value: float | None) -> float | None:
        """A score oriented so that higher is better."""
        if value is None:
            return None
        return value if self.mode == "max" else -value


@dataclass(frozen=True)
class CheckpointRecord:
    """Where a member's state at a step is stored, with the sha256 checked on load.
    ``generation_id``: the generation that trained it (``None`` in a database from before
    poptrain recorded it; ``lineage.trained`` then finds it by slot and step)."""

    id: int
    slot: int
    step: int
    uri: str
    sha256: str
    size_bytes: int
    score: float | None = None
    deleted: bool = False
    generation_id: int | None = None


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
    that began it: ``kind`` (``"exploit"``, ``"explore"`` or ``"replace"``: a member that failed,
    or scored NaN, replaced by a copy of a healthy one), the ``donor`` whose checkpoint was
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


COPY_KINDS = ("exploit", "replace")  # the decisions that load a donor's model


@dataclass(frozen=True)
class Decision:
    """What a ready member does next, as data.

    ``kind`` is ``"exploit"`` (weights copied from ``donor``, then explored), ``"explore"``
    (own weights kept, hyperparameters explored) or ``"replace"`` (a member that failed, or
    scored NaN, replaced by a copy of ``donor``: loaded like an exploit, told apart in the
    lineage). ``operations`` maps each changed hyperparameter to a readable description such
    as ``"* 0.8"``.
    """

    slot: int
    step: int
    kind: Literal["exploit", "explore", "replace"]
    hparams: HParams
    donor: int | None = None
    operations: Mapping[str, str] = field(default_factory=dict)

    @property
    def copies(self) -> bool:
        """Whether the member loads the donor's model (an exploit or a replacement)."""
        return self.kind in COPY_KINDS


@dataclass(frozen=True)
class ReadyPoint:
    """A member reaching a ready point: its checkpoint, and the decision taken (if any)."""

    slot: int
    step: int
    checkpoint: NewCheckpoint
    score: float | None
    decision: Decision | None = None
