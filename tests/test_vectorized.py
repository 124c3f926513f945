"""The vectorized executor: the same run as the sequential executor, computed as one program."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import poptrain
from poptrain.errors import ConfigError, MetricError, ResourceError
from poptrain.executors.vectorized import VectorizedExecutor
from poptrain.experiments.digits import load_split
from poptrain.vectorized import SGD, Adam, AdamW, Dropout, VectorizedTrainable
from poptrain.vectorized.optim import VectorizedOptimizer

DATA = load_split()
X, Y = DATA["x_train"][:256], DATA["y_train"][:256]


def evaluate(predict: Any) -> dict[str, torch.Tensor]:
    logits = predict(DATA["x_val"])
    targets = DATA["y_val"].expand(logits.shape[0], -1)
    return {
        "val_acc": (logits.argmax(-1) == targets).float().mean(-1),
        "val_loss": F.cross_entropy(logits.transpose(1, 2), targets, reduction="none").mean(-1),
    }


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10))


class Residual(nn.Module):
    """Not a Sequential: computed with vmap."""

    def __init__(self) -> None:
        super().__init__()
        self.inp, self.mid, self.out = nn.Linear(64, 24), nn.Linear(24, 24), nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.inp(x))
        return self.out(h + torch.relu(self.mid(h)))


SGD_SPACE = {
    "lr": poptrain.Float(1e-3, 0.3, log=True),
    "momentum": poptrain.Float(0.0, 0.95),
    "weight_decay": poptrain.Float(1e-6, 1e-2, log=True),
    "grad_clip": poptrain.Float(0.5, 5.0),
    "l2": poptrain.Float(1e-6, 1e-3, log=True),
    "l1": poptrain.Float(1e-7, 1e-5, log=True),
}
ADAM_SPACE = {
    "lr": poptrain.Float(1e-4, 1e-2, log=True),
    "beta1": poptrain.Float(0.5, 0.95),
    "beta2": poptrain.Float(0.9, 0.999),
    "weight_decay": poptrain.Float(1e-6, 1e-2, log=True),
    "grad_clip": poptrain.Float(0.5, 5.0),
}


def spec(model: Any = mlp, optimizer: Any = "sgd", **kwargs: Any) -> VectorizedTrainable:
    settings = {"data": (X, Y), "loss": F.cross_entropy, "evaluate": evaluate, "batch_size": 32, "device": "cpu"}
    settings.update(kwargs)
    return VectorizedTrainable(model, optimizer=optimizer, **settings)


def make_run(space: dict, name: str = "vec", population: int = 4, **kwargs: Any) -> poptrain.Run:
    settings: dict[str, Any] = {
        "metric": "val_loss",
        "mode": "min",
        "storage": "memory",
        "ready": poptrain.every(2),
        "exploit": poptrain.truncation(0.25),
        "explore": poptrain.perturb((0.8, 1.2), resample_probability=0.25),
    }
    settings.update(kwargs)
    return poptrain.create_run(name=name, space=space, population_size=population, **settings)


def lineage(run: poptrain.Run) -> list[tuple]:
    steps = {c.id: (c.slot, c.step) for c in run.storage.get_checkpoints(run.record.id)}
    return [
        (
            g.slot,
            g.number,
            g.start_step,
            g.kind,
            g.donor,
            steps.get(g.loaded_checkpoint_id),
            tuple(sorted(g.hparams.items())),
            tuple(sorted(g.operations.items())),
        )
        for g in run.lineage()
    ]


def final_states(run: poptrain.Run) -> dict[int, Any]:
    newest: dict[int, Any] = {}
    for ckpt in run.storage.get_checkpoints(run.record.id):
        if ckpt.step == max(c.step for c in run.storage.get_checkpoints(run.record.id)):
            newest[ckpt.slot] = run.load_state(ckpt)
    return newest


def both(
    make_spec: Any, space: dict, steps: int = 8, **run_kwargs: Any
) -> tuple[poptrain.Run, poptrain.Run, VectorizedExecutor]:
    sequential = make_run(space, "seq", **run_kwargs).optimize(make_spec(), steps=steps, executor="sequential")
    executor = VectorizedExecutor()
    vectorized = make_run(space, "vec", **run_kwargs).optimize(make_spec(), steps=steps, executor=executor)
    return sequential, vectorized, executor


def assert_same_run(sequential: poptrain.Run, vectorized: poptrain.Run, tolerance: float = 1e-5) -> None:
    assert lineage(vectorized) == lineage(sequential)
    expected = {(s.slot, s.step): s.value for s in sequential.scores()}
    got = {(s.slot, s.step): s.value for s in vectorized.scores()}
    assert got.keys() == expected.keys()
    assert max(abs(got[k] - expected[k]) for k in got) < tolerance
    seq_states, vec_states = final_states(sequential), final_states(vectorized)
    assert seq_states.keys() == vec_states.keys() == set(range(len(sequential.members())))
    for slot, state in seq_states.items():
        for name, tensor in state["model"].items():
            torch.testing.assert_close(vec_states[slot]["model"][name], tensor, rtol=1e-4, atol=1e-5)
        for index, entry in state["optimizer"]["state"].items():
            for key, value in entry.items():
                torch.testing.assert_close(
                    vec_states[slot]["optimizer"]["state"][index][key], value, rtol=1e-4, atol=1e-5
                )


@pytest.mark.parametrize(
    ("optimizer", "space"),
    [(SGD(nesterov=True), SGD_SPACE), (SGD(), SGD_SPACE), (Adam(), ADAM_SPACE), (AdamW(), ADAM_SPACE)],
    ids=["sgd-nesterov", "sgd", "adam", "adamw"],
)
def test_vectorized_population_matches_members_trained_one_by_one(optimizer: Any, space: dict) -> None:
    sequential, vectorized, executor = both(lambda: spec(optimizer=optimizer), space)
    assert executor.path == "batched-matmul"
    kinds = {g.kind for g in vectorized.lineage()}
    assert {"exploit", "init"} <= kinds  # across an exploit ...
    assert any(
        "*" in op or "resample" in op for g in vectorized.lineage() for op in g.operations.values()
    )  # ... and an explore
    assert_same_run(sequential, vectorized)


def test_any_module_is_vectorized_with_vmap() -> None:
    sequential, vectorized, executor = both(lambda: spec(model=Residual), SGD_SPACE)
    assert executor.path == "vmap"
    assert_same_run(sequential, vectorized)


@pytest.mark.parametrize("model", [mlp, Residual], ids=["batched-matmul", "vmap"])
def test_evaluate_gets_outputs_contiguous_in_memory(model: Any) -> None:
    # a reduction over the last dimension (argmax over classes) is ~4x slower over a strided one
    seen: list[bool] = []

    def recording(predict: Any) -> dict[str, torch.Tensor]:
        logits = predict(DATA["x_val"])
        seen.append(logits.is_contiguous() and logits.shape[1:] == (len(DATA["x_val"]), 10))
        return evaluate(lambda x: logits)

    run = make_run(SGD_SPACE, population=3)
    run.optimize(spec(model=model, evaluate=recording), steps=2, executor="vectorized")
    run.close()
    assert seen and all(seen)


def test_user_hyperparameters_reach_the_loss() -> None:
    def smoothed(output: torch.Tensor, target: torch.Tensor, hparams: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.cross_entropy(output, target, label_smoothing=0.0) * hparams["scale"] + hparams["scale"] ** 2

    space = {"lr": poptrain.Float(1e-3, 0.3, log=True), "scale": poptrain.Float(0.5, 2.0)}
    sequential, vectorized, _ = both(lambda: spec(loss=smoothed), space)
    assert_same_run(sequential, vectorized)
    scales = {m.slot: m.hparams["scale"] for m in vectorized.members()}
    assert len(set(scales.values())) > 1


def test_data_from_a_loader() -> None:
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, Y), batch_size=32, shuffle=False)
    sequential, vectorized, _ = both(lambda: spec(data=loader, batches_per_step=5), SGD_SPACE)
    assert_same_run(sequential, vectorized)


@pytest.mark.parametrize("synchronous", [False, True], ids=["asynchronous", "synchronous"])
def test_decisions_are_the_sequential_executors_given_the_same_scores(synchronous: bool) -> None:
    space = {"lr": poptrain.Float(1e-3, 0.3, log=True), "momentum": poptrain.Float(0.0, 0.9)}
    runs = []
    for executor in ("sequential", "vectorized"):
        run = make_run(
            space,
            executor,
            population=8,
            synchronous=synchronous,
            exploit=poptrain.tournament(),
            explore=poptrain.resample(),
        )
        runs.append(run.optimize(spec(evaluate=_output_scale), steps=6, executor=executor))
    assert lineage(runs[1]) == lineage(runs[0])
    assert sum(g.kind == "exploit" for g in runs[0].lineage()) >= 3


def _output_scale(predict: Any) -> dict[str, torch.Tensor]:
    """A score that depends on each member's weights, so later scores agree only if the
    decisions (and the copies they made) agree."""
    out = predict(DATA["x_val"][:8])
    return {"val_loss": out.abs().mean(dim=(1, 2))}


def test_population_checkpoint_reproduces_scores_and_resumes(tmp_path: Path) -> None:
    space = SGD_SPACE

    def fresh(name: str) -> poptrain.Run:
        return make_run(space, name, population=6, storage=None, root=tmp_path)

    whole = fresh("whole").optimize(spec(), steps=8, executor="vectorized")

    class Crash(RuntimeError):
        pass

    crashing = spec()
    calls = {"n": 0}

    def evaluate_then_crash(predict: Any) -> dict[str, torch.Tensor]:
        calls["n"] += 1
        if calls["n"] == 5:  # after the ready points at steps 2 and 4, in step 5
            raise Crash("power cut")
        return evaluate(predict)

    crashing.evaluate = evaluate_then_crash
    with pytest.raises(Crash):
        fresh("crash").optimize(crashing, steps=8, executor="vectorized")
    resumed = poptrain.load_run("crash", root=tmp_path)
    assert {m.last_ready_step for m in resumed.members()} == {4}
    resumed.optimize(spec(), steps=8, executor="vectorized")
    assert lineage(resumed) == lineage(whole)
    expected = {(s.slot, s.step): s.value for s in whole.scores()}
    got = {(s.slot, s.step): s.value for s in resumed.scores()}
    assert got.keys() == expected.keys() and max(abs(got[k] - expected[k]) for k in got) < 1e-5

    # one file per round, shared by the members' checkpoint records
    checkpoints = whole.storage.get_checkpoints(whole.record.id)
    by_step: dict[int, set[str]] = {}
    for ckpt in checkpoints:
        by_step.setdefault(ckpt.step, set()).add(ckpt.uri)
    assert all(len(uris) == 1 for uris in by_step.values()) and sorted(by_step) == [2, 4, 6, 8]
    files = list((tmp_path / "whole" / "checkpoints").rglob("*.pt"))
    assert 1 <= len(files) <= 3  # older rounds collected

    # the best member's checkpoint is an ordinary module state that scores what was recorded
    best = whole.best()
    model = mlp()
    model.load_state_dict(whole.load_state(best.checkpoint)["model"])
    with torch.no_grad():
        loss = F.cross_entropy(model(DATA["x_val"]), DATA["y_val"]).item()
    assert loss == pytest.approx(best.score, abs=1e-5)
    # and a sequential executor can continue a vectorized run
    more = poptrain.load_run("whole", root=tmp_path).optimize(spec(), steps=10, executor="sequential")
    assert {m.step for m in more.members()} == {10}


def test_chunks_compute_the_same_as_one_batch() -> None:
    space = SGD_SPACE
    one = make_run(space, "one", population=7).optimize(spec(), steps=4, executor=VectorizedExecutor())
    executor = VectorizedExecutor(chunk_size=3)
    chunked = make_run(space, "chunked", population=7).optimize(spec(), steps=4, executor=executor)
    assert executor.memory is not None and executor.memory.chunks == 3
    assert_same_run(one, chunked)


def test_a_population_that_cannot_fit_stops_before_training() -> None:
    run = make_run(SGD_SPACE, population=1000)
    with pytest.raises(ResourceError, match=r"population of 1000 needs .* MiB .* budget is 1\.0 MiB"):
        run.optimize(spec(memory_budget=2**20), steps=4, executor="vectorized")
    assert run.scores() == [] and {m.step for m in run.members()} == {0}


def test_activations_that_do_not_fit_are_computed_in_chunks() -> None:
    executor = VectorizedExecutor(memory_budget=3 * 2**20)
    run = make_run(SGD_SPACE, population=64).optimize(spec(), steps=2, executor=executor)
    assert executor.memory is not None and executor.memory.chunks > 1
    assert {m.step for m in run.members()} == {2}


def test_dropout_rate_is_a_per_member_hyperparameter() -> None:
    def model() -> nn.Module:
        return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), Dropout(hparam="dropout"), nn.Linear(32, 10))

    space = {"lr": poptrain.Float(1e-2, 0.2, log=True), "dropout": poptrain.Float(0.0, 0.6)}
    run = make_run(space, population=6).optimize(spec(model=model), steps=4, executor="vectorized")
    for slot, state in final_states(run).items():
        member = {m.slot: m for m in run.members()}[slot]
        assert float(state["model"]["2.rate"]) == pytest.approx(member.hparams["dropout"], abs=1e-6)
    assert all(math.isfinite(s.value) for s in run.scores())


def test_dropout_does_not_depend_on_what_ran_before_in_the_process() -> None:
    def model() -> nn.Module:
        return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), Dropout(0.3, hparam="dropout"), nn.Linear(32, 10))

    space = {"lr": poptrain.Float(1e-2, 0.2, log=True), "dropout": poptrain.Float(0.2, 0.6)}
    curves = []
    for burn in (0, 7):
        torch.rand(burn)  # other code drew from torch's global generator in between
        run = make_run(space, name=f"drop{burn}", population=4, seed=5).optimize(
            spec(model=model), steps=4, executor="vectorized"
        )
        curves.append([(s.slot, s.step, s.value) for s in run.scores()])
    assert curves[0] == curves[1]


def test_a_member_that_diverges_is_replaced_at_its_next_ready_point() -> None:
    def poisoned(output: torch.Tensor, target: torch.Tensor, hparams: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.cross_entropy(output, target) / (1 - hparams["poison"])  # poison 1: an infinite loss

    space = {"lr": poptrain.Float(0.01, 0.1), "poison": poptrain.Float(0.0, 1.0)}
    initial = [{"lr": 0.05, "poison": 0.0}] * 3 + [{"lr": 0.05, "poison": 1.0}]  # the last decides after the others
    run = make_run(space, population=4, exploit=None, explore=poptrain.perturb((0.8, 1.2)), initial_hparams=initial)
    run.optimize(spec(loss=poisoned), steps=6, executor="vectorized")  # explore-only: nobody would copy
    early = [s.value for s in run.scores() if s.slot == 3 and s.step <= 2]
    assert all(math.isnan(v) for v in early)
    replaced = [g for g in run.lineage() if g.operations.get("replaced") == "score not finite"]
    assert [(g.slot, g.start_step, g.kind) for g in replaced] == [(3, 2, "replace")] and replaced[0].donor != 3
    late = [s.value for s in run.scores() if s.slot == 3 and s.step > 2]
    assert len(late) == 4 and all(math.isfinite(v) for v in late)


def test_random_search_retires_a_member_that_diverges() -> None:
    """Random search stays random search on the vectorized executor too: a member whose score is
    not finite is retired (state failed, trained no more), not replaced by a copy of the best."""

    def poisoned(output: torch.Tensor, target: torch.Tensor, hparams: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.cross_entropy(output, target) / (1 - hparams["poison"])

    space = {"lr": poptrain.Float(0.01, 0.1), "poison": poptrain.Float(0.0, 1.0)}
    initial = [{"lr": 0.05, "poison": 0.0}] * 3 + [{"lr": 0.05, "poison": 1.0}]
    run = make_run(space, population=4, exploit=None, explore=None, initial_hparams=initial)
    run.optimize(spec(loss=poisoned), steps=6, executor="vectorized")
    members = run.members()
    assert [m.state for m in members] == ["finished"] * 3 + ["retired"]
    assert [m.step for m in members] == [6, 6, 6, 0] and members[3].failures == 1
    assert all(math.isfinite(s.value) for s in run.scores()) and not [s for s in run.scores() if s.slot == 3]
    assert [g.kind for g in run.lineage() if g.number > 0] == []
    assert run.refresh().record.state == "finished"


def test_executor_needs_a_vectorized_trainable() -> None:
    from poptrain.experiments.toy import ToyQuadratic

    run = make_run({"h": poptrain.Float(0, 1)}, population=2)
    with pytest.raises(ConfigError, match="executor 'vectorized' trains a poptrain.VectorizedTrainable"):
        run.optimize(ToyQuadratic, steps=2, executor="vectorized")
    assert run.refresh().record.state == "created"  # refused before anything was written


def test_bad_descriptions_get_clear_errors() -> None:
    with pytest.raises(ConfigError, match="optimizer 'rmsprop' is not one poptrain vectorizes"):
        spec(optimizer="rmsprop")
    with pytest.raises(ConfigError, match="batch_size must be a whole number"):
        spec(batch_size=0)
    with pytest.raises(ConfigError, match="same, non-zero length"):
        spec(data=(X, Y[:10])).__call__().setup({"lr": 0.1}, poptrain.TrainContext("r", 0, 0))
    run = make_run({"lr": poptrain.Float(1e-3, 0.1), "act": poptrain.Choice(["relu", "tanh"])}, population=2)
    with pytest.raises(ConfigError, match="hyperparameter 'act' = '(relu|tanh)' is not a number"):
        run.optimize(spec(), steps=2, executor="vectorized")
    run = make_run(SGD_SPACE, "short", population=3)
    with pytest.raises(MetricError, match="returned 1 values for 'val_loss' and a population of 3"):
        run.optimize(spec(evaluate=lambda predict: {"val_loss": torch.zeros(1)}), steps=2, executor="vectorized")
    run = make_run(SGD_SPACE, "nometric", population=2)
    with pytest.raises(MetricError, match="without 'val_loss'"):
        run.optimize(spec(evaluate=lambda predict: {"acc": torch.zeros(2)}), steps=2, executor="vectorized")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_without_a_gpu_is_a_clear_error() -> None:
    run = make_run(SGD_SPACE, population=2)
    with pytest.raises(ConfigError, match="no CUDA GPU is available; use device='cpu' or 'auto'"):
        run.optimize(spec(device="cuda"), steps=2, executor="vectorized")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_population_matches_cpu() -> None:  # pragma: no cover - runs where a GPU is lent
    cpu = make_run(SGD_SPACE, "cpu").optimize(spec(), steps=4, executor=VectorizedExecutor(device="cpu"))
    gpu = make_run(SGD_SPACE, "gpu").optimize(spec(), steps=4, executor=VectorizedExecutor(device="cuda"))
    assert lineage(gpu) == lineage(cpu)


def stacked_mlp(size: int) -> tuple[Any, dict[str, torch.Tensor], dict[str, torch.Tensor], list[nn.Module]]:
    """A StackedModel over ``size`` members of an MLP with every hand-written backward (ReLU,
    Sigmoid, Tanh), dropout after ReLU and after a Linear, and an activation left to autograd."""
    from poptrain.vectorized.model import StackedModel, stack_states

    def make() -> nn.Module:
        return nn.Sequential(
            nn.Flatten(),
            nn.Linear(64, 24),
            nn.ReLU(),
            Dropout(0.3),
            nn.Linear(24, 16),
            Dropout(0.5),
            nn.Sigmoid(),
            nn.Linear(16, 12),
            nn.Tanh(),
            nn.GELU(),
            nn.Linear(12, 10),
        )

    torch.manual_seed(0)
    modules = [make() for _ in range(size)]
    params, buffers = stack_states(modules)
    buffers = {k: v.clone() for k, v in buffers.items()}
    buffers["3.rate"] = torch.tensor([0.0, 0.3, 0.6][:size])
    model = StackedModel(modules[0])
    assert model.path == "batched-matmul"
    return model, params, buffers, modules


def test_written_out_gradients_equal_autograd_through_the_same_forward_pass() -> None:
    model, params, buffers, _ = stacked_mlp(3)
    x = X[:40].view(40, 8, 8)
    torch.manual_seed(5)  # the dropout masks: both passes draw the same bytes in the same order
    written = model.gradients(params, buffers, x, lambda output: 2 * output)  # loss: sum of squares
    leaves = {k: v.clone().requires_grad_() for k, v in params.items()}
    torch.manual_seed(5)
    (model.forward(leaves, buffers, x, train=True) ** 2).sum().backward()
    assert written.keys() == leaves.keys()
    for name, leaf in leaves.items():
        assert leaf.grad is not None
        torch.testing.assert_close(written[name], leaf.grad, rtol=1e-5, atol=1e-6)
    assert not torch.equal(written["1.weight"][0], written["1.weight"][1])  # a per-member dropout rate


def test_dropout_mask_keeps_a_unit_when_its_byte_reaches_the_rate() -> None:
    from poptrain.vectorized.model import dropout_mask

    hidden = torch.empty(4, 7, 33)
    rate = torch.tensor([0.0, 0.25, 0.5, 0.7]).view(-1, 1, 1)
    torch.manual_seed(11)
    mask = dropout_mask(hidden, rate)
    torch.manual_seed(11)
    count = hidden.numel()
    bits = torch.empty((count + 7) // 8, dtype=torch.int64).random_(-(2**63), 2**63 - 1)
    draws = bits.view(torch.uint8)[:count].view(hidden.shape)
    threshold = torch.round(rate * 256).clamp(0, 255)
    expected = (draws >= threshold.to(torch.uint8)) * (256 / (256 - threshold))
    assert mask.dtype == torch.float32 and torch.equal(mask, expected)
    assert torch.equal(mask[0], torch.ones(7, 33))  # rate 0 keeps every unit, unscaled
    kept = (mask[3] > 0).float().mean().item()
    assert 0.2 < kept < 0.4


@pytest.mark.parametrize("rows", [1, 16, 37, 359])
def test_evaluation_of_any_number_of_inputs_is_each_members_own_output(rows: int) -> None:
    model, params, buffers, modules = stacked_mlp(3)
    x = DATA["x_val"][:rows].view(rows, 8, 8)
    with torch.no_grad():
        output = model.forward(params, buffers, x, train=False)
        assert output.shape == (3, rows, 10)
        for member, module in enumerate(modules):
            torch.testing.assert_close(output[member], module.eval()(x), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(model.forward(params, buffers, x[:1], train=False), output[:, :1])


@pytest.mark.parametrize(
    "optimizer",
    [SGD(momentum=0.9, weight_decay=0.01), SGD(momentum=0.9, nesterov=True), Adam(weight_decay=0.01), AdamW()],
)
def test_an_update_with_prepared_factors_is_the_update_without(optimizer: VectorizedOptimizer) -> None:
    """A step prepares the optimizer's per-member factors once for all its batches; each update
    is then the one computed from the hyperparameters directly."""
    gen = torch.Generator().manual_seed(0)
    params = [torch.randn(4, 3, 5, generator=gen), torch.randn(4, 3, generator=gen)]
    hp = {name: torch.rand(4, generator=gen) * 0.1 for name in optimizer.HPARAMS}
    hp.update({k: torch.full((4,), v) for k, v in (("beta1", 0.9), ("beta2", 0.999)) if k in hp})
    direct = [p.clone() for p in params]
    state_direct = optimizer.init_state(direct)
    state_prepared = optimizer.init_state(params)
    prepared = optimizer.prepare(hp, params)
    for _ in range(3):
        grads = [torch.randn(p.shape, generator=gen) for p in params]
        optimizer.update(direct, [g.clone() for g in grads], state_direct, hp)
        optimizer.update(params, grads, state_prepared, hp, prepared=prepared)
    for a, b in zip(direct, params, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
