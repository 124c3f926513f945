"""A named set of hyperparameters: validation, sampling, moves and a JSON form."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from poptrain.errors import SearchSpaceError
from poptrain.space._params import JsonValue, Param, param_from_dict

HParams = dict[str, JsonValue]


class SearchSpace(Mapping[str, Param]):
    """An ordered mapping of names to parameters, checked on construction.

    Accepts ``Param`` objects or their dict form (``{"type": "float", "low": ..., "high": ...}``).
    """

    def __init__(self, params: Mapping[str, Any]) -> None:
        if isinstance(params, SearchSpace):
            self._params: dict[str, Param] = dict(params._params)
            return
        if not isinstance(params, Mapping):
            raise SearchSpaceError(
                f"the search space must be a mapping of names to parameters, got {type(params).__name__}"
            )
        if not params:
            raise SearchSpaceError(
                "the search space is empty; give at least one parameter, e.g. {'lr': Float(1e-4, 1e-1, log=True)}"
            )
        built: dict[str, Param] = {}
        for name, spec in params.items():
            if not isinstance(name, str) or not name:
                raise SearchSpaceError(f"parameter names must be non-empty strings, got {name!r}")
            param = param_from_dict(name, spec)
            param.check(name)
            built[name] = param
        self._params = built

    def __getitem__(self, name: str) -> Param:
        return self._params[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._params)

    def __len__(self) -> int:
        return len(self._params)

    def __repr__(self) -> str:
        return f"SearchSpace({self._params!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SearchSpace) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    def sample(self, rng: np.random.Generator) -> HParams:
        """Draw every parameter from its prior, in the space's order."""
        return {name: param.sample(rng) for name, param in self._params.items()}

    def validate(self, hparams: Mapping[str, JsonValue]) -> HParams:
        """Check that ``hparams`` has exactly this space's names, each inside its domain."""
        missing = [n for n in self._params if n not in hparams]
        extra = [n for n in hparams if n not in self._params]
        if missing or extra:
            raise SearchSpaceError(
                f"hyperparameters do not match the search space: missing {missing}, unexpected {extra}"
            )
        for name, param in self._params.items():
            if not param.contains(hparams[name]):
                raise SearchSpaceError(f"parameter {name!r}: value {hparams[name]!r} is outside {param!r}")
        return {name: hparams[name] for name in self._params}

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """The JSON form, read back by ``SearchSpace(...)``."""
        return {name: param.to_dict() for name, param in self._params.items()}
