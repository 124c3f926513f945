"""Schema version 3: runs.reason, why a run is in its state (the stop rule that stopped it).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("reason", sa.String(1024), nullable=True))
    op.execute(sa.text("UPDATE poptrain_meta SET value = '3' WHERE key = 'schema_version'"))


def downgrade() -> None:
    op.execute(sa.text("UPDATE poptrain_meta SET value = '2' WHERE key = 'schema_version'"))
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("reason")
