"""Bad inputs, one table: through the command line, each gets one line on stderr
(``poptrain: error: ...`` naming the problem), exit status 2, no traceback, and leaves every
file under the case's folder byte-for-byte as it was; through the Python API, the right
``PoptrainError`` with a one-line message, and nothing written either.

Each case runs in its own folder: ``runs/`` (the runs root, holding copies of runs built once
per session), ``in/`` (configs and files the case writes first) and siblings such as
``victim/``. Placeholders in arguments: ``{root}``, ``{tmp}``, ``{in}``, ``{port}``, ``{pg}``.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import random
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import poptrain
from poptrain.cli.main import main
from poptrain.errors import (
    CheckpointError,
    ConfigError,
    PoptrainError,
    RunExistsError,
    RunNotFoundError,
    SearchSpaceError,
    StorageError,
    StrategyError,
)
from poptrain.experiments.toy import SPACE, ToyQuadratic

TOY = "poptrain.experiments.toy"
TOY_YAML = (
    "trainable: poptrain.experiments.toy:ToyQuadratic\nmetric: Q\npopulation_size: 2\nsteps: 4\n"
    "space: {h0: {type: float, low: 0.0, high: 1.0}, h1: {type: float, low: 0.0, high: 1.0}}\n"
)
PY_HEAD = (
    "import poptrain\nfrom poptrain.experiments.toy import SPACE, ToyQuadratic\n"
    "SETTINGS = {'trainable': ToyQuadratic, 'space': SPACE, 'population_size': 2, 'steps': 4, 'metric': 'Q'}\n"
)


# --- the folder a case runs in ------------------------------------------------------------------


@dataclass
class Env:
    """A case's folder and what its setup prepared."""

    tmp: Path
    base: Path  # runs built once per session (t: finished after 8 steps of toy; api: created in Python, never trained)
    port: int = 0
    held: list[Any] = field(default_factory=list)

    @property
    def root(self) -> Path:
        return self.tmp / "runs"

    @property
    def inputs(self) -> Path:
        return self.tmp / "in"

    def fill(self, arg: str) -> str:
        return arg.format(
            root=self.root,
            tmp=self.tmp,
            port=self.port,
            pg=f"postgresql+psycopg://poptrain@127.0.0.1:{self.port}/db",
            **{"in": self.inputs},
        )


def snapshot(root: Path) -> dict[str, bytes | str]:
    """Every file's bytes and every folder under ``root``, by relative path."""
    tree: dict[str, bytes | str] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        tree[rel] = "dir" if path.is_dir() and not path.is_symlink() else path.read_bytes()
    return tree


def differences(before: dict[str, bytes | str], after: dict[str, bytes | str]) -> list[str]:
    """What changed between two snapshots, readably."""
    changed = [f"added {p}" for p in sorted(set(after) - set(before))]
    changed += [f"removed {p}" for p in sorted(set(before) - set(after))]
    changed += [f"changed {p}" for p in sorted(set(before) & set(after)) if before[p] != after[p]]
    return changed


# --- setups: each prepares a case's folder ------------------------------------------------------

Setup = Callable[[Env], None]


def steps(*setups: Setup) -> Setup:
    def run_all(env: Env) -> None:
        for setup in setups:
            setup(env)

    return run_all


def write(name: str, content: str | bytes) -> Setup:
    """Write ``in/<name>``."""

    def setup(env: Env) -> None:
        path = env.inputs / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)

    return setup


def yaml_with(**keys: str | None) -> str:
    """The toy YAML config with keys replaced (``None`` drops a key)."""
    lines = dict(line.split(": ", 1) for line in TOY_YAML.strip().splitlines())
    for key, value in keys.items():
        if value is None:
            lines.pop(key, None)
        else:
            lines[key] = value
    return "".join(f"{k}: {v}\n" for k, v in lines.items())


def config(**keys: str | None) -> Setup:
    return write("c.yaml", yaml_with(**keys))


def space(text: str) -> Setup:
    return config(space=text)


def strategy(text: str) -> Setup:
    return config(strategy=text)


def experiment_file(body: str, name: str = "exp.py") -> Setup:
    return write(name, PY_HEAD + body)


def runs(env: Env) -> None:
    """Copies of the session's runs under ``runs/``."""
    shutil.copytree(env.base, env.root, dirs_exist_ok=True)


def victim(env: Env) -> None:
    """``victim/``, a sibling of the runs root holding a run folder and a file of its own."""
    shutil.copytree(env.base / "t", env.tmp / "victim" / "t")
    (env.tmp / "victim" / "precious.txt").write_text("keep me\n")


def database(kind: str) -> Setup:
    """Replace run t's poptrain.db with random bytes, an empty file or someone else's SQLite database."""

    def setup(env: Env) -> None:
        runs(env)
        db = env.root / "t" / "poptrain.db"
        for extra in db.parent.glob("poptrain.db-*"):
            extra.unlink()
        db.unlink()
        if kind == "random":
            db.write_bytes(random.Random(0).randbytes(4096))
        elif kind == "empty":
            db.write_bytes(b"")
        else:
            with sqlite3.connect(db) as conn:
                conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, amount REAL)")
                conn.execute("INSERT INTO invoices (amount) VALUES (12.5)")
            conn.close()

    return setup


class _Evil:
    """Unpickling this runs a shell command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def checkpoints(kind: str, *, signed: bool = False) -> Setup:
    """Spoil every checkpoint file of run t: truncated, garbage, a pickle or a torch file that
    runs os.system; ``signed``: with its sha256 recorded in the database, as an attacker who can
    write the database too would (so only safe loading stands in the way)."""

    def setup(env: Env) -> None:
        runs(env)
        folder = env.root / "t" / "checkpoints"
        files = sorted(folder.rglob("*.pt"))
        assert files, "run t has no checkpoint files"
        for path in files:
            data = path.read_bytes()
            if kind == "truncated":
                path.write_bytes(data[: len(data) // 2])
            elif kind == "garbage":
                path.write_bytes(random.Random(1).randbytes(len(data)))
            elif kind == "pickle":
                path.write_bytes(pickle.dumps(_Evil(env.tmp / "pwned")))
            else:
                import torch

                torch.save(_Evil(env.tmp / "pwned"), path)
        if signed:
            with sqlite3.connect(env.root / "t" / "poptrain.db") as conn:
                for path in files:
                    digest = hashlib.sha256(path.read_bytes()).hexdigest()
                    conn.execute(
                        "UPDATE checkpoints SET sha256 = ? WHERE uri = ?", (digest, str(path.relative_to(folder)))
                    )
                assert conn.total_changes == len(files)
            conn.close()

    return setup


def busy_port(env: Env) -> None:
    """A port another socket listens on."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    env.port = sock.getsockname()[1]
    env.held.append(sock)


def closed_port(env: Env) -> None:
    """A port nothing listens on (PostgreSQL unreachable there)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        env.port = sock.getsockname()[1]


def user_file(env: Env) -> None:
    """Run t's folder also holds a file of the user's."""
    runs(env)
    (env.root / "t" / "notes.txt").write_text("my notes\n")


def nested_run(env: Env) -> None:
    """Another run kept inside run t's folder."""
    runs(env)
    shutil.copytree(env.base / "t", env.root / "t" / "sub" / "inner")


def training_now(env: Env) -> None:
    """Run t is in state running and scored a moment ago: a process is training it."""
    runs(env)
    with sqlite3.connect(env.root / "t" / "poptrain.db") as conn:
        conn.execute("UPDATE runs SET state = 'running'")
        conn.execute("UPDATE scores SET wall_time = ? WHERE id = (SELECT max(id) FROM scores)", (time.time(),))
    conn.close()


def a_file(name: str) -> Setup:
    return write(name, "not a folder\n")


def schedule_file(env: Env) -> None:
    """``in/s.json``: the best member's schedule of run t."""
    run = poptrain.load_run("t", root=env.base)
    try:
        run.export_schedule(path=env.inputs / "s.json")
    finally:
        run.close()


# --- command-line cases -------------------------------------------------------------------------


@dataclass(frozen=True)
class Cli:
    """``poptrain ARGS`` fails with one line containing ``expected``. ``owner``: the file that
    decides the message (for reading failures)."""

    id: str
    args: tuple[str, ...]
    expected: str
    setup: Setup | None = None
    owner: str = "cli/main.py"
    subprocess: bool = False


def cli(id: str, args: str | list[str], expected: str, setup: Setup | None = None, **kw: Any) -> Cli:
    return Cli(id, tuple(args.split() if isinstance(args, str) else args), expected, setup, **kw)


R = "--root {root}"
EXP = "experiment.py"
CLI_CASES = [
    # experiment modules and .py files
    cli("module-missing", f"run no.such.module {R}", "cannot find experiment 'no.such.module'", owner=EXP),
    cli("module-without-experiment", f"run os {R}", "os: no experiment() function", owner=EXP),
    cli("py-missing", f"run {{in}}/missing.py {R}", "missing.py does not exist", owner=EXP),
    cli(
        "py-syntax-error",
        f"run {{in}}/exp.py {R}",
        "SyntaxError",
        experiment_file("def experiment(:\n    pass\n"),
        owner=EXP,
    ),
    cli(
        "py-raises-on-import",
        f"run {{in}}/exp.py {R}",
        "RuntimeError: no GPU here (line 4)",
        experiment_file("raise RuntimeError('no GPU here')\n"),
        owner=EXP,
    ),
    cli(
        "py-no-experiment", f"run {{in}}/exp.py {R}", "no experiment() function", experiment_file("x = 1\n"), owner=EXP
    ),
    cli(
        "py-experiment-raises",
        f"run {{in}}/exp.py {R}",
        "experiment() raised: ValueError: bad",
        experiment_file("def experiment():\n    raise ValueError('bad')\n"),
        owner=EXP,
    ),
    cli(
        "py-returns-list",
        f"run {{in}}/exp.py {R}",
        "experiment() returned list, not a dict",
        experiment_file("def experiment():\n    return [SETTINGS]\n"),
        owner=EXP,
    ),
    cli(
        "py-returns-none",
        f"run {{in}}/exp.py {R}",
        "experiment() returned NoneType",
        experiment_file("def experiment():\n    pass\n"),
        owner=EXP,
    ),
    cli(
        "py-unknown-setting",
        f"run {{in}}/exp.py {R}",
        "unknown setting 'epochs'; valid settings are name, trainable",
        experiment_file("def experiment():\n    return {**SETTINGS, 'epochs': 3}\n"),
        owner=EXP,
    ),
    cli(
        "py-missing-dependency",
        f"run {{in}}/exp.py {R}",
        "No module named 'no_such_dependency_xyz'",
        experiment_file("import no_such_dependency_xyz\n"),
        owner=EXP,
    ),
    cli(
        "py-sys-exit",
        f"run {{in}}/exp.py {R}",
        "it called sys.exit(1)",
        experiment_file("import sys\nsys.exit(1)\n"),
        owner=EXP,
    ),
    cli(
        "py-population-string",
        f"run {{in}}/exp.py {R}",
        "population_size must be a whole number from 1 to 1000000",
        experiment_file("def experiment():\n    return {**SETTINGS, 'population_size': 'four'}\n"),
        owner=EXP,
    ),
    cli(
        "py-trainable-not-callable",
        f"run {{in}}/exp.py {R}",
        "trainable must be a poptrain.Trainable subclass",
        experiment_file("def experiment():\n    return {**SETTINGS, 'trainable': 3}\n"),
        owner=EXP,
    ),
    cli(
        "py-space-not-mapping",
        f"run {{in}}/exp.py {R}",
        "space must be a dict",
        experiment_file("def experiment():\n    return {**SETTINGS, 'space': ['lr']}\n"),
        owner=EXP,
    ),
    cli(
        "target-json-file",
        f"run {{in}}/settings.json {R}",
        "not an experiment file",
        write("settings.json", "{}"),
        owner=EXP,
    ),
    # YAML configs
    cli("yaml-missing", f"run {{in}}/missing.yaml {R}", "missing.yaml does not exist", owner=EXP),
    cli("yaml-empty", f"run {{in}}/c.yaml {R}", "the config is empty", write("c.yaml", ""), owner=EXP),
    cli(
        "yaml-malformed",
        f"run {{in}}/c.yaml {R}",
        "not valid YAML",
        write("c.yaml", "trainable: [unclosed\n"),
        owner=EXP,
    ),
    cli("yaml-list", f"run {{in}}/c.yaml {R}", "the config is a list", write("c.yaml", "- 1\n- 2\n"), owner=EXP),
    cli("yaml-binary", f"run {{in}}/c.yaml {R}", "not a text file", write("c.yaml", bytes(range(256))), owner=EXP),
    cli(
        "yaml-unknown-key",
        f"run {{in}}/c.yaml {R}",
        "unknown key 'bogus'; valid keys are name, trainable",
        write("c.yaml", TOY_YAML + "bogus: 1\n"),
        owner=EXP,
    ),
    cli("yaml-no-trainable", f"run {{in}}/c.yaml {R}", "missing key(s) trainable", config(trainable=None), owner=EXP),
    cli(
        "yaml-trainable-missing-module",
        f"run {{in}}/c.yaml {R}",
        "cannot import 'nosuchmodule:Thing'",
        config(trainable="nosuchmodule:Thing"),
        owner=EXP,
    ),
    cli(
        "yaml-trainable-not-a-path",
        f"run {{in}}/c.yaml {R}",
        "trainable must be an import path module:Class",
        config(trainable="ToyQuadratic"),
        owner=EXP,
    ),
    cli(
        "yaml-population-zero",
        f"run {{in}}/c.yaml {R}",
        "population_size must be a whole number from 1 to 1000000",
        config(population_size="0"),
        owner=EXP,
    ),
    cli(
        "yaml-population-word",
        f"run {{in}}/c.yaml {R}",
        "population_size must be a whole number from 1 to 1000000",
        config(population_size="four"),
        owner=EXP,
    ),
    cli(
        "yaml-steps-string",
        f"run {{in}}/c.yaml {R}",
        "steps must be a whole number >= 1",
        config(steps="'4'"),
        owner=EXP,
    ),
    cli(
        "yaml-metric-list",
        f"run {{in}}/c.yaml {R}",
        "metric must be a non-empty string",
        config(metric="[Q]"),
        owner=EXP,
    ),
    cli("yaml-mode", f"run {{in}}/c.yaml {R}", "mode must be 'max' or 'min'", config(mode="maximize"), owner=EXP),
    cli(
        "yaml-seed",
        f"run {{in}}/c.yaml {R}",
        "seed must be a whole number from 0 to 9223372036854775807",
        config(seed="-1"),
        owner=EXP,
    ),
    cli("yaml-executor", f"run {{in}}/c.yaml {R}", "executor must be one of", config(executor="gpu"), owner=EXP),
    cli("yaml-name-escapes", f"run {{in}}/c.yaml {R}", "name must be a run name", config(name="../up"), owner=EXP),
    # search spaces
    cli(
        "space-low-above-high",
        f"run {{in}}/c.yaml {R}",
        "'lr': low (0.1) must be below high (0.01)",
        space("{lr: {type: float, low: 0.1, high: 0.01}}"),
        owner="space",
    ),
    cli(
        "space-log-low-zero",
        f"run {{in}}/c.yaml {R}",
        "a log-scale range needs low > 0",
        space("{lr: {type: float, low: 0.0, high: 0.1, log: true}}"),
        owner="space",
    ),
    cli(
        "space-empty-choice",
        f"run {{in}}/c.yaml {R}",
        "Choice needs at least one option",
        space("{act: {type: choice, options: []}}"),
        owner="space",
    ),
    cli(
        "space-duplicate-choice",
        f"run {{in}}/c.yaml {R}",
        "Choice options must be distinct",
        space("{act: {type: choice, options: [relu, relu]}}"),
        owner="space",
    ),
    cli(
        "space-unknown-type",
        f"run {{in}}/c.yaml {R}",
        "unknown type 'weird'",
        space("{a: {type: weird, low: 1, high: 3}}"),
        owner="space",
    ),
    cli("space-empty", f"run {{in}}/c.yaml {R}", "the search space is empty", space("{}"), owner="space"),
    cli(
        "space-missing-high",
        f"run {{in}}/c.yaml {R}",
        "missing field(s) high",
        space("{lr: {type: float, low: 0.1}}"),
        owner="space",
    ),
    cli(
        "space-int-fraction",
        f"run {{in}}/c.yaml {R}",
        "Int low must be a whole number",
        space("{n: {type: int, low: 1.5, high: 4}}"),
        owner="space",
    ),
    cli(
        "space-unknown-field",
        f"run {{in}}/c.yaml {R}",
        "unknown field(s) step for type float",
        space("{lr: {type: float, low: 0.1, high: 1, step: 2}}"),
        owner="space",
    ),
    cli("space-bare-number", f"run {{in}}/c.yaml {R}", "expected a mapping such as", space("{lr: 0.1}"), owner="space"),
    # strategies
    cli(
        "ready-unknown-type",
        f"run {{in}}/c.yaml {R}",
        "strategy.ready: unknown strategy type 'sometimes'",
        strategy("{ready: {type: sometimes}}"),
        owner=EXP,
    ),
    cli(
        "exploit-unknown-type",
        f"run {{in}}/c.yaml {R}",
        "strategy.exploit: unknown strategy type 'steal'",
        strategy("{exploit: {type: steal}}"),
        owner=EXP,
    ),
    cli(
        "explore-unknown-type",
        f"run {{in}}/c.yaml {R}",
        "strategy.explore: unknown strategy type 'jitter'",
        strategy("{explore: {type: jitter}}"),
        owner=EXP,
    ),
    cli(
        "truncation-too-big",
        f"run {{in}}/c.yaml {R}",
        "truncation(fraction=...) must be in (0, 0.5]",
        strategy("{exploit: {type: truncation, fraction: 0.9}}"),
        owner="strategy",
    ),
    cli(
        "truncation-zero",
        f"run {{in}}/c.yaml {R}",
        "truncation(fraction=...) must be in (0, 0.5]",
        strategy("{exploit: {type: truncation, fraction: 0}}"),
        owner="strategy",
    ),
    cli(
        "perturb-no-factors",
        f"run {{in}}/c.yaml {R}",
        "perturb(factors=...) needs a non-empty list of positive numbers",
        strategy("{explore: {type: perturb, factors: []}}"),
        owner="strategy",
    ),
    cli(
        "perturb-negative-factor",
        f"run {{in}}/c.yaml {R}",
        "perturb(factors=...) needs a non-empty list of positive numbers",
        strategy("{explore: {type: perturb, factors: [-1, 2]}}"),
        owner="strategy",
    ),
    cli(
        "perturb-probability",
        f"run {{in}}/c.yaml {R}",
        "perturb(resample_probability=...) must be in [0, 1]",
        strategy("{explore: {type: perturb, resample_probability: 1.5}}"),
        owner="strategy",
    ),
    cli(
        "every-zero",
        f"run {{in}}/c.yaml {R}",
        "every(steps=...) needs a whole number >= 1",
        strategy("{ready: {type: every, steps: 0}}"),
        owner="strategy",
    ),
    cli(
        "gaussian-negative",
        f"run {{in}}/c.yaml {R}",
        "gaussian(scale=...) must be a positive number",
        strategy("{explore: {type: gaussian, scale: -1}}"),
        owner="strategy",
    ),
    cli(
        "replace-worst-zero",
        f"run {{in}}/c.yaml {R}",
        "replace_worst(count=...) must be a whole number >= 1",
        strategy("{exploit: {type: replace_worst, count: 0}}"),
        owner="strategy",
    ),
    cli(
        "strategy-bad-argument",
        f"run {{in}}/c.yaml {R}",
        "bad arguments for truncation",
        strategy("{exploit: {type: truncation, share: 0.2}}"),
        owner="strategy",
    ),
    cli(
        "strategy-custom-missing",
        f"run {{in}}/c.yaml {R}",
        "cannot import 'nowhere_xyz:pick'",
        strategy("{exploit: {type: custom, path: 'nowhere_xyz:pick'}}"),
        owner="strategy",
    ),
    cli(
        "strategy-unknown-key",
        f"run {{in}}/c.yaml {R}",
        "strategy: unknown key 'elitism'",
        strategy("{elitism: 2}"),
        owner=EXP,
    ),
    # storage URLs
    cli(
        "storage-garbage", f"run {TOY} --storage not-a-url {R}", "cannot read storage URL 'not-a-url'", owner="storage"
    ),
    cli(
        "storage-unknown-driver",
        f"run {TOY} --storage nosuchdriver://x/y {R}",
        "no database driver for 'nosuchdriver'",
        owner="storage",
    ),
    cli(
        "storage-postgres-scheme",
        f"run {TOY} --storage postgres://u@127.0.0.1/db {R}",
        "postgresql+psycopg://",
        owner="storage",
    ),
    cli(
        "storage-unreachable",
        f"run {TOY} --name x --storage {{pg}} {R}",
        "cannot open storage",
        closed_port,
        owner="storage",
    ),
    cli(
        "status-storage-garbage", f"status t --storage not-a-url {R}", "cannot read storage URL", runs, owner="storage"
    ),
    cli(
        "status-storage-unreachable",
        f"status t --storage {{pg}} {R}",
        "cannot open storage",
        closed_port,
        owner="storage",
    ),
    # paths
    cli("root-is-a-file", f"run {TOY} --root {{in}}/afile", "is a file", a_file("afile")),
    cli("ls-root-is-a-file", "ls --root {in}/afile", "is a file", a_file("afile")),
    cli("export-into-missing-folder", f"export t --format csv --output {{tmp}}/nodir/out.csv {R}", "nodir", runs),
    cli("best-model-into-missing-folder", f"export t --best-model {{tmp}}/nodir/m.pt {R}", "nodir", runs),
    cli(
        "best-model-with-format",
        f"export t --best-model {{tmp}}/m.pt --format csv {R}",
        "--best-model FILE goes alone",
        runs,
    ),
    cli("schedule-into-missing-folder", f"export t --schedule --output {{tmp}}/nodir/s.json {R}", "nodir", runs),
    cli(
        "report-output-is-a-file",
        f"report t --output {{in}}/existing.txt {R}",
        "existing.txt",
        steps(runs, a_file("existing.txt")),
        owner="report",
    ),
    # names
    cli("name-dotdot-slash", f"run {TOY} --name ../victim {R}", "run name '../victim'", victim, owner="run.py"),
    cli("name-dot", f"run {TOY} --name . {R}", "run name '.'", owner="run.py"),
    cli("name-dotdot", f"run {TOY} --name .. {R}", "run name '..'", owner="run.py"),
    cli(
        "name-absolute", ["run", TOY, "--name", "{tmp}/victim", "--root", "{root}"], "run name", victim, owner="run.py"
    ),
    cli("name-slash", f"run {TOY} --name a/b {R}", "run name 'a/b'", owner="run.py"),
    cli("name-space", ["run", TOY, "--name", "my run", "--root", "{root}"], "run name 'my run'", owner="run.py"),
    cli(
        "name-rich-markup", ["run", TOY, "--name", "[/bold]", "--root", "{root}"], "run name '[/bold]'", owner="run.py"
    ),
    cli("name-html", ["run", TOY, "--name", "<b>x</b>", "--root", "{root}"], "run name '<b>x</b>'", owner="run.py"),
    cli("name-empty", ["run", TOY, "--name", "", "--root", "{root}"], "run name ''", owner="run.py"),
    cli("status-name-escapes", f"status ../t {R}", "run name '../t'", runs, owner="run.py"),
    cli(
        "export-name-markup",
        ["export", "[/bold]", "--format", "csv", "--root", "{root}"],
        "run name '[/bold]'",
        owner="run.py",
    ),
    cli("report-name-html", ["report", "<b>x</b>", "--root", "{root}"], "run name '<b>x</b>'", owner="run.py"),
    cli("rm-name-escapes", f"rm ../victim --yes {R}", "run name '../victim'", steps(runs, victim)),
    # --overwrite must not delete anything it should not
    cli(
        "overwrite-parent-sibling",
        f"run {TOY} --name ../victim --overwrite {R}",
        "run name '../victim'",
        steps(runs, victim),
        owner="run.py",
    ),
    cli("overwrite-dot", f"run {TOY} --name . --overwrite {R}", "run name '.'", steps(runs, victim), owner="run.py"),
    cli(
        "overwrite-absolute",
        ["run", TOY, "--name", "{tmp}/victim", "--overwrite", "--root", "{root}"],
        "run name",
        steps(runs, victim),
        owner="run.py",
    ),
    cli(
        "overwrite-bad-population",
        f"run {{in}}/c.yaml --name t --overwrite --population 0 {R}",
        "--population must be a whole number from 1 to 1000000, got 0",
        steps(runs, config()),
    ),
    cli(
        "overwrite-bad-steps",
        f"run {TOY} --name t --overwrite --steps 0 {R}",
        "steps must be a whole number >= 1, got 0",
        runs,
    ),
    cli(
        "overwrite-bad-seed",
        f"run {TOY} --name t --overwrite --seed -1 {R}",
        "seed must be a whole number from 0 to 9223372036854775807",
        runs,
    ),
    cli(
        "overwrite-bad-config",
        f"run {{in}}/c.yaml --name t --overwrite {R}",
        "mode must be 'max' or 'min'",
        steps(runs, config(mode="best")),
        owner=EXP,
    ),
    cli(
        "overwrite-foreign-database",
        f"run {TOY} --name t --overwrite {R}",
        "not a poptrain database",
        database("foreign"),
        owner="run.py",
    ),
    cli("exists-without-overwrite", f"run {TOY} --name t --steps 8 {R}", "exists already", runs),
    cli(
        "overwrite-user-files",
        f"run {TOY} --name t --overwrite {R}",
        "holds what poptrain did not write there (notes.txt)",
        user_file,
        owner="run_folders",
    ),
    cli(
        "rm-user-files",
        f"rm t --yes {R}",
        "holds what poptrain did not write there (notes.txt)",
        user_file,
        owner="run_folders",
    ),
    cli("rm-nested-run", f"rm t --yes {R}", "sub/inner/poptrain.db (another run)", nested_run, owner="run_folders"),
    cli("rm-training-now", f"rm t --yes {R}", "is training now", training_now, owner="run_folders"),
    cli(
        "overwrite-training-now",
        f"run {TOY} --name t --overwrite {R}",
        "is training now",
        training_now,
        owner="run_folders",
    ),
    cli(
        "storage-run-into-a-run-folder",
        f"run {TOY} --name t --storage sqlite:///{{tmp}}/shared.db {R}",
        "holds another run's checkpoints",
        runs,
        owner="run.py",
    ),
    cli(
        "overwrite-seed-too-big",
        f"run {TOY} --name t --overwrite --seed 9223372036854775808 {R}",
        "--seed must be a whole number from 0 to 9223372036854775807",
        runs,
    ),
    cli(
        "yaml-seed-too-big",
        f"run {{in}}/c.yaml {R}",
        "seed must be a whole number from 0 to 9223372036854775807",
        config(seed="9223372036854775808"),
        owner=EXP,
    ),
    cli(
        "overwrite-factory-makes-junk",
        f"run {{in}}/c.yaml --name t --overwrite {R}",
        "made a dict, which has no setup",
        steps(runs, write("junk.py", "def make():\n    return {}\n"), config(trainable="junk:make")),
    ),
    cli(
        "population-huge",
        f"run {TOY} --population 100000000000000000000000000000 {R}",
        "--population must be a whole number from 1 to 1000000",
    ),
    cli("devices-without-processes", f"run {TOY} --devices cuda:0 {R}", "--devices is for --executor processes"),
    cli(
        "devices-not-devices",
        f"run {TOY} --executor processes --devices gpu0 {R}",
        "devices must be a list such as ['cuda:0', 'cuda:1']",
    ),
    cli(
        "devices-with-workers",
        f"run {TOY} --executor processes --workers 2 --devices cuda:0 {R}",
        "--devices is for --executor processes (one worker per device), without --workers",
    ),
    cli(
        "workers-huge",
        f"run {TOY} --executor processes --workers 100000000000000000000 {R}",
        "--workers must be a whole number from 1 to 1024",
    ),
    cli(
        "name-trailing-newline", ["run", TOY, "--name", "evil\n", "--root", "{root}"], "is not usable as a folder name"
    ),
    cli(
        "export-over-the-database",
        f"export t --format csv -o {{root}}/t/poptrain.db {R}",
        "is a database or checkpoint file",
        runs,
    ),
    cli(
        "export-into-proc",
        f"export t --format csv -o /proc/poptrain-export.csv {R}",
        "cannot write /proc/poptrain-export.csv",
        runs,
        owner="atomic.py",
    ),
    cli(
        "int-bound-too-big",
        f"run {{in}}/c.yaml {R}",
        "must lie within",
        space("{a: {type: int, low: 0, high: 100000000000000000000000000}}"),
        owner="space",
    ),
    cli(
        "py-raises-base-exception",
        f"run {{in}}/exp.py {R}",
        "Odd",
        experiment_file("class Odd(BaseException):\n    pass\nraise Odd('strange')\n"),
        owner=EXP,
    ),
    cli("worker-lease-nan", f"worker t --lease nan {R}", "--lease must be a positive number, got nan", runs),
    cli("worker-lease-zero", f"worker t --lease 0 {R}", "--lease must be a positive number, got 0.0", runs),
    cli(
        "gpus-per-member-negative",
        f"run {TOY} --executor ray --gpus-per-member -1 {R}",
        "--gpus-per-member must be a positive number",
    ),
    cli(
        "resume-workers-zero",
        f"resume t --steps 12 --executor processes --workers 0 {R}",
        "--workers must be a whole number from 1 to 1024, got 0",
        runs,
    ),
    cli("replay-seed-negative", f"replay t --seed -1 --quiet {R}", "--seed must be a whole number from 0", runs),
    cli(
        "cpus-per-member-nan",
        f"run {TOY} --executor ray --cpus-per-member nan {R}",
        "--cpus-per-member must be a positive number",
    ),
    cli("yaml-is-a-folder", f"run {{in}}/d.yaml {R}", "is a folder, not a file", write("d.yaml/x", "x"), owner=EXP),
    # numbers
    cli("steps-zero", f"run {TOY} --steps 0 {R}", "steps must be a whole number >= 1, got 0"),
    cli("steps-negative", f"run {TOY} --steps -1 {R}", "steps must be a whole number >= 1, got -1"),
    cli(
        "population-zero",
        f"run {{in}}/c.yaml --population 0 {R}",
        "--population must be a whole number from 1 to 1000000, got 0",
        config(),
    ),
    cli("population-with-fixed-members", f"run {TOY} --population 5 {R}", "drop --population"),
    cli(
        "seed-negative",
        f"run {TOY} --seed -1 {R}",
        "--seed must be a whole number from 0 to 9223372036854775807, got -1",
    ),
    cli(
        "workers-zero",
        f"run {TOY} --executor processes --workers 0 {R}",
        "--workers must be a whole number from 1 to 1024, got 0",
    ),
    cli("workers-without-processes", f"run {TOY} --workers 3 {R}", "processes"),
    cli("device-without-vectorized", f"run {TOY} --device cuda {R}", "--device is for --executor vectorized"),
    cli("vectorized-plain-trainable", f"run {TOY} --executor vectorized {R}", "VectorizedTrainable"),
    cli("cpus-without-ray", f"run {TOY} --cpus-per-member 2 {R}", "--cpus-per-member"),
    cli("steps-not-a-number", f"run {TOY} --steps ten {R}", "invalid int value: 'ten'"),
    cli("command-missing-name", f"status {R}", "the following arguments are required: name"),
    cli("resume-steps-zero", f"resume t --steps 0 {R}", "steps must be a whole number >= 1", runs),
    cli("resume-steps-not-more", f"resume t --steps 4 {R}", "give --steps above 8", runs),
    cli(
        "replay-steps-zero",
        f"replay t --steps 0 --quiet {R}",
        "steps must be a whole number from 1 to 8",
        runs,
        owner="replay",
    ),
    cli("replay-member-missing", f"replay t --member 99 --quiet {R}", "no member 99", runs, owner="run.py"),
    cli("schedule-member-missing", f"export t --schedule --member 99 {R}", "no member 99", runs, owner="run.py"),
    cli(
        "port-too-big",
        f"dashboard --port 99999 {R}",
        "--port must be between 0 and 65535, got 99999",
        subprocess=True,
        owner="report",
    ),
    cli(
        "port-negative",
        f"dashboard --port -1 {R}",
        "--port must be between 0 and 65535, got -1",
        subprocess=True,
        owner="report",
    ),
    cli("port-busy", f"dashboard --port {{port}} {R}", "cannot listen on 127.0.0.1:", busy_port, subprocess=True),
    # databases that are not poptrain's
    cli("status-random-db", f"status t {R}", "is not a SQLite database", database("random"), owner="storage"),
    cli(
        "status-random-db-subprocess",
        f"status t {R}",
        "is not a SQLite database",
        database("random"),
        owner="storage",
        subprocess=True,
    ),
    cli("status-empty-db", f"status t {R}", "is an empty file", database("empty"), owner="storage"),
    cli("status-foreign-db", f"status t {R}", "is not a poptrain database", database("foreign"), owner="storage"),
    cli(
        "export-random-db",
        f"export t --format json {R}",
        "is not a SQLite database",
        database("random"),
        owner="storage",
    ),
    cli("report-foreign-db", f"report t {R}", "is not a poptrain database", database("foreign"), owner="storage"),
    cli(
        "run-over-random-db", f"run {TOY} --name t {R}", "is not a SQLite database", database("random"), owner="storage"
    ),
    cli("rm-foreign-db", f"rm t --yes {R}", "is not a poptrain database", database("foreign")),
    # checkpoints that are damaged or malicious
    cli(
        "resume-truncated-checkpoints",
        f"resume t --steps 12 --quiet {R}",
        "checkpoint",
        checkpoints("truncated"),
        owner="checkpoints",
    ),
    cli(
        "resume-garbage-checkpoints",
        f"resume t --steps 12 --quiet {R}",
        "checkpoint",
        checkpoints("garbage"),
        owner="checkpoints",
    ),
    cli(
        "resume-evil-pickle",
        f"resume t --steps 12 --quiet {R}",
        "checkpoint",
        checkpoints("pickle"),
        owner="checkpoints",
    ),
    cli(
        "resume-evil-torch-file",
        f"resume t --steps 12 --quiet {R}",
        "checkpoint",
        checkpoints("torch"),
        owner="checkpoints",
    ),
    cli(
        "resume-evil-pickle-signed",
        f"resume t --steps 12 --quiet {R}",
        "checkpoint",
        checkpoints("pickle", signed=True),
        owner="checkpoints",
    ),
    cli(
        "resume-evil-torch-signed",
        f"resume t --steps 12 --quiet {R}",
        "checkpoint",
        checkpoints("torch", signed=True),
        owner="checkpoints",
    ),
    cli(
        "resume-evil-pickle-signed-subprocess",
        f"resume t --steps 12 --quiet {R}",
        "checkpoint",
        checkpoints("pickle", signed=True),
        owner="checkpoints",
        subprocess=True,
    ),
    # runs that are missing, finished, or not the command's
    cli("resume-missing", f"resume ghost {R}", "no run named 'ghost'"),
    cli("resume-finished", f"resume t {R}", "is finished", runs),
    cli("resume-not-from-cli", f"resume api --steps 4 {R}", "was not started by `poptrain run`", runs),
    cli("worker-missing", f"worker ghost {R}", "no run named 'ghost'"),
    cli("status-missing", f"status ghost {R}", "no run named 'ghost'", runs),
    cli("status-missing-subprocess", f"status ghost {R}", "no run named 'ghost'", runs, subprocess=True),
    cli("export-missing", f"export ghost --format csv {R}", "no run named 'ghost'", runs),
    cli("report-missing", f"report ghost {R}", "no run named 'ghost'", runs),
    cli("replay-missing", f"replay ghost {R}", "no run named 'ghost'", runs),
    cli("rm-missing", f"rm ghost --yes {R}", "no run named 'ghost'", runs),
    cli(
        "dashboard-missing",
        f"dashboard ghost --port 0 {R}",
        "no run named 'ghost'",
        runs,
        subprocess=True,
        owner="report",
    ),
    cli("replay-untrained", f"replay api --quiet {R}", "has no trained member yet", runs, owner="run.py"),
    # export, replay and report arguments
    cli(
        "export-member-without-schedule", f"export t --format csv --member 0 {R}", "--member goes with --schedule", runs
    ),
    cli("export-no-format", f"export t {R}", "give one of --format", runs),
    cli("export-format-and-schedule", f"export t --format csv --schedule {R}", "give one of --format", runs),
    cli(
        "replay-schedule-missing",
        f"replay {TOY} --schedule {{in}}/missing.json --quiet",
        "missing.json does not exist",
        owner="replay",
    ),
    cli(
        "replay-schedule-not-json",
        f"replay {TOY} --schedule {{in}}/s.json --quiet",
        "not valid JSON",
        write("s.json", "{oops"),
        owner="replay",
    ),
    cli(
        "replay-schedule-wrong-shape",
        f"replay {TOY} --schedule {{in}}/s.json --quiet",
        "expected a JSON object",
        write("s.json", "[1, 2]"),
        owner="replay",
    ),
    cli(
        "replay-schedule-with-member",
        f"replay {TOY} --schedule {{in}}/s.json --member 1 --quiet",
        "--member picks",
        schedule_file,
    ),
    cli(
        "replay-schedule-bad-target",
        "replay no.such.module --schedule {in}/s.json --quiet",
        "cannot find experiment",
        schedule_file,
        owner=EXP,
    ),
    # through the installed command: no traceback escapes
    cli("subprocess-module-missing", f"run no.such.module {R}", "cannot find experiment", subprocess=True, owner=EXP),
    cli(
        "subprocess-syntax-error",
        f"run {{in}}/exp.py {R}",
        "SyntaxError",
        experiment_file("def experiment(:\n"),
        subprocess=True,
        owner=EXP,
    ),
    cli(
        "subprocess-storage-garbage",
        f"run {TOY} --storage not-a-url {R}",
        "cannot read storage URL",
        subprocess=True,
        owner="storage",
    ),
    cli(
        "subprocess-name-escapes",
        f"run {TOY} --name ../victim --overwrite {R}",
        "run name '../victim'",
        steps(runs, victim),
        subprocess=True,
        owner="run.py",
    ),
]


@pytest.fixture(scope="session")
def base_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Runs built once: t (toy, 8 steps, by `poptrain run`) and api (created in Python, never trained)."""
    root = tmp_path_factory.mktemp("base") / "runs"
    code = main(["run", TOY, "--root", str(root), "--name", "t", "--steps", "8", "--quiet"])
    assert code == 0
    poptrain.create_run(name="api", space=SPACE, population_size=2, metric="Q", root=root).close()
    return root


@pytest.fixture
def env(tmp_path: Path, base_runs: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    """The case's folder, the current folder; imports and ``sys.path`` restored afterwards."""
    case = Env(tmp_path, base_runs)
    case.inputs.mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # no __pycache__ beside the inputs
    yield case
    for sock in case.held:
        sock.close()
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", None) or "").startswith(str(tmp_path)):
            del sys.modules[name]


def run_command(env: Env, case: Cli, capsys: pytest.CaptureFixture[str]) -> tuple[int | str, str, str]:
    """Exit status, stdout and stderr of ``poptrain ARGS``, in this process or a fresh one."""
    args = [env.fill(a) for a in case.args]
    if case.subprocess:
        try:
            result = subprocess.run(
                [sys.executable, "-m", "poptrain", *args],
                capture_output=True,
                text=True,
                timeout=20,
                cwd=env.tmp,
                env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            return "timed out after 20 s (did not stop)", str(exc.stdout or ""), str(exc.stderr or "")
        return result.returncode, result.stdout, result.stderr
    try:
        code: int | str = main(args)
    except SystemExit as exc:  # argparse
        code = exc.code if isinstance(exc.code, int) else str(exc.code)
    except BaseException as exc:  # noqa: BLE001 - reported as the failure it is
        out, err = capsys.readouterr()
        return f"raised {type(exc).__name__}: {exc}", out, err + f"\nTraceback: {type(exc).__name__}"
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("case", CLI_CASES, ids=[c.id for c in CLI_CASES])
def test_cli_bad_input(case: Cli, env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    if case.setup is not None:
        case.setup(env)
    before = snapshot(env.tmp)
    code, out, err = run_command(env, case, capsys)
    lines = err.strip().splitlines()
    report = f"[{case.owner}] exit {code!r}\nstderr:\n{err}\nstdout:\n{out[-2000:]}"
    assert "Traceback" not in out + err, report
    assert code == 2, report
    assert len(lines) == 1, report
    assert lines[0].startswith("poptrain: error: "), report
    assert case.expected in lines[0], report
    assert differences(before, snapshot(env.tmp)) == [], report


def test_there_are_enough_cases() -> None:
    assert len(CLI_CASES) + len(API_CASES) >= 80
    assert len({c.id for c in CLI_CASES}) == len(CLI_CASES) and len({c.id for c in API_CASES}) == len(API_CASES)


# --- Python API cases ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Api:
    """``call(env)`` raises ``error`` whose one-line message contains ``expected``."""

    id: str
    call: Callable[[Env], Any]
    error: type[PoptrainError]
    expected: str
    setup: Setup | None = None
    owner: str = "run.py"


def create(env: Env, **overrides: Any) -> Any:
    """``create_run`` of a small toy run under the case's root, with ``overrides``."""
    kwargs: dict[str, Any] = {
        "name": "new",
        "space": SPACE,
        "population_size": 2,
        "metric": "Q",
        "root": env.root,
        **overrides,
    }
    return poptrain.create_run(**kwargs).close()


def load(env: Env, name: str = "t", **kw: Any) -> Any:
    return poptrain.load_run(name, root=env.root, **kw)


def with_run(action: Callable[[Any], Any], name: str = "t") -> Callable[[Env], Any]:
    """Load run ``name`` and do ``action`` with it, closing it afterwards."""

    def call(env: Env) -> Any:
        run = load(env, name)
        try:
            return action(run)
        finally:
            run.close()

    return call


API_CASES = [
    Api("create-name-escapes", lambda e: create(e, name="../victim"), ConfigError, "run name '../victim'", victim),
    Api("create-name-empty", lambda e: create(e, name=""), ConfigError, "run name ''"),
    Api("create-name-absolute", lambda e: create(e, name=str(e.tmp / "victim")), ConfigError, "run name", victim),
    Api(
        "create-population-zero",
        lambda e: create(e, population_size=0),
        ConfigError,
        "population_size must be a whole number from 1 to 1000000",
    ),
    Api(
        "create-population-string",
        lambda e: create(e, population_size="4"),
        ConfigError,
        "population_size must be a whole number",
    ),
    Api("create-mode", lambda e: create(e, mode="maximize"), ConfigError, "mode must be 'max' or 'min'"),
    Api("create-metric-empty", lambda e: create(e, metric=""), ConfigError, "metric must be a non-empty string"),
    Api(
        "create-seed-negative",
        lambda e: create(e, seed=-1),
        ConfigError,
        "seed must be a whole number from 0 to 9223372036854775807",
    ),
    Api(
        "create-initial-hparams-length",
        lambda e: create(e, initial_hparams=[{"h0": 0.5, "h1": 0.5}]),
        ConfigError,
        "initial_hparams has 1 entries for a population of 2",
    ),
    Api("create-if-exists-unknown", lambda e: create(e, if_exists="replace"), ConfigError, "if_exists must be one of"),
    Api("create-exists", lambda e: create(e, name="t"), RunExistsError, "exists already", runs),
    Api(
        "create-seed-too-big",
        lambda e: create(e, name="t", seed=2**63, if_exists="overwrite"),
        ConfigError,
        "seed must be a whole number from 0 to 9223372036854775807",
        runs,
    ),
    Api(
        "create-checkpoints-number",
        lambda e: create(e, name="t", checkpoints=5, if_exists="overwrite"),
        ConfigError,
        "checkpoints must be a folder, an fsspec URL",
        runs,
    ),
    Api(
        "create-shared-checkpoint-folder",
        lambda e: create(e, checkpoints=e.root / "t" / "checkpoints"),
        ConfigError,
        "holds another run's checkpoints",
        runs,
    ),
    Api(
        "create-overwrite-training-now",
        lambda e: create(e, name="t", if_exists="overwrite"),
        ConfigError,
        "is training now",
        training_now,
        owner="run_folders",
    ),
    Api(
        "create-name-trailing-newline",
        lambda e: create(e, name="evil\n"),
        ConfigError,
        "is not usable as a folder name",
    ),
    Api(
        "create-population-huge",
        lambda e: create(e, population_size=10**29),
        ConfigError,
        "population_size must be a whole number from 1 to 1000000",
    ),
    Api("create-root-is-a-file", lambda e: create(e, root=e.inputs / "afile"), PoptrainError, "afile", a_file("afile")),
    Api("space-empty", lambda e: create(e, space={}), SearchSpaceError, "the search space is empty", owner="space"),
    Api("space-not-mapping", lambda e: create(e, space=["lr"]), SearchSpaceError, "must be a mapping", owner="space"),
    Api(
        "space-low-above-high",
        lambda e: create(e, space={"lr": poptrain.Float(0.1, 0.01)}),
        SearchSpaceError,
        "'lr': low (0.1) must be below high (0.01)",
        owner="space",
    ),
    Api(
        "space-log-zero",
        lambda e: create(e, space={"lr": poptrain.Float(0.0, 1.0, log=True)}),
        SearchSpaceError,
        "a log-scale range needs low > 0",
        owner="space",
    ),
    Api(
        "space-int-log-negative",
        lambda e: create(e, space={"n": poptrain.Int(-2, 8, log=True)}),
        SearchSpaceError,
        "a log-scale range needs low > 0",
        owner="space",
    ),
    Api(
        "space-choice-empty",
        lambda e: create(e, space={"act": poptrain.Choice([])}),
        SearchSpaceError,
        "Choice needs at least one option",
        owner="space",
    ),
    Api(
        "space-int-fraction",
        lambda e: create(e, space={"n": poptrain.Int(1.5, 4)}),
        SearchSpaceError,
        "Int low must be a whole number",
        owner="space",
    ),
    Api(
        "space-unknown-type",
        lambda e: create(e, space={"a": {"type": "weird"}}),
        SearchSpaceError,
        "unknown type 'weird'",
        owner="space",
    ),
    Api(
        "space-not-a-parameter",
        lambda e: create(e, space={"a": 3}),
        SearchSpaceError,
        "(in Python: poptrain.Float(0.001, 0.1), Int or Choice), got 3",
        owner="space",
    ),
    Api(
        "space-infinite-bound",
        lambda e: create(e, space={"a": poptrain.Float(0.0, float("inf"))}),
        SearchSpaceError,
        "must be finite",
        owner="space",
    ),
    Api(
        "exploit-not-callable",
        lambda e: create(e, exploit="truncation"),
        StrategyError,
        "exploit must be a callable",
        owner="strategy",
    ),
    Api("ready-none", lambda e: create(e, ready=None), StrategyError, "ready must be given", owner="strategy"),
    Api(
        "truncation-fraction",
        lambda e: poptrain.truncation(0.9),
        StrategyError,
        "truncation(fraction=...) must be in (0, 0.5]",
        owner="strategy",
    ),
    Api(
        "perturb-no-factors",
        lambda e: poptrain.perturb(factors=[]),
        StrategyError,
        "perturb(factors=...) needs a non-empty list",
        owner="strategy",
    ),
    Api(
        "every-zero",
        lambda e: poptrain.every(0),
        StrategyError,
        "every(steps=...) needs a whole number >= 1",
        owner="strategy",
    ),
    Api(
        "gaussian-unknown-name",
        lambda e: create(e, explore=poptrain.gaussian(names=["lr"])),
        StrategyError,
        "gaussian(names=...) names ['lr']",
        owner="strategy",
    ),
    Api(
        "storage-garbage",
        lambda e: create(e, storage="not-a-url"),
        StorageError,
        "cannot read storage URL",
        owner="storage",
    ),
    Api(
        "storage-unknown-driver",
        lambda e: create(e, storage="nosuchdriver://x/y"),
        StorageError,
        "no database driver for 'nosuchdriver'",
        owner="storage",
    ),
    Api(
        "storage-postgres-scheme",
        lambda e: create(e, storage="postgres://u@127.0.0.1/db"),
        StorageError,
        "postgresql+psycopg://",
        owner="storage",
    ),
    Api(
        "storage-unreachable",
        lambda e: create(e, storage=e.fill("{pg}")),
        StorageError,
        "cannot open storage",
        closed_port,
        owner="storage",
    ),
    Api("load-missing", lambda e: load(e, "ghost"), RunNotFoundError, "no run named 'ghost'", runs),
    Api("load-name-escapes", lambda e: load(e, "../victim"), ConfigError, "run name '../victim'", victim),
    Api(
        "load-random-db",
        lambda e: load(e),
        StorageError,
        "is not a SQLite database",
        database("random"),
        owner="storage",
    ),
    Api("load-empty-db", lambda e: load(e), RunNotFoundError, "is an empty file", database("empty"), owner="storage"),
    Api(
        "load-foreign-db",
        lambda e: load(e),
        StorageError,
        "is not a poptrain database",
        database("foreign"),
        owner="storage",
    ),
    Api("load-unknown-argument", lambda e: load(e, explorer=None), ConfigError, "unexpected argument 'explorer'", runs),
    Api(
        "optimize-steps-zero",
        with_run(lambda r: r.optimize(ToyQuadratic, steps=0)),
        ConfigError,
        "steps must be a whole number >= 1, got 0",
        runs,
    ),
    Api(
        "optimize-steps-float",
        with_run(lambda r: r.optimize(ToyQuadratic, steps=2.5)),
        ConfigError,
        "steps must be a whole number >= 1, got 2.5",
        runs,
    ),
    Api(
        "optimize-trainable-not-callable",
        with_run(lambda r: r.optimize(3, steps=12)),
        ConfigError,
        "trainable must be a Trainable subclass",
        runs,
    ),
    Api(
        "optimize-executor-unknown",
        with_run(lambda r: r.optimize(ToyQuadratic, steps=12, executor="gpu")),
        ConfigError,
        "unknown executor 'gpu'",
        runs,
    ),
    Api(
        "optimize-keep-best-zero",
        with_run(lambda r: r.optimize(ToyQuadratic, steps=12, keep_best=0)),
        ConfigError,
        "keep_best must be a whole number >= 1",
        runs,
    ),
    Api(
        "best-window-zero",
        with_run(lambda r: r.best(window=0)),
        ConfigError,
        "window must be a whole number >= 1",
        runs,
    ),
    Api(
        "best-candidates-zero",
        with_run(lambda r: r.best(select=lambda t: 0.0, candidates=0)),
        ConfigError,
        "candidates must be a whole number >= 1",
        runs,
    ),
    Api(
        "best-select-not-callable",
        with_run(lambda r: r.best(select="val")),
        ConfigError,
        "select must be a function scoring a loaded trainable",
        runs,
    ),
    Api(
        "create-replace-failed-string",
        lambda e: create(e, replace_failed="yes"),
        ConfigError,
        "replace_failed must be None, True or False, got 'yes'",
    ),
    Api(
        "sequential-max-live-zero",
        lambda e: poptrain.SequentialExecutor(max_live=0),
        ConfigError,
        "max_live must be a whole number >= 1 or None, got 0",
    ),
    Api(
        "processes-devices-bad",
        lambda e: poptrain.ProcessesExecutor(devices=["gpu0"]),
        ConfigError,
        "devices must be a list such as ['cuda:0', 'cuda:1']",
    ),
    Api("truncation-min-gap-negative", lambda e: poptrain.truncation(0.2, min_gap=-1.0), StrategyError, "min_gap"),
    Api(
        "optimize-workers-zero",
        with_run(lambda r: r.optimize(ToyQuadratic, steps=12, executor="processes", workers=0)),
        ConfigError,
        "workers must be a whole number >= 1, got 0",
        runs,
    ),
    Api(
        "optimize-evil-checkpoint",
        with_run(lambda r: r.optimize(ToyQuadratic, steps=12)),
        CheckpointError,
        "checkpoint",
        checkpoints("pickle"),
        owner="checkpoints",
    ),
    Api(
        "load-state-evil-signed",
        with_run(lambda r: r.load_state(r.best().checkpoint)),
        CheckpointError,
        "safe loading",
        checkpoints("torch", signed=True),
        owner="checkpoints",
    ),
    Api(
        "load-state-truncated",
        with_run(lambda r: r.load_state(r.best().checkpoint)),
        CheckpointError,
        "sha256 mismatch",
        checkpoints("truncated"),
        owner="checkpoints",
    ),
    Api("replay-member-missing", with_run(lambda r: r.replay_schedule(99)), ConfigError, "no member 99", runs),
    Api("export-schedule-member-missing", with_run(lambda r: r.export_schedule(99)), ConfigError, "no member 99", runs),
    Api(
        "replay-untrained",
        with_run(lambda r: r.replay_schedule(), "api"),
        ConfigError,
        "has no trained member yet",
        runs,
    ),
    Api(
        "replay-not-from-cli",
        with_run(lambda r: r.replay(), "api"),
        ConfigError,
        "was not started by `poptrain run`",
        runs,
    ),
    Api(
        "report-member-missing",
        with_run(lambda r: r.report(7, 1, 0.5), "api"),
        ConfigError,
        "no member in slot 7",
        runs,
    ),
    Api(
        "report-step-backwards",
        with_run(lambda r: r.report(0, 0, 0.5), "api"),
        ConfigError,
        "report a later step",
        runs,
    ),
    Api(
        "report-synchronous-run",
        with_run(lambda r: r.report(0, 9, 0.5)),
        ConfigError,
        "synchronous=True; train it with",
        runs,
    ),
    Api(
        "schedule-missing",
        lambda e: poptrain.load_schedule(e.inputs / "missing.json"),
        ConfigError,
        "does not exist",
        owner="replay",
    ),
    Api(
        "schedule-not-json",
        lambda e: poptrain.load_schedule(e.inputs / "s.json"),
        ConfigError,
        "not valid JSON",
        write("s.json", "{oops"),
        owner="replay",
    ),
    Api(
        "schedule-wrong-format",
        lambda e: poptrain.load_schedule(e.inputs / "s.json"),
        ConfigError,
        "format is 'other'",
        write("s.json", '{"format": "other", "segments": []}'),
        owner="replay",
    ),
    Api(
        "schedule-binary",
        lambda e: poptrain.load_schedule(e.inputs / "s.json"),
        ConfigError,
        "s.json",
        write("s.json", bytes(range(256))),
        owner="replay",
    ),
]


@pytest.mark.parametrize("case", API_CASES, ids=[c.id for c in API_CASES])
def test_api_bad_input(case: Api, env: Env) -> None:
    if case.setup is not None:
        case.setup(env)
    before = snapshot(env.tmp)
    with pytest.raises(PoptrainError) as info:
        case.call(env)
    report = f"[{case.owner}] {type(info.value).__name__}: {info.value}"
    assert isinstance(info.value, case.error), report
    assert "\n" not in str(info.value), report
    assert case.expected in str(info.value), report
    assert differences(before, snapshot(env.tmp)) == [], report
