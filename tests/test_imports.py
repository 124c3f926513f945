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
