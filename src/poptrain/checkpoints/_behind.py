"""Checkpoint files written by a background thread while training goes on.

``WriteBehindStore`` wraps a store: ``save`` serialises and hashes the state in the caller's
thread (the state may change as soon as it returns), and hands the bytes to one writer thread,
so the next member trains while the file is written (writing releases the GIL). Nothing may
name a checkpoint before its file exists: the scheduler calls ``flush`` before it records
checkpoints in storage, and a failed write is raised there. Until then the bytes stay in
memory, so a checkpoint read back before its write ends (a donor copied at once) is served
from them, and deleting one waits for its write.

It serves a store whose URIs are the keys it was given (the bundled ones); the sequential
executor wraps the run's store with it while it trains (worker processes and Ray actors commit
through another process, which cannot wait for their writes).
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor

from poptrain.checkpoints._base import CheckpointStore
from poptrain.errors import CheckpointError


class WriteBehindStore(CheckpointStore):
    """``inner``'s files written by one background thread; ``flush`` waits for them."""

    def __init__(self, inner: CheckpointStore) -> None:
        self.inner = inner
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="poptrain-checkpoints")
        self._lock = threading.Lock()
        self._pending: dict[str, tuple[Future[str], bytes]] = {}  # key -> (its write, its bytes)

    def write(self, key: str, data: bytes) -> str:
        future = self._writer.submit(self._write, key, data)
        with self._lock:
            self._pending[key] = (future, data)
        return key

    def _write(self, key: str, data: bytes) -> str:
        uri = self.inner.write(key, data)
        if uri != key:
            raise CheckpointError(
                f"checkpoint store {type(self.inner).__name__} stored {key!r} as {uri!r}; writing behind "
                "needs a store whose URIs are its keys"
            )
        return uri

    def read(self, uri: str) -> bytes:
        with self._lock:
            pending = self._pending.get(uri)
        return pending[1] if pending is not None else self.inner.read(uri)

    def delete(self, uri: str) -> None:
        with self._lock:
            pending = self._pending.pop(uri, None)
        if pending is not None:
            pending[0].exception()  # wait for it (a failed write left nothing to delete)
        self.inner.delete(uri)

    def flush(self) -> None:
        """Wait for every write handed over so far; raise the first that failed (the others
        are waited for too, and forgotten)."""
        with self._lock:
            pending, self._pending = self._pending, {}
        errors = [exc for future, _ in pending.values() if (exc := future.exception()) is not None]
        if errors:
            raise errors[0]

    def close(self) -> None:
        """``flush``, then stop the writer thread (also when the flush raises)."""
        try:
            self.flush()
        finally:
            self._writer.shutdown(wait=True)
