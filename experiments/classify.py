"""Image classification as in the project seed: a small fully connected network with L1
regularisation, population 10, learning rate and L1 coefficient explored, PBT against random
search with the same population, steps and compute.

    python -m experiments.classify                 # digits, 5 seeds, the table and plots
    python -m experiments.classify --quick         # a small version (seconds)
    python -m experiments.classify --data ~/cifar-10-batches-py
    poptrain run experiments.classify              # one PBT run from the CLI

Three ways to spend the same compute (each member trains the same number of epochs):

- ``pbt-seed``: the seed's rule: at every ready point the 3 best members' weights and
  hyperparameters replace the 3 worst (``replace_worst(3)``), whose L1 coefficient is then
  perturbed with Gaussian noise (``gaussian(names=["l1"])``);
- ``pbt``: the standard truncation (20%) and perturb (x0.8/x1.2) of both hyperparameters;
- ``random search``: the same population with its first hyperparameters kept (no exploit, no
  explore).

Data: scikit-learn's bundled digits by default (60/20/20 split); CIFAR-10 from the standard
python-pickle batches in a local folder (``--data``: ``data_batch_1..5`` and ``test_batch``;
nothing is downloaded). The chosen model of a run is the member with the best validation
accuracy at the end; its test accuracy is reported.
"""

from __future__ import annotations

import json
import pickle
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import poptrain
from experiments.harness import markdown_table, median_range, parser, slug, variant_runs
from poptrain.errors import ConfigError
from poptrain.vectorized import SGD, VectorizedTrainable

SPACE = {"lr": poptrain.Float(1e-3, 0.5, log=True), "l1": poptrain.Float(1e-7, 1e-2, log=True)}
POPULATION = 10
VARIANTS: dict[str, dict[str, Any]] = {
    "pbt-seed": {"exploit": poptrain.replace_worst(3), "explore": poptrain.gaussian(0.1, names=["l1"])},
    "pbt": {"exploit": poptrain.truncation(0.2), "explore": poptrain.perturb((0.8, 1.2), resample_probability=0.25)},
    "random search": {"exploit": None, "explore": None},
}


def load_cifar10(folder: str | Path) -> dict[str, torch.Tensor]:
    """CIFAR-10 from the standard python-pickle batches in ``folder``, as flat float tensors in
    [0, 1]; the last 5000 training images are the validation split."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise ConfigError(
            f"CIFAR-10 folder {folder} does not exist; give the folder that holds data_batch_1 ... test_batch"
        )
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise ConfigError(
            f"{folder} is not a CIFAR-10 python folder: {', '.join(missing)} missing (expected data_batch_1..5 and test_batch)"
        )
    parts = []
    for name in names:
        try:
            with open(folder / name, "rb") as handle:
                batch = pickle.load(handle, encoding="bytes")
            data, labels = batch[b"data"], batch[b"labels"]
        except (pickle.UnpicklingError, KeyError, EOFError, TypeError) as exc:
            raise ConfigError(
                f"{folder / name} is not a CIFAR-10 batch ({type(exc).__name__}); re-extract the archive"
            ) from None
        x = torch.as_tensor(data, dtype=torch.float32).reshape(len(labels), -1) / 255.0
        if x.shape[1] != 3072:
            raise ConfigError(f"{folder / name} holds images of {x.shape[1]} values, not 3072 (32x32x3): not CIFAR-10")
        parts.append((x, torch.as_tensor(labels, dtype=torch.long)))
    x_train = torch.cat([p[0] for p in parts[:5]])
    y_train = torch.cat([p[1] for p in parts[:5]])
    held = max(1, len(y_train) // 10)
    return {
        "x_train": x_train[:-held],
        "y_train": y_train[:-held],
        "x_val": x_train[-held:],
        "y_val": y_train[-held:],
        "x_test": parts[5][0],
        "y_test": parts[5][1],
    }


def load_data(data: str | None) -> dict[str, torch.Tensor]:
    if data is None:
        from poptrain.experiments.digits import load_split

        return load_split()
    return load_cifar10(data)


def model_for(inputs: int, hidden: int) -> Any:
    return lambda: nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def trainable(data: dict[str, torch.Tensor], *, batch_size: int = 64, device: str = "auto") -> VectorizedTrainable:
    """The fully connected network with an L1 penalty (``l1`` hyperparameter) and SGD with momentum."""
    inputs = data["x_train"].shape[1]

    def evaluate(predict: Any) -> dict[str, torch.Tensor]:
        logits = predict(data["x_val"])
        return {"val_acc": (logits.argmax(-1) == data["y_val"]).float().mean(-1)}

    return VectorizedTrainable(
        model_for(inputs, 128 if inputs < 1000 else 256),
        (data["x_train"], data["y_train"]),
        F.cross_entropy,
        evaluate,
        optimizer=SGD(momentum=0.9),
        batch_size=batch_size,
        device=device,
    )


def experiment() -> dict[str, Any]:
    """One run with the seed's rule on digits (``poptrain run experiments.classify``)."""
    return {
        "trainable": trainable(load_data(None)),
        "space": SPACE,
        "population_size": POPULATION,
        "steps": 40,
        "metric": "val_acc",
        "ready": poptrain.every(4),
        "executor": "vectorized",
        **VARIANTS["pbt-seed"],
    }


def test_accuracy(run: poptrain.Run, data: dict[str, torch.Tensor]) -> float:
    """Test accuracy of the run's chosen model (best validation accuracy at the end)."""
    best = run.best()
    if best is None or best.checkpoint is None:
        return float("nan")
    state = run.load_state(best.checkpoint)
    model = model_for(data["x_train"].shape[1], state["model"]["0.weight"].shape[0])()
    model.load_state_dict(state["model"])
    with torch.no_grad():
        return float((model(data["x_test"]).argmax(-1) == data["y_test"]).float().mean())


def summarize(run: poptrain.Run) -> dict[str, float]:
    return {"test_acc": test_accuracy(run, load_data(None))}


def compare(
    seeds: int,
    root: Path,
    *,
    steps: int = 40,
    population: int = POPULATION,
    data: str | None = None,
    device: str = "auto",
) -> dict[str, Any]:
    """Every variant for ``seeds`` seeds: the chosen model's validation and test accuracy."""
    dataset = load_data(data)
    spec = trainable(dataset, device=device)
    results: dict[str, list[dict[str, float]]] = {name: [] for name in VARIANTS}
    kept: dict[str, poptrain.Run] = {}
    for seed, name, run, started in variant_runs(
        VARIANTS, seeds, root, space=SPACE, population_size=population, metric="val_acc", ready=poptrain.every(4)
    ):
        run.optimize(spec, steps=steps, executor="vectorized")
        best = run.best()
        results[name].append(
            {
                "seed": seed,
                "val_acc": best.score if best else float("nan"),
                "test_acc": test_accuracy(run, dataset),
                "seconds": time.perf_counter() - started,
            }
        )
        if seed == 0:
            kept[name] = run
    return {"results": results, "runs": kept, "steps": steps, "population": population}


def table(outcome: dict[str, Any], dataset: str) -> str:
    """Markdown: per variant, the chosen model's test and validation accuracy over the seeds."""
    title = (
        f"Image classification on {dataset}: population {outcome['population']}, {outcome['steps']} epochs per member, "
        f"{len(next(iter(outcome['results'].values())))} seeds (median [min-max])"
    )
    rows = [
        [name]
        + [median_range([r[key] for r in runs], 2, scale=100, suffix="%") for key in ("test_acc", "val_acc")]
        + [f"{statistics.median(r['seconds'] for r in runs):.1f}"]
        for name, runs in outcome["results"].items()
    ]
    return (
        title + "\n\n" + markdown_table(["strategy", "test accuracy", "validation accuracy", "seconds per run"], rows)
    )


def main(argv: list[str] | None = None) -> int:
    args_parser = parser(
        "PBT against random search on image classification (the seed's setup)",
        seeds=5,
        quick="6 members, 8 epochs, 2 seeds",
        root="runs/classify",
    )
    args_parser.add_argument("--data", help="a CIFAR-10 python folder (default: scikit-learn's digits)")
    args_parser.add_argument("--device", default="auto")
    args = args_parser.parse_args(argv)
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    seeds, steps, population = (2, 8, 6) if args.quick else (args.seeds, 40, POPULATION)
    with tempfile.TemporaryDirectory(dir=root) as scratch:
        outcome = compare(seeds, Path(scratch), steps=steps, population=population, data=args.data, device=args.device)
        text = table(outcome, "CIFAR-10" if args.data else "digits")
        print(text)
        (root / "table.md").write_text(text + "\n")
        (root / "results.json").write_text(json.dumps(outcome["results"], indent=2))
        for name, run in outcome["runs"].items():  # seed 0's curves and schedules, for each strategy
            folder = root / slug(name)
            paths = run.write_report(folder)
            run.close()
            print(f"{name}: {paths['scores']} (accuracy curves), {paths['schedules']} (lr and L1 schedules)")
    return 0


if __name__ == "__main__":
    from experiments.harness import run_cli

    run_cli(main)
