"""The frozen inputs and outputs of the PBT decisions, and the strategy signatures."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

from poptrain.records import Decision  # defined next to the records it is stored with
from poptrain.space import HParams, SearchSpace

if TYPE_CHECKING:
    from poptrain.strategy.history import History

__all__ = ["Decision", "ExploitFn", "ExploreFn", "Explored", "HistoryExploreFn", "MemberSnapshot", "ReadyFn"]


@dataclass(frozen=True)
class MemberSnapshot:
    """What the strategies may know of one member at decision time.

    ``fitness`` is the member's score at its latest ready point, oriented so that higher is
    better (a ``mode="min"`` run negates it), ``-inf`` after a NaN or infinite score (such a
    member ranks last), ``None`` before its first ready point.
    """

    slot: int
    step: int
    hparams: HParams
    fitness: float | None = None
    last_ready_step: int = 0
    generation: int = 0

    @property
    def ranked(self) -> bool:
        """Whether this member can take part in a comparison (has a finite fitness)."""
        return self.fitness is not None and not math.isnan(self.fitness)


@dataclass(frozen=True)
class Explored:
    """The outcome of an explore: the new hyperparameters and what was done to each."""

    hparams: HParams
    operations: dict[str, str] = field(default_factory=dict)


class ReadyFn(Protocol):
    """``ready(member) -> bool``: whether a member should compare itself with the population now."""

    def __call__(self, member: MemberSnapshot) -> bool: ...


class ExploitFn(Protocol):
    """``exploit(member, population, rng) -> donor slot | None``."""

    def __call__(
        self, member: MemberSnapshot, population: Sequence[MemberSnapshot], rng: np.random.Generator
    ) -> int | None: ...


class ExploreFn(Protocol):
    """``explore(hparams, space, rng) -> Explored``."""

    def __call__(self, hparams: HParams, space: SearchSpace, rng: np.random.Generator) -> Explored: ...


class HistoryExploreFn(Protocol):
    """``explore(hparams, space, rng, *, history) -> Explored``: an explore that learns from the
    population's past (PB2). It says so with ``uses_history = True``, and is then called with
    ``history=`` (see ``strategy.history.uses_history``)."""

    def __call__(
        self, hparams: HParams, space: SearchSpace, rng: np.random.Generator, *, history: History
    ) -> Explored: ...
