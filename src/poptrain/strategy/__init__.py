"""PBT decisions as pure functions: ready, exploit, explore, and the plans that combine them."""

from poptrain.strategy._types import (
    Decision,
    Donor,
    ExploitFn,
    Explored,
    ExploreFn,
    HistoryExploreFn,
    MemberSnapshot,
    ReadyFn,
)
from poptrain.strategy.exploit import rank, replace_worst, tournament, truncation
from poptrain.strategy.explore import gaussian, perturb, resample
from poptrain.strategy.history import History, Observation, build_history, first_scores, uses_history
from poptrain.strategy.mfpbt import mf_exploit, mf_ready, mfpbt
from poptrain.strategy.pb2 import pb2
from poptrain.strategy.plan import (
    DEFAULT_STRATEGY,
    Strategy,
    at_step,
    decision_rng,
    explore_hparams,
    plan_generation,
    plan_member,
    plan_round,
    ranked_step,
    replacement,
)
from poptrain.strategy.ready import every
from poptrain.strategy.recent import lineage_scores, recent_window
from poptrain.strategy.significance import ttest

__all__ = [
    "DEFAULT_STRATEGY",
    "Decision",
    "Donor",
    "ExploitFn",
    "ExploreFn",
    "Explored",
    "History",
    "HistoryExploreFn",
    "MemberSnapshot",
    "Observation",
    "ReadyFn",
    "Strategy",
    "at_step",
    "build_history",
    "decision_rng",
    "every",
    "explore_hparams",
    "first_scores",
    "gaussian",
    "lineage_scores",
    "mf_exploit",
    "mf_ready",
    "mfpbt",
    "pb2",
    "perturb",
    "plan_generation",
    "plan_member",
    "plan_round",
    "rank",
    "ranked_step",
    "recent_window",
    "replace_worst",
    "replacement",
    "resample",
    "tournament",
    "truncation",
    "ttest",
    "uses_history",
]

# not part of __all__, but imported from here by the rest of poptrain (explicit re-exports)
from poptrain.strategy._spec import callable_from_spec as callable_from_spec
from poptrain.strategy._spec import callable_to_spec as callable_to_spec
from poptrain.strategy._spec import import_object as import_object
from poptrain.strategy._spec import strategy_from_spec as strategy_from_spec
from poptrain.strategy._spec import strategy_to_spec as strategy_to_spec
