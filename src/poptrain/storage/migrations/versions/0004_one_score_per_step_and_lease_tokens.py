"""Schema version 2: one score per member and step (scores.uq_scores_run_slot_step; duplicates,
which only a worker with a stale lease wrote, are deleted first, keeping the newest of each), and
members.lease, the token of a member's newest lease (fenced writes).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(sa.text("DELETE FROM scores WHERE id NOT IN (SELECT MAX(id) FROM scores GROUP BY run_id, slot, step)"))
    with op.batch_alter_table("scores") as batch:
        batch.create_unique_constraint("uq_scores_run_slot_step", ["run_id", "slot", "step"])
    with op.batch_alter_table("members") as batch:
        batch.add_column(sa.Column("lease", sa.Integer, nullable=True))
    op.execute(sa.text("UPDATE poptrain_meta SET value = '2' WHERE key = 'schema_version'"))


def downgrade() -> None:
    op.execute(sa.text("UPDATE poptrain_meta SET value = '1' WHERE key = 'schema_version'"))
    with op.batch_alter_table("members") as batch:
        batch.drop_column("lease")
    with op.batch_alter_table("scores") as batch:
        batch.drop_constraint("uq_scores_run_slot_step", type_="unique")
