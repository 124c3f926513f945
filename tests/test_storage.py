"""The storage contract over both backends, and the SQL backend's own failure modes."""

from __future__ import annotations

import importlib.util
import sqlite3

import pytest

from poptrain import StorageError
from poptrain.storage import SCHEMA_VERSION, InMemoryStorage, open_storage
from poptrain.testing import StorageContract


class TestInMemoryStorage(StorageContract):
    def make_storage(self, tmp_path):
        return open_storage("memory")

    def test_open_storage_memory(self, storage):
        assert isinstance(storage, InMemoryStorage)


class TestSQLiteStorage(StorageContract):
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


@pytest.mark.skipif(importlib.util.find_spec("psycopg") is not None, reason="psycopg is installed")
def test_postgres_without_driver_names_the_driver():
    with pytest.raises(StorageError, match="no database driver for 'postgresql\\+psycopg'"):
        open_storage("postgresql+psycopg://u@127.0.0.1:1/x")
