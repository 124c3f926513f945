"""A DCGAN on the digits images with PBT over the generator's and discriminator's learning
rates and Adam's beta1, against the same population with fixed hyperparameters.

    python -m experiments.gan              # population 20, 3 seeds: table, curves, samples
    python -m experiments.gan --quick      # a small version (seconds)
    poptrain run experiments.gan           # one PBT run from the CLI

The discriminator follows the seed (conv, LeakyReLU, conv, batch norm, conv, batch norm,
output layer); the generator mirrors it with transposed convolutions. One PBT step is
``GENERATOR_STEPS`` generator updates (each after one discriminator update) on batches of 64
real 8x8 digits scaled to [-1, 1].

**Scores.** The Inception network's weights cannot be downloaded here, so the Inception-score
formula, ``exp(E_x KL(p(y|x) || p(y)))``, is computed with a classifier trained on the real
digits (a 64-128-10 MLP; its own score on real test images is printed), and a Fréchet distance
is computed in that classifier's 128-unit feature space. **These numbers are not comparable
with CIFAR-10 Inception scores** (the seed's 6.45 -> 6.89); they compare runs here with each
other. The score is the metric PBT maximises; the Fréchet distance is recorded beside it.
"""

from __future__ import annotations

import functools
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import poptrain
from experiments.harness import parser, save_table, slug, variant_runs
from poptrain.space import HParams

NOISE = 16
BATCH = 64
GENERATOR_STEPS = 25
SAMPLES = 500
SPACE = {
    "lr_g": poptrain.Float(1e-4, 1e-2, log=True),
    "lr_d": poptrain.Float(1e-4, 1e-2, log=True),
    "beta1": poptrain.Float(0.1, 0.9),
}


def generator() -> nn.Module:
    return nn.Sequential(
        nn.Linear(NOISE, 64 * 2 * 2),
        nn.Unflatten(1, (64, 2, 2)),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.ConvTranspose2d(64, 32, 4, 2, 1),
        nn.BatchNorm2d(32),
        nn.ReLU(),  # 4x4
        nn.ConvTranspose2d(32, 1, 4, 2, 1),
        nn.Tanh(),  # 8x8
    )


def discriminator() -> nn.Module:
    """The seed's discriminator: conv, LeakyReLU, conv, batch norm, conv, batch norm, output layer."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, 2, 1),
        nn.LeakyReLU(0.2),  # 4x4
        nn.Conv2d(32, 64, 3, 2, 1),
        nn.BatchNorm2d(64),
        nn.LeakyReLU(0.2),  # 2x2
        nn.Conv2d(64, 128, 3, 1, 1),
        nn.BatchNorm2d(128),
        nn.LeakyReLU(0.2),
        nn.Flatten(),
        nn.Linear(128 * 2 * 2, 1),
    )


@functools.lru_cache(maxsize=1)
def real_images() -> torch.Tensor:
    """The 1797 digits images as ``[N, 1, 8, 8]`` in [-1, 1]."""
    from poptrain.experiments.digits import load_split

    data = load_split()
    x = torch.cat([data["x_train"], data["x_val"], data["x_test"]])
    return (x * 2 - 1).reshape(-1, 1, 8, 8)


@functools.lru_cache(maxsize=1)
def judge() -> nn.Sequential:
    """The classifier that scores samples: a 64-128-10 MLP trained on the real digits (train split),
    seeded, in evaluation mode."""
    from poptrain.experiments.digits import load_split

    data = load_split()
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(7)
        model = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
        x, y = data["x_train"] * 2 - 1, data["y_train"]
        generator_ = torch.Generator().manual_seed(7)
        for _ in range(60):
            for batch in torch.randperm(len(y), generator=generator_).split(BATCH):
                optimizer.zero_grad()
                nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
                optimizer.step()
    return model.eval()


def _features_and_probabilities(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    model = judge()
    with torch.no_grad():
        features = model[2](model[1](model[0](images)))
        return features, torch.softmax(model[3](features), -1)


def inception_score(images: torch.Tensor) -> float:
    """``exp(E KL(p(y|x) || p(y)))`` with the digits classifier (10 at best, 1 at worst)."""
    _, probabilities = _features_and_probabilities(images)
    marginal = probabilities.mean(0, keepdim=True)
    kl = (probabilities * ((probabilities + 1e-12).log() - (marginal + 1e-12).log())).sum(1)
    return float(kl.mean().exp())


@functools.lru_cache(maxsize=1)
def _real_statistics() -> tuple[np.ndarray, np.ndarray]:
    features, _ = _features_and_probabilities(real_images())
    array = features.double().numpy()
    return array.mean(0), np.cov(array, rowvar=False)


def frechet_distance(images: torch.Tensor) -> float:
    """The Fréchet distance between real and generated images in the classifier's feature space."""
    from scipy import linalg

    mu_real, cov_real = _real_statistics()
    features, _ = _features_and_probabilities(images)
    array = features.double().numpy()
    mu, cov = array.mean(0), np.cov(array, rowvar=False)
    offset = np.eye(len(mu)) * 1e-6  # dead features make the covariances singular
    root = linalg.sqrtm((cov_real + offset) @ (cov + offset)).real
    return float(((mu_real - mu) ** 2).sum() + np.trace(cov_real + cov - 2 * root))


class DigitsGAN(poptrain.Trainable):
    """A generator and a discriminator trained against each other; PBT sees the score."""

    def setup(self, hparams: HParams, context: poptrain.TrainContext) -> None:
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(context.seed)
            self.generator, self.discriminator = generator(), discriminator()
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=hparams["lr_g"], betas=(hparams["beta1"], 0.999))
        self.opt_d = torch.optim.Adam(
            self.discriminator.parameters(), lr=hparams["lr_d"], betas=(hparams["beta1"], 0.999)
        )
        self.rng = torch.Generator().manual_seed(context.seed)
        self.noise = torch.randn(SAMPLES, NOISE, generator=torch.Generator().manual_seed(12345))  # fixed for scoring
        self.images = real_images()

    def step(self) -> None:
        loss = nn.functional.binary_cross_entropy_with_logits
        self.generator.train()
        self.discriminator.train()
        for _ in range(GENERATOR_STEPS):
            real = self.images[torch.randint(len(self.images), (BATCH,), generator=self.rng)]
            fake = self.generator(torch.randn(BATCH, NOISE, generator=self.rng))
            self.opt_d.zero_grad(set_to_none=True)
            d_loss = loss(self.discriminator(real), torch.ones(BATCH, 1)) + loss(
                self.discriminator(fake.detach()), torch.zeros(BATCH, 1)
            )
            d_loss.backward()
            self.opt_d.step()
            self.opt_g.zero_grad(set_to_none=True)
            loss(self.discriminator(fake), torch.ones(BATCH, 1)).backward()
            self.opt_g.step()

    def samples(self, count: int = SAMPLES) -> torch.Tensor:
        self.generator.eval()
        with torch.no_grad():
            return self.generator(self.noise[:count])

    def evaluate(self) -> dict[str, float]:
        images = self.samples()
        return {"score": inception_score(images), "frechet": frechet_distance(images)}

    def state_dict(self) -> dict[str, Any]:
        return {
            "generator": self.generator.state_dict(),
            "discriminator": self.discriminator.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.load_state_dict(state["generator"])
        self.discriminator.load_state_dict(state["discriminator"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])

    def set_hparams(self, hparams: HParams) -> None:
        for optimizer, lr in ((self.opt_g, hparams["lr_g"]), (self.opt_d, hparams["lr_d"])):
            for group in optimizer.param_groups:
                group["lr"] = float(lr)
                group["betas"] = (float(hparams["beta1"]), 0.999)


VARIANTS: dict[str, dict[str, Any]] = {
    "pbt": {"exploit": poptrain.truncation(0.25), "explore": poptrain.perturb((0.8, 1.2))},
    "fixed hyperparameters": {"exploit": None, "explore": None},
}


def experiment() -> dict[str, Any]:
    """One PBT run, population 20 (``poptrain run experiments.gan``)."""
    return {
        "trainable": DigitsGAN,
        "space": SPACE,
        "population_size": 20,
        "steps": 12,
        "metric": "score",
        "ready": poptrain.every(2),
        **VARIANTS["pbt"],
    }


def summarize(run: poptrain.Run) -> dict[str, float]:
    best = run.best()
    return {"frechet": best.metrics.get("frechet", float("nan"))} if best else {}


def sample_grid(run: poptrain.Run, path: Path, *, rows: int = 6) -> None:
    """Samples of the best generator at several points of the run (one row each), from the
    best member's checkpoint at each ready step (the run must keep its checkpoints)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    checkpoints = [c for c in run.storage.get_checkpoints(run.record.id) if not c.deleted and c.score is not None]
    steps = sorted({c.step for c in checkpoints})
    chosen = steps[:: max(1, len(steps) // rows)][: rows - 1] + steps[-1:]
    model = generator().eval()
    noise = torch.randn(10, NOISE, generator=torch.Generator().manual_seed(3))
    figure, axes = plt.subplots(len(chosen), 10, figsize=(8, 0.85 * len(chosen) + 0.5))
    axes = np.atleast_2d(axes)
    for row, step in enumerate(chosen):
        best = max((c for c in checkpoints if c.step == step), key=lambda c: c.score or 0.0)
        model.load_state_dict(run.load_state(best)["generator"])
        with torch.no_grad():
            images = model(noise).squeeze(1)
        for col in range(10):
            axes[row, col].imshow(images[col].numpy(), cmap="gray_r", vmin=-1, vmax=1)
            axes[row, col].axis("off")
        axes[row, 0].set_title(f"step {step}: score {best.score:.2f}", fontsize=7, loc="left")
    figure.suptitle("the best generator over the run (fixed noise)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    args = parser(
        "PBT against fixed hyperparameters on a digits DCGAN",
        seeds=3,
        quick="population 4, 4 steps, 1 seed",
        root="runs/gan",
    ).parse_args(argv)
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    seeds, steps, population, ready = (1, 4, 4, 2) if args.quick else (args.seeds, 12, 20, 2)
    from poptrain.experiments.digits import load_split

    held_out = (load_split()["x_test"] * 2 - 1).reshape(-1, 1, 8, 8)
    print(
        f"the judge's score on real test digits: {inception_score(held_out):.2f} "
        "(about the best a generator can expect; 10 is the formula's maximum)"
    )
    results: dict[str, list[dict[str, float]]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory(dir=root) as scratch:
        for seed, name, run, started in variant_runs(
            VARIANTS,
            seeds,
            scratch,
            space=SPACE,
            population_size=population,
            metric="score",
            ready=poptrain.every(ready),
        ):
            run.optimize(DigitsGAN, steps=steps, keep_checkpoints=None if seed == 0 else 2)
            best = run.best()
            results[name].append(
                {
                    "seed": seed,
                    "score": best.score,
                    "frechet": best.metrics.get("frechet", float("nan")),
                    "seconds": time.perf_counter() - started,
                }
            )
            print(
                f"{name}, seed {seed}: score {best.score:.3f}, Fréchet {results[name][-1]['frechet']:.2f}, "
                f"{results[name][-1]['seconds']:.0f} s",
                flush=True,
            )
            if seed == 0:
                folder = root / slug(name)
                run.write_report(folder)
                sample_grid(run, folder / "samples.png")
            run.close()
    save_table(
        root,
        f"DCGAN on digits: population {population}, {steps} steps of {GENERATOR_STEPS} generator updates, {seeds} seed(s); "
        "the best member at the end (median [min-max]). Scores use a digits classifier, not Inception: not comparable "
        "with CIFAR-10 Inception scores.",
        ["score (higher is better)", "Fréchet distance (lower is better)"],
        results,
        [("score", 3), ("frechet", 2)],
    )
    return 0


if __name__ == "__main__":
    from experiments.harness import run_cli

    run_cli(main)
