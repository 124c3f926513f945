"""A small run as a new user writes it: default SQLite storage against storage="memory".

    .venv/bin/python -m benchmarks.small_run               # population 8, 30 epochs, 5 repeats
    .venv/bin/python -m benchmarks.small_run --quick       # population 4, 8 epochs, 1 repeat
    .venv/bin/python -m benchmarks.small_run --repeats 9

The trainable is what the README's Quickstart teaches, on scikit-learn's bundled breast-cancer
data (569 rows, 30 features; no download): a 30-32-2 MLP trained with Adam in minibatches of
64, its optimizer state kept in ``state_dict()``, validation accuracy as the metric; the run
uses ``create_run``'s default strategy. Both variants run in this one process, after a warm-up,
interleaved (sqlite, memory; sqlite, memory, ...) so that a slow spell of the machine hits both
alike; each timing covers ``create_run``, ``optimize`` and ``close``:

  sqlite   ``create_run(...)`` with the defaults: ``<root>/<name>/poptrain.db`` and checkpoint
           files in ``<root>/<name>/checkpoints``, ``root`` a fresh temporary folder.
  memory   ``create_run(..., storage="memory")``: storage and checkpoints in memory.

The headline figure is the ratio of the medians, sqlite/memory (goal <= 1.2). Both variants
must train the same: their scores are compared. The last line printed is a JSON object with
every figure; it is also written to benchmarks/results/small_run.json.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

import poptrain

GOAL = 1.2
RESULTS = Path(__file__).resolve().parent / "results" / "small_run.json"


@functools.lru_cache(maxsize=1)
def _data() -> dict[str, torch.Tensor]:
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    x = torch.tensor(x, dtype=torch.float32)
    y = torch.tensor(y, dtype=torch.long)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    x, y = x[order], y[order]
    n_train = int(0.8 * len(y))
    mean, std = x[:n_train].mean(0), x[:n_train].std(0) + 1e-6
    x = (x - mean) / std
    return {"x_train": x[:n_train], "y_train": y[:n_train], "x_val": x[n_train:], "y_val": y[n_train:]}


class TabularMLP(poptrain.Trainable):
    """A small MLP on the breast-cancer data, Adam's state in the checkpoint."""

    def setup(self, hparams: poptrain.HParams, context: poptrain.TrainContext) -> None:
        self.data = _data()
        self.generator = torch.Generator().manual_seed(context.seed)
        torch.manual_seed(context.seed)
        self.model = nn.Sequential(nn.Linear(30, 32), nn.ReLU(), nn.Dropout(hparams["dropout"]), nn.Linear(32, 2))
        self.opt = torch.optim.Adam(self.model.parameters(), lr=hparams["lr"], weight_decay=hparams["weight_decay"])

    def step(self) -> None:
        self.model.train()
        x, y = self.data["x_train"], self.data["y_train"]
        order = torch.randperm(len(y), generator=self.generator)
        for start in range(0, len(y), 64):
            batch = order[start : start + 64]
            self.opt.zero_grad()
            nn.functional.cross_entropy(self.model(x[batch]), y[batch]).backward()
            self.opt.step()

    def evaluate(self) -> dict[str, float]:
        self.model.eval()
        with torch.no_grad():
            logits = self.model(self.data["x_val"])
            return {"val_acc": (logits.argmax(1) == self.data["y_val"]).float().mean().item()}

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "opt": self.opt.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])

    def set_hparams(self, hparams: poptrain.HParams) -> None:
        for group in self.opt.param_groups:
            group["lr"] = hparams["lr"]
            group["weight_decay"] = hparams["weight_decay"]
        self.model[2].p = hparams["dropout"]


SPACE = {
    "lr": poptrain.Float(1e-4, 0.1, log=True),
    "weight_decay": poptrain.Float(1e-6, 1e-2, log=True),
    "dropout": poptrain.Float(0.0, 0.5),
}


def one_run(storage: str | None, population: int, steps: int, root: str) -> tuple[float, list[tuple[int, int, float]]]:
    """Seconds for create_run + optimize + close, and the scores it recorded (slot, step, value)."""
    gc.collect()
    start = time.perf_counter()
    run = poptrain.create_run(
        name="small", space=SPACE, population_size=population, metric="val_acc", mode="max", seed=0,
        storage=storage, root=root,
    )  # fmt: skip
    run.optimize(TabularMLP, steps=steps)
    scores = [(s.slot, s.step, s.value) for s in run.scores()]
    run.close()
    return time.perf_counter() - start, scores


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="population 4, 8 epochs, 1 repeat unless --repeats")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved repeats (default 5; 1 with --quick)")
    parser.add_argument("--population", type=int, default=None, help="members (default 8; 4 with --quick)")
    parser.add_argument("--steps", type=int, default=None, help="epochs (default 30; 8 with --quick)")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    parser.add_argument("--tmp", default=None, help="parent folder of the temporary run folders")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"where to write the JSON (default {RESULTS})")
    args = parser.parse_args(argv)
    population = args.population or (4 if args.quick else 8)
    steps = args.steps or (8 if args.quick else 30)
    repeats = args.repeats if args.repeats is not None else (1 if args.quick else 5)
    if repeats < 1 or population < 1 or steps < 1:
        parser.error("--repeats, --population and --steps must be >= 1")
    torch.set_num_threads(args.threads)
    load_start = _loadavg()
    print("poptrain small-run benchmark: a tabular MLP (breast cancer, Adam), default SQLite vs storage='memory'")
    print(
        f"work: population {population}, {steps} epochs, default strategy, sequential executor; "
        f"torch threads {torch.get_num_threads()}; {repeats} interleaved repeat(s); load average at start {load_start}"
    )
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="poptrain-small-", dir=args.tmp) as root:  # warm-up (imports, torch)
        one_run(None, 2, 2, root)
        one_run("memory", 2, 2, root)
    print(f"warm-up: {time.perf_counter() - start:.2f} s (not counted)")

    times: dict[str, list[float]] = {"sqlite": [], "memory": []}
    same = True
    for repeat in range(1, repeats + 1):
        with tempfile.TemporaryDirectory(prefix="poptrain-small-", dir=args.tmp) as root:
            sqlite_s, sqlite_scores = one_run(None, population, steps, root)
        memory_s, memory_scores = one_run("memory", population, steps, args.tmp or tempfile.gettempdir())
        same = same and sqlite_scores == memory_scores
        times["sqlite"].append(sqlite_s)
        times["memory"].append(memory_s)
        print(
            f"repeat {repeat}/{repeats}: sqlite {sqlite_s:.3f} s, memory {memory_s:.3f} s, "
            f"ratio {sqlite_s / memory_s:.3f}",
            flush=True,
        )
    medians = {name: statistics.median(values) for name, values in times.items()}
    ratio = medians["sqlite"] / medians["memory"]
    ratio_min = min(times["sqlite"]) / min(times["memory"])
    load_end = _loadavg()
    print()
    print(
        f"memory (baseline)   median {medians['memory']:.3f} s  (runs: {', '.join(f'{t:.3f}' for t in times['memory'])})"
    )
    print(
        f"sqlite (default)    median {medians['sqlite']:.3f} s  (runs: {', '.join(f'{t:.3f}' for t in times['sqlite'])})"
    )
    print(
        f"ratio sqlite/memory {ratio:.3f}  (goal <= {GOAL}: {'met' if ratio <= GOAL else 'NOT met'}; "
        f"fastest runs {ratio_min:.3f})"
    )
    print(f"same scores in both: {same}; load average at start {load_start}, now {load_end}")
    result = {
        "benchmark": "poptrain small run, sqlite vs memory",
        "command": " ".join([os.path.relpath(sys.executable), "-m", "benchmarks.small_run", *sys.argv[1:]])
        if argv is None
        else None,
        "work": {"population": population, "steps": steps, "threads": torch.get_num_threads()},
        "repeats": repeats,
        "seconds": {name: [round(t, 4) for t in values] for name, values in times.items()},
        "median_s": {name: round(value, 4) for name, value in medians.items()},
        "memory_s": round(medians["memory"], 4),
        "ratio": round(ratio, 4),
        "ratio_of_minimums": round(ratio_min, 4),
        "goal": GOAL,
        "goal_met": ratio <= GOAL,
        "same_scores": same,
        "loadavg": {"start": load_start, "end": load_end},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {args.out}")
    print(json.dumps(result, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
