"""A strategy's JSON form, for the run's stored spec and for YAML configs.

Built-in strategies round-trip: ``{"type": "truncation", "fraction": 0.2}``. A user's own
callable is stored by its import path (``{"type": "custom", "path": "pkg.mod:fn"}``) and
imported back when the run is loaded.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import TYPE_CHECKING, Any

from poptrain.errors import StrategyError
from poptrain.strategy.exploit import replace_worst, tournament, truncation
from poptrain.strategy.explore import gaussian, perturb, resample
from poptrain.strategy.mfpbt import mf_exploit, mf_ready
from poptrain.strategy.pb2 import pb2
from poptrain.strategy.plan import Strategy
from poptrain.strategy.ready import every
from poptrain.strategy.significance import ttest

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

BUILT_IN: dict[str, type[DataclassInstance]] = {
    "every": every,
    "truncation": truncation,
    "tournament": tournament,
    "perturb": perturb,
    "resample": resample,
    "replace_worst": replace_worst,
    "gaussian": gaussian,
    "pb2": pb2,
    "ttest": ttest,
    "mf_ready": mf_ready,
    "mf_exploit": mf_exploit,
}


def callable_to_spec(fn: Any) -> dict[str, Any] | None:
    """The JSON form of one strategy callable (``None`` stays ``None``)."""
    if fn is None:
        return None
    for name, cls in BUILT_IN.items():
        if type(fn) is cls:
            fields = dataclasses.asdict(fn)
            return {"type": name, **{k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()}}
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)
    if module and qualname and "<" not in qualname:
        return {"type": "custom", "path": f"{module}:{qualname}"}
    return {"type": "custom", "path": None, "repr": repr(fn)}


def callable_from_spec(spec: Any, role: str) -> Any:
    """Rebuild a strategy callable from its JSON form."""
    if spec is None:
        return None
    if not isinstance(spec, dict) or "type" not in spec:
        raise StrategyError(
            f"{role}: expected a mapping with a 'type', e.g. {{type: truncation, fraction: 0.2}}, got {spec!r}"
        )
    kind = spec["type"]
    args = {k: v for k, v in spec.items() if k != "type"}
    if kind == "custom":
        path = args.get("path")
        if not path:
            raise StrategyError(
                f"{role}: the run used a custom strategy {args.get('repr')!r} that cannot be imported; pass it again"
            )
        return import_object(path, role)
    if kind not in BUILT_IN:
        raise StrategyError(
            f"{role}: unknown strategy type {kind!r}; use one of {', '.join(sorted(BUILT_IN))} or custom"
        )
    try:
        return BUILT_IN[kind](**args)
    except TypeError as exc:
        raise StrategyError(f"{role}: bad arguments for {kind}: {exc}") from None


def import_object(path: str, role: str) -> Any:
    """Import ``package.module:attribute``."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise StrategyError(f"{role}: {path!r} is not an import path of the form package.module:name")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise StrategyError(
            f"{role}: cannot import {path!r} ({exc}); check the name and that it is on sys.path"
        ) from None
    return obj


def strategy_to_spec(strategy: Strategy) -> dict[str, Any]:
    return {
        "ready": callable_to_spec(strategy.ready),
        "exploit": callable_to_spec(strategy.exploit),
        "explore": callable_to_spec(strategy.explore),
        "inherit_hparams": strategy.inherit_hparams,
        "synchronous": strategy.synchronous,
        "replace_failed": strategy.replace_failed,
    }


def strategy_from_spec(spec: dict[str, Any]) -> Strategy:
    return Strategy(
        ready=callable_from_spec(spec.get("ready"), "ready"),
        exploit=callable_from_spec(spec.get("exploit"), "exploit"),
        explore=callable_from_spec(spec.get("explore"), "explore"),
        inherit_hparams=bool(spec.get("inherit_hparams", True)),
        synchronous=bool(spec.get("synchronous", False)),
        replace_failed=spec.get("replace_failed"),
    )
