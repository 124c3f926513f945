"""The population as tensors: stacked weights, optimizer state and ``[P]`` hyperparameters.

Row ``i`` is one member. Exploit is a row copy from the copies kept at each member's newest
ready point; explore writes a row of the hyperparameter tensors. A population checkpoint is
one file holding every row; ``member_state`` cuts one member's state out of it in the same
layout as ``MemberTrainable.state_dict()`` (``{"model", "optimizer", "step"}``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from poptrain.apbt.topology import Topology, model_view
from poptrain.checkpoints.population import FORMAT
from poptrain.errors import CheckpointError
from poptrain.space import HParams
from poptrain.vectorized.memory import MemoryPlan
from poptrain.vectorized.model import StackedModel, module_state, stack_states
from poptrain.vectorized.trainable import (
    StepTerms,
    VectorizedTrainable,
    as_tensors,
    clip_gradients,
    metric_rows,
    regularise,
    regularised,
    seeded_module,
)


@dataclass(frozen=True)
class _Chunk:
    """Rows of the population trained together: views of its stacked tensors (``params`` in
    the model's order) and the optimizer's factors prepared for them (``prepare``)."""

    hp: Mapping[str, torch.Tensor]
    buffers: Mapping[str, torch.Tensor]
    params: Mapping[str, torch.Tensor]
    state: dict[str, list[torch.Tensor]]
    prepared: Any


class Population:
    """Every member's training state, stacked along the first dimension."""

    def __init__(
        self,
        spec: VectorizedTrainable,
        slots: Sequence[int],
        seeds: Sequence[int],
        hparams: Sequence[HParams],
        device: torch.device,
        memory: MemoryPlan,
        seed: int = 0,
    ) -> None:
        self.spec = spec
        self.slots = list(slots)
        self._rows = {slot: row for row, slot in enumerate(self.slots)}  # slots never change
        self.device = device
        self.memory = memory
        modules = [seeded_module(spec.model, seed) for seed in seeds]
        self.template = modules[0]
        self.model = StackedModel(self.template)
        params, buffers = stack_states(modules)
        self.params = {k: v.to(device).contiguous() for k, v in params.items()}
        self.buffers = {k: v.to(device).contiguous() for k, v in buffers.items()}
        self.optimizer = spec.optimizer
        self.opt_state = self.optimizer.init_state(list(self.params.values()))
        resolved = [spec.resolve(h, self.template) for h in hparams]
        self.hp = {
            name: torch.tensor([r[name] for r in resolved], dtype=torch.float32, device=device) for name in resolved[0]
        }
        self._write_buffers(range(len(self.slots)))
        self.topology = Topology(self.template)
        self.generator = torch.Generator().manual_seed(seed)  # fresh weights of grown units
        for row, member_hparams in enumerate(hparams):
            self.topology.apply(
                self.params, self.buffers, self._state_of, row, member_hparams, self.generator, initial=True
            )
        self.ready_params = {k: v.clone() for k, v in self.params.items()}
        self.ready_buffers = {k: v.clone() for k, v in self.buffers.items()}
        self.ready_opt = {k: [t.clone() for t in v] for k, v in self.opt_state.items()}
        self.ready_hp = {k: v.clone() for k, v in self.hp.items()}

    @property
    def size(self) -> int:
        return len(self.slots)

    def index(self, slot: int) -> int:
        """The row of member ``slot`` in the stacked tensors (``ValueError`` for another slot)."""
        try:
            return self._rows[slot]
        except KeyError:
            raise ValueError(f"member {slot} is not in this population") from None

    # --- hyperparameters -------------------------------------------------------------
    def set_hparams(self, row: int, hparams: HParams) -> None:
        """Explore: write member ``row``'s hyperparameters (unnamed ones keep their defaults)."""
        for name, value in self.spec.resolve(hparams, self.template).items():
            self.hp[name][row] = value
        self._write_buffers([row])
        if self.topology:
            self.topology.apply(self.params, self.buffers, self._state_of, row, hparams, self.generator)

    def _state_of(self, name: str) -> list[torch.Tensor]:
        """The optimizer's stacked per-parameter state tensors of parameter ``name``."""
        if name not in self.params:
            return []
        index = list(self.params).index(name)
        return [self.opt_state[slot][index] for slot in self.optimizer.SLOTS]

    def _write_buffers(self, rows: Any) -> None:
        for buffer, name in self.model.hparam_buffers.items():
            for row in rows:
                self.buffers[buffer][row] = self.hp[name][row]

    # --- rows ------------------------------------------------------------------------
    def mark_ready(self, rows: Sequence[int]) -> None:
        """Keep members' current state as the state another member copies on exploit."""
        index = torch.tensor(list(rows), device=self.device)
        for live, kept in (
            (self.params, self.ready_params),
            (self.buffers, self.ready_buffers),
            (self.hp, self.ready_hp),
        ):
            for name, tensor in live.items():
                kept[name][index] = tensor[index]
        for name, tensors in self.opt_state.items():
            for tensor, kept_tensor in zip(tensors, self.ready_opt[name]):
                kept_tensor[index] = tensor[index]

    def copy_ready(self, row: int, donor: int) -> None:
        """Exploit: member ``row`` takes the weights and optimizer state ``donor`` had at its
        newest ready point."""
        for live, kept in ((self.params, self.ready_params), (self.buffers, self.ready_buffers)):
            for name, tensor in live.items():
                tensor[row] = kept[name][donor]
        for name, tensors in self.opt_state.items():
            for tensor, kept_tensor in zip(tensors, self.ready_opt[name]):
                tensor[row] = kept_tensor[donor]

    def load_member(self, row: int, state: Mapping[str, Any], *, ready: bool = False) -> None:
        """Write a member state (``MemberTrainable.state_dict()`` layout) into a row."""
        params, buffers, opt = (
            (self.ready_params, self.ready_buffers, self.ready_opt)
            if ready
            else (self.params, self.buffers, self.opt_state)
        )
        model = state["model"]
        missing = [name for name in (*params, *buffers) if name not in model]
        if missing:
            raise CheckpointError(
                f"checkpoint of the wrong model: it lacks {missing[:3]}; resume with the model the run was started with"
            )
        with torch.no_grad():
            for name, tensor in (*params.items(), *buffers.items()):
                tensor[row] = model[name].to(self.device)
            self.optimizer.load_member_state_dict(opt, row, state["optimizer"])

    def member_state(self, row: int, step: int) -> dict[str, Any]:
        """Member ``row``'s state, as ``MemberTrainable.state_dict()`` returns it."""
        hp = {name: float(t[row]) for name, t in self.hp.items()}
        return {
            "model": module_state(self.params, self.buffers, row),
            "optimizer": self.optimizer.member_state_dict(self.opt_state, row, hp),
            "step": int(step),
        }

    def checkpoint(self, steps: Sequence[int]) -> dict[str, Any]:
        """The whole population in one object (one file): what ``member_from_checkpoint`` reads."""
        hp_rows = [{name: float(t[row]) for name, t in self.hp.items()} for row in range(self.size)]
        return {
            "format": FORMAT,
            "slots": list(self.slots),
            "steps": [int(s) for s in steps],
            "params": {k: v.detach().cpu() for k, v in self.params.items()},
            "buffers": {k: v.detach().cpu() for k, v in self.buffers.items()},
            "optimizer": {
                "slots": {s: [t.cpu() for t in self.opt_state[s]] for s in self.optimizer.SLOTS},
                "count": self.opt_state["step"][0].cpu(),
                "count_in_state": self.optimizer.COUNT_IN_STATE,
                "groups": [[self.optimizer.torch_param_group(hp)] for hp in hp_rows],
            },
        }

    # --- training ----------------------------------------------------------------------
    def train_step(
        self, batches: Sequence[tuple[torch.Tensor, torch.Tensor]], active: Sequence[int] | None = None
    ) -> None:
        """One training step of every member (or only the ``active`` rows) on shared batches."""
        frozen = None
        if active is not None and len(active) < self.size:
            keep = torch.ones(self.size, dtype=torch.bool, device=self.device)
            keep[torch.tensor(list(active), device=self.device)] = False
            frozen = self._save_rows(keep)
        size = self.memory.chunk_size
        # the rows of each chunk, and what depends on hyperparameters alone: they change only
        # between steps, so a step over many batches reads them once
        terms = StepTerms.of(self.hp)
        chunks = [self._chunk(slice(start, min(start + size, self.size))) for start in range(0, self.size, size)]
        for x, y in batches:
            for chunk in chunks:
                self._train_chunk(chunk, x, y, terms)
        if frozen is not None:
            self._restore_rows(*frozen)

    def _chunk(self, rows: slice) -> _Chunk:
        """Views of ``rows`` of every stacked tensor (the tensors themselves for the whole
        population) and the optimizer's prepared factors for them."""
        if rows.start == 0 and rows.stop >= self.size:
            hp, buffers, params, state = self.hp, self.buffers, self.params, self.opt_state
        else:
            hp = {k: v[rows] for k, v in self.hp.items()}
            buffers = {k: v[rows] for k, v in self.buffers.items()}
            params = {k: v[rows] for k, v in self.params.items()}
            state = {k: [t[rows] for t in v] if k != "step" else [v[0][rows]] for k, v in self.opt_state.items()}
        return _Chunk(hp, buffers, params, state, self.optimizer.prepare(hp, list(params.values())))

    def _train_chunk(self, chunk: _Chunk, x: torch.Tensor, y: torch.Tensor, terms: StepTerms) -> None:
        hp, buffers, names = chunk.hp, chunk.buffers, list(chunk.params)
        if self.model.plan is not None:  # batched matmuls: gradients written out, no autograd graph
            params = chunk.params
            by_name = self.model.gradients(params, buffers, x, lambda output: self._output_grad(output, y, hp))
            grads = [by_name[n] for n in names]
            current = [params[n] for n in names]
            regularise(grads, current, hp, terms)
        else:
            leaves = [chunk.params[n].detach().requires_grad_() for n in names]
            output = self.model.forward(dict(zip(names, leaves)), buffers, x, train=True)
            losses = regularised(self._losses(output, y, hp), leaves, hp)
            grads = list(torch.autograd.grad(losses.sum(), leaves))
            current = [p.detach() for p in leaves]
        with torch.no_grad():
            clip_gradients(grads, hp["grad_clip"], terms.clip)
            if chunk.prepared is None:  # an optimizer that prepares nothing (one written before ``prepare``)
                self.optimizer.update(current, grads, chunk.state, hp)
            else:
                self.optimizer.update(current, grads, chunk.state, hp, prepared=chunk.prepared)

    def _output_grad(self, output: torch.Tensor, y: torch.Tensor, hp: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The gradient of the summed per-member losses with respect to ``output`` (``[P, batch, ...]``):
        written out for cross-entropy, MSE and BCE-with-logits, else by autograd on the loss alone."""
        loss = self.spec.loss
        per_member = output[0].numel()
        if loss is F.cross_entropy and y.dim() == 1 and not y.is_floating_point() and output.dim() == 3:
            # over [P, classes, batch], the layout the batched-matmul path computes in (``output`` is
            # its transpose): a CPU softmax over a short last dimension is ~20x slower than over dim 1
            grad = torch.softmax(output.transpose(1, 2), 1)
            grad.sub_(F.one_hot(y, output.shape[-1]).to(grad.dtype).T)
            return grad.div_(output.shape[1]).transpose(1, 2)
        if loss is F.mse_loss and output.shape[1:] == y.shape:
            return (output - y).mul_(2 / per_member)
        if loss is F.binary_cross_entropy_with_logits and output.shape[1:] == y.shape:
            return torch.sigmoid(output).sub_(y).div_(per_member)
        leaf = output.detach().requires_grad_()
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(self._losses(leaf, y, hp).sum(), leaf)
        return grad

    def _losses(self, output: torch.Tensor, y: torch.Tensor, hp: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Each member's loss on the batch: ``[P]``."""
        loss = self.spec.loss
        if loss is F.cross_entropy and y.dim() == 1 and not y.is_floating_point():
            return F.cross_entropy(output.transpose(1, 2), y.expand(output.shape[0], -1), reduction="none").mean(1)
        if loss is F.mse_loss and output.shape[1:] == y.shape:
            return (output - y).pow(2).flatten(1).mean(1)
        if loss is F.binary_cross_entropy_with_logits and output.shape[1:] == y.shape:
            return F.binary_cross_entropy_with_logits(output, y.expand_as(output), reduction="none").flatten(1).mean(1)
        if self.spec.loss_takes_hparams:
            return torch.func.vmap(loss, in_dims=(0, None, 0))(output, y, dict(hp))
        return torch.func.vmap(loss, in_dims=(0, None))(output, y)

    def _save_rows(self, rows: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        tensors = [*self.params.values(), *self.buffers.values(), *(t for v in self.opt_state.values() for t in v)]
        return rows, [t[rows].clone() for t in tensors]

    def _restore_rows(self, rows: torch.Tensor, saved: list[torch.Tensor]) -> None:
        tensors = [*self.params.values(), *self.buffers.values(), *(t for v in self.opt_state.values() for t in v)]
        for tensor, values in zip(tensors, saved):
            tensor[rows] = values

    def evaluate(self) -> list[dict[str, float]]:
        """Every member's metrics from the spec's ``evaluate(predict)``."""
        size = self.memory.chunk_size

        def predict(x: torch.Tensor) -> torch.Tensor:
            x = x.to(self.device)
            with torch.no_grad():
                parts = [
                    self.model.forward(
                        {k: v[s : s + size] for k, v in self.params.items()},
                        {k: v[s : s + size] for k, v in self.buffers.items()},
                        x,
                        train=False,
                    )
                    for s in range(0, self.size, size)
                ]
            return parts[0] if len(parts) == 1 else torch.cat(parts)

        metrics = dict(self.spec.evaluate(predict))
        if self.spec.score is not None:
            metrics.update(self.spec.score(as_tensors(metrics), model_view(self.template, self.buffers, self.size)))
        return metric_rows(metrics, self.size)
