"""A run that a test kills with SIGKILL at random points and resumes (run as a script).

python kill_target.py ROOT SYNCHRONOUS
"""

from __future__ import annotations

import sys
import time

import poptrain
from poptrain.experiments.toy import SPACE, ToyQuadratic

STEPS = 48
POPULATION = 4


class SlowToy(ToyQuadratic):
    """The toy problem with a little sleep per step, so that kills land mid-run."""

    def step(self) -> None:
        time.sleep(0.003)
        super().step()


def open_run(root: str, synchronous: bool, storage: str | None = None) -> poptrain.Run:
    try:
        return poptrain.load_run("killed", root=root, storage=storage)
    except poptrain.RunNotFoundError:
        return poptrain.create_run(
            name="killed",
            space=SPACE,
            population_size=POPULATION,
            metric="Q",
            ready=poptrain.every(4),
            exploit=poptrain.tournament(),
            explore=poptrain.perturb((0.8, 1.2), resample_probability=0.3),
            synchronous=synchronous,
            seed=11,
            root=root,
            storage=storage,
        )


if __name__ == "__main__":
    print("go", flush=True)
    # scores written at every step, so that kills also land between a member's ready points
    open_run(sys.argv[1], sys.argv[2] == "1").optimize(SlowToy, steps=STEPS, flush_seconds=0.0)
    print("done", flush=True)
