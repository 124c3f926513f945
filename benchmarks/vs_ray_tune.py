"""poptrain against Ray Tune's PopulationBasedTraining on the digits experiment, in one run.

    .venv/bin/pip install -e ".[tune]" && .venv/bin/python -m benchmarks.vs_ray_tune [--seeds 3]
    .venv/bin/python -m benchmarks.vs_ray_tune --quick     # smoke run: 1 seed, population 4, 8 epochs
    .venv/bin/python -m benchmarks.vs_ray_tune --population 64 --epochs 10 --executors "ray tune,sequential"

The digits MLP (``poptrain.experiments.digits``: 64-128-10, SGD with lr, momentum, weight decay
and dropout explored, one step = one epoch at batch 64, validation accuracy the metric),
population 8, 30 epochs, ready/perturb every 4 steps, truncation 20 %, perturb by x0.8/x1.2 or
resample with probability 0.25, under four drivers, interleaved per seed (so a slow spell of the
machine hits all alike):

  ray tune     ``ray.tune.Tuner`` with ``PopulationBasedTraining`` and a class trainable that
               wraps poptrain's ``DigitsMLP`` (the same model, data, batch order code and
               per-step work); ``reuse_actors=True`` (``reset_config`` applies new hparams in
               place, as poptrain's ``set_hparams``), one CPU per trial, Ray with 2 CPUs.
               Timed: ``Tuner(...)`` + ``Tuner.fit()`` (actor start included); ``ray.init`` and
               ``ray.shutdown`` are timed separately ("ray start"/"ray stop") and excluded.
  sequential   ``run.optimize(digits.DigitsMLP, executor="sequential")``, 2 torch threads.
  processes    ``executor="processes", workers=2``, 1 torch thread per worker.
  vectorized   ``run.optimize(digits.vectorized_trainable(device="cpu"), executor="vectorized")``,
               2 torch threads.
  poptrain runs are timed from ``create_run`` to ``close`` (SQLite storage and checkpoints in a
  fresh temporary folder), after one untimed 2-member, 1-epoch run of each executor that pays
  this process's one-time imports; Ray Tune's worker processes import inside its time, as every
  fresh Ray worker does (``ray.init`` itself is excluded).

Matching the two: poptrain draws member ``slot``'s first hyperparameters with
``SearchSpace(SPACE).sample(initial_rng(seed, slot))`` and seeds its training code with
``member_seed(seed, slot)``. Tune gets exactly those: its ``param_space`` is a grid over the
slots 0..P-1 (``num_samples=1``, so P trials) and ``tune.sample_from`` fills each trial's lr,
momentum, weight decay and dropout with that slot's poptrain values; the trainable's
``TrainContext.seed`` is ``member_seed(seed, slot)``. Tune's own PBT decisions draw from Python's
``random`` in the driver, seeded with the run seed (poptrain's from its own seeded streams: the
decisions themselves differ). ``hyperparam_mutations`` are the same priors (``tune.loguniform`` for
the log-scale lr and weight decay, ``tune.uniform`` otherwise); Tune does not keep a perturbed
value inside its prior's bounds (dropout 0.7 x 1.2 x 1.2 > 1 would crash ``nn.Dropout``), so a
``custom_explore_fn`` clips to the bounds as poptrain does. One remaining difference: poptrain
moves a non-log value of exactly 0 (e.g. momentum 0) by +-20 % of its range, Tune leaves it at 0.

Test accuracy: the best member by final validation accuracy, its final checkpoint's model on the
test split with ``digits.accuracy`` (what ``digits.summarize`` does for poptrain runs).
Memory: peak PSS of this process and all its descendants (for Tune: the Ray cluster included),
sampled every 0.2 s from /proc (``--no-memory`` turns it off).

Ray is started with ``address="local"`` (always a new local cluster, never someone else's),
``include_dashboard=False`` and ``_node_ip_address="127.0.0.1"`` so its servers listen on the
loopback only, and always shut down in a ``finally``.

Run it on an otherwise idle machine: with 2 torch threads on 2 cores of which another job holds
one, the sequential and vectorized runs slow down many-fold (OpenMP threads wait on each other;
seen in a smoke run next to a pytest: sequential 2.2 s -> 59 s) while the 1-thread Tune trials and
processes workers barely notice. The 1-minute load average before each run is printed and kept.

Prints a markdown table and writes benchmarks/results/vs_ray_tune.json (``--out`` elsewhere).
"""

from __future__ import annotations

import os
import sys

# benchmarks/ holds a ray.py of its own: keep this script's folder off the import path so that
# `import ray` finds the package.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before ray is imported (keeps it on 127.0.0.1)
os.environ.pop("RAY_ADDRESS", None)  # never attach to another cluster
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: no experiment banner

import argparse
import json
import logging
import platform
import random
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Self

import torch

import poptrain
from poptrain.experiments import digits
from poptrain.seeding import initial_rng, member_seed
from poptrain.space import SearchSpace

RESULTS = Path(__file__).resolve().parent / "results" / "vs_ray_tune.json"
EXECUTORS = ("ray tune", "sequential", "processes", "vectorized")
MAIN_THREADS = 2  # torch threads in this process (sequential, vectorized)
SETTINGS = digits.experiment()
READY_EVERY = SETTINGS["ready"].steps if hasattr(SETTINGS["ready"], "steps") else 4
TRUNCATION = SETTINGS["exploit"].fraction
FACTORS = tuple(SETTINGS["explore"].factors)
RESAMPLE = SETTINGS["explore"].resample_probability


# --- memory -------------------------------------------------------------------------------------
def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def _pss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class PeakMemory:
    """Peak PSS (MiB) of this process and its descendants, sampled in a thread."""

    def __init__(self, enabled: bool, interval: float = 0.2) -> None:
        self.enabled, self.interval, self.peak_kib = enabled, interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            total = sum(_pss_kib(pid) for pid in _descendants(os.getpid()))
            self.peak_kib = max(self.peak_kib, total)
            self._stop.wait(self.interval)

    def __enter__(self) -> Self:
        if self.enabled:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self._stop.set()
            self._thread.join()

    @property
    def mib(self) -> float | None:
        return self.peak_kib / 1024 if self.enabled else None


# --- the shared set-up ----------------------------------------------------------------------------
def initial_population(seed: int, population: int) -> list[dict[str, float]]:
    """The first hyperparameters ``poptrain.create_run(seed=seed)`` gives each slot."""
    space = SearchSpace(digits.SPACE)
    return [space.sample(initial_rng(seed, slot)) for slot in range(population)]


def test_accuracy(state: dict[str, Any]) -> float:
    """The model in a DigitsMLP state dict on the test split (as ``digits.summarize``)."""
    model = digits.build_model(0.0)
    model.load_state_dict(state["model"])
    data = digits.load_split()
    return digits.accuracy(model, data["x_test"], data["y_test"])[0]


# --- Ray Tune -------------------------------------------------------------------------------------
def make_tune_trainable() -> type:
    from ray import tune

    class TuneDigits(tune.Trainable):
        """poptrain's DigitsMLP as a Ray Tune class trainable: one step = one epoch + evaluate."""

        def setup(self, config: dict[str, Any]) -> None:
            torch.set_num_threads(1)  # two trials run at once on the 2 CPUs
            slot, run_seed = int(config["slot"]), int(config["run_seed"])
            self.member = digits.DigitsMLP()
            context = poptrain.TrainContext(
                run_name="tune", slot=slot, seed=member_seed(run_seed, slot), run_seed=run_seed
            )
            self.member.setup(self._hparams(config), context)
            self.count_file = config.get("count_file")

        @staticmethod
        def _hparams(config: dict[str, Any]) -> dict[str, float]:
            return {name: float(config[name]) for name in digits.SPACE}

        def step(self) -> dict[str, float]:
            self.member.step()
            if self.count_file:
                with open(self.count_file, "a") as f:
                    f.write(".")
            return dict(self.member.evaluate())

        def save_checkpoint(self, checkpoint_dir: str) -> None:
            torch.save(self.member.state_dict(), os.path.join(checkpoint_dir, "state.pt"))

        def load_checkpoint(self, checkpoint_dir: str) -> None:
            self.member.load_state_dict(torch.load(os.path.join(checkpoint_dir, "state.pt"), weights_only=False))

        def reset_config(self, new_config: dict[str, Any]) -> bool:
            self.member.set_hparams(self._hparams(new_config))
            return True

    return TuneDigits


def clip_to_space(config: dict[str, Any]) -> dict[str, Any]:
    """Keep perturbed values inside the priors' bounds (poptrain clips; Tune does not)."""
    for name, param in digits.SPACE.items():
        config[name] = min(max(float(config[name]), float(param.low)), float(param.high))
    return config


def ray_start() -> float:
    import ray

    started = time.perf_counter()
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
        logging_level=logging.ERROR,  # quiet: trial failures are raised below
    )
    seconds = time.perf_counter() - started
    for name in ("ray", "ray.tune"):
        logging.getLogger(name).setLevel(logging.ERROR)
    return seconds


def ray_stop() -> float:
    import ray

    started = time.perf_counter()
    ray.shutdown()
    return time.perf_counter() - started


def tune_run(seed: int, population: int, epochs: int, memory: bool) -> dict[str, Any]:
    import ray
    from ray import tune

    first = initial_population(seed, population)
    mutations = {
        name: (tune.loguniform if param.log else tune.uniform)(float(param.low), float(param.high))
        for name, param in digits.SPACE.items()
    }
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as root, PeakMemory(memory) as peak:
        count_file = os.path.join(root, "steps")
        param_space: dict[str, Any] = {
            "slot": tune.grid_search(list(range(population))),
            "run_seed": seed,
            "count_file": count_file,
        }
        for name in digits.SPACE:
            param_space[name] = tune.sample_from(lambda config, name=name: first[config["slot"]][name])
        try:
            result["ray_start_s"] = ray_start()
            random.seed(seed)  # Tune's PBT decisions use the driver's `random`
            started = time.perf_counter()
            scheduler = tune.schedulers.PopulationBasedTraining(
                time_attr="training_iteration",
                metric="val_acc",
                mode="max",
                perturbation_interval=READY_EVERY,
                hyperparam_mutations=mutations,
                quantile_fraction=TRUNCATION,
                resample_probability=RESAMPLE,
                perturbation_factors=tuple(sorted(FACTORS, reverse=True)),
                custom_explore_fn=clip_to_space,
            )
            tuner = tune.Tuner(
                tune.with_resources(make_tune_trainable(), {"cpu": 1}),
                param_space=param_space,
                tune_config=tune.TuneConfig(scheduler=scheduler, num_samples=1, reuse_actors=True),
                run_config=tune.RunConfig(
                    name="digits",
                    storage_path=os.path.join(root, "tune"),
                    stop={"training_iteration": epochs},
                    verbose=0,
                    checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=True),
                ),
            )
            grid = tuner.fit()
            result["seconds"] = time.perf_counter() - started
            errors = [r.error for r in grid if r.error is not None]
            if errors:
                raise RuntimeError(f"{len(errors)} Tune trial(s) failed: {errors[0]!r}")
            best = grid.get_best_result(metric="val_acc", mode="max", scope="last")
            result["best_val_acc"] = float(best.metrics["val_acc"])
            if best.checkpoint is None:
                raise RuntimeError("Tune's best trial has no checkpoint")
            with best.checkpoint.as_directory() as folder:
                result["test_acc"] = test_accuracy(torch.load(os.path.join(folder, "state.pt"), weights_only=False))
            with open(count_file) as f:
                result["member_epochs_trained"] = len(f.read())
        finally:
            if ray.is_initialized():
                result["ray_stop_s"] = ray_stop()
    result["peak_pss_mib"] = peak.mib
    return result


# --- poptrain -------------------------------------------------------------------------------------
def poptrain_run(executor: str, seed: int, population: int, epochs: int, memory: bool) -> dict[str, Any]:
    if executor == "vectorized":
        trainable: Any = digits.vectorized_trainable(device="cpu")
        kwargs: dict[str, Any] = {"executor": "vectorized"}
    elif executor == "processes":
        trainable, kwargs = digits.DigitsMLP, {"executor": "processes", "workers": 2}
    else:
        trainable, kwargs = digits.DigitsMLP, {"executor": "sequential"}
    with tempfile.TemporaryDirectory() as root, PeakMemory(memory) as peak:
        started = time.perf_counter()
        run = poptrain.create_run(
            name="digits",
            space=SETTINGS["space"],
            population_size=population,
            metric="val_acc",
            mode="max",
            ready=SETTINGS["ready"],
            exploit=SETTINGS["exploit"],
            explore=SETTINGS["explore"],
            seed=seed,
            root=root,
        )
        try:
            run.optimize(trainable, steps=epochs, **kwargs)
            seconds = time.perf_counter() - started
            best = run.best()
            summary = digits.summarize(run)
        finally:
            run.close()
    return {
        "seconds": seconds,
        "best_val_acc": float(best.score) if best else float("nan"),
        "test_acc": summary.get("test_acc", float("nan")),
        "peak_pss_mib": peak.mib,
    }


# --- report ---------------------------------------------------------------------------------------
def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} [{min(values):.3f}–{max(values):.3f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="run seeds 0..N-1 (default 3)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--population", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 seed, population 4, 8 epochs")
    parser.add_argument("--no-memory", action="store_true", help="do not sample peak memory")
    parser.add_argument(
        "--threads",
        type=int,
        default=MAIN_THREADS,
        help=f"torch threads for the sequential and vectorized runs (default {MAIN_THREADS})",
    )
    parser.add_argument(
        "--executors",
        default=",".join(EXECUTORS),
        help=f"comma-separated drivers to run, Ray Tune always among them (default: {','.join(EXECUTORS)})",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"JSON output (default {RESULTS})")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.population, args.epochs = 1, 4, 8
    chosen = [name.strip() for name in args.executors.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in EXECUTORS]
    if unknown:
        parser.error(f"unknown executor(s) {', '.join(unknown)}; choose from {', '.join(EXECUTORS)}")
    executors = [name for name in EXECUTORS if name in chosen or name == "ray tune"]
    load_start = [round(x, 2) for x in os.getloadavg()]
    memory = not args.no_memory

    import ray

    torch.set_num_threads(args.threads)
    digits.load_split()
    for name in executors:  # untimed: this process's one-time imports (torch's optimizers pull in
        if name != "ray tune":  # torch._dynamo, seconds) are paid before any driver is timed
            poptrain_run(name, 0, 2, 1, False)
            torch.set_num_threads(args.threads)
    threads = (
        f"torch threads: sequential and vectorized {args.threads} (this process); "
        "Ray Tune trials and processes workers 1 each, 2 at a time"
    )
    print(
        f"digits MLP, population {args.population}, {args.epochs} epochs, seeds 0..{args.seeds - 1}; "
        f"ready every {READY_EVERY}, truncation {TRUNCATION}, factors {FACTORS}, resample {RESAMPLE}"
    )
    print(
        f"machine: {os.cpu_count()} CPUs, {platform.machine()}, python {sys.version.split()[0]}, "
        f"torch {torch.__version__}, ray {ray.__version__}, poptrain {getattr(poptrain, '__version__', '?')}"
    )
    print(f"{threads}; load average at start {load_start}", flush=True)

    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in executors}
    for seed in range(args.seeds):
        for name in executors:
            load = round(os.getloadavg()[0], 2)  # 1-minute load average: another job on the machine shows here
            if name == "ray tune":
                row = tune_run(seed, args.population, args.epochs, memory)
            else:
                row = poptrain_run(name, seed, args.population, args.epochs, memory)
            torch.set_num_threads(args.threads)
            row["seed"], row["load_before"] = seed, load
            runs[name].append(row)
            extra = (
                f" (ray start {row['ray_start_s']:.2f} s, stop {row['ray_stop_s']:.2f} s, "
                f"{row['member_epochs_trained']} member-epochs for {args.population * args.epochs} planned)"
                if name == "ray tune"
                else ""
            )
            memory_note = f", peak PSS {row['peak_pss_mib']:.0f} MiB" if row["peak_pss_mib"] else ""
            print(
                f"  seed {seed} {name:>10}: {row['seconds']:6.2f} s, best val {row['best_val_acc']:.3f}, "
                f"test {row['test_acc']:.3f}{memory_note}{extra}; load before {load}",
                flush=True,
            )

    tune_median = statistics.median(r["seconds"] for r in runs["ray tune"])
    summary: dict[str, Any] = {}
    print()
    print(
        "| executor | wall time (median s) | ratio to Ray Tune | best member test acc (median [min–max]) "
        "| best val acc (median) | peak PSS (median MiB) |"
    )
    print("|---|---|---|---|---|---|")
    for name in executors:
        rows = runs[name]
        seconds = statistics.median(r["seconds"] for r in rows)
        pss = [r["peak_pss_mib"] for r in rows if r["peak_pss_mib"] is not None]
        summary[name] = {
            "seconds_median": seconds,
            "seconds": [r["seconds"] for r in rows],
            "time_ratio_to_ray_tune": seconds / tune_median,
            "speedup_vs_ray_tune": tune_median / seconds,
            "test_acc_median": statistics.median(r["test_acc"] for r in rows),
            "test_acc": [r["test_acc"] for r in rows],
            "best_val_acc_median": statistics.median(r["best_val_acc"] for r in rows),
            "peak_pss_mib_median": statistics.median(pss) if pss else None,
        }
        ratio = (
            "1.00 (baseline)"
            if name == "ray tune"
            else f"{seconds / tune_median:.2f} ({tune_median / seconds:.1f}x faster)"
        )
        print(
            f"| {name} | {seconds:.2f} | {ratio} | "
            f"{spread([r['test_acc'] for r in rows])} | {summary[name]['best_val_acc_median']:.3f} | "
            f"{summary[name]['peak_pss_mib_median'] or float('nan'):.0f} |"
        )
    starts = [r["ray_start_s"] for r in runs["ray tune"]]
    stops = [r["ray_stop_s"] for r in runs["ray tune"]]
    trained = [r["member_epochs_trained"] for r in runs["ray tune"]]
    print(
        f"\nRay start (ray.init, excluded from Tune's time): median {statistics.median(starts):.2f} s; "
        f"ray.shutdown {statistics.median(stops):.2f} s. Tune trained median {statistics.median(trained):.0f} "
        f"member-epochs for {args.population * args.epochs} planned."
    )
    load_end = [round(x, 2) for x in os.getloadavg()]
    print(f"{threads}; load average at start {load_start}, at the end {load_end}")
    for name in executors:
        if name != "ray tune":
            print(
                f"ratio {name}/ray tune {summary[name]['time_ratio_to_ray_tune']:.3f} "
                f"({summary[name]['speedup_vs_ray_tune']:.2f}x faster; ray tune median {tune_median:.2f} s)"
            )

    result = {
        "benchmark": "poptrain executors vs Ray Tune PopulationBasedTraining, digits MLP",
        "population": args.population,
        "epochs": args.epochs,
        "seeds": args.seeds,
        "quick": args.quick,
        "ready_every": READY_EVERY,
        "truncation": TRUNCATION,
        "perturbation_factors": FACTORS,
        "resample_probability": RESAMPLE,
        "threads": threads,
        "executors": executors,
        "loadavg": {"start": load_start, "end": load_end},
        "summary": summary,
        "runs": runs,
        "ray_start_s_median": statistics.median(starts),
        "ray_stop_s_median": statistics.median(stops),
        "ray_member_epochs_trained_median": statistics.median(trained),
        "planned_member_epochs": args.population * args.epochs,
        "versions": {"torch": torch.__version__, "ray": ray.__version__, "python": sys.version.split()[0]},
        "cpus": os.cpu_count(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
