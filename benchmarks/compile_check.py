"""Whether ``torch.compile`` pays for the vectorized executor's training on this CPU.

    .venv/bin/python -m benchmarks.compile_check --threads 2   # population 64, 30 epochs, 3 repeats
    .venv/bin/python -m benchmarks.compile_check --quick       # population 16, 4 epochs, 1 repeat

The digits experiment's vectorized run (``digits.vectorized_trainable()``, default SQLite
storage, checkpoints in a temporary folder) as poptrain runs it, and the same run with each
training step of the population (``Population._train_chunk``: forward, written-out backward,
penalties, clipping, optimizer update) wrapped in ``torch.compile``. First one compiled run
of 2 epochs pays the compilation (its time is reported as the compile cost, beside the same
run uncompiled); then the full runs alternate (plain, compiled, plain, ...) and their medians
are compared; a gain smaller than the plain runs' own spread is reported as none. Inductor's
cache is a fresh folder, so the compile cost is a cold one, as a user's first run pays it. Both
must reach the same best score. The last line printed is a JSON object; it
is also written to benchmarks/results/compile_check.json.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from experiments.harness import parser, set_threads, timed

import poptrain
from poptrain.experiments import digits
from poptrain.vectorized import population as vectorized_population

RESULTS = Path(__file__).resolve().parent / "results" / "compile_check.json"


def digits_run(population: int, epochs: int) -> tuple[float, float]:
    """Seconds for create_run + optimize + close, and the best score."""
    with tempfile.TemporaryDirectory() as root, timed() as clock:
        run = poptrain.create_run(
            name="digits",
            space=digits.SPACE,
            population_size=population,
            metric="val_acc",
            mode="max",
            ready=poptrain.every(4),
            exploit=poptrain.truncation(0.2),
            seed=0,
            root=root,
        )
        run.optimize(digits.vectorized_trainable(device="cpu"), steps=epochs, executor="vectorized")
        best = run.best()
        run.close()
    assert best is not None
    return clock.seconds, best.score


def compiled_training() -> Callable[[], None]:
    """Wrap each population's training step in ``torch.compile``; return the undo."""
    original = vectorized_population.Population._train_chunk
    compiled: dict[int, Any] = {}

    def train_chunk(self: Any, chunk: Any, x: torch.Tensor, y: torch.Tensor, terms: Any) -> None:
        step = compiled.get(id(self))
        if step is None:
            step = compiled[id(self)] = torch.compile(lambda c, xs, ys, t: original(self, c, xs, ys, t), dynamic=False)
        step(chunk, x, y, terms)

    vectorized_population.Population._train_chunk = train_chunk  # type: ignore[method-assign]

    def undo() -> None:
        vectorized_population.Population._train_chunk = original  # type: ignore[method-assign]

    return undo


def main() -> None:
    args_parser = parser(__doc__.split("\n\n")[0], quick="population 16, 4 epochs, 1 repeat", out=RESULTS, threads=True)
    args_parser.add_argument("--repeats", type=int, default=3, help="full runs of each, interleaved")
    args = args_parser.parse_args()
    if args.repeats < 1:
        args_parser.error(f"--repeats must be at least 1, got {args.repeats}")
    population, epochs, repeats = (16, 4, 1) if args.quick else (64, 30, args.repeats)
    set_threads(args.threads)
    cache = tempfile.TemporaryDirectory()
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache.name  # read at the first compile: a cold cache
    digits_run(2, 1)  # this process's one-time imports, untimed
    plain_first, _ = digits_run(population, 2)
    undo = compiled_training()
    try:
        compiled_first, _ = digits_run(population, 2)
    finally:
        undo()
    runs: dict[str, list[float]] = {"plain": [], "compiled": []}
    scores: dict[str, float] = {}
    for _ in range(repeats):
        for variant in ("plain", "compiled"):
            undo = compiled_training() if variant == "compiled" else (lambda: None)
            try:
                seconds, scores[variant] = digits_run(population, epochs)
            finally:
                undo()
            runs[variant].append(seconds)
    cache.cleanup()
    plain, compiled = statistics.median(runs["plain"]), statistics.median(runs["compiled"])
    spread = (max(runs["plain"]) - min(runs["plain"])) / plain
    pays = compiled < plain * (1 - spread)
    result = {
        "population": population,
        "epochs": epochs,
        "threads": torch.get_num_threads(),
        "compile_seconds": compiled_first - plain_first,
        "first_run_seconds": {"plain": plain_first, "compiled": compiled_first},
        "runs": runs,
        "median_seconds": {"plain": plain, "compiled": compiled},
        "ratio_compiled_to_plain": compiled / plain,
        "best_scores": scores,
        "same_best_score": scores["plain"] == scores["compiled"],
        "plain_spread": spread,
        "pays": pays,
        "load_average": os.getloadavg()[0],
    }
    print(
        f"population {population} x {epochs} epochs, {torch.get_num_threads()} threads: compiling took "
        f"{result['compile_seconds']:.1f} s; then compiled {compiled:.2f} s against plain {plain:.2f} s "
        f"(ratio {compiled / plain:.2f}, plain runs' spread {100 * spread:.0f} %: "
        f"{'it pays' if pays else 'no gain beyond the noise'}), same best score: "
        f"{result['same_best_score']}; load average {os.getloadavg()[0]:.2f}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
