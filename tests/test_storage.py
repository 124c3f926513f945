"""The storage contract over both backends, and the SQL backend's own failure modes."""

from __future__ import annotations

import importlib.util
import sqlite3
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, event, insert, text

from poptrain import RunNotFoundError, StorageError
from poptrain.records import NewCheckpoint, ReadyPoint, ScoreRecord
from poptrain.storage import SCHEMA_VERSION, InMemoryStorage, Storage, _migrate, open_storage
from poptrain.storage import _schema as schema
from poptrain.testing import StorageContract


class TestInMemoryStorage(StorageContract):
    def make_storage(self, tmp_path):
        return open_storage("memory")

    def test_open_storage_memory(self, storage):
        assert isinstance(storage, InMemoryStorage)


class PagedWrites:
    """Writes naming many slots go in pages (a statement may bind only so many values)."""

    def test_set_members_state_in_pages_is_all_or_nothing(self, storage, monkeypatch):
        from poptrain.storage import _sql

        monkeypatch.setattr(_sql, "_VALUES_PER_STATEMENT", 2)
        run, _ = self.new_run(storage, n=5)
        storage.set_members_state(run.id, [4, 0, 2, 1, 3], "finished")
        assert [m.state for m in storage.get_members(run.id)] == ["finished"] * 5
        with pytest.raises(KeyError, match="slot 9"):  # the unknown slot is in the last page
            storage.set_members_state(run.id, [0, 1, 2, 3, 9], "retired", "gone")
        assert [(m.state, m.error) for m in storage.get_members(run.id)] == [("finished", None)] * 5


class TestSQLiteStorage(PagedWrites, StorageContract):
    def make_storage(self, tmp_path):
        return open_storage(f"sqlite:///{tmp_path}/db/poptrain.db")

    def test_data_survives_reopening(self, storage, tmp_path):
        run, _ = self.new_run(storage, "kept")
        storage.close()
        again = open_storage(f"sqlite:///{tmp_path}/db/poptrain.db")
        try:
            assert again.get_run("kept") == run
            assert len(again.get_members(run.id)) == 2
        finally:
            again.close()


class TestPostgreSQLStorage(PagedWrites, StorageContract):
    """The whole contract again on a throwaway PostgreSQL server (skipped where none is installed,
    failed when ``CI`` is set)."""

    @pytest.fixture(autouse=True)
    def _database(self, postgres_url):
        self.url = postgres_url

    def make_storage(self, tmp_path):
        return open_storage(self.url)

    def test_data_survives_reopening(self, storage):
        run, _ = self.new_run(storage, "kept")
        storage.close()
        again = open_storage(self.url)
        try:
            assert again.get_run("kept") == run
            assert len(again.get_members(run.id)) == 2
        finally:
            again.close()


class OneByOne(InMemoryStorage):
    """A storage that implements only ``set_member_state``: it gets the base class's
    ``set_members_state``."""

    set_members_state = Storage.set_members_state

    def set_member_state(self, run_id, slot, state, error=None):
        InMemoryStorage.set_members_state(self, run_id, [slot], state, error)


def test_the_default_set_members_state_checks_every_slot_before_writing():
    storage = OneByOne()
    run = storage.create_run("r", spec={}, seed=0, initial_hparams=[{"x": 1.0}] * 3)
    storage.set_members_state(run.id, [2, 0], "finished")
    storage.set_members_state(run.id, [1], "failed", "boom")
    assert [(m.state, m.error) for m in storage.get_members(run.id)] == [
        ("finished", None),
        ("failed", "boom"),
        ("finished", None),
    ]
    with pytest.raises(KeyError, match="slot 5"):
        storage.set_members_state(run.id, [0, 5], "retired")
    assert storage.get_members(run.id)[0].state == "finished"


@pytest.mark.slow
def test_sqlite_takes_more_members_than_one_statement_may_bind(tmp_path):
    """Stock SQLite binds at most 32,766 values a statement: a population larger than that is
    created, scored, checkpointed, collected and finished, its slot lists written in pages."""
    if not hasattr(sqlite3.Connection, "setlimit"):
        pytest.skip("sqlite3.Connection.setlimit needs Python 3.11")
    storage = open_storage(f"sqlite:///{tmp_path}/big.db")
    try:

        def stock_limit(dbapi_connection, _record):
            dbapi_connection.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 32_766)

        event.listen(storage.engine, "connect", stock_limit)
        storage.engine.dispose()  # connections made from now on have the limit
        n = 33_000
        run = storage.create_run("big", spec={}, seed=0, initial_hparams=[{"x": 0.5}] * n)
        members = storage.get_members(run.id)
        storage.record_scores(run.id, [ScoreRecord(m.slot, 1, 0.1, m.generation_id) for m in members])
        points = [ReadyPoint(m.slot, 2, NewCheckpoint(f"c/{m.slot}.pt", "0" * 64, 1), 0.2) for m in members]
        storage.record_ready(run.id, points, [ScoreRecord(m.slot, 2, 0.2, m.generation_id) for m in members])
        storage.mark_checkpoints_deleted(run.id, [c.id for c in storage.get_checkpoints(run.id)])
        storage.set_members_state(run.id, [m.slot for m in members], "finished")
        members = storage.get_members(run.id)
        assert {(m.state, m.step, m.last_ready_step) for m in members} == {("finished", 2, 2)}
        assert len(storage.get_scores(run.id)) == 2 * n
        assert all(c.deleted for c in storage.get_checkpoints(run.id))
    finally:
        storage.close()


def test_open_storage_default_path_is_sqlite(tmp_path):
    storage = open_storage(None, default_path=str(tmp_path / "run" / "poptrain.db"))
    try:
        storage.create_run("x", spec={}, seed=0)
    finally:
        storage.close()
    assert (tmp_path / "run" / "poptrain.db").is_file()


def test_schema_version_mismatch(tmp_path):
    path = tmp_path / "poptrain.db"
    open_storage(f"sqlite:///{path}").close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE poptrain_meta SET value = '999' WHERE key = 'schema_version'")
    with pytest.raises(StorageError, match=rf"schema version '999'.*reads version {SCHEMA_VERSION}.*upgrade poptrain"):
        open_storage(f"sqlite:///{path}")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("nosuchdialect://x", "no database driver for 'nosuchdialect'"),
        ("not a url", "cannot read storage URL 'not a url'"),
    ],
)
def test_invalid_storage_url(url, message):
    with pytest.raises(StorageError, match=message):
        open_storage(url)


def test_sqlite_folder_that_cannot_be_created(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(StorageError, match="cannot create the folder"):
        open_storage(f"sqlite:///{blocker}/sub/poptrain.db")


@pytest.mark.skipif(importlib.util.find_spec("psycopg") is None, reason="psycopg is not installed")
def test_unreachable_postgres():
    with pytest.raises(StorageError, match="cannot open storage .*reachable"):
        open_storage("postgresql+psycopg://u@127.0.0.1:1/x")


def test_postgres_without_driver_names_the_extra_to_install(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if poptrain[postgres] were not installed
    with pytest.raises(
        StorageError, match=r"no database driver for 'postgresql\+psycopg'.*pip install \"poptrain\[postgres\]\""
    ):
        open_storage("postgresql+psycopg://u@127.0.0.1:1/x")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "mysql+nosuchdriver://u@h/db",
            r"no database driver for 'mysql\+nosuchdriver' .*; use sqlite:///PATH or postgresql\+psycopg://",
        ),
        ("postgres://u@h/db", r"no database driver for 'postgres' .*; write postgresql\+psycopg://user@host/db"),
    ],
)
def test_wrong_url_scheme(url, message):
    with pytest.raises(StorageError, match=message) as info:
        open_storage(url)
    assert "\n" not in str(info.value)


@pytest.mark.skipif(importlib.util.find_spec("psycopg") is None, reason="psycopg is not installed")
def test_unreachable_postgres_is_one_line():
    with pytest.raises(StorageError) as info:
        open_storage("postgresql+psycopg://u@127.0.0.1:1/x")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("cannot open storage postgresql+psycopg://u@127.0.0.1:1/x: ")
    assert "refused" in message and message.endswith("running and reachable")


# --- the schema: Alembic migrations and the version check ----------------------------------
def test_head_revision_is_the_newest_migration():
    from alembic.script import ScriptDirectory

    assert ScriptDirectory.from_config(_migrate.alembic_config()).get_current_head() == _migrate.HEAD_REVISION


def test_migrations_ship_with_the_package():
    folder = Path(_migrate.MIGRATIONS)
    assert (folder / "env.py").is_file() and (folder / "script.py.mako").is_file()
    assert sorted(p.name for p in (folder / "versions").glob("0*.py"))[:2] == [
        "0001_initial.py",
        "0002_member_failures.py",
    ]


def _schema_differences(url, *, migrate_new=True):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    engine = create_engine(url)
    try:
        with engine.begin() as conn:  # every migration, even where a new database gets the schema directly
            _migrate.prepare(conn, "the test database", migrate_new=migrate_new)
        with engine.connect() as conn:
            return compare_metadata(MigrationContext.configure(conn), schema.metadata)
    finally:
        engine.dispose()


def test_migrations_create_exactly_the_schema_sqlite(tmp_path):
    assert _schema_differences(f"sqlite:///{tmp_path}/poptrain.db") == []


def _sqlite_schema(path):
    with sqlite3.connect(path) as conn:
        tables = conn.execute("SELECT type, name, tbl_name FROM sqlite_master ORDER BY type, name").fetchall()
        columns = {
            name: conn.execute(f"PRAGMA table_info({name})").fetchall()
            + conn.execute(f"PRAGMA foreign_key_list({name})").fetchall()
            for kind, name, _ in tables
            if kind == "table"
        }
        indexes = {
            name: conn.execute(f"PRAGMA index_info({name})").fetchall() for kind, name, _ in tables if kind == "index"
        }
        rows = {
            "alembic_version": conn.execute("SELECT * FROM alembic_version").fetchall(),
            "poptrain_meta": conn.execute("SELECT * FROM poptrain_meta").fetchall(),
        }
    return tables, columns, indexes, rows


def test_new_sqlite_database_gets_the_schema_the_migrations_build(tmp_path):
    """A new SQLite database gets the newest schema directly, without running the migrations:
    the same tables, columns, indexes, revision and schema version as the migrations make."""
    direct, migrated = tmp_path / "direct.db", tmp_path / "migrated.db"
    open_storage(f"sqlite:///{direct}").close()
    assert _schema_differences(f"sqlite:///{migrated}") == []
    assert _sqlite_schema(direct) == _sqlite_schema(migrated)
    assert _schema_differences(f"sqlite:///{direct}", migrate_new=False) == []


def test_migrations_create_exactly_the_schema_postgres(postgres_url):
    assert _schema_differences(postgres_url) == []


def test_new_database_is_at_head_with_schema_version(tmp_path):
    path = tmp_path / "poptrain.db"
    open_storage(f"sqlite:///{path}").close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [(_migrate.HEAD_REVISION,)]
        assert conn.execute("SELECT value FROM poptrain_meta WHERE key = 'schema_version'").fetchall() == [
            (str(SCHEMA_VERSION),)
        ]


def test_unknown_alembic_revision_is_refused(tmp_path):
    path = tmp_path / "poptrain.db"
    open_storage(f"sqlite:///{path}").close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    expected = rf"Alembic revision '9999'.*reads version {SCHEMA_VERSION} \(revision '{_migrate.HEAD_REVISION}'\); upgrade poptrain"
    with pytest.raises(StorageError, match=expected) as info:
        open_storage(f"sqlite:///{path}")
    assert "\n" not in str(info.value)


def test_unknown_alembic_revision_is_refused_postgres(postgres_url):
    open_storage(postgres_url).close()
    engine = create_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'abcdef'"))
    engine.dispose()
    with pytest.raises(StorageError, match=r"Alembic revision 'abcdef'.*upgrade poptrain"):
        open_storage(postgres_url)


def test_database_made_before_alembic_is_stamped_and_migrated(tmp_path):
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:  # schema version 1 as create_all made it, before members.failures
        conn.executescript(
            "CREATE TABLE poptrain_meta (key VARCHAR(64) PRIMARY KEY, value VARCHAR(256) NOT NULL);"
            "INSERT INTO poptrain_meta VALUES ('schema_version', '1');"
        )
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        tables = [tb for tb in schema.metadata.sorted_tables if tb.name != "poptrain_meta"]
        schema.metadata.create_all(conn, tables=tables)
        conn.execute(text("ALTER TABLE members DROP COLUMN failures"))
        conn.execute(text("ALTER TABLE members DROP COLUMN lease"))  # added in schema version 2
        conn.execute(text("ALTER TABLE runs DROP COLUMN reason"))  # added in schema version 3
        conn.execute(text("ALTER TABLE checkpoints DROP COLUMN generation_id"))  # added in schema version 4
        conn.execute(text("DROP TABLE scores"))  # version 1 had no unique (run_id, slot, step)
        conn.execute(
            text(
                "CREATE TABLE scores (id INTEGER PRIMARY KEY, run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE, "
                "slot INTEGER NOT NULL, generation_id INTEGER NOT NULL, step INTEGER NOT NULL, value FLOAT, "
                "metrics JSON NOT NULL, wall_time FLOAT NOT NULL)"
            )
        )
        conn.execute(text("CREATE INDEX ix_scores_run ON scores (run_id, id)"))
        conn.execute(insert(schema.runs).values(name="old", spec={}, seed=1, state="finished", created_at=1.0))
    engine.dispose()
    storage = open_storage(f"sqlite:///{path}")
    try:
        run = storage.get_run("old")
        storage.add_members(run.id, [{"lr": 0.1}])
    finally:
        storage.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [(_migrate.HEAD_REVISION,)]
        assert conn.execute("SELECT slot, failures FROM members").fetchall() == [(0, 0)]


def test_a_database_that_is_not_poptrains_is_refused(tmp_path):
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    before = path.read_bytes()
    for create in (True, False):
        with pytest.raises(
            StorageError, match=r"other.db is not a poptrain database \(it has tables customers\); use a new file"
        ):
            open_storage(f"sqlite:///{path}", create=create)
    assert path.read_bytes() == before  # not even switched to WAL
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.db"]


@pytest.mark.parametrize(
    ("content", "error", "match"),
    [
        (None, RunNotFoundError, "no database at"),
        (b"", RunNotFoundError, "is an empty file"),
        (b"not a database at all" * 20, StorageError, "is not a SQLite database"),
    ],
)
def test_opening_without_create_writes_nothing(tmp_path: Path, content: bytes | None, error: type, match: str) -> None:
    path = tmp_path / "poptrain.db"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(error, match=match):
        open_storage(f"sqlite:///{path}", create=False)
    assert [p.read_bytes() for p in tmp_path.iterdir()] == ([] if content is None else [content])


def test_an_empty_sqlite_database_is_not_given_a_schema_without_create(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    sqlite3.connect(path).close()  # a valid database file with no tables
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (x)")
        conn.execute("DROP TABLE t")
    before = path.read_bytes()
    with pytest.raises(RunNotFoundError, match="is an empty database"):
        open_storage(f"sqlite:///{path}", create=False)
    assert path.read_bytes() == before


def test_a_postgres_database_that_is_not_poptrains_is_refused(postgres_url):
    engine = create_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE orders (id INTEGER PRIMARY KEY)"))
    engine.dispose()
    with pytest.raises(StorageError, match="is not a poptrain database"):
        open_storage(postgres_url)


def test_opening_an_existing_database_reads_the_version_without_alembic(tmp_path):
    """Alembic (slow to import) is loaded only to create or migrate a schema, never to open one
    at the newest revision."""
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path}/poptrain.db"
    open_storage(url).close()
    script = (
        "import sys; from poptrain.storage import open_storage; "
        f"s = open_storage({url!r}); s.list_runs(); s.close(); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'alembic'))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _open_and_close(url):
    open_storage(url).close()
    return True


def test_processes_creating_the_same_database_at_once(tmp_path):
    import concurrent.futures
    import multiprocessing

    url = f"sqlite:///{tmp_path}/poptrain.db"
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(4, mp_context=context) as pool:
        assert list(pool.map(_open_and_close, [url] * 8, timeout=60)) == [True] * 8
    storage = open_storage(url)
    try:
        assert storage.list_runs() == []
    finally:
        storage.close()


def test_clients_creating_the_same_postgres_database_at_once(postgres_url):
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        assert list(pool.map(_open_and_close, [postgres_url] * 8, timeout=60)) == [True] * 8
