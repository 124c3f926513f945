"""Processes executor against the sequential executor on the digits experiment, in one run.

    .venv/bin/python -m benchmarks.parallel [--workers 2] [--repeats 3] [--steps 30]

Prints the wall time of each (medians over interleaved repeats), the speed-up (goal >= 1.8 on
2 cores) and the database's share of a processes run's time: only the driver talks to the
database (workers train and send results back), measured by timing every storage call.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from experiments.harness import parser, seconds_per_call

import poptrain
from poptrain.experiments import digits
from poptrain.storage._sql import SQLStorage


def make_run(root: str, steps: int) -> poptrain.Run:
    settings = digits.experiment()
    return poptrain.create_run(
        name="digits",
        space=settings["space"],
        population_size=settings["population_size"],
        metric="val_acc",
        ready=settings["ready"],
        exploit=settings["exploit"],
        explore=settings["explore"],
        seed=0,
        root=root,
        meta={"steps": steps},
    )


def timed(fn) -> float:  # type: ignore[no-untyped-def]
    return seconds_per_call(fn)


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
    return {
        "run_s": round(total, 3),
        "database_s": round(spent["db"], 3),
        "database_calls": spent["calls"],
        "database_pct": round(100 * spent["db"] / total, 2),
    }


class Clock(poptrain.ProgressListener):
    """When each score reached the driver: a run's throughput once it is going (member-epochs per
    second from its first score to its last, the workers' start-up left out)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_score(self, *args: object) -> None:
        self.times.append(time.perf_counter())

    def throughput(self) -> float:
        first = self.times[0]
        later = [t for t in self.times if t > first]
        return len(later) / (self.times[-1] - first)


_ALONE = """
import sys, time, torch
torch.set_num_threads(1)
from poptrain.experiments import digits
from poptrain.trainable import TrainContext
digits.load_split()
member = digits.DigitsMLP()
member.setup({"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4, "dropout": 0.1}, TrainContext("c", 0, 0))
start = time.perf_counter()
for _ in range(int(sys.argv[1])):
    member.step()
print(time.perf_counter() - start)
"""


def hardware_ceiling(epochs: int = 60) -> float:
    """The most any 2-process executor can gain here: the digits MLP trained by one process
    alone against two processes training at once (each one torch thread), as a speed-up."""
    import subprocess

    def one() -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-c", _ALONE, str(epochs)], stdout=subprocess.PIPE, text=True)

    alone = float(one().communicate()[0])
    pair = [one(), one()]
    together = max(float(p.communicate()[0]) for p in pair)
    return 2 * alone / together


def trained(root: str, steps: int, **options: object) -> tuple[float, float]:
    """Wall seconds of one digits run and its throughput once going."""
    clock = Clock()
    run = make_run(root, steps)
    wall = timed(lambda: run.optimize(digits.DigitsMLP, steps=steps, progress=clock, **options))
    return wall, clock.throughput()


def main() -> None:
    args_parser = parser(__doc__.splitlines()[0])
    args_parser.add_argument("--workers", type=int, default=2)
    args_parser.add_argument("--repeats", type=int, default=3)
    args_parser.add_argument("--steps", type=int, default=30)
    args = args_parser.parse_args()
    threads = torch.get_num_threads()
    print(f"parallel benchmark: digits MLP, population 16, {args.steps} epochs, ready every 4")
    print(
        f"machine: nproc={os.cpu_count()}, torch {torch.__version__} ({threads} threads in the sequential run, "
        f"1 per worker process), python {sys.version.split()[0]}"
    )
    digits.load_split()
    runs: dict[str, list[tuple[float, float]]] = {"sequential": [], "sequential-1-thread": [], "processes": []}
    for repeat in range(args.repeats):
        for label, done in runs.items():
            with tempfile.TemporaryDirectory() as root:
                if label == "processes":
                    done.append(trained(root, args.steps, executor="processes", workers=args.workers))
                else:
                    torch.set_num_threads(1 if label.endswith("1-thread") else threads)
                    done.append(trained(root, args.steps))
                    torch.set_num_threads(threads)
        print(
            f"repeat {repeat + 1}/{args.repeats}: "
            + ", ".join(
                f"{label} {r[-1][0]:.2f} s ({r[-1][1]:.0f} member-epochs/s once going)" for label, r in runs.items()
            )
        )
    wall = {label: statistics.median(w for w, _ in r) for label, r in runs.items()}
    rate = {label: statistics.median(t for _, t in r) for label, r in runs.items()}
    share = database_share(args.steps, args.workers)
    ceiling = hardware_ceiling()
    result = {
        "benchmark": "processes executor vs sequential, digits",
        "workers": args.workers,
        "steps": args.steps,
        "wall_s": {k: round(v, 3) for k, v in wall.items()},
        "member_epochs_per_s_once_going": {k: round(v, 1) for k, v in rate.items()},
        "speedup_wall": round(wall["sequential"] / wall["processes"], 3),
        "speedup_throughput": round(rate["processes"] / rate["sequential"], 3),
        "speedup_throughput_vs_1_thread": round(rate["processes"] / rate["sequential-1-thread"], 3),
        "goal": 1.8,
        "hardware_ceiling_two_processes": round(ceiling, 3),
        "driver_database_share": share,
    }
    print(
        f"median wall: sequential {wall['sequential']:.2f} s, sequential 1 thread {wall['sequential-1-thread']:.2f} s, "
        f"processes x{args.workers} {wall['processes']:.2f} s: speed-up {result['speedup_wall']:.2f} (start-up included)"
    )
    print(
        f"median throughput once going: speed-up {result['speedup_throughput']:.2f} against the sequential executor "
        f"({threads} threads), {result['speedup_throughput_vs_1_thread']:.2f} against it with 1 thread (goal >= 1.8)"
    )
    print(
        f"this machine's ceiling for 2 processes (the MLP trained by two processes at once against one alone): "
        f"{ceiling:.2f}x; processes reach {result['speedup_throughput_vs_1_thread'] / ceiling:.0%} of it"
    )
    print(
        f"database time in the driver of a processes run: {share['database_s']} s of {share['run_s']} s "
        f"({share['database_pct']} %, {share['database_calls']} calls); workers make no database call"
    )
    print(json.dumps(result))
    out = Path(__file__).resolve().parent / "results" / "parallel.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
