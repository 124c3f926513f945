"""PB2: the history built from records, the GP bandit explore, and a run that uses it."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest

import poptrain
from pbt_helpers import Tracer, make_run
from poptrain import Choice, Float, Int, MemberSnapshot, SearchSpace, Strategy, StrategyError, pb2
from poptrain.records import CheckpointRecord, GenerationRecord
from poptrain.strategy import History, Observation, build_history, first_scores, plan_generation, plan_member

SPACE = SearchSpace({"lr": Float(1e-4, 1e-1, log=True)})


def rng(seed=0):
    return np.random.default_rng(seed)


def ckpt(id_, slot, step, score):
    return CheckpointRecord(id_, slot, step, f"mem://{id_}", "x", 1, score)


def lineage():
    """Two members; at step 4 member 0 copies member 1 (checkpoint 11) with lr 0.02."""
    return [
        GenerationRecord(1, 0, 0, 0, {"lr": 0.001}),
        GenerationRecord(2, 1, 0, 0, {"lr": 0.01}),
        GenerationRecord(3, 0, 1, 4, {"lr": 0.02}, "exploit", 2, 1, 11, {"lr": "pb2 ucb"}),
    ]


CHECKPOINTS = [ckpt(10, 0, 4, 0.4), ckpt(11, 1, 4, 0.6), ckpt(12, 0, 8, 0.9), ckpt(13, 1, 8, 0.8)]


def test_history_from_records():
    history = build_history(lineage(), CHECKPOINTS, openings={0: (1, 0.1), 1: (1, 0.2)}, step=8)
    got = [(o.slot, o.start_step, o.end_step, o.hparams["lr"], round(o.change, 6)) for o in history.observations]
    assert got == [
        (0, 1, 4, 0.001, 0.1),  # first interval: from the first score
        (1, 1, 4, 0.01, round(0.4 / 3, 6)),
        (0, 4, 8, 0.02, 0.075),  # after the exploit: from the donor's checkpoint (0.6)
        (1, 4, 8, 0.01, 0.05),  # same generation: from its previous ready point
    ]
    assert history.pending == {} and history.step == 8


def test_history_without_openings_minimises_and_counts_pending():
    decided = [*lineage(), GenerationRecord(4, 1, 1, 8, {"lr": 0.005}, "explore", 2, None, 13)]
    history = build_history(decided, CHECKPOINTS, mode="min")
    assert [(o.slot, o.end_step, round(o.change, 6)) for o in history.observations] == [(0, 8, -0.075), (1, 8, -0.05)]
    assert history.pending == {1: {"lr": 0.005}}  # decided at step 8, no ready point since
    # the point being decided (member 1 at step 12) ends the explore's first interval
    later = build_history(decided, CHECKPOINTS, ready=[(1, 12, 0.7)], mode="min")
    assert later.pending == {}
    assert (later.observations[-1].slot, later.observations[-1].hparams, round(later.observations[-1].change, 6)) == (
        1,
        {"lr": 0.005},
        0.025,
    )


def test_history_skips_non_finite_scores():
    bad = [ckpt(10, 0, 4, 0.4), ckpt(11, 1, 4, None), ckpt(12, 0, 8, float("nan")), ckpt(13, 1, 8, 0.8)]
    history = build_history(lineage(), bad)
    assert history.observations == ()


def test_history_of_a_stored_run_matches_the_scheduler():
    run = make_run("stored", population_size=4, explore=pb2(), exploit=poptrain.truncation(0.25))
    run.optimize(Tracer, steps=10)
    generations = run.storage.get_generations(run.record.id)
    openings = first_scores(run.storage.get_scores(run.record.id), generations)
    assert openings == {slot: (1, pytest.approx(run.lineage()[slot].hparams["rate"])) for slot in range(4)}
    history = build_history(generations, run.storage.get_checkpoints(run.record.id), openings=openings)
    assert len(history.observations) == 4 * 4  # ready at 3, 6 and 9, and the final checkpoint at 10
    assert all(o.change == pytest.approx(o.hparams["rate"]) for o in history.observations)  # Tracer gains rate per step
    from poptrain.scheduler import Scheduler

    scheduler = Scheduler(run.record, run.storage, run.checkpoints, run.space, run.strategy, Tracer, 10)
    assert scheduler.history() == history


def observations(values, change):
    return tuple(Observation(i % 4, 4 * (i // 4), 4 * (i // 4) + 4, {"lr": v}, change(v)) for i, v in enumerate(values))


LRS = list(np.geomspace(1e-4, 1e-1, 12))


def test_pb2_proposes_a_high_lr_when_higher_is_better():
    history = History(observations(LRS, lambda lr: math.log10(lr)), step=12)
    explored = pb2()({"lr": 1e-3}, SPACE, rng(), history=history)
    assert explored.hparams["lr"] > 0.03
    assert explored.operations["lr"].startswith("pb2 ucb (12 observations, 0 pending")


def test_pb2_stays_within_bounds_and_rounds_integers():
    space = SearchSpace({"lr": Float(1e-4, 1e-1, log=True), "layers": Int(1, 8), "act": Choice(["relu", "tanh"])})
    obs = tuple(
        Observation(i, 0, 4, {"lr": lr, "layers": 1 + i % 8, "act": "relu"}, float(i % 8) - 100 * lr)
        for i, lr in enumerate(LRS)
    )
    for seed in range(5):
        explored = pb2(choice_probability=0.0)(
            {"lr": 1e-2, "layers": 3, "act": "tanh"}, space, rng(seed), history=History(obs, step=4)
        )
        space.validate(explored.hparams)
        assert (
            isinstance(explored.hparams["layers"], int) and explored.hparams["layers"] >= 6
        )  # more layers scored better
        assert explored.hparams["act"] == "tanh" and explored.operations["act"] == "keep"
    changed = pb2(choice_probability=1.0)({"lr": 1e-2, "layers": 3, "act": "tanh"}, space, rng(), history=History(obs))
    assert changed.hparams["act"] == "relu" and "resample" in changed.operations["act"]


def test_pending_points_push_the_next_suggestion_away():
    from poptrain.strategy.pb2 import from_unit, to_unit

    lr = SPACE["lr"]
    middle = tuple(
        Observation(i, 0, 4, {"lr": from_unit(lr, u)}, float(i % 2)) for i, u in enumerate([0.4, 0.45, 0.5, 0.55, 0.6])
    )
    explore = pb2(beta=4.0)  # exploring: the far ends are the most uncertain
    first = explore({"lr": 1e-3}, SPACE, rng(), history=History(middle, step=4)).hparams
    again = explore({"lr": 1e-3}, SPACE, rng(), history=History(middle, step=4)).hparams
    second = explore({"lr": 1e-3}, SPACE, rng(), history=History(middle, {3: first}, 4))
    assert again == first and abs(to_unit(lr, first["lr"]) - 0.5) > 0.4
    assert abs(to_unit(lr, second.hparams["lr"]) - to_unit(lr, first["lr"])) > 0.8  # to the other end
    assert "1 pending" in second.operations["lr"]


def test_pb2_is_deterministic_for_a_fixed_generator():
    history = History(observations(LRS, lambda lr: -abs(math.log10(lr) + 2.5)), {7: {"lr": 3e-3}}, 12)
    one = pb2()({"lr": 1e-3}, SPACE, rng(3), history=history)
    two = pb2()({"lr": 1e-3}, SPACE, rng(3), history=history)
    assert one == two
    assert 1e-4 <= one.hparams["lr"] <= 1e-1


def test_too_few_observations_resample_from_the_prior():
    explored = pb2()({"lr": 1e-3}, SPACE, rng(), history=History(observations(LRS[:2], lambda lr: lr)))
    assert explored.operations["lr"].startswith("pb2 resample (2 observations)")
    assert pb2()({"lr": 1e-3}, SPACE, rng()).operations["lr"].startswith("pb2 resample (0 observations)")


def test_window_keeps_only_recent_observations():
    history = History(observations(LRS, lambda lr: lr), step=12)  # observations end at 4, 8 and 12
    assert len(pb2(window=4).recent(history)) == 4
    assert len(pb2(max_observations=5).recent(history)) == 5


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: pb2(beta=-1), "pb2(beta=...) must be a number >= 0 or None"),
        (lambda: pb2(window=0), "pb2(window=...) must be a whole number >= 1"),
        (lambda: pb2(candidates=0), "pb2(candidates=...) must be a whole number >= 1"),
        (lambda: pb2(restarts=1.5), "pb2(restarts=...) must be a whole number >= 0"),
        (lambda: pb2(choice_probability=2), "pb2(choice_probability=...) must be in [0, 1]"),
    ],
)
def test_bad_arguments(make, message):
    with pytest.raises(
        StrategyError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[").replace("]", r"\]")
    ):
        make()


def test_missing_scikit_learn_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    with pytest.raises(StrategyError, match=r'pip install "poptrain\[pb2\]"'):
        pb2()


class Recorder:
    """An explore that uses the history, and records what it was given."""

    uses_history = True

    def __init__(self):
        self.seen = []

    def __call__(self, hparams, space, rng, *, history):
        self.seen.append(history)
        return poptrain.Explored({"lr": 0.05}, {"lr": "set"})


def test_plans_hand_the_history_and_the_round_s_pending_decisions():
    recorder = Recorder()
    strategy = Strategy(exploit=None, explore=recorder)
    population = [MemberSnapshot(s, 8, {"lr": 0.001}, 0.1 * s, 8) for s in range(3)]
    base = History((), {0: {"lr": 0.002}, 5: {"lr": 0.003}}, 0)
    plan_generation(population, SPACE, strategy, lambda m: rng(m.slot), history=base)
    assert [h.step for h in recorder.seen] == [8, 8, 8]
    assert [sorted(h.pending) for h in recorder.seen] == [[5], [0, 5], [0, 1, 5]]  # own slot left out
    assert recorder.seen[1].pending[0] == {"lr": 0.05}  # member 0's decision of this generation
    plan_member(population[0], population, SPACE, strategy, rng())  # no history given: an empty one
    assert recorder.seen[-1] == History()


def test_spec_round_trip_and_yaml(tmp_path):
    from poptrain.experiment import load_experiment
    from poptrain.strategy import strategy_from_spec, strategy_to_spec

    strategy = Strategy(explore=pb2(window=8, beta=2.0))
    spec = strategy_to_spec(strategy)
    assert spec["explore"]["type"] == "pb2" and spec["explore"]["window"] == 8
    assert strategy_from_spec(spec) == strategy
    config = tmp_path / "pb2.yaml"
    config.write_text(
        "trainable: poptrain.experiments.toy:ToyQuadratic\nmetric: Q\npopulation_size: 3\nsteps: 8\n"
        "space:\n  h0: {type: float, low: 0.0, high: 1.0}\n  h1: {type: float, low: 0.0, high: 1.0}\n"
        "strategy:\n  explore: {type: pb2, window: 8, choice_probability: 0.5}\n"
    )
    assert load_experiment(str(config)).strategy.explore == pb2(window=8, choice_probability=0.5)


@pytest.mark.parametrize("synchronous", [False, True])
def test_a_run_with_pb2_records_what_it_did(tmp_path, synchronous):
    run = make_run(
        "pb2",
        population_size=4,
        seed=1,
        storage="sqlite",
        tmp_path=tmp_path,
        explore=pb2(),
        exploit=poptrain.truncation(0.25),
        synchronous=synchronous,
    )
    run.optimize(Tracer, steps=12)
    decided = [g for g in run.lineage() if g.number > 0]
    assert decided and all(g.kind == "exploit" for g in decided)
    assert all(g.operations["rate"].startswith("pb2 ") and g.operations["width"].startswith("pb2 ") for g in decided)
    assert any("ucb" in g.operations["rate"] for g in decided)
    assert max(g.hparams["rate"] for g in decided) > 0.8  # the score grows by `rate` per step
    reloaded = poptrain.load_run("pb2", storage=f"sqlite:///{tmp_path}/pb2/poptrain.db", root=str(tmp_path))
    assert reloaded.strategy.explore == pb2()
    run.close()
    reloaded.close()


def test_experiment_module_writes_its_table(tmp_path):
    from experiments import pb2 as experiment

    assert (
        experiment.main(["toy", "--seeds", "1", "--steps", "6", "--ready", "2", "--root", str(tmp_path / "toy")]) == 0
    )
    table = (tmp_path / "toy" / "table.md").read_text()
    assert "| pb2 |" in table and "| pbt |" in table and "| random search |" in table
    assert (
        experiment.main(["digits", "--seeds", "1", "--steps", "3", "--ready", "1", "--root", str(tmp_path / "d")]) == 0
    )
    assert "test accuracy" in (tmp_path / "d" / "table.md").read_text()


def test_a_worker_and_a_resumed_run_read_the_history_from_storage(tmp_path):
    from poptrain.executors.processes import WorkerJob, work

    run = make_run("worker", population_size=4, storage="sqlite", tmp_path=tmp_path, explore=pb2(), exploit=None)
    url, checkpoints = f"sqlite:///{tmp_path}/worker/poptrain.db", str(tmp_path / "worker" / "checkpoints")
    run.optimize(Tracer, steps=6)  # ready at 3: the 4 first intervals are observed
    run.close()
    work(
        WorkerJob(url, "worker", checkpoints, Tracer, 12, flush_seconds=0.0, torch_threads=None)
    )  # as a worker process does
    resumed = poptrain.load_run("worker", storage=url, root=str(tmp_path))
    after = [g for g in resumed.lineage() if g.number > 0 and g.start_step > 6]
    assert after and all("ucb" in g.operations["rate"] for g in after)
    counts = [int(g.operations["rate"].split("(")[1].split(" ")[0]) for g in after]
    assert len(after) == 4 and min(counts) >= 4  # the observations made before the run was stopped are used
    resumed.close()


def test_ask_tell_report_gives_pb2_the_history(tmp_path):
    run = make_run("asktell", population_size=4, storage="sqlite", tmp_path=tmp_path, explore=pb2(), exploit=None)
    x = dict.fromkeys(range(4), 0.0)
    rates = {m.slot: m.hparams["rate"] for m in run.members()}
    operations = []
    for step in range(1, 13):
        for slot in range(4):
            x[slot] += rates[slot]
            action = run.report(slot, step, {"score": x[slot]}, state={"x": x[slot]})
            if action.kind == "explore":
                rates[slot] = action.hparams["rate"]
                operations.append(action.operations["rate"])
    assert operations[-1].startswith("pb2 ucb")  # later decisions are fitted on the observations
    run.close()
