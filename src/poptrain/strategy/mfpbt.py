"""Multiple-Frequencies PBT (Doulazmi et al., 2025, arXiv 2506.03225): sub-populations that
evolve at different frequencies, with an asymmetric migration between them.

PBT that decides often is greedy: it copies what is best over a short horizon and can lose a
member that would be best later. MF-PBT splits the population into sub-populations (groups),
group ``g`` holding the slots ``s`` with ``s % len(factors) == g``, and makes group ``g`` ready
every ``base * factors[g]`` steps: fast groups optimise the short term, slow ones keep the long
term. When a group is ready, following the paper's rules:

- within the group, truncation: its bottom ``fraction`` copy (and explore) its top ``fraction``;
- migration: its members in the quantile just above the bottom one take, best first, the best
  members of the other groups that beat them (the k-th of them the k-th best such migrant).
  A migrant's weights are copied; the hyperparameters are asymmetric: a member of a faster group
  takes the slower migrant's hyperparameters too, while a member of a slower group keeps those
  of its own group's best member. So long-term models and their hyperparameters flow into the
  fast groups, and the greedy hyperparameters of fast groups never reach the slow ones.
  Migrations are not explored.

A migrant must hold a checkpoint at this very step (its own group is ready now), so a copy never
sends a member back in time: with factors that divide each other, such as (1, 2, 4, 8), every
faster group is ready whenever a slower one is.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from poptrain.errors import StrategyError
from poptrain.strategy._types import Donor, MemberSnapshot
from poptrain.strategy.exploit import quantile_size, rank, truncation


def check_factors(factors: object, name: str) -> tuple[int, ...]:
    """``factors`` as a tuple of strictly increasing whole numbers >= 1, or a ``StrategyError``."""
    values = tuple(factors) if isinstance(factors, (list, tuple)) else ()
    if (
        not values
        or any(isinstance(f, bool) or not isinstance(f, int) or f < 1 for f in values)
        or any(a >= b for a, b in itertools.pairwise(values))
    ):
        raise StrategyError(
            f"{name}(factors=...) needs strictly increasing whole numbers >= 1, one a group, e.g. [1, 2, 4, 8]; "
            f"got {factors!r}"
        )
    return values


def group_of(slot: int, groups: int) -> int:
    """The sub-population of member ``slot``: ``slot % groups``."""
    return slot % groups


@dataclass(frozen=True)
class mf_ready:
    """MF-PBT's ready: member ``s`` is ready every ``base * factors[s % len(factors)]`` steps."""

    base: int = 4
    factors: Sequence[int] = (1, 2, 4, 8)

    def __post_init__(self) -> None:
        if isinstance(self.base, bool) or not isinstance(self.base, int) or self.base < 1:
            raise StrategyError(f"mf_ready(base=...) needs a whole number of steps >= 1, got {self.base!r}")
        object.__setattr__(self, "factors", check_factors(self.factors, "mf_ready"))

    def interval(self, slot: int) -> int:
        """Steps between member ``slot``'s ready points."""
        return self.base * self.factors[group_of(slot, len(self.factors))]

    def __call__(self, member: MemberSnapshot) -> bool:
        return member.step - member.last_ready_step >= self.interval(member.slot)


@dataclass(frozen=True)
class mf_exploit:
    """MF-PBT's exploit: truncation within a member's group, and the asymmetric migration
    between groups (see ``poptrain.strategy.mfpbt``). ``factors`` must be the ready's."""

    factors: Sequence[int] = (1, 2, 4, 8)
    fraction: float = 0.25

    def __post_init__(self) -> None:
        object.__setattr__(self, "factors", check_factors(self.factors, "mf_exploit"))
        if (
            isinstance(self.fraction, bool)
            or not isinstance(self.fraction, (int, float))
            or not 0 < self.fraction <= 0.5
        ):
            raise StrategyError(f"mf_exploit(fraction=...) must be in (0, 0.5], got {self.fraction!r}")

    def __call__(
        self, member: MemberSnapshot, population: Sequence[MemberSnapshot], rng: np.random.Generator
    ) -> int | Donor | None:
        groups = len(self.factors)
        mine = group_of(member.slot, groups)
        ranked = rank(population)
        group = [m for m in ranked if group_of(m.slot, groups) == mine]
        if not member.ranked or len(group) < 2:
            return None
        q = quantile_size(self.fraction, len(group))
        if member.slot in {m.slot for m in group[-q:]}:
            return truncation(self.fraction)(member, group, rng)
        bracket = group[max(q, len(group) - 2 * q) : len(group) - q]  # the quantile above the bottom one
        migrants = [
            m for m in ranked if group_of(m.slot, groups) != mine and m.last_ready_step == member.last_ready_step
        ]
        taken = 0
        for receiver in bracket:
            if taken < len(migrants) and (migrants[taken].fitness or 0.0) > (receiver.fitness or 0.0):
                if receiver.slot == member.slot:
                    return self._migrate(member, migrants[taken], group[0])
                taken += 1
        return None

    def _migrate(self, member: MemberSnapshot, migrant: MemberSnapshot, best: MemberSnapshot) -> Donor:
        """Copy ``migrant``'s weights; take its hyperparameters if it is slower, else the group's best's."""
        groups = len(self.factors)
        source = group_of(migrant.slot, groups)
        if self.factors[source] > self.factors[group_of(member.slot, groups)]:
            return Donor(migrant.slot, migrant.slot, explore=False, operations={"migrated": "from a slower group"})
        return Donor(
            migrant.slot,
            best.slot,
            explore=False,
            operations={"migrated": f"from a faster group, keeping member {best.slot}'s hyperparameters"},
        )


def mfpbt(base: int = 4, factors: Sequence[int] = (1, 2, 4, 8), fraction: float = 0.25) -> dict[str, Any]:
    """MF-PBT's ready and exploit, sharing ``factors``: ``create_run(..., **poptrain.mfpbt(base=4))``
    or ``Strategy(**poptrain.mfpbt(base=4))`` (the explore is yours, e.g. the default perturb).
    Groups of different sizes are fine; give each group at least 3 members (4 in the paper's
    quarters) for both its truncation and its migration to act."""
    return {"ready": mf_ready(base, factors), "exploit": mf_exploit(factors, fraction)}
