"""Strategies that resist greed: t-test selection (copy only a donor better beyond the noise of
the scores) and MF-PBT's sub-populations evolving at different frequencies."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest

import poptrain
from poptrain import Donor, MemberSnapshot, SearchSpace, Strategy, StrategyError, mf_exploit, mf_ready, ttest
from poptrain.experiment import load_experiment
from poptrain.records import GenerationRecord
from poptrain.strategy import lineage_scores, plan_round, strategy_from_spec, strategy_to_spec

SPACE = SearchSpace({"h": poptrain.Float(0.0, 1.0)})
RNG = np.random.default_rng(0)


def snap(slot: int, fitness: float, recent: tuple[float, ...] = (), step: int = 8, h: float = 0.5) -> MemberSnapshot:
    return MemberSnapshot(slot, step, {"h": h}, fitness, last_ready_step=step, recent=recent)


# --- t-test selection ----------------------------------------------------------------------------


def test_ttest_copies_a_donor_only_when_it_is_better_beyond_the_noise() -> None:
    member = snap(0, 1.0, (1.2, 0.7, 1.1, 1.0))
    within_noise = snap(1, 1.4, (0.9, 1.3, 0.8, 1.4))  # a lucky last evaluation
    clearly = snap(1, 5.1, (5.0, 5.2, 4.9, 5.1))
    assert ttest(window=4)(member, [member, within_noise], RNG) is None
    assert ttest(window=4)(member, [member, clearly], RNG) == 1
    assert truncation_copies(member, within_noise)  # what the greedy rule does


def truncation_copies(member: MemberSnapshot, donor: MemberSnapshot) -> bool:
    return poptrain.truncation(0.5)(member, [member, donor], RNG) == donor.slot


def test_ttest_reads_only_the_last_window_and_needs_two_evaluations_a_side() -> None:
    test = ttest(window=3, alpha=0.05)
    assert test.better((0.0, 0.0, 5.0, 5.1, 5.2), (1.0, 1.1, 1.2))  # the two old zeros are out of the window
    assert not test.better((5.0,), (1.0, 1.1))
    assert not test.better((), ())
    assert test.better((2.0, 2.0), (1.0, 1.0))  # no noise at all: the better mean wins
    assert not test.better((1.0, 1.0), (1.0, 1.0))
    assert test.better((1.0, 1.1), (-math.inf, 1.0))  # a member that scored NaN copies a healthy one
    assert not test.better((-math.inf, 9.0), (1.0, 1.1))


def test_ttest_draws_one_opponent_uniformly_and_never_copies_a_worse_one() -> None:
    member = snap(0, 5.0, (5.0, 5.1, 4.9))
    population = [member, *(snap(s, 1.0, (1.0, 1.1, 0.9)) for s in range(1, 6))]
    assert all(ttest(window=3)(member, population, np.random.default_rng(s)) is None for s in range(20))
    weak = snap(0, 1.0, (1.0, 1.1, 0.9))
    strong = [weak, *(snap(s, 5.0, (5.0, 5.1, 4.9)) for s in range(1, 6))]
    donors = {ttest(window=3)(weak, strong, np.random.default_rng(s)) for s in range(40)}
    assert donors == {1, 2, 3, 4, 5}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"window": 1}, "ttest(window=...) needs a whole number >= 2"),
        ({"window": 2.5}, "ttest(window=...) needs a whole number >= 2"),
        ({"alpha": 0}, "ttest(alpha=...) must be a significance level in (0, 1)"),
        ({"alpha": 1.5}, "ttest(alpha=...) must be a significance level in (0, 1)"),
    ],
)
def test_ttest_refuses_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(StrategyError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        ttest(**kwargs)


def test_welchs_p_value_is_scipys() -> None:
    from scipy.stats import ttest_ind

    from poptrain.strategy.significance import welch_p_greater

    rng = np.random.default_rng(0)
    for n, m in ((2, 2), (3, 7), (10, 10), (4, 9)):
        for _ in range(20):
            a, b = rng.normal(0.3, 1.0, n) * rng.uniform(0.1, 3), rng.normal(0.0, 1.0, m)
            expected = ttest_ind(a, b, equal_var=False, alternative="greater").pvalue
            assert welch_p_greater(a, b) == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert math.isnan(welch_p_greater(np.ones(3), np.ones(4)))


def gen(id: int, slot: int, number: int, start: int, parent: int | None = None) -> GenerationRecord:
    return GenerationRecord(id, slot, number, start, {"h": 0.5}, "init" if number == 0 else "exploit", parent)


def test_recent_evaluations_follow_the_model_lineage_not_the_slot() -> None:
    # member 1 copied member 0's checkpoint at step 4 (generation 3 descends from member 0's generation 1)
    generations = {1: gen(1, 0, 0, 0), 2: gen(2, 1, 0, 0), 3: gen(3, 1, 1, 4, parent=1)}
    # by the generation that trained each step: member 1's first model trained steps 1..4
    scores = {1: {s: 10.0 + s for s in range(1, 9)}, 2: {s: float(s) for s in range(1, 5)}}
    scores[3] = {s: float(s) for s in range(5, 9)}
    assert lineage_scores(generations, scores, 3, 6, 4, float) == (13.0, 14.0, 5.0, 6.0)
    assert lineage_scores(generations, scores, 2, 3, 10, float) == (1.0, 2.0, 3.0)  # never past step 3
    assert lineage_scores(generations, scores, 1, 8, 2, lambda v: -v if v is not None else None) == (-17.0, -18.0)


# --- MF-PBT --------------------------------------------------------------------------------------


def test_mf_ready_makes_each_group_ready_at_its_own_frequency() -> None:
    ready = mf_ready(base=2, factors=(1, 4))
    for slot, interval in ((0, 2), (1, 8), (2, 2), (3, 8)):
        assert ready.interval(slot) == interval
        assert not ready(MemberSnapshot(slot, interval - 1, {}, None, last_ready_step=0))
        assert ready(MemberSnapshot(slot, 16 + interval, {}, 1.0, last_ready_step=16))


def two_groups(fast: list[float], slow: list[float], step: int = 8) -> list[MemberSnapshot]:
    """Group 0 (fast) in the even slots, group 1 (slow) in the odd ones, with these fitnesses."""
    population = [snap(2 * i, f, step=step, h=0.9) for i, f in enumerate(fast)]
    population += [snap(2 * i + 1, f, step=step, h=0.1 + i / 100) for i, f in enumerate(slow)]
    return sorted(population, key=lambda m: m.slot)


def test_mf_exploit_truncates_within_the_group() -> None:
    population = two_groups(fast=[9, 8, 7, 6], slow=[4, 3, 2, 1])
    by_slot = {m.slot: m for m in population}
    exploit = mf_exploit(factors=(1, 4))
    assert exploit(by_slot[7], population, RNG) == 1  # the slow group's worst copies its best, not a fast one
    assert exploit(by_slot[6], population, RNG) == 0
    assert exploit(by_slot[1], population, RNG) is None  # the best does nothing


def test_migration_keeps_slow_groups_hyperparameters_and_gives_fast_groups_the_slow_ones() -> None:
    exploit = mf_exploit(factors=(1, 4))
    # the slow group's third member (slot 5) takes the best fast model, with its own group's best hyperparameters
    population = two_groups(fast=[9, 8, 7, 6], slow=[4, 3, 2, 1])
    by_slot = {m.slot: m for m in population}
    into_slow = exploit(by_slot[5], population, RNG)
    assert isinstance(into_slow, Donor)
    assert (into_slow.slot, into_slow.hparams_from, into_slow.explore) == (0, 1, False)
    # the fast group's third member (slot 4) takes the best slow model with the slow hyperparameters
    population = two_groups(fast=[4, 3, 2, 1], slow=[9, 8, 7, 6])
    by_slot = {m.slot: m for m in population}
    into_fast = exploit(by_slot[4], population, RNG)
    assert isinstance(into_fast, Donor) and (into_fast.slot, into_fast.hparams_from) == (1, 1)
    decision = plan_round(population, [by_slot[4]], SPACE, Strategy(mf_ready(2, (1, 4)), exploit), lambda m: RNG)[0]
    assert (decision.kind, decision.donor, decision.hparams) == ("exploit", 1, {"h": 0.1})
    assert decision.operations == {"migrated": "from a slower group"}


def test_migration_takes_only_a_better_migrant_holding_a_checkpoint_now() -> None:
    exploit = mf_exploit(factors=(1, 4))
    population = two_groups(fast=[4, 3, 2, 1], slow=[9, 8, 7, 6])
    by_slot = {m.slot: m for m in population}
    stale = [m if m.slot % 2 == 0 else snap(m.slot, m.fitness or 0.0, step=4) for m in population]
    assert exploit(by_slot[4], stale, RNG) is None  # the slow group was last ready at step 4
    population = two_groups(fast=[9, 8, 7, 6], slow=[9.5, 8.5, 7.5, 6.5])
    assert exploit({m.slot: m for m in population}[4], population, RNG) == Donor(
        1, 1, explore=False, operations={"migrated": "from a slower group"}
    )  # the best other model (9.5) beats 7
    population = two_groups(fast=[9, 8, 7, 6], slow=[6.5, 6.4, 6.3, 6.2])
    assert exploit({m.slot: m for m in population}[4], population, RNG) is None  # no slow model beats 7


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: mf_ready(base=0), r"mf_ready\(base=...\) needs a whole number of steps >= 1"),
        (lambda: mf_ready(factors=(1, 4, 2)), r"mf_ready\(factors=...\) needs strictly increasing whole numbers"),
        (lambda: mf_ready(factors=()), r"mf_ready\(factors=...\) needs strictly increasing whole numbers"),
        (lambda: mf_exploit(factors=[1, 1.5]), r"mf_exploit\(factors=...\) needs strictly increasing"),
        (lambda: mf_exploit(fraction=0.75), r"mf_exploit\(fraction=...\) must be in \(0, 0.5\]"),
        (
            lambda: Strategy(mf_ready(2, (1, 4)), mf_exploit((1, 2))),
            r"must name the same groups; build both with poptrain.mfpbt",
        ),
    ],
)
def test_mfpbt_refuses_bad_arguments(build, message: str) -> None:
    with pytest.raises(StrategyError, match=message):
        build()


# --- specs and configs ---------------------------------------------------------------------------


def test_new_strategies_round_trip_through_their_spec() -> None:
    for strategy in (
        Strategy(poptrain.every(2), ttest(window=6, alpha=0.1), None),
        Strategy(**poptrain.mfpbt(base=3, factors=(1, 2, 8), fraction=0.5)),
    ):
        spec = strategy_to_spec(strategy)
        assert strategy_from_spec(spec) == strategy
    assert strategy_to_spec(Strategy(**poptrain.mfpbt(base=3, factors=(1, 2))))["ready"] == {
        "type": "mf_ready",
        "base": 3,
        "factors": [1, 2],
    }


def test_a_yaml_config_names_the_new_strategies(tmp_path: Path) -> None:
    config = tmp_path / "greed.yaml"
    config.write_text(
        "trainable: poptrain.experiments.toy:ToyQuadratic\npopulation_size: 8\nsteps: 4\n"
        "space:\n  h0: {type: float, low: 0.0, high: 1.0}\n  h1: {type: float, low: 0.0, high: 1.0}\n"
        "strategy:\n  ready: {type: mf_ready, base: 2, factors: [1, 4]}\n"
        "  exploit: {type: mf_exploit, factors: [1, 4], fraction: 0.25}\n"
    )
    assert load_experiment(str(config)).strategy == Strategy(**poptrain.mfpbt(base=2, factors=(1, 4)))
    config.write_text(
        config.read_text().replace("{type: mf_exploit, factors: [1, 4], fraction: 0.25}", "{type: ttest, window: 4}")
    )
    assert load_experiment(str(config)).strategy.exploit == ttest(window=4)


# --- end to end ----------------------------------------------------------------------------------


class Noisy(poptrain.Trainable):
    """``score = 5 h + noise``: every evaluation has a spread of 1, and only ``h`` matters."""

    def setup(self, hparams, context):
        self.h, self.seed, self.steps = float(hparams["h"]), context.seed, 0

    def step(self):
        self.steps += 1

    def evaluate(self):
        return 5 * self.h + random.Random(f"{self.seed}-{self.steps}").gauss(0.0, 1.0)

    def state_dict(self):
        return {"steps": self.steps}

    def load_state_dict(self, state):
        self.steps = int(state["steps"])

    def set_hparams(self, hparams):
        self.h = float(hparams["h"])


def noisy_run(root: Path, exploit) -> poptrain.Run:
    return poptrain.create_run(
        name="noisy",
        space={"h": poptrain.Float(0.0, 1.0)},
        population_size=8,
        ready=poptrain.every(2),
        exploit=exploit,
        explore=None,
        initial_hparams=[{"h": 0.0}] * 7 + [{"h": 1.0}],
        root=root,
        storage="memory",
    ).optimize(Noisy, steps=20)


def test_ttest_copies_the_better_member_and_not_the_lucky_ones(tmp_path: Path) -> None:
    useless, final = {}, {}
    for name, exploit in (("truncation", poptrain.truncation(0.25)), ("ttest", ttest(window=4))):
        run = noisy_run(tmp_path / name, exploit)
        lineage = {(g.slot, g.number): g for g in run.lineage()}
        copies = [(lineage[g.slot, g.number - 1].hparams, g.hparams) for g in lineage.values() if g.kind == "exploit"]
        useless[name] = sum(before == after for before, after in copies)  # a model as good, copied on noise
        final[name] = {m.hparams["h"] for m in run.members()}
    assert final == {"truncation": {1.0}, "ttest": {1.0}}  # both spread the truly better model
    assert useless["truncation"] >= 8 and useless["ttest"] <= 1  # only greedy truncation keeps copying noise


def deceptive(steps: int) -> object:
    """A deceptive problem for both executors: ``a += h``, ``b += 3 (1 - h)`` each step, score
    ``a + b * t / steps``. Greedy members (high ``h``) lead until a third of the run; patient
    ones (low ``h``) end three times higher."""
    import torch

    from poptrain.vectorized import VectorizedTrainable

    def model() -> torch.nn.Module:
        layer = torch.nn.Linear(1, 3, bias=False)
        torch.nn.init.zeros_(layer.weight)
        return layer

    def loss(output: torch.Tensor, target: torch.Tensor, hparams: dict) -> torch.Tensor:
        h = hparams["h"]
        return -(h * output[:, 0] + 3 * (1 - h) * output[:, 1] + output[:, 2]).mean()

    def evaluate(predict) -> dict:
        out = predict(torch.ones(1, 1))[:, 0, :]
        return {"score": out[:, 0] + out[:, 1] * out[:, 2] / steps}

    return VectorizedTrainable(
        model, (torch.ones(8, 1), torch.zeros(8, 1)), loss, evaluate, batch_size=8, hparams={"lr": 1.0}, device="cpu"
    )


def deceptive_run(root: Path, name: str, *, synchronous: bool = False, **strategy: object) -> poptrain.Run:
    return poptrain.create_run(
        name=name,
        space={"h": poptrain.Float(0.0, 1.0)},
        population_size=8,
        explore=None,
        initial_hparams=[{"h": h} for h in (1.0, 0.0, 0.95, 0.05, 0.0, 1.0, 0.05, 0.95)],
        synchronous=synchronous,
        root=root,
        storage="memory",
        **strategy,
    )


def test_mfpbt_refuses_synchronous_pbt(tmp_path: Path) -> None:
    with pytest.raises(StrategyError, match="create the run with synchronous=False"):
        deceptive_run(tmp_path, "sync", synchronous=True, **poptrain.mfpbt(base=2, factors=(1, 4)))


@pytest.mark.parametrize("executor", ["sequential", "vectorized"])
def test_mfpbt_keeps_the_patient_models_that_greedy_pbt_loses(tmp_path: Path, executor: str) -> None:
    steps = 20
    greedy = deceptive_run(tmp_path, "greedy", ready=poptrain.every(2), exploit=poptrain.truncation(0.25))
    greedy.optimize(deceptive(steps), steps=steps, executor=executor)
    mf = deceptive_run(tmp_path, "mf", **poptrain.mfpbt(base=2, factors=(1, 4)))
    mf.optimize(deceptive(steps), steps=steps, executor=executor)
    assert min(g.hparams["h"] for g in greedy.members()) >= 0.95  # the patient members were overwritten early
    assert mf.best().score > 2 * greedy.best().score

    lineage = mf.lineage()
    slow = [g for g in lineage if g.slot % 2 == 1 and g.number > 0]
    assert slow and {g.start_step for g in slow} <= {8, 16}  # the slow group evolves every 8 steps
    assert {g.start_step for g in lineage if g.slot % 2 == 0 and g.number > 0} - {
        2,
        4,
        6,
        8,
        10,
        12,
        14,
        16,
        18,
    } == set()
    for g in lineage:
        if g.donor is not None and g.slot % 2 == 1 and g.donor % 2 == 0:  # a slow member took a fast model
            assert "keeping member" in g.operations["migrated"]
    assert any(g.slot % 2 == 0 and g.operations.get("migrated") == "from a slower group" for g in lineage)


def test_synchronous_pbt_with_members_ready_at_different_steps_is_one_clear_error(tmp_path: Path) -> None:
    """A ready that makes members ready at different steps cannot be synchronous: the run says so
    instead of waiting forever for a generation that never forms."""
    from poptrain.experiments.toy import ToyQuadratic

    def by_slot(member: poptrain.MemberSnapshot) -> bool:
        return member.step - member.last_ready_step >= (2 if member.slot == 0 else 4)

    run = poptrain.create_run(
        name="uneven",
        space={"h0": poptrain.Float(0.0, 1.0), "h1": poptrain.Float(0.0, 1.0)},
        population_size=2,
        metric="Q",
        root=tmp_path,
        ready=by_slot,
        synchronous=True,
        seed=0,
    )
    with pytest.raises(poptrain.StrategyError, match="member 0 is ready at step 2 and member 1 at step 4"):
        run.optimize(ToyQuadratic, steps=8)
