"""Shared fixtures: a throwaway PostgreSQL server (see pg_helpers.py)."""

from __future__ import annotations

import importlib.util

import pytest

from pg_helpers import new_database, postgres_server, unavailable


@pytest.fixture(scope="session")
def postgres_server_url():
    """``postgresql+psycopg://poptrain@127.0.0.1:PORT`` of a server started for this session;
    skipped (failed when ``CI`` is set) where PostgreSQL or psycopg is not installed."""
    if importlib.util.find_spec("psycopg") is None:
        unavailable('psycopg is not installed: pip install "poptrain[postgres]"')
    with postgres_server() as url:
        yield url


@pytest.fixture
def postgres_url(postgres_server_url):
    """The URL of a fresh, empty database on the session's server."""
    return new_database(postgres_server_url)
