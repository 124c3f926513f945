"""The SQL schema's version: migrated by Alembic (``migrations/``), checked on open.

Opening a database at the newest revision costs two small reads. A new, empty SQLite database
gets the newest schema at once (``metadata.create_all`` and the newest revision stamped, as
Alembic's own recipe for a database built from scratch; ``tests/test_storage.py`` checks that
the migrations build exactly that schema), which costs a few milliseconds where running every
migration costs a few hundred. Alembic (and its import) is only loaded to migrate an older
schema, to create one on PostgreSQL, or to tell an unknown revision from an old one.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from sqlalchemy import inspect, select, text
from sqlalchemy.engine import Connection

from poptrain.errors import RunNotFoundError, StorageError
from poptrain.storage import _schema as t
from poptrain.storage._base import SCHEMA_VERSION

HEAD_REVISION = "0007"  # the newest migration in migrations/versions (tests check)
MIGRATIONS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "migrations")
_LOCK_KEY = 74201  # PostgreSQL advisory lock: one process migrates, the others wait and re-read

State = tuple["str | None", "str | None"]
CURRENT: State = (HEAD_REVISION, str(SCHEMA_VERSION))  # the state of a database that needs no migration


def empty_database(where: str) -> RunNotFoundError:
    """The error of opening an empty database without ``create``."""
    return RunNotFoundError(f"storage {where} is an empty database, with no poptrain runs; check the URL")


def alembic_config(connection: Connection | None = None) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", MIGRATIONS)
    config.attributes["connection"] = connection
    return config


def known_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    return {s.revision for s in ScriptDirectory.from_config(alembic_config()).walk_revisions()}


def prepare(conn: Connection, where: str, *, create: bool = True, migrate_new: bool = False) -> None:
    """Bring the database behind ``conn`` (in a transaction) to ``HEAD_REVISION``, or refuse it
    with a ``StorageError``; ``where`` names it in messages (no password). With ``create=False``
    an empty database is a ``RunNotFoundError`` and is left as it is. An empty SQLite database
    gets the newest schema directly (see the module docstring) unless ``migrate_new``, which
    runs every migration instead."""
    state = schema_state(conn, where)
    if state == CURRENT:
        return
    if state == (None, None) and not create:
        raise empty_database(where)
    direct = conn.dialect.name == "sqlite" and state == (None, None) and not migrate_new
    if not direct:
        import alembic.command  # noqa: F401 - imported before the lock below: the import is slow

    # One process creates or migrates; the others wait for it, then read its result.
    if conn.dialect.name == "postgresql":
        conn.execute(text(f"SELECT pg_advisory_xact_lock({_LOCK_KEY})"))
    elif conn.dialect.name == "sqlite" and not getattr(conn.connection.dbapi_connection, "in_transaction", True):
        conn.exec_driver_sql("BEGIN IMMEDIATE")  # the DDL below then commits (or not) as a whole
    state = schema_state(conn, where)
    if state == CURRENT:
        return
    if direct and state == (None, None):
        create_newest(conn)
        return
    _check(state, where)
    from alembic import command

    config = alembic_config(conn)
    revision, version = state
    if revision is None and version is not None:  # made before Alembic managed the schema
        columns = {c["name"] for c in inspect(conn).get_columns(t.members.name)}
        command.stamp(config, "0002" if "failures" in columns else "0001")
    command.upgrade(config, "head")


def create_newest(conn: Connection) -> None:
    """Create the newest schema in the empty database behind ``conn`` (in a transaction): the
    tables of ``_schema``, the ``schema_version`` row and Alembic's revision table at
    ``HEAD_REVISION``, as running every migration would leave them."""
    t.metadata.create_all(conn)
    conn.execute(t.meta.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))
    conn.execute(
        text(
            "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, "
            "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"
        )
    )
    conn.execute(text("INSERT INTO alembic_version (version_num) VALUES (:head)"), {"head": HEAD_REVISION})


def schema_state(conn: Connection, where: str) -> State:
    """``(Alembic revision, poptrain_meta schema_version)``, ``None`` for what is missing;
    ``StorageError`` if the database holds tables but is not poptrain's."""
    tables = set(inspect(conn).get_table_names())
    if not tables:
        return None, None
    if t.meta.name not in tables:
        shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
        raise StorageError(
            f"storage {where} is not a poptrain database (it has tables {shown} but no {t.meta.name}); "
            "use an empty database or a new file"
        )
    version = conn.execute(select(t.meta.c.value).where(t.meta.c.key == "schema_version")).scalar()
    revision = None
    if "alembic_version" in tables:
        revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    return revision, version


def _check(state: State, where: str, known: Callable[[], set[str]] = known_revisions) -> None:
    revision, version = state
    if revision is None and version is None:
        return
    # an older schema version is migrated; a newer one (or an unknown revision) is another poptrain's
    if (
        (revision is not None and revision not in known())
        or version is None
        or not version.isdigit()
        or int(version) > SCHEMA_VERSION
    ):
        raise StorageError(
            f"storage {where} has schema version {version!r} (Alembic revision {revision!r}), "
            f"this poptrain reads version {SCHEMA_VERSION} (revision {HEAD_REVISION!r}); "
            "upgrade poptrain or use another database"
        )
