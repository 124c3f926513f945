"""What ``poptrain run`` runs: an experiment module (``experiment()`` returning its settings)
or a YAML config naming a Trainable, the search space and the strategy."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from poptrain.errors import ConfigError, PoptrainError
from poptrain.space import SearchSpace
from poptrain.strategy import Strategy, every, import_object, perturb, strategy_from_spec, truncation


@dataclass
class ExperimentSpec:
    """Everything needed to create and train a run."""

    name: str
    trainable: Callable[[], Any]
    space: SearchSpace
    population_size: int
    steps: int
    metric: str = "score"
    mode: str = "max"
    seed: int = 0
    strategy: Strategy = field(default_factory=Strategy)
    initial_hparams: list[dict[str, Any]] | None = None
    summarize: Callable[[Any], dict[str, Any]] | None = None
    executor: str = "sequential"

    def run_kwargs(self) -> dict[str, Any]:
        """Arguments for ``poptrain.create_run`` (without name and storage)."""
        s = self.strategy
        return {
            "space": self.space, "population_size": self.population_size, "metric": self.metric, "mode": self.mode,
            "ready": s.ready, "exploit": s.exploit, "explore": s.explore, "inherit_hparams": s.inherit_hparams,
            "synchronous": s.synchronous, "seed": self.seed, "initial_hparams": self.initial_hparams,
        }


class _StrategyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ready: dict[str, Any] = {"type": "every", "steps": 4}
    exploit: dict[str, Any] | None = {"type": "truncation", "fraction": 0.2}
    explore: dict[str, Any] | None = {"type": "perturb", "factors": [0.8, 1.2], "resample_probability": 0.25}
    inherit_hparams: bool = True
    synchronous: bool = False


class _RunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = None
    trainable: str
    space: dict[str, Any]
    population_size: int = Field(ge=1)
    steps: int = Field(ge=1)
    metric: str = "score"
    mode: Literal["max", "min"] = "max"
    seed: int = Field(default=0, ge=0)
    strategy: _StrategyConfig = _StrategyConfig()
    executor: Literal["sequential", "processes", "vectorized", "ray"] = "sequential"


_MODULE_KEYS = {f.name for f in fields(ExperimentSpec)} - {"strategy", "name", "summarize"} | {
    "ready", "exploit", "explore", "inherit_hparams", "synchronous",
}


def _from_yaml(path: Path) -> ExperimentSpec:
    import yaml

    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with trainable, space, population_size and steps")
    try:
        config = _RunConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "config"
        raise ConfigError(f"{path}: {where}: {first['msg']} ({exc.error_count()} problem(s) in all)") from None
    try:
        trainable = import_object(config.trainable, "trainable")
        strategy = strategy_from_spec(config.strategy.model_dump())
        space = SearchSpace(config.space)
    except PoptrainError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return ExperimentSpec(
        config.name or path.stem, trainable, space, config.population_size, config.steps, config.metric,
        config.mode, config.seed, strategy, executor=config.executor,
    )


def _import_target(target: str) -> Any:
    path = Path(target)
    if target.endswith(".py"):
        if not path.is_file():
            raise ConfigError(f"experiment file {target} does not exist")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        sys.modules[path.stem] = module
        try:
            spec.loader.exec_module(module)  # type: ignore[union-attr]
        except Exception as exc:
            del sys.modules[path.stem]
            raise ConfigError(f"cannot load experiment file {target}: {_describe(exc)}") from exc
        return module
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as exc:
        if exc.name and target.startswith(exc.name):
            raise ConfigError(
                f"cannot find experiment {target!r}: give a module (poptrain.experiments.digits), a .py file or a .yaml config"
            ) from None
        raise ConfigError(f"cannot load experiment {target!r}: {_describe(exc)}") from exc
    except Exception as exc:
        raise ConfigError(f"cannot load experiment {target!r}: {_describe(exc)}") from exc


def _describe(exc: BaseException) -> str:
    """``SyntaxError: invalid syntax (line 3)``-style one-line description of an import failure."""
    if isinstance(exc, SyntaxError):
        return f"SyntaxError: {exc.msg} (line {exc.lineno})"
    tb = exc.__traceback__
    line = None
    while tb is not None:
        line = tb.tb_lineno
        tb = tb.tb_next
    return f"{type(exc).__name__}: {exc}" + (f" (line {line})" if line else "")


def _from_module(target: str) -> ExperimentSpec:
    module = _import_target(target)
    factory = getattr(module, "experiment", None)
    if not callable(factory):
        raise ConfigError(f"experiment module {target!r} has no experiment() function returning its settings")
    try:
        settings = dict(factory())
    except PoptrainError:
        raise
    except Exception as exc:
        raise ConfigError(f"experiment {target!r}: experiment() raised {_describe(exc)}") from exc
    unknown = set(settings) - _MODULE_KEYS
    if unknown:
        raise ConfigError(f"experiment {target!r}: unknown setting(s) {', '.join(sorted(unknown))}")
    missing = {"trainable", "space", "population_size", "steps"} - set(settings)
    if missing:
        raise ConfigError(f"experiment {target!r}: missing setting(s) {', '.join(sorted(missing))}")
    strategy = Strategy(
        settings.pop("ready", every(4)), settings.pop("exploit", truncation(0.2)),
        settings.pop("explore", perturb((0.8, 1.2), resample_probability=0.25)),
        settings.pop("inherit_hparams", True), settings.pop("synchronous", False),
    )
    settings["space"] = SearchSpace(settings["space"])
    name = target.rsplit(".", 1)[-1] if not target.endswith(".py") else Path(target).stem
    return ExperimentSpec(name=name, strategy=strategy, summarize=getattr(module, "summarize", None), **settings)


def load_experiment(target: str) -> ExperimentSpec:
    """An experiment from a module path, a ``.py`` file or a ``.yaml``/``.yml`` config."""
    if target.endswith((".yaml", ".yml")):
        path = Path(target)
        if not path.is_file():
            raise ConfigError(f"config file {target} does not exist")
        return _from_yaml(path)
    return _from_module(target)
