"""SQL storage through SQLAlchemy: SQLite (the embedded default) and PostgreSQL alike."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import Any

from sqlalchemy import JSON, and_, bindparam, create_engine, delete, event, insert, or_, select, update
from sqlalchemy.engine import Connection, Engine, RootTransaction, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, NoSuchModuleError, SQLAlchemyError

from poptrain.errors import RunExistsError, RunNotFoundError, StaleWriteError, StorageError, StrategyError
from poptrain.lineage import NextGeneration, advance, held_by
from poptrain.records import (
    CheckpointRecord,
    Decision,
    GenerationRecord,
    MemberRecord,
    ReadyPoint,
    RunRecord,
    ScoreRecord,
)
from poptrain.space import HParams
from poptrain.storage import _migrate
from poptrain.storage import _schema as t
from poptrain.storage._base import Storage, lost_lease, stale_score

_SQLITE_WAIT_SECONDS = 30  # how long a connection waits for another process's lock


def _sqlite_pragmas(dbapi_connection: Any, _record: Any, *, wal: bool = True) -> None:
    # SQLAlchemy's recipe for pysqlite: the driver begins no transaction itself (it would begin
    # one only before the first write, after the reads that decided it); _sqlite_begin does.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    # The wait first: switching to WAL needs a lock that another process may hold while it
    # creates the schema, and the driver's own default wait is only 5 s.
    cursor.execute(f"PRAGMA busy_timeout={_SQLITE_WAIT_SECONDS * 1000}")
    if wal:  # a database poptrain made is in WAL mode already; an opened one is left in its own mode
        cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_pragmas_as_found(dbapi_connection: Any, record: Any) -> None:
    _sqlite_pragmas(dbapi_connection, record, wal=False)


_READ_ONLY = "poptrain_read_only"  # execution option of a connection whose transaction only reads


def _sqlite_begin(conn: Connection) -> None:
    """Begin each SQLite transaction: ``BEGIN IMMEDIATE`` takes the write lock first, so the reads
    that decide a write and the write are one snapshot no other writer changes in between; a
    transaction that only reads begins deferred (and takes no lock that blocks writers)."""
    conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(_READ_ONLY) else "BEGIN IMMEDIATE")


# Statements of the per-step and per-ready-point path, built once (building one costs more than
# SQLite takes to run it); values are bound when executed.
_M = t.members.c
_READY_COLUMNS = (
    "step",
    "score",
    "last_ready_step",
    "ready_score",
    "checkpoint_id",
    "resume_checkpoint_id",
    "ready_hparams",
    "hparams",
    "generation_id",
    "generation",
    "failures",
)
_HELD = t.checkpoints.alias("held")  # the checkpoint a member holds (resumes from)
_L = t.leases.c
# The members of some slots, with the checkpoint each holds and its lease, locked for the rest of
# the transaction on PostgreSQL (SQLite's BEGIN IMMEDIATE locks the whole database), in slot order.
_MEMBERS_IN_SLOTS = (
    select(t.members, *[c.label(f"held_{c.name}") for c in _HELD.c], _L.expires_at.label("lease_expires_at"))
    .select_from(
        t.members.outerjoin(_HELD, _HELD.c.id == _M.resume_checkpoint_id).outerjoin(
            t.leases, and_(_L.run_id == _M.run_id, _L.slot == _M.slot)
        )
    )
    .where(_M.run_id == bindparam("run_id"), _M.slot.in_(bindparam("slots", expanding=True)))
    .order_by(_M.slot)
    .with_for_update(of=t.members)
)
# the most values one statement's IN list binds (SQLite allows 32,766 bound values by default,
# PostgreSQL 65,535): longer lists go in pages
_VALUES_PER_STATEMENT = 10_000


def _pages(values: Sequence[int]) -> list[Sequence[int]]:
    """``values`` in runs of at most ``_VALUES_PER_STATEMENT``."""
    return [values[i : i + _VALUES_PER_STATEMENT] for i in range(0, len(values), _VALUES_PER_STATEMENT)]


_LOCK_SLOTS = (  # the member rows alone, locked before _MEMBERS_IN_SLOTS reads them with what they hold
    select(_M.id)
    .where(_M.run_id == bindparam("run_id"), _M.slot.in_(bindparam("slots", expanding=True)))
    .order_by(_M.slot)
    .with_for_update()
)
_GENERATIONS_OF_SLOT = select(t.generations).where(
    t.generations.c.run_id == bindparam("run_id"), t.generations.c.slot == bindparam("slot")
)
_GENERATIONS_BY_ID = select(t.generations).where(t.generations.c.id.in_(bindparam("ids", expanding=True)))
_MEMBER_SCORED = (
    update(t.members)
    .where(_M.run_id == bindparam("p_run_id"), _M.slot == bindparam("p_slot"))
    .values(step=bindparam("p_step"), score=bindparam("p_score"))
)
_MEMBER_READY = (
    update(t.members)
    .where(_M.id == bindparam("p_id"))
    .values({c: bindparam(f"p_{c}", type_=_M[c].type) for c in _READY_COLUMNS})
)
# The same on SQLite through the driver's executemany (see ``_SQLITE_INSERT_SCORES``), its JSON
# columns as the text SQLAlchemy's JSON type writes.
_SQLITE_MEMBER_READY = "UPDATE members SET " + ", ".join(f"{c} = ?" for c in _READY_COLUMNS) + " WHERE id = ?"
_READY_JSON = frozenset(c for c in _READY_COLUMNS if isinstance(_M[c].type, JSON))
_REPLACED_COLUMNS = (
    "state",
    "hparams",
    "generation_id",
    "generation",
    "resume_checkpoint_id",
    "ready_score",
    "ready_hparams",
    "step",
    "last_ready_step",
    "score",
)
_INSERT_SCORES = insert(t.scores)
# On SQLite the scores go to the driver's executemany as tuples, their metrics as the JSON text
# SQLAlchemy's JSON type writes (``json.dumps``; read back by that type): the same rows without a
# bind step per row and column, about half the time of a round's 6,000 scores.
_SCORE_COLUMNS = ("run_id", "slot", "generation_id", "step", "value", "metrics", "wall_time")
_SQLITE_INSERT_SCORES = (
    f"INSERT INTO scores ({', '.join(_SCORE_COLUMNS)}) VALUES ({', '.join('?' * len(_SCORE_COLUMNS))})"
)
# A round's checkpoints in one statement, their ids in the order given (SQLAlchemy's
# "insertmanyvalues": a few INSERT ... RETURNING statements, not one round trip a row).
_INSERT_CHECKPOINTS = insert(t.checkpoints).returning(t.checkpoints.c.id, sort_by_parameter_order=True)
_SLOTS_OF_RUN = select(_M.slot).where(_M.run_id == bindparam("run_id"), _M.slot.in_(bindparam("slots", expanding=True)))


def _missing_slot(conn: Connection, run_id: int, slots: Iterable[int]) -> int | None:
    """The lowest of ``slots`` with no member in run ``run_id``, or ``None``."""
    wanted = sorted(set(slots))
    found = {
        s for page in _pages(wanted) for s in conn.execute(_SLOTS_OF_RUN, {"run_id": run_id, "slots": page}).scalars()
    }
    return next((slot for slot in wanted if slot not in found), None)


_INSERT_GENERATIONS = insert(t.generations).returning(t.generations.c.id, sort_by_parameter_order=True)


def _generation_row(run_id: int, slot: int, new: NextGeneration, now: float) -> dict[str, Any]:
    """The ``generations`` row of ``new``, member ``slot``'s next generation."""
    return {
        "run_id": run_id,
        "slot": slot,
        "number": new.number,
        "start_step": new.start_step,
        "hparams": dict(new.hparams),
        "kind": new.kind,
        "parent_id": new.parent_id,
        "donor": new.donor,
        "loaded_checkpoint_id": new.loaded_checkpoint_id,
        "operations": dict(new.operations),
        "created_at": now,
    }


def _apply_generation(
    member: dict[str, Any], new: NextGeneration, gen_id: int, loaded: CheckpointRecord | None
) -> None:
    """Apply generation ``gen_id`` (``new``) to the ``member`` row dict (not written here)."""
    member.update(
        hparams=dict(new.hparams),
        generation_id=gen_id,
        generation=new.number,
        resume_checkpoint_id=new.resume_checkpoint_id,
        ready_score=new.ready_score,
        ready_hparams=None if new.ready_hparams is None else dict(new.ready_hparams),
    )
    if loaded is not None:
        member["_held"] = loaded
        if new.start_step != member["step"]:
            # one clock: the member continues from the copied model's step and trains those
            # steps again as a new generation; the old generation's scores stay (another
            # member's model may descend from them)
            member.update(step=new.start_step, last_ready_step=new.start_step, score=loaded.score)


def check_sqlite_file(path: str, *, create: bool) -> None:
    """Refuse, before any connection that could write to it, a file at ``path`` that is not a
    poptrain SQLite database: ``StorageError`` for another program's database or a damaged
    file; with ``create=False`` also ``RunNotFoundError`` for a missing file or an empty one."""
    import sqlite3
    from urllib.parse import quote

    def not_found(what: str) -> RunNotFoundError:
        return RunNotFoundError(f"{what}, so it holds no poptrain runs; check the run name and the runs folder")

    if not os.path.isfile(path):
        if create:
            return
        raise not_found(f"no database at {path}")
    with open(path, "rb") as handle:
        header = handle.read(100)
    if not header:
        if create:
            return
        raise not_found(f"{path} is an empty file")
    if len(header) < 100 or not header.startswith(b"SQLite format 3\x00"):
        raise StorageError(
            f"{path} is not a SQLite database (damaged, or another kind of file); move it away or check the path"
        )
    if header[18] == 2:  # WAL mode (poptrain's): the engine reads the schema before it writes anything
        return
    # A rollback-journal database is not one poptrain made: look at it read-only (this mode
    # leaves no side files), so that another program's database is never switched to WAL.
    try:
        connection = sqlite3.connect(f"file:{quote(path)}?mode=ro", uri=True, timeout=_SQLITE_WAIT_SECONDS)
        try:
            tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            connection.close()
    except sqlite3.Error as exc:
        raise StorageError(f"{path} cannot be read as a SQLite database ({exc}); move the damaged file away") from None
    if tables and t.meta.name not in tables:
        shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
        raise StorageError(f"{path} is not a poptrain database (it has tables {shown}); use a new file")
    if not tables and not create:
        raise not_found(f"{path} is an empty database")


def display_url(url: str) -> str:
    """``url`` for messages: its password hidden ("the storage" if it cannot be read as a URL)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "the storage"


def _first_line(exc: BaseException) -> str:
    return (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__])[0]


def _first_repeat(keys: Iterable[tuple[int, int]]) -> tuple[int, int] | None:
    """The first key that appears a second time in ``keys``, if any."""
    seen: set[tuple[int, int]] = set()
    for key in keys:
        if key in seen:
            return key
        seen.add(key)
    return None


def _new_id(result: Any) -> int:
    """The primary key of the row an ``INSERT`` result made."""
    return int(result.inserted_primary_key[0])


_FLOAT = {float}


def _json_metrics(metrics: Mapping[str, Any]) -> Mapping[str, float | None]:
    """A score's metrics as stored: floats, a non-finite one (JSON has no NaN/inf) or ``None`` as
    ``None``. Metrics that are all finite floats already (every score a vectorized step records)
    are stored as they are, without a copy."""
    values = metrics.values()
    if set(map(type, values)) <= _FLOAT and all(map(math.isfinite, values)):
        return metrics
    isfinite = math.isfinite
    return {k: float(v) if v is not None and isfinite(v) else None for k, v in metrics.items()}


def _nan_to_none(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


class SQLStorage(Storage):
    """Storage in a SQL database named by a SQLAlchemy URL (``sqlite:///runs/x/poptrain.db``)."""

    def __init__(self, url: str, *, create: bool = True) -> None:
        """``create=False`` opens only a database that holds poptrain's schema already: a
        missing file or an empty database is a ``RunNotFoundError`` and nothing is written."""
        self.url = url
        try:
            parsed = make_url(url)
        except ArgumentError:
            raise StorageError(
                f"cannot read storage URL {url!r}; use e.g. sqlite:///runs/NAME/poptrain.db "
                "or postgresql+psycopg://user@host/db"
            ) from None
        if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
            check_sqlite_file(os.path.abspath(parsed.database), create=create)
        if create and parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
            folder = os.path.dirname(os.path.abspath(parsed.database))
            try:
                os.makedirs(folder, exist_ok=True)
            except OSError as exc:
                raise StorageError(
                    f"cannot create the folder {folder!r} for the SQLite database: {exc.strerror}"
                ) from exc
        try:
            connect_args = {"timeout": _SQLITE_WAIT_SECONDS} if parsed.get_backend_name() == "sqlite" else {}
            self.engine: Engine = create_engine(url, future=True, connect_args=connect_args)
        except (NoSuchModuleError, ImportError) as exc:
            if parsed.get_backend_name() == "postgres":
                hint = "write postgresql+psycopg://user@host/db (SQLAlchemy does not know 'postgres://')"
            elif parsed.get_backend_name() == "postgresql":
                hint = 'install it with pip install "poptrain[postgres]" and write postgresql+psycopg://user@host/db'
            else:
                hint = "use sqlite:///PATH or postgresql+psycopg://user@host/db, or install the driver"
            raise StorageError(f"no database driver for {parsed.drivername!r} ({_first_line(exc)}); {hint}") from None
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas if create else _sqlite_pragmas_as_found)
            event.listen(self.engine, "begin", _sqlite_begin)
        self._prepare(create)

    def _prepare(self, create: bool) -> None:
        """Check the schema in a transaction that only reads; create or migrate it (in a write
        transaction) only when it is not the newest."""
        where = self._safe_url()
        try:
            with self.engine.connect() as conn:
                conn = conn.execution_options(**{_READ_ONLY: True})
                with conn.begin():
                    state = _migrate.schema_state(conn, where)
            if state == _migrate.CURRENT:
                return
            if state == (None, None) and not create:
                raise _migrate.empty_database(where)
            with self.engine.begin() as conn:
                _migrate.prepare(conn, where, create=create)
        except SQLAlchemyError as exc:
            hint = (
                "check that the path names a database file"
                if self.engine.dialect.name == "sqlite"
                else "check the URL and that the database server is running and reachable"
            )
            raise StorageError(f"cannot open storage {where}: {_first_line(exc)}; {hint}") from None

    def _safe_url(self) -> str:
        return display_url(self.url)

    def _begin(self) -> _Transaction:
        """A transaction that writes (or whose reads decide a write)."""
        return _Transaction(self, write=True)

    def _read(self) -> _Transaction:
        """A transaction that only reads."""
        return _Transaction(self, write=False)

    # --- runs -----------------------------------------------------------------
    @staticmethod
    def _run(row: Any) -> RunRecord:
        return RunRecord(row.id, row.name, dict(row.spec), row.seed, row.state, row.created_at, row.reason)

    def create_run(
        self, name: str, *, spec: dict[str, Any], seed: int, initial_hparams: Sequence[HParams] = ()
    ) -> RunRecord:
        try:
            with self._begin() as conn:
                result = conn.execute(
                    insert(t.runs).values(name=name, spec=spec, seed=seed, state="created", created_at=time.time())
                )
                run_id = _new_id(result)
                self._add_members(conn, run_id, initial_hparams)
                return self._run(conn.execute(select(t.runs).where(t.runs.c.id == run_id)).one())
        except IntegrityError:
            raise RunExistsError(f"a run named {name!r} exists already; pick another name or resume it") from None

    def get_run(self, name: str) -> RunRecord:
        with self._read() as conn:
            row = conn.execute(select(t.runs).where(t.runs.c.name == name)).first()
        if row is None:
            raise RunNotFoundError(f"no run named {name!r} in {self._safe_url()}")
        return self._run(row)

    def list_runs(self) -> list[RunRecord]:
        with self._read() as conn:
            return [self._run(r) for r in conn.execute(select(t.runs).order_by(t.runs.c.id))]

    def set_run_state(self, run_id: int, state: str, reason: str | None = None) -> None:
        with self._begin() as conn:
            changed = conn.execute(update(t.runs).where(t.runs.c.id == run_id).values(state=state, reason=reason))
            if changed.rowcount == 0:
                raise KeyError(f"no run with id {run_id}")

    def set_run_steps(self, run_id: int, steps: int) -> None:
        with self._begin() as conn:
            row = conn.execute(select(t.runs.c.spec).where(t.runs.c.id == run_id).with_for_update()).first()
            if row is None:
                raise KeyError(f"no run with id {run_id}")
            spec = dict(row.spec)
            spec["meta"] = {**dict(spec.get("meta") or {}), "steps": int(steps)}
            conn.execute(update(t.runs).where(t.runs.c.id == run_id).values(spec=spec))

    def delete_run(self, run_id: int) -> None:
        with self._begin() as conn:
            for table in (t.scores, t.checkpoints, t.leases, t.members, t.generations):
                conn.execute(delete(table).where(table.c.run_id == run_id))
            if conn.execute(delete(t.runs).where(t.runs.c.id == run_id)).rowcount == 0:
                raise KeyError(f"no run with id {run_id}")

    @staticmethod
    def _run_name(conn: Connection, run_id: int) -> str:
        """The run's name, for messages (``KeyError`` if there is no such run)."""
        name = conn.execute(select(t.runs.c.name).where(t.runs.c.id == run_id)).scalar()
        if name is None:
            raise KeyError(f"no run with id {run_id}")
        return str(name)

    # --- members --------------------------------------------------------------
    @staticmethod
    def _member(row: Any, generation_number: int | None = None) -> MemberRecord:
        return MemberRecord(
            row.id,
            row.slot,
            row.state,
            row.step,
            dict(row.hparams),
            row.generation_id,
            row.generation if generation_number is None else generation_number,
            row.last_ready_step,
            row.score,
            row.ready_score,
            row.checkpoint_id,
            row.resume_checkpoint_id,
            row.error,
            None if row.ready_hparams is None else dict(row.ready_hparams),
            row.failures or 0,
            row.lease,
        )

    def add_members(self, run_id: int, initial_hparams: Sequence[HParams]) -> list[MemberRecord]:
        with self._begin() as conn:
            if conn.execute(select(t.runs.c.id).where(t.runs.c.id == run_id)).first() is None:
                raise KeyError(f"no run with id {run_id}")
            self._add_members(conn, run_id, initial_hparams)
        return self.get_members(run_id)

    @staticmethod
    def _add_members(conn: Connection, run_id: int, initial_hparams: Sequence[HParams]) -> None:
        """Members after the run's last slot, each with its generation 0: two statements for all."""
        if not initial_hparams:
            return
        start = len(conn.execute(select(t.members.c.id).where(t.members.c.run_id == run_id)).all())
        now = time.time()
        slots = range(start, start + len(initial_hparams))
        initial = [
            {
                "run_id": run_id,
                "slot": slot,
                "number": 0,
                "start_step": 0,
                "hparams": dict(hparams),
                "kind": "init",
                "parent_id": None,
                "donor": None,
                "loaded_checkpoint_id": None,
                "operations": {},
                "created_at": now,
            }
            for slot, hparams in zip(slots, initial_hparams, strict=True)
        ]
        gen_ids = list(conn.execute(_INSERT_GENERATIONS, initial).scalars())
        conn.execute(
            insert(t.members),
            [
                {
                    "run_id": run_id,
                    "slot": row["slot"],
                    "state": "pending",
                    "step": 0,
                    "hparams": row["hparams"],
                    "generation_id": gen_id,
                    "generation": 0,
                    "last_ready_step": 0,
                }
                for row, gen_id in zip(initial, gen_ids, strict=True)
            ],
        )

    def get_members(self, run_id: int) -> list[MemberRecord]:
        with self._read() as conn:
            if conn.execute(select(t.runs.c.id).where(t.runs.c.id == run_id)).first() is None:
                raise KeyError(f"no run with id {run_id}")
            rows = conn.execute(select(t.members).where(t.members.c.run_id == run_id).order_by(t.members.c.slot))
            return [self._member(r) for r in rows]

    def _lock_members(self, conn: Connection, run_id: int, slots: Iterable[int]) -> dict[int, dict[str, Any]]:
        """The members in ``slots`` (those that exist) as dicts, locked for the transaction, each
        with ``_held`` (the ``CheckpointRecord`` it holds, or ``None``) and its lease's expiry."""
        pages = [{"run_id": run_id, "slots": page} for page in _pages(sorted(set(slots)))]
        # Lock first, then read. On PostgreSQL a SELECT ... FOR UPDATE that waited for another
        # writer returns the locked rows' new versions joined with rows of its older snapshot (a
        # donor's new resume_checkpoint_id with its old held checkpoint, or none); a statement
        # started after the lock is granted sees everything that writer committed.
        if conn.dialect.name != "sqlite":  # SQLite's BEGIN IMMEDIATE has locked the whole database
            for params in pages:
                conn.execute(_LOCK_SLOTS, params).all()
        members = {}
        for row in (row for params in pages for row in conn.execute(_MEMBERS_IN_SLOTS, params)):
            values = dict(row._mapping)
            held = {name[len("held_") :]: values.pop(name) for name in list(values) if name.startswith("held_")}
            values["_held"] = None if held["id"] is None else self._checkpoint(_Row(held))
            members[values["slot"]] = values
        return members

    def _check_lease(
        self, conn: Connection, run_id: int, members: dict[int, dict[str, Any]], slots: Iterable[int], lease: int | None
    ) -> None:
        """``StaleWriteError`` unless each member in ``slots`` (rows from ``_lock_members``) is
        leased with token ``lease``; ``KeyError`` for a slot with no member."""
        if lease is None:
            return
        now = time.time()
        for slot in sorted(set(slots)):
            if slot not in members:
                raise KeyError(f"no member in slot {slot} of run {run_id}")
            row = members[slot]
            expires = row["lease_expires_at"]
            if row["lease"] != lease or expires is None or expires <= now:
                raise StaleWriteError(lost_lease(self._run_name(conn, run_id), slot, lease))

    def set_member_state(self, run_id: int, slot: int, state: str, error: str | None = None) -> None:
        self.set_members_state(run_id, [slot], state, error)

    def set_members_state(self, run_id: int, slots: Sequence[int], state: str, error: str | None = None) -> None:
        wanted = sorted(set(slots))
        if not wanted:
            return
        pages = _pages(wanted)
        values = {"state": state} if error is None else {"state": state, "error": error}
        with self._begin() as conn:
            if conn.dialect.name != "sqlite":  # rows locked in slot order, as every write locks them
                for page in pages:
                    conn.execute(_LOCK_SLOTS, {"run_id": run_id, "slots": page}).all()
            changed = 0
            for page in pages:
                changed += conn.execute(
                    update(t.members).where(_M.run_id == run_id, _M.slot.in_(page)).values(values)
                ).rowcount
            missing = _missing_slot(conn, run_id, wanted) if changed != len(wanted) else None
            if missing is not None:  # raised inside the transaction: nothing is changed
                raise KeyError(f"no member in slot {missing} of run {run_id}")

    def rewind_member(self, run_id: int, slot: int, *, lease: int | None = None) -> MemberRecord:
        with self._begin() as conn:
            return self._rewind(conn, run_id, slot, {}, lease=lease)

    def record_failure(self, run_id: int, slot: int, error: str, *, lease: int | None = None) -> MemberRecord:
        with self._begin() as conn:
            return self._rewind(
                conn, run_id, slot, {"state": "failed", "error": error}, count_failure=True, lease=lease
            )

    def _rewind(
        self,
        conn: Connection,
        run_id: int,
        slot: int,
        changes: dict[str, Any],
        *,
        count_failure: bool = False,
        lease: int | None = None,
    ) -> MemberRecord:
        """Delete a member's scores past its newest ready point, set its step and score back
        to that point and apply ``changes`` (plus one more failure with ``count_failure``)."""
        members = self._lock_members(conn, run_id, [slot])
        if slot not in members:
            raise KeyError(f"no member in slot {slot} of run {run_id}")
        self._check_lease(conn, run_id, members, [slot], lease)
        row = members[slot]
        keep = row["last_ready_step"]
        conn.execute(  # the current generation's: an earlier one's steps past ``keep`` are another model's
            delete(t.scores).where(
                t.scores.c.run_id == run_id,
                t.scores.c.generation_id == row["generation_id"],
                t.scores.c.step > keep,
            )
        )
        update_values = {"step": keep, "score": row["ready_score"] if keep > 0 else None, **changes}
        if count_failure:
            update_values["failures"] = (row["failures"] or 0) + 1
        conn.execute(update(t.members).where(_M.id == row["id"]).values(update_values))
        return self._member(_Row({**row, **update_values}))

    def record_replacement(self, run_id: int, decision: Decision) -> MemberRecord:
        if not decision.copies or decision.donor is None:
            raise StrategyError(f"a replacement of member {decision.slot} must copy a donor (an exploit decision)")
        with self._begin() as conn:
            rows = self._lock_members(conn, run_id, [decision.slot, decision.donor])
            if decision.slot not in rows:
                raise KeyError(f"no member in slot {decision.slot} of run {run_id}")
            member = rows[decision.slot]
            self._decide_all(conn, run_id, [(decision, member, member["step"])], rows, time.time(), {})
            member["state"] = "pending"
            conn.execute(
                update(t.members).where(_M.id == member["id"]).values({k: member[k] for k in _REPLACED_COLUMNS})
            )
            return self._member(_Row(member))

    def _decide_all(
        self,
        conn: Connection,
        run_id: int,
        decided: Sequence[tuple[Decision, dict[str, Any], int]],
        donors: dict[int, dict[str, Any]],
        now: float,
        cache: dict[int, list[GenerationRecord]],
    ) -> None:
        """Insert the generations the decisions start (``lineage.advance``), one statement for
        all, and apply each to its member row dict (not written here). ``decided``: ``(decision,
        member row, start step)`` decided against one snapshot of ``donors`` (rows from
        ``_lock_members``, not changed by these decisions); ``cache``: each slot's generations
        as read in this transaction (many members of a round copy the same few donors)."""
        if not decided:
            return
        # the generations that trained the donors' checkpoints, read in one statement (many
        # members of a round copy the same few donors), and each donor's record made once
        held = [donors[d.donor]["_held"] for d, _, _ in decided if d.copies and d.donor in donors]
        wanted = sorted({c.generation_id for c in held if c is not None and c.generation_id is not None})
        known = {
            r.id: self._generation(r) for ids in _pages(wanted) for r in conn.execute(_GENERATIONS_BY_ID, {"ids": ids})
        }
        records: dict[int, MemberRecord] = {}
        planned = [
            (
                decision,
                member,
                *self._next_generation(conn, run_id, decision, member, start, donors, cache, known, records),
            )
            for decision, member, start in decided
        ]
        rows = [_generation_row(run_id, decision.slot, new, now) for decision, _, new, _ in planned]
        ids = list(conn.execute(_INSERT_GENERATIONS, rows).scalars())
        for (decision, member, new, loaded), gen_id in zip(planned, ids, strict=True):
            cache.pop(decision.slot, None)
            _apply_generation(member, new, gen_id, loaded)

    def _next_generation(
        self,
        conn: Connection,
        run_id: int,
        decision: Decision,
        member: dict[str, Any],
        start_step: int,
        donors: dict[int, dict[str, Any]],
        cache: dict[int, list[GenerationRecord]],
        known: dict[int, GenerationRecord] | None = None,
        records: dict[int, MemberRecord] | None = None,
    ) -> tuple[NextGeneration, CheckpointRecord | None]:
        """The generation ``decision`` starts for ``member`` (``lineage.advance``) and the donor's
        checkpoint it loads (``None`` for an explore), reading the generations it needs.
        ``known``: generations already read, by id; ``records``: donors' records already made,
        by slot (for donor rows that do not change)."""
        donor: MemberRecord | None = None
        loaded: CheckpointRecord | None = None
        generations: list[GenerationRecord] = []
        if decision.copies:
            if decision.donor not in donors:
                raise KeyError(f"no member in slot {decision.donor} of run {run_id}")
            donor_row = donors[decision.donor]
            donor = records.get(decision.donor) if records is not None else None
            if donor is None:
                donor = self._member(_Row(donor_row))
                if records is not None:
                    records[decision.donor] = donor
            held_by(donor, decision.donor, decision.slot)  # StrategyError if it holds none
            loaded = donor_row["_held"]
            if loaded is not None and known and loaded.generation_id in known:
                generations = [known[loaded.generation_id]]  # the one that trained it, recorded with it
            elif loaded is not None:
                if loaded.slot not in cache:
                    cache[loaded.slot] = [
                        self._generation(r)
                        for r in conn.execute(_GENERATIONS_OF_SLOT, {"run_id": run_id, "slot": loaded.slot})
                    ]
                generations = cache[loaded.slot]
        new = advance(
            decision, self._member(_Row(member)), start_step, donor=donor, loaded=loaded, generations=generations
        )
        return new, loaded

    # --- scores and ready points ------------------------------------------------
    def record_scores(self, run_id: int, scores: Sequence[ScoreRecord], *, lease: int | None = None) -> None:
        if not scores:
            return
        slots = {s.slot for s in scores}
        with self._stale_scores(run_id, scores), self._begin() as conn:
            known = None
            if lease is not None:
                members = self._lock_members(conn, run_id, slots)
                self._check_lease(conn, run_id, members, slots, lease)
                known = set(members)
            self._insert_scores(conn, run_id, scores, known=known)

    @staticmethod
    def _insert_scores(
        conn: Connection,
        run_id: int,
        scores: Sequence[ScoreRecord],
        *,
        known: set[int] | None = None,
        written_after: Iterable[int] = (),
    ) -> dict[int, ScoreRecord]:
        """Insert ``scores`` and set each member's step and score to its newest; return those.
        ``known``: the slots known to hold a member (read here when not given); ``written_after``:
        members whose rows the caller writes whole afterwards (not updated here).
        One statement for the scores and one for the members: a flush of a large population is
        a handful of statements, not one per member."""
        if not scores:
            return {}
        newest: dict[int, ScoreRecord] = {}
        for s in scores:
            newest[s.slot] = s
        missing = _missing_slot(conn, run_id, newest) if known is None else min(set(newest) - known, default=None)
        if missing is not None:
            raise KeyError(f"no member in slot {missing} of run {run_id}")
        isnan = math.isnan
        rows = [
            (
                run_id,
                s.slot,
                s.generation_id,
                s.step,
                None if isnan(s.value) else s.value,
                _json_metrics(s.metrics),
                s.wall_time,
            )
            for s in scores
        ]
        if conn.dialect.name == "sqlite":
            dumps = json.dumps
            conn.exec_driver_sql(_SQLITE_INSERT_SCORES, [(*row[:5], dumps(row[5]), row[6]) for row in rows])
        else:
            conn.execute(_INSERT_SCORES, [dict(zip(_SCORE_COLUMNS, row, strict=True)) for row in rows])
        skipped = set(written_after)
        updates = [  # in slot order, as rows are locked everywhere (no deadlock)
            {
                "p_run_id": run_id,
                "p_slot": slot,
                "p_step": newest[slot].step,
                "p_score": _nan_to_none(newest[slot].value),
            }
            for slot in sorted(newest)
            if slot not in skipped
        ]
        if updates:
            conn.execute(_MEMBER_SCORED, updates)
        return newest

    @contextmanager
    def _stale_scores(self, run_id: int, scores: Sequence[ScoreRecord]) -> Iterator[None]:
        """Turn the database's refusal of a second score for a member's step (the unique
        constraint) into ``StaleWriteError``, once the failed transaction is rolled back."""
        try:
            yield
        except IntegrityError as exc:
            keys = [(s.generation_id, s.step) for s in scores]
            seen = set(keys)
            twice = _first_repeat(keys)
            with self._read() as conn:
                name = self._run_name(conn, run_id)
                if twice is None and seen:
                    sc = t.scores.c
                    found = conn.execute(
                        select(sc.generation_id, sc.step).where(
                            sc.run_id == run_id,
                            sc.generation_id.in_(sorted({k[0] for k in seen})),
                            sc.step.in_(sorted({k[1] for k in seen})),
                        )
                    )
                    existing = {(r.generation_id, r.step) for r in found}
                    twice = next((k for k in keys if k in existing), None)
            if twice is None:
                raise StorageError(f"storage {self._safe_url()} refused the write: {_first_line(exc)}") from None
            slot = next(s.slot for s in scores if (s.generation_id, s.step) == twice)
            raise StaleWriteError(stale_score(name, slot, twice[1])) from None

    def record_ready(
        self,
        run_id: int,
        points: Sequence[ReadyPoint],
        scores: Sequence[ScoreRecord] = (),
        *,
        in_turn: bool = False,
        lease: int | None = None,
    ) -> list[MemberRecord]:
        written = {p.slot for p in points} | {s.slot for s in scores}
        donor_slots = {p.decision.donor for p in points if p.decision is not None and p.decision.donor is not None}
        with self._stale_scores(run_id, scores), self._begin() as conn:
            members = self._lock_members(conn, run_id, written | donor_slots)
            self._check_lease(conn, run_id, members, written, lease)
            ready_slots = {p.slot for p in points}
            inserted = self._insert_scores(conn, run_id, scores, known=set(members), written_after=ready_slots)
            for slot, s in inserted.items():
                members[slot].update(step=s.step, score=_nan_to_none(s.value))
            now = time.time()
            missing = sorted(ready_slots - set(members))
            if missing:
                raise KeyError(f"no member in slot {missing[0]} of run {run_id}")
            new_checkpoints = [
                {
                    "run_id": run_id,
                    "slot": p.slot,
                    "step": p.step,
                    "uri": p.checkpoint.uri,
                    "sha256": p.checkpoint.sha256,
                    "size_bytes": p.checkpoint.size_bytes,
                    "score": _nan_to_none(p.score),
                    "generation_id": members[p.slot]["generation_id"],  # the generation that trained it
                }
                for p in points
            ]
            # every checkpoint row in one statement, ids in the order of points (as one insert a point gave)
            checkpoint_ids = list(conn.execute(_INSERT_CHECKPOINTS, new_checkpoints).scalars()) if points else []
            generations_cache: dict[int, list[GenerationRecord]] = {}

            def member(slot: int) -> dict[str, Any]:
                if slot not in members:
                    raise KeyError(f"no member in slot {slot} of run {run_id}")
                return members[slot]

            def checkpoint(index: int, p: ReadyPoint) -> None:
                row = member(p.slot)
                values, ckpt_id = new_checkpoints[index], checkpoint_ids[index]
                row.update(
                    step=max(row["step"], p.step),
                    last_ready_step=p.step,
                    ready_score=_nan_to_none(p.score),
                    checkpoint_id=ckpt_id,
                    resume_checkpoint_id=ckpt_id,
                    ready_hparams=dict(row["hparams"]),
                    failures=0,
                    _held=self._checkpoint(_Row({**values, "id": ckpt_id, "deleted": False})),
                )

            if in_turn:  # each decision sees those before it
                for index, p in enumerate(points):
                    checkpoint(index, p)
                    if p.decision is not None:
                        self._decide_all(
                            conn, run_id, [(p.decision, member(p.slot), p.step)], members, now, generations_cache
                        )
            else:
                for index, p in enumerate(points):
                    checkpoint(index, p)
                snapshot = {slot: dict(row) for slot, row in members.items()}  # decisions see the checkpoints only
                decided = [(p.decision, member(p.slot), p.step) for p in points if p.decision is not None]
                self._decide_all(conn, run_id, decided, snapshot, now, generations_cache)
            if ready_slots and conn.dialect.name == "sqlite":  # every ready member's row in one statement
                dumps = json.dumps
                conn.exec_driver_sql(
                    _SQLITE_MEMBER_READY,
                    [
                        (
                            *(dumps(row[c]) if c in _READY_JSON else row[c] for c in _READY_COLUMNS),
                            row["id"],
                        )
                        for row in (members[slot] for slot in sorted(ready_slots))
                    ],
                )
            elif ready_slots:
                conn.execute(
                    _MEMBER_READY,
                    [
                        {"p_id": members[slot]["id"], **{f"p_{c}": members[slot][c] for c in _READY_COLUMNS}}
                        for slot in sorted(ready_slots)
                    ],
                )
            return [self._member(_Row(members[p.slot])) for p in points]

    # --- leases -------------------------------------------------------------------
    def acquire_member(
        self, run_id: int, worker: str, *, total_steps: int, lease_seconds: float
    ) -> MemberRecord | None:
        with self._begin() as conn:
            # every member of the run locked (in slot order), so acquisitions happen one at a time
            rows = conn.execute(select(t.members).where(_M.run_id == run_id).order_by(_M.slot).with_for_update()).all()
            held = {r.slot: r for r in conn.execute(select(t.leases).where(_L.run_id == run_id))}
            now = time.time()
            for row in sorted(rows, key=lambda r: (r.last_ready_step, r.slot)):
                if (row.state == "finished" and row.step >= total_steps) or row.state == "retired":
                    continue
                lease = held.get(row.slot)
                if lease is not None and lease.expires_at > now and lease.worker != worker:
                    continue
                values = {"worker": worker, "expires_at": now + lease_seconds}
                if lease is None:
                    conn.execute(insert(t.leases).values(run_id=run_id, slot=row.slot, **values))
                elif (
                    conn.execute(
                        update(t.leases)
                        .where(_L.id == lease.id, or_(_L.expires_at <= now, _L.worker == worker))
                        .values(values)
                    ).rowcount
                    != 1
                ):
                    continue  # its worker renewed it meanwhile
                token = (row.lease or 0) + 1
                conn.execute(update(t.members).where(_M.id == row.id).values(lease=token))
                return self._member(_Row({**row._mapping, "lease": token}))
        return None

    def renew_lease(self, run_id: int, slot: int, worker: str, lease_seconds: float) -> bool:
        with self._begin() as conn:
            result = conn.execute(
                update(t.leases)
                .where(_L.run_id == run_id, _L.slot == slot, _L.worker == worker)
                .values(expires_at=time.time() + lease_seconds)
            )
            return result.rowcount == 1

    def release_member(self, run_id: int, slot: int, worker: str) -> None:
        with self._begin() as conn:
            conn.execute(delete(t.leases).where(_L.run_id == run_id, _L.slot == slot, _L.worker == worker))

    def mark_checkpoints_deleted(self, run_id: int, checkpoint_ids: Sequence[int]) -> None:
        if not checkpoint_ids:
            return
        ckpts = t.checkpoints.c
        wanted = sorted(set(checkpoint_ids))
        with self._begin() as conn:
            changed = sum(
                conn.execute(
                    update(t.checkpoints).where(ckpts.run_id == run_id, ckpts.id.in_(page)).values(deleted=True)
                ).rowcount
                for page in _pages(wanted)
            )
            if changed != len(wanted):
                raise KeyError(f"some of checkpoints {sorted(checkpoint_ids)} are not in run {run_id}")

    # --- reads ------------------------------------------------------------------
    @staticmethod
    def _generation(r: Any) -> GenerationRecord:
        return GenerationRecord(
            r.id,
            r.slot,
            r.number,
            r.start_step,
            dict(r.hparams),
            r.kind,
            r.parent_id,
            r.donor,
            r.loaded_checkpoint_id,
            dict(r.operations),
            r.created_at,
        )

    def get_generations(self, run_id: int) -> list[GenerationRecord]:
        with self._read() as conn:
            rows = conn.execute(
                select(t.generations).where(t.generations.c.run_id == run_id).order_by(t.generations.c.id)
            )
            return [self._generation(r) for r in rows]

    def get_scores(self, run_id: int, *, step: int | None = None, since: int | None = None) -> list[ScoreRecord]:
        sc = t.scores.c
        query = select(t.scores).where(sc.run_id == run_id)
        if step is not None:
            query = query.where(sc.step == step)
        if since is not None:
            query = query.where(sc.step >= since)
        with self._read() as conn:
            rows = conn.execute(query.order_by(sc.id))
            return [
                ScoreRecord(
                    r.slot,
                    r.step,
                    math.nan if r.value is None else r.value,
                    r.generation_id,
                    {k: math.nan if v is None else v for k, v in r.metrics.items()},
                    r.wall_time,
                )
                for r in rows
            ]

    @staticmethod
    def _checkpoint(r: Any) -> CheckpointRecord:
        return CheckpointRecord(
            r.id, r.slot, r.step, r.uri, r.sha256, r.size_bytes, r.score, bool(r.deleted), r.generation_id
        )

    def get_checkpoint(self, checkpoint_id: int) -> CheckpointRecord:
        with self._read() as conn:
            row = conn.execute(select(t.checkpoints).where(t.checkpoints.c.id == checkpoint_id)).first()
        if row is None:
            raise KeyError(f"no checkpoint with id {checkpoint_id}")
        return self._checkpoint(row)

    def get_checkpoints(self, run_id: int) -> list[CheckpointRecord]:
        with self._read() as conn:
            rows = conn.execute(
                select(t.checkpoints).where(t.checkpoints.c.run_id == run_id).order_by(t.checkpoints.c.id)
            )
            return [self._checkpoint(r) for r in rows]

    def close(self) -> None:
        self.engine.dispose()


class _Row:
    """Attribute access to a dict, so a member row tracked in Python reads like a result row."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)


class _Transaction:
    """``with`` block: one transaction (``write=False``: one that only reads), driver errors
    turned into ``StorageError``."""

    def __init__(self, storage: SQLStorage, *, write: bool) -> None:
        self._storage = storage
        self._write = write
        self._open: tuple[Connection, RootTransaction]

    def _unreachable(self, exc: SQLAlchemyError) -> StorageError:
        return StorageError(
            f"cannot reach storage {self._storage._safe_url()}: {_first_line(exc)}; check that the database is reachable"
        )

    def _failed(self, exc: BaseException) -> StorageError:
        return StorageError(f"storage {self._storage._safe_url()} failed: {_first_line(exc)}")

    def __enter__(self) -> Connection:
        try:
            conn = self._storage.engine.connect()
        except SQLAlchemyError as exc:
            raise self._unreachable(exc) from None
        try:
            if not self._write:
                conn = conn.execution_options(**{_READ_ONLY: True})
            self._open = (conn, conn.begin())
        except SQLAlchemyError as exc:
            conn.close()
            raise self._unreachable(exc) from None
        return conn

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        conn, transaction = self._open
        try:
            try:
                if exc is None:
                    transaction.commit()
                else:
                    transaction.rollback()
            finally:
                conn.close()
        except SQLAlchemyError as error:
            raise self._failed(error) from None
        if exc is not None and isinstance(exc, SQLAlchemyError) and not isinstance(exc, IntegrityError):
            raise self._failed(exc) from exc
