"""Schema version 4: one score per generation and step (scores.uq_scores_run_generation_step,
was one per member and step), and checkpoints.generation_id, the generation that trained a
checkpoint. A member that copies an older model (asynchronous PBT, one clock) trains those steps
again as a new generation; the steps its earlier generation trained stay, because another
member's model may descend from them. Older checkpoints keep ``NULL``: they are found by slot
and step as before.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("scores") as batch:
        batch.drop_constraint("uq_scores_run_slot_step", type_="unique")
        batch.create_unique_constraint("uq_scores_run_generation_step", ["run_id", "generation_id", "step"])
    with op.batch_alter_table("checkpoints") as batch:
        batch.add_column(sa.Column("generation_id", sa.Integer, nullable=True))
    op.execute(sa.text("UPDATE poptrain_meta SET value = '4' WHERE key = 'schema_version'"))


def downgrade() -> None:
    op.execute(sa.text("UPDATE poptrain_meta SET value = '3' WHERE key = 'schema_version'"))
    with op.batch_alter_table("checkpoints") as batch:
        batch.drop_column("generation_id")
    op.execute(  # keep the newest score of each member and step, as schema version 3 allows one
        sa.text("DELETE FROM scores WHERE id NOT IN (SELECT MAX(id) FROM scores GROUP BY run_id, slot, step)")
    )
    with op.batch_alter_table("scores") as batch:
        batch.drop_constraint("uq_scores_run_generation_step", type_="unique")
        batch.create_unique_constraint("uq_scores_run_slot_step", ["run_id", "slot", "step"])
