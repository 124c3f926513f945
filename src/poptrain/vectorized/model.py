"""Run one ``torch.nn.Module`` architecture for a whole population at once.

Two ways, the faster chosen automatically:

- **Batched matmuls** for an ``nn.Sequential`` of ``Linear`` layers, element-wise activations,
  dropout and a leading ``Flatten``: activations are kept feature-major (``[P, features,
  batch]``), the first layer is one large matrix product shared by every member, later layers
  are one ``baddbmm`` each. On a 2-core CPU this is about 2x faster than ``vmap``.
- **``torch.func.vmap(functional_call)``** over stacked parameters for any other module.

Both compute what each member's own module would compute.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any, cast

import torch
from torch import nn

from poptrain.errors import ConfigError

ELEMENTWISE = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Tanh,
    nn.Sigmoid,
    nn.Softplus,
    nn.Softsign,
    nn.Hardtanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Tanhshrink,
    nn.Identity,
)


class Dropout(nn.Module):
    """Dropout whose rate is a hyperparameter of the member (a buffer, so it is stacked,
    copied on exploit and written on explore). ``hparam`` names the search-space entry."""

    rate: torch.Tensor  # a buffer (register_buffer): declared for type checkers

    def __init__(self, rate: float = 0.0, hparam: str = "dropout") -> None:
        super().__init__()
        if not 0.0 <= rate < 1.0:
            raise ConfigError(f"dropout rate must be in [0, 1), got {rate!r}")
        self.hparam = hparam
        self.register_buffer("rate", torch.tensor(float(rate)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        rate = self.rate
        return x * (torch.rand_like(x) >= rate) / (1 - rate)  # no branch: also runs under vmap


def hparam_buffers(module: nn.Module) -> dict[str, str]:
    """Buffers that carry a hyperparameter: ``{buffer name: hyperparameter name}``."""
    return {
        f"{name}.rate" if name else "rate": m.hparam for name, m in module.named_modules() if isinstance(m, Dropout)
    }


def _fast_plan(module: nn.Module) -> list[tuple[str, str, nn.Module]] | None:
    """The layer plan of a Sequential MLP the batched-matmul path can run, else ``None``."""
    if not isinstance(module, nn.Sequential):
        return None
    from poptrain.apbt.topology import UnitMask

    masks = {f"{n}.mask" for n, m in module.named_modules() if isinstance(m, UnitMask)}
    if any(name not in hparam_buffers(module) and name not in masks for name, _ in module.named_buffers()):
        return None  # running statistics (BatchNorm) and the like need vmap
    plan: list[tuple[str, str, nn.Module]] = []
    seen_linear = False
    for name, layer in module.named_children():
        if isinstance(layer, nn.Flatten) and not seen_linear and layer.end_dim == -1:
            plan.append(("flatten", name, layer))
        elif isinstance(layer, nn.Linear):
            seen_linear = True
            plan.append(("linear", name, layer))
        elif not seen_linear:
            return None  # the first layer must be Linear: its input is shared by every member
        elif isinstance(layer, ELEMENTWISE):
            plan.append(("elementwise", name, layer))
        elif isinstance(layer, Dropout):
            plan.append(("dropout", name, layer))
        elif isinstance(layer, UnitMask):
            plan.append(("unit_mask", name, layer))
        elif isinstance(layer, nn.Dropout):
            plan.append(("fixed_dropout", name, layer))
        else:
            return None
    return plan if seen_linear else None


def dropout_mask(hidden: torch.Tensor, rate: torch.Tensor) -> torch.Tensor:
    """A scaled keep-mask for ``hidden``, from one random byte per element (drawing bytes is
    about 6x cheaper than ``rand_like`` on a CPU): rates apply in steps of 1/256."""
    count = hidden.numel()
    bits = torch.empty((count + 7) // 8, dtype=torch.int64, device=hidden.device).random_(-(2**63), 2**63 - 1)
    draws = bits.view(torch.uint8)[:count].view(hidden.shape)
    threshold = torch.round(rate * 256).clamp(0, 255)
    # keep where draws >= threshold, as 0.0 / 1.0 without a bool tensor (a CPU comparison that
    # writes bools is ~10x slower than float arithmetic): both are whole numbers, so
    # draws - (threshold - 1) clamped to [0, 1] is exactly 1 where kept and 0 where not
    keep = draws.to(threshold.dtype).sub_(threshold - 1).clamp_(0, 1)
    return keep.mul_(256 / (256 - threshold))


# activations whose backward is written out: (in-place forward, tape kind); the backward reads
# the output. In place: the layer's input is a fresh intermediate nothing else holds.
_OWN_BACKWARD: dict[type, tuple[Callable[[torch.Tensor], torch.Tensor], str]] = {
    nn.ReLU: (torch.relu_, "relu"),
    nn.Sigmoid: (torch.sigmoid_, "sigmoid"),
    nn.Tanh: (torch.tanh_, "tanh"),
}


# the backward kernels of those activations (each also has an in-place ``grad_input=`` form)
_BACKWARD: dict[str, tuple[Any, tuple[int, ...]]] = {
    "relu": (torch.ops.aten.threshold_backward, (0,)),
    "sigmoid": (torch.ops.aten.sigmoid_backward, ()),
    "tanh": (torch.ops.aten.tanh_backward, ()),
}


# evaluation inputs are padded with zero rows to a multiple of this: a CPU matmul whose output
# rows have an odd length (359 validation samples) runs at about half speed; each column is
# computed the same either way
_COLUMNS = 16


class StackedModel:
    """The computation of one architecture over stacked tensors ``{name: [P, ...]}``."""

    def __init__(self, template: nn.Module) -> None:
        self.template = template
        self.plan = _fast_plan(template)
        self.param_names = [name for name, _ in template.named_parameters()]
        self.buffer_names = [name for name, _ in template.named_buffers()]
        self.hparam_buffers = hparam_buffers(template)
        self._base = copy.deepcopy(template).to("meta")
        self._vmapped: dict[bool, Callable[..., torch.Tensor]] = {}

    @property
    def path(self) -> str:
        """``"batched-matmul"`` or ``"vmap"``: how the population is computed."""
        return "batched-matmul" if self.plan is not None else "vmap"

    def forward(
        self, params: Mapping[str, torch.Tensor], buffers: Mapping[str, torch.Tensor], x: torch.Tensor, *, train: bool
    ) -> torch.Tensor:
        """Every member's output for the shared input ``x``: ``[P, batch, ...]``, contiguous."""
        if self.plan is not None:
            # computed feature-major; handed over batch-major in memory too: a reduction over
            # the last dimension (an evaluation's argmax) runs several times slower over a strided one
            return self._forward_matmul(params, buffers, x, train).transpose(1, 2).contiguous()
        fn = self._vmapped.get(train)
        if fn is None:
            base = self._base.train(train)

            def member(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], inputs: torch.Tensor) -> torch.Tensor:
                return torch.func.functional_call(base, (p, b), (inputs,))

            fn = self._vmapped[train] = torch.func.vmap(member, in_dims=(0, 0, None), randomness="different")
        return fn(dict(params), dict(buffers), x).contiguous()

    def _forward_matmul(
        self, params: Mapping[str, torch.Tensor], buffers: Mapping[str, torch.Tensor], x: torch.Tensor, train: bool
    ) -> torch.Tensor:
        """Feature-major ``[P, features, batch]`` output of the Sequential MLP."""
        assert self.plan is not None
        hidden: torch.Tensor | None = None
        count = len(x)
        for kind, name, layer in self.plan:
            if kind == "flatten":
                x = x.flatten(1)
            elif kind == "linear":
                weight = params[f"{name}.weight"]
                bias = params.get(f"{name}.bias")
                size, out_features = weight.shape[0], weight.shape[1]
                if hidden is None:  # the shared input: one matrix product for the whole population
                    if not train and count % _COLUMNS and x.device.type == "cpu":
                        x = torch.cat([x, x.new_zeros(_COLUMNS - count % _COLUMNS, *x.shape[1:])])
                    flat = weight.reshape(size * out_features, -1)
                    hidden = (torch.addmm(bias.reshape(-1, 1), flat, x.T) if bias is not None else flat @ x.T).view(
                        size, out_features, -1
                    )
                else:
                    hidden = (
                        torch.baddbmm(bias.unsqueeze(-1), weight, hidden)
                        if bias is not None
                        else torch.bmm(weight, hidden)
                    )
            elif hidden is None:
                raise RuntimeError("unreachable: layers before the first Linear")
            elif kind == "elementwise":  # every hidden here is an intermediate of this pass: in place
                own = _OWN_BACKWARD.get(type(layer))
                hidden = own[0](hidden) if own is not None and not hidden.requires_grad else layer(hidden)
            elif kind == "unit_mask":
                hidden = hidden * buffers[f"{name}.mask"].unsqueeze(-1)
            elif train and kind == "dropout":
                hidden = hidden * dropout_mask(hidden, buffers[f"{name}.rate"].view(-1, 1, 1))
            elif train and kind == "fixed_dropout" and cast(nn.Dropout, layer).p > 0:
                hidden = hidden * dropout_mask(hidden, torch.tensor(layer.p, device=hidden.device))
        assert hidden is not None
        return hidden[..., :count] if hidden.shape[-1] != count else hidden

    def gradients(
        self,
        params: Mapping[str, torch.Tensor],
        buffers: Mapping[str, torch.Tensor],
        x: torch.Tensor,
        output_grad: Callable[[torch.Tensor], torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        """Every parameter's gradient of one training batch, computed without autograd's
        graph (batched-matmul path only): the forward pass keeps what each layer's backward
        needs, ``output_grad`` maps the ``[P, batch, ...]`` output to the gradient of the
        summed losses with respect to it, and the backward pass runs the layers in reverse
        with the same kernels autograd would (``threshold_backward``, ``sigmoid_backward``, ...).
        Layers without a hand-written backward (other activations) use autograd locally."""
        assert self.plan is not None
        tape: list[tuple[str, str, Any]] = []
        hidden: torch.Tensor | None = None
        fresh = False  # whether ``hidden`` is an intermediate no tape entry holds (then it is changed in place)
        for kind, name, layer in self.plan:
            if kind == "flatten":
                x = x.flatten(1)
            elif kind == "linear":
                weight = params[f"{name}.weight"]
                bias = params.get(f"{name}.bias")
                if hidden is None:
                    size, out_features = weight.shape[0], weight.shape[1]
                    flat = weight.reshape(size * out_features, -1)
                    hidden = (torch.addmm(bias.reshape(-1, 1), flat, x.T) if bias is not None else flat @ x.T).view(
                        size, out_features, -1
                    )
                    tape.append(("first", name, x))
                else:
                    tape.append(("linear", name, hidden))
                    hidden = (
                        torch.baddbmm(bias.unsqueeze(-1), weight, hidden)
                        if bias is not None
                        else torch.bmm(weight, hidden)
                    )
                fresh = True
            elif hidden is None:
                raise RuntimeError("unreachable: layers before the first Linear")
            elif kind == "elementwise":
                if isinstance(layer, nn.Identity):
                    continue
                own = _OWN_BACKWARD.get(type(layer))
                if own is not None:
                    hidden = own[0](hidden if fresh else hidden.clone())
                    tape.append((own[1], name, hidden))
                else:
                    leaf = hidden.detach().requires_grad_()
                    with torch.enable_grad():
                        out = layer(leaf)
                    tape.append(("autograd", name, (leaf, out)))
                    hidden = out.detach()
                fresh = False
            elif (
                kind == "unit_mask" or kind == "dropout" or (kind == "fixed_dropout" and cast(nn.Dropout, layer).p > 0)
            ):
                if kind == "unit_mask":
                    scale = buffers[f"{name}.mask"].unsqueeze(-1)
                elif kind == "dropout":
                    scale = dropout_mask(hidden, buffers[f"{name}.rate"].view(-1, 1, 1))
                else:
                    scale = dropout_mask(hidden, torch.tensor(cast(nn.Dropout, layer).p, device=hidden.device))
                # a dropout right after a ReLU scales the ReLU's saved output in place: its backward
                # only asks where that output is > 0, which a scale >= 0 keeps where it keeps the
                # gradient (dropped units get gradient 0 either way)
                after_relu = kind != "unit_mask" and bool(tape) and tape[-1][0] == "relu" and tape[-1][2] is hidden
                scaled = _scaled(hidden, scale, in_place=fresh or after_relu)
                fresh = scaled is not hidden or fresh
                hidden = scaled
                tape.append(("scale", name, scale))
        assert hidden is not None
        grad = output_grad(hidden.transpose(1, 2)).transpose(1, 2)
        grads: dict[str, torch.Tensor] = {}
        owned = False  # whether ``grad`` was made here (not by ``output_grad``): then it is changed in place
        for kind, name, saved in reversed(tape):
            if kind == "first":
                weight = params[f"{name}.weight"]
                grads[f"{name}.weight"] = (grad.reshape(-1, grad.shape[-1]) @ saved).view(weight.shape)
                if f"{name}.bias" in params:
                    grads[f"{name}.bias"] = grad.sum(-1)
            elif kind == "linear":
                weight = params[f"{name}.weight"]
                grads[f"{name}.weight"] = torch.bmm(grad, saved.transpose(1, 2))
                if f"{name}.bias" in params:
                    grads[f"{name}.bias"] = grad.sum(-1)
                grad = torch.bmm(weight.transpose(1, 2), grad)
                owned = True
            elif kind in _BACKWARD:
                kernel, extra = _BACKWARD[kind]
                grad = kernel.grad_input(grad, saved, *extra, grad_input=grad) if owned else kernel(grad, saved, *extra)
                owned = True
            elif kind == "scale":
                grad, owned = _scaled(grad, saved, in_place=owned), True
            else:
                leaf, out = saved
                (grad,) = torch.autograd.grad(out, leaf, grad)
                owned = False
        return grads


def _scaled(tensor: torch.Tensor, scale: torch.Tensor, *, in_place: bool) -> torch.Tensor:
    """``tensor * scale``, written into ``tensor`` when allowed and the result has its shape and dtype."""
    shape, other = tensor.shape, scale.shape
    fits = len(other) <= len(shape) and all(o in (1, s) for s, o in zip(reversed(shape), reversed(other)))
    if in_place and fits and scale.dtype == tensor.dtype:
        return tensor.mul_(scale)
    return tensor * scale


def stack_states(modules: list[nn.Module]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Parameters and buffers of same-architecture modules stacked along a new first dimension."""
    first = modules[0]
    shapes = {k: v.shape for k, v in first.state_dict().items()}
    for module in modules[1:]:
        other = {k: v.shape for k, v in module.state_dict().items()}
        if other != shapes:
            raise ConfigError(
                "the model factory returned modules of different shapes; every member must have the same "
                "architecture (put architecture choices in the factory's fixed arguments, not in hparams)"
            )
    params = {
        n: torch.stack([dict(m.named_parameters())[n].detach() for m in modules]) for n, _ in first.named_parameters()
    }
    buffers = {n: torch.stack([dict(m.named_buffers())[n].detach() for m in modules]) for n, _ in first.named_buffers()}
    return params, buffers


def module_state(params: Mapping[str, torch.Tensor], buffers: Mapping[str, torch.Tensor], index: int) -> dict[str, Any]:
    """Member ``index``'s ``state_dict()``, as its own module would return it."""
    state = {name: tensor[index].clone() for name, tensor in params.items()}
    state.update({name: tensor[index].clone() for name, tensor in buffers.items()})
    return state
