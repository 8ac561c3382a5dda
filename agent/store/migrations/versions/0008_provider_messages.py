"""messaging APIs: the provider's own id of each message, which its webhooks name, and
the rings the web app asks of the agent (an emergency text that came by a webhook)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 05:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("provider_id", sa.String(length=100), nullable=True))
        batch_op.create_unique_constraint("uq_messages_provider_id", ["provider_id"])
    op.create_table(
        "ring_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("target", sa.String(length=200), nullable=False),
        sa.Column("number", sa.String(length=64), nullable=False),
        sa.Column("label", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("claimed_by", sa.String(length=100), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("ring_requests", schema=None) as batch_op:
        batch_op.create_index("ix_ring_requests_status_created", ["status", "created_at"],
                              unique=False)


def downgrade() -> None:
    op.drop_table("ring_requests")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_constraint("uq_messages_provider_id", type_="unique")
        batch_op.drop_column("provider_id")
