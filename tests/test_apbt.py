"""Augmented PBT: widths as a hyperparameter, weight inheritance across a mutation, size fitness,
and the paper's experiments."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from experiments import apbt

import poptrain
from poptrain.apbt import Topology, masked_mlp, model_view, size_fitness
from poptrain.errors import ConfigError, MetricError, SearchSpaceError
from poptrain.vectorized import SGD, VectorizedTrainable


# --- the Widths parameter -------------------------------------------------------------------
def test_widths_sample_perturb_resample_and_round_trip() -> None:
    space = poptrain.SearchSpace({"widths": poptrain.Widths(1, 10, layers=2)})
    rng = np.random.default_rng(0)
    drawn = [space.sample(rng)["widths"] for _ in range(200)]
    assert all(len(w) == 2 and all(1 <= u <= 10 for u in w) for w in drawn)
    assert {u for w in drawn for u in w} == set(range(1, 11))
    param = poptrain.Widths(1, 10, layers=2)
    moves = set()
    for _ in range(200):
        new, operation = param.perturb([1, 10], 1.2, rng)
        assert 1 <= new[0] <= 2 and 9 <= new[1] <= 10  # one unit at most, clipped at the bounds
        moves.add(tuple(new))
        assert operation == ("unchanged" if new == [1, 10] else f"[1, 10] -> {new}")
    assert moves == {(1, 10), (2, 10), (1, 9), (2, 9)}
    assert poptrain.SearchSpace(space.to_dict()) == space
    assert param.contains([3, 4]) and not param.contains([3]) and not param.contains([0, 4]) and not param.contains(3)


@pytest.mark.parametrize(
    ("definition", "message"),
    [
        (poptrain.Widths(0, 10), "Widths low must be at least 1"),
        (poptrain.Widths(1, 10, layers=0), "Widths layers must be"),
        (poptrain.Widths(5, 2), "low \\(5\\) must be below high"),
    ],
)
def test_bad_widths_name_the_problem(definition: poptrain.Widths, message: str) -> None:
    with pytest.raises(SearchSpaceError, match=message):
        poptrain.SearchSpace({"widths": definition})


# --- growing and shrinking with inherited weights ------------------------------------------------
def stacked(module: torch.nn.Module) -> tuple[dict, dict]:
    params = {n: p.data.unsqueeze(0) for n, p in module.named_parameters()}
    buffers = {n: b.unsqueeze(0) for n, b in module.named_buffers()}
    return params, buffers


def no_state(_: str) -> list[torch.Tensor]:
    return []


def test_grow_keeps_the_function_and_the_new_unit_can_learn() -> None:
    torch.manual_seed(0)
    model = masked_mlp(4, 3, 10, layers=2)
    params, buffers = stacked(model)
    topology = Topology(model)
    generator = torch.Generator().manual_seed(1)
    topology.apply(params, buffers, no_state, 0, {"widths": [3, 2]}, generator, initial=True)
    x = torch.randn(16, 4)
    before = model(x).detach()
    topology.apply(params, buffers, no_state, 0, {"widths": [6, 5]}, generator)
    assert topology.widths(buffers).tolist() == [[6, 5]]
    torch.testing.assert_close(model(x).detach(), before, rtol=0, atol=0)  # exactly the same function
    assert model[0].weight[3:6].abs().sum() > 0  # new units have fresh incoming weights ...
    assert model[3].weight[:, 3:6].abs().sum() > 0  # ... including from the first layer's new units
    assert model[6].weight[:, 2:5].abs().sum() == 0  # ... and start with no say in the output
    assert model[0].weight[6:].abs().sum() == 0 and model[6].weight[:, 5:].abs().sum() == 0  # the rest stay off


def test_shrink_removes_the_unit_that_changes_the_output_least() -> None:
    model = masked_mlp(4, 3, 6)
    with torch.no_grad():
        model[0].weight.zero_()
        model[0].bias.zero_()  # every hidden unit outputs sigmoid(0) = 0.5 whatever the input
        model[3].weight.copy_(
            torch.tensor([[3.0, -1.0, 0.2, 2.0, -0.5, 1.5]] * 3) * torch.tensor([[1.0], [0.5], [-1.0]])
        )
    params, buffers = stacked(model)
    topology = Topology(model)
    x = torch.randn(8, 4)
    before = model(x).detach()
    changes = []
    for unit in range(6):  # what removing each unit alone would do
        trial = masked_mlp(4, 3, 6)
        trial.load_state_dict(model.state_dict())
        with torch.no_grad():
            trial[2].mask[unit] = 0
        with torch.no_grad():
            changes.append(float((trial(x) - before).norm()))
    removed = topology.shrink(topology.layers[0], params, buffers, no_state, 0)
    assert removed == int(np.argmin(changes)) == 2
    assert buffers["2.mask"][0].tolist() == [1, 1, 0, 1, 1, 1]
    assert model[3].weight[:, 2].abs().sum() == 0 and model[0].weight[2].abs().sum() == 0
    with torch.no_grad():
        assert float((model(x) - before).norm()) == pytest.approx(min(changes))


def test_mutations_resize_optimizer_state_and_pruned_units_stay_exactly_zero() -> None:
    x = torch.eye(8)
    spec = VectorizedTrainable(
        lambda: masked_mlp(8, 8, 10),
        (x, x),
        F.binary_cross_entropy_with_logits,
        lambda predict: {"loss": ((torch.sigmoid(predict(x)) - x) ** 2).mean((1, 2))},
        optimizer=SGD(momentum=0.9, weight_decay=1e-3),
        batch_size=8,
        batches_per_step=10,
        device="cpu",
    )
    space = {"lr": poptrain.Float(0.1, 2.0, log=True), "widths": poptrain.Widths(1, 10)}
    run = poptrain.create_run(
        name="apbt",
        space=space,
        population_size=12,
        metric="loss",
        mode="min",
        storage="memory",
        ready=poptrain.every(2),
        exploit=poptrain.truncation(0.25),
        explore=poptrain.perturb(),
    )
    run.optimize(spec, steps=10, executor="vectorized")
    mutated = [g for g in run.lineage() if "->" in g.operations.get("widths", "")]
    assert mutated  # some members grew or shrank along the way
    members = {m.slot: m for m in run.members()}
    for member in members.values():
        state = run.load_state(run.storage.get_checkpoint(member.checkpoint_id))
        mask = state["model"]["2.mask"]
        assert int(mask.sum()) == member.hparams["widths"][0]
        off = mask == 0
        assert state["model"]["0.weight"][off].abs().sum() == 0 and state["model"]["0.bias"][off].abs().sum() == 0
        assert state["model"]["3.weight"][:, off].abs().sum() == 0
        momentum = state["optimizer"]["state"]
        assert (
            momentum[0]["momentum_buffer"][off].abs().sum() == 0
            and momentum[2]["momentum_buffer"][:, off].abs().sum() == 0
        )
    # the sequential executor applies the same widths to a member trained alone
    sequential = poptrain.create_run(
        name="apbt-seq",
        space=space,
        population_size=4,
        metric="loss",
        mode="min",
        storage="memory",
        ready=poptrain.every(2),
        explore=poptrain.perturb(),
    )
    sequential.optimize(spec, steps=6, executor="sequential")
    for member in sequential.members():
        state = sequential.load_state(sequential.storage.get_checkpoint(member.checkpoint_id))
        assert int(state["model"]["2.mask"].sum()) == member.hparams["widths"][0]


# --- fitness --------------------------------------------------------------------------------
def test_size_fitness_is_the_papers_ratio() -> None:
    model = masked_mlp(4, 3, 10)
    params, buffers = stacked(model)
    Topology(model).apply(params, buffers, no_state, 0, {"widths": [6]}, torch.Generator(), initial=True)
    view = model_view(model, buffers, 1)
    assert view.weights.tolist() == [42.0] and view.biases.tolist() == [9.0] and view.widths.tolist() == [[6]]
    fitness = size_fitness("acc")({"acc": torch.tensor([0.95])}, view)["fitness"]
    assert float(fitness) == pytest.approx(1.09**95 / 1.02**42)
    with_biases = size_fitness("acc", size="parameters", acc_base=1.1, size_base=1.05, name="f")(
        {"acc": torch.tensor([0.5])}, view
    )
    assert float(with_biases["f"]) == pytest.approx(1.1**50 / 1.05**51)
    with pytest.raises(MetricError, match="size_fitness needs the metric 'acc'"):
        size_fitness("acc")({"val_acc": torch.tensor([1.0])}, view)
    with pytest.raises(ConfigError, match="size must be 'weights' or 'parameters'"):
        size_fitness(size="neurons")


def test_fitness_trades_accuracy_against_size() -> None:
    model = masked_mlp(8, 8, 10)
    params, buffers = stacked(model)
    fitness = size_fitness("acc")
    scores = {}
    for width, acc in ((2, 1.0), (3, 1.0), (1, 0.5)):
        Topology(model).apply(params, buffers, no_state, 0, {"widths": [width]}, torch.Generator(), initial=True)
        scores[width] = float(fitness({"acc": torch.tensor([acc])}, model_view(model, buffers, 1))["fitness"])
    assert scores[2] > scores[3] > scores[1]  # smaller at equal accuracy; an exact network beats a tiny wrong one


# --- the paper's experiments ----------------------------------------------------------------------
def test_data_of_the_three_problems() -> None:
    iris, tennis, identity = apbt.problem("iris"), apbt.problem("tennis"), apbt.problem("identity")
    assert (len(iris.x_test), len(iris.x_train), len(iris.x_val)) == (50, 80, 100)
    assert torch.bincount(iris.y_test).tolist() == [16, 18, 16]  # the paper's test rows
    assert (tennis.x_train.shape, tennis.x_test.shape) == ((10, 10), (4, 10))
    assert tennis.x_train.sum(1).tolist() == [4.0] * 10  # one value per attribute
    assert torch.equal(identity.x_train, torch.eye(8))
    assert (iris.population, iris.ready_steps * iris.epochs_per_step, iris.steps * iris.epochs_per_step) == (
        80,
        220,
        3000,
    )
    assert (identity.population, identity.ready_steps * identity.epochs_per_step, identity.epochs) == (600, 400, 8000)
    with pytest.raises(ConfigError, match="unknown APBT problem 'mnist'"):
        apbt.problem("mnist")


def test_iris_from_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from poptrain.cli.main import main

    code = main(
        [
            "run",
            "experiments.apbt_iris",
            "--root",
            str(tmp_path),
            "--population",
            "16",
            "--steps",
            "33",
            "--quiet",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "Best member" in out and "test_acc" in out and "widths" in out


def test_trials_write_the_table_the_results_and_the_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = apbt.main(["tennis", "--trials", "1", "--scale", "0.1", "--root", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0
    folder = tmp_path / "tennis"
    table = (folder / "table.md").read_text()
    assert "| 0 | 96.72% / 72 / 10,6,2 | 97.14% / 120 / 10,10,2 |" in table and "Leave-one-out accuracy" in table
    [trial] = json.loads((folder / "results.json").read_text())
    assert 0.0 <= trial["leave_one_out_acc"] <= 1.0 and trial["picks"]["best"]["topology"].startswith("10,")
    assert (folder / "schedules.png").stat().st_size > 10_000
    assert "Saved" in out


@pytest.mark.slow
def test_identity_finds_an_exact_network_of_at_most_three_units(tmp_path: Path) -> None:
    """The paper's full Identity run (k=600, 8000 epochs): its best collapsed to 8-1-8 at 55%."""
    run = apbt.run_trial("identity", 0, tmp_path)
    picks = apbt.fittest_and_most_accurate(run, apbt.problem("identity"))
    best = picks["best"]
    assert best["acc"] == 1.0 and best["bit_acc"] == 1.0  # all 8 patterns reproduced exactly
    assert best["weights"] <= 48 and best["topology"] in ("8,1,8", "8,2,8", "8,3,8")


@pytest.mark.slow
def test_iris_held_out_accuracy_beats_the_paper_with_a_small_network(tmp_path: Path) -> None:
    run = apbt.run_trial("iris", 0, tmp_path)
    best = apbt.fittest_and_most_accurate(run, apbt.problem("iris"))["best"]
    assert best["acc"] >= 0.967 and best["weights"] <= 63
    assert math.isfinite(best["fitness"])
