"""Network topology as a hyperparameter (Augmented PBT).

A hidden layer is allocated at its largest width and a ``UnitMask`` after its activation says
which units are active. The ``Widths`` hyperparameter sets how many are; changing it changes
the network with its weights inherited:

- **grow**: an inactive unit becomes active with fresh incoming weights and *zero outgoing
  weights*, so the network computes the same function until it trains;
- **shrink**: the active unit with the smallest outgoing weight norm (the one whose removal
  changes the output least, for comparable activations) is switched off, its incoming row,
  bias and outgoing column zeroed.

The optimizer's per-parameter state (momentum, Adam's moments) is zeroed for the units that
change, so an inactive unit's weights stay exactly zero: masked units get no gradient. Every
function here works on stacked tensors ``[P, ...]`` (row ``row`` is one member), so the
vectorized executor and a single module (``P = 1`` views) share the same code.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from poptrain.errors import ConfigError


class UnitMask(nn.Module):
    """Multiplies the hidden layer before it by a 0/1 mask of its active units.

    ``hparam`` names the search space's ``Widths`` entry and ``layer`` which of its widths
    this layer takes.
    """

    mask: torch.Tensor  # a buffer (register_buffer): declared for type checkers

    def __init__(self, width: int, *, hparam: str = "widths", layer: int = 0) -> None:
        super().__init__()
        self.hparam = hparam
        self.layer = layer
        self.register_buffer("mask", torch.ones(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.mask


def masked_mlp(
    inputs: int,
    outputs: int,
    max_width: int,
    *,
    layers: int = 1,
    activation: Callable[[], nn.Module] = nn.Sigmoid,
    hparam: str = "widths",
) -> nn.Sequential:
    """An MLP whose ``layers`` hidden layers have up to ``max_width`` units each, the active ones
    set by the ``Widths`` hyperparameter ``hparam``."""
    modules: list[nn.Module] = []
    width_in = inputs
    for layer in range(layers):
        modules += [nn.Linear(width_in, max_width), activation(), UnitMask(max_width, hparam=hparam, layer=layer)]
        width_in = max_width
    modules.append(nn.Linear(width_in, outputs))
    return nn.Sequential(*modules)


@dataclass(frozen=True)
class MaskedLayer:
    """Where one masked hidden layer lives among a Sequential's parameters and buffers."""

    mask: str  # buffer name of its UnitMask
    incoming: str  # the Linear that computes it
    outgoing: str  # the Linear that reads it
    hparam: str
    layer: int


def masked_layers(module: nn.Module) -> list[MaskedLayer]:
    """The masked hidden layers of a Sequential, in order (none for other modules)."""
    if not isinstance(module, nn.Sequential):
        return []
    children = list(module.named_children())
    found = []
    for index, (name, child) in enumerate(children):
        if not isinstance(child, UnitMask):
            continue
        before = [n for n, c in children[:index] if isinstance(c, nn.Linear)]
        after = [n for n, c in children[index + 1 :] if isinstance(c, nn.Linear)]
        if not before or not after:
            raise ConfigError("a UnitMask must sit between two Linear layers (after the first one's activation)")
        found.append(MaskedLayer(f"{name}.mask", before[-1], after[0], child.hparam, child.layer))
    return found


def topology_hparams(module: nn.Module) -> set[str]:
    """The hyperparameter names that set the module's widths."""
    return {layer.hparam for layer in masked_layers(module)}


StateOf = Callable[[str], Sequence[torch.Tensor]]  # a parameter's optimizer state tensors, stacked


class Topology:
    """Applies widths to stacked parameters, buffers and optimizer state, in place."""

    def __init__(self, module: nn.Module) -> None:
        self.layers = masked_layers(module)

    def __bool__(self) -> bool:
        return bool(self.layers)

    def widths(self, buffers: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Active units per member and layer: ``[P, layers]``."""
        return torch.stack([buffers[layer.mask].sum(-1) for layer in self.layers], dim=-1).round().long()

    def apply(
        self,
        params: Mapping[str, torch.Tensor],
        buffers: Mapping[str, torch.Tensor],
        state_of: StateOf,
        row: int,
        hparams: Mapping[str, object],
        generator: torch.Generator,
        *,
        initial: bool = False,
    ) -> None:
        """Make member ``row``'s layers as wide as ``hparams`` says: the first units on a fresh
        network (``initial``), else by growing and shrinking one unit at a time."""
        with torch.no_grad():
            for layer in self.layers:
                widths = hparams.get(layer.hparam)
                if widths is None:
                    continue
                target = int(widths[layer.layer])  # type: ignore[index]
                mask = buffers[layer.mask][row]
                if target < 1 or target > mask.numel():
                    raise ConfigError(f"{layer.hparam}[{layer.layer}] = {target} is outside 1..{mask.numel()} units")
                if initial:
                    for unit in range(target, mask.numel()):
                        self._switch_off(layer, params, state_of, row, unit)
                    mask.zero_()
                    mask[:target] = 1
                    continue
                while int(mask.sum()) < target:
                    self.grow(layer, params, buffers, state_of, row, generator)
                while int(mask.sum()) > target:
                    self.shrink(layer, params, buffers, state_of, row)

    def grow(
        self,
        layer: MaskedLayer,
        params: Mapping[str, torch.Tensor],
        buffers: Mapping[str, torch.Tensor],
        state_of: StateOf,
        row: int,
        generator: torch.Generator,
    ) -> int:
        """Activate the first inactive unit: fresh incoming weights, zero outgoing ones."""
        mask = buffers[layer.mask][row]
        unit = int((mask == 0).nonzero()[0])
        weight = params[f"{layer.incoming}.weight"]
        bound = 1.0 / weight.shape[-1] ** 0.5  # nn.Linear's own initialisation range
        fresh = (torch.rand(weight.shape[-1], generator=generator) * 2 - 1) * bound
        inputs = self._input_mask(layer, buffers, row, weight.shape[-1])
        weight[row, unit] = (fresh * inputs).to(weight)
        bias = params.get(f"{layer.incoming}.bias")
        if bias is not None:
            bias[row, unit] = float((torch.rand((), generator=generator) * 2 - 1) * bound)
        params[f"{layer.outgoing}.weight"][row, :, unit] = 0.0
        self._zero_state(layer, state_of, row, unit)
        mask[unit] = 1.0
        return unit

    def shrink(
        self,
        layer: MaskedLayer,
        params: Mapping[str, torch.Tensor],
        buffers: Mapping[str, torch.Tensor],
        state_of: StateOf,
        row: int,
    ) -> int:
        """Switch off the active unit with the smallest outgoing weight norm."""
        mask = buffers[layer.mask][row]
        active = mask.nonzero().flatten()
        norms = params[f"{layer.outgoing}.weight"][row][:, active].norm(dim=0)
        unit = int(active[int(norms.argmin())])
        self._switch_off(layer, params, state_of, row, unit)
        mask[unit] = 0.0
        return unit

    def _switch_off(
        self, layer: MaskedLayer, params: Mapping[str, torch.Tensor], state_of: StateOf, row: int, unit: int
    ) -> None:
        params[f"{layer.incoming}.weight"][row, unit] = 0.0
        bias = params.get(f"{layer.incoming}.bias")
        if bias is not None:
            bias[row, unit] = 0.0
        params[f"{layer.outgoing}.weight"][row, :, unit] = 0.0
        self._zero_state(layer, state_of, row, unit)

    @staticmethod
    def _zero_state(layer: MaskedLayer, state_of: StateOf, row: int, unit: int) -> None:
        for tensor in state_of(f"{layer.incoming}.weight"):
            tensor[row, unit] = 0.0
        for tensor in state_of(f"{layer.incoming}.bias"):
            tensor[row, unit] = 0.0
        for tensor in state_of(f"{layer.outgoing}.weight"):
            tensor[row, :, unit] = 0.0

    def _input_mask(self, layer: MaskedLayer, buffers: Mapping[str, torch.Tensor], row: int, size: int) -> torch.Tensor:
        """Which inputs of the layer are live (the previous masked layer's units), so a new
        unit reads nothing from pruned ones."""
        index = self.layers.index(layer)
        if index == 0:
            return torch.ones(size)
        return buffers[self.layers[index - 1].mask][row].detach().cpu()

    def sizes(
        self, buffers: Mapping[str, torch.Tensor], inputs: int, outputs: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Weights and biases each member uses: ``([P], [P])``, counting active units only."""
        widths = self.widths(buffers).float()
        sizes = torch.cat(
            [torch.full_like(widths[:, :1], inputs), widths, torch.full_like(widths[:, :1], outputs)], dim=1
        )
        weights = (sizes[:, :-1] * sizes[:, 1:]).sum(1)
        biases = sizes[:, 1:].sum(1)
        return weights, biases


@dataclass(frozen=True)
class ModelView:
    """What a score function may know of each member's model: ``[P]`` tensors (``P = 1`` for a
    member trained alone). ``widths`` is ``[P, layers]`` (empty without masked layers)."""

    weights: torch.Tensor
    biases: torch.Tensor
    widths: torch.Tensor


def model_view(template: nn.Module, buffers: Mapping[str, torch.Tensor], size: int) -> ModelView:
    """The view of ``size`` members whose stacked buffers are ``buffers``."""
    topology = Topology(template)
    linears = [m for m in template.modules() if isinstance(m, nn.Linear)]
    if topology and linears:
        weights, biases = topology.sizes(buffers, linears[0].in_features, linears[-1].out_features)
        return ModelView(weights, biases, topology.widths(buffers))
    n_weights = sum(p.numel() for n, p in template.named_parameters() if n.endswith("weight"))
    n_biases = sum(p.numel() for n, p in template.named_parameters() if not n.endswith("weight"))
    return ModelView(
        torch.full((size,), float(n_weights)),
        torch.full((size,), float(n_biases)),
        torch.zeros(size, 0, dtype=torch.long),
    )
