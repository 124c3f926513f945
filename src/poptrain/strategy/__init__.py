"""PBT decisions as pure functions: ready, exploit, explore, and the plans that combine them."""

from poptrain.strategy._types import (
    Decision,
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
from poptrain.strategy.pb2 import pb2
from poptrain.strategy.plan import (
    Strategy,
    at_step,
    decision_rng,
    explore_hparams,
    plan_generation,
    plan_member,
    plan_round,
    replacement,
)
from poptrain.strategy.ready import every

__all__ = [
    "Decision",
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
    "pb2",
    "perturb",
    "plan_generation",
    "plan_member",
    "plan_round",
    "rank",
    "replace_worst",
    "replacement",
    "resample",
    "tournament",
    "truncation",
    "uses_history",
]

# not part of __all__, but imported from here by the rest of poptrain (explicit re-exports)
from poptrain.strategy._spec import callable_from_spec as callable_from_spec
from poptrain.strategy._spec import callable_to_spec as callable_to_spec
from poptrain.strategy._spec import import_object as import_object
from poptrain.strategy._spec import strategy_from_spec as strategy_from_spec
from poptrain.strategy._spec import strategy_to_spec as strategy_to_spec
