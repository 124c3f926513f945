"""The population checkpoint format the vectorized executor writes (one file for the whole
population, every member's tensors stacked), and how one member's state is cut out of it.
Plain dicts and tensors: no engine is imported, so any checkpoint store reads it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from poptrain.errors import CheckpointError

FORMAT = "poptrain.population/1"


def is_population_checkpoint(state: Any) -> bool:
    return isinstance(state, Mapping) and state.get("format") == FORMAT


def member_from_checkpoint(state: Mapping[str, Any], slot: int) -> dict[str, Any]:
    """Member ``slot``'s state cut out of a population checkpoint (``MemberTrainable`` layout)."""
    if slot not in state["slots"]:
        raise CheckpointError(f"population checkpoint has no member {slot} (it holds slots {state['slots'][:8]}...)")
    row = state["slots"].index(slot)
    model = {k: v[row].clone() for k, v in state["params"].items()}
    model.update({k: v[row].clone() for k, v in state["buffers"].items()})
    opt = state["optimizer"]
    per_param: dict[int, dict[str, Any]] = {}
    for name, tensors in opt["slots"].items():
        for i, tensor in enumerate(tensors):
            per_param.setdefault(i, {})[name] = tensor[row].clone()
    if opt["count_in_state"]:
        for entry in per_param.values():
            entry["step"] = opt["count"][row].clone()
    groups = [dict(g) for g in opt["groups"][row]]
    for group in groups:
        group["params"] = list(range(len(per_param)))
    return {"model": model, "optimizer": {"state": per_param, "param_groups": groups}, "step": int(state["steps"][row])}
