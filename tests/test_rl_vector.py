"""Deep Double SARSA with the population as one batched program (experiments.rl_vector): the
batched networks and updates equal each member's own, episodes and epsilon are counted per
member, and the comparison's quick mode writes its table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from experiments import rl, rl_vector
from experiments.rl_vector import SarsaExecutor, SarsaPopulation, SarsaTrainable
from torch import nn

import poptrain
from poptrain.errors import ConfigError
from poptrain.trainable import TrainContext
from poptrain.vectorized import MemoryPlan

ROOT = Path(__file__).resolve().parents[1]


def cartpole(**settings: object) -> SarsaTrainable:
    return SarsaTrainable(
        "CartPole-v1", **{"rounds": 2, "episodes": 3, "evaluations": 2, "max_steps": 50, "hidden": 16, **settings}
    )


def population(
    spec: SarsaTrainable, seeds: list[int], hparams: list[dict[str, float]] | None = None
) -> SarsaPopulation:
    hparams = hparams or [{"lr": 1e-3 * (i + 1), "gamma": 0.9 + 0.02 * i} for i in range(len(seeds))]
    size = len(seeds)
    return SarsaPopulation(
        spec, list(range(size)), seeds, hparams, torch.device("cpu"), MemoryPlan(0, 0, 0, size, size)
    )


def member_networks(spec: SarsaTrainable, pop: SarsaPopulation, row: int) -> list[nn.Sequential]:
    """Member ``row``'s two Q-networks as ordinary modules."""
    layout = spec.layout
    nets = []
    for k in range(2):
        net = nn.Sequential(
            nn.Linear(layout.inputs, layout.hidden), nn.ReLU(), nn.Linear(layout.hidden, layout.actions)
        )
        nn.utils.vector_to_parameters(pop.params["theta"][row, k].clone(), net.parameters())
        nets.append(net)
    return nets


def test_quick_mode_writes_its_table(tmp_path: Path) -> None:
    assert rl_vector.main(["--quick", "--root", str(tmp_path)]) == 0
    table = (tmp_path / "table.md").read_text()
    assert "| pbt |" in table and "| no exploit/explore |" in table
    assert "wins" in table and "losses" in table and "wall time" in table
    results = json.loads((tmp_path / "results.json").read_text())
    assert len(results["pbt"]) == 1 and results["pbt"][0]["env_steps"] > 0


def test_initial_networks_are_experiments_rl_networks() -> None:
    """The same seed gives the same two networks as ``experiments.rl``'s member."""
    spec = cartpole(hidden=rl.CartPoleSarsa.hidden)
    pop = population(spec, [123])
    member = rl.CartPoleSarsa()
    member.setup({"lr": 1e-3, "gamma": 0.99}, TrainContext("t", 0, 123))
    for mine, theirs in zip(member_networks(spec, pop, 0), member.q):
        for a, b in zip(mine.parameters(), theirs.parameters()):
            assert torch.equal(a, b)


def test_batched_q_values_equal_each_members_networks() -> None:
    spec = cartpole()
    pop = population(spec, [1, 2, 3])
    states = torch.randn(3, spec.layout.inputs)
    q = pop.q_values(states.numpy())
    assert q.shape == (3, 2, spec.layout.actions)
    for row in range(3):
        for k, net in enumerate(member_networks(spec, pop, row)):
            torch.testing.assert_close(torch.from_numpy(q[row, k]), net(states[row]).detach())


def test_batched_update_equals_experiments_rl_update() -> None:
    """Each member's learner network takes the step ``experiments.rl`` takes: smooth L1 toward the
    other network's value of the next state and action, with that network's own Adam."""
    spec = cartpole()
    hparams = [{"lr": 0.003, "gamma": 0.95}, {"lr": 0.01, "gamma": 0.9}, {"lr": 0.0005, "gamma": 0.99}]
    pop = population(spec, [7, 8, 9], hparams)
    reference = []
    for row, hp in enumerate(hparams):
        nets = member_networks(spec, pop, row)
        reference.append((nets, [torch.optim.Adam(q.parameters(), lr=hp["lr"]) for q in nets], hp["gamma"]))
    generator = torch.Generator().manual_seed(0)
    for learners in ([0, 1, 0], [0, 0, 1], [1, 1, 1]):  # each network keeps its own Adam step count
        states = torch.randn(3, spec.layout.inputs, generator=generator)
        following = torch.randn(3, spec.layout.inputs, generator=generator)
        actions = torch.randint(spec.layout.actions, (3,), generator=generator)
        following_actions = torch.randint(spec.layout.actions, (3,), generator=generator)
        rewards = torch.randn(3, generator=generator) * 3
        terminal = torch.tensor([0.0, 1.0, 0.0])
        q = torch.from_numpy(pop.q_values(following.numpy()))
        learner = torch.tensor(learners)
        rows = torch.arange(3)
        gamma = pop.hp["gamma"]
        targets = rewards + gamma * (1 - terminal) * q[rows, 1 - learner, following_actions]
        pop.update(rows.numpy(), learner.numpy(), states.numpy(), actions.numpy(), targets.numpy())
        for row, (nets, optimizers, member_gamma) in enumerate(reference):  # experiments.rl's step
            k = learners[row]
            with torch.no_grad():
                target = float(rewards[row])
                if not terminal[row]:
                    target += member_gamma * float(nets[1 - k](following[row])[following_actions[row]])
            value = nets[k](states[row])[actions[row]]
            optimizers[k].zero_grad(set_to_none=True)
            nn.functional.smooth_l1_loss(value, torch.tensor(target)).backward()
            optimizers[k].step()
    for row, (nets, _, _) in enumerate(reference):
        for k, net in enumerate(nets):
            expected = nn.utils.parameters_to_vector(net.parameters()).detach()
            torch.testing.assert_close(pop.params["theta"][row, k], expected, rtol=1e-5, atol=1e-6)
    assert pop.buffers["updates"].tolist() == [[2.0, 1.0], [1.0, 2.0], [1.0, 2.0]]


def test_a_member_does_not_depend_on_the_others() -> None:
    spec = cartpole()
    alone = population(spec, [22], [{"lr": 0.002, "gamma": 0.97}])
    together = population(spec, [21, 22, 23], [{"lr": 0.01, "gamma": 0.9}, {"lr": 0.002, "gamma": 0.97}] * 2)
    returns_alone = alone.play([0], 4, learn=True)
    returns_together = together.play([0, 1, 2], 4, learn=True)
    np.testing.assert_allclose(returns_together[1], returns_alone[0])
    torch.testing.assert_close(together.params["theta"][1], alone.params["theta"][0])


def test_episodes_are_counted_per_member() -> None:
    spec = cartpole(episodes=4)
    pop = population(spec, [1, 2, 3])
    pop.train_step(None, [0, 2])  # member 1 is not training this round
    assert pop.buffers["episodes"].tolist() == [4.0, 0.0, 4.0]
    returns = pop.play([0, 1, 2], 3, learn=False)
    assert returns.shape == (3, 3) and (returns >= 1).all()  # CartPole pays 1 per step
    assert pop.buffers["episodes"].tolist() == [4.0, 0.0, 4.0]  # evaluation episodes do not count
    again = pop.play([0, 1, 2], 3, learn=False)
    np.testing.assert_array_equal(again, returns)  # the same evaluation seeds, greedy: the same returns


def test_epsilon_falls_from_one_to_a_tenth_over_the_runs_training_episodes() -> None:
    spec = cartpole(rounds=4, episodes=5)
    assert [spec.epsilon(k) for k in (0, 10, 20, 30)] == pytest.approx([1.0, 0.55, 0.1, 0.1])
    run = poptrain.create_run(
        name="epsilon",
        space=rl_vector.SPACE,
        population_size=2,
        metric="return",
        ready=poptrain.every(1),
        storage="memory",
    )
    run.optimize(spec, steps=spec.rounds, executor=SarsaExecutor())
    by_step = {s.step: s.metrics["epsilon"] for s in run.scores()}
    assert by_step == pytest.approx({1: 0.775, 2: 0.55, 3: 0.325, 4: 0.1})


def test_each_member_can_train_alone_with_the_sequential_executor() -> None:
    """What ``poptrain run experiments.rl_vector`` does: the same code, a population of one."""
    spec = cartpole()
    run = poptrain.create_run(
        name="alone",
        space=rl_vector.SPACE,
        population_size=2,
        metric="return",
        ready=poptrain.every(1),
        storage="memory",
        **rl.VARIANTS["pbt"],
    )
    run.optimize(spec, steps=spec.rounds, executor="sequential")
    assert sorted({s.step for s in run.scores()}) == [1, 2]


def test_the_experiment_module_runs_at_the_seeds_scale() -> None:
    from poptrain.experiment import load_experiment

    spec = load_experiment("experiments.rl_vector")
    assert isinstance(spec.trainable, SarsaTrainable)
    assert (spec.trainable.rounds, spec.trainable.episodes, spec.trainable.evaluations) == (20, 100, 20)
    assert spec.population_size == 8 and spec.steps == 20


def test_a_bad_environment_is_one_config_error_line() -> None:
    with pytest.raises(ConfigError, match="NoSuchEnv-v0") as caught:
        SarsaTrainable("NoSuchEnv-v0")
    assert "\n" not in str(caught.value)
    done = subprocess.run(
        [sys.executable, "-m", "experiments.rl_vector", "--env", "NoSuchEnv-v0", "--root", "/nonexistent/x"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("error: cannot make the gymnasium environment 'NoSuchEnv-v0'")
    assert done.stderr.count("\n") == 1


def test_the_plain_vectorized_executor_says_which_executor_to_use() -> None:
    run = poptrain.create_run(name="plain", space=rl_vector.SPACE, population_size=2, metric="return", storage="memory")
    with pytest.raises(ConfigError, match="SarsaExecutor"):
        run.optimize(cartpole(), steps=1, executor="vectorized")
