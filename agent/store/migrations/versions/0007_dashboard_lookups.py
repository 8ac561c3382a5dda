"""covering indexes for the dashboard's per-call look-ups: a customer's replies after a
text-back (reply rate, staff response time) and when a text-back left or was reported
(send and delivery rates); the events index replaces the one on message_id alone, which
is its prefix

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 11:20:00
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.create_index("ix_messages_number_direction_created",
                              ["number", "direction", "created_at"], unique=False)
    with op.batch_alter_table("message_events", schema=None) as batch_op:
        batch_op.create_index("ix_message_events_message_status_at",
                              ["message_id", "status", "at"], unique=False)
        batch_op.drop_index("ix_message_events_message_id")


def downgrade() -> None:
    with op.batch_alter_table("message_events", schema=None) as batch_op:
        batch_op.create_index("ix_message_events_message_id", ["message_id"], unique=False)
        batch_op.drop_index("ix_message_events_message_status_at")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index("ix_messages_number_direction_created")
