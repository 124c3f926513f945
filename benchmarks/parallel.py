"""Processes executor against the sequential executor on the digits experiment, in one run.

    .venv/bin/python benchmarks/parallel.py [--workers 2] [--repeats 3] [--steps 30]

Prints the wall time of each (medians over interleaved repeats), the speed-up (goal >= 1.8 on
2 cores) and the database's share of a processes run's time: only the driver talks to the
database (workers train and send results back), measured by timing every storage call.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import poptrain
from poptrain.experiments import digits
from poptrain.storage._sql import SQLStorage


def make_run(root: str, steps: int) -> poptrain.Run:
    settings = digits.experiment()
    return poptrain.create_run(
        name="digits", space=settings["space"], population_size=settings["population_size"], metric="val_acc",
        ready=settings["ready"], exploit=settings["exploit"], explore=settings["explore"], seed=0, root=root,
        meta={"steps": steps},
    )


def timed(fn) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def database_share(steps: int, workers: int) -> dict[str, float]:
    """A processes run with every SQLStorage method timed in the driver (the workers never touch
    the database: they train and send results back), as a share of the run's wall time."""
    spent = {"db": 0.0, "calls": 0}
    originals = {}
    for name in [n for n in vars(SQLStorage) if not n.startswith("_") and callable(getattr(SQLStorage, n))]:
        original = getattr(SQLStorage, name)
        originals[name] = original

        def wrapper(self, *args, __original=original, **kwargs):  # type: ignore[no-untyped-def]
            start = time.perf_counter()
            try:
                return __original(self, *args, **kwargs)
            finally:
                spent["db"] += time.perf_counter() - start
                spent["calls"] += 1

        setattr(SQLStorage, name, wrapper)
    try:
        with tempfile.TemporaryDirectory() as root:
            run = make_run(root, steps)
            total = timed(lambda: run.optimize(digits.DigitsMLP, steps=steps, executor="processes", workers=workers))
    finally:
        for name, original in originals.items():
            setattr(SQLStorage, name, original)
    return {"run_s": round(total, 3), "database_s": round(spent["db"], 3), "database_calls": spent["calls"],
            "database_pct": round(100 * spent["db"] / total, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    print(f"parallel benchmark: digits MLP, population 16, {args.steps} epochs, ready every 4")
    print(f"machine: nproc={os.cpu_count()}, torch {torch.__version__} ({torch.get_num_threads()} threads in the sequential run), python {sys.version.split()[0]}")
    digits.load_split()
    sequential, parallel = [], []
    for repeat in range(args.repeats):
        with tempfile.TemporaryDirectory() as root:
            sequential.append(timed(lambda: make_run(root, args.steps).optimize(digits.DigitsMLP, steps=args.steps)))
        with tempfile.TemporaryDirectory() as root:
            parallel.append(timed(lambda: make_run(root, args.steps).optimize(
                digits.DigitsMLP, steps=args.steps, executor="processes", workers=args.workers)))
        print(f"repeat {repeat + 1}/{args.repeats}: sequential {sequential[-1]:.2f} s, "
              f"processes x{args.workers} {parallel[-1]:.2f} s, speed-up {sequential[-1] / parallel[-1]:.2f}")
    seq, par = statistics.median(sequential), statistics.median(parallel)
    share = database_share(args.steps, args.workers)
    result = {
        "benchmark": "processes executor vs sequential, digits", "workers": args.workers, "steps": args.steps,
        "sequential_s": round(seq, 3), "processes_s": round(par, 3), "speedup": round(seq / par, 3), "goal": 1.8,
        "driver_database_share": share,
    }
    print(f"median: sequential {seq:.2f} s, processes x{args.workers} {par:.2f} s, speed-up {seq / par:.2f} (goal >= 1.8)")
    print(f"database time in the driver of a processes run: {share['database_s']} s of {share['run_s']} s "
          f"({share['database_pct']} %, {share['database_calls']} calls); workers make no database call")
    print(json.dumps(result))
    out = Path(__file__).resolve().parent / "results" / "parallel.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
