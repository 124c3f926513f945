"""Loading what ``poptrain run TARGET`` runs: modules beside a config or an experiment file are
importable, every ``experiment()`` key and YAML key is checked with one line naming the file
and the key, and nothing is written when a setting is bad."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cli_helpers import cli, one_line_error
from poptrain.errors import ConfigError
from poptrain.experiment import MODULE_SETTINGS, STRATEGY_SETTINGS, YAML_SETTINGS, load_experiment

_COUNTER = itertools.count()
SPACE_YAML = "space:\n  h0: {type: float, low: 0.0, high: 1.0}\n  h1: {type: float, low: 0.0, high: 1.0}\n"
TOY_SETTINGS = (
    "from poptrain.experiments.toy import SPACE, ToyQuadratic\n"
    "SETTINGS = {'trainable': ToyQuadratic, 'space': SPACE, 'population_size': 2, 'steps': 4, 'metric': 'Q'}\n"
)


def unique(stem: str) -> str:
    """A module name no other test uses (``sys.modules`` outlives a test)."""
    return f"{stem}_{os.getpid()}_{next(_COUNTER)}"


@pytest.fixture(autouse=True)
def isolated_imports(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """``sys.path`` as it was, and no module of this test's folders left in ``sys.modules``."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", None) or "").startswith(str(tmp_path)):
            del sys.modules[name]


def sibling_module(folder: Path) -> str:
    """Write ``<name>.py`` defining ``MyTrainable`` (the toy problem) into ``folder``; return its name."""
    name = unique("mymodule")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.py").write_text(
        "from poptrain.experiments.toy import ToyQuadratic\n\n\nclass MyTrainable(ToyQuadratic):\n    pass\n"
    )
    return name


# --- importable folders -------------------------------------------------------------------------


def test_yaml_config_imports_a_module_beside_it_from_another_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    module = sibling_module(tmp_path / "configs")
    config = tmp_path / "configs" / "local.yaml"
    config.write_text(f"trainable: {module}:MyTrainable\nmetric: Q\npopulation_size: 2\nsteps: 4\n{SPACE_YAML}")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    code, out, err = cli(capsys, "run", str(config), "--root", str(tmp_path / "runs"), "--quiet")
    assert code == 0, err
    assert "Run local" in out


def test_py_experiment_imports_a_module_beside_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    module = sibling_module(tmp_path / "exp")
    experiment = tmp_path / "exp" / "myexp.py"
    experiment.write_text(
        f"from {module} import MyTrainable\nfrom poptrain.experiments.toy import SPACE\n\n\n"
        "def experiment():\n"
        "    return {'trainable': MyTrainable, 'space': SPACE, 'population_size': 2, 'steps': 4, 'metric': 'Q'}\n"
    )
    code, _, err = cli(capsys, "run", str(experiment), "--root", str(tmp_path / "runs"), "--quiet")
    assert code == 0, err
    assert (tmp_path / "runs" / "myexp" / "poptrain.db").is_file()


def test_module_name_is_found_in_the_current_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    package = unique("mypkg")
    (tmp_path / package).mkdir()
    (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / package / "exp.py").write_text(TOY_SETTINGS + "\n\ndef experiment():\n    return dict(SETTINGS)\n")
    monkeypatch.chdir(tmp_path)
    cwd = os.path.realpath(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if os.path.realpath(p or os.curdir) != cwd])
    spec = load_experiment(f"{package}.exp")
    assert spec.name == "exp" and spec.population_size == 2


def test_config_folder_comes_first_and_is_added_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = sibling_module(tmp_path / "configs")
    config = tmp_path / "configs" / "c.yaml"
    config.write_text(f"trainable: {module}:MyTrainable\nmetric: Q\npopulation_size: 2\nsteps: 4\n{SPACE_YAML}")
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    load_experiment(str(config))
    load_experiment(str(config))
    resolved = [os.path.realpath(p or os.curdir) for p in sys.path if isinstance(p, str)]
    folder, cwd = os.path.realpath(tmp_path / "configs"), os.path.realpath(tmp_path / "cwd")
    assert resolved.count(folder) == 1 and resolved.count(cwd) == 1
    assert resolved.index(folder) < resolved.index(cwd) <= 1


@pytest.mark.parametrize("kind", ["yaml", "py"])
def test_processes_executor_workers_import_the_trainable_from_beside_the_target(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "exp"
    if kind == "yaml":  # the trainable lives in a sibling module
        module = sibling_module(folder)
        target = folder / "procs.yaml"
        target.write_text(f"trainable: {module}:MyTrainable\nmetric: Q\npopulation_size: 2\nsteps: 4\n{SPACE_YAML}")
    else:  # the trainable is defined in the experiment file itself
        folder.mkdir()
        target = folder / f"{unique('procs')}.py"
        target.write_text(
            "from poptrain.experiments.toy import SPACE, ToyQuadratic\n\n\nclass Inner(ToyQuadratic):\n    pass\n\n\n"
            "def experiment():\n"
            "    return {'trainable': Inner, 'space': SPACE, 'population_size': 2, 'steps': 4, 'metric': 'Q', 'name': 'procs'}\n"
        )
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    code, _, err = cli(
        capsys, "run", str(target), "--root", str(tmp_path / "runs"), "--quiet", "--executor", "processes"
    )
    assert code == 0, err
    assert "finished" in cli(capsys, "status", "procs", "--root", str(tmp_path / "runs"))[1]


def test_resume_from_another_folder_imports_the_module_beside_the_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    module = sibling_module(tmp_path / "configs")
    config = tmp_path / "configs" / "again.yaml"
    config.write_text(f"trainable: {module}:MyTrainable\nmetric: Q\npopulation_size: 2\nsteps: 4\n{SPACE_YAML}")
    root = tmp_path / "runs"
    assert cli(capsys, "run", str(config), "--root", str(root), "--quiet")[0] == 0
    (tmp_path / "elsewhere").mkdir()
    result = subprocess.run(  # a fresh interpreter: nothing imported yet
        [sys.executable, "-m", "poptrain", "resume", "again", "--root", str(root), "--steps", "8", "--quiet"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path / "elsewhere",
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr


# --- name ---------------------------------------------------------------------------------------


def write_experiment(folder: Path, body: str) -> Path:
    """An experiment file with the toy settings in ``SETTINGS`` and ``body`` (its experiment())."""
    path = folder / f"{unique('exp')}.py"
    path.write_text(TOY_SETTINGS + "import poptrain\n\n\n" + body)
    return path


def test_name_setting_is_the_default_run_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_experiment(tmp_path, "def experiment():\n    return {**SETTINGS, 'name': 'chosen'}\n")
    assert load_experiment(str(path)).name == "chosen"
    assert cli(capsys, "run", str(path), "--root", str(tmp_path / "runs"), "--quiet")[0] == 0
    assert (tmp_path / "runs" / "chosen" / "poptrain.db").is_file()
    assert cli(capsys, "run", str(path), "--root", str(tmp_path / "runs"), "--quiet", "--name", "other")[0] == 0
    assert (tmp_path / "runs" / "other" / "poptrain.db").is_file()


def test_yaml_name_and_default_names(tmp_path: Path) -> None:
    config = tmp_path / "conf.yml"
    config.write_text(f"trainable: poptrain.experiments.toy:ToyQuadratic\npopulation_size: 2\nsteps: 4\n{SPACE_YAML}")
    assert load_experiment(str(config)).name == "conf"
    config.write_text(config.read_text() + "name: yaml-name\n")
    assert load_experiment(str(config)).name == "yaml-name"
    path = write_experiment(tmp_path, "def experiment():\n    return SETTINGS\n")
    assert load_experiment(str(path)).name == path.stem
    assert load_experiment("poptrain.experiments.toy").name == "toy"


# --- unknown and missing keys -------------------------------------------------------------------


def error_of(target: Path | str) -> str:
    with pytest.raises(ConfigError) as info:
        load_experiment(str(target))
    message = str(info.value)
    assert "\n" not in message
    return message


def test_unknown_setting_lists_the_valid_ones(tmp_path: Path) -> None:
    path = write_experiment(tmp_path, "def experiment():\n    return {**SETTINGS, 'epochs': 3}\n")
    message = error_of(path)
    assert message.startswith(f"{path}: experiment(): unknown setting 'epochs'; valid settings are ")
    assert all(s.name in message for s in MODULE_SETTINGS)


def test_unknown_yaml_key_lists_the_valid_ones(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(
        f"trainable: poptrain.experiments.toy:ToyQuadratic\npopulation_size: 2\nsteps: 4\n{SPACE_YAML}epochs: 3\n"
    )
    message = error_of(config)
    assert message.startswith(f"{config}: unknown key 'epochs'; valid keys are ")
    assert all(s.name in message for s in YAML_SETTINGS)
    config.write_text(config.read_text().replace("epochs: 3", "strategy: {ready: {type: every, steps: 2}, elitism: 1}"))
    message = error_of(config)
    assert "strategy: unknown key 'elitism'" in message and all(s.name in message for s in STRATEGY_SETTINGS)


def test_missing_settings_are_named(tmp_path: Path) -> None:
    path = write_experiment(tmp_path, "def experiment():\n    return {'trainable': ToyQuadratic, 'space': SPACE}\n")
    assert "missing setting(s) population_size, steps" in error_of(path)
    config = tmp_path / "short.yaml"
    config.write_text("trainable: poptrain.experiments.toy:ToyQuadratic\nsteps: 4\n")
    assert "missing key(s) space, population_size" in error_of(config)


# --- every value checked ------------------------------------------------------------------------

MODULE_VALUES = [
    ("trainable", "'mymodule:MyTrainable'", "trainable must be a poptrain.Trainable subclass"),
    ("trainable", "dict", "trainable must be a poptrain.Trainable subclass"),
    ("trainable", "3", "trainable must be"),
    ("space", "[1, 2]", "space must be a dict of hyperparameter names"),
    ("space", "{}", "space: the search space is empty"),
    ("space", "{'lr': poptrain.Float(0.1, 0.01)}", "space: parameter 'lr': low (0.1) must be below high (0.01)"),
    ("population_size", "'8'", "population_size must be a whole number from 1 to 1000000"),
    ("population_size", "2.5", "population_size must be a whole number from 1 to 1000000"),
    ("population_size", "0", "population_size must be a whole number from 1 to 1000000"),
    ("population_size", "True", "population_size must be a whole number from 1 to 1000000"),
    ("steps", "'20'", "steps must be a whole number >= 1"),
    ("steps", "-1", "steps must be a whole number >= 1"),
    ("metric", "3", "metric must be a non-empty string"),
    ("metric", "''", "metric must be a non-empty string"),
    ("mode", "'maximize'", "mode must be 'max' or 'min'"),
    ("seed", "-1", "seed must be a whole number from 0 to 9223372036854775807"),
    ("seed", "1.5", "seed must be a whole number from 0 to 9223372036854775807"),
    ("executor", "'gpu'", "executor must be one of sequential, processes, vectorized, ray"),
    ("ready", "4", "ready must be a ready strategy"),
    ("ready", "None", "ready must be a ready strategy"),
    ("exploit", "'truncation'", "exploit must be an exploit strategy or None"),
    ("explore", "0.8", "explore must be an explore strategy or None"),
    ("inherit_hparams", "'yes'", "inherit_hparams must be True or False"),
    ("synchronous", "1", "synchronous must be True or False"),
    ("initial_hparams", "{'h0': 1.0}", "initial_hparams must be None or a list of one dict"),
    ("initial_hparams", "[1, 2]", "initial_hparams must be None or a list of one dict"),
    ("summarize", "'yes'", "summarize must be None or a function"),
    ("name", "'../up'", "name must be a run name"),
    ("name", "'a b'", "name must be a run name"),
    ("name", "3", "name must be a run name"),
]


@pytest.mark.parametrize(("key", "value", "expected"), MODULE_VALUES)
def test_each_experiment_setting_is_checked(
    key: str, value: str, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_experiment(tmp_path, f"def experiment():\n    return {{**SETTINGS, {key!r}: {value}}}\n")
    message = error_of(path)
    assert message.startswith(f"{path}: experiment(): ") and expected in message
    line = one_line_error(capsys, "run", str(path), "--root", str(tmp_path / "runs"))
    assert expected in line
    assert not (tmp_path / "runs").exists()


YAML_VALUES = [
    ("trainable", "ToyQuadratic", "trainable must be an import path module:Class"),
    ("trainable", "[a, b]", "trainable must be an import path module:Class"),
    ("trainable", "poptrain.experiments.toy:SPACE", "is a dict, not a poptrain.Trainable subclass"),
    ("trainable", "poptrain.experiments.toy:Nope", "trainable: cannot import 'poptrain.experiments.toy:Nope'"),
    ("space", "[1, 2]", "space must be a mapping of hyperparameter names"),
    ("space", "{lr: {type: float, low: 1, high: 0}}", "space: parameter 'lr': low (1) must be below high (0)"),
    ("population_size", "four", "population_size must be a whole number from 1 to 1000000"),
    ("population_size", "0", "population_size must be a whole number from 1 to 1000000"),
    ("population_size", "2.0", "population_size must be a whole number from 1 to 1000000"),
    ("steps", "'4'", "steps must be a whole number >= 1"),
    ("steps", "true", "steps must be a whole number >= 1"),
    ("metric", "[Q]", "metric must be a non-empty string"),
    ("mode", "maximum", "mode must be 'max' or 'min'"),
    ("seed", "-3", "seed must be a whole number from 0 to 9223372036854775807"),
    ("executor", "gpu", "executor must be one of sequential, processes, vectorized, ray"),
    ("name", "'../up'", "name must be a run name"),
    ("name", "'[/bold]'", "name must be a run name"),
    ("strategy", "[every]", "strategy must be a mapping with some of ready, exploit, explore"),
    ("strategy", "{ready: 4}", "strategy: ready must be a mapping with a type"),
    ("strategy", "{exploit: {fraction: 0.2}}", "strategy: exploit must be null or a mapping with a type"),
    ("strategy", "{synchronous: 'yes please'}", "strategy: synchronous must be true or false"),
    ("strategy", "{inherit_hparams: 1}", "strategy: inherit_hparams must be true or false"),
    ("strategy", "{exploit: {type: nope}}", "strategy.exploit: unknown strategy type 'nope'"),
    (
        "strategy",
        "{exploit: {type: truncation, fraction: 2}}",
        "strategy.exploit: truncation(fraction=...) must be in (0, 0.5]",
    ),
    ("strategy", "{ready: {type: every, steps: 0}}", "strategy.ready: every(steps=...) needs a whole number >= 1"),
    ("strategy", "{explore: {type: perturb, factors: abc}}", "strategy.explore: perturb(factors=...)"),
    ("strategy", "{exploit: {type: truncation, share: 2}}", "strategy.exploit: bad arguments for truncation"),
]


@pytest.mark.parametrize(("key", "value", "expected"), YAML_VALUES)
def test_each_yaml_key_is_checked(
    key: str, value: str, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = {
        "trainable": "poptrain.experiments.toy:ToyQuadratic",
        "metric": "Q",
        "population_size": "2",
        "steps": "4",
        "space": "{h0: {type: float, low: 0.0, high: 1.0}}",
    }
    settings[key] = value
    config = tmp_path / "bad.yaml"
    config.write_text("".join(f"{k}: {v}\n" for k, v in settings.items()))
    message = error_of(config)
    assert message.startswith(f"{config}: ") and expected in message, message
    assert expected in one_line_error(capsys, "run", str(config), "--root", str(tmp_path / "runs"))
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("returned", "expected"),
    [
        ("[1, 2]", "experiment() returned list, not a dict of settings"),
        ("None", "experiment() returned NoneType"),
        ("'toy'", "experiment() returned str"),
    ],
)
def test_experiment_returning_something_else_is_one_line(returned: str, expected: str, tmp_path: Path) -> None:
    path = write_experiment(tmp_path, f"def experiment():\n    return {returned}\n")
    assert expected in error_of(path)


def test_user_code_failures_name_the_file_and_line(tmp_path: Path) -> None:
    helper = unique("helper")
    (tmp_path / f"{helper}.py").write_text("x = 1\nraise RuntimeError('no GPU\\nhere')\n")
    path = write_experiment(tmp_path, f"import {helper}\n")
    message = error_of(path)
    assert f"cannot load experiment file {path}: RuntimeError: no GPU here (line 2 of " in message
    assert message.endswith(f"{helper}.py)")
    path = write_experiment(tmp_path, "def experiment():\n    return {}['x']\n")
    assert f"{path}: experiment() raised: KeyError: 'x' (line 7)" == error_of(path)
    path = write_experiment(tmp_path, "def experiment(name):\n    return SETTINGS\n")
    assert "experiment() raised: TypeError: experiment() missing 1 required positional argument: 'name'" in error_of(
        path
    )
    path = write_experiment(
        tmp_path, "import argparse\nargparse.ArgumentParser().parse_args([])\nimport sys\nsys.exit(3)\n"
    )
    assert "it called sys.exit(3); keep command-line parsing under if __name__ == '__main__':" in error_of(path)
    path = write_experiment(tmp_path, "experiment = 3\n")
    assert f"{path}: no experiment() function" in error_of(path)


def test_a_file_named_like_an_imported_module_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "random.py"
    path.write_text(TOY_SETTINGS + "\n\ndef experiment():\n    return SETTINGS\n")
    assert "the file name 'random' is also the name of the module random" in error_of(path)
    import random

    assert sys.modules["random"] is random


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("no.such.module", "cannot find experiment 'no.such.module': no module named 'no'"),
        ("./exp", "./exp: not an experiment module name"),
        ("", "no experiment given"),
        ("missing.py", "experiment file missing.py does not exist"),
        ("missing.yaml", "config file missing.yaml does not exist"),
    ],
)
def test_targets_that_are_not_experiments(target: str, expected: str) -> None:
    assert expected in error_of(target)


def test_a_file_of_another_kind_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "settings.json"
    other.write_text("{}")
    assert f"{other}: not an experiment file" in error_of(other)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(bytes(range(256)))
    assert f"{binary}: not a text file (not UTF-8)" in error_of(binary)


def test_loaded_settings_and_defaults(tmp_path: Path) -> None:
    spec = load_experiment("poptrain.experiments.toy")
    assert spec.metric == "Q" and spec.strategy.synchronous and spec.initial_hparams is not None
    path = write_experiment(
        tmp_path, "def experiment():\n    return {**SETTINGS, 'summarize': len, 'executor': 'processes'}\n"
    )
    spec = load_experiment(str(path))
    assert spec.summarize is len and spec.executor == "processes" and spec.mode == "max" and spec.seed == 0
    defaults: dict[str, Any] = {s.name: s.default for s in MODULE_SETTINGS}
    assert spec.strategy.ready == defaults["ready"] and spec.strategy.explore == defaults["explore"]


def test_resume_from_another_folder_of_a_run_with_a_custom_strategy_in_its_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "exp"
    folder.mkdir()
    path = folder / f"{unique('custom')}.py"
    path.write_text(
        TOY_SETTINGS
        + "import poptrain\n\n\ndef keep(hparams, space, rng):\n    return poptrain.Explored(dict(hparams), {})\n\n\n"
        "def experiment():\n    return {**SETTINGS, 'explore': keep, 'name': 'custom'}\n"
    )
    root = tmp_path / "runs"
    assert cli(capsys, "run", str(path), "--root", str(root), "--quiet")[0] == 0
    (tmp_path / "elsewhere").mkdir()
    for args in (["status", "custom"], ["resume", "custom", "--steps", "8", "--quiet"]):
        result = subprocess.run(  # a fresh interpreter: the experiment's module is not imported yet
            [sys.executable, "-m", "poptrain", *args, "--root", str(root)],
            check=False,
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path / "elsewhere",
        )
        assert result.returncode == 0, result.stderr
