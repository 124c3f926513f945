"""Stop rules: a time budget, a target score and a plateau, as pure decisions."""

from __future__ import annotations

import pytest

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
