"""The vectorized executor against the sequential executor and a plain loop, and how its cost
grows with the population.

    .venv/bin/python -m benchmarks.vectorized            # full: population 64, 30 epochs; scaling 16..1024
    .venv/bin/python -m benchmarks.vectorized --quick    # population 16, 6 epochs; scaling 16, 64

Part 1, the digits MLP experiment (64-128-10, SGD with lr, momentum, weight decay and dropout
explored, one step = one epoch at batch 64, ready every 4 steps, truncation 20%), population
64, 30 epochs, all in this process, variants interleaved so a slow spell of the machine hits
all alike:

  vectorized   ``run.optimize(digits.vectorized_trainable(), executor="vectorized")`` with the
               default SQLite storage and checkpoints in a fresh temporary folder (create_run,
               optimize and close are timed).
  sequential   the same run and the same training code (``VectorizedTrainable`` trains one
               member at a time with ``torch.optim.SGD``) with ``executor="sequential"``.
  plain loop   no framework, no PBT: for each member a ``torch.nn.Sequential`` and
               ``torch.optim.SGD`` with its initial hyperparameters, 30 epochs of minibatches
               and a validation pass after each epoch.

Headline ratios: sequential / vectorized (goal >= 10) and plain loop / vectorized.

Part 2, scaling: populations of 16, 64, 256 and 1024 of the same MLP, each in a fresh process
(so its peak memory is its own), with the vectorized executor: member-epochs per second and
seconds per epoch once a run is going (a 5-epoch run minus a 1-epoch run, over 4), peak
resident memory and its growth over the process before training, and the memory plan
poptrain made. With a CUDA GPU present, the same table on it.

The last line printed is a JSON object with every figure; it is also written to
benchmarks/results/vectorized.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

import poptrain
from poptrain.executors.vectorized import VectorizedExecutor
from poptrain.experiments import digits
from poptrain.seeding import initial_rng, member_seed
from poptrain.space import SearchSpace

GOAL = 10.0
RESULTS = Path(__file__).resolve().parent / "results" / "vectorized.json"
FLOPS_PER_SAMPLE = 6 * (64 * 128 + 128 * 10)  # forward + backward of the MLP, per training sample


def poptrain_run(executor: Any, population: int, epochs: int, device: str = "cpu") -> tuple[float, Any]:
    """Seconds for create_run + optimize + close of the digits experiment; the executor used."""
    settings = digits.experiment()
    spec = digits.vectorized_trainable(device=device)
    with tempfile.TemporaryDirectory() as root:
        started = time.perf_counter()
        run = poptrain.create_run(
            name="bench",
            space=settings["space"],
            population_size=population,
            metric="val_acc",
            root=root,
            ready=settings["ready"],
            exploit=settings["exploit"],
            explore=settings["explore"],
        )
        run.optimize(spec, steps=epochs, executor=executor)
        best = run.best()
        run.close()
        seconds = time.perf_counter() - started
    return seconds, (executor, best.score if best else float("nan"))


def plain_loop(population: int, epochs: int) -> float:
    """Seconds to train every member alone with plain PyTorch: no framework, no PBT."""
    space = SearchSpace(digits.SPACE)
    data = digits.load_split()
    x, y, x_val, y_val = data["x_train"], data["y_train"], data["x_val"], data["y_val"]
    started = time.perf_counter()
    for slot in range(population):
        hp = space.sample(initial_rng(0, slot))
        torch.manual_seed(member_seed(0, slot))
        model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Dropout(hp["dropout"]), nn.Linear(128, 10))
        optimizer = torch.optim.SGD(
            model.parameters(), lr=hp["lr"], momentum=hp["momentum"], weight_decay=hp["weight_decay"]
        )
        generator = torch.Generator().manual_seed(slot)
        for _ in range(epochs):
            model.train()
            order = torch.randperm(len(y), generator=generator)
            for start in range(0, len(y), digits.BATCH_SIZE):
                batch = order[start : start + digits.BATCH_SIZE]
                optimizer.zero_grad(set_to_none=True)
                nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
                optimizer.step()
            model.eval()
            with torch.no_grad():
                (model(x_val).argmax(1) == y_val).float().mean().item()
    return time.perf_counter() - started


def part1(population: int, epochs: int, repeats: int) -> dict[str, Any]:
    times: dict[str, list[float]] = {"vectorized": [], "sequential": [], "plain loop": []}
    scores: dict[str, float] = {}
    executor = VectorizedExecutor(device="cpu")
    for repeat in range(repeats):
        seconds, (_, score) = poptrain_run(executor, population, epochs)
        times["vectorized"].append(seconds)
        scores["vectorized"] = score
        if repeat == 0 or repeats <= 3:
            seconds, (_, score) = poptrain_run("sequential", population, epochs)
            times["sequential"].append(seconds)
            scores["sequential"] = score
            times["plain loop"].append(plain_loop(population, epochs))
        print(f"  repeat {repeat + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()), flush=True)
    median = {k: statistics.median(v) for k, v in times.items()}
    samples = len(digits.load_split()["y_train"]) * epochs * population
    return {
        "population": population,
        "epochs": epochs,
        "seconds": median,
        "runs": times,
        "best_val_acc": scores,
        "memory_plan_chunks": executor.memory.chunks if executor.memory else None,
        "path": executor.path,
        "speedup_vs_sequential": median["sequential"] / median["vectorized"],
        "speedup_vs_plain_loop": median["plain loop"] / median["vectorized"],
        "vectorized_training_gflops": samples * FLOPS_PER_SAMPLE / median["vectorized"] / 1e9,
    }


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def one_population(population: int, epochs: int, device: str) -> dict[str, Any]:
    """Run in a fresh process: one population's speed and memory. The per-epoch cost is the
    difference between a run of ``1 + epochs`` epochs and one of 1 epoch, divided by
    ``epochs``: what an epoch costs once the run is set up (creating the run, the first
    evaluation and the closing checkpoint are in both)."""
    digits.load_split()
    poptrain_run(VectorizedExecutor(device=device), 4, 1, device)  # warm-up: lazy initialisation
    before = rss_bytes()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    short, _ = poptrain_run(VectorizedExecutor(device=device), population, 1, device)
    executor = VectorizedExecutor(device=device)
    seconds, _ = poptrain_run(executor, population, 1 + epochs, device)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    per_epoch = max(seconds - short, 1e-9) / epochs
    plan = executor.memory
    result = {
        "population": population,
        "epochs": 1 + epochs,
        "seconds": seconds,
        "seconds_per_epoch": per_epoch,
        "member_epochs_per_second": population / per_epoch,
        "peak_rss_mib": peak / 2**20,
        "rss_before_mib": before / 2**20,
        "rss_growth_mib": max(peak - before, 0) / 2**20,
        "plan_state_mib": plan.state_bytes / 2**20 if plan else None,
        "plan_activation_kib_per_member": plan.activation_bytes_per_member / 2**10 if plan else None,
        "chunks": plan.chunks if plan else None,
        "device": device,
    }
    if device == "cuda":
        result["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def part2(populations: list[int], epochs: int, device: str) -> list[dict[str, Any]]:
    rows = []
    for population in populations:
        command = [sys.executable, __file__, "--one", str(population), "--epochs", str(epochs), "--device", device]
        output = subprocess.run(command, capture_output=True, text=True, check=True, timeout=1800).stdout
        row = json.loads(output.strip().splitlines()[-1])
        rows.append(row)
        print(
            f"  P={population:5d}: {row['member_epochs_per_second']:8.1f} member-epochs/s, "
            f"{row['seconds_per_epoch']:.3f} s/epoch, peak RSS {row['peak_rss_mib']:.0f} MiB "
            f"(+{row['rss_growth_mib']:.0f} MiB while training; plan: state {row['plan_state_mib']:.1f} MiB, "
            f"{row['plan_activation_kib_per_member']:.0f} KiB activations per member, {row['chunks']} chunk(s))"
            + (f", peak GPU {row['peak_gpu_mib']:.0f} MiB" if "peak_gpu_mib" in row else ""),
            flush=True,
        )
    base = rows[0]["member_epochs_per_second"]
    for row in rows:
        row["throughput_vs_smallest"] = row["member_epochs_per_second"] / base
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--epochs", type=int, default=4, help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(one_population(args.one, args.epochs, args.device)))
        return
    population, epochs, repeats = (16, 6, 1) if args.quick else (64, 30, args.repeats)
    populations = [16, 64] if args.quick else [16, 64, 256, 1024]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, {platform.machine()}")
    print(f"Part 1: digits MLP, population {population}, {epochs} epochs, {repeats} repeat(s)", flush=True)
    headline = part1(population, epochs, repeats)
    print(
        "  medians: "
        + ", ".join(f"{k} {v:.2f} s" for k, v in headline["seconds"].items())
        + f"\n  vectorized is {headline['speedup_vs_sequential']:.1f}x faster than the sequential executor "
        f"(goal >= {GOAL:.0f}x: {'met' if headline['speedup_vs_sequential'] >= GOAL else 'NOT met'}) and "
        f"{headline['speedup_vs_plain_loop']:.1f}x faster than a plain loop with no framework; "
        f"training at {headline['vectorized_training_gflops']:.1f} GFLOP/s ({headline['path']})",
        flush=True,
    )
    print("Part 2: scaling with the population (vectorized, CPU; per epoch once a run is going)", flush=True)
    scaling = part2(populations, 4, "cpu")
    gpu = None
    if torch.cuda.is_available():
        print(f"Part 2 on the GPU ({torch.cuda.get_device_name()})", flush=True)
        gpu = part2(populations, 4, "cuda")
    result = {
        "goal_speedup": GOAL,
        "headline": headline,
        "scaling_cpu": scaling,
        "scaling_gpu": gpu,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "quick": args.quick,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
