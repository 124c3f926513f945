"""The toy example of Jaderberg et al. (2017), Figure 2.

Maximise Q(θ) = 1.2 - (θ0² + θ1²) when each worker only sees the surrogate
Q̂(θ|h) = 1.2 - (h0·θ0² + h1·θ1²). Two workers start at θ = (0.9, 0.9) with h = (1, 0) and
(0, 1) and take gradient-ascent steps on Q̂ (step size 0.02); every 4 steps they are ready.
PBT: the worse worker copies the better one's θ and h (truncation), then explore adds
N(0, 0.2²) noise to h. Explore-only: no copying. Exploit-only: the worse worker copies θ but
keeps its own h (copying h as well with no explore would make the two workers identical and
stop them at grid search's value). Grid search (fixed h) can only reach 1.2 - 0.81 = 0.39.

    poptrain run poptrain.experiments.toy            # one PBT run
    python -m poptrain.experiments.toy               # PBT, explore-only, exploit-only, grid
"""

from __future__ import annotations

from typing import Any

import numpy as np

import poptrain
from poptrain.space import HParams, SearchSpace

LEARNING_RATE = 0.02
STEPS = 100
READY_EVERY = 4
NOISE_STD = 0.2
START = (0.9, 0.9)
INITIAL_H = [{"h0": 1.0, "h1": 0.0}, {"h0": 0.0, "h1": 1.0}]
SPACE = {"h0": poptrain.Float(0.0, 1.0), "h1": poptrain.Float(0.0, 1.0)}


def true_objective(theta: tuple[float, float]) -> float:
    """Q(θ) = 1.2 - (θ0² + θ1²)."""
    return 1.2 - (theta[0] ** 2 + theta[1] ** 2)


class ToyQuadratic(poptrain.Trainable):
    """Gradient ascent on the surrogate Q̂(θ|h); evaluates the true Q. Plain Python, no torch."""

    def setup(self, hparams: HParams, context: poptrain.TrainContext) -> None:
        self.theta = list(START)
        self.h = (float(hparams["h0"]), float(hparams["h1"]))

    def step(self) -> None:
        # dQ̂/dθi = -2·hi·θi
        self.theta = [t + LEARNING_RATE * (-2.0 * h * t) for t, h in zip(self.theta, self.h)]

    def evaluate(self) -> dict[str, float]:
        return {"Q": true_objective((self.theta[0], self.theta[1]))}

    def state_dict(self) -> dict[str, Any]:
        return {"theta": list(self.theta)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.theta = [float(x) for x in state["theta"]]

    def set_hparams(self, hparams: HParams) -> None:
        self.h = (float(hparams["h0"]), float(hparams["h1"]))


def gaussian_explore(hparams: HParams, space: SearchSpace, rng: np.random.Generator) -> poptrain.Explored:
    """The paper's toy explore: add N(0, 0.1²) noise to each h, clipped to [0, 1]."""
    new, ops = {}, {}
    for name, param in space.items():
        noise = float(rng.normal(0.0, NOISE_STD))
        new[name] = min(max(float(hparams[name]) + noise, param.low), param.high)  # type: ignore[attr-defined]
        ops[name] = f"{noise:+.3f}"
    return poptrain.Explored(new, ops)


VARIANTS: dict[str, dict[str, Any]] = {
    "pbt": {"exploit": poptrain.truncation(0.5), "explore": gaussian_explore},
    "explore-only": {"exploit": None, "explore": gaussian_explore},
    "exploit-only": {"exploit": poptrain.truncation(0.5), "explore": None, "inherit_hparams": False},
    "grid": {"exploit": None, "explore": None},
}


def run_variant(
    variant: str,
    *,
    seed: int = 0,
    steps: int = STEPS,
    storage: Any = "memory",
    name: str | None = None,
    root: str = "runs",
) -> poptrain.Run:
    """Run one of the four variants and return the finished run."""
    run = poptrain.create_run(
        name=name or f"toy-{variant}",
        space=SPACE,
        population_size=2,
        metric="Q",
        mode="max",
        ready=poptrain.every(READY_EVERY),
        synchronous=True,
        seed=seed,
        storage=storage,
        root=root,
        initial_hparams=INITIAL_H,
        **VARIANTS[variant],
    )
    return run.optimize(ToyQuadratic, steps=steps)


def best_q(run: poptrain.Run) -> float:
    """The best true Q reached by any worker at the end."""
    best = run.best()
    assert best is not None
    return best.score


def experiment() -> dict[str, Any]:
    """What ``poptrain run poptrain.experiments.toy`` runs: PBT on the toy problem."""
    return {
        "trainable": ToyQuadratic,
        "space": SPACE,
        "population_size": 2,
        "metric": "Q",
        "mode": "max",
        "steps": STEPS,
        "ready": poptrain.every(READY_EVERY),
        "synchronous": True,
        "initial_hparams": INITIAL_H,
        **VARIANTS["pbt"],
    }


def main() -> None:
    print(f"Toy example, {STEPS} steps, ready every {READY_EVERY}: best Q per variant (8 seeds)")
    for variant in VARIANTS:
        values = [best_q(run_variant(variant, seed=seed)) for seed in range(8)]
        print(f"  {variant:13s} median {np.median(values):.4f}  range {min(values):.4f}..{max(values):.4f}")


if __name__ == "__main__":
    main()
