"""The Ray executor on a 2-node local Ray cluster against the processes executor, in one run.

    .venv/bin/python -m benchmarks.ray [--repeats 3] [--steps 30] [--population 16]

The digits experiment (population 16, 30 epochs, ready every 4) trains with the processes
executor (2 worker processes, one torch thread each) and with the Ray executor on a cluster
of two nodes with one CPU each, every server bound to 127.0.0.1 (one actor per node, one torch
thread each): the same cores. Prints the wall times (medians over interleaved repeats), their
ratio (goal: Ray at most 1.3x the processes executor) and the per-decision latency: from a
segment's result reaching the driver to its decision being recorded, and the driver's own time
to record and decide. The cluster's start is timed apart; it is paid once per cluster.
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

# run as a script, this file's folder comes first on sys.path and its name would hide Ray's package
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import torch

import poptrain
from poptrain.executors.ray_executor import RayExecutor, connect_ray
from poptrain.experiments import digits
from poptrain.testing.ray_cluster import local_cluster, wait_for_nodes


def make_run(root: str, population: int) -> poptrain.Run:
    settings = digits.experiment()
    return poptrain.create_run(
        name="digits",
        space=settings["space"],
        population_size=population,
        metric="val_acc",
        ready=settings["ready"],
        exploit=settings["exploit"],
        explore=settings["explore"],
        seed=0,
        root=root,
    )


def timed(fn) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--population", type=int, default=16)
    args = parser.parse_args()
    print(f"ray benchmark: digits MLP, population {args.population}, {args.steps} epochs, ready every 4")
    print(f"machine: nproc={os.cpu_count()}, torch {torch.__version__}, python {sys.version.split()[0]}")
    digits.load_split()
    processes, on_ray, latency, commit, best = [], [], [], [], {"processes": [], "ray": []}
    started = time.perf_counter()
    with local_cluster(workers=1, cpus_per_node=1) as cluster:
        connect_ray(cluster.address)
        wait_for_nodes(2)
        cluster_start = time.perf_counter() - started
        import ray

        print(
            f"cluster: 2 nodes on 127.0.0.1, {ray.cluster_resources().get('CPU'):g} CPUs, started in {cluster_start:.1f} s"
        )
        try:
            for repeat in range(args.repeats):
                with tempfile.TemporaryDirectory() as root:
                    run = make_run(root, args.population)
                    processes.append(
                        timed(
                            lambda run=run: run.optimize(
                                digits.DigitsMLP, steps=args.steps, executor="processes", workers=2
                            )
                        )
                    )
                    best["processes"].append(run.best().score)
                    run.close()
                with tempfile.TemporaryDirectory() as root:
                    executor = RayExecutor(cluster.address)
                    run = make_run(root, args.population)
                    on_ray.append(
                        timed(
                            lambda run=run, executor=executor: run.optimize(
                                digits.DigitsMLP, steps=args.steps, executor=executor
                            )
                        )
                    )
                    best["ray"].append(run.best().score)
                    run.close()
                    latency.extend(executor.stats.decision_seconds)
                    commit.extend(executor.stats.commit_seconds)
                print(
                    f"repeat {repeat + 1}/{args.repeats}: processes x2 {processes[-1]:.2f} s, ray 2 nodes {on_ray[-1]:.2f} s, "
                    f"ratio {on_ray[-1] / processes[-1]:.2f}"
                )
        finally:
            ray.shutdown()
    proc, ray_s = statistics.median(processes), statistics.median(on_ray)
    result = {
        "benchmark": "ray executor (2-node local cluster) vs processes executor, digits",
        "population": args.population,
        "steps": args.steps,
        "repeats": args.repeats,
        "processes_s": round(proc, 3),
        "ray_s": round(ray_s, 3),
        "ratio": round(ray_s / proc, 3),
        "goal_ratio_at_most": 1.3,
        "cluster_start_s": round(cluster_start, 2),
        "decision_latency_ms": {
            "median": round(1000 * statistics.median(latency), 2),
            "p95": round(1000 * percentile(latency, 0.95), 2),
            "decisions": len(latency),
        },
        "driver_record_and_decide_ms": {
            "median": round(1000 * statistics.median(commit), 2),
            "p95": round(1000 * percentile(commit, 0.95), 2),
        },
        "best_val_acc": {k: [round(v, 4) for v in values] for k, values in best.items()},
    }
    print(f"median: processes x2 {proc:.2f} s, ray {ray_s:.2f} s, ratio {ray_s / proc:.2f} (goal <= 1.3)")
    print(
        f"per decision: {result['decision_latency_ms']['median']} ms median, {result['decision_latency_ms']['p95']} ms p95 "
        f"from result to recorded decision; the driver's record-and-decide {result['driver_record_and_decide_ms']['median']} ms median"
    )
    print(json.dumps(result))
    out = Path(__file__).resolve().parent / "results" / "ray.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
