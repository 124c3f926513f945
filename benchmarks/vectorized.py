"""The vectorized executor against the sequential executor and a plain loop, and how its cost
grows with the population.

    .venv/bin/python -m benchmarks.vectorized            # full: population 64, 30 epochs; scaling 16..1024
    .venv/bin/python -m benchmarks.vectorized --quick    # population 16, 6 epochs; scaling 16, 64
    .venv/bin/python -m benchmarks.vectorized --threads 2   # PyTorch threads (default: 1)
    .venv/bin/python -m benchmarks.vectorized --device cuda # the GPU table only: populations 64..16,384

``--threads`` is set before anything runs and printed, and applies to every variant alike.
The default is 1: on a machine shared with other work, fewer threads than cores is much
steadier (two threads waiting on each other at every operation lose most of their time when a
third process takes a core; on the 2-core machine under load, 2-thread runs of the same
configuration varied 7-40 s), and the sequential executor's small per-member operations gain
nothing from a second thread. On a quiet machine, ``--threads 2`` speeds the vectorized
executor's large matrix products and gives a higher ratio.

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

Headline ratios: sequential / vectorized (goal >= 10) and plain loop / vectorized. Also
printed: the vectorized run's wall time for 10 epochs, member-epochs per second, where a
training step's time goes (gradients: forward and backward matmuls and element-wise work;
optimizer; evaluation; checkpoint rounds with the scheduler's decisions), and its training
speed in GFLOP/s against the machine's matmul peak measured in the same run (the best of a
1024 x 1024 x 1024 float32 matmul timed before and after part 1). FLOPs are counted from the
model's matmuls only: 2 x (64 x 128 + 128 x 10) per sample forward, twice that backward (the
first layer's input gradient is not computed, but is counted, as is usual), so
6 x 9,472 FLOPs per training sample; evaluation passes are not counted.

Part 2, scaling: populations of 16, 64, 256 and 1024 of the same MLP, each in a fresh process
(so its peak memory is its own), with the vectorized executor: member-epochs per second and
seconds per epoch once a run is going (a 5-epoch run minus a 1-epoch run, over 4), peak
resident memory and its growth over the process before training, and the memory plan
poptrain made. With ``--device cuda``: the same table on the GPU for populations 64 to 16,384 with the peak
GPU memory (``torch.cuda.max_memory_allocated``); every timing ends with
``torch.cuda.synchronize()``, after a warm-up run. Without a CUDA GPU, ``--device cuda`` prints
one line saying so and exits with status 2. The GPU runs are 1 and 3 epochs (no ready round:
at 16,384 members the strategy's ranking, not the GPU, would set the time).

The last line printed is a JSON object with every figure; it is also written to
benchmarks/results/vectorized.json (``--out``; on the GPU: benchmarks/results/gpu/vectorized.json).
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
from typing import Any, ClassVar, Self

import torch
from torch import nn

import poptrain
from poptrain.executors.vectorized import VectorizedExecutor
from poptrain.experiments import digits
from poptrain.seeding import initial_rng, member_seed
from poptrain.space import SearchSpace

GOAL = 10.0
GFLOPS_GOAL = 0.5  # of the matmul peak measured in the same run
RESULTS = Path(__file__).resolve().parent / "results" / "vectorized.json"
GPU_RESULTS = Path(__file__).resolve().parent / "results" / "gpu" / "vectorized.json"
GPU_POPULATIONS = [64, 256, 1024, 4096, 16384]
NO_CUDA = (
    "--device cuda needs a CUDA GPU, and torch.cuda.is_available() is False here: run it on a machine with "
    "one (benchmarks/gpu.sh), or leave out --device for the CPU figures"
)
FLOPS_PER_SAMPLE = 6 * (64 * 128 + 128 * 10)  # forward + backward of the MLP, per training sample


def sync(device: str) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    if device == "cuda":
        torch.cuda.synchronize()


def matmul_gflops(size: int = 1024, repeats: int = 5) -> float:
    """The machine's float32 matmul speed now: the best of ``repeats`` ``size``-cubed products."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e9


class StepTimers:
    """Wall time spent in each part of the vectorized executor's loop (patched in, then restored)."""

    PARTS: ClassVar[dict[str, tuple[str, str, str]]] = {
        "gradients (forward + backward)": ("poptrain.vectorized.model", "StackedModel", "gradients"),
        "optimizer": ("poptrain.vectorized.optim", "SGD", "update"),
        "training step (all)": ("poptrain.vectorized.population", "Population", "train_step"),
        "evaluation": ("poptrain.vectorized.population", "Population", "evaluate"),
        "checkpoint rounds + decisions": ("poptrain.executors.vectorized", "_Lockstep", "_round"),
    }

    def __init__(self, parts: dict[str, tuple[str, str, str]] | None = None) -> None:
        self.parts = self.PARTS if parts is None else parts
        self.seconds = dict.fromkeys(self.parts, 0.0)
        self._saved: list[tuple[Any, str, Any]] = []

    def __enter__(self) -> Self:
        import importlib

        for label, (module, cls_name, attr) in self.parts.items():
            cls = getattr(importlib.import_module(module), cls_name)
            original = getattr(cls, attr)
            self._saved.append((cls, attr, original))
            setattr(cls, attr, self._timed(label, original))
        return self

    def _timed(self, label: str, fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[label] += time.perf_counter() - started

        return wrapper

    def __exit__(self, *_: object) -> None:
        for cls, attr, original in self._saved:
            setattr(cls, attr, original)


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
        sync(device)
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
    peak_before = matmul_gflops()
    for warm_up in (
        VectorizedExecutor(device="cpu"),
        "sequential",
    ):  # lazy initialisation (imports, first kernels) out of the timings
        poptrain_run(warm_up, 4, 1)
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
    peak = max(peak_before, matmul_gflops())
    ten, _ = poptrain_run(VectorizedExecutor(device="cpu"), population, 10)
    with StepTimers() as timers:
        profiled, _ = poptrain_run(VectorizedExecutor(device="cpu"), population, epochs)
    gflops = samples * FLOPS_PER_SAMPLE / median["vectorized"] / 1e9
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
        "vectorized_training_gflops": gflops,
        "matmul_peak_gflops": peak,
        "gflops_of_peak": gflops / peak,
        "member_epochs_per_second": population * epochs / median["vectorized"],
        "vectorized_seconds_10_epochs": ten,
        "breakdown_seconds": {"run (with timers)": profiled, **timers.seconds},
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
    sync(device)
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


def part2(populations: list[int], epochs: int, device: str, threads: int) -> list[dict[str, Any]]:
    rows = []
    for population in populations:
        command = [sys.executable, "-m", "benchmarks.vectorized", "--one", str(population), "--epochs", str(epochs)]
        command += ["--device", device, "--threads", str(threads)]
        output = subprocess.run(
            command,
            capture_output=True,
            text=True,
            check=True,
            timeout=1800,
            cwd=Path(__file__).resolve().parent.parent,
        ).stdout
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


def print_headline(headline: dict[str, Any]) -> None:
    gflops, peak = headline["vectorized_training_gflops"], headline["matmul_peak_gflops"]
    print(
        "  medians: "
        + ", ".join(f"{k} {v:.2f} s" for k, v in headline["seconds"].items())
        + f"\n  vectorized is {headline['speedup_vs_sequential']:.1f}x faster than the sequential executor "
        f"(goal >= {GOAL:.0f}x: {'met' if headline['speedup_vs_sequential'] >= GOAL else 'NOT met'}) and "
        f"{headline['speedup_vs_plain_loop']:.1f}x faster than a plain loop with no framework ({headline['path']})"
        f"\n  training at {gflops:.1f} GFLOP/s = {100 * gflops / peak:.0f}% of the matmul peak measured now, "
        f"{peak:.1f} GFLOP/s (goal >= {100 * GFLOPS_GOAL:.0f}%: {'met' if gflops >= GFLOPS_GOAL * peak else 'NOT met'})"
        f"\n  {headline['member_epochs_per_second']:.0f} member-epochs/s; population {headline['population']}: "
        f"{headline['vectorized_seconds_10_epochs']:.2f} s for 10 epochs, {headline['seconds']['vectorized']:.2f} s "
        f"for {headline['epochs']}",
        flush=True,
    )
    print("  where a run's time goes: " + ", ".join(f"{k} {v:.2f} s" for k, v in headline["breakdown_seconds"].items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="population 16, 6 epochs; scaling 16 and 64")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="PyTorch threads for every variant (default: 1)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="cuda: the GPU scaling table only")
    parser.add_argument("--out", type=Path, default=None, help="where to write the JSON")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--epochs", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        print(f"benchmarks.vectorized: {NO_CUDA}", file=sys.stderr)
        sys.exit(2)
    if args.one is not None:
        print(json.dumps(one_population(args.one, args.epochs or 4, args.device)))
        return
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, {platform.machine()}, "
        f"load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    if args.device == "cuda":
        populations = [64, 256] if args.quick else GPU_POPULATIONS
        print(f"GPU ({torch.cuda.get_device_name()}): scaling with the population, per epoch once a run is going")
        gpu = part2(populations, args.epochs or 2, "cuda", args.threads)
        result: dict[str, Any] = {"scaling_gpu": gpu, "gpu": torch.cuda.get_device_name(), "quick": args.quick}
        out = args.out or GPU_RESULTS
    else:
        population, epochs, repeats = (16, 6, 1) if args.quick else (64, 30, args.repeats)
        populations = [16, 64] if args.quick else [16, 64, 256, 1024]
        print(f"Part 1: digits MLP, population {population}, {epochs} epochs, {repeats} repeat(s)", flush=True)
        headline = part1(population, epochs, repeats)
        print_headline(headline)
        print("Part 2: scaling with the population (vectorized, CPU; per epoch once a run is going)", flush=True)
        scaling = part2(populations, 4, "cpu", args.threads)
        result = {"goal_speedup": GOAL, "headline": headline, "scaling_cpu": scaling, "quick": args.quick}
        out = args.out or RESULTS
    result.update(
        {"torch": torch.__version__, "threads": torch.get_num_threads(), "load_average_end": os.getloadavg()[0]}
    )
    print(f"load average at the end {os.getloadavg()[0]:.2f}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
