"""Scores indexed by step: a ready point reads the scores at its step (``get_scores(step=...)``,
``since=...``), not every score of the run. The schema version stays 3: readers see the same tables.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_scores_run_step", "scores", ["run_id", "step"])


def downgrade() -> None:
    op.drop_index("ix_scores_run_step", table_name="scores")
