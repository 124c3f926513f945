"""Hugging Face Transformers: a ``transformers.Trainer`` trained as a poptrain member.

``huggingface_member(model_init, args, train_dataset=..., eval_dataset=..., optimizer_steps=50)``
gives the factory ``run.optimize`` takes, much as ``Trainer(model_init=..., args=...)`` is given
to ``trainer.hyperparameter_search``. Each member builds ``model_init(hparams)`` and its own
``Trainer``; a step trains ``optimizer_steps`` more optimizer steps with ``trainer.train``,
resuming from the member's state with Hugging Face's own ``resume_from_checkpoint``, and
``evaluate()`` is ``trainer.evaluate()``. See ``docs/integrations.md``.

Transformers is imported when a member is made: ``pip install "poptrain[hf]"``.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import os
import shutil
import tempfile
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from poptrain.errors import ConfigError
from poptrain.integrations._common import APPLIED_KEY, changed, require
from poptrain.space import HParams
from poptrain.trainable import Trainable, TrainContext

__all__ = ["HFTrainable", "huggingface_member"]

OPTIMIZER_HPARAMS = ("learning_rate", "weight_decay", "adam_beta1", "adam_beta2", "adam_epsilon", "max_grad_norm")
"""Hyperparameters written into the live optimizer (and ``TrainingArguments``) after every restore."""

FORCED_ARGS: dict[str, Any] = {
    "save_strategy": "no",  # the member's state is poptrain's checkpoint
    "eval_strategy": "no",  # evaluation is evaluate()'s
    "load_best_model_at_end": False,
    "report_to": "none",  # poptrain's callbacks log the run
    "disable_tqdm": True,
    "push_to_hub": False,
}
"""``TrainingArguments`` every member's Trainer gets, whatever the given ones say."""


def huggingface_member(
    model_init: Callable[[HParams], Any],
    args: Any,
    *,
    train_dataset: Any,
    eval_dataset: Any,
    optimizer_steps: int,
    data_collator: Any = None,
    compute_metrics: Callable[[Any], Mapping[str, float]] | None = None,
    processing_class: Any = None,
    callbacks: Sequence[Any] = (),
    on_hparams: Callable[[Any, HParams], None] | None = None,
) -> Callable[[], HFTrainable]:
    """The trainable factory for ``run.optimize``: each member trains ``model_init(hparams)``
    with a ``transformers.Trainer`` made from ``args`` and the other arguments.

    A step is ``optimizer_steps`` optimizer steps. ``args.max_steps`` (or ``num_train_epochs``)
    sets the length of the learning-rate schedule, as without poptrain: make it cover the run
    (steps x ``optimizer_steps``). Hyperparameters named in ``OPTIMIZER_HPARAMS`` reach the live
    optimizer; any other one needs ``on_hparams(trainer, hparams)``, called whenever one of them
    changes (``model_init`` gets them all at the start).
    """
    require("transformers", "the Hugging Face integration", "hf")
    check_arguments(model_init, args, optimizer_steps)
    return functools.partial(
        HFTrainable,
        model_init,
        args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        optimizer_steps=optimizer_steps,
        data_collator=data_collator,
        compute_metrics=compute_metrics,
        processing_class=processing_class,
        callbacks=tuple(callbacks),
        on_hparams=on_hparams,
    )


def check_arguments(model_init: Any, args: Any, optimizer_steps: Any) -> None:
    """One ``ConfigError`` line for an argument that cannot work."""
    if not callable(model_init):
        raise ConfigError(f"model_init is a {type(model_init).__name__}; give a function hparams -> model")
    transformers = require("transformers", "the Hugging Face integration", "hf")
    if not isinstance(args, transformers.TrainingArguments):
        raise ConfigError(f"args is a {type(args).__name__}; give a transformers.TrainingArguments")
    if isinstance(optimizer_steps, bool) or not isinstance(optimizer_steps, int) or optimizer_steps < 1:
        raise ConfigError(f"optimizer_steps={optimizer_steps!r}; give a positive int (optimizer steps per step)")


class HFTrainable(Trainable):
    """A poptrain member that trains with a ``transformers.Trainer`` (made by ``huggingface_member``).

    Its state is the model's, the optimizer's and the LR scheduler's state dicts, the Trainer's
    state (global step, epoch, log history) and the hyperparameters the optimizer state was
    trained with. Each step writes it as a Trainer checkpoint folder in a temporary folder and
    resumes from it, so a member trains the same whether it stayed live or was restored.
    """

    def __init__(
        self,
        model_init: Callable[[HParams], Any],
        args: Any,
        *,
        train_dataset: Any,
        eval_dataset: Any,
        optimizer_steps: int,
        data_collator: Any = None,
        compute_metrics: Callable[[Any], Mapping[str, float]] | None = None,
        processing_class: Any = None,
        callbacks: Sequence[Any] = (),
        on_hparams: Callable[[Any, HParams], None] | None = None,
    ) -> None:
        check_arguments(model_init, args, optimizer_steps)
        self.model_init = model_init
        self.args = args
        self.optimizer_steps = optimizer_steps
        self.on_hparams = on_hparams
        self._trainer_kwargs = {
            "train_dataset": train_dataset,
            "eval_dataset": eval_dataset,
            "data_collator": data_collator,
            "compute_metrics": compute_metrics,
            "processing_class": processing_class,
        }
        self._callbacks = tuple(callbacks)
        self._state: dict[str, Any] | None = None  # what the next step resumes from
        self._applied: dict[str, Any] = {}
        self._hparams: dict[str, Any] = {}
        self.stop_at = 0  # the global step the running step() ends at

    def setup(self, hparams: HParams, context: TrainContext) -> None:
        """Build ``model_init(hparams)`` and a Trainer that writes only under a temporary folder."""
        transformers = require("transformers", "the Hugging Face integration", "hf")
        others = sorted(set(hparams) - set(OPTIMIZER_HPARAMS))
        if others and self.on_hparams is None:
            raise ConfigError(
                f"hyperparameter {others[0]!r} is not one the optimizer takes ({', '.join(OPTIMIZER_HPARAMS)}); "
                "pass on_hparams=fn(trainer, hparams) to huggingface_member to apply it"
            )
        self.folder = Path(tempfile.mkdtemp(prefix="poptrain-hf-"))
        weakref.finalize(self, shutil.rmtree, self.folder, True)
        forced = dict(FORCED_ARGS, output_dir=str(self.folder / "output"), seed=context.seed)
        forced["use_cpu"] = not context.device.startswith("cuda")
        forced.update({name: hparams[name] for name in OPTIMIZER_HPARAMS if name in hparams})
        args = dataclasses.replace(self.args, **forced)
        self._hparams = dict(hparams)
        self._applied = dict(hparams)  # the optimizer is built from them
        self.model = self.model_init(dict(hparams))
        self._pause = pause_callback(transformers, self)
        with quiet(transformers):
            self.trainer = transformers.Trainer(
                model=self.model, args=args, callbacks=[*self._callbacks, self._pause], **self._trainer_kwargs
            )
        self.trainer.remove_callback(transformers.trainer_callback.PrinterCallback)

    def step(self) -> None:
        """Train ``optimizer_steps`` more optimizer steps, resuming from the member's state."""
        state = self._state
        start = _global_step(state)
        self.stop_at = start + self.optimizer_steps
        resume = self._write_checkpoint(state) if state is not None else None
        trainer = self.trainer
        trainer.optimizer, trainer.lr_scheduler = None, None  # built again, then loaded from the checkpoint
        with quiet(self._transformers()):
            trainer.train(resume_from_checkpoint=resume)
        if trainer.state.global_step < self.stop_at:
            raise ConfigError(
                f"the Trainer stopped at step {trainer.state.global_step} of the {trainer.state.max_steps} its "
                f"TrainingArguments plan; raise max_steps (or num_train_epochs) to cover the run (steps x "
                f"optimizer_steps={self.optimizer_steps})"
            )
        self._state = self._capture()

    def evaluate(self) -> dict[str, float]:
        """``trainer.evaluate()``: every numeric metric (``eval_loss``, ``compute_metrics``' ``eval_*``)."""
        with quiet(self._transformers()):
            metrics = self.trainer.evaluate()
        return {
            str(name): float(value)
            for name, value in metrics.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)
        }

    def state_dict(self) -> dict[str, Any]:
        """Model, optimizer and scheduler state dicts, the Trainer's state (as its JSON) and the
        hyperparameters the optimizer state was trained with."""
        if self._state is not None:
            return self._state
        weights = {name: tensor.detach().clone() for name, tensor in self.model.state_dict().items()}
        return {"model": weights, APPLIED_KEY: dict(self._applied)}

    def load_state_dict(self, state: Any) -> None:
        """Load a state from ``state_dict`` (possibly another member's): the weights at once, the
        optimizer, scheduler and Trainer state when the next step starts."""
        self.model.load_state_dict(state["model"])
        self._state = state if "optimizer" in state else None
        self._applied = dict(state.get(APPLIED_KEY, {}))

    def set_hparams(self, hparams: HParams) -> None:
        """Take new hyperparameters; they reach the optimizer when the next step starts."""
        self._hparams = dict(hparams)

    def apply_hparams(self, optimizer: Any, scheduler: Any) -> None:
        """Write the changed hyperparameters into the live optimizer (called as training begins,
        after the Trainer loaded its state): ``learning_rate`` scales every group's lr and the
        scheduler's base rates (a schedule's peak), ``weight_decay`` goes to the groups that decay,
        ``adam_beta1``/``adam_beta2``/``adam_epsilon`` to ``betas``/``eps``."""
        changes = changed(self._applied, self._hparams)
        if not changes:
            return
        args = self.trainer.args
        for name in OPTIMIZER_HPARAMS:
            if name in changes:
                setattr(args, name, changes[name])
        if "learning_rate" in changes:
            old = self._applied.get("learning_rate", args.learning_rate)
            scale = changes["learning_rate"] / old
            for group in optimizer.param_groups:
                group["lr"] *= scale
                if "initial_lr" in group:
                    group["initial_lr"] *= scale
            if scheduler is not None and hasattr(scheduler, "base_lrs"):
                scheduler.base_lrs = [rate * scale for rate in scheduler.base_lrs]
        if "weight_decay" in changes:
            decays = set(self.trainer.get_decay_parameter_names(self.model))
            names = {id(param): name for name, param in self.model.named_parameters()}
            for group in optimizer.param_groups:
                if any(names.get(id(param)) in decays for param in group["params"]):
                    group["weight_decay"] = changes["weight_decay"]
        for group in optimizer.param_groups:
            if "betas" in group and ("adam_beta1" in changes or "adam_beta2" in changes):
                beta1, beta2 = group["betas"]
                group["betas"] = (changes.get("adam_beta1", beta1), changes.get("adam_beta2", beta2))
            if "eps" in group and "adam_epsilon" in changes:
                group["eps"] = changes["adam_epsilon"]
        if self.on_hparams is not None and set(changes) - set(OPTIMIZER_HPARAMS):
            self.on_hparams(self.trainer, dict(self._hparams))
        self._applied = dict(self._hparams)

    def _capture(self) -> dict[str, Any]:
        trainer = self.trainer
        trainer.state.save_to_json(str(self.folder / "state.json"))
        return {
            "model": {name: tensor.detach().clone() for name, tensor in self.model.state_dict().items()},
            "optimizer": copy.deepcopy(trainer.optimizer.state_dict()),
            "scheduler": copy.deepcopy(trainer.lr_scheduler.state_dict()),
            "trainer_state": (self.folder / "state.json").read_text(),
            APPLIED_KEY: dict(self._applied),
        }

    def _write_checkpoint(self, state: Mapping[str, Any]) -> str:
        """``state`` as the checkpoint folder ``train(resume_from_checkpoint=...)`` reads."""
        import torch
        from transformers.trainer import OPTIMIZER_NAME, SCHEDULER_NAME, TRAINER_STATE_NAME
        from transformers.utils import WEIGHTS_NAME

        folder = self.folder / "resume"
        folder.mkdir(exist_ok=True)
        torch.save(state["model"], folder / WEIGHTS_NAME)
        torch.save(state["optimizer"], folder / OPTIMIZER_NAME)
        torch.save(state["scheduler"], folder / SCHEDULER_NAME)
        (folder / TRAINER_STATE_NAME).write_text(state["trainer_state"])
        return str(folder)

    @staticmethod
    def _transformers() -> Any:
        return require("transformers", "the Hugging Face integration", "hf")


def _global_step(state: Mapping[str, Any] | None) -> int:
    if state is None:
        return 0
    import json

    return int(json.loads(state["trainer_state"])["global_step"])


def pause_callback(transformers: Any, member: HFTrainable) -> Any:
    """A ``TrainerCallback`` that applies ``member``'s hyperparameters as training begins and stops
    training once the step's optimizer steps are done."""

    class Pause(transformers.TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            member.apply_hparams(kwargs["optimizer"], kwargs.get("lr_scheduler"))

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step >= member.stop_at:
                control.should_training_stop = True

    return Pause()


@contextlib.contextmanager
def quiet(transformers: Any) -> Iterator[None]:
    """Transformers' per-call notices (resuming, no RNG file in the checkpoint) are noise when
    every step resumes; its warnings still show."""
    logging = transformers.utils.logging
    level = logging.get_verbosity()
    logging.set_verbosity_warning()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        yield
    finally:
        logging.set_verbosity(level)
