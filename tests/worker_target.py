"""A worker process for the lease tests (run as a script): joins run ``killed`` and trains.

python worker_target.py ROOT LEASE_SECONDS
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from kill_target import STEPS, SlowToy
from poptrain.executors.processes import WorkerJob, work


class SlowerToy(SlowToy):
    """Long enough steps that a test can kill the worker between two ready points."""

    def step(self) -> None:
        time.sleep(0.02)
        super().step()


def job(root: str, lease: float, trainable: type = SlowToy) -> WorkerJob:
    folder = Path(root) / "killed"
    return WorkerJob(
        f"sqlite:///{folder / 'poptrain.db'}",
        "killed",
        str(folder / "checkpoints"),
        trainable,
        STEPS,
        lease_seconds=lease,
        flush_seconds=0.0,
    )


if __name__ == "__main__":
    print("go", flush=True)
    work(job(sys.argv[1], float(sys.argv[2]), SlowerToy))
    print("done", flush=True)
