"""``VectorizedTrainable``: training code described as data (a model factory, a loss, the data,
an evaluation function, an optimizer) so poptrain can train the whole population as one
batched program. The same description also makes an ordinary per-member ``Trainable``, so a
run can use any executor and the vectorized one can be checked against the others."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from poptrain.errors import ConfigError, MetricError
from poptrain.space import HParams
from poptrain.trainable import Trainable, TrainContext
from poptrain.vectorized.model import hparam_buffers
from poptrain.vectorized.optim import VectorizedOptimizer, make_optimizer

Predict = Callable[[torch.Tensor], torch.Tensor]
EvaluateFn = Callable[[Predict], Mapping[str, Any]]
LossFn = Callable[..., torch.Tensor]

REGULARISERS = ("l1", "l2", "grad_clip")


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` is CUDA when a GPU is present, else the CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {str(device)!r} asked for, but no CUDA GPU is available; use device='cpu' or 'auto'")
    return resolved


def seeded_module(factory: Callable[[], nn.Module], seed: int) -> nn.Module:
    """The factory's module with its initial weights drawn from ``seed`` (global RNG untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)  # the CPU generator only: no CUDA bookkeeping
        module = factory()
    if not isinstance(module, nn.Module):
        raise ConfigError(f"the model factory must return a torch.nn.Module, got {type(module).__name__}")
    return module


def data_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch``'s data order in a run seeded ``seed``."""
    return int(np.random.SeedSequence([seed, epoch, 3]).generate_state(1)[0])


def dropout_seed(seed: int, step: int) -> int:
    """The seed of the dropout masks drawn in step ``step`` of a run seeded ``seed``."""
    return int(np.random.SeedSequence([seed, step, 4]).generate_state(1)[0])


class BatchSource:
    """The training batches of each step, shared by every member.

    With tensors ``(x, y)``: each epoch is a fresh permutation drawn from the run's seed and the
    epoch number, cut into ``batch_size`` batches (the last one may be smaller); step ``s``
    takes batches ``(s-1)*batches_per_step`` to ``s*batches_per_step - 1`` of that endless
    sequence, so any step's data is known without replaying the ones before. With a loader
    (any iterable of ``(x, y)`` batches), steps take consecutive batches, starting the loader
    again when it ends.
    """

    def __init__(
        self, data: Any, batch_size: int, batches_per_step: int | None, seed: int, device: torch.device
    ) -> None:
        self.device = device
        self.seed = seed
        if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
            x, y = data
            if len(x) != len(y) or len(x) == 0:
                raise ConfigError(
                    f"data tensors must have the same, non-zero length; got {len(x)} inputs and {len(y)} targets"
                )
            self.tensors: tuple[torch.Tensor, torch.Tensor] | None = (x.to(device), y.to(device))
            self.loader = None
            self.per_epoch = math.ceil(len(x) / batch_size)
        elif isinstance(data, Iterable):
            self.tensors, self.loader = None, data
            self.per_epoch = len(data) if hasattr(data, "__len__") else 0  # type: ignore[arg-type]
            self._iterator: Any = None
            self._position = 0
        else:
            raise ConfigError(
                "data must be a pair of tensors (inputs, targets) or an iterable of (inputs, targets) batches"
            )
        self.batch_size = batch_size
        self.batches_per_step = batches_per_step or self.per_epoch
        if not self.batches_per_step:
            raise ConfigError("data is a loader without a length: give batches_per_step=")
        self._orders: dict[int, torch.Tensor] = {}

    def example(self) -> torch.Tensor:
        """One batch of inputs (sizes the memory plan)."""
        return self.batches(1)[0][0]

    def batches(self, step: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of training step ``step`` (1-based)."""
        first = (step - 1) * self.batches_per_step
        if self.tensors is None:
            return self._from_loader(first)
        return [self._batch(k) for k in range(first, first + self.batches_per_step)]

    def _batch(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.tensors is not None
        epoch, index = divmod(k, self.per_epoch)
        order = self._orders.get(epoch)
        if order is None:
            generator = torch.Generator().manual_seed(data_seed(self.seed, epoch))
            order = torch.randperm(len(self.tensors[0]), generator=generator).to(self.device)
            self._orders = {epoch: order}  # one epoch kept: steps move forward
        rows = order[index * self.batch_size : (index + 1) * self.batch_size]
        return self.tensors[0][rows], self.tensors[1][rows]

    def _from_loader(self, first: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if self._iterator is None or self._position != first:
            self._iterator, self._position = iter(self.loader), 0  # type: ignore[arg-type]
            for _ in range(first % self.per_epoch if self.per_epoch else first):
                self._next()
            self._position = first
        out = [self._next() for _ in range(self.batches_per_step)]
        self._position += self.batches_per_step
        return out

    def _next(self) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            batch = next(self._iterator)
        except StopIteration:
            self._iterator = iter(self.loader)  # type: ignore[arg-type]
            try:
                batch = next(self._iterator)
            except StopIteration:
                raise ConfigError("the data loader yielded no batches") from None
        x, y = batch[0], batch[1]
        return x.to(self.device), y.to(self.device)


class VectorizedTrainable:
    """Training code poptrain can vectorize over the population.

    - ``model``: a zero-argument factory of a ``torch.nn.Module`` (every member has the same
      architecture; each gets its own initial weights from its seed). Use
      ``poptrain.vectorized.Dropout(hparam="dropout")`` for a per-member dropout rate.
    - ``data``: ``(inputs, targets)`` tensors, or an iterable of ``(inputs, targets)`` batches.
      **The population shares each batch** (one data order for all members, drawn from the
      run's seed): that is what lets a batch's first layer be one matrix product for everyone.
    - ``loss(output, target)`` or ``loss(output, target, hparams)`` for one member's batch
      output; ``hparams`` holds the member's hyperparameters as 0-d tensors (user-defined ones
      included). ``torch.nn.functional.cross_entropy`` and ``mse_loss`` run on a fast path.
    - ``evaluate(predict)``: ``predict(x)`` returns every member's output ``[P, len(x), ...]``
      (evaluation mode, no gradients); return a dict of ``[P]`` tensors (one value per member)
      that contains the run's metric.
    - ``optimizer``: ``"sgd"``, ``"adam"``, ``"adamw"`` or an instance (``SGD(momentum=0.9,
      nesterov=True)``); its arguments are the defaults of the hyperparameters it reads.
    - ``score(metrics, model)``: optional; adds metrics computed from the evaluation and each
      member's model (``poptrain.apbt.ModelView``: weights, biases, widths), such as
      ``poptrain.apbt.size_fitness()``.
    - The hidden-layer widths of a ``poptrain.apbt.masked_mlp`` follow a ``Widths``
      hyperparameter (Augmented PBT): units are grown and pruned with their weights inherited.

    Hyperparameters the vectorized executor understands, each a ``[P]`` tensor: the
    optimizer's (``lr``, ``momentum``, ``beta1``, ``beta2``, ``weight_decay``), ``l1`` and
    ``l2`` (coefficients of ``sum |w|`` and ``sum w**2`` added to each member's loss),
    ``grad_clip`` (each member's gradient norm is clipped to it), every ``Dropout``'s
    ``hparam``, and any other numeric entry of the search space (passed to ``loss``).
    A step is ``batches_per_step`` batches (default: one epoch). The batch size is shared.
    """

    def __init__(
        self,
        model: Callable[[], nn.Module],
        data: Any,
        loss: LossFn,
        evaluate: EvaluateFn,
        *,
        optimizer: str | VectorizedOptimizer = "sgd",
        batch_size: int = 64,
        batches_per_step: int | None = None,
        l1: float = 0.0,
        l2: float = 0.0,
        grad_clip: float | None = None,
        hparams: Mapping[str, float] | None = None,
        device: str = "auto",
        memory_budget: int | None = None,
        chunk_size: int | None = None,
        score: Callable[..., Mapping[str, Any]] | None = None,
    ) -> None:
        if not callable(model):
            raise ConfigError("model must be a zero-argument factory of a torch.nn.Module (e.g. a class or a lambda)")
        if not callable(loss) or not callable(evaluate):
            raise ConfigError("loss and evaluate must be callables (see poptrain.VectorizedTrainable)")
        for label, value in (
            ("batch_size", batch_size),
            ("batches_per_step", batches_per_step or 1),
            ("chunk_size", chunk_size or 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{label} must be a whole number >= 1, got {value!r}")
        self.model = model
        self.data = data
        self.loss = loss
        self.evaluate = evaluate
        self.optimizer = make_optimizer(optimizer)
        self.batch_size = batch_size
        self.batches_per_step = batches_per_step
        self.defaults = {
            **self.optimizer.defaults(),
            "l1": float(l1),
            "l2": float(l2),
            "grad_clip": math.inf if grad_clip is None else float(grad_clip),
            **dict(hparams or {}),
        }
        self.device = device
        self.memory_budget = memory_budget
        self.chunk_size = chunk_size
        self.loss_takes_hparams = _takes_hparams(loss)
        if score is not None and not callable(score):
            raise ConfigError(
                "score must be a callable score(metrics, model) -> {name: values}, e.g. poptrain.apbt.size_fitness()"
            )
        self.score = score

    def __call__(self) -> Trainable:
        """A per-member ``Trainable`` doing the same training (for the other executors)."""
        return MemberTrainable(self)

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def resolve(self, hparams: HParams, template: nn.Module) -> dict[str, float]:
        """A member's full numeric hyperparameters: defaults, dropout rates, then its own."""
        from poptrain.apbt.topology import topology_hparams

        merged: dict[str, Any] = dict(self.defaults)
        for buffer, name in hparam_buffers(template).items():
            merged.setdefault(name, float(template.get_buffer(buffer)))
        topology = topology_hparams(template)
        merged.update({k: v for k, v in hparams.items() if k not in topology})
        for name, value in merged.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(
                    f"hyperparameter {name!r} = {value!r} is not a number; a VectorizedTrainable needs numeric "
                    "hyperparameters (architecture choices belong in the model factory)"
                )
        return {name: float(value) for name, value in merged.items()}


def _takes_hparams(loss: LossFn) -> bool:
    try:
        parameters = [
            p
            for p in inspect.signature(loss).parameters.values()
            if p.default is inspect.Parameter.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError):
        return False
    return len(parameters) >= 3


def metric_rows(result: Mapping[str, Any], size: int) -> list[dict[str, float]]:
    """Split ``evaluate``'s dict of ``[P]`` values into one dict of floats per member."""
    if not isinstance(result, Mapping):
        raise MetricError(f"evaluate(predict) must return a dict of per-member values, got {type(result).__name__}")
    columns: dict[str, Sequence[float]] = {}
    for key, value in result.items():
        if isinstance(value, torch.Tensor):  # floats already: one conversion for the whole column
            values = value.detach().float().reshape(-1).cpu().tolist()
        elif isinstance(value, (int, float)):
            values = [float(value)] * size
        else:
            values = value
        if len(values) != size:
            raise MetricError(
                f"evaluate(predict) returned {len(values)} values for {key!r} and a population of {size}; "
                "return one value per member (reduce over every dimension but the first)"
            )
        if not isinstance(value, torch.Tensor):
            values = [float(v) for v in values]
        columns[str(key)] = values
    if not columns:
        return [{} for _ in range(size)]
    keys = list(columns)
    return [dict(zip(keys, row)) for row in zip(*columns.values())]


def as_tensors(metrics: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Metric values as float tensors (what a score function receives)."""
    return {
        k: (v.detach().float() if isinstance(v, torch.Tensor) else torch.as_tensor(v, dtype=torch.float32)).reshape(-1)
        for k, v in metrics.items()
    }


def regularised(losses: torch.Tensor, params: Sequence[torch.Tensor], hp: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Each member's loss plus ``l1 * sum |w|`` and ``l2 * sum w**2`` (``[P]`` in, ``[P]`` out)."""
    l1, l2 = hp["l1"], hp["l2"]
    if bool((l2 != 0).any()):
        losses = losses + l2 * sum(p.pow(2).flatten(1).sum(1) for p in params)
    if bool((l1 != 0).any()):
        losses = losses + l1 * sum(p.abs().flatten(1).sum(1) for p in params)
    return losses


@dataclass(frozen=True)
class StepTerms:
    """Which optional terms a training step computes for some member: the L1 and L2 penalties
    and gradient clipping. Each is read from the per-member hyperparameters with a reduction
    that waits for its result, so a step over many batches reads them once (``of``), not once
    per batch: hyperparameters change only between steps (the optimizer's own are read once a
    step by ``VectorizedOptimizer.prepare``)."""

    l1: bool
    l2: bool
    clip: bool

    @classmethod
    def of(cls, hp: Mapping[str, torch.Tensor]) -> StepTerms:
        return cls(
            bool((hp["l1"] != 0).any()),
            bool((hp["l2"] != 0).any()),
            bool(torch.isfinite(hp["grad_clip"]).any()),
        )


def regularise(
    grads: Sequence[torch.Tensor],
    params: Sequence[torch.Tensor],
    hp: Mapping[str, torch.Tensor],
    terms: StepTerms | None = None,
) -> None:
    """Add the gradients of ``regularised``'s penalties to ``grads`` (in place; new tensors if
    a gradient is a view): ``2 * l2 * w`` and ``l1 * sign(w)`` per member. ``terms``: which
    penalties some member uses (read from ``hp`` when not given)."""
    l1, l2 = hp["l1"], hp["l2"]
    terms = terms or StepTerms.of(hp)
    use_l2, use_l1 = terms.l2, terms.l1
    if not (use_l1 or use_l2):
        return
    for grad, param in zip(grads, params):
        shape = (-1,) + (1,) * (param.dim() - 1)
        if use_l2:
            grad.addcmul_(param, (2 * l2).view(shape))
        if use_l1:
            grad.addcmul_(param.sign(), l1.view(shape))


def clip_gradients(grads: Sequence[torch.Tensor], max_norm: torch.Tensor, enabled: bool | None = None) -> None:
    """Scale each member's gradients so their total norm is at most its ``max_norm`` (in place),
    as ``torch.nn.utils.clip_grad_norm_`` does for one model. ``enabled``: whether some member
    clips (``StepTerms.clip``; read from ``max_norm`` when not given)."""
    if not (bool(torch.isfinite(max_norm).any()) if enabled is None else enabled):
        return
    norms = torch.stack([g.flatten(1).norm(2, dim=1) for g in grads]).norm(2, dim=0)
    coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for grad in grads:
        grad.mul_(coef.view((-1,) + (1,) * (grad.dim() - 1)))


class MemberTrainable(Trainable):
    """One member of a ``VectorizedTrainable``, trained alone with ``torch.optim``."""

    def __init__(self, spec: VectorizedTrainable) -> None:
        self.spec = spec

    def setup(self, hparams: HParams, context: TrainContext) -> None:
        spec = self.spec
        device = resolve_device(spec.device)
        self.module = seeded_module(spec.model, context.seed).to(device)
        self.batches = BatchSource(spec.data, spec.batch_size, spec.batches_per_step, context.run_seed, device)
        self.hp = spec.resolve(hparams, self.module)
        self.optimizer = spec.optimizer.torch_optimizer(self.module.parameters(), self.hp)
        self._write_buffers()
        self.steps = context.start_step  # the member's step: picks each step's batches
        from poptrain.apbt.topology import Topology

        self.topology = Topology(self.module)
        self.generator = torch.Generator().manual_seed(context.seed)
        self._apply_topology(hparams, initial=True)

    def _apply_topology(self, hparams: HParams, *, initial: bool) -> None:
        """Grow or prune hidden units to the widths in ``hparams`` (one member: ``P = 1`` views)."""
        if not self.topology:
            return
        named = dict(self.module.named_parameters())
        params = {name: p.data.unsqueeze(0) for name, p in named.items()}
        buffers = {name: b.unsqueeze(0) for name, b in self.module.named_buffers()}

        def state_of(name: str) -> list[torch.Tensor]:
            if name not in named:
                return []
            state = self.optimizer.state.get(named[name], {})
            return [
                t.unsqueeze(0) for k, t in state.items() if isinstance(t, torch.Tensor) and t.shape == named[name].shape
            ]

        self.topology.apply(params, buffers, state_of, 0, hparams, self.generator, initial=initial)

    def _write_buffers(self) -> None:
        for buffer, name in hparam_buffers(self.module).items():
            self.module.get_buffer(buffer).fill_(self.hp[name])

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {name: torch.tensor(value) for name, value in self.hp.items()}

    def step(self) -> None:
        self.steps += 1
        self.module.train()
        params = list(self.module.parameters())
        hp = self._tensors() if self.spec.loss_takes_hparams else None
        l1, l2, clip = self.hp["l1"], self.hp["l2"], self.hp["grad_clip"]
        for x, y in self.batches.batches(self.steps):
            self.optimizer.zero_grad(set_to_none=True)
            output = self.module(x)
            loss = self.spec.loss(output, y, hp) if hp is not None else self.spec.loss(output, y)
            if l2:
                loss = loss + l2 * sum(p.pow(2).sum() for p in params)
            if l1:
                loss = loss + l1 * sum(p.abs().sum() for p in params)
            loss.backward()
            if math.isfinite(clip):
                torch.nn.utils.clip_grad_norm_(params, clip)
            self.optimizer.step()

    def evaluate(self) -> dict[str, float]:
        self.module.eval()

        def predict(x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return self.module(x.to(self.batches.device)).unsqueeze(0)

        metrics = dict(self.spec.evaluate(predict))
        if self.spec.score is not None:
            from poptrain.apbt.topology import model_view

            buffers = {name: b.unsqueeze(0) for name, b in self.module.named_buffers()}
            metrics.update(self.spec.score(as_tensors(metrics), model_view(self.module, buffers, 1)))
        return metric_rows(metrics, 1)[0]

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.module.state_dict(), "optimizer": self.optimizer.state_dict(), "step": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])  # the step count stays the member's own

    def set_hparams(self, hparams: HParams) -> None:
        self.hp = self.spec.resolve(hparams, self.module)
        self.spec.optimizer.set_torch_hparams(self.optimizer, self.hp)
        self._write_buffers()
        self._apply_topology(hparams, initial=False)
