"""What ``poptrain run`` runs: an experiment module (``experiment()`` returning its settings)
or a YAML config naming a Trainable, the search space and the strategy.

Every key and its rule is written once, in ``MODULE_SETTINGS``, ``YAML_SETTINGS`` and
``STRATEGY_SETTINGS`` below (``docs/experiment-settings.md`` describes them); every value is
checked while loading, before anything is written, and a bad one is refused with one line that
names the file, the key and what to write instead.

The folder of a ``.py`` experiment file or of a YAML config, and the current folder, are put
at the front of ``sys.path`` (once) and left there: the trainable's module must stay importable
after loading, for the worker processes of ``--executor processes`` (spawned processes start
with the parent's ``sys.path`` and import the trainable's module again) and for imports the
training code makes later.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from poptrain.errors import ConfigError, PoptrainError
from poptrain.executors import EXECUTORS
from poptrain.limits import MAX_POPULATION, MAX_SEED
from poptrain.space import SearchSpace
from poptrain.stopping import rules_from_setting
from poptrain.strategy import DEFAULT_STRATEGY, Strategy, callable_to_spec, import_object
from poptrain.strategy._spec import callable_from_spec

REQUIRED: Any = object()  # the default of a key that must be given


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
    callbacks: list[Any] = field(default_factory=list)  # as given (names, mappings, Callbacks); made by make_callbacks
    stop: tuple[Any, ...] = ()  # stop rules (poptrain.stopping), checked when the experiment is read

    def run_kwargs(self) -> dict[str, Any]:
        """Arguments for ``poptrain.create_run`` (without name and storage)."""
        s = self.strategy
        return {
            "space": self.space,
            "population_size": self.population_size,
            "metric": self.metric,
            "mode": self.mode,
            "ready": s.ready,
            "exploit": s.exploit,
            "explore": s.explore,
            "inherit_hparams": s.inherit_hparams,
            "synchronous": s.synchronous,
            "replace_failed": s.replace_failed,
            "seed": self.seed,
            "initial_hparams": self.initial_hparams,
        }


# --- the keys and their rules ----------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """One key of an experiment: what a valid value is (``expect``, also the fix in messages),
    the check, and the default (``REQUIRED`` when it must be given)."""

    name: str
    expect: str
    valid: Callable[[Any], bool]
    default: Any = REQUIRED


def _whole(minimum: int, maximum: int | None = None) -> Callable[[Any], bool]:
    return lambda v: (
        isinstance(v, int) and not isinstance(v, bool) and v >= minimum and (maximum is None or v <= maximum)
    )


def _is_bool(v: Any) -> bool:
    return isinstance(v, bool)


def _is_metric(v: Any) -> bool:
    return isinstance(v, str) and bool(v.strip())


def _is_run_name(v: Any) -> bool:
    from poptrain.run_folders import check_name  # the one rule for run names (they become folder names)

    try:
        check_name(v)
    except ConfigError:
        return False
    return True


def _is_trainable(v: Any) -> bool:
    """A Trainable (or VectorizedTrainable) subclass, or a zero-argument factory of one."""
    if isinstance(v, type):
        from poptrain.trainable import trainable_bases

        return issubclass(v, trainable_bases())
    return callable(v)


def _is_import_path(v: Any) -> bool:
    return isinstance(v, str) and all(p.strip() for p in v.partition(":")[::2]) and ":" in v


def _is_hparams_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(h, Mapping) for h in v)


def _is_strategy_spec(optional: bool) -> Callable[[Any], bool]:
    return lambda v: (optional and v is None) or (isinstance(v, Mapping) and "type" in v)


def _is_mapping(v: Any) -> bool:
    return isinstance(v, Mapping)


def _is_callback_list(v: Any) -> bool:
    """A list of callbacks as ``poptrain.callbacks.make_callbacks`` takes them (checked in full when made)."""
    from poptrain.callbacks import Callback

    def one(item: Any) -> bool:
        if isinstance(item, str):
            return bool(item.strip())
        return isinstance(item, Callback) or (isinstance(item, Mapping) and isinstance(item.get("type"), str))

    return isinstance(v, (list, tuple)) and all(one(item) for item in v)


_CALLBACKS_EXPECT = (
    "a list of callbacks: logger names (jsonl, tensorboard, mlflow, wandb), import paths (mypkg.MyCallback) "
    "or mappings with a type (e.g. [jsonl, {type: tensorboard, dir: logs/tb}])"
)


def _is_stop_setting(value: Any) -> bool:
    from poptrain.stopping import rules_from_setting

    try:
        rules_from_setting(value)
    except ConfigError:
        return False
    return True


def _optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or check(v)


_NAME = Setting(
    "name",
    "a run name of letters, digits, '.', '_' and '-', starting with a letter or digit (at most 128)",
    _optional(_is_run_name),
    None,
)
_NUMBERS = (
    Setting("population_size", f"a whole number from 1 to {MAX_POPULATION} (e.g. 8)", _whole(1, MAX_POPULATION)),
    Setting("steps", "a whole number >= 1, the steps each member trains (e.g. 20)", _whole(1)),
    Setting("metric", "a non-empty string naming what evaluate() returns (e.g. 'val_acc')", _is_metric, "score"),
    Setting(
        "mode", "'max' or 'min' (whether a higher or a lower metric is better)", lambda v: v in ("max", "min"), "max"
    ),
    Setting("seed", f"a whole number from 0 to {MAX_SEED}", _whole(0, MAX_SEED), 0),
    Setting("executor", f"one of {', '.join(EXECUTORS)}", lambda v: v in EXECUTORS, "sequential"),
    Setting("callbacks", _CALLBACKS_EXPECT, _is_callback_list, []),
    Setting(
        "stop",
        "None, stop rules (poptrain.time_budget(hours=2), target(0.98), plateau(20)) or a mapping of them "
        "(e.g. {time_budget: 2h, target: 0.98, plateau: 20})",
        _is_stop_setting,
        None,
    ),
)

MODULE_SETTINGS: tuple[Setting, ...] = (
    _NAME,
    Setting(
        "trainable", "a poptrain.Trainable subclass or a zero-argument factory of one (e.g. MyTrainable)", _is_trainable
    ),
    Setting(
        "space",
        "a dict of hyperparameter names to parameters (e.g. {'lr': poptrain.Float(1e-4, 1e-1, log=True)})",
        _is_mapping,
    ),
    *_NUMBERS,
    Setting("ready", "a ready strategy (e.g. poptrain.every(4))", callable, DEFAULT_STRATEGY.ready),
    Setting(
        "exploit",
        "an exploit strategy or None (e.g. poptrain.ttest(window=8))",
        _optional(callable),
        DEFAULT_STRATEGY.exploit,
    ),
    Setting(
        "explore",
        "an explore strategy or None (e.g. poptrain.perturb((0.8, 1.2)))",
        _optional(callable),
        DEFAULT_STRATEGY.explore,
    ),
    Setting("inherit_hparams", "True or False", _is_bool, True),
    Setting("synchronous", "True or False", _is_bool, False),
    Setting("replace_failed", "None, True or False", _optional(_is_bool), None),
    Setting(
        "initial_hparams", "None or a list of one dict of hyperparameters per member", _optional(_is_hparams_list), None
    ),
    Setting("summarize", "None or a function summarize(run) returning a dict of numbers", _optional(callable), None),
)
"""The keys ``experiment()`` may return."""

STRATEGY_SETTINGS: tuple[Setting, ...] = (
    Setting(
        "ready",
        "a mapping with a type (e.g. {type: every, steps: 4})",
        _is_strategy_spec(False),
        callable_to_spec(DEFAULT_STRATEGY.ready),
    ),
    Setting(
        "exploit",
        "null or a mapping with a type (e.g. {type: ttest, window: 8})",
        _is_strategy_spec(True),
        callable_to_spec(DEFAULT_STRATEGY.exploit),
    ),
    Setting(
        "explore",
        "null or a mapping with a type (e.g. {type: perturb, factors: [0.8, 1.2]})",
        _is_strategy_spec(True),
        callable_to_spec(DEFAULT_STRATEGY.explore),
    ),
    Setting("inherit_hparams", "true or false", _is_bool, True),
    Setting("synchronous", "true or false", _is_bool, False),
    Setting("replace_failed", "null, true or false", _optional(_is_bool), None),
)
"""The keys of a YAML config's ``strategy:`` mapping."""

YAML_SETTINGS: tuple[Setting, ...] = (
    _NAME,
    Setting("trainable", "an import path module:Class (e.g. mymodule:MyTrainable)", _is_import_path),
    Setting(
        "space",
        "a mapping of hyperparameter names to parameters (e.g. {lr: {type: float, low: 0.0001, high: 0.1, log: true}})",
        _is_mapping,
    ),
    *_NUMBERS,
    Setting("strategy", f"a mapping with some of {', '.join(s.name for s in STRATEGY_SETTINGS)}", _is_mapping, {}),
)
"""The top-level keys of a YAML config."""


def _short(value: Any, limit: int = 80) -> str:
    """``repr(value)`` on one line, cut to ``limit`` characters."""
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _checked(where: str, raw: Mapping[Any, Any], settings: tuple[Setting, ...], what: str) -> dict[str, Any]:
    """``raw`` with defaults filled in, every key known and every value valid, else one
    ``ConfigError`` line: ``WHERE: KEY must be EXPECT, got VALUE``."""
    valid = {s.name: s for s in settings}
    unknown = [str(k) for k in raw if k not in valid]
    if unknown:
        raise ConfigError(
            f"{where}: unknown {what} {', '.join(map(repr, sorted(unknown)))}; valid {what}s are {', '.join(valid)}"
        )
    missing = [s.name for s in settings if s.default is REQUIRED and s.name not in raw]
    if missing:
        raise ConfigError(
            f"{where}: missing {what}(s) {', '.join(missing)}; "
            + "; ".join(f"{name} must be {valid[name].expect}" for name in missing)
        )
    values: dict[str, Any] = {}
    for s in settings:
        value = raw.get(s.name, s.default)
        if s.name in raw and not s.valid(value):
            raise ConfigError(f"{where}: {s.name} must be {s.expect}, got {_short(value)}")
        values[s.name] = value
    return values


# --- loading ---------------------------------------------------------------------------------


def _make_importable(*folders: Path) -> None:
    """Put each folder at the front of ``sys.path`` unless it is there already (in the order given)."""

    def same(entry: Any, folder: str) -> bool:
        return isinstance(entry, str) and os.path.realpath(entry or os.curdir) == folder

    for folder in reversed(folders):
        real = os.path.realpath(folder)
        if not any(same(entry, real) for entry in sys.path):
            sys.path.insert(0, str(folder.resolve()))
    importlib.invalidate_caches()  # modules written since the interpreter started are found too


def _describe(exc: BaseException, main_file: str | None = None) -> str:
    """``SyntaxError: invalid syntax (line 3)``-style one-line description of a failure in user
    code; the file is named when it is not ``main_file``."""

    def at(filename: str | None, line: int | None) -> str:
        if line is None:
            return ""
        same = filename is None or (main_file is not None and os.path.realpath(filename) == os.path.realpath(main_file))
        return f" (line {line})" if same else f" (line {line} of {filename})"

    if isinstance(exc, SyntaxError):
        return f"SyntaxError: {exc.msg}{at(exc.filename, exc.lineno)}"
    tb, filename, line = exc.__traceback__, None, None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename != __file__:  # the user's code, not this loader calling it
            filename, line = tb.tb_frame.f_code.co_filename, tb.tb_lineno
        tb = tb.tb_next
    message = " ".join(str(exc).split())
    return f"{type(exc).__name__}" + (f": {message}" if message else "") + at(filename, line)


def _user_failure(prefix: str, main_file: str | None, exc: BaseException) -> ConfigError:
    """One ``ConfigError`` line, ``PREFIX: what happened``, for what user code raised."""
    if isinstance(exc, PoptrainError):
        detail = " ".join(str(exc).split())
    elif isinstance(exc, SystemExit):
        detail = f"it called sys.exit({exc.code!r}); keep command-line parsing under if __name__ == '__main__':"
    else:
        detail = _describe(exc, main_file)
    if detail.startswith(prefix.rpartition(": ")[2] + ": "):  # "trainable: trainable: ..." reads once
        detail = detail.partition(": ")[2]
    return ConfigError(f"{prefix}: {detail}")


def _exec_user_code(prefix: str, main_file: str | None, fn: Callable[[], Any]) -> Any:
    """``fn()`` (an import, ``experiment()``), what it raises turned into one ``ConfigError`` line."""
    try:
        return fn()
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - user code may raise anything; it becomes one line
        raise _user_failure(prefix, main_file, exc) from (None if isinstance(exc, (PoptrainError, SystemExit)) else exc)


_LOADED: dict[str, Any] = {}  # experiment files loaded here, by module name


def _import_file(path: Path, target: str) -> Any:
    """Run an experiment ``.py`` file as the module named after it (so that spawned workers,
    which have its folder on ``sys.path``, import the same module by name)."""
    name = path.stem
    existing = sys.modules.get(name)
    if existing is not None and existing is not _LOADED.get(name):
        other = getattr(existing, "__file__", None)
        if other is None or os.path.realpath(other) != os.path.realpath(path):
            raise ConfigError(
                f"{target}: the file name {name!r} is also the name of the module {name} "
                f"({other or 'built in'}) that is imported already; rename the file"
            )
    _make_importable(path.parent, Path.cwd())
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[name] = _LOADED[name] = module
    try:
        _exec_user_code(f"cannot load experiment file {target}", str(path), lambda: spec.loader.exec_module(module))  # type: ignore[union-attr]
    except ConfigError:
        del sys.modules[name], _LOADED[name]
        raise
    return module


def _import_module(target: str) -> Any:
    """Import an experiment module by name, the current folder included in ``sys.path``."""
    if Path(target).is_file() or not all(part.isidentifier() for part in target.split(".")):
        kind = "file" if Path(target).is_file() else "module name"
        raise ConfigError(
            f"{target}: not an experiment {kind}; give a module (poptrain.experiments.digits), a .py file or a .yaml config"
        )
    _make_importable(Path.cwd())
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (target == exc.name or target.startswith(exc.name + ".")):
            raise ConfigError(
                f"cannot find experiment {target!r}: no module named {exc.name!r} in the current folder or installed; "
                "give a module (poptrain.experiments.digits), a .py file or a .yaml config"
            ) from None
        raise _user_failure(f"cannot load experiment {target!r}", None, exc) from exc
    except (Exception, SystemExit) as exc:
        raise _user_failure(f"cannot load experiment {target!r}", None, exc) from exc


def _not_a_file(path: Path) -> str:
    """Why ``path`` cannot be read as a file, for a message."""
    if not path.exists():
        return "does not exist"
    return "is a folder, not a file" if path.is_dir() else "is not a regular file"


def _from_module(target: str) -> ExperimentSpec:
    main_file: str | None
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise ConfigError(f"experiment file {target} {_not_a_file(path)}")
        module = _import_file(path, target)
        default_name, main_file = path.stem, str(path)
    else:
        module = _import_module(target)
        default_name, main_file = target.rsplit(".", 1)[-1], getattr(module, "__file__", None)
    factory = getattr(module, "experiment", None)
    if not callable(factory):
        raise ConfigError(
            f"{target}: no experiment() function; define one returning the settings, e.g. "
            "def experiment(): return {'trainable': MyTrainable, 'space': {...}, 'population_size': 8, 'steps': 20}"
        )
    raw = _exec_user_code(f"{target}: experiment() raised", main_file, factory)
    if not isinstance(raw, Mapping):
        raise ConfigError(
            f"{target}: experiment() returned {type(raw).__name__}, not a dict of settings; "
            "return e.g. {'trainable': MyTrainable, 'space': {...}, 'population_size': 8, 'steps': 20}"
        )
    where = f"{target}: experiment()"
    settings = _checked(where, raw, MODULE_SETTINGS, "setting")
    strategy = _exec_user_code(
        where,
        main_file,
        lambda: Strategy(
            settings["ready"],
            settings["exploit"],
            settings["explore"],
            settings["inherit_hparams"],
            settings["synchronous"],
            settings["replace_failed"],
        ),
    )
    return ExperimentSpec(
        settings["name"] or default_name,
        settings["trainable"],
        _space(where, settings["space"]),
        settings["population_size"],
        settings["steps"],
        settings["metric"],
        settings["mode"],
        settings["seed"],
        strategy,
        None if settings["initial_hparams"] is None else [dict(h) for h in settings["initial_hparams"]],
        settings["summarize"] or getattr(module, "summarize", None),
        settings["executor"],
        list(settings["callbacks"]),
        rules_from_setting(settings["stop"]),
    )


def _space(where: str, space: Mapping[str, Any]) -> SearchSpace:
    try:
        return SearchSpace(space)
    except PoptrainError as exc:
        raise ConfigError(f"{where}: space: {exc}") from None


def _read_yaml(path: Path) -> Any:
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (not UTF-8); give a YAML config") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None


def _from_yaml(path: Path) -> ExperimentSpec:
    raw = _read_yaml(path)
    if not isinstance(raw, Mapping):
        got = "empty" if raw is None else f"a {type(raw).__name__}"
        raise ConfigError(
            f"{path}: the config is {got}; write a mapping with trainable, space, population_size and steps"
        )
    where = str(path)
    config = _checked(where, raw, YAML_SETTINGS, "key")
    parts = _checked(f"{where}: strategy", config["strategy"], STRATEGY_SETTINGS, "key")
    _make_importable(path.parent, Path.cwd())
    trainable = _exec_user_code(f"{where}: trainable", None, lambda: import_object(config["trainable"], "trainable"))
    if not _is_trainable(trainable):
        what = f"the class {trainable.__qualname__}" if isinstance(trainable, type) else f"a {type(trainable).__name__}"
        raise ConfigError(f"{where}: trainable {config['trainable']!r} is {what}, not a poptrain.Trainable subclass")
    roles = {role: _strategy_part(where, role, parts[role]) for role in ("ready", "exploit", "explore")}
    strategy = _exec_user_code(
        f"{where}: strategy",
        None,
        lambda: Strategy(
            roles["ready"],
            roles["exploit"],
            roles["explore"],
            parts["inherit_hparams"],
            parts["synchronous"],
            parts["replace_failed"],
        ),
    )
    return ExperimentSpec(
        config["name"] or path.stem,
        trainable,
        _space(where, config["space"]),
        config["population_size"],
        config["steps"],
        config["metric"],
        config["mode"],
        config["seed"],
        strategy,
        executor=config["executor"],
        callbacks=list(config["callbacks"]),
        stop=rules_from_setting(config["stop"]),
    )


def _strategy_part(where: str, role: str, spec: Any) -> Any:
    """One strategy callable of a YAML config from its mapping (``{type: truncation, fraction: 0.2}``)."""
    label = f"strategy.{role}"
    return _exec_user_code(
        f"{where}: {label}", None, lambda: callable_from_spec(None if spec is None else dict(spec), label)
    )


def load_experiment(target: str) -> ExperimentSpec:
    """An experiment from a module path, a ``.py`` file or a ``.yaml``/``.yml`` config, every
    setting checked (``ConfigError``, one line naming the file and the key, when one is bad)."""
    if not isinstance(target, str) or not target.strip():
        raise ConfigError(
            "no experiment given; give a module (poptrain.experiments.digits), a .py file or a .yaml config"
        )
    if target.lower().endswith((".yaml", ".yml")):
        path = Path(target)
        if not path.is_file():
            raise ConfigError(f"config file {target} {_not_a_file(path)}")
        return _from_yaml(path)
    return _from_module(target)
