"""The full APBT Identity experiment (k=600, 8000 epochs) with the vectorized executor, beside
what a per-member loop would take, measured in the same run.

    .venv/bin/python -m benchmarks.apbt            # the full experiment, 3 repeats (goal: under 10 s)
    .venv/bin/python -m benchmarks.apbt --repeats 5
    .venv/bin/python -m benchmarks.apbt --scale 0.1
    .venv/bin/python -m benchmarks.apbt --quick    # --scale 0.05
    .venv/bin/python -m benchmarks.apbt --device cuda --threads 1

The vectorized run is ``experiments.apbt``'s Identity trial: 600 members of an 8-H-8
sigmoid MLP (H from 1 to 10, explored with lr and momentum), ready every 400 epochs, with the
default SQLite storage and checkpoints in a temporary folder; the time covers create_run and
optimize, once the process has imported the SQL storage's modules (SQLAlchemy's, about 0.3 s,
paid once per process and not by the experiment). The run and the per-member loop are
repeated (``--repeats``, default 3, interleaved) and the medians compared: on a shared machine
one run can be 30 % off the next. One more run, with timers patched into the executor, prints
where its time goes (training, evaluation, recording scores, ready rounds and the storage
commit within them). The per-member loop is plain PyTorch with no framework and no PBT: one 8-5-8 MLP (the
population's average width) and ``torch.optim.SGD`` trained on the 8 patterns for 2000
full-batch epochs, timed, and scaled to 600 members x 8000 epochs. The last line printed is a
JSON object; it is also written to benchmarks/results/apbt.json (``--out``). The machine's load
average is printed beside the figures. ``--device cuda`` without a CUDA GPU prints one line
and exits with status 2.
"""

from __future__ import annotations

import importlib
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import torch
from experiments import apbt
from experiments.harness import parser, timed
from torch import nn

from benchmarks.vectorized import StepTimers

GOAL_SECONDS = 10.0
APBT_PARTS = {  # where one more run's time goes (timers patched in): see StepTimers
    "training": ("poptrain.vectorized.population", "Population", "train_step"),
    "evaluation": ("poptrain.vectorized.population", "Population", "evaluate"),
    "recording each step's scores": ("poptrain.executors.vectorized", "_Lockstep", "_record"),
    "ready rounds (checkpoint, decisions, commit, copies)": ("poptrain.executors.vectorized", "_Lockstep", "_round"),
    "of which the storage commit": ("poptrain.storage._sql", "SQLStorage", "record_ready"),
}
RESULTS = Path(__file__).resolve().parent / "results" / "apbt.json"


def per_member_epoch_seconds(epochs: int = 2000, width: int = 5) -> float:
    """Seconds per epoch of one member trained alone with plain PyTorch (full batch of 8)."""
    x = torch.eye(8)
    model = nn.Sequential(nn.Linear(8, width), nn.Sigmoid(), nn.Linear(width, 8))
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0, momentum=0.9)
    loss_fn = nn.functional.binary_cross_entropy_with_logits
    for _ in range(100):  # warm-up
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(x), x).backward()
        optimizer.step()
    with timed() as clock:
        for epoch in range(epochs):
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(x), x).backward()
            optimizer.step()
            if (epoch + 1) % 40 == 0:  # evaluated once per PBT step, as in the experiment
                with torch.no_grad():
                    ((torch.sigmoid(model(x)) > 0.5).float() == x).all(-1).float().mean().item()
    return clock.seconds / epochs


def main() -> None:
    args_parser = parser(__doc__.split("\n\n")[0], quick="--scale 0.05", out=RESULTS, threads=True)
    args_parser.add_argument("--scale", type=float, default=1.0, help="< 1: fewer members and epochs")
    args_parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the population trains")
    args_parser.add_argument("--repeats", type=int, default=3, help="runs of each, interleaved; medians compared")
    args = args_parser.parse_args()
    if args.quick:
        args.scale, args.repeats = 0.05, 1
    if not 0 < args.scale <= 1:
        args_parser.error(f"--scale must be in (0, 1], got {args.scale}")
    if args.repeats < 1:
        args_parser.error(f"--repeats must be at least 1, got {args.repeats}")
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            "benchmarks.apbt: --device cuda needs a CUDA GPU, and torch.cuda.is_available() is False here; "
            "run it on a machine with one (benchmarks/gpu.sh), or leave out --device",
            file=sys.stderr,
        )
        sys.exit(2)
    prob = apbt.problem("identity")
    members = max(8, int(prob.population * args.scale))
    epochs = max(2 * prob.ready_steps, int(prob.steps * args.scale)) * prob.epochs_per_step
    importlib.import_module("poptrain.storage._sql")  # a once-per-process import, before the clock
    loops, runs = [], []
    for _ in range(args.repeats):
        loops.append(per_member_epoch_seconds())
        with tempfile.TemporaryDirectory() as root:
            with timed() as clock:
                run = apbt.run_trial("identity", 0, Path(root), scale=args.scale, device=args.device)
                if args.device == "cuda":
                    torch.cuda.synchronize()
            runs.append(clock.seconds)
            best = apbt.fittest_and_most_accurate(run, prob)["best"]
            run.close()
    with tempfile.TemporaryDirectory() as root, StepTimers(APBT_PARTS) as timers, timed() as clock:
        apbt.run_trial("identity", 0, Path(root), scale=args.scale, device=args.device).close()
    breakdown = {"run (with timers)": clock.seconds, **timers.seconds}
    seconds, loop = statistics.median(runs), statistics.median(loops)
    estimate = loop * members * epochs
    result = {
        "members": members,
        "epochs": epochs,
        "vectorized_seconds": seconds,
        "vectorized_runs": runs,
        "breakdown_seconds": breakdown,
        "per_member_loop_seconds_estimate": estimate,
        "per_member_epoch_microseconds": loop * 1e6,
        "speedup": estimate / seconds,
        "goal_seconds": GOAL_SECONDS,
        "fittest": best,
        "device": args.device,
        "threads": torch.get_num_threads(),
        "load_average": os.getloadavg()[0],
    }
    verdict = (
        f"goal < {GOAL_SECONDS:.0f} s: {'met' if seconds < GOAL_SECONDS else 'NOT met'}"
        if args.scale == 1
        else f"the goal of {GOAL_SECONDS:.0f} s is for the full run"
    )
    print(
        f"Identity, {members} members x {epochs} epochs: vectorized {seconds:.1f} s, the median of "
        f"{', '.join(f'{r:.1f}' for r in runs)} "
        f"({verdict}); a per-member loop would take "
        f"about {estimate:.0f} s ({loop * 1e6:.0f} us per member-epoch), {estimate / seconds:.0f}x longer. "
        f"Fittest: {best['topology']}, {100 * best['acc']:.0f}% of patterns exact. "
        f"{torch.get_num_threads()} threads on {args.device}, load average {os.getloadavg()[0]:.2f}"
    )
    print("where a run's time goes: " + ", ".join(f"{k} {v:.2f} s" for k, v in breakdown.items()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
