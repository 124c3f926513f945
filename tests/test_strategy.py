"""The pure PBT decisions: ready, exploit, explore and the plans that combine them."""

from __future__ import annotations

import math

import numpy as np
import pytest

import poptrain
from poptrain import (
    Choice,
    Decision,
    Explored,
    Float,
    Int,
    MemberSnapshot,
    SearchSpace,
    Strategy,
    StrategyError,
    every,
    perturb,
    plan_generation,
    plan_member,
    resample,
    tournament,
    truncation,
)
from poptrain.strategy import decision_rng, rank

SPACE = SearchSpace({"lr": Float(1e-4, 1e-1, log=True), "layers": Int(1, 8), "act": Choice(["relu", "tanh", "gelu"])})


def hp(slot):
    return {"lr": 1e-3 * (slot + 1), "layers": 1 + slot % 8, "act": ["relu", "tanh", "gelu"][slot % 3]}


def member(slot, fitness, step=4, **kw):
    return MemberSnapshot(slot, step, hp(slot), fitness, last_ready_step=step, **kw)


def population(fitnesses):
    return [member(slot, f) for slot, f in enumerate(fitnesses)]


def rng(seed=0):
    return np.random.default_rng(seed)


# --- ready ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("step", "last_ready", "expected"),
    [(3, 0, False), (4, 0, True), (5, 0, True), (7, 4, False), (8, 4, True), (12, 4, True)],
)
def test_every(step, last_ready, expected):
    assert every(4)(MemberSnapshot(0, step, {}, None, last_ready)) is expected


def test_every_waits_for_burn_in():
    ready = every(2, burn_in=5)
    assert [s for s in range(1, 10) if ready(MemberSnapshot(0, s, {}, None, 0))] == [5, 6, 7, 8, 9]
    assert not ready(MemberSnapshot(0, 7, {}, None, 6))
    assert ready(MemberSnapshot(0, 8, {}, None, 6))


def test_every_due_answers_what_the_snapshot_call_answers():
    # the scheduler asks every(n) with due() (no snapshot): the same rule, burn-in included
    for ready in (every(4), every(3, burn_in=5), every(1)):
        for step in range(12):
            for last in range(step + 1):
                assert ready.due(step, last) is ready(MemberSnapshot(0, step, {}, None, last))


def test_a_subclass_of_every_is_asked_through_its_own_call():
    class never(every):
        def __call__(self, member):
            return False

    run = poptrain.create_run(
        name="never",
        space={"rate": poptrain.Float(0.1, 1.0)},
        population_size=2,
        metric="score",
        ready=never(2),
        seed=0,
        storage="memory",
    )
    # the scheduler asks whether a member is ready (here through report(), the user's own loop):
    # every(2) itself would be ready at step 2 and ask for the member's state
    actions = [run.report(slot, step, float(step)) for step in (1, 2, 3, 4) for slot in (0, 1)]
    assert {a.kind for a in actions} == {"continue"}
    assert [(g.slot, g.number) for g in run.lineage()] == [(0, 0), (1, 0)]
    run.close()


@pytest.mark.parametrize("fraction", [0.1, 0.2, 0.25, 0.5])
def test_truncation_copies_from_the_top_into_the_bottom(fraction):
    exploit = truncation(fraction)
    draws = np.random.default_rng(1234)
    for trial in range(150):
        n = int(draws.integers(2, 20))
        fitness = [float(x) for x in draws.normal(size=n)]
        pop = population(fitness)
        order = sorted(range(n), key=lambda s: (-fitness[s], s))
        q = max(1, min(math.ceil(round(fraction * n, 9)), n // 2))
        top, bottom = set(order[:q]), set(order[-q:])
        for m in pop:
            donor = exploit(m, pop, rng(trial))
            if m.slot in bottom:
                assert donor in top and donor != m.slot and donor not in bottom
            else:
                assert donor is None


def test_truncation_quantile_size():
    # with 10 members and fraction 0.25 the quantile holds ceil(2.5) = 3 members
    pop = population([float(x) for x in range(10)])  # slot 9 best, slot 0 worst
    exploit = truncation(0.25)
    for victim in (0, 1, 2):
        assert {exploit(pop[victim], pop, rng(s)) for s in range(60)} == {7, 8, 9}
    assert exploit(pop[3], pop, rng()) is None
    # 8 members and 0.2: ceil(1.6) = 2 exploit (as Ray Tune's quantile_fraction), 10 and 0.2: exactly 2
    eight = population([float(x) for x in range(8)])
    assert [m.slot for m in eight if truncation(0.2)(m, eight, rng()) is not None] == [0, 1]
    ten = population([float(x) for x in range(10)])
    assert [m.slot for m in ten if truncation(0.2)(m, ten, rng()) is not None] == [0, 1]
    # never more than half: 5 members and 0.5 give 2
    five = population([float(x) for x in range(5)])
    assert [m.slot for m in five if truncation(0.5)(m, five, rng()) is not None] == [0, 1]
    # a tiny population still has a quantile of one
    small = population([0.1, 0.9, 0.5])
    assert exploit(small[0], small, rng()) == 1
    assert exploit(small[2], small, rng()) is None


def test_truncation_min_gap_copies_only_a_donor_better_beyond_the_noise():
    pop = population([0.50, 0.52, 0.90, 0.91])  # slots 0-1 bottom, 2-3 top (quantile 2 of 4)
    noisy = truncation(0.5, min_gap=0.39)
    # member 0 (0.50): both donors are 0.40 or more better; member 1 (0.52): gaps of 0.38 and 0.39, neither above 0.39
    assert {noisy(pop[0], pop, rng(s)) for s in range(40)} == {2, 3}
    assert {noisy(pop[1], pop, rng(s)) for s in range(40)} == {None}
    assert {truncation(0.5, min_gap=0.385)(pop[1], pop, rng(s)) for s in range(40)} == {3}
    # no gap: the same draws as plain truncation
    assert [truncation(0.5, min_gap=0.0)(pop[0], pop, rng(s)) for s in range(20)] == [
        truncation(0.5)(pop[0], pop, rng(s)) for s in range(20)
    ]
    with pytest.raises(poptrain.StrategyError, match="min_gap"):
        truncation(0.2, min_gap=-1.0)
    assert (
        poptrain.strategy.strategy_from_spec(
            poptrain.strategy.strategy_to_spec(poptrain.Strategy(exploit=noisy))
        ).exploit
        == noisy
    )  # stored with the run and read back


def test_truncation_needs_two_ranked_members():
    pop = [member(0, 0.1), member(1, None), member(2, None)]
    assert truncation(0.5)(pop[0], pop, rng()) is None


def test_members_without_fitness_are_ignored():
    pop = [member(0, None), member(1, 0.2), member(2, 0.9), member(3, None), member(4, 0.5)]
    assert [m.slot for m in rank(pop)] == [2, 4, 1]
    assert [m.slot for m in rank([member(0, math.nan), member(1, 0.5), member(2, 0.1)])] == [1, 2]
    assert truncation(0.34)(pop[1], pop, rng()) == 2
    assert truncation(0.34)(pop[0], pop, rng()) is None  # not ranked itself
    assert all(tournament()(pop[1], pop, rng(s)) in (None, 2, 4) for s in range(30))


def test_nan_fitness_ranks_last():
    pop = [member(0, 0.5), member(1, -math.inf), member(2, 0.1), member(3, 0.9)]
    assert [m.slot for m in rank(pop)] == [3, 0, 2, 1]
    assert truncation(0.25)(pop[1], pop, rng()) == 3
    assert truncation(0.25)(pop[2], pop, rng()) is None
    assert not MemberSnapshot(0, 1, {}, math.nan).ranked and MemberSnapshot(0, 1, {}, -math.inf).ranked


def test_ties_go_to_the_lower_slot():
    pop = population([0.5, 0.5, 0.5])
    assert [m.slot for m in rank(pop)] == [0, 1, 2]
    assert truncation(0.34)(pop[2], pop, rng()) == 0


# --- tournament -------------------------------------------------------------------------------
def test_tournament_only_copies_strictly_better():
    fitness = [0.3, 0.7, 0.7, 0.1, 0.5]
    pop = population(fitness)
    for m in pop:
        donors = {tournament()(m, pop, rng(seed)) for seed in range(60)}
        better = {s for s, f in enumerate(fitness) if f > fitness[m.slot]}
        assert donors - {None} == better
        assert (None in donors) == (len(better) < len(fitness) - 1)


# --- explore ------------------------------------------------------------------------------------
def test_perturb_records_what_it_did():
    explore = perturb((0.8, 1.2))
    ops = set()
    for seed in range(30):
        out = explore(hp(3), SPACE, rng(seed))
        assert SPACE.validate(out.hparams) == out.hparams
        assert set(out.operations) == set(SPACE)
        lr_op = out.operations["lr"]
        assert lr_op in ("* 0.8", "* 1.2")
        assert out.hparams["lr"] == pytest.approx(hp(3)["lr"] * float(lr_op[2:]))
        assert out.hparams["act"] != hp(3)["act"]  # unordered choice always changes
        ops.add(lr_op)
    assert ops == {"* 0.8", "* 1.2"}


def test_perturb_does_not_touch_its_input():
    original = hp(2)
    perturb()(original, SPACE, rng())
    assert original == hp(2)


def test_resample_probability_one_resamples_everything():
    out = perturb(resample_probability=1.0)(hp(1), SPACE, rng(5))
    assert out.operations == {"lr": "resample", "layers": "resample", "act": "resample"}
    assert SPACE.validate(out.hparams) == out.hparams


def test_resample_probability_mixes():
    counts = {"resample": 0, "moved": 0}
    for seed in range(200):
        op = perturb(resample_probability=0.25)(hp(1), SPACE, rng(seed)).operations["lr"]
        counts["resample" if op == "resample" else "moved"] += 1
    assert 25 < counts["resample"] < 80


def test_resample_explore():
    out = resample()(hp(0), SPACE, rng(2))
    assert set(out.operations.values()) == {"resample"}
    assert out.hparams == SPACE.sample(rng(2))


# --- plans ----------------------------------------------------------------------------------------
DEFAULT = Strategy()


def test_plan_member_exploit_and_explore():
    pop = population([0.9, 0.5, 0.1])
    decision = plan_member(pop[2], pop, SPACE, Strategy(exploit=truncation(0.34), explore=perturb()), rng())
    assert (decision.slot, decision.step, decision.kind, decision.donor) == (2, 4, "exploit", 0)
    assert set(decision.operations) == set(SPACE)
    assert decision.hparams["lr"] in (pytest.approx(hp(0)["lr"] * 0.8), pytest.approx(hp(0)["lr"] * 1.2))
    assert plan_member(pop[0], pop, SPACE, Strategy(exploit=truncation(0.34)), rng()) is None


def test_plan_member_explore_only():
    pop = population([0.9, 0.5, 0.1])
    strategy = Strategy(exploit=None, explore=perturb())
    for m in pop:  # every ready member explores from its own hyperparameters, even the best
        decision = plan_member(m, pop, SPACE, strategy, rng(m.slot))
        assert (decision.kind, decision.donor) == ("explore", None)
        assert decision.hparams["lr"] == pytest.approx(hp(m.slot)["lr"] * float(decision.operations["lr"][2:]))


def test_plan_member_exploit_only():
    pop = population([0.9, 0.5, 0.1])
    decision = plan_member(pop[2], pop, SPACE, Strategy(exploit=truncation(0.34), explore=None), rng())
    assert (decision.kind, decision.donor, decision.hparams, dict(decision.operations)) == ("exploit", 0, hp(0), {})
    assert plan_member(pop[2], pop, SPACE, Strategy(exploit=None, explore=None), rng()) is None


def test_plan_member_without_inheriting_hparams():
    pop = population([0.9, 0.5, 0.1])
    keep = Strategy(exploit=truncation(0.34), explore=None, inherit_hparams=False)
    decision = plan_member(pop[2], pop, SPACE, keep, rng())
    assert (decision.kind, decision.donor, decision.hparams) == ("exploit", 0, hp(2))
    moved = plan_member(pop[2], pop, SPACE, Strategy(exploit=truncation(0.34), inherit_hparams=False), rng(1))
    assert moved.donor == 0 and moved.hparams["lr"] != hp(0)["lr"]
    for name, op in moved.operations.items():
        if op.startswith("* "):
            assert moved.hparams[name] == pytest.approx(hp(2)[name] * float(op[2:]))


def test_plan_generation_decides_against_one_frozen_snapshot():
    pop = population([0.1, 0.5, 0.9, 0.7])

    def copy_next(m, population, rng):  # every member copies the next slot, if there is one
        return m.slot + 1 if m.slot + 1 < len(population) else None

    strategy = Strategy(exploit=copy_next, explore=None)
    decisions = plan_generation(pop, SPACE, strategy, lambda m: rng(m.slot))
    assert [(d.slot, d.donor) for d in decisions] == [(0, 1), (1, 2), (2, 3)]
    # slot 0 gets slot 1's hyperparameters as they were, not what slot 1 is about to become
    assert [d.hparams for d in decisions] == [hp(1), hp(2), hp(3)]
    assert pop == population([0.1, 0.5, 0.9, 0.7])


def test_plan_generation_for_some_members():
    pop = population([0.1, 0.5, 0.9, 0.7])
    decisions = plan_generation(
        pop, SPACE, Strategy(exploit=truncation(0.25)), lambda m: rng(m.slot), members=[pop[0], pop[2]]
    )
    assert [(d.slot, d.donor) for d in decisions] == [(0, 2)]


def test_user_defined_callables():
    calls = []

    def ready(m):
        return m.step % 3 == 0

    def exploit(m, population, rng):
        calls.append((m.slot, [p.slot for p in population]))
        return max(population, key=lambda p: p.fitness).slot if m.fitness < 0.5 else None

    def explore(hparams, space, rng):
        return Explored({**hparams, "layers": 8}, {"layers": "= 8"})

    strategy = Strategy(ready=ready, exploit=exploit, explore=explore)
    assert strategy.ready(MemberSnapshot(0, 6, {})) and not strategy.ready(MemberSnapshot(0, 7, {}))
    pop = population([0.9, 0.2])
    decision = plan_member(pop[1], pop, SPACE, strategy, rng())
    assert decision == Decision(1, 4, "exploit", {**hp(0), "layers": 8}, 0, {"layers": "= 8"})
    assert plan_member(pop[0], pop, SPACE, strategy, rng()) is None
    assert calls == [(1, [0, 1]), (0, [0, 1])]


@pytest.mark.parametrize("donor", [1, 99, -1, True, "0"])
def test_user_exploit_returning_an_invalid_donor(donor):
    pop = population([0.9, 0.2])
    strategy = Strategy(exploit=lambda m, p, r: donor)
    with pytest.raises(StrategyError, match=r"returned donor .* for member 1"):
        plan_member(pop[1], pop, SPACE, strategy, rng())


def test_user_strategies_that_fail():
    pop = population([0.9, 0.2])

    def broken_exploit(m, p, r):
        raise ZeroDivisionError("oops")

    with pytest.raises(StrategyError, match="raised ZeroDivisionError: oops"):
        plan_member(pop[1], pop, SPACE, Strategy(exploit=broken_exploit), rng())
    with pytest.raises(StrategyError, match=r"must return poptrain.Explored"):
        plan_member(pop[1], pop, SPACE, Strategy(exploit=None, explore=lambda h, s, r: h), rng())
    with pytest.raises(StrategyError, match=r"invalid hyperparameters: parameter 'layers'"):
        plan_member(
            pop[1], pop, SPACE, Strategy(exploit=None, explore=lambda h, s, r: Explored({**h, "layers": 99})), rng()
        )


def test_same_seed_same_decisions():
    fitness = [float(x) for x in np.random.default_rng(0).normal(size=12)]
    pop = population(fitness)

    def plan(seed):
        return plan_generation(
            pop, SPACE, Strategy(exploit=truncation(0.25)), lambda m: decision_rng(seed, m.slot, m.step)
        )

    assert plan(3) == plan(3)
    assert len(plan(3)) == 3
    assert any(plan(3) != plan(seed) for seed in range(4, 10))


def test_decision_rng_depends_on_seed_slot_and_step():
    def draw(*key):
        return decision_rng(*key).random()

    assert draw(1, 2, 3) == draw(1, 2, 3)
    assert len({draw(1, 2, 3), draw(0, 2, 3), draw(1, 0, 3), draw(1, 2, 4)}) == 4


# --- invalid arguments --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: truncation(0.7), r"truncation\(fraction=...\) must be in \(0, 0.5\]"),
        (lambda: truncation(0), r"truncation\(fraction=...\)"),
        (lambda: every(0), r"every\(steps=...\) needs a whole number >= 1"),
        (lambda: every(2.5), r"every\(steps=...\)"),
        (lambda: every(True), r"every\(steps=...\)"),
        (lambda: every(4, burn_in=-1), r"every\(burn_in=...\)"),
        (lambda: perturb(factors=[]), r"perturb\(factors=...\) needs a non-empty list"),
        (lambda: perturb(factors=[0.8, -1]), r"perturb\(factors=...\)"),
        (lambda: perturb(resample_probability=1.5), r"perturb\(resample_probability=...\) must be in \[0, 1\]"),
        (lambda: Strategy(ready=None), r"ready must be given"),
        (lambda: Strategy(exploit="truncation"), r"exploit must be a callable"),
    ],
)
def test_invalid_strategy_arguments(make, message):
    with pytest.raises(StrategyError, match=message) as info:
        make()
    assert isinstance(info.value, ValueError)


def test_strategy_spec_round_trip():
    from poptrain.strategy import strategy_from_spec, strategy_to_spec

    strategy = Strategy(
        ready=every(3, burn_in=2), exploit=tournament(), explore=perturb((0.5, 2.0), 0.1), synchronous=True
    )
    spec = strategy_to_spec(strategy)
    assert spec["explore"] == {"type": "perturb", "factors": [0.5, 2.0], "resample_probability": 0.1}
    assert strategy_from_spec(spec) == strategy
    assert strategy_from_spec(strategy_to_spec(Strategy(exploit=None, explore=None))) == Strategy(
        exploit=None, explore=None
    )
    with pytest.raises(StrategyError, match="unknown strategy type 'weird'"):
        strategy_from_spec({"ready": {"type": "weird"}})
    assert poptrain.Strategy is Strategy
