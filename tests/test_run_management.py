"""Managing runs safely: --overwrite and `poptrain rm` delete only a run, `create_run(if_exists=)`,
`poptrain ls`, resume of a finished run, Ctrl-C, read commands that never write, export, --version."""

from __future__ import annotations

import argparse
import importlib.metadata
import io
import json
import os
import shutil
import stat
from pathlib import Path

import pytest

import poptrain
from cli_helpers import cli, one_line_error
from poptrain.cli.main import _parser, main
from poptrain.experiments.toy import SPACE, ToyQuadratic

TOY = "poptrain.experiments.toy"


def tree(root: Path) -> dict[str, bytes | str]:
    """Every file's bytes and every folder under ``root``."""
    return {str(p.relative_to(root)): ("dir" if p.is_dir() else p.read_bytes()) for p in sorted(root.rglob("*"))}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A runs folder with run `toy` (8 steps per member) trained by the CLI, copied per test."""
    root = tmp_path_factory.mktemp("trained") / "runs"
    assert main(["run", TOY, "--root", str(root), "--steps", "8", "--quiet"]) == 0
    return root


@pytest.fixture
def world(trained: Path, tmp_path: Path) -> Path:
    """``tmp/runs`` (a copy of the trained runs) beside ``tmp/victim`` (someone's folder)."""
    shutil.copytree(trained, tmp_path / "runs")
    (tmp_path / "victim").mkdir()
    (tmp_path / "victim" / "thesis.tex").write_text("years of work")
    return tmp_path


# --- --overwrite deletes only a run, and only after every input is checked -----------------------
@pytest.mark.parametrize(
    "name", ["../victim", ".", "..", str(Path("/tmp") / "victim-abs"), "a/b", "", " toy", "[/bold]"]
)
def test_overwrite_with_a_name_that_is_not_a_run_name_deletes_nothing(
    world: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    before = tree(world)
    line = one_line_error(
        capsys, "run", TOY, "--root", str(world / "runs"), "--name", name, "--overwrite", "--steps", "4"
    )
    assert "is not usable as a folder name" in line
    assert tree(world) == before


@pytest.mark.parametrize(
    "flags",
    [
        ("--population", "0"),
        ("--seed", "-1"),
        ("--steps", "0"),
        ("--executor", "processes", "--workers", "0"),
        ("--device", "cuda"),
        ("--storage", "nonsense://"),
    ],
)
def test_overwrite_checks_every_input_before_deleting(
    world: Path, capsys: pytest.CaptureFixture[str], flags: tuple[str, ...]
) -> None:
    before = tree(world)
    one_line_error(capsys, "run", TOY, "--root", str(world / "runs"), "--overwrite", *flags)
    assert tree(world) == before


def test_overwrite_refuses_a_folder_that_is_not_a_run_folder(world: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = world / "runs"
    (runs / "notes").mkdir()
    (runs / "notes" / "todo.txt").write_text("keep me")
    assert main(["run", TOY, "--root", str(world / "elsewhere"), "--name", "linked", "--steps", "4", "--quiet"]) == 0
    os.symlink(world / "elsewhere" / "linked", runs / "linked")  # a run folder, but outside the runs folder
    capsys.readouterr()
    before = tree(world)
    for overwrite in ((), ("--overwrite",)):
        assert "exists and is not a poptrain run folder" in one_line_error(
            capsys, "run", TOY, "--root", str(runs), "--name", "notes", *overwrite
        )
    assert "symbolic link" in one_line_error(capsys, "run", TOY, "--root", str(runs), "--name", "linked", "--overwrite")
    assert tree(world) == before


def test_overwrite_replaces_the_run_and_nothing_else(world: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = world / "runs"
    shutil.copytree(runs / "toy", runs / "neighbour")  # folder name != run name inside: untouched either way
    neighbour = tree(runs / "neighbour")
    code, _, err = cli(capsys, "run", TOY, "--root", str(runs), "--steps", "4", "--overwrite", "--quiet")
    assert code == 0, err
    run = poptrain.load_run("toy", root=runs)
    assert [m.step for m in run.members()] == [4, 4]  # the new run, not the old 8-step one
    assert tree(runs / "neighbour") == neighbour and (world / "victim" / "thesis.tex").is_file()


def test_overwrite_in_a_shared_database_deletes_only_that_runs_rows_and_checkpoints(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    root = tmp_path / "runs"
    for name in ("keep", "redo"):
        assert main(["run", TOY, "--storage", url, "--root", str(root), "--name", name, "--steps", "8", "--quiet"]) == 0
    keep = poptrain.load_run("keep", storage=url, root=root)
    kept = (keep.scores(), keep.lineage(), tree(root / "keep"))
    assert any((root / "redo" / "checkpoints").rglob("*.pt"))
    code, _, err = cli(
        capsys,
        "run",
        TOY,
        "--storage",
        url,
        "--root",
        str(root),
        "--name",
        "redo",
        "--steps",
        "4",
        "--overwrite",
        "--quiet",
    )
    assert code == 0, err
    keep = poptrain.load_run("keep", storage=url, root=root)
    assert (keep.scores(), keep.lineage(), tree(root / "keep")) == kept
    redo = poptrain.load_run("redo", storage=url, root=root)
    assert max(s.step for s in redo.scores()) == 4
    assert {p.name[:13] for p in (root / "redo" / "checkpoints").rglob("*.pt")} == {"step-00000004"}


def test_overwrite_in_a_run_folder_holding_other_runs_adds_the_run_beside_them(
    world: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = world / "runs"
    (runs / "other").mkdir()
    shutil.copy(
        runs / "toy" / "poptrain.db", runs / "other" / "poptrain.db"
    )  # a database holding run 'toy', not 'other'
    url = f"sqlite:///{runs / 'other' / 'poptrain.db'}"
    scores = poptrain.load_run("toy", storage=url, root=runs).scores()
    code, _, err = cli(
        capsys, "run", TOY, "--root", str(runs), "--name", "other", "--overwrite", "--steps", "4", "--quiet"
    )
    assert code == 0, err
    assert poptrain.load_run("toy", storage=url, root=runs).scores() == scores
    code, _, err = cli(
        capsys, "run", TOY, "--root", str(runs), "--name", "other", "--overwrite", "--steps", "4", "--quiet"
    )
    assert code == 0, err  # now only run 'other''s rows are replaced: 'toy' stays
    assert poptrain.load_run("toy", storage=url, root=runs).scores() == scores
    assert (runs / "other" / "poptrain.db").is_file()


# --- the Python API: create_run(if_exists=) ----------------------------------------------------
def test_create_run_if_exists(tmp_path: Path) -> None:
    def create(**kwargs: object) -> poptrain.Run:
        settings = {"name": "api", "space": SPACE, "population_size": 2, "metric": "Q", "root": tmp_path, **kwargs}
        return poptrain.create_run(**settings)  # type: ignore[arg-type]

    create().optimize(ToyQuadratic, steps=8)
    with pytest.raises(
        poptrain.RunExistsError, match="pass if_exists='load' to continue it, if_exists='overwrite' to replace it"
    ):
        create()
    loaded = create(if_exists="load")
    assert [m.step for m in loaded.members()] == [8, 8]
    loaded.optimize(ToyQuadratic, steps=12)  # the script pattern: re-run it and it continues
    assert [m.step for m in create(if_exists="load").members()] == [12, 12]
    with pytest.raises(poptrain.ConfigError, match=r"exists with other settings \(population_size differ\)"):
        create(if_exists="load", population_size=3)
    before = tree(tmp_path)
    with pytest.raises(
        poptrain.ConfigError, match="if_exists must be one of 'error', 'load', 'overwrite', got 'replace'"
    ):
        create(if_exists="replace")
    with pytest.raises(poptrain.ConfigError, match="population_size must be"):
        create(if_exists="overwrite", population_size=0)
    with pytest.raises(poptrain.ConfigError, match="not usable as a folder name"):
        create(if_exists="overwrite", name="..")
    assert tree(tmp_path) == before
    fresh = create(if_exists="overwrite", population_size=3)
    assert [m.step for m in fresh.members()] == [0, 0, 0]
    assert create(if_exists="load", population_size=3).members() == fresh.members()


# --- ls and rm -----------------------------------------------------------------------------------
def test_ls_lists_runs_with_state_best_steps_and_update(world: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = world / "runs"
    (runs / "broken").mkdir()
    (runs / "broken" / "poptrain.db").write_bytes(b"garbage" * 50)
    code, out, _ = cli(capsys, "ls", "--root", str(runs))
    assert code == 0
    row = next(line for line in out.splitlines() if " toy " in line)
    best = poptrain.load_run("toy", root=runs).best()
    assert "finished" in row and "8/8" in row and f"{best.score:.4g} (member {best.slot})" in row
    assert "Z" in row and "T" in row  # an ISO-8601 time
    assert "unreadable" in next(line for line in out.splitlines() if "broken" in line)
    code, out, _ = cli(capsys, "ls", "--root", str(world / "nothing-here"))
    assert code == 0 and "no runs in" in out


def test_rm_asks_and_deletes_only_the_run(
    world: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = world / "runs"
    shutil.copytree(runs / "toy", runs / "toy2")
    before = tree(world)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # no terminal: refuses without --yes
    assert "add --yes" in one_line_error(capsys, "rm", "toy", "--root", str(runs))
    assert "no run named 'ghost'" in one_line_error(capsys, "rm", "ghost", "--root", str(runs), "--yes")
    assert "not usable as a folder name" in one_line_error(capsys, "rm", "..", "--root", str(runs), "--yes")
    assert tree(world) == before

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr("sys.stdin", Terminal("n\n"))
    code, out, _ = cli(capsys, "rm", "toy", "--root", str(runs))
    assert code == 1 and "nothing deleted" in out and tree(world) == before
    monkeypatch.setattr("sys.stdin", Terminal("y\n"))
    assert cli(capsys, "rm", "toy", "--root", str(runs))[0] == 0
    assert not (runs / "toy").exists() and (runs / "toy2").is_dir() and (world / "victim" / "thesis.tex").is_file()


# --- resume, interrupts, a misspelled metric ---------------------------------------------------------
def test_resume_of_a_finished_run_says_so(world: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = str(world / "runs")
    before = tree(world)
    assert "is finished: every member has trained its 8 steps; to train further give --steps above 8" in one_line_error(
        capsys, "resume", "toy", "--root", runs
    )
    assert "--steps 5 is not more than the 8 steps" in one_line_error(
        capsys, "resume", "toy", "--root", runs, "--steps", "5"
    )
    assert tree(world) == before
    code, _, err = cli(capsys, "resume", "toy", "--root", runs, "--steps", "12", "--quiet")
    assert code == 0, err
    assert [m.step for m in poptrain.load_run("toy", root=runs).members()] == [12, 12]


class Interrupted(ToyQuadratic):
    """Ctrl-C arrives during the 15th step trained in this process."""

    calls = 0

    def step(self) -> None:
        super().step()
        Interrupted.calls += 1
        if Interrupted.calls == 15:
            raise KeyboardInterrupt


def test_ctrl_c_leaves_an_interrupted_run_that_resumes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    module = tmp_path / "interrupted_exp.py"
    module.write_text(
        "from poptrain.experiments.toy import SPACE, INITIAL_H\n"
        "from test_run_management import Interrupted\n"
        "def experiment():\n"
        "    return {'trainable': Interrupted, 'space': SPACE, 'population_size': 2, 'steps': 12, 'metric': 'Q',\n"
        "            'initial_hparams': INITIAL_H}\n"
    )
    root = str(tmp_path / "runs")
    code, _, err = cli(capsys, "run", str(module), "--root", root, "--quiet")
    assert code == 130
    assert err.strip().splitlines()[-1] == (
        f"poptrain: interrupted; run interrupted_exp is kept as far as its checkpoints go; "
        f"continue it with: poptrain resume interrupted_exp --root {root}"
    )
    run = poptrain.load_run("interrupted_exp", root=root)
    assert run.record.state == "interrupted"
    assert "Interrupted; continue it with" in cli(capsys, "status", "interrupted_exp", "--root", root)[1]
    code, _, err = cli(capsys, "resume", "interrupted_exp", "--root", root, "--quiet")
    assert code == 0, err
    run = poptrain.load_run("interrupted_exp", root=root)
    assert run.record.state == "finished" and [m.step for m in run.members()] == [12, 12]
    for slot in (0, 1):  # each step scored exactly once
        assert sorted(s.step for s in run.scores() if s.slot == slot) == list(range(1, 13))


def test_a_misspelled_metric_is_one_line_and_the_same_command_works_once_fixed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "toy.yaml"
    text = (
        "trainable: poptrain.experiments.toy:ToyQuadratic\nmetric: {metric}\npopulation_size: 2\nsteps: 4\n"
        "space:\n  h0: {{type: float, low: 0.0, high: 1.0}}\n  h1: {{type: float, low: 0.0, high: 1.0}}\n"
    )
    config.write_text(text.format(metric="Qx"))
    args = ("run", str(config), "--root", str(tmp_path / "runs"), "--quiet")
    line = one_line_error(capsys, *args)
    assert line == (
        f"poptrain: error: evaluate() returned metrics ['Q'] without 'Qx'; set metric to one of those in {config}, "
        "then run the same command again"
    )
    assert "load_run" not in line
    config.write_text(text.format(metric="Q"))
    code, _, err = cli(capsys, *args)
    assert code == 0 and "replacing run toy, which stopped before its first score" in err
    assert poptrain.load_run("toy", root=tmp_path / "runs").record.state == "finished"
    assert (
        "exists already (finished, 4 of 4 steps per member); continue it with `poptrain resume toy --root"
        in one_line_error(capsys, *args)
    )


# --- read commands never write ------------------------------------------------------------------
@pytest.mark.parametrize("command", [("status",), ("export", "--format", "csv"), ("replay",), ("rm", "--yes")])
def test_read_commands_on_an_empty_database_write_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: tuple[str, ...]
) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "poptrain.db").write_bytes(b"")
    line = one_line_error(capsys, command[0], "empty", *command[1:], "--root", str(tmp_path))
    assert "is an empty file, so it holds no poptrain runs" in line
    assert tree(tmp_path) == {"empty": "dir", "empty/poptrain.db": b""}


# --- export ----------------------------------------------------------------------------------------
def test_export_has_no_duplicated_column_iso_times_and_the_reports_permissions(
    world: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = str(world / "runs")
    csv_path, json_path = world / "scores.csv", world / "all.json"
    assert cli(capsys, "export", "toy", "--root", runs, "--format", "csv", "-o", str(csv_path))[0] == 0
    header = csv_path.read_text().splitlines()[0].split(",")
    assert len(header) == len(set(header)) and "metric.Q" not in header and header[-1] == "time"
    from datetime import datetime

    first_time = csv_path.read_text().splitlines()[1].split(",")[-1]
    assert datetime.fromisoformat(first_time).utcoffset().total_seconds() == 0
    assert cli(capsys, "export", "toy", "--root", runs, "--format", "json", "-o", str(json_path))[0] == 0
    payload = json.loads(json_path.read_text())
    for value in (payload["run"]["created_at"], payload["scores"][0]["wall_time"], payload["lineage"][0]["created_at"]):
        assert datetime.fromisoformat(value).tzinfo is not None
    assert cli(capsys, "report", "toy", "--root", runs)[0] == 0
    report_mode = stat.S_IMODE((world / "runs" / "toy" / "report.html").stat().st_mode)
    assert report_mode & 0o044  # readable by others, as a new file is under the usual umask
    assert {stat.S_IMODE(p.stat().st_mode) for p in (csv_path, json_path)} == {report_mode}


def test_report_into_a_file_is_one_line(world: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (world / "taken").write_text("mine")
    before = tree(world)
    assert "is a file; give a folder" in one_line_error(
        capsys, "report", "toy", "--root", str(world / "runs"), "--output", str(world / "taken")
    )
    assert "is a folder; give a file name" in one_line_error(
        capsys, "export", "toy", "--root", str(world / "runs"), "--format", "csv", "-o", str(world / "victim")
    )
    assert tree(world) == before


# --- version and help ------------------------------------------------------------------------------
def test_version_has_one_source(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"poptrain {poptrain.__version__}"
    assert importlib.metadata.version("poptrain") == poptrain.__version__


def test_every_option_help_shows_its_default() -> None:
    parser = _parser()
    [commands] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    missing = []
    for name, sub in commands.choices.items():
        for action in sub._actions:
            if (
                action.option_strings
                and not isinstance(action, argparse._HelpAction)
                and "default" not in (action.help or "")
            ):
                missing.append(f"{name} {action.option_strings[0]}")
    assert missing == []


def test_read_commands_leave_a_rollback_journal_database_as_it_is(
    world: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import sqlite3

    database = world / "runs" / "toy" / "poptrain.db"
    with sqlite3.connect(database) as conn:  # as a backup made with VACUUM INTO would be
        conn.execute("PRAGMA journal_mode=DELETE")
    conn.close()
    before = tree(world)
    for command in (("status", "toy"), ("ls",), ("export", "toy", "--format", "json")):
        assert cli(capsys, *command, "--root", str(world / "runs"))[0] == 0
    assert tree(world) == before


def test_report_runs_no_code_named_by_the_run(world: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import sqlite3

    marker = world / "imported"
    (world / "sideeffect.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    database = world / "runs" / "toy" / "poptrain.db"
    with sqlite3.connect(database) as conn:  # a run whose stored experiment is a module with side effects
        conn.execute("UPDATE runs SET spec = json_set(spec, '$.meta.target', ?)", (str(world / "sideeffect.py"),))
    conn.close()
    (world / "runs" / "toy" / "summary.json").write_text('{"test_acc": 0.97}')
    assert cli(capsys, "report", "toy", "--root", str(world / "runs"))[0] == 0
    assert not marker.exists()
    assert '"test_acc": 0.97' in (world / "runs" / "toy" / "report.html").read_text()


def test_run_keeps_the_experiments_summary_for_its_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    module = tmp_path / "summarized.py"
    module.write_text(
        "from poptrain.experiments.toy import SPACE, ToyQuadratic, INITIAL_H\n"
        "def experiment():\n"
        "    return {'trainable': ToyQuadratic, 'space': SPACE, 'population_size': 2, 'steps': 4, 'metric': 'Q',\n"
        "            'initial_hparams': INITIAL_H}\n"
        "def summarize(run):\n"
        "    return {'members_seen': len(run.members())}\n"
    )
    root = tmp_path / "runs"
    assert cli(capsys, "run", str(module), "--root", str(root), "--quiet")[0] == 0
    assert json.loads((root / "summarized" / "summary.json").read_text()) == {"members_seen": 2}
    module.unlink()  # the report needs neither the file nor its import
    assert cli(capsys, "report", "summarized", "--root", str(root))[0] == 0
    assert '"members_seen": 2' in (root / "summarized" / "report.html").read_text()


def test_rm_at_end_of_input_deletes_nothing(
    world: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    class ClosedTerminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr("sys.stdin", ClosedTerminal(""))  # Ctrl-D at the prompt
    before = tree(world)
    code, out, _ = cli(capsys, "rm", "toy", "--root", str(world / "runs"))
    assert code == 1 and "nothing deleted" in out and tree(world) == before


def test_hints_name_both_root_and_storage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    code, out, _ = cli(capsys, "run", TOY, "--root", str(tmp_path / "ck"), "--storage", url, "--steps", "4", "--quiet")
    assert code == 0 and f"poptrain status toy --root {tmp_path / 'ck'} --storage {url}" in out
    code, out, _ = cli(capsys, "ls", "--root", str(tmp_path / "ck"), "--storage", url)
    assert code == 0 and "finished" in out and "4/4" in out
