"""The initial schema (poptrain schema version 1): runs, members, generations, scores, leases,
checkpoints and poptrain_meta with its schema_version row.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _run_id() -> sa.Column:
    return sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False)


def upgrade() -> None:
    meta = op.create_table(
        "poptrain_meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.String(256), nullable=False),
    )
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(256), nullable=False, unique=True),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("seed", sa.Integer, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "members",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        _run_id(),
        sa.Column("slot", sa.Integer, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("hparams", sa.JSON, nullable=False),
        sa.Column("generation_id", sa.Integer, nullable=True),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.Column("last_ready_step", sa.Integer, nullable=False),
        sa.Column("score", sa.Float, nullable=True),
        sa.Column("ready_score", sa.Float, nullable=True),
        sa.Column("checkpoint_id", sa.Integer, nullable=True),
        sa.Column("resume_checkpoint_id", sa.Integer, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("ready_hparams", sa.JSON, nullable=True),
        sa.UniqueConstraint("run_id", "slot", name="uq_members_run_slot"),
    )
    op.create_table(
        "generations",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        _run_id(),
        sa.Column("slot", sa.Integer, nullable=False),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("start_step", sa.Integer, nullable=False),
        sa.Column("hparams", sa.JSON, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("parent_id", sa.Integer, nullable=True),
        sa.Column("donor", sa.Integer, nullable=True),
        sa.Column("loaded_checkpoint_id", sa.Integer, nullable=True),
        sa.Column("operations", sa.JSON, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_generations_run", "generations", ["run_id", "id"])
    op.create_table(
        "scores",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        _run_id(),
        sa.Column("slot", sa.Integer, nullable=False),
        sa.Column("generation_id", sa.Integer, nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("value", sa.Float, nullable=True),
        sa.Column("metrics", sa.JSON, nullable=False),
        sa.Column("wall_time", sa.Float, nullable=False),
    )
    op.create_index("ix_scores_run", "scores", ["run_id", "id"])
    op.create_table(
        "leases",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        _run_id(),
        sa.Column("slot", sa.Integer, nullable=False),
        sa.Column("worker", sa.String(128), nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.UniqueConstraint("run_id", "slot", name="uq_leases_run_slot"),
    )
    op.create_table(
        "checkpoints",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        _run_id(),
        sa.Column("slot", sa.Integer, nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("uri", sa.Text, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size_bytes", sa.Integer, nullable=False),
        sa.Column("score", sa.Float, nullable=True),
    )
    op.create_index("ix_checkpoints_run", "checkpoints", ["run_id", "id"])
    op.bulk_insert(meta, [{"key": "schema_version", "value": "1"}])


def downgrade() -> None:
    for index, table in (
        ("ix_checkpoints_run", "checkpoints"),
        ("ix_scores_run", "scores"),
        ("ix_generations_run", "generations"),
    ):
        op.drop_index(index, table_name=table)
    for table in ("checkpoints", "leases", "scores", "generations", "members", "runs", "poptrain_meta"):
        op.drop_table(table)
