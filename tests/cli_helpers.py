"""Running the command line in-process in tests: its exit code, stdout and stderr."""

from __future__ import annotations

import pytest

from poptrain.cli.main import main


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``poptrain ARGS`` in this process: (exit code, stdout, stderr)."""
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """The one stderr line of a refused command, checked to be one line with exit status 2."""
    code, _, err = cli(capsys, *args)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("poptrain: error: "), err
    return lines[0]
