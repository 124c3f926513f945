"""`import poptrain` stays light: heavy and optional libraries load only when used."""

from __future__ import annotations

import subprocess
import sys


def test_import_does_not_pull_heavy_dependencies() -> None:
    code = (
        "import sys, poptrain; "
        "print(','.join(m for m in ('torch', 'sklearn', 'pandas', 'sqlalchemy', 'rich', 'yaml', 'pydantic', "
        "'matplotlib', 'plotly', 'ray', 'gymnasium') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == ""


def test_the_package_says_it_is_typed() -> None:
    import importlib.resources

    assert importlib.resources.files("poptrain").joinpath("py.typed").is_file()


def test_a_run_on_sqlite_needs_no_postgres_driver(tmp_path) -> None:
    """psycopg is the `postgres` extra: without it, the embedded default (SQLite) still trains."""
    code = (
        "import sys; sys.modules['psycopg'] = None; sys.modules['psycopg2'] = None\n"
        "import poptrain\n"
        "from poptrain.experiments.toy import ToyQuadratic\n"
        "run = poptrain.create_run(name='no-pg', space={'h0': poptrain.Float(0, 1), 'h1': poptrain.Float(0, 1)},\n"
        f"    population_size=2, metric='Q', root={str(tmp_path)!r})\n"
        "run.optimize(ToyQuadratic, steps=4, progress=poptrain.ProgressListener())\n"
        "print(run.best().step)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "4"
