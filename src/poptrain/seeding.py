"""Every random stream of a run, derived from its one seed (no global random state)."""

from __future__ import annotations

import numpy as np

from poptrain.strategy import decision_rng

__all__ = ["decision_rng", "initial_rng", "member_seed"]


def initial_rng(seed: int, slot: int) -> np.random.Generator:
    """The generator that draws member ``slot``'s first hyperparameters."""
    return np.random.default_rng(np.random.SeedSequence([seed, slot, 0, 0]))


def member_seed(seed: int, slot: int) -> int:
    """The integer seed handed to member ``slot``'s training code (``TrainContext.seed``)."""
    return int(np.random.SeedSequence([seed, slot, 2]).generate_state(1)[0])
