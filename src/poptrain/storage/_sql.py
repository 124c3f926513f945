"""SQL storage through SQLAlchemy: SQLite (the embedded default) and PostgreSQL alike."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, create_engine, delete, event, insert, or_, select, update
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, NoSuchModuleError, SQLAlchemyError

from poptrain.errors import RunExistsError, RunNotFoundError, StorageError
from poptrain.records import (
    CheckpointRecord,
    GenerationRecord,
    MemberRecord,
    ReadyPoint,
    RunRecord,
    ScoreRecord,
)
from poptrain.space import HParams
from poptrain.storage import _migrate
from poptrain.storage import _schema as t
from poptrain.storage._base import Storage

_SQLITE_WAIT_SECONDS = 30  # how long a connection waits for another process's lock


def _sqlite_pragmas(dbapi_connection: Any, _record: Any, *, wal: bool = True) -> None:
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


# Statements of the per-step and per-ready-point path, built once (building one costs more than
# SQLite takes to run it); values are bound when executed.
_M = t.members.c
_READY_COLUMNS = ("step", "last_ready_step", "ready_score", "checkpoint_id", "resume_checkpoint_id",
                  "ready_hparams", "hparams", "generation_id", "generation", "failures")
_MEMBERS_IN_SLOTS = select(t.members).where(
    _M.run_id == bindparam("run_id"), _M.slot.in_(bindparam("slots", expanding=True))
)
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
_INSERT_SCORES = insert(t.scores)
_INSERT_CHECKPOINT = insert(t.checkpoints)
_INSERT_GENERATION = insert(t.generations)


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
        raise StorageError(f"{path} is not a SQLite database (damaged, or another kind of file); move it away or check the path")
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
                raise StorageError(f"cannot create the folder {folder!r} for the SQLite database: {exc.strerror}") from exc
        try:
            connect_args = {"timeout": _SQLITE_WAIT_SECONDS} if parsed.get_backend_name() == "sqlite" else {}
            self.engine: Engine = create_engine(url, future=True, connect_args=connect_args)
        except (NoSuchModuleError, ImportError) as exc:
            if parsed.get_backend_name() == "postgres":
                hint = "write postgresql+psycopg://user@host/db (SQLAlchemy does not know 'postgres://')"
            elif parsed.get_backend_name() == "postgresql":
                hint = "install it, e.g. pip install 'psycopg[binary]', and write postgresql+psycopg://user@host/db"
            else:
                hint = "use sqlite:///PATH or postgresql+psycopg://user@host/db, or install the driver"
            raise StorageError(f"no database driver for {parsed.drivername!r} ({_first_line(exc)}); {hint}") from None
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas if create else _sqlite_pragmas_as_found)
        self._prepare(create)

    def _prepare(self, create: bool) -> None:
        try:
            with self.engine.begin() as conn:
                _migrate.prepare(conn, self._safe_url(), create=create)
        except SQLAlchemyError as exc:
            hint = ("check that the path names a database file" if self.engine.dialect.name == "sqlite"
                    else "check the URL and that the database server is running and reachable")
            raise StorageError(
                f"cannot open storage {self._safe_url()}: {_first_line(exc)}; {hint}"
            ) from None

    def _safe_url(self) -> str:
        return display_url(self.url)

    def _begin(self) -> Any:
        return _Transaction(self)

    # --- runs -----------------------------------------------------------------
    @staticmethod
    def _run(row: Any) -> RunRecord:
        return RunRecord(row.id, row.name, dict(row.spec), row.seed, row.state, row.created_at)

    def create_run(
        self, name: str, *, spec: dict[str, Any], seed: int, initial_hparams: Sequence[HParams] = ()
    ) -> RunRecord:
        try:
            with self._begin() as conn:
                result = conn.execute(
                    insert(t.runs).values(name=name, spec=spec, seed=seed, state="created", created_at=time.time())
                )
                run_id = result.inserted_primary_key[0]
                self._add_members(conn, run_id, initial_hparams)
                return self._run(conn.execute(select(t.runs).where(t.runs.c.id == run_id)).one())
        except IntegrityError:
            raise RunExistsError(f"a run named {name!r} exists already; pick another name or resume it") from None

    def get_run(self, name: str) -> RunRecord:
        with self._begin() as conn:
            row = conn.execute(select(t.runs).where(t.runs.c.name == name)).first()
        if row is None:
            raise RunNotFoundError(f"no run named {name!r} in {self._safe_url()}")
        return self._run(row)

    def list_runs(self) -> list[RunRecord]:
        with self._begin() as conn:
            return [self._run(r) for r in conn.execute(select(t.runs).order_by(t.runs.c.id))]

    def set_run_state(self, run_id: int, state: str) -> None:
        with self._begin() as conn:
            if conn.execute(update(t.runs).where(t.runs.c.id == run_id).values(state=state)).rowcount == 0:
                raise KeyError(f"no run with id {run_id}")

    def delete_run(self, run_id: int) -> None:
        with self._begin() as conn:
            for table in (t.scores, t.checkpoints, t.leases, t.members, t.generations):
                conn.execute(delete(table).where(table.c.run_id == run_id))
            if conn.execute(delete(t.runs).where(t.runs.c.id == run_id)).rowcount == 0:
                raise KeyError(f"no run with id {run_id}")

    # --- members --------------------------------------------------------------
    @staticmethod
    def _member(row: Any, generation_number: int | None = None) -> MemberRecord:
        return MemberRecord(
            row.id, row.slot, row.state, row.step, dict(row.hparams), row.generation_id,
            row.generation if generation_number is None else generation_number,
            row.last_ready_step, row.score, row.ready_score, row.checkpoint_id, row.resume_checkpoint_id, row.error,
            None if row.ready_hparams is None else dict(row.ready_hparams), row.failures or 0,
        )

    def add_members(self, run_id: int, initial_hparams: Sequence[HParams]) -> list[MemberRecord]:
        with self._begin() as conn:
            if conn.execute(select(t.runs.c.id).where(t.runs.c.id == run_id)).first() is None:
                raise KeyError(f"no run with id {run_id}")
            self._add_members(conn, run_id, initial_hparams)
        return self.get_members(run_id)

    @staticmethod
    def _add_members(conn: Connection, run_id: int, initial_hparams: Sequence[HParams]) -> None:
        start = len(conn.execute(select(t.members.c.id).where(t.members.c.run_id == run_id)).all())
        now = time.time()
        for offset, hparams in enumerate(initial_hparams):
            slot = start + offset
            gen_id = conn.execute(
                insert(t.generations).values(
                    run_id=run_id, slot=slot, number=0, start_step=0, hparams=dict(hparams), kind="init",
                    parent_id=None, donor=None, loaded_checkpoint_id=None, operations={}, created_at=now,
                )
            ).inserted_primary_key[0]
            conn.execute(
                insert(t.members).values(
                    run_id=run_id, slot=slot, state="pending", step=0, hparams=dict(hparams),
                    generation_id=gen_id, generation=0, last_ready_step=0,
                )
            )

    def get_members(self, run_id: int) -> list[MemberRecord]:
        with self._begin() as conn:
            if conn.execute(select(t.runs.c.id).where(t.runs.c.id == run_id)).first() is None:
                raise KeyError(f"no run with id {run_id}")
            rows = conn.execute(select(t.members).where(t.members.c.run_id == run_id).order_by(t.members.c.slot))
            return [self._member(r) for r in rows]

    def set_member_state(self, run_id: int, slot: int, state: str, error: str | None = None) -> None:
        with self._begin() as conn:
            result = conn.execute(
                update(t.members)
                .where(t.members.c.run_id == run_id, t.members.c.slot == slot)
                .values({"state": state} if error is None else {"state": state, "error": error})
            )
            if result.rowcount == 0:
                raise KeyError(f"no member in slot {slot} of run {run_id}")

    def rewind_member(self, run_id: int, slot: int) -> MemberRecord:
        with self._begin() as conn:
            return self._rewind(conn, run_id, slot, {})

    def record_failure(self, run_id: int, slot: int, error: str) -> MemberRecord:
        with self._begin() as conn:
            return self._rewind(
                conn, run_id, slot, {"state": "failed", "error": error},
                count_failure=True,
            )

    def _rewind(
        self, conn: Connection, run_id: int, slot: int, changes: dict[str, Any], *, count_failure: bool = False
    ) -> MemberRecord:
        """Delete a member's scores past its newest ready point, set its step and score back
        to that point and apply ``changes`` (plus one more failure with ``count_failure``)."""
        row = conn.execute(select(t.members).where(_M.run_id == run_id, _M.slot == slot)).first()
        if row is None:
            raise KeyError(f"no member in slot {slot} of run {run_id}")
        keep = row.last_ready_step
        conn.execute(delete(t.scores).where(t.scores.c.run_id == run_id, t.scores.c.slot == slot, t.scores.c.step > keep))
        update_values = {"step": keep, "score": row.ready_score if keep > 0 else None, **changes}
        if count_failure:
            update_values["failures"] = (row.failures or 0) + 1
        conn.execute(update(t.members).where(_M.id == row.id).values(update_values))
        return self._member(_Row({**dict(row._mapping), **update_values}))

    def record_replacement(self, run_id: int, decision: Any) -> MemberRecord:
        with self._begin() as conn:
            rows = {
                r.slot: dict(r._mapping)
                for r in conn.execute(_MEMBERS_IN_SLOTS, {"run_id": run_id, "slots": [decision.slot, decision.donor]})
            }
            if decision.slot not in rows or decision.donor not in rows:
                raise KeyError(f"no member in slot {decision.slot} or {decision.donor} of run {run_id}")
            member, donor = rows[decision.slot], rows[decision.donor]
            parent_id = self._trained_by(conn, run_id, donor) if donor["checkpoint_id"] is not None else donor["generation_id"]
            number = member["generation"] + 1
            gen_id = conn.execute(
                _INSERT_GENERATION,
                {
                    "run_id": run_id, "slot": decision.slot, "number": number, "start_step": member["step"],
                    "hparams": dict(decision.hparams), "kind": "exploit", "parent_id": parent_id, "donor": decision.donor,
                    "loaded_checkpoint_id": donor["checkpoint_id"], "operations": dict(decision.operations),
                    "created_at": time.time(),
                },
            ).inserted_primary_key[0]
            member.update(
                state="pending", hparams=dict(decision.hparams), generation_id=gen_id, generation=number,
                resume_checkpoint_id=donor["checkpoint_id"],
            )
            conn.execute(
                update(t.members).where(_M.id == member["id"]).values(
                    {k: member[k] for k in ("state", "hparams", "generation_id", "generation", "resume_checkpoint_id")}
                )
            )
            return self._member(_Row(member))

    # --- scores and ready points ------------------------------------------------
    def record_scores(self, run_id: int, scores: Sequence[ScoreRecord]) -> None:
        if not scores:
            return
        with self._begin() as conn:
            self._insert_scores(conn, run_id, scores)

    @staticmethod
    def _insert_scores(conn: Connection, run_id: int, scores: Sequence[ScoreRecord]) -> None:
        if not scores:
            return
        conn.execute(
            _INSERT_SCORES,
            [
                {
                    "run_id": run_id, "slot": s.slot, "generation_id": s.generation_id, "step": s.step,
                    "value": None if math.isnan(s.value) else s.value,
                    "metrics": {k: _nan_to_none(v) for k, v in s.metrics.items()},  # JSON has no NaN/inf
                    "wall_time": s.wall_time,
                }
                for s in scores
            ],
        )
        newest: dict[int, ScoreRecord] = {}
        for s in scores:
            newest[s.slot] = s
        for slot, s in newest.items():
            result = conn.execute(
                _MEMBER_SCORED, {"p_run_id": run_id, "p_slot": slot, "p_step": s.step, "p_score": _nan_to_none(s.value)}
            )
            if result.rowcount == 0:
                raise KeyError(f"no member in slot {slot} of run {run_id}")

    def record_ready(
        self, run_id: int, points: Sequence[ReadyPoint], scores: Sequence[ScoreRecord] = (), *, in_turn: bool = False
    ) -> list[MemberRecord]:
        with self._begin() as conn:
            self._insert_scores(conn, run_id, scores)
            slots = {p.slot for p in points} | {p.decision.donor for p in points if p.decision is not None and p.decision.donor is not None}
            rows = conn.execute(_MEMBERS_IN_SLOTS, {"run_id": run_id, "slots": sorted(slots)})
            members: dict[int, dict[str, Any]] = {r.slot: dict(r._mapping) for r in rows}
            now = time.time()

            def member(slot: int) -> dict[str, Any]:
                if slot not in members:
                    raise KeyError(f"no member in slot {slot} of run {run_id}")
                return members[slot]

            def checkpoint(p: ReadyPoint) -> None:
                row = member(p.slot)
                ckpt_id = conn.execute(
                    _INSERT_CHECKPOINT,
                    {
                        "run_id": run_id, "slot": p.slot, "step": p.step, "uri": p.checkpoint.uri,
                        "sha256": p.checkpoint.sha256, "size_bytes": p.checkpoint.size_bytes, "score": _nan_to_none(p.score),
                    },
                ).inserted_primary_key[0]
                row.update(
                    step=max(row["step"], p.step), last_ready_step=p.step, ready_score=_nan_to_none(p.score),
                    checkpoint_id=ckpt_id, resume_checkpoint_id=ckpt_id, ready_hparams=dict(row["hparams"]), failures=0,
                )
                row["_checkpoint_step"] = p.step

            def decide(p: ReadyPoint) -> None:
                decision = p.decision
                if decision is None:
                    return
                row = member(p.slot)
                source = member(decision.donor) if decision.kind == "exploit" else row
                parent_id = source["generation_id"]
                if decision.kind == "exploit" and source["checkpoint_id"] is not None:
                    parent_id = self._trained_by(conn, run_id, source)
                number = row["generation"] + 1
                gen_id = conn.execute(
                    _INSERT_GENERATION,
                    {
                        "run_id": run_id, "slot": p.slot, "number": number, "start_step": p.step,
                        "hparams": dict(decision.hparams), "kind": decision.kind, "parent_id": parent_id,
                        "donor": decision.donor, "loaded_checkpoint_id": source["checkpoint_id"],
                        "operations": dict(decision.operations), "created_at": now,
                    },
                ).inserted_primary_key[0]
                row.update(
                    hparams=dict(decision.hparams), generation_id=gen_id, generation=number,
                    resume_checkpoint_id=source["checkpoint_id"],
                )

            if in_turn:
                for p in points:
                    checkpoint(p)
                    decide(p)
            else:
                for p in points:
                    checkpoint(p)
                for p in points:
                    decide(p)
            for slot in {p.slot for p in points}:
                row = members[slot]
                conn.execute(_MEMBER_READY, {"p_id": row["id"], **{f"p_{c}": row[c] for c in _READY_COLUMNS}})
            return [self._member(_Row(members[p.slot])) for p in points]

    @staticmethod
    def _trained_by(conn: Connection, run_id: int, donor: dict[str, Any]) -> int:
        """The donor's generation whose training produced its newest checkpoint: one begun by a
        decision at the checkpoint's own step started after the checkpoint was taken."""
        step = donor.get("_checkpoint_step")
        if step is None:
            step = conn.execute(
                select(t.checkpoints.c.step).where(t.checkpoints.c.id == donor["checkpoint_id"])
            ).scalar_one()
        return conn.execute(
            select(t.generations.c.id)
            .where(
                t.generations.c.run_id == run_id, t.generations.c.slot == donor["slot"],
                or_(t.generations.c.start_step < step, t.generations.c.number == 0),
            )
            .order_by(t.generations.c.number.desc())
            .limit(1)
        ).scalar_one()

    # --- leases -------------------------------------------------------------------
    def acquire_member(self, run_id: int, worker: str, *, total_steps: int, lease_seconds: float) -> MemberRecord | None:
        with self._begin() as conn:
            rows = conn.execute(
                select(t.members).where(_M.run_id == run_id).order_by(_M.last_ready_step, _M.slot)
            ).all()
            held = {r.slot: r for r in conn.execute(select(t.leases).where(t.leases.c.run_id == run_id))}
        now = time.time()
        for row in rows:
            if row.state == "finished" and row.step >= total_steps:
                continue
            lease = held.get(row.slot)
            if lease is not None and lease.expires_at > now and lease.worker != worker:
                continue
            if self._take_lease(run_id, row.slot, worker, now, lease_seconds, exists=lease is not None):
                with self._begin() as conn:
                    fresh = conn.execute(select(t.members).where(_M.id == row.id)).one()
                if fresh.state == "finished" and fresh.step >= total_steps:  # finished meanwhile
                    self.release_member(run_id, row.slot, worker)
                    continue
                return self._member(fresh)
        return None

    def _take_lease(self, run_id: int, slot: int, worker: str, now: float, seconds: float, *, exists: bool) -> bool:
        """Compare-and-swap a lease in its own transaction: insert it, or take over one that
        expired (or is ours already). ``False`` if another worker won the race."""
        leases = t.leases.c
        try:
            with self._begin() as conn:
                if not exists:
                    conn.execute(insert(t.leases).values(run_id=run_id, slot=slot, worker=worker, expires_at=now + seconds))
                    return True
                result = conn.execute(
                    update(t.leases)
                    .where(leases.run_id == run_id, leases.slot == slot, or_(leases.expires_at <= now, leases.worker == worker))
                    .values(worker=worker, expires_at=now + seconds)
                )
                return result.rowcount == 1
        except IntegrityError:
            return False

    def renew_lease(self, run_id: int, slot: int, worker: str, lease_seconds: float) -> bool:
        leases = t.leases.c
        with self._begin() as conn:
            result = conn.execute(
                update(t.leases)
                .where(leases.run_id == run_id, leases.slot == slot, leases.worker == worker)
                .values(expires_at=time.time() + lease_seconds)
            )
            return result.rowcount == 1

    def release_member(self, run_id: int, slot: int, worker: str) -> None:
        leases = t.leases.c
        with self._begin() as conn:
            conn.execute(delete(t.leases).where(leases.run_id == run_id, leases.slot == slot, leases.worker == worker))

    def mark_checkpoints_deleted(self, run_id: int, checkpoint_ids: Sequence[int]) -> None:
        if not checkpoint_ids:
            return
        ckpts = t.checkpoints.c
        with self._begin() as conn:
            result = conn.execute(
                update(t.checkpoints).where(ckpts.run_id == run_id, ckpts.id.in_(list(checkpoint_ids))).values(deleted=True)
            )
            if result.rowcount != len(set(checkpoint_ids)):
                raise KeyError(f"some of checkpoints {sorted(checkpoint_ids)} are not in run {run_id}")

    # --- reads ------------------------------------------------------------------
    def get_generations(self, run_id: int) -> list[GenerationRecord]:
        with self._begin() as conn:
            rows = conn.execute(select(t.generations).where(t.generations.c.run_id == run_id).order_by(t.generations.c.id))
            return [
                GenerationRecord(
                    r.id, r.slot, r.number, r.start_step, dict(r.hparams), r.kind, r.parent_id, r.donor,
                    r.loaded_checkpoint_id, dict(r.operations), r.created_at,
                )
                for r in rows
            ]

    def get_scores(self, run_id: int) -> list[ScoreRecord]:
        with self._begin() as conn:
            rows = conn.execute(select(t.scores).where(t.scores.c.run_id == run_id).order_by(t.scores.c.id))
            return [
                ScoreRecord(
                    r.slot, r.step, math.nan if r.value is None else r.value, r.generation_id,
                    {k: math.nan if v is None else v for k, v in r.metrics.items()}, r.wall_time,
                )
                for r in rows
            ]

    @staticmethod
    def _checkpoint(r: Any) -> CheckpointRecord:
        return CheckpointRecord(r.id, r.slot, r.step, r.uri, r.sha256, r.size_bytes, r.score, bool(r.deleted))

    def get_checkpoint(self, checkpoint_id: int) -> CheckpointRecord:
        with self._begin() as conn:
            row = conn.execute(select(t.checkpoints).where(t.checkpoints.c.id == checkpoint_id)).first()
        if row is None:
            raise KeyError(f"no checkpoint with id {checkpoint_id}")
        return self._checkpoint(row)

    def get_checkpoints(self, run_id: int) -> list[CheckpointRecord]:
        with self._begin() as conn:
            rows = conn.execute(select(t.checkpoints).where(t.checkpoints.c.run_id == run_id).order_by(t.checkpoints.c.id))
            return [self._checkpoint(r) for r in rows]

    def close(self) -> None:
        self.engine.dispose()


class _Row:
    """Attribute access to a dict, so a member row tracked in Python reads like a result row."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)


class _Transaction:
    """``with`` block: one transaction, driver errors turned into ``StorageError``."""

    def __init__(self, storage: SQLStorage) -> None:
        self._storage = storage
        self._context: Any = None

    def __enter__(self) -> Connection:
        try:
            self._context = self._storage.engine.begin()
            return self._context.__enter__()
        except SQLAlchemyError as exc:
            raise StorageError(
                f"cannot reach storage {self._storage._safe_url()}: {str(getattr(exc, 'orig', exc)).splitlines()[0]}; "
                "check that the database is reachable"
            ) from None

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        try:
            self._context.__exit__(exc_type, exc, tb)
        except SQLAlchemyError as error:
            raise StorageError(
                f"storage {self._storage._safe_url()} failed: {str(getattr(error, 'orig', error)).splitlines()[0]}"
            ) from None
        if exc is not None and isinstance(exc, SQLAlchemyError) and not isinstance(exc, IntegrityError):
            raise StorageError(
                f"storage {self._storage._safe_url()} failed: {str(getattr(exc, 'orig', exc)).splitlines()[0]}"
            ) from exc
        return False
