"""PBT decisions as pure functions: ready, exploit, explore, and the plans that combine them."""

from poptrain.strategy._types import Decision, ExploitFn, Explored, ExploreFn, MemberSnapshot, ReadyFn
from poptrain.strategy.exploit import rank, replace_worst, tournament, truncation
from poptrain.strategy.explore import gaussian, perturb, resample
from poptrain.strategy.plan import Strategy, decision_rng, plan_generation, plan_member
from poptrain.strategy.ready import every

__all__ = [
    "Decision", "ExploitFn", "Explored", "ExploreFn", "MemberSnapshot", "ReadyFn", "Strategy",
    "decision_rng", "every", "gaussian", "perturb", "plan_generation", "plan_member", "rank", "replace_worst",
    "resample", "tournament", "truncation",
]
from poptrain.strategy._spec import callable_from_spec, callable_to_spec, import_object, strategy_from_spec, strategy_to_spec  # noqa: E402,F401
