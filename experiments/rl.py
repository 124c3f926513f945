"""Deep Double SARSA with PBT on gymnasium's LunarLander (CartPole in quick mode), as in the
project seed: two Q-networks, each updated toward the other's value of the next state and the
action actually taken next; epsilon-greedy exploration annealed from 1.0 to 0.1. One PBT step is
a round of training episodes followed by greedy evaluation episodes; the score is the mean
evaluation return. The 4 worst of 8 members copy one of the 4 best (truncation over half), then
the learning rate and the discount are perturbed. The seed ran 20 rounds of 100 training and
20 evaluation episodes; that is hours on this 2-core machine, so the defaults here are 8 rounds
of 10 training and 3 evaluation episodes, each cut at 300 steps (about 2 minutes a run).

    python -m experiments.rl --quick      # CartPole, small: what the tests run
    python -m experiments.rl              # LunarLander, PBT against the same population unchanged
    poptrain run experiments.rl           # one PBT run on LunarLander from the CLI
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import poptrain
from experiments.harness import save_table, slug, variant_runs
from poptrain.errors import ConfigError
from poptrain.space import HParams

SPACE = {"lr": poptrain.Float(1e-4, 1e-2, log=True), "gamma": poptrain.Float(0.95, 0.999)}


def make_env(name: str, max_steps: int | None = None) -> Any:
    try:
        import gymnasium as gym
    except ImportError:  # pragma: no cover - depends on the environment
        raise ConfigError("the RL experiment needs gymnasium: pip install 'gymnasium[box2d]'") from None
    try:
        return gym.make(name, max_episode_steps=max_steps) if max_steps else gym.make(name)
    except Exception as exc:  # noqa: BLE001 - gymnasium raises many kinds (Box2D missing, unknown id): one line for all
        raise ConfigError(f"cannot make the gymnasium environment {name!r} ({type(exc).__name__}: {exc})") from None


class DoubleSarsa(poptrain.Trainable):
    """A member: two Q-networks, trained by Double SARSA for ``episodes`` per step, then scored
    by the mean return of ``evaluations`` greedy episodes."""

    env_name = "LunarLander-v3"
    episodes = 10
    evaluations = 3
    total_rounds = 8
    max_steps: int | None = 300  # episodes cut at 300 steps (LunarLander's own limit is 1000)
    hidden = 64

    def setup(self, hparams: HParams, context: poptrain.TrainContext) -> None:
        self.env = make_env(self.env_name, self.max_steps)
        inputs, actions = self.env.observation_space.shape[0], self.env.action_space.n
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(context.seed)
            self.q = nn.ModuleList(
                [
                    nn.Sequential(nn.Linear(inputs, self.hidden), nn.ReLU(), nn.Linear(self.hidden, actions))
                    for _ in range(2)
                ]
            )
        self.optimizers = [torch.optim.Adam(q.parameters(), lr=hparams["lr"]) for q in self.q]
        self.gamma = float(hparams["gamma"])
        self.rng = np.random.default_rng(context.seed)
        self.episodes_done = context.start_step * self.episodes
        self.seed = context.seed

    def epsilon(self) -> float:
        """1.0 falling linearly to 0.1 over the whole run's training episodes."""
        progress = self.episodes_done / max(1, self.total_rounds * self.episodes)
        return max(0.1, 1.0 - 0.9 * progress)

    def _values(self, state: np.ndarray) -> torch.Tensor:
        with torch.no_grad():
            x = torch.as_tensor(state, dtype=torch.float32)
            return self.q[0](x) + self.q[1](x)

    def _act(self, state: np.ndarray, epsilon: float) -> int:
        if self.rng.random() < epsilon:
            return int(self.rng.integers(self.env.action_space.n))
        return int(self._values(state).argmax())

    def step(self) -> None:
        for _ in range(self.episodes):
            epsilon = self.epsilon()
            state, _ = self.env.reset(seed=int(self.rng.integers(2**31)))
            action = self._act(state, epsilon)
            done = False
            while not done:
                following, reward, terminated, truncated, _ = self.env.step(action)
                done = terminated or truncated
                next_action = self._act(following, epsilon)
                learner = int(self.rng.integers(2))  # update one network toward the other's estimate
                with torch.no_grad():
                    target = float(reward)
                    if not terminated:
                        target += self.gamma * float(
                            self.q[1 - learner](torch.as_tensor(following, dtype=torch.float32))[next_action]
                        )
                value = self.q[learner](torch.as_tensor(state, dtype=torch.float32))[action]
                self.optimizers[learner].zero_grad(set_to_none=True)
                nn.functional.smooth_l1_loss(value, torch.tensor(target)).backward()
                self.optimizers[learner].step()
                state, action = following, next_action
            self.episodes_done += 1

    def evaluate(self) -> dict[str, float]:
        returns = []
        for episode in range(self.evaluations):
            state, _ = self.env.reset(seed=10_000 + episode)  # the same evaluation episodes for every member
            total, done = 0.0, False
            while not done:
                state, reward, terminated, truncated, _ = self.env.step(self._act(state, 0.0))
                total += float(reward)
                done = terminated or truncated
            returns.append(total)
        return {"return": float(np.mean(returns)), "epsilon": self.epsilon()}

    def state_dict(self) -> dict[str, Any]:
        return {"q": self.q.state_dict(), "optimizers": [o.state_dict() for o in self.optimizers]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.q.load_state_dict(state["q"])
        for optimizer, saved in zip(self.optimizers, state["optimizers"]):
            optimizer.load_state_dict(saved)

    def set_hparams(self, hparams: HParams) -> None:
        for optimizer in self.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = float(hparams["lr"])
        self.gamma = float(hparams["gamma"])


class CartPoleSarsa(DoubleSarsa):
    """The quick version: CartPole, fewer and shorter rounds."""

    env_name = "CartPole-v1"
    episodes = 10
    evaluations = 3
    total_rounds = 4
    max_steps = None
    hidden = 32


VARIANTS: dict[str, dict[str, Any]] = {
    "pbt": {"exploit": poptrain.truncation(0.5), "explore": poptrain.perturb((0.8, 1.2))},
    "no exploit/explore": {"exploit": None, "explore": None},
}


def experiment() -> dict[str, Any]:
    """One PBT run on LunarLander (``poptrain run experiments.rl``)."""
    return {
        "trainable": DoubleSarsa,
        "space": SPACE,
        "population_size": 8,
        "steps": DoubleSarsa.total_rounds,
        "metric": "return",
        "ready": poptrain.every(1),
        **VARIANTS["pbt"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Deep Double SARSA with PBT against the same population unchanged")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="CartPole, population 4, 4 rounds of 10 episodes, 1 seed")
    parser.add_argument("--root", default="runs/rl")
    args = parser.parse_args(argv)
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    trainable, population, seeds = (CartPoleSarsa, 4, 1) if args.quick else (DoubleSarsa, 8, args.seeds)
    results: dict[str, list[dict[str, float]]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory(dir=root) as scratch:
        for seed, name, run, started in variant_runs(
            VARIANTS, seeds, scratch, space=SPACE, population_size=population, metric="return", ready=poptrain.every(1)
        ):
            run.optimize(trainable, steps=trainable.total_rounds)
            finals = [s.value for s in run.scores() if s.step == trainable.total_rounds]
            results[name].append(
                {
                    "seed": seed,
                    "best": max(finals),
                    "mean": float(np.mean(finals)),
                    "seconds": time.perf_counter() - started,
                }
            )
            print(
                f"{name}, seed {seed}: best final return {max(finals):.1f}, population mean {np.mean(finals):.1f}, "
                f"{results[name][-1]['seconds']:.0f} s",
                flush=True,
            )
            if seed == 0:
                run.write_report(root / slug(name))
            run.close()
    save_table(
        root,
        f"Deep Double SARSA on {trainable.env_name}: population {population}, {trainable.total_rounds} rounds of "
        f"{trainable.episodes} training and {trainable.evaluations} evaluation episodes, {seeds} seed(s) "
        "(median [min-max] of the final evaluation return)",
        ["best member", "population mean"],
        results,
        [("best", 1), ("mean", 1)],
    )
    return 0


if __name__ == "__main__":
    from experiments.harness import run_cli

    run_cli(main)
