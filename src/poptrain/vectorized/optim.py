"""Optimizers over a stacked population: every tensor has a leading ``[population]`` dimension
and every hyperparameter is a ``[population]`` tensor, so each member follows its own schedule.

The arithmetic is PyTorch's own (``torch.optim.SGD``, ``Adam``, ``AdamW``, single-tensor path),
so a vectorized member and the same member trained alone with ``torch.optim`` agree to within
floating-point rounding. Each optimizer also builds the ``torch.optim`` equivalent for one
member and converts one member's state to and from that optimizer's ``state_dict`` layout.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from poptrain.errors import ConfigError

Tensors = list[torch.Tensor]


def _per_member(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A ``[P]`` tensor shaped to broadcast against ``like`` (``[P, ...]``)."""
    return value.view((-1,) + (1,) * (like.dim() - 1))


@dataclass(frozen=True)
class VectorizedOptimizer(ABC):
    """An optimizer whose hyperparameters are per-member tensors.

    Defaults given here apply to every member; a search-space entry of the same name
    (``lr``, ``momentum``, ``weight_decay``, ``beta1``, ``beta2``) overrides it per member.
    """

    lr: float = 0.01
    weight_decay: float = 0.0

    #: the hyperparameter names this optimizer reads
    HPARAMS: ClassVar[tuple[str, ...]] = ("lr", "weight_decay")
    #: per-parameter state tensors (same shape as the parameter), named as torch.optim names them
    SLOTS: ClassVar[tuple[str, ...]] = ()
    #: whether torch.optim keeps the step count in each parameter's state
    COUNT_IN_STATE: ClassVar[bool] = False

    def defaults(self) -> dict[str, float]:
        return {name: float(getattr(self, name)) for name in self.HPARAMS}

    def init_state(self, params: Sequence[torch.Tensor]) -> dict[str, Tensors]:
        """Zeroed state for stacked parameters (plus a per-member ``step`` count)."""
        state: dict[str, Tensors] = {slot: [torch.zeros_like(p) for p in params] for slot in self.SLOTS}
        state["step"] = [torch.zeros(params[0].shape[0], dtype=torch.float32, device=params[0].device)]
        return state

    def prepare(self, hp: Mapping[str, torch.Tensor], params: Tensors) -> Any:
        """What ``update`` computes from the hyperparameters alone (per-member factors shaped
        for the parameters), computed once per training step and passed back to each of its
        updates as ``prepared``: hyperparameters change only between steps. ``None`` here."""
        return None

    @abstractmethod
    def update(
        self,
        params: Tensors,
        grads: Tensors,
        state: dict[str, Tensors],
        hp: Mapping[str, torch.Tensor],
        *,
        prepared: Any = None,
    ) -> None:
        """One step in place for every member (``hp`` values are ``[P]`` tensors). ``grads`` are
        temporaries the update may overwrite. ``prepared``: ``prepare(hp, params)`` of this step
        (computed here when not given)."""

    @abstractmethod
    def torch_optimizer(self, params: Iterable[torch.nn.Parameter], hp: Mapping[str, float]) -> torch.optim.Optimizer:
        """The ``torch.optim`` optimizer that does the same for one member."""

    def set_torch_hparams(self, optimizer: torch.optim.Optimizer, hp: Mapping[str, float]) -> None:
        """Write one member's hyperparameters into a ``torch.optim`` optimizer's param groups."""
        for group in optimizer.param_groups:
            group["lr"] = float(hp["lr"])
            group["weight_decay"] = float(hp["weight_decay"])

    # --- one member's state in torch.optim's layout ---------------------------------
    def member_state_dict(self, state: dict[str, Tensors], index: int, hp: Mapping[str, float]) -> dict:
        """Member ``index``'s state as ``torch.optim``'s ``state_dict()`` would give it."""
        per_param = {}
        count = int(state["step"][0][index].item())
        for i in range(len(state[self.SLOTS[0]]) if self.SLOTS else 0):
            entry = {slot: state[slot][i][index].clone() for slot in self.SLOTS}
            if self.COUNT_IN_STATE:
                entry["step"] = torch.tensor(float(count))
            per_param[i] = entry
        group = self.torch_param_group(hp)
        group["params"] = list(range(len(per_param)))
        return {"state": per_param, "param_groups": [group]}

    def load_member_state_dict(self, state: dict[str, Tensors], index: int, saved: Mapping) -> None:
        """Write a ``torch.optim``-layout state (from ``member_state_dict`` or a member trained
        alone) into row ``index`` of the stacked state."""
        per_param = saved.get("state", {})
        count = 0.0
        for i in range(len(state[self.SLOTS[0]]) if self.SLOTS else 0):
            entry = per_param.get(i, per_param.get(str(i), {}))
            for slot in self.SLOTS:
                value = entry.get(slot)
                if value is None:
                    state[slot][i][index].zero_()
                else:
                    state[slot][i][index].copy_(value)
            if "step" in entry:
                count = float(entry["step"])
        state["step"][0][index] = count

    @abstractmethod
    def torch_param_group(self, hp: Mapping[str, float]) -> dict:
        """The param group torch.optim would store for one member."""


@dataclass(frozen=True)
class SGD(VectorizedOptimizer):
    """SGD with momentum (and Nesterov), as ``torch.optim.SGD`` with ``dampening=0``."""

    lr: float = 0.01
    momentum: float = 0.0
    weight_decay: float = 0.0
    nesterov: bool = False
    HPARAMS: ClassVar[tuple[str, ...]] = ("lr", "momentum", "weight_decay")
    SLOTS: ClassVar[tuple[str, ...]] = ("momentum_buffer",)

    def prepare(self, hp: Mapping[str, torch.Tensor], params: Tensors) -> Any:
        """Whether some member has a weight decay, and (-lr, momentum, weight decay) shaped for
        each parameter."""
        decay_any = bool((hp["weight_decay"] != 0).any())
        factors = (-hp["lr"], hp["momentum"], hp["weight_decay"])
        by_rank: dict[int, tuple[torch.Tensor, ...]] = {}
        for param in params:
            if param.dim() not in by_rank:
                by_rank[param.dim()] = tuple(_per_member(f, param) for f in factors)
        return decay_any, [by_rank[param.dim()] for param in params]

    def update(
        self,
        params: Tensors,
        grads: Tensors,
        state: dict[str, Tensors],
        hp: Mapping[str, torch.Tensor],
        *,
        prepared: Any = None,
    ) -> None:
        state["step"][0].add_(1)
        decay_any, shaped = self.prepare(hp, params) if prepared is None else prepared
        for param, grad, buf, factors in zip(params, grads, state["momentum_buffer"], shaped):
            neg_lr, momentum, decay_rate = factors
            if decay_any:
                grad.addcmul_(decay_rate, param)  # grad + decay * param, one pass, into the gradient (a temporary)
            buf.mul_(momentum).add_(grad)
            direction = torch.addcmul(grad, momentum, buf) if self.nesterov else buf
            param.addcmul_(direction, neg_lr)

    def torch_optimizer(self, params: Iterable[torch.nn.Parameter], hp: Mapping[str, float]) -> torch.optim.Optimizer:
        return torch.optim.SGD(
            params,
            lr=float(hp["lr"]),
            momentum=float(hp["momentum"]),
            weight_decay=float(hp["weight_decay"]),
            nesterov=self.nesterov,
        )

    def set_torch_hparams(self, optimizer: torch.optim.Optimizer, hp: Mapping[str, float]) -> None:
        super().set_torch_hparams(optimizer, hp)
        for group in optimizer.param_groups:
            group["momentum"] = float(hp["momentum"])

    def torch_param_group(self, hp: Mapping[str, float]) -> dict:
        return {
            "lr": float(hp["lr"]),
            "momentum": float(hp["momentum"]),
            "dampening": 0,
            "weight_decay": float(hp["weight_decay"]),
            "nesterov": self.nesterov,
            "maximize": False,
            "foreach": None,
            "differentiable": False,
            "fused": None,
        }


@dataclass(frozen=True)
class Adam(VectorizedOptimizer):
    """Adam as ``torch.optim.Adam`` (L2 weight decay added to the gradient)."""

    lr: float = 0.001
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    HPARAMS: ClassVar[tuple[str, ...]] = ("lr", "beta1", "beta2", "weight_decay")
    SLOTS: ClassVar[tuple[str, ...]] = ("exp_avg", "exp_avg_sq")
    COUNT_IN_STATE: ClassVar[bool] = True
    decoupled: ClassVar[bool] = False

    def update(
        self,
        params: Tensors,
        grads: Tensors,
        state: dict[str, Tensors],
        hp: Mapping[str, torch.Tensor],
        *,
        prepared: Any = None,
    ) -> None:
        step = state["step"][0].add_(1)
        for param, grad, exp_avg, exp_avg_sq in zip(params, grads, state["exp_avg"], state["exp_avg_sq"]):
            lr, beta1, beta2, decay_rate = (_per_member(hp[k], param) for k in ("lr", "beta1", "beta2", "weight_decay"))
            count = _per_member(step, param).double()
            if self.decoupled:
                param.mul_(1 - lr * decay_rate)
            else:
                grad = grad + decay_rate * param
            exp_avg.lerp_(grad, 1 - beta1)
            exp_avg_sq.mul_(beta2).add_((1 - beta2) * grad * grad)
            correction1 = (1 - beta1.double() ** count).float()
            correction2_sqrt = ((1 - beta2.double() ** count) ** 0.5).float()
            denom = (exp_avg_sq.sqrt() / correction2_sqrt).add_(self.eps)
            param.sub_((lr / correction1) * exp_avg / denom)

    def torch_optimizer(self, params: Iterable[torch.nn.Parameter], hp: Mapping[str, float]) -> torch.optim.Optimizer:
        kind = torch.optim.AdamW if self.decoupled else torch.optim.Adam
        return kind(
            params,
            lr=float(hp["lr"]),
            betas=(float(hp["beta1"]), float(hp["beta2"])),
            eps=self.eps,
            weight_decay=float(hp["weight_decay"]),
        )

    def set_torch_hparams(self, optimizer: torch.optim.Optimizer, hp: Mapping[str, float]) -> None:
        super().set_torch_hparams(optimizer, hp)
        for group in optimizer.param_groups:
            group["betas"] = (float(hp["beta1"]), float(hp["beta2"]))

    def torch_param_group(self, hp: Mapping[str, float]) -> dict:
        return {
            "lr": float(hp["lr"]),
            "betas": (float(hp["beta1"]), float(hp["beta2"])),
            "eps": self.eps,
            "weight_decay": float(hp["weight_decay"]),
            "amsgrad": False,
            "maximize": False,
            "foreach": None,
            "capturable": False,
            "differentiable": False,
            "fused": None,
            "decoupled_weight_decay": self.decoupled,
        }


@dataclass(frozen=True)
class AdamW(Adam):
    """AdamW as ``torch.optim.AdamW`` (decoupled weight decay)."""

    weight_decay: float = 0.01
    decoupled: ClassVar[bool] = True


def make_optimizer(value: str | VectorizedOptimizer) -> VectorizedOptimizer:
    """An optimizer from its name (``"sgd"``, ``"adam"``, ``"adamw"``) or the instance given."""
    if isinstance(value, VectorizedOptimizer):
        return value
    named = {"sgd": SGD, "adam": Adam, "adamw": AdamW}
    if not isinstance(value, str) or value.lower() not in named:
        raise ConfigError(
            f"optimizer {value!r} is not one poptrain vectorizes; use 'sgd', 'adam', 'adamw' or an instance "
            "such as poptrain.vectorized.SGD(momentum=0.9)"
        )
    return named[value.lower()]()
