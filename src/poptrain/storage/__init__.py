"""Storage backends behind one narrow contract: in-memory, and SQL (SQLite, PostgreSQL)."""

from __future__ import annotations

from poptrain.storage._base import SCHEMA_VERSION, Storage
from poptrain.storage._memory import InMemoryStorage


def open_storage(url: str | Storage | None, *, default_path: str | None = None, create: bool = True) -> Storage:
    """A storage from a URL: ``None`` -> SQLite at ``default_path``, ``"memory"`` -> in-memory,
    anything else -> a SQLAlchemy URL. A ``Storage`` is returned as it is. ``create=False``
    opens only a database that exists with poptrain's schema, and writes nothing to one that
    does not (``RunNotFoundError``)."""
    if isinstance(url, Storage):
        return url
    if url is None:
        if default_path is None:
            raise ValueError("open_storage(None) needs default_path")
        url = f"sqlite:///{default_path}"
    if url in ("memory", ":memory:"):
        return InMemoryStorage()
    from poptrain.storage._sql import SQLStorage

    return SQLStorage(url, create=create)


__all__ = ["SCHEMA_VERSION", "InMemoryStorage", "Storage", "open_storage"]
