"""PBT decisions as pure functions: ready, exploit, explore, and the plans that combine them."""

from poptrain.strategy._types import Decision, ExploitFn, Explored, ExploreFn, MemberSnapshot, ReadyFn
from poptrain.strategy.exploit import rank, replace_worst, tournament, truncation
from poptrain.strategy.explore import gaussian, perturb, resample
from poptrain.strategy.history import History, Observation, build_history, first_scores, uses_history
from poptrain.strategy.pb2 import pb2
from poptrain.strategy.plan import (
    Strategy, at_step, decision_rng, explore_hparams, plan_generation, plan_member, plan_round, replacement,
)
from poptrain.strategy.ready import every

__all__ = [
    "Decision", "ExploitFn", "at_step", "plan_round", "replacement", "Explored", "ExploreFn", "History", "MemberSnapshot", "Observation", "ReadyFn", "Strategy",
    "build_history", "decision_rng", "every", "explore_hparams", "first_scores", "gaussian", "pb2", "perturb",
    "plan_generation", "plan_member", "rank", "replace_worst", "resample", "tournament", "truncation", "uses_history",
]
from poptrain.strategy._spec import callable_from_spec, callable_to_spec, import_object, strategy_from_spec, strategy_to_spec  # noqa: E402,F401
