"""Search spaces: ``Float``, ``Int``, ``Choice``, ``Widths`` and the ``SearchSpace`` that names them."""

from poptrain.space._params import Choice, Float, Int, JsonValue, Param, Widths, param_from_dict
from poptrain.space._space import HParams, SearchSpace

__all__ = ["Choice", "Float", "HParams", "Int", "JsonValue", "Param", "SearchSpace", "Widths", "param_from_dict"]
