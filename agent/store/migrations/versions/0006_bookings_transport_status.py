"""bookings (a conversation that became a job) and the transports' health as the agent
last saw it, for the web UI's transports panel

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 11:05:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("booked_at", sa.DateTime(timezone=True), nullable=True))

    op.create_table(
        "transport_status",
        sa.Column("name", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("signal_dbm", sa.Integer(), nullable=True),
        sa.Column("operator", sa.String(length=64), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_error_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("transport_status")
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.drop_column("booked_at")
