"""PostgreSQL end to end: a seeded toy run gives the same lineage as in memory; the CLI's
one-line error for a server it cannot reach."""

from __future__ import annotations

import pytest

from pbt_helpers import lineage_signature
from poptrain.cli.main import main
from poptrain.experiments.toy import run_variant


def test_postgres_storage_gives_the_same_lineage(postgres_url, tmp_path):
    in_memory = run_variant("pbt", seed=5)
    on_server = run_variant("pbt", seed=5, storage=postgres_url, root=str(tmp_path), name="toy-pg")
    assert lineage_signature(on_server) == lineage_signature(in_memory)
    assert on_server.best().score == in_memory.best().score
    assert on_server.best().schedule == in_memory.best().schedule


def test_cli_status_on_unreachable_postgres_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["status", "toy", "--storage", "postgresql+psycopg://127.0.0.1:1/x"])
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert "127.0.0.1:1" in err and "reachable" in err
