"""SQL storage: writes whose reads are isolated (two storages on one database in two threads
lose nothing), and the schema version 2 migration (one score per member and step)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import create_engine, insert, select, text
from sqlalchemy.engine import Connection

from poptrain.errors import StaleWriteError
from poptrain.records import Decision, NewCheckpoint, ReadyPoint, ScoreRecord
from poptrain.storage import SCHEMA_VERSION, _migrate, open_storage
from poptrain.storage import _schema as schema
from poptrain.storage._base import Storage

ROUNDS = 40


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/poptrain.db"
    return str(request.getfixturevalue("postgres_url"))


def _in_threads(*work: Callable[[], None]) -> None:
    """Run each callable in its own thread, all released at once; re-raise the first error."""
    start = threading.Barrier(len(work))
    errors: list[BaseException] = []

    def run(fn: Callable[[], None]) -> None:
        start.wait()
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(fn,)) for fn in work]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    if errors:
        raise errors[0]


def _point(slot: int, step: int, decision: Decision | None = None) -> ReadyPoint:
    return ReadyPoint(slot, step, NewCheckpoint(f"ckpt/{slot}-{step}.pt", "0" * 64, 10), 0.001 * step, decision)


def test_two_storages_in_two_threads_lose_no_write(url: str) -> None:
    """Each record_ready reads the member (its generation number) and writes it back: with the
    read outside the write's transaction, two writers would both write generation n+1."""
    first, second = open_storage(url), open_storage(url)
    try:
        run = first.create_run("race", spec={"metric": "acc"}, seed=0, initial_hparams=[{"lr": 0.1}, {"lr": 0.2}])

        def explorer(storage: Storage, parity: int) -> Callable[[], None]:
            def work() -> None:
                for i in range(ROUNDS):
                    step = 2 * i + parity + 1
                    storage.record_ready(run.id, [_point(0, step, Decision(0, step, "explore", {"lr": step}))])

            return work

        _in_threads(explorer(first, 0), explorer(second, 1))
        member = first.get_members(run.id)[0]
        numbers = sorted(g.number for g in first.get_generations(run.id) if g.slot == 0)
        assert numbers == list(range(2 * ROUNDS + 1))  # every decision its own generation
        assert member.generation == 2 * ROUNDS
        assert len(first.get_checkpoints(run.id)) == 2 * ROUNDS
    finally:
        first.close()
        second.close()


def test_scores_and_ready_points_of_two_storages_all_arrive(url: str) -> None:
    """One storage records a member's scores while another records ready points and exploits
    of another member copying it: every score is kept, and each copy loads a checkpoint the
    donor held."""
    first, second = open_storage(url), open_storage(url)
    try:
        run = first.create_run("race", spec={"metric": "acc"}, seed=0, initial_hparams=[{"lr": 0.1}, {"lr": 0.2}])
        generation = first.get_members(run.id)[0].generation_id

        def scorer() -> None:
            for step in range(1, 2 * ROUNDS + 1):
                first.record_scores(run.id, [ScoreRecord(0, step, 0.01 * step, generation)])
                if step % 2 == 0:
                    first.record_ready(run.id, [_point(0, step)])

        def copier() -> None:
            for step in range(1, ROUNDS + 1):
                try:
                    second.record_ready(run.id, [_point(1, step, Decision(1, step, "exploit", {"lr": 0.3}, 0))])
                except ValueError:  # slot 0 holds no checkpoint yet
                    second.record_ready(run.id, [_point(1, step)])

        _in_threads(scorer, copier)
        assert [s.step for s in first.get_scores(run.id)] == list(range(1, 2 * ROUNDS + 1))
        member = first.get_members(run.id)[0]
        assert (member.step, member.last_ready_step) == (2 * ROUNDS, 2 * ROUNDS)
        own = {c.id for c in first.get_checkpoints(run.id) if c.slot == 0}
        loaded = [g.loaded_checkpoint_id for g in first.get_generations(run.id) if g.slot == 1 and g.number > 0]
        assert set(loaded) <= own
    finally:
        first.close()
        second.close()


def test_two_workers_acquire_distinct_members(url: str) -> None:
    first, second = open_storage(url), open_storage(url)
    try:
        run = first.create_run("race", spec={}, seed=0, initial_hparams=[{"lr": 0.1 * i} for i in range(6)])
        got: list[tuple[int, int | None]] = []

        def worker(storage: Storage, name: str) -> Callable[[], None]:
            def work() -> None:
                for i in range(3):  # a new worker name each time: a worker may take its own lease again
                    member = storage.acquire_member(run.id, f"{name}{i}", total_steps=4, lease_seconds=60)
                    assert member is not None
                    got.append((member.slot, member.lease))

            return work

        _in_threads(worker(first, "a"), worker(second, "b"))
        assert sorted(got) == [(slot, 1) for slot in range(6)]  # each member leased once, by one worker
        assert first.acquire_member(run.id, "late", total_steps=4, lease_seconds=60) is None
    finally:
        first.close()
        second.close()


# --- schema version 2: one score per member and step ---------------------------------------------
def _database_at(url: str, revision: str) -> None:
    """Create poptrain's schema at an older Alembic revision."""
    from alembic import command

    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            command.upgrade(_migrate.alembic_config(conn), revision)
    finally:
        engine.dispose()


def _old_run_with_a_member(conn: Connection, *, last_ready_step: int) -> int:
    """A run with member 0 (generation 1, at step 2) written as an older schema allows; its id."""
    conn.execute(insert(schema.runs).values(name="old", spec={}, seed=1, state="interrupted", created_at=1.0))
    run_id: int = conn.execute(select(schema.runs.c.id)).scalar_one()
    conn.execute(
        text(
            "INSERT INTO members (run_id, slot, state, step, hparams, generation_id, generation, last_ready_step, "
            "failures) VALUES (:run, 0, 'running', 2, '{}', 1, 0, :ready, 0)"
        ),
        {"run": run_id, "ready": last_ready_step},
    )
    return run_id


def test_upgrade_to_one_score_per_step_keeps_the_newest_of_duplicates(url: str) -> None:
    _database_at(url, "0003")
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            assert conn.execute(text("SELECT value FROM poptrain_meta")).scalar() == "1"
            run_id = _old_run_with_a_member(conn, last_ready_step=0)
            rows = [(1, 0.1), (2, 0.2), (2, 0.25), (1, 0.15), (2, 0.3)]  # steps 1 and 2 trained twice
            for step, value in rows:
                conn.execute(
                    text(
                        "INSERT INTO scores (run_id, slot, generation_id, step, value, metrics, wall_time) "
                        "VALUES (:run, 0, 1, :step, :value, '{}', 0)"
                    ),
                    {"run": run_id, "step": step, "value": value},
                )
    finally:
        engine.dispose()
    storage = open_storage(url)
    try:
        assert [(s.step, s.value) for s in storage.get_scores(run_id)] == [(1, 0.15), (2, 0.3)]
        assert storage.get_members(run_id)[0].lease is None
    finally:
        storage.close()
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            assert conn.execute(text("SELECT value FROM poptrain_meta")).scalar() == str(SCHEMA_VERSION) == "4"
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == _migrate.HEAD_REVISION
    finally:
        engine.dispose()


def test_the_database_refuses_a_second_score_for_a_step(tmp_path: Path) -> None:
    """The rule holds in the schema itself (for any client), not only in poptrain's code."""
    path = tmp_path / "poptrain.db"
    open_storage(f"sqlite:///{path}").close()
    with sqlite3.connect(path) as conn:
        insert_score = "INSERT INTO scores (run_id, slot, generation_id, step, value, metrics, wall_time) VALUES (1, 0, 1, 3, 0.5, '{}', 0)"
        conn.execute("INSERT INTO runs (name, spec, seed, state, created_at) VALUES ('r', '{}', 0, 'created', 0)")
        conn.execute(insert_score)
        with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
            conn.execute(insert_score)


def test_upgrade_to_scores_per_generation_keeps_every_score(url: str) -> None:
    """Schema version 4: two generations of one member may score the same step (a member that
    copied an older model trains those steps again); a checkpoint from before reads as trained
    by an unknown generation (``None``), found by slot and step."""
    _database_at(url, "0006")
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            run_id = _old_run_with_a_member(conn, last_ready_step=2)
            conn.execute(
                text(
                    "INSERT INTO checkpoints (run_id, slot, step, uri, sha256, size_bytes, score, deleted) "
                    "VALUES (:run, 0, 2, 'c', 'x', 1, 0.2, false)"
                ),
                {"run": run_id},
            )
            for step in (1, 2):
                conn.execute(
                    text(
                        "INSERT INTO scores (run_id, slot, generation_id, step, value, metrics, wall_time) "
                        "VALUES (:run, 0, 1, :step, 0.1, '{}', 0)"
                    ),
                    {"run": run_id, "step": step},
                )
    finally:
        engine.dispose()
    storage = open_storage(url)
    try:
        [ckpt] = storage.get_checkpoints(run_id)
        assert (ckpt.slot, ckpt.step, ckpt.generation_id) == (0, 2, None)
        storage.record_scores(run_id, [ScoreRecord(0, 2, 0.5, 7)])  # another generation's step 2
        assert [(s.generation_id, s.step) for s in storage.get_scores(run_id)] == [(1, 1), (1, 2), (7, 2)]
        with pytest.raises(StaleWriteError):
            storage.record_scores(run_id, [ScoreRecord(0, 2, 0.6, 7)])
    finally:
        storage.close()
