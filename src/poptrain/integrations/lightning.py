"""PyTorch Lightning: a ``LightningModule`` trained as a poptrain member.

``lightning_member(make_module, train_dataloaders=..., val_dataloaders=..., batches=50)`` gives
the factory ``run.optimize`` takes. Each member builds its module with ``make_module(hparams)``;
a step trains ``batches`` more optimizer steps (or one epoch) with ``Trainer.fit``, continuing
from the member's own Lightning checkpoint, and ``evaluate()`` runs ``Trainer.validate`` and
returns every logged metric. See ``docs/integrations.md``.

Lightning is imported when a member is made: ``pip install "poptrain[lightning]"``.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import itertools
import logging
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from poptrain.errors import ConfigError
from poptrain.integrations._common import APPLIED_KEY, changed, require
from poptrain.space import HParams
from poptrain.trainable import Trainable, TrainContext

__all__ = ["LightningTrainable", "lightning_member"]

RESERVED_TRAINER_ARGS = frozenset(
    {
        "max_steps",
        "max_epochs",
        "min_steps",
        "min_epochs",
        "max_time",
        "logger",
        "enable_checkpointing",
        "limit_val_batches",
        "num_sanity_val_steps",
        "val_check_interval",
        "check_val_every_n_epoch",
    }
)
"""Trainer arguments the integration sets itself: what a step is, and no validation or files in ``fit``."""

_CHECKPOINT = "poptrain-member"  # the name the member's checkpoint has in its in-memory checkpoint IO
_NOT_KEPT = (
    "hyper_parameters",
    "hparams_name",
    "hparams_type",
    "datamodule_hyper_parameters",
    "datamodule_hparams_name",
)


def lightning_member(
    make_module: Callable[[HParams], Any],
    *,
    train_dataloaders: Any = None,
    val_dataloaders: Any = None,
    datamodule: Any = None,
    batches: int | None = None,
    trainer_kwargs: Mapping[str, Any] | None = None,
) -> Callable[[], LightningTrainable]:
    """The trainable factory for ``run.optimize``: each member is ``make_module(hparams)``.

    Data: ``train_dataloaders`` (and ``val_dataloaders``), or a ``LightningDataModule``, or
    else the module's own ``train_dataloader()``/``val_dataloader()``. A step is ``batches``
    optimizer steps (Lightning's ``global_step``), or one epoch when ``batches`` is ``None``.
    ``trainer_kwargs`` go to every ``lightning.pytorch.Trainer`` (``gradient_clip_val``,
    ``precision``, ``callbacks``, ...), except the ones in ``RESERVED_TRAINER_ARGS``.
    The factory pickles when ``make_module`` and the data do (a module-level function and
    datasets), so it runs on every executor.
    """
    check_arguments(make_module, batches, trainer_kwargs)
    import_lightning()
    return functools.partial(
        LightningTrainable,
        make_module,
        train_dataloaders=train_dataloaders,
        val_dataloaders=val_dataloaders,
        datamodule=datamodule,
        batches=batches,
        trainer_kwargs=dict(trainer_kwargs or {}),
    )


def check_arguments(make_module: Any, batches: Any, trainer_kwargs: Mapping[str, Any] | None) -> None:
    """One ``ConfigError`` line for an argument that cannot work."""
    if not callable(make_module):
        raise ConfigError(f"make_module is a {type(make_module).__name__}; give a function hparams -> LightningModule")
    if batches is not None and (isinstance(batches, bool) or not isinstance(batches, int) or batches < 1):
        raise ConfigError(f"batches={batches!r}; give a positive int (optimizer steps per step), or None for one epoch")
    for name in sorted(set(trainer_kwargs or {}) & RESERVED_TRAINER_ARGS):
        raise ConfigError(
            f"trainer_kwargs sets {name!r}, which poptrain controls (a step is batches= or one epoch, evaluation "
            "is evaluate(), checkpoints are poptrain's); leave it out"
        )


class LightningTrainable(Trainable):
    """A poptrain member that trains a ``LightningModule`` (made by ``lightning_member``).

    Hyperparameters: ``make_module(hparams)`` gets them all. Later, as each step starts (after
    the optimizers' state is restored) and only when they differ from the ones that state was
    trained with, one whose name is a key of the optimizers' ``param_groups`` (``lr``,
    ``weight_decay``, ``momentum``, ``betas``) is written as is into every param group that has
    it, then the module's ``set_hparams(hparams)``, if it defines one, is called with all of
    them. A hyperparameter that is neither is refused when training starts.
    """

    def __init__(
        self,
        make_module: Callable[[HParams], Any],
        *,
        train_dataloaders: Any = None,
        val_dataloaders: Any = None,
        datamodule: Any = None,
        batches: int | None = None,
        trainer_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        check_arguments(make_module, batches, trainer_kwargs)
        self.make_module = make_module
        self.batches = batches
        self.trainer_kwargs = dict(trainer_kwargs or {})
        self._data = (train_dataloaders, val_dataloaders, datamodule)
        self._checkpoint: dict[str, Any] | None = None  # the state the next fit continues from
        self._applied: dict[str, Any] = {}
        self._hparams: dict[str, Any] = {}

    def setup(self, hparams: HParams, context: TrainContext) -> None:
        """Build the module with ``make_module(hparams)`` and find its data."""
        import_lightning()
        self.module = self.make_module(dict(hparams))
        self.pl = lightning_namespace(self.module)
        self.context = context
        self._hparams = dict(hparams)
        self._applied = dict(hparams)  # the module, and the optimizers it configures, are made from them
        train, val = self._loaders()
        self.train_loader = ResumableLoader(train)
        self.val_loader = val
        self._io = memory_checkpoint_io(self.pl)

    def step(self) -> None:
        """Train ``batches`` more optimizer steps (or one more epoch) from the member's checkpoint."""
        checkpoint = self._checkpoint or {}
        if self.batches is None:
            limits = {"max_epochs": int(checkpoint.get("epoch", 0)) + 1, "max_steps": -1}
        else:
            limits = {"max_epochs": -1, "max_steps": int(checkpoint.get("global_step", 0)) + self.batches}
        apply = hparams_callback(self.pl, self)
        trainer = self._trainer(limits, fitting=True, extra_callbacks=[apply])
        self._io.saved = self._checkpoint
        with quiet():
            trainer.fit(
                self.module,
                train_dataloaders=self.train_loader,
                ckpt_path=_CHECKPOINT if self._checkpoint is not None else None,
            )
            trainer.save_checkpoint(_CHECKPOINT)
        saved = self._io.saved
        assert saved is not None  # save_checkpoint went through the in-memory IO
        for key in _NOT_KEPT:  # the module is made again from the hyperparameters
            saved.pop(key, None)
        saved[APPLIED_KEY] = dict(self._applied)
        self._checkpoint = saved

    def evaluate(self) -> dict[str, float]:
        """The module's validation loop (``Trainer.validate``): every metric it logged, as floats."""
        if self.val_loader is None:
            raise ConfigError(
                "the Lightning member has no validation data to evaluate on; pass val_dataloaders=, a datamodule "
                "with val_dataloader(), or define val_dataloader() on the module"
            )
        trainer = self._trainer({}, fitting=False)
        with quiet():
            trainer.validate(self.module, dataloaders=self.val_loader, verbose=False)
        return {str(name): float(value) for name, value in trainer.callback_metrics.items()}

    def state_dict(self) -> dict[str, Any]:
        """The member's Lightning checkpoint: weights, optimizer and LR-scheduler states, loop
        progress (global step, epoch, the data loader's place in its epoch) and the
        hyperparameters its optimizer state was trained with."""
        if self._checkpoint is not None:
            return self._checkpoint
        weights = {name: tensor.detach().clone() for name, tensor in self.module.state_dict().items()}
        return {"state_dict": weights, APPLIED_KEY: {}}

    def load_state_dict(self, state: Any) -> None:
        """Load a state from ``state_dict`` (possibly another member's): the weights at once, the
        optimizer, scheduler and loop state when the next step starts."""
        self.module.load_state_dict(state["state_dict"])
        self._checkpoint = state if "optimizer_states" in state else None
        self._applied = dict(state.get(APPLIED_KEY, {}))
        self.train_loader.forget()

    def set_hparams(self, hparams: HParams) -> None:
        """Take new hyperparameters; they reach the optimizer when the next step starts."""
        self._hparams = dict(hparams)

    def apply_hparams(self, trainer: Any, module: Any) -> None:
        """Write the changed hyperparameters into the live optimizers and call the module's
        ``set_hparams`` (as training starts, after Lightning restored the optimizers' state)."""
        keys = {key for optimizer in trainer.optimizers for group in optimizer.param_groups for key in group}
        hook = getattr(module, "set_hparams", None)
        rest = sorted(set(self._hparams) - keys)
        if rest and not callable(hook):
            raise ConfigError(
                f"hyperparameter {rest[0]!r} is no key of the optimizer's param_groups ({', '.join(sorted(keys))}) "
                f"and {type(module).__name__} has no set_hparams(hparams); define set_hparams on the module to "
                "apply it"
            )
        changes = changed(self._applied, self._hparams)
        if not changes:
            return
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                for name in changes.keys() & group.keys():
                    group[name] = changes[name]
        if callable(hook):
            hook(dict(self._hparams))
        self._applied = dict(self._hparams)

    def _trainer(self, limits: Mapping[str, Any], *, fitting: bool, extra_callbacks: list[Any] | None = None) -> Any:
        kwargs: dict[str, Any] = {"accelerator": accelerator(self.context.device), "devices": 1}
        kwargs.update(
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
        )
        kwargs.update(self.trainer_kwargs)
        kwargs.update(limits)
        if fitting:
            kwargs["limit_val_batches"] = 0  # evaluation is evaluate()'s
            kwargs["callbacks"] = list(kwargs.get("callbacks") or []) + list(extra_callbacks or [])
            kwargs["plugins"] = list(kwargs.get("plugins") or []) + [self._io]
        with quiet():
            return self.pl.Trainer(**kwargs)

    def _loaders(self) -> tuple[Any, Any]:
        train, val, datamodule = self._data
        if train is not None:
            return train, val
        if datamodule is not None:
            datamodule.prepare_data()
            datamodule.setup("fit")
            source, base = datamodule, self.pl.LightningDataModule
        else:
            source, base = self.module, self.pl.LightningModule
        if not overridden(source, base, "train_dataloader"):
            raise ConfigError(
                "the Lightning member has no training data; pass train_dataloaders= or datamodule= to "
                "lightning_member, or define train_dataloader() on the module"
            )
        if val is None and overridden(source, base, "val_dataloader"):
            val = source.val_dataloader()
        return source.train_dataloader(), val


def overridden(obj: Any, base: type, hook: str) -> bool:
    """Whether ``obj``'s class defines its own ``hook`` (Lightning's defaults raise)."""
    return getattr(type(obj), hook, None) is not getattr(base, hook, None)


def import_lightning() -> Any:
    """``lightning.pytorch`` (or the older ``pytorch_lightning``), or one line naming the extra."""
    try:
        return require("lightning.pytorch", "the Lightning integration", "lightning")
    except ConfigError:
        try:
            import pytorch_lightning
        except ImportError:
            raise ConfigError('the Lightning integration needs lightning: pip install "poptrain[lightning]"') from None
        return pytorch_lightning


def lightning_namespace(module: Any) -> Any:
    """``lightning.pytorch`` or ``pytorch_lightning``: whichever ``module`` is a LightningModule of."""
    for name in ("lightning.pytorch", "pytorch_lightning"):
        namespace = sys.modules.get(name)
        if namespace is not None and isinstance(module, namespace.LightningModule):
            return namespace
    raise ConfigError(
        f"make_module returned a {type(module).__name__}, not a LightningModule; return an instance of a "
        "lightning.pytorch.LightningModule subclass"
    )


def accelerator(device: str) -> str:
    """Lightning's accelerator name for a poptrain device string."""
    return "gpu" if device.startswith("cuda") else "mps" if device.startswith("mps") else "cpu"


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Lightning's per-call notices (devices found, checkpoint restored, few loader workers) are
    noise when every step is a ``fit``; warnings about the user's own code still show."""
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric", "pytorch_lightning")]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=".*number of training batches.*smaller than the logging.*")
            warnings.filterwarnings("ignore", message=".*defined a `validation_step` but have no `val_dataloader`.*")
            warnings.filterwarnings("ignore", message=".*isinstance.treespec, LeafSpec.*")
            yield
    finally:
        for log, level in zip(loggers, levels, strict=True):
            log.setLevel(level)


def hparams_callback(pl: Any, member: LightningTrainable) -> Any:
    """A Lightning callback that applies ``member``'s hyperparameters once the optimizers are restored."""

    class ApplyHparams(pl.Callback):
        def on_train_start(self, trainer: Any, pl_module: Any) -> None:
            member.apply_hparams(trainer, pl_module)

    return ApplyHparams()


def memory_checkpoint_io(pl: Any) -> Any:
    """A Lightning ``CheckpointIO`` that keeps the member's one checkpoint in memory (copied both
    ways, so training never changes a state poptrain was given)."""

    class MemoryCheckpointIO(pl.plugins.io.CheckpointIO):
        saved: dict[str, Any] | None = None

        def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
            self.saved = copy.deepcopy(checkpoint)

        def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: Any = None) -> dict[str, Any]:
            assert self.saved is not None
            return copy.deepcopy(self.saved)

        def remove_checkpoint(self, path: Any) -> None:
            self.saved = None

    return MemoryCheckpointIO()


class ResumableLoader:
    """The training data loader, resumable mid-epoch (Lightning's ``state_dict``/``load_state_dict``
    loader protocol), so a step of ``batches`` continues the epoch where the last one stopped.

    Its state is torch's global random state when the epoch's iterator was made (a shuffling
    sampler draws its seed from it) and how many batches were taken. Restoring makes the
    iterator again from that random state, putting the global one back, and skips the batches
    taken; a live loader whose place matches just continues.
    """

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self._pending: dict[str, Any] | None = None
        self._rng: Any = None
        self._taken = 0
        self._iterator: Iterator[Any] | None = None

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        return self._batches()  # lazy: Lightning calls iter() once just to check the loader

    def _start(self) -> Iterator[Any]:
        import torch

        pending, self._pending = self._pending, None
        if pending is None:
            self._rng, self._taken = torch.get_rng_state(), 0
            self._iterator = iter(self.loader)
        elif self._iterator is not None and pending["taken"] == self._taken and torch.equal(pending["rng"], self._rng):
            pass  # the live iterator is where the checkpoint says
        else:
            self._rng, self._taken = pending["rng"], int(pending["taken"])
            self._iterator = self._replay(pending["rng"], self._taken)
        return self._iterator

    def _replay(self, rng: Any, skip: int) -> Iterator[Any]:
        import torch

        try:
            if skip >= len(self.loader):
                return iter(())
        except TypeError:
            pass
        now = torch.get_rng_state()
        torch.set_rng_state(rng)
        try:
            iterator = iter(self.loader)
            first = list(itertools.islice(iterator, 1))  # samplers draw their seed on the first batch
        finally:
            torch.set_rng_state(now)
        replay = itertools.chain(first, iterator)
        for _ in itertools.islice(replay, skip):
            pass
        return replay

    def _batches(self) -> Iterator[Any]:
        iterator = self._start()
        for batch in iterator:
            self._taken += 1
            yield batch
        if self._iterator is iterator:
            self._iterator = None

    def state_dict(self) -> dict[str, Any]:
        """Where the loader is: the epoch's random state and the batches taken."""
        return {"rng": self._rng, "taken": self._taken}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from ``state`` when next iterated."""
        self._pending = dict(state)

    def forget(self) -> None:
        """Drop the live iterator (the member loaded another state)."""
        self._iterator = None
        self._pending = None
