"""PB2 against PBT's perturb and random search, at equal compute (same population and steps).

    python -m experiments.pb2 toy --seeds 5      # a problem whose best learning rate decays
    python -m experiments.pb2 digits --seeds 5   # the digits MLP (vectorized), population 4

Three ways to spend the same compute:

- ``pb2``: truncation (the worst quarter copies the best quarter), then ``pb2()`` chooses the
  copied member's continuous hyperparameters by a GP bandit over the population's recent
  score changes;
- ``pbt``: the same truncation, then ``perturb((0.8, 1.2), resample_probability=0.25)``;
- ``random search``: the same population, its first hyperparameters kept (no exploit, no explore).

The toy is SGD with momentum on a noisy quadratic (Zhang et al., 2019, "Which algorithmic
choices matter at which batch sizes?"), in expectation: curvatures ``h_i`` log-spaced in
[0.01, 1], gradient noise of variance ``h_i`` per coordinate, and the exact mean and covariance
of (weights, velocity) carried through each SGD iteration. A large learning rate makes fast
progress along the flat directions but leaves the loss at a high noise floor, so the best
learning rate falls as training goes on. It is deterministic (seeds change only the
population's first hyperparameters and the strategies' draws) and takes milliseconds.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import poptrain
from experiments.harness import parser, save_table, variant_runs
from poptrain.space import HParams

VARIANTS: dict[str, dict[str, Any]] = {
    "pb2": {"exploit": poptrain.truncation(0.25), "explore": poptrain.pb2()},
    "pbt": {"exploit": poptrain.truncation(0.25), "explore": poptrain.perturb((0.8, 1.2), resample_probability=0.25)},
    "random search": {"exploit": None, "explore": None},
}

TOY_SPACE = {"lr": poptrain.Float(1e-3, 1.0, log=True), "momentum": poptrain.Float(0.0, 0.9)}
DIMENSIONS = 16
ITERATIONS_PER_STEP = 10
NOISE = 1e-3


class NoisyQuadratic(poptrain.Trainable):
    """SGD with momentum on the noisy quadratic model, tracked exactly in expectation.

    Per coordinate, the state ``s = (w, u)`` (weight, velocity) follows ``u' = m u - lr (h w + e)``,
    ``w' = w + u'`` with noise ``e ~ N(0, NOISE h)``; its mean and covariance are propagated
    exactly. The score is ``log10`` of the expected loss ``0.5 sum h (E[w]^2 + Var[w])``.
    """

    def setup(self, hparams: HParams, context: poptrain.TrainContext) -> None:
        self.h = np.logspace(-2, 0, DIMENSIONS)
        self.mean = np.stack([np.ones(DIMENSIONS), np.zeros(DIMENSIONS)], axis=1)  # [d, 2]
        self.cov = np.zeros((DIMENSIONS, 2, 2))
        self.set_hparams(hparams)

    def set_hparams(self, hparams: HParams) -> None:
        self.lr, self.momentum = float(hparams["lr"]), float(hparams["momentum"])

    def step(self) -> None:
        lr, m, h = self.lr, self.momentum, self.h
        a = np.zeros((DIMENSIONS, 2, 2))
        a[:, 0, 0], a[:, 0, 1], a[:, 1, 0], a[:, 1, 1] = 1 - lr * h, m, -lr * h, m
        b = np.full((DIMENSIONS, 2), -lr)
        noise = NOISE * h
        for _ in range(ITERATIONS_PER_STEP):
            self.mean = np.einsum("dij,dj->di", a, self.mean)
            self.cov = a @ self.cov @ a.transpose(0, 2, 1) + noise[:, None, None] * np.einsum("di,dj->dij", b, b)

    def evaluate(self) -> dict[str, float]:
        loss = 0.5 * float(np.sum(self.h * (self.mean[:, 0] ** 2 + self.cov[:, 0, 0])))
        return {"log_loss": float(np.log10(loss))}

    def state_dict(self) -> dict[str, Any]:
        return {"mean": self.mean.tolist(), "cov": self.cov.tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mean, self.cov = np.array(state["mean"]), np.array(state["cov"])


def best_fixed(lrs: np.ndarray, momenta: np.ndarray, steps: int) -> tuple[float, float, float]:
    """The best constant ``(lr, momentum)`` of a grid and its final log loss (a reference)."""
    best = (float("inf"), 0.0, 0.0)
    for lr in lrs:
        for momentum in momenta:
            member = NoisyQuadratic()
            member.setup({"lr": float(lr), "momentum": float(momentum)}, poptrain.TrainContext("grid", 0, 0))
            for _ in range(steps):
                member.step()
            best = min(best, (member.evaluate()["log_loss"], float(lr), float(momentum)))
    return best


def run_toy(seeds: int, root: Path, *, steps: int, population: int, ready: int) -> dict[str, list[dict[str, float]]]:
    """Every variant on the noisy quadratic: the best member's final log10 loss and learning rate."""
    results: dict[str, list[dict[str, float]]] = {name: [] for name in VARIANTS}
    for seed, name, run, started in variant_runs(
        VARIANTS,
        seeds,
        root,
        space=TOY_SPACE,
        population_size=population,
        metric="log_loss",
        mode="min",
        ready=poptrain.every(ready),
        storage="memory",
    ):
        run.optimize(NoisyQuadratic, steps=steps, keep_checkpoints=None)
        best = run.best()
        row = {
            "seed": seed,
            "log_loss": best.score,
            "lr": float(best.hparams["lr"]),
            "seconds": time.perf_counter() - started,
        }
        results[name].append(row)
        print(f"{name}, seed {seed}: log10 loss {row['log_loss']:.3f}, final lr {row['lr']:.3g}", flush=True)
        run.close()
    return results


def run_digits(seeds: int, root: Path, *, steps: int, population: int, ready: int) -> dict[str, list[dict[str, float]]]:
    """Every variant on the digits MLP: the chosen member's validation and test accuracy."""
    import torch

    from poptrain.experiments import digits

    spec = digits.vectorized_trainable(device="cpu")
    results: dict[str, list[dict[str, float]]] = {name: [] for name in VARIANTS}
    for seed, name, run, started in variant_runs(
        VARIANTS,
        seeds,
        root,
        space=digits.SPACE,
        population_size=population,
        metric="val_acc",
        ready=poptrain.every(ready),
    ):
        torch.manual_seed(seed)  # the same global generator state for every variant, whatever ran before
        run.optimize(spec, steps=steps, executor="vectorized")
        best = run.best()
        row = {
            "seed": seed,
            "val_acc": best.score,
            "test_acc": digits.summarize(run).get("test_acc", float("nan")),
            "seconds": time.perf_counter() - started,
        }
        results[name].append(row)
        print(f"{name}, seed {seed}: val {row['val_acc']:.4f}, test {row['test_acc']:.4f}", flush=True)
        run.close()
    return results


def main(argv: list[str] | None = None) -> int:
    args_parser = parser("PB2 against PBT (perturb) and random search at equal compute", seeds=5)
    args_parser.add_argument("problem", choices=["toy", "digits"])
    args_parser.add_argument("--population", type=int, default=4)
    args_parser.add_argument(
        "--steps", type=int, help="steps per member (toy: 40 of 10 SGD iterations; digits: 40 epochs)"
    )
    args_parser.add_argument("--ready", type=int, default=4, help="steps between ready points")
    args_parser.add_argument("--root", help="where the table goes (default runs/pb2/<problem>)")
    args = args_parser.parse_args(argv)
    root = Path(args.root or f"runs/pb2/{args.problem}")
    root.mkdir(parents=True, exist_ok=True)
    steps = args.steps or 40
    with tempfile.TemporaryDirectory(dir=root) as scratch:
        if args.problem == "toy":
            results = run_toy(args.seeds, Path(scratch), steps=steps, population=args.population, ready=args.ready)
            loss, lr, momentum = best_fixed(np.logspace(-3, 0, 13), np.linspace(0.0, 0.9, 10), steps)
            save_table(
                root,
                f"Noisy quadratic, SGD with momentum: population {args.population}, {steps} steps of "
                f"{ITERATIONS_PER_STEP} iterations, ready every {args.ready}, {args.seeds} seed(s); the best member "
                f"at the end (median [min-max]). The best constant (lr, momentum) of a 13x10 grid reaches "
                f"{loss:.3f} (lr {lr:.3g}, momentum {momentum:.2f}).",
                ["log10 loss (lower is better)", "final lr of the best member"],
                results,
                [("log_loss", 3), ("lr", 3)],
            )
        else:
            results = run_digits(args.seeds, Path(scratch), steps=steps, population=args.population, ready=args.ready)
            save_table(
                root,
                f"Digits MLP (vectorized): population {args.population}, {steps} epochs, ready every {args.ready}, "
                f"{args.seeds} seed(s); the member with the best validation accuracy at the end (median [min-max]).",
                ["test accuracy", "validation accuracy"],
                results,
                [("test_acc", 2), ("val_acc", 2)],
                scale=100,
                suffix="%",
            )
    print(f"table: {root / 'table.md'}")
    return 0


if __name__ == "__main__":
    from experiments.harness import run_cli

    run_cli(main)
