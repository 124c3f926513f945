"""Framework overhead: the digits experiment's work with poptrain against a plain training loop.

    .venv/bin/python -m benchmarks.overhead               # full: population 16, 30 epochs, 3 repeats
    .venv/bin/python -m benchmarks.overhead --quick       # population 4, 8 epochs, 1 repeat
    .venv/bin/python -m benchmarks.overhead --repeats 5

torch's thread count is the same for every variant: torch's default, or --threads N. Everything
runs in this one process, after a warm-up (imports, lazy torch initialisation),
with the variants interleaved (baseline, baseline+copies, poptrain; baseline, ...) so that
a slow spell of the machine hits all of them alike. Timed variants:

  baseline         a plain loop, no framework: for each member, build the model and optimizer
                   with the member's hyperparameters and seed (as poptrain draws them), then
                   for each epoch call ``digits.train_epoch`` and ``digits.accuracy`` on the
                   validation split exactly as ``DigitsMLP`` does, keeping the best accuracy.
                   No PBT decisions. This is the reference of the headline ratio.
  baseline+copies  the same loop that also takes an in-memory deep copy of the state dict at
                   every ready point (what PBT needs at the least, without any I/O); shown for
                   context only.
  poptrain         ``poptrain.create_run(...)`` with the default SQLite storage and local
                   checkpoints in a fresh temporary folder, then ``run.optimize(DigitsMLP,
                   steps)`` with the sequential executor; the timing covers create_run,
                   optimize and close.

The headline figure is the ratio of the medians, poptrain/baseline (goal <= 1.05); the ratio of
the fastest runs, CPU times and the spread of the baseline's own runs are printed too, because
on a small shared machine run-to-run noise can be larger than the overhead being measured.

After the timed repeats, one more poptrain run is made with timers wrapped around user code,
checkpointing, storage and strategy to say where its time goes (exclusive times: a timed call
inside another timed call is counted once, in its own category). That run is not part of the
medians. The last line printed is a JSON object with every figure; it is also written to
benchmarks/results/overhead.json.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import gc
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import torch

import poptrain
from poptrain.experiments import digits
from poptrain.seeding import initial_rng, member_seed
from poptrain.space import SearchSpace

GOAL = 1.05
RESULTS = Path(__file__).resolve().parent / "results" / "overhead.json"


# --- the work, both ways ------------------------------------------------------------------------
def baseline(population: int, steps: int, *, seed: int = 0, copy_every: int | None = None) -> dict[int, list[float]]:
    """Train every member with a plain loop; the validation accuracy after each epoch, by slot."""
    space = SearchSpace(digits.SPACE)
    data = digits.load_split()
    x_val, y_val = data["x_val"], data["y_val"]
    curves: dict[int, list[float]] = {}
    for slot in range(population):
        hparams = space.sample(initial_rng(seed, slot))  # the hyperparameters create_run draws
        member = member_seed(seed, slot)  # the seed DigitsMLP.setup gets (TrainContext.seed)
        generator = torch.Generator().manual_seed(member)
        with torch.random.fork_rng(devices=[]):  # as DigitsMLP.setup
            torch.random.default_generator.manual_seed(member)
            model = digits.build_model(float(hparams["dropout"]))
        optimizer = torch.optim.SGD(
            model.parameters(),
            lr=float(hparams["lr"]),
            momentum=float(hparams["momentum"]),
            weight_decay=float(hparams["weight_decay"]),
        )
        best, curve, kept = -math.inf, [], None
        for epoch in range(1, steps + 1):
            digits.seed_dropout(model, generator)  # dropout masks, as DigitsMLP.step
            digits.train_epoch(model, optimizer, data, generator)
            acc, _loss = digits.accuracy(model, x_val, y_val)
            curve.append(acc)
            best = max(best, acc)
            if copy_every and epoch % copy_every == 0 and epoch < steps:
                kept = copy.deepcopy({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch})
        del kept
        curves[slot] = curve
    return curves


def poptrain_run(population: int, steps: int, ready: int, folder: str, *, seed: int = 0) -> poptrain.Run:
    """The digits experiment through poptrain: default SQLite storage and local checkpoints in ``folder``."""
    settings = digits.experiment()
    run = poptrain.create_run(
        name="digits",
        space=settings["space"],
        population_size=population,
        metric="val_acc",
        mode="max",
        ready=poptrain.every(ready),
        exploit=settings["exploit"],
        explore=settings["explore"],
        seed=seed,
        root=folder,
    )
    return run.optimize(digits.DigitsMLP, steps=steps, executor="sequential")


def timed_poptrain(population: int, steps: int, ready: int, parent: str | None) -> tuple[float, float, dict[str, Any]]:
    """Wall and CPU seconds for create_run + optimize + close in a fresh temporary folder, and what it produced."""
    with tempfile.TemporaryDirectory(prefix="poptrain-bench-", dir=parent) as folder:
        gc.collect()
        cpu, start = time.process_time(), time.perf_counter()
        run = poptrain_run(population, steps, ready, folder)
        run.close()
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        run = poptrain.load_run("digits", root=folder)  # outside the timing: what the run recorded
        try:
            outcome = {"scores": run.scores(), "lineage": run.lineage(), "best": run.best()}
        finally:
            run.close()
    return elapsed, cpu, outcome


def timed_baseline(
    population: int, steps: int, copy_every: int | None = None
) -> tuple[float, float, dict[int, list[float]]]:
    """Wall and CPU seconds of the plain loop, and its validation curves."""
    gc.collect()
    cpu, start = time.process_time(), time.perf_counter()
    curves = baseline(population, steps, copy_every=copy_every)
    return time.perf_counter() - start, time.process_time() - cpu, curves


def same_work(curves: dict[int, list[float]], outcome: dict[str, Any], ready: int) -> dict[str, Any]:
    """Check that poptrain trained what the baseline trained: before the first ready point every
    member's scores must be identical, and a member that never exploited nor explored must match
    the plain loop at every step."""
    by_slot: dict[int, dict[int, float]] = defaultdict(dict)
    for score in outcome["scores"]:
        by_slot[score.slot][score.step] = score.value
    changed = {g.slot for g in outcome["lineage"] if g.kind != "init"}
    first_ok = all(
        by_slot[slot].get(step) == curve[step - 1]
        for slot, curve in curves.items()
        for step in range(1, min(ready, len(curve)) + 1)
    )
    untouched = [slot for slot in curves if slot not in changed]
    untouched_ok = all(
        by_slot[slot].get(step) == value for slot in untouched for step, value in enumerate(curves[slot], start=1)
    )
    return {
        "scores_before_first_ready_point_identical": first_ok,
        "members_never_changed_by_pbt": len(untouched),
        "their_full_curves_identical": untouched_ok,
    }


# --- where poptrain's time goes -----------------------------------------------------------------
class Timers:
    """Exclusive wall time per category for wrapped callables (nested timed calls are subtracted).
    Calls on the main thread make the run's time (``seconds``); calls on other threads (the
    checkpoint writer) overlap it and are kept apart (``background``)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.background: dict[str, float] = defaultdict(float)
        self._local = threading.local()  # each thread's stack of nested timed calls

    def wrap(self, category: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            children: list[float] = self._local.__dict__.setdefault("children", [])
            children.append(0.0)
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - start
                inner = children.pop()
                if threading.current_thread() is threading.main_thread():
                    self.seconds[category] += elapsed - inner
                    self.calls[category] += 1
                else:
                    self.background[category] += elapsed - inner
                if children:
                    children[-1] += elapsed

        return timed


# (category, group shown in the summary, [(object, attribute name), ...])
def _probes() -> list[tuple[str, str, list[tuple[Any, str]]]]:
    from poptrain import random_state as random_state_module
    from poptrain import runner as runner_module
    from poptrain import scheduler as scheduler_module
    from poptrain.checkpoints import WriteBehindStore
    from poptrain.checkpoints import _base as ckpt_base
    from poptrain.checkpoints import _local as ckpt_local
    from poptrain.storage import _sql

    sql = _sql.SQLStorage
    return [
        ("user step()+evaluate()", "user code", [(digits.DigitsMLP, "step"), (digits.DigitsMLP, "evaluate")]),
        ("user setup()", "user code", [(digits.DigitsMLP, "setup")]),
        (
            "user state_dict()/load_state_dict()/set_hparams()",
            "checkpoints",
            [
                (digits.DigitsMLP, "state_dict"),
                (digits.DigitsMLP, "load_state_dict"),
                (digits.DigitsMLP, "set_hparams"),
            ],
        ),
        (
            "checkpoint serialize (torch.save)",
            "checkpoints",
            [(ckpt_base, "serialize"), (ckpt_base, "serialize_member")],
        ),
        ("checkpoint sha256", "checkpoints", [(ckpt_base, "sha256")]),
        ("checkpoint file write (atomic)", "checkpoints", [(ckpt_local.LocalCheckpointStore, "write")]),
        ("waiting for checkpoint writes (flush)", "checkpoints", [(WriteBehindStore, "flush")]),
        ("checkpoint file read", "checkpoints", [(ckpt_local.LocalCheckpointStore, "read")]),
        ("checkpoint deserialize (torch.load)", "checkpoints", [(ckpt_base, "deserialize"), (ckpt_base, "_load_own")]),
        ("storage record_scores", "storage", [(sql, "record_scores")]),
        ("storage record_ready", "storage", [(sql, "record_ready")]),
        (
            "storage other writes (member/run state, collection)",
            "storage",
            [
                (sql, "set_member_state"),
                (sql, "set_members_state"),
                (sql, "set_run_state"),
                (sql, "mark_checkpoints_deleted"),
            ],
        ),
        (
            "storage reads (members, checkpoints, run)",
            "storage",
            [
                (sql, "get_members"),
                (sql, "get_checkpoint"),
                (sql, "get_checkpoints"),
                (sql, "get_generations"),
                (sql, "get_scores"),
                (sql, "get_run"),
            ],
        ),
        (
            "storage open + create run + members",
            "storage",
            [(sql, "__init__"), (sql, "create_run"), (sql, "add_members"), (sql, "close")],
        ),
        (
            "random state snapshot/encode/restore (per segment)",
            "checkpoints",
            [
                (runner_module, "snapshot"),
                (random_state_module.Snapshot, "encode"),
                (random_state_module.Snapshot, "restore"),
                (runner_module, "restore"),
                (runner_module, "seed_globals"),
            ],
        ),
        (
            "strategy (snapshots, planning)",
            "strategy",
            [(scheduler_module.Scheduler, "snapshot"), (scheduler_module, "plan_round")],
        ),
    ]


@contextlib.contextmanager
def instrumented(timers: Timers) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for category, _group, targets in _probes():
            for owner, attribute in targets:
                original = getattr(owner, attribute, None)
                if original is None:
                    continue
                stack.enter_context(mock.patch.object(owner, attribute, timers.wrap(category, original)))
        yield


def breakdown(population: int, steps: int, ready: int, parent: str | None) -> dict[str, Any]:
    timers = Timers()
    with tempfile.TemporaryDirectory(prefix="poptrain-bench-", dir=parent) as folder:
        gc.collect()
        with instrumented(timers):
            start = time.perf_counter()
            run = poptrain_run(population, steps, ready, folder)
            run.close()
            total = time.perf_counter() - start
    groups = {category: group for category, group, _ in _probes()}
    rows = {}
    for category, _group, _ in _probes():
        seconds = timers.seconds.get(category, 0.0)
        rows[category] = {
            "group": groups[category],
            "ms": round(seconds * 1e3, 1),
            "pct": round(100 * seconds / total, 2),
            "calls": timers.calls.get(category, 0),
        }
    rest = total - sum(timers.seconds.values())
    rows["rest (executor, controller, progress, Python glue)"] = {
        "group": "rest",
        "ms": round(rest * 1e3, 1),
        "pct": round(100 * rest / total, 2),
        "calls": None,
    }
    totals: dict[str, float] = defaultdict(float)
    for row in rows.values():
        totals[row["group"]] += row["ms"]
    return {
        "total_ms": round(total * 1e3, 1),
        "categories": rows,
        "background_ms": {category: round(seconds * 1e3, 1) for category, seconds in timers.background.items()},
        "groups": {g: {"ms": round(ms, 1), "pct": round(100 * ms / (total * 1e3), 2)} for g, ms in totals.items()},
    }


# --- reporting ------------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    import sqlite3

    import sqlalchemy

    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu": cpu,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "sqlite": sqlite3.sqlite_version,
        "sqlalchemy": sqlalchemy.__version__,
        "poptrain": poptrain.__version__,
        "loadavg_start": _loadavg(),
    }


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _executable() -> str:
    relative = os.path.relpath(sys.executable)
    return sys.executable if relative.startswith("..") else relative


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="population 4, 8 epochs, 1 repeat unless --repeats")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved repeats (default 3; 1 with --quick)")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch.set_num_threads for all variants (default: leave torch's default)",
    )
    parser.add_argument("--no-copies", action="store_true", help="skip the baseline+copies variant")
    parser.add_argument("--no-breakdown", action="store_true", help="skip the instrumented run")
    parser.add_argument(
        "--tmp", default=None, help="parent folder of the temporary run folders (default: the system's)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"where to write the JSON (default {RESULTS})")
    args = parser.parse_args(argv)

    settings = digits.experiment()
    population, steps = (4, 8) if args.quick else (settings["population_size"], settings["steps"])
    ready = settings["ready"].steps
    repeats = args.repeats if args.repeats is not None else (1 if args.quick else 3)
    if repeats < 1:
        parser.error("--repeats must be >= 1")
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    facts = machine()
    tmp_parent = args.tmp or tempfile.gettempdir()
    print("poptrain overhead benchmark: digits MLP, plain loop vs poptrain (SQLite + local checkpoints, sequential)")
    print(f"machine: nproc={facts['nproc']} usable_cpus={facts['usable_cpus']} cpu={facts['cpu'] or '?'}")
    print(
        f"software: python {facts['python']}, torch {facts['torch']} (torch.get_num_threads()={facts['torch_threads']}), "
        f"sqlite {facts['sqlite']}, sqlalchemy {facts['sqlalchemy']}, poptrain {facts['poptrain']}"
    )
    print(
        f"platform: {facts['platform']}; load average at start: {facts['loadavg_start']}; run folders under {tmp_parent}"
    )
    print(
        f"work: population {population}, {steps} epochs each, ready every {ready}, truncation(0.2), "
        f"perturb(0.8, 1.2, resample 0.25); {repeats} interleaved repeat(s)"
    )

    # warm-up: imports, lazy torch initialisation (the first optimizer imports torch._dynamo), SQLAlchemy
    start = time.perf_counter()
    timed_baseline(2, 2, copy_every=1)
    timed_poptrain(2, 3, 2, args.tmp)
    print(f"warm-up: {time.perf_counter() - start:.2f} s (not counted)")

    times: dict[str, list[float]] = {"baseline": [], "baseline+copies": [], "poptrain": []}
    cpu: dict[str, list[float]] = {"baseline": [], "baseline+copies": [], "poptrain": []}
    checks: list[dict[str, Any]] = []
    best = {"baseline": float("nan"), "poptrain": float("nan")}
    for repeat in range(1, repeats + 1):
        elapsed, cpu_s, curves = timed_baseline(population, steps)
        times["baseline"].append(elapsed)
        cpu["baseline"].append(cpu_s)
        line = f"repeat {repeat}/{repeats}: baseline {elapsed:.3f} s"
        if not args.no_copies:
            elapsed_copies, cpu_s, _ = timed_baseline(population, steps, copy_every=ready)
            times["baseline+copies"].append(elapsed_copies)
            cpu["baseline+copies"].append(cpu_s)
            line += f", baseline+copies {elapsed_copies:.3f} s"
        elapsed_pt, cpu_s, outcome = timed_poptrain(population, steps, ready, args.tmp)
        times["poptrain"].append(elapsed_pt)
        cpu["poptrain"].append(cpu_s)
        checks.append(same_work(curves, outcome, ready))
        best = {
            "baseline": max(max(c) for c in curves.values()),
            "poptrain": outcome["best"].score if outcome["best"] else float("nan"),
        }
        print(f"{line}, poptrain {elapsed_pt:.3f} s, ratio {elapsed_pt / times['baseline'][-1]:.3f}", flush=True)

    medians = {name: _median(values) for name, values in times.items() if values}
    cpu_medians = {name: _median(values) for name, values in cpu.items() if values}
    ratio = medians["poptrain"] / medians["baseline"]
    ratio_cpu = cpu_medians["poptrain"] / cpu_medians["baseline"]
    spread = max(times["baseline"]) / min(times["baseline"]) - 1
    ratio_min = min(times["poptrain"]) / min(times["baseline"])  # the fastest run of each: the least disturbed
    per_repeat = [p / b for p, b in zip(times["poptrain"], times["baseline"])]
    print()
    print(
        f"baseline (plain loop)     median {medians['baseline']:.3f} s  (runs: {', '.join(f'{t:.3f}' for t in times['baseline'])})"
    )
    if "baseline+copies" in medians:
        print(
            f"baseline + state copies   median {medians['baseline+copies']:.3f} s  "
            f"(runs: {', '.join(f'{t:.3f}' for t in times['baseline+copies'])})"
        )
    print(
        f"poptrain                  median {medians['poptrain']:.3f} s  (runs: {', '.join(f'{t:.3f}' for t in times['poptrain'])})"
    )
    print(
        f"ratio poptrain/baseline   {ratio:.3f}  (goal <= {GOAL}: {'met' if ratio <= GOAL else 'NOT met'}; "
        f"per repeat: {', '.join(f'{r:.3f}' for r in per_repeat)})"
    )
    if "baseline+copies" in medians:
        print(f"ratio poptrain/(baseline + state copies)  {medians['poptrain'] / medians['baseline+copies']:.3f}")
    print(
        f"CPU time (process_time, all threads): baseline median {cpu_medians['baseline']:.3f} s, "
        f"poptrain median {cpu_medians['poptrain']:.3f} s, ratio {ratio_cpu:.3f}"
    )
    print(f"ratio of the fastest runs (least disturbed by the machine)  {ratio_min:.3f}")
    print(
        f"noise: the baseline's own runs differ by {100 * spread:.1f} % (slowest/fastest - 1); "
        f"load average now {_loadavg()}"
    )
    check = checks[-1]
    print(
        f"same work: scores before the first ready point identical: {check['scores_before_first_ready_point_identical']}; "
        f"{check['members_never_changed_by_pbt']} member(s) never changed by PBT, full curves identical: "
        f"{check['their_full_curves_identical']}"
    )
    print(
        f"best validation accuracy: baseline (best member, best epoch) {best['baseline']:.4f}, "
        f"poptrain run.best() {best['poptrain']:.4f}"
    )

    split = None
    if not args.no_breakdown:
        split = breakdown(population, steps, ready, args.tmp)
        print()
        print(
            f"where poptrain's time goes (one extra instrumented run, {split['total_ms'] / 1e3:.3f} s in all; exclusive times):"
        )
        for category, row in split["categories"].items():
            calls = f"  [{row['calls']} calls]" if row["calls"] else ""
            print(f"  {category:<52} {row['ms']:>9.1f} ms  {row['pct']:>6.2f} %{calls}")
        print(
            "  by group: " + "; ".join(f"{g} {v['ms']:.1f} ms ({v['pct']:.2f} %)" for g, v in split["groups"].items())
        )
        for category, ms in split["background_ms"].items():
            print(f"  on the checkpoint writer thread, overlapping the run (not counted above): {category} {ms:.1f} ms")

    result = {
        "benchmark": "poptrain overhead, digits MLP",
        "command": " ".join([_executable(), *sys.argv]) if argv is None else None,
        "machine": {**facts, "loadavg_end": _loadavg()},
        "work": {
            "population": population,
            "steps": steps,
            "ready_every": ready,
            "exploit": "truncation(0.2)",
            "explore": "perturb((0.8, 1.2), resample_probability=0.25)",
            "executor": "sequential",
            "storage": "sqlite (default)",
            "checkpoints": "local files",
        },
        "repeats": repeats,
        "seconds": {name: [round(t, 4) for t in values] for name, values in times.items() if values},
        "median_s": {name: round(value, 4) for name, value in medians.items()},
        "baseline_s": round(medians["baseline"], 4),
        "poptrain_s": round(medians["poptrain"], 4),
        "ratio": round(ratio, 4),
        "ratio_per_repeat": [round(r, 4) for r in per_repeat],
        "cpu_seconds": {name: [round(t, 4) for t in values] for name, values in cpu.items() if values},
        "cpu_median_s": {name: round(value, 4) for name, value in cpu_medians.items()},
        "ratio_cpu": round(ratio_cpu, 4),
        "ratio_of_minimums": round(ratio_min, 4),
        "baseline_spread": round(spread, 4),
        "ratio_vs_baseline_with_copies": round(medians["poptrain"] / medians["baseline+copies"], 4)
        if "baseline+copies" in medians
        else None,
        "goal": GOAL,
        "goal_met": ratio <= GOAL,
        "same_work": check,
        "best_val_acc": {k: round(v, 4) for k, v in best.items()},
        "breakdown": split,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print()
    print(f"written to {args.out}")
    print(json.dumps(result, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
