"""Stop rules: a time budget, a target score and a plateau, as pure decisions."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import poptrain
from poptrain.errors import ConfigError
from poptrain.stopping import StopState, check_rules, first_reason, plateau, record_improvement, target, time_budget


def improvements(scores: list[tuple[int, float]], mode: str = "max") -> tuple[tuple[int, float], ...]:
    seen: tuple[tuple[int, float], ...] = ()
    for step, value in scores:
        seen = record_improvement(seen, step, value, mode)
    return seen


def test_improvements_keep_only_new_bests_in_the_runs_direction() -> None:
    assert improvements([(1, 0.5), (2, 0.4), (3, 0.7), (4, float("nan")), (5, 0.7)]) == ((1, 0.5), (3, 0.7))
    assert improvements([(1, 0.5), (2, 0.4), (3, 0.7)], "min") == ((1, 0.5), (2, 0.4))


def test_time_budget_adds_its_units_and_says_what_was_spent() -> None:
    rule = time_budget(minutes=1, seconds=30)
    assert rule.total == 90
    assert rule(StopState(seconds=89.9, step=3)) is None
    assert rule(StopState(seconds=90.0, step=3)) == "the time budget of 1m30s is spent"


def test_target_follows_the_runs_mode() -> None:
    assert target(0.9)(StopState(1, 4, improvements([(4, 0.8)]))) is None
    assert "target 0.9 is reached (best 0.95 at step 4)" in (target(0.9)(StopState(1, 4, ((4, 0.95),))) or "")
    assert target(0.1)(StopState(1, 4, ((4, 0.05),), mode="min")) is not None
    assert target(0.1)(StopState(1, 4, ((4, 0.2),), mode="min")) is None
    assert target(0.1)(StopState(1, 4)) is None  # no score yet


def test_plateau_stops_when_the_best_has_not_improved_enough_for_n_steps() -> None:
    seen = improvements([(2, 0.5), (4, 0.60), (6, 0.605)])
    assert plateau(4)(StopState(1, 8, seen)) is None  # improved by 0.105 since step 4
    assert plateau(4)(StopState(1, 9, seen)) is None  # improved by 0.005 in steps 6..9
    assert plateau(4, min_delta=0.01)(StopState(1, 9, seen)) is not None  # which counts for nothing here
    assert "in the last 4 steps (best 0.605 at step 6)" in (plateau(4)(StopState(1, 10, seen)) or "")
    assert plateau(4)(StopState(1, 3, seen)) is None  # too early to tell
    down = improvements([(2, 0.5), (4, 0.3)], "min")
    assert plateau(2)(StopState(1, 6, down, mode="min")) is not None
    assert plateau(2)(StopState(1, 5, down, mode="min")) is None


def test_the_first_rule_that_fires_gives_the_reason() -> None:
    rules = check_rules([time_budget(seconds=10), target(0.9)])
    assert first_reason(rules, StopState(11, 4, ((4, 0.95),))) == "the time budget of 10s is spent"
    assert first_reason(rules, StopState(1, 4, ((4, 0.5),))) is None
    assert check_rules(None) == () and check_rules(target(1.0)) == (target(1.0),)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: time_budget(), "time_budget needs a budget > 0"),
        (lambda: time_budget(hours=-1), r"time_budget\(hours=...\) must be a number >= 0, got -1"),
        (lambda: target(float("nan")), r"target\(score=...\) must be a finite number"),
        (lambda: plateau(0), r"plateau\(steps=...\) must be a whole number >= 1, got 0"),
        (lambda: plateau(3, min_delta=-0.1), r"plateau\(min_delta=...\) must be a number >= 0"),
        (lambda: check_rules(["2h"]), "stop must be a stop rule or a list of them"),
    ],
)
def test_bad_rules_are_one_clear_error(make, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make()


class Rising(poptrain.Trainable):
    """Score = steps trained x rate, capped at 10: it rises, then stays flat."""

    def setup(self, hparams, context):
        self.steps, self.rate = 0, hparams["rate"]

    def step(self):
        self.steps += 1

    def evaluate(self):
        return {"score": min(10.0, self.steps * self.rate)}

    def state_dict(self):
        return {"steps": self.steps}

    def load_state_dict(self, state):
        self.steps = state["steps"]

    def set_hparams(self, hparams):
        self.rate = hparams["rate"]


class Slow(Rising):
    def step(self):
        time.sleep(0.05)
        super().step()


def rising_run(tmp_path: Path, name: str) -> poptrain.Run:
    return poptrain.create_run(
        name=name,
        space={"rate": poptrain.Float(0.5, 1.0)},
        population_size=3,
        metric="score",
        root=tmp_path,
        ready=poptrain.every(2),
        exploit=None,
        explore=None,
        seed=0,
    )


class Ends(poptrain.Callback):
    def __init__(self) -> None:
        self.ends: list[str] = []

    def on_run_end(self, state, error):
        self.ends.append(state)


@pytest.mark.parametrize("executor", ["sequential", "processes"])
def test_a_target_stops_the_run_which_continues_with_a_higher_one(tmp_path: Path, executor: str) -> None:
    run = rising_run(tmp_path, f"target-{executor}")
    ends = Ends()
    workers = 2 if executor == "processes" else None
    run.optimize(Rising, steps=40, stop=poptrain.target(4.0), callbacks=[ends], executor=executor, workers=workers)
    assert run.record.state == "stopped" and run.record.reason and "target 4 is reached" in run.record.reason
    best = run.best()
    assert best is not None and best.score >= 4.0 and ends.ends == ["stopped"]
    assert max(m.step for m in run.members()) < 40
    assert poptrain.load_run(f"target-{executor}", root=tmp_path).record.reason == run.record.reason
    run.optimize(Rising, steps=40, stop=poptrain.target(9.0), executor=executor, workers=workers)
    assert run.record.state == "stopped" and run.best().score >= 9.0
    run.optimize(Rising, steps=40, executor=executor, workers=workers)  # no rule: it trains to the end
    assert run.record.state == "finished" and run.record.reason is None
    assert [m.step for m in run.members()] == [40, 40, 40]
    steps = [(s.slot, s.step) for s in run.scores()]
    assert len(steps) == len(set(steps)) == 120  # every step scored once, across the stops


def test_a_plateau_stops_a_run_whose_best_no_longer_improves(tmp_path: Path) -> None:
    run = rising_run(tmp_path, "plateau").optimize(Rising, steps=60, stop=poptrain.plateau(6))
    assert run.record.state == "stopped" and "in the last 6 steps" in (run.record.reason or "")
    assert run.best().score == 10.0 and max(m.step for m in run.members()) <= 30


def test_a_time_budget_stops_between_steps_and_loses_nothing(tmp_path: Path) -> None:
    run = rising_run(tmp_path, "budget").optimize(Slow, steps=400, stop=poptrain.time_budget(seconds=1))
    assert run.record.state == "stopped" and run.record.reason == "the time budget of 1s is spent"
    assert max(m.step for m in run.members()) < 400
    run.optimize(Slow, steps=12)
    assert run.record.state == "finished" and [m.step for m in run.members()] == [12, 12, 12]


def test_a_bad_stop_rule_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    run = rising_run(tmp_path, "bad-stop")
    with pytest.raises(ConfigError, match="stop must be a stop rule or a list of them"):
        run.optimize(Rising, steps=4, stop="2h")  # type: ignore[arg-type]
    assert run.refresh().record.state == "created" and run.scores() == []


def test_durations_read_as_seconds() -> None:
    from poptrain.stopping import parse_duration

    assert [parse_duration(t) for t in ("90", "90s", "30m", "2h", "1h30m", "1.5h")] == [90, 90, 1800, 7200, 5400, 5400]
    for bad in ("", "h", "2 days", "-5m"):
        with pytest.raises(ConfigError, match="cannot read the duration"):
            parse_duration(bad)
