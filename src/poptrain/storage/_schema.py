"""The SQL schema shared by SQLite and PostgreSQL (SQLAlchemy Core tables)."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)

metadata = MetaData()

meta = Table(
    "poptrain_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", String(256), nullable=False),
)

runs = Table(
    "runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(256), nullable=False, unique=True),
    Column("spec", JSON, nullable=False),
    Column("seed", Integer, nullable=False),
    Column("state", String(16), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("reason", String(1024), nullable=True),  # why the run is in its state (a stop rule's reason)
)

members = Table(
    "members",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", Integer, ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("slot", Integer, nullable=False),
    Column("state", String(16), nullable=False),
    Column("step", Integer, nullable=False),
    Column("hparams", JSON, nullable=False),
    Column("generation_id", Integer, nullable=True),
    Column("generation", Integer, nullable=False),
    Column("last_ready_step", Integer, nullable=False),
    Column("score", Float, nullable=True),
    Column("ready_score", Float, nullable=True),
    Column("checkpoint_id", Integer, nullable=True),
    Column("resume_checkpoint_id", Integer, nullable=True),
    Column("error", Text, nullable=True),
    Column("ready_hparams", JSON, nullable=True),
    Column("failures", Integer, nullable=False, default=0, server_default="0"),  # as migration 0002 adds it
    Column("lease", Integer, nullable=True),  # the token of the newest lease: +1 per acquisition
    UniqueConstraint("run_id", "slot", name="uq_members_run_slot"),
)

generations = Table(
    "generations",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", Integer, ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("slot", Integer, nullable=False),
    Column("number", Integer, nullable=False),
    Column("start_step", Integer, nullable=False),
    Column("hparams", JSON, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("parent_id", Integer, nullable=True),
    Column("donor", Integer, nullable=True),
    Column("loaded_checkpoint_id", Integer, nullable=True),
    Column("operations", JSON, nullable=False),
    Column("created_at", Float, nullable=False),
    Index("ix_generations_run", "run_id", "id"),
)

scores = Table(
    "scores",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", Integer, ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("slot", Integer, nullable=False),
    Column("generation_id", Integer, nullable=False),
    Column("step", Integer, nullable=False),
    Column("value", Float, nullable=True),  # NULL is a NaN score (SQLite cannot store NaN)
    Column("metrics", JSON, nullable=False),
    Column("wall_time", Float, nullable=False),
    Index("ix_scores_run", "run_id", "id"),
    Index("ix_scores_run_step", "run_id", "step"),  # the scores a ready point compares (get_scores(step=...))
    # one score per generation and step: a member that copies an older model trains those steps
    # again as a new generation, and the old generation's scores stay (migration 0007)
    UniqueConstraint("run_id", "generation_id", "step", name="uq_scores_run_generation_step"),
)

leases = Table(
    "leases",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", Integer, ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("slot", Integer, nullable=False),
    Column("worker", String(128), nullable=False),
    Column("expires_at", Float, nullable=False),
    UniqueConstraint("run_id", "slot", name="uq_leases_run_slot"),
)

checkpoints = Table(
    "checkpoints",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", Integer, ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("slot", Integer, nullable=False),
    Column("step", Integer, nullable=False),
    Column("uri", Text, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("size_bytes", Integer, nullable=False),
    Column("score", Float, nullable=True),
    Column("deleted", Boolean, nullable=False, default=False, server_default=false()),
    Column("generation_id", Integer, nullable=True),  # the generation that trained it (migration 0007)
    Index("ix_checkpoints_run", "run_id", "id"),
)
