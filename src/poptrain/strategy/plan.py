"""Turn the three strategies into decisions: ``plan_member`` (asynchronous PBT) and
``plan_generation`` (synchronous PBT). Pure: no I/O, randomness only from the given generator."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from poptrain.errors import PoptrainError, StrategyError
from poptrain.space import JsonValue, SearchSpace
from poptrain.strategy._types import (
    Decision,
    Donor,
    ExploitFn,
    Explored,
    ExploreFn,
    HistoryExploreFn,
    MemberSnapshot,
    ReadyFn,
)
from poptrain.strategy.exploit import Population, rank
from poptrain.strategy.explore import perturb
from poptrain.strategy.history import History, uses_history
from poptrain.strategy.mfpbt import mf_exploit, mf_ready
from poptrain.strategy.ready import every
from poptrain.strategy.significance import ttest


@dataclass(frozen=True)
class Strategy:
    """The PBT recipe of a run.

    The defaults are the recommended strategy, chosen by the quality suite (``docs/quality.md``):
    ready every 4 steps; the t-test exploit over the last 8 evaluations (a member copies a
    randomly met other one only when it is better beyond the scores' noise: never worse than
    random search in the paired median on any task of the suite, and it escapes the trap of
    PBT-Zoo's ToyDeceptive, where truncation loses every seed); perturb by x0.8 / x1.2 with a
    25 % chance of a fresh draw.

    ``exploit=None`` never copies weights (explore-only); ``explore=None`` copies without
    changing the hyperparameters (exploit-only). ``inherit_hparams=False`` copies only the
    weights and explores from the member's own hyperparameters. ``synchronous=True`` makes
    all members reach each ready point before any decides (generations).

    ``replace_failed``: whether a member that keeps failing (or scores NaN or inf) is replaced
    by a copy of the best healthy member (a ``"replace"`` in the lineage) or retired (marked
    ``failed``; it trains no more). ``None`` (the default): replaced under PBT, retired when
    the run neither exploits nor explores (random search stays random search).
    """

    ready: ReadyFn = every(4)
    exploit: ExploitFn | None = ttest(window=8)
    explore: ExploreFn | HistoryExploreFn | None = perturb((0.8, 1.2), resample_probability=0.25)
    inherit_hparams: bool = True
    synchronous: bool = False
    replace_failed: bool | None = None

    @property
    def replaces_failed(self) -> bool:
        """Whether failed members are replaced (``replace_failed``, or its default)."""
        if self.replace_failed is not None:
            return self.replace_failed
        return self.exploit is not None or self.explore is not None

    def __post_init__(self) -> None:
        for label, fn in (("ready", self.ready), ("exploit", self.exploit), ("explore", self.explore)):
            if fn is not None and not callable(fn):
                raise StrategyError(
                    f"{label} must be a callable (a poptrain strategy or your own function), got {fn!r}"
                )
        if self.ready is None:
            raise StrategyError("ready must be given, e.g. poptrain.every(steps=4)")
        if isinstance(self.ready, mf_ready) and self.synchronous:
            raise StrategyError(
                "mf_ready makes groups ready at different steps, which synchronous PBT (every member at each "
                "ready point) cannot train; create the run with synchronous=False"
            )
        if (
            isinstance(self.ready, mf_ready)
            and isinstance(self.exploit, mf_exploit)
            and self.ready.factors != self.exploit.factors
        ):
            raise StrategyError(
                f"mf_ready(factors={list(self.ready.factors)}) and mf_exploit(factors={list(self.exploit.factors)}) "
                "must name the same groups; build both with poptrain.mfpbt(base, factors)"
            )

    def check(self, space: SearchSpace) -> None:
        """Let each part that can (``check_space(space)``) refuse the search space before a run is created."""
        for fn in (self.ready, self.exploit, self.explore):
            check_space = getattr(fn, "check_space", None)
            if callable(check_space):
                check_space(space)


DEFAULT_STRATEGY = Strategy()
"""The recommended strategy: every default of ``create_run``, ``experiment()`` and YAML configs."""


def decision_rng(seed: int, slot: int, step: int) -> np.random.Generator:
    """The generator for member ``slot``'s decision at ``step``: independent of execution order."""
    return np.random.default_rng(np.random.SeedSequence([seed, slot, step, 1]))


def explore_hparams(
    strategy: Strategy,
    hparams: Mapping[str, JsonValue],
    space: SearchSpace,
    rng: np.random.Generator,
    history: History | None = None,
) -> Explored:
    """Apply the strategy's explore to ``hparams``, checking what it returns. An explore with
    ``uses_history = True`` also gets ``history=`` (empty when none is given)."""
    if strategy.explore is None:
        return Explored(dict(hparams), {})
    try:
        if uses_history(strategy.explore):
            explored = strategy.explore(
                dict(hparams), space, rng, history=history if history is not None else History()
            )
        else:
            explored = strategy.explore(dict(hparams), space, rng)
    except PoptrainError:
        raise
    except Exception as exc:
        raise StrategyError(f"the explore strategy {strategy.explore!r} raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(explored, Explored):
        raise StrategyError(
            f"the explore strategy {strategy.explore!r} must return poptrain.Explored(hparams, operations), "
            f"got {type(explored).__name__}"
        )
    try:
        space.validate(explored.hparams)
    except PoptrainError as exc:
        raise StrategyError(f"the explore strategy returned invalid hyperparameters: {exc}") from exc
    return explored


def plan_member(
    member: MemberSnapshot,
    population: Sequence[MemberSnapshot],
    space: SearchSpace,
    strategy: Strategy,
    rng: np.random.Generator,
    *,
    history: History | None = None,
) -> Decision | None:
    """Decide what a ready ``member`` does, comparing it with ``population`` (which includes it).

    ``history`` (see ``strategy.history``) is handed to an explore that uses it, with its
    ``step`` set to the member's and the member's own slot left out of ``pending``. Returns
    ``None`` when the member keeps its weights and hyperparameters.
    """
    if history is not None:
        pending = {s: h for s, h in history.pending.items() if s != member.slot}
        history = replace(history, pending=pending, step=member.step)
    if strategy.exploit is None:
        if strategy.explore is None:
            return None
        explored = explore_hparams(strategy, member.hparams, space, rng, history)
        return Decision(member.slot, member.step, "explore", explored.hparams, None, explored.operations)
    try:
        answer = strategy.exploit(member, population, rng)
    except PoptrainError:
        raise
    except Exception as exc:
        raise StrategyError(f"the exploit strategy {strategy.exploit!r} raised {type(exc).__name__}: {exc}") from exc
    if answer is None:
        return None
    copy = answer if isinstance(answer, Donor) else Donor(answer)
    by_slot = {m.slot: m for m in population}
    checked = [("donor", copy.slot)] + (
        [("hyperparameters from", copy.hparams_from)] if copy.hparams_from is not None else []
    )
    for label, slot in checked:
        if isinstance(slot, bool) or slot not in by_slot or (label == "donor" and slot == member.slot):
            raise StrategyError(
                f"the exploit strategy returned {label} {slot!r} for member {member.slot}; "
                "it must return another member's slot, a poptrain.Donor or None"
            )
    donor = by_slot[copy.slot]
    if copy.hparams_from is not None:
        base = by_slot[copy.hparams_from].hparams
    else:
        base = donor.hparams if strategy.inherit_hparams else member.hparams
    explored = explore_hparams(strategy, base, space, rng, history) if copy.explore else Explored(dict(base))
    return Decision(
        member.slot, member.step, "exploit", explored.hparams, copy.slot, {**copy.operations, **explored.operations}
    )


def plan_generation(
    population: Sequence[MemberSnapshot],
    space: SearchSpace,
    strategy: Strategy,
    rng_for: Callable[[MemberSnapshot], np.random.Generator],
    members: Sequence[MemberSnapshot] | None = None,
    *,
    history: History | None = None,
) -> list[Decision]:
    """Synchronous PBT: every member (or each of ``members``) decides against the same frozen
    ``population``; donors' hyperparameters are read from the snapshot, not from earlier
    decisions of the same generation. With a ``history``, the hyperparameters chosen by the
    earlier decisions of the generation are added to its ``pending`` for the later ones."""
    decisions = []
    pending = dict(history.pending) if history is not None else {}
    for member in sorted(population if members is None else members, key=lambda m: m.slot):
        seen = replace(history, pending=dict(pending)) if history is not None else None
        decision = plan_member(member, population, space, strategy, rng_for(member), history=seen)
        if decision is not None:
            decisions.append(decision)
            pending[decision.slot] = dict(decision.hparams)
    return decisions


def replacement(
    slot: int,
    step: int,
    donor: MemberSnapshot,
    reason: str,
    space: SearchSpace,
    strategy: Strategy,
    rng: np.random.Generator,
    history: History | None = None,
) -> Decision:
    """A decision copying ``donor`` into member ``slot`` (its hyperparameters explored): what
    replaces a member that scored NaN/inf or failed too often."""
    if history is not None:
        history = replace(history, pending={s: h for s, h in history.pending.items() if s != slot}, step=step)
    explored = explore_hparams(strategy, dict(donor.hparams), space, rng, history) if strategy.explore else None
    hparams = explored.hparams if explored else dict(donor.hparams)
    operations = {"replaced": reason, **(explored.operations if explored else {})}
    return Decision(slot, step, "replace", hparams, donor.slot, operations)


def plan_round(
    population: Sequence[MemberSnapshot],
    deciding: Sequence[MemberSnapshot],
    space: SearchSpace,
    strategy: Strategy,
    rng_for: Callable[[MemberSnapshot], np.random.Generator],
    *,
    history: History | None = None,
) -> list[Decision]:
    """The decisions of the members ``deciding`` at one ready step, all against the same frozen
    ``population`` (which holds them): the one planning function every executor, both modes and
    ask/tell commit through. On top of ``plan_generation``:

    - a donor must be at least as good as the member (a worse one is never copied);
    - a donor must hold a checkpoint (``last_ready_step > 0``), and must not be the member's
      twin (the same score and hyperparameters: a copy would change nothing); otherwise the
      exploit is skipped, and the member explores its own hyperparameters with the reason
      recorded in the decision's operations (``{"exploit skipped": "member 3 has no
      checkpoint yet"}``);
    - a member whose score is not finite and that would not copy anyone is replaced by a copy
      of the best member with a finite score and a checkpoint.
    """
    population = Population(population)  # ranked once for the whole round
    by_slot = {m.slot: m for m in population}
    decisions: list[Decision] = []
    pending = dict(history.pending) if history is not None else {}
    for me in sorted(deciding, key=lambda m: m.slot):
        seen = replace(history, pending=dict(pending)) if history is not None else None
        rng = rng_for(me)
        decision = plan_member(me, population, space, strategy, rng, history=seen)
        if decision is not None and decision.kind == "exploit" and decision.donor is not None:
            donor = by_slot[decision.donor]
            skipped = None
            if donor.last_ready_step <= 0:
                skipped = f"member {donor.slot} has no checkpoint yet"
            elif me.ranked and _twins(donor, me):
                skipped = f"member {donor.slot} has the same score and hyperparameters"
            elif me.ranked and not (donor.fitness is not None and donor.fitness >= (me.fitness or 0.0)):
                decision = None
            if skipped is not None:  # the member keeps its weights and explores its own hyperparameters
                explored = explore_hparams(strategy, me.hparams, space, rng, seen)
                decision = Decision(
                    me.slot,
                    me.step,
                    "explore",
                    explored.hparams,
                    None,
                    {"exploit skipped": skipped, **explored.operations},
                )
        replace_non_finite = strategy.replaces_failed and (decision is None or not decision.copies)
        if replace_non_finite and me.fitness is not None and not math.isfinite(me.fitness):
            healthy = [
                p
                for p in rank(population)
                if p.slot != me.slot and math.isfinite(p.fitness or 0.0) and p.last_ready_step > 0
            ]
            if healthy:
                decision = replacement(me.slot, me.step, healthy[0], "score not finite", space, strategy, rng, seen)
        if decision is not None:
            decisions.append(decision)
            pending[decision.slot] = dict(decision.hparams)
    return decisions


def _twins(donor: MemberSnapshot, member: MemberSnapshot) -> bool:
    """Whether copying ``donor`` would change nothing: the same score and hyperparameters."""
    return donor.fitness == member.fitness and dict(donor.hparams) == dict(member.hparams)


def at_step(
    population: Sequence[MemberSnapshot],
    scores: Mapping[int, Mapping[int, float | None]],
    step: int,
    fitness: Callable[[float | None], float | None],
) -> list[MemberSnapshot]:
    """The population as of ``step``, for a fair comparison at that step: a member whose newest
    ready point is before ``step`` and that has a score at ``step`` (it trained past it without
    being ready there) is ranked by that score; every other member by its newest ready point's
    (for a member that copied another since, the copied model's). ``scores``: slot -> step -> value."""
    fair = []
    for member in population:
        if ranked_step(member, scores, step) != member.last_ready_step:
            member = replace(member, fitness=oriented(scores[member.slot][step], fitness))
        fair.append(member)
    return fair


def ranked_step(member: MemberSnapshot, scores: Mapping[int, Mapping[int, float | None]], step: int) -> int:
    """The step whose score ranks ``member`` in a fair comparison at ``step`` (see ``at_step``):
    ``step`` when its newest ready point is before it and it has a score there, else its newest
    ready point."""
    if member.last_ready_step < step and step in scores.get(member.slot, {}):
        return step
    return member.last_ready_step


def oriented(value: float | None, fitness: Callable[[float | None], float | None]) -> float:
    """A raw score as a fitness (higher is better), ``-inf`` for a NaN, infinite or missing one."""
    ranked = fitness(value)
    return ranked if ranked is not None and math.isfinite(ranked) else -math.inf
