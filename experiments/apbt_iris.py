"""Augmented PBT on iris with the APBT paper's settings (see ``experiments.apbt``):

poptrain run experiments.apbt_iris
python -m experiments.apbt iris --trials 3    # the paper's table, ours beside it
"""

from __future__ import annotations

from typing import Any

import poptrain
from experiments import apbt


def experiment() -> dict[str, Any]:
    """One trial: the paper's population, readiness and epochs, trained as one program."""
    return apbt.experiment("iris")


def summarize(run: poptrain.Run) -> dict[str, float]:
    """The fittest member measured on held-out data, and the most accurate one."""
    return apbt.summarize(run, "iris")
