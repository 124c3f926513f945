"""Alembic environment of poptrain's SQL schema.

``SQLStorage`` runs the migrations itself on its own connection (``config.attributes["connection"]``);
with the ``alembic`` command line, set ``sqlalchemy.url`` in the configuration instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from alembic import context
from sqlalchemy import create_engine

from poptrain.storage._schema import metadata

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

config = context.config


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("set sqlalchemy.url, or open the database with poptrain (it migrates it itself)")
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            _run(conn)
    finally:
        engine.dispose()
