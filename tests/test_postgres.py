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


def test_a_member_locked_after_a_concurrent_writer_reads_what_that_writer_committed(postgres_url: str) -> None:
    """A donor updated by another transaction while this one waits for its row lock is read with
    the checkpoint that transaction gave it (not a joined row from an older snapshot)."""
    import threading

    from sqlalchemy import insert, update

    from poptrain.records import NewCheckpoint, ReadyPoint
    from poptrain.storage import _schema as t
    from poptrain.storage._sql import _M, SQLStorage

    storage = SQLStorage(postgres_url)
    try:
        run = storage.create_run("stale", spec={}, seed=0, initial_hparams=[{"x": 0.1}, {"x": 0.2}])
        storage.record_ready(run.id, [ReadyPoint(0, 4, NewCheckpoint("a", "0" * 64, 1), 1.0)])
        writer = storage.engine.connect()
        transaction = writer.begin()
        storage._lock_members(writer, run.id, [0])
        values = {"run_id": run.id, "slot": 0, "step": 8, "uri": "b", "sha256": "1" * 64, "size_bytes": 1, "score": 2.0}
        new_id = writer.execute(insert(t.checkpoints).values(**values)).inserted_primary_key[0]
        writer.execute(
            update(t.members)
            .where(_M.run_id == run.id, _M.slot == 0)
            .values(resume_checkpoint_id=new_id, checkpoint_id=new_id)
        )
        seen: dict = {}

        def reader() -> None:
            with storage._begin() as conn:
                seen.update(storage._lock_members(conn, run.id, [0])[0])

        thread = threading.Thread(target=reader)
        thread.start()
        thread.join(timeout=0.5)  # the reader now waits for the writer's row lock
        transaction.commit()
        writer.close()
        thread.join(timeout=30)
        assert seen["resume_checkpoint_id"] == new_id
        assert seen["_held"] is not None and seen["_held"].id == new_id
    finally:
        storage.close()
