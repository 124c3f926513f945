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

__all__ = [
    "Decision",
    "Donor",
    "ExploitFn",
    "ExploreFn",
    "Explored",
    "HistoryExploreFn",
    "MemberSnapshot",
    "ReadyFn",
]


@dataclass(frozen=True)
class MemberSnapshot:
    """What the strategies may know of one member at decision time.

    ``fitness`` is the member's score at its latest ready point, oriented so that higher is
    better (a ``mode="min"`` run negates it), ``-inf`` after a NaN or infinite score (such a
    member ranks last), ``None`` before its first ready point.

    ``recent`` holds the last evaluations of the model the member holds, oriented like
    ``fitness`` (non-finite ones as ``-inf``), oldest first, ending with the one ``fitness``
    is (so ``recent[-1] == fitness``). They follow the model's lineage, not the slot: for a
    member that copied another at step t, the evaluations up to t are its donor's (the copied
    model's), the ones after t its own; its discarded model's are never in it (as
    ``Run.best(window=k)`` reads a lineage). The scheduler fills it only for an exploit that
    asks for it (``recent_window``, see ``strategy.recent``); it is ``()`` otherwise.
    """

    slot: int
    step: int
    hparams: HParams
    fitness: float | None = None
    last_ready_step: int = 0
    generation: int = 0
    recent: tuple[float, ...] = ()

    @property
    def ranked(self) -> bool:
        """Whether this member can take part in a comparison (has a finite fitness)."""
        return self.fitness is not None and not math.isnan(self.fitness)


@dataclass(frozen=True)
class Explored:
    """The outcome of an explore: the new hyperparameters and what was done to each."""

    hparams: HParams
    operations: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Donor:
    """An exploit's answer when a plain donor slot is not enough: copy ``slot``'s model, take the
    hyperparameters of member ``hparams_from`` (``None``: as a plain donor slot would), and
    explore them or not (``explore``). ``operations`` are recorded in the decision's, e.g.
    ``{"migrated": "hparams of member 5"}``."""

    slot: int
    hparams_from: int | None = None
    explore: bool = True
    operations: dict[str, str] = field(default_factory=dict)


class ReadyFn(Protocol):
    """``ready(member) -> bool``: whether a member should compare itself with the population now."""

    def __call__(self, member: MemberSnapshot) -> bool: ...


class ExploitFn(Protocol):
    """``exploit(member, population, rng) -> donor slot | Donor | None``."""

    def __call__(
        self, member: MemberSnapshot, population: Sequence[MemberSnapshot], rng: np.random.Generator
    ) -> int | Donor | None: ...


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
