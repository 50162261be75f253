"""offline period index: a terminal's accepted records of a programme by seq

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03 14:50:00.000000

The offline sync sums the accepted discount of one terminal and programme over a seq range (its offline
period) for each record; with only ix_offline_conflicts (program_id, status) that read every accepted
record of the programme, of every terminal.
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("offline_records", schema=None) as batch_op:
        batch_op.create_index(
            "ix_offline_period", ["merchant_id", "terminal_id", "program_id", "status", "seq"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("offline_records", schema=None) as batch_op:
        batch_op.drop_index("ix_offline_period")
