"""Hyperparameter types and the SearchSpace: sampling, moves and validation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from poptrain import Choice, Float, Int, SearchSpace, SearchSpaceError

SEEDS = range(50)


def rng(seed=0):
    return np.random.default_rng(seed)


def bound(param, name="p"):
    """A parameter checked as SearchSpace would check it."""
    return SearchSpace({name: param})[name]


# --- sampling -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "param",
    [Float(-2.0, 3.0), Float(1e-5, 1e-1, log=True), Int(1, 4), Int(-3, 3), Int(1, 1000, log=True), Int(2, 3, log=True)],
    ids=repr,
)
def test_samples_stay_in_bounds(param):
    values = [param.sample(rng(seed)) for seed in SEEDS for _ in range(20)]
    assert all(param.low <= v <= param.high for v in values)
    assert all(param.contains(v) for v in values)
    if isinstance(param, Int):
        assert all(type(v) is int for v in values)
        assert set(values) == set(range(param.low, param.high + 1)) or param.high - param.low > 20
    else:
        assert all(type(v) is float for v in values)


def test_int_sampling_reaches_both_bounds():
    for param in (Int(1, 4), Int(2, 3, log=True), Int(1, 6, log=True)):
        values = {param.sample(rng(seed)) for seed in range(200)}
        assert values == set(range(param.low, param.high + 1))


def test_log_float_is_uniform_in_log_space():
    param = Float(1e-4, 1.0, log=True)
    values = np.array([param.sample(rng(seed)) for seed in range(2000)])
    # half the draws below the geometric midpoint 1e-2; a linear prior would put ~1% there
    assert 0.45 < np.mean(values < 1e-2) < 0.55
    assert values.min() < 2e-4 and values.max() > 0.5


def test_choice_samples_every_option():
    param = Choice(["a", 1, 2.5, None, True])
    values = [param.sample(rng(seed)) for seed in range(300)]
    assert all(param.contains(v) for v in values)
    assert {repr(v) for v in values} == {repr(o) for o in param.options}


@pytest.mark.parametrize(
    "param", [Float(0.0, 1.0), Float(1e-3, 1.0, log=True), Int(0, 100), Choice(list("abcdef"))], ids=repr
)
def test_same_seed_same_values(param):
    first = [param.sample(rng(7)) for _ in range(5)]
    again = [param.sample(rng(7)) for _ in range(5)]
    other = [param.sample(rng(8)) for _ in range(5)]
    assert first == again
    assert first != other


def test_space_sample_is_reproducible():
    space = SearchSpace({"lr": Float(1e-4, 1e-1, log=True), "layers": Int(1, 8), "act": Choice(["relu", "tanh"])})
    assert space.sample(rng(11)) == space.sample(rng(11))
    assert list(space.sample(rng(11))) == ["lr", "layers", "act"]
    assert len({repr(space.sample(rng(s))) for s in range(20)}) > 10


# --- Float perturb --------------------------------------------------------------------------
@pytest.mark.parametrize(("factor", "expected"), [(0.8, 0.4), (1.2, 0.6)])
def test_float_perturb_multiplies(factor, expected):
    value, op = bound(Float(0.0, 1.0)).perturb(0.5, factor, rng())
    assert value == pytest.approx(expected)
    assert op == f"* {factor}"


@pytest.mark.parametrize(("value", "factor", "clipped_to"), [(0.9, 1.2, 1.0), (0.3, 0.8, 0.25), (1.0, 1.2, 1.0)])
def test_float_perturb_clips(value, factor, clipped_to):
    new, op = bound(Float(0.25, 1.0)).perturb(value, factor, rng())
    assert new == clipped_to
    assert op == f"* {factor} (clipped)"


def test_log_float_perturb_multiplies_and_clips():
    param = bound(Float(1e-4, 1e-1, log=True))
    assert param.perturb(1e-3, 1.2, rng()) == (pytest.approx(1.2e-3), "* 1.2")
    assert param.perturb(1e-3, 0.8, rng()) == (pytest.approx(0.8e-3), "* 0.8")
    assert param.perturb(0.09, 1.2, rng()) == (0.1, "* 1.2 (clipped)")
    assert param.perturb(1.1e-4, 0.8, rng()) == (1e-4, "* 0.8 (clipped)")


def test_linear_float_at_zero_still_moves():
    param = bound(Float(-1.0, 1.0))
    up, op_up = param.perturb(0.0, 1.2, rng())
    down, op_down = param.perturb(0.0, 0.8, rng())
    assert up == pytest.approx(0.4) and op_up == "+ 0.4"
    assert down == pytest.approx(-0.4) and op_down == "- 0.4"
    assert bound(Float(0.0, 1.0)).perturb(0.0, 1.2, rng())[0] == pytest.approx(0.2)


def test_float_perturb_stays_in_bounds_over_many_moves():
    for param in (bound(Float(0.0, 1.0)), bound(Float(1e-4, 1e-1, log=True)), bound(Float(-3.0, 2.0))):
        generator = rng(5)
        value = param.sample(generator)
        for _ in range(300):
            factor = [0.8, 1.2][int(generator.integers(2))]
            value, _ = param.perturb(value, factor, generator)
            assert param.low <= value <= param.high


# --- Int perturb ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "factor", "expected", "op"),
    [
        (50, 1.2, 60, "* 1.2"),
        (50, 0.8, 40, "* 0.8"),
        (1, 1.2, 2, "+ 1"),  # rounding would keep 1
        (2, 0.8, 1, "- 1"),  # round(1.6) == 2 would keep 2
        (90, 1.2, 100, "* 1.2 (clipped)"),
        (100, 1.2, 99, "- 1 (at bound)"),
        (1, 0.8, 2, "+ 1 (at bound)"),
    ],
)
def test_int_perturb(value, factor, expected, op):
    assert bound(Int(1, 100)).perturb(value, factor, rng()) == (expected, op)


def test_int_always_moves_and_stays_in_bounds():
    for param in (bound(Int(1, 2)), bound(Int(0, 5)), bound(Int(1, 1000, log=True)), bound(Int(-4, 4))):
        for value in range(param.low, min(param.high, 60) + 1):
            for factor in (0.8, 1.2, 0.5, 2.0):
                new, _ = param.perturb(value, factor, rng())
                assert new != value and param.contains(new), (param, value, factor, new)


# --- Choice perturb ------------------------------------------------------------------------
def test_ordered_choice_moves_to_a_neighbour_and_bounces():
    param = bound(Choice([16, 32, 64, 128], ordered=True))
    assert param.perturb(32, 1.2, rng()) == (64, "-> 64")
    assert param.perturb(32, 0.8, rng()) == (16, "-> 16")
    assert param.perturb(128, 1.2, rng()) == (64, "-> 64")
    assert param.perturb(16, 0.8, rng()) == (32, "-> 32")


def test_unordered_choice_perturb_always_changes():
    param = bound(Choice(["sgd", "adam", "rmsprop", "adagrad"]))
    seen = set()
    for seed in SEEDS:
        for value in param.options:
            new, op = param.perturb(value, 1.2, rng(seed))
            assert new != value and new in param.options
            assert op == f"resample -> {new!r}"
            seen.add(new)
    assert seen == set(param.options)


def test_choice_keeps_int_and_bool_apart():
    param = bound(Choice([True, 1, "1"], ordered=True))
    assert param.perturb(1, 1.2, rng())[0] == "1"
    assert param.perturb(True, 1.2, rng())[0] == 1 and param.perturb(True, 1.2, rng())[0] is not True


def test_resample_draws_from_the_prior():
    param = bound(Float(0.0, 1.0))
    value, op = param.resample(rng(4))
    assert op == "resample" and value == param.sample(rng(4))
    assert {bound(Choice(["a", "b"])).resample(rng(s))[1] for s in range(5)} == {"resample"}


# --- SearchSpace errors -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"lr": Float(0.1, 0.1)}, r"parameter 'lr': low \(0.1\) must be below high \(0.1\)"),
        ({"depth": Int(8, 2)}, r"parameter 'depth': low \(8\) must be below high \(2\)"),
        ({"lr": Float(0.0, 1.0, log=True)}, r"parameter 'lr': a log-scale range needs low > 0, got low=0.0"),
        ({"width": Int(-1, 8, log=True)}, r"parameter 'width': a log-scale range needs low > 0"),
        ({"act": Choice([])}, r"parameter 'act': Choice needs at least one option"),
        ({"act": Choice(["a", "a"])}, r"parameter 'act': Choice options must be distinct"),
        ({"act": Choice([{"x": 1}])}, r"parameter 'act': Choice option \{'x': 1\} is not a str"),
        ({"opt": {"type": "weird"}}, r"parameter 'opt': unknown type 'weird'; use one of choice, float, int"),
        ({"opt": {"type": "float", "low": 0, "high": 1, "step": 2}}, r"parameter 'opt': unknown field\(s\) step"),
        ({"opt": {"type": "int", "low": 0}}, r"parameter 'opt': missing field\(s\) high"),
        (
            {"lr": 0.01},
            r"parameter 'lr': expected a mapping such as .* \(in Python: poptrain.Float\(0.001, 0.1\), Int or Choice\), got 0.01",
        ),
        ({"lr": "Float(0, 1)"}, r"parameter 'lr': expected a mapping such as .*, got 'Float\(0, 1\)'"),
        ({"lr": Float(0.0, float("inf"))}, r"parameter 'lr': Float high must be finite"),
        ({"lr": Float("0", 1.0)}, r"parameter 'lr': Float low must be a number"),
        ({"n": Int(0.5, 3)}, r"parameter 'n': Int low must be a whole number"),
        ({}, r"the search space is empty"),
        ({"": Float(0.0, 1.0)}, r"parameter names must be non-empty strings"),
    ],
)
def test_space_errors_name_the_parameter(spec, message):
    with pytest.raises(SearchSpaceError, match=message) as info:
        SearchSpace(spec)
    assert isinstance(info.value, ValueError)


def test_space_must_be_a_mapping():
    with pytest.raises(SearchSpaceError, match="must be a mapping"):
        SearchSpace([Float(0.0, 1.0)])


def test_validate():
    space = SearchSpace({"lr": Float(0.0, 1.0), "n": Int(1, 3), "act": Choice(["a", "b"])})
    assert space.validate({"n": 2, "act": "a", "lr": 0.5}) == {"lr": 0.5, "n": 2, "act": "a"}
    with pytest.raises(SearchSpaceError, match=r"missing \['act'\], unexpected \['x'\]"):
        space.validate({"lr": 0.5, "n": 2, "x": 1})
    with pytest.raises(SearchSpaceError, match=r"parameter 'n': value 4 is outside"):
        space.validate({"lr": 0.5, "n": 4, "act": "a"})
    with pytest.raises(SearchSpaceError, match=r"parameter 'n': value 2.0 is outside"):
        space.validate({"lr": 0.5, "n": 2.0, "act": "a"})


# --- JSON form --------------------------------------------------------------------------------
def test_to_dict_round_trip():
    space = SearchSpace(
        {
            "lr": Float(1e-4, 1e-1, log=True),
            "momentum": Float(0.0, 0.99),
            "layers": Int(1, 8),
            "batch": Int(16, 512, log=True),
            "act": Choice(["relu", "tanh", None]),
            "width": Choice([32, 64, 128], ordered=True),
        }
    )
    as_dict = space.to_dict()
    assert as_dict["lr"] == {"type": "float", "low": 1e-4, "high": 1e-1, "log": True}
    assert as_dict["width"] == {"type": "choice", "options": [32, 64, 128], "ordered": True}
    again = SearchSpace(as_dict)
    assert again == space and again.to_dict() == as_dict
    assert list(again) == list(space)
    assert all(type(again[name]) is type(space[name]) for name in space)
    assert again.sample(rng(9)) == space.sample(rng(9))
    assert SearchSpace(space) == space
    assert space != SearchSpace({"lr": Float(1e-4, 1e-1)})
    assert math.isclose(again["lr"].perturb(0.01, 1.2, rng())[0], 0.012)
