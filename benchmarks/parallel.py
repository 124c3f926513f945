"""Processes executor against the sequential executor on the digits experiment, in one run.

    .venv/bin/python benchmarks/parallel.py [--workers 2] [--repeats 3] [--steps 30]

Prints the wall time of each (medians over interleaved repeats), the speed-up (goal >= 1.8 on
2 cores) and the share of a worker's time spent in the database, measured in-process.
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
from poptrain.executors.processes import WorkerJob, work
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


def database_share(steps: int) -> dict[str, float]:
    """One worker in this process with every SQLStorage method timed: its share of the time."""
    spent = {"db": 0.0}
    originals = {}
    for name in ("acquire_member", "renew_lease", "release_member", "record_ready", "record_scores",
                 "get_members", "rewind_member", "set_member_state", "get_checkpoint", "get_run"):
        original = getattr(SQLStorage, name)
        originals[name] = original

        def wrapper(self, *args, __original=original, **kwargs):  # type: ignore[no-untyped-def]
            start = time.perf_counter()
            try:
                return __original(self, *args, **kwargs)
            finally:
                spent["db"] += time.perf_counter() - start

        setattr(SQLStorage, name, wrapper)
    try:
        with tempfile.TemporaryDirectory() as root:
            make_run(root, steps)
            folder = Path(root) / "digits"
            job = WorkerJob(f"sqlite:///{folder / 'poptrain.db'}", "digits", str(folder / "checkpoints"),
                            digits.DigitsMLP, steps, torch_threads=None)
            total = timed(lambda: work(job))
    finally:
        for name, original in originals.items():
            setattr(SQLStorage, name, original)
    return {"worker_s": round(total, 3), "database_s": round(spent["db"], 3), "database_pct": round(100 * spent["db"] / total, 2)}


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
    share = database_share(args.steps)
    result = {
        "benchmark": "processes executor vs sequential, digits", "workers": args.workers, "steps": args.steps,
        "sequential_s": round(seq, 3), "processes_s": round(par, 3), "speedup": round(seq / par, 3), "goal": 1.8,
        "database_share_one_worker": share,
    }
    print(f"median: sequential {seq:.2f} s, processes x{args.workers} {par:.2f} s, speed-up {seq / par:.2f} (goal >= 1.8)")
    print(f"one worker in-process: {share['worker_s']} s, of which database {share['database_s']} s ({share['database_pct']} %)")
    print(json.dumps(result))
    out = Path(__file__).resolve().parent / "results" / "parallel.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
