"""the inbox: conversation state on contacts (owner, open/closed, latest activity) and
the call-back requests the web UI leaves for the agent

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 10:28:04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "callback_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("contact_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("extension", sa.String(length=64), nullable=False),
        sa.Column("number", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("claimed_by", sa.String(length=100), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["contact_id"], ["contacts.id"]),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("callback_requests", schema=None) as batch_op:
        batch_op.create_index("ix_callback_requests_status_created", ["status", "created_at"],
                              unique=False)

    # existing contacts start as open, unassigned conversations with no activity yet
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("assigned_to", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("conversation_status", sa.String(length=16),
                                      server_default="open", nullable=False))
        batch_op.add_column(sa.Column("last_message_at", sa.DateTime(timezone=True),
                                      nullable=True))
        batch_op.add_column(sa.Column("last_inbound_at", sa.DateTime(timezone=True),
                                      nullable=True))
        batch_op.create_index("ix_contacts_assigned_last", ["assigned_to", "last_message_at"],
                              unique=False)
        batch_op.create_index("ix_contacts_last", ["last_message_at"], unique=False)
        batch_op.create_index("ix_contacts_status_last",
                              ["conversation_status", "last_message_at"], unique=False)
        batch_op.create_foreign_key("fk_contacts_assigned_to_users", "users",
                                    ["assigned_to"], ["id"])
    # who wrote a staff reply (a plain column: SQLite adds it without copying the table)
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sent_by", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_column("sent_by")

    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.drop_constraint("fk_contacts_assigned_to_users", type_="foreignkey")
        batch_op.drop_index("ix_contacts_status_last")
        batch_op.drop_index("ix_contacts_last")
        batch_op.drop_index("ix_contacts_assigned_last")
        batch_op.drop_column("last_inbound_at")
        batch_op.drop_column("last_message_at")
        batch_op.drop_column("conversation_status")
        batch_op.drop_column("assigned_to")

    with op.batch_alter_table("callback_requests", schema=None) as batch_op:
        batch_op.drop_index("ix_callback_requests_status_created")

    op.drop_table("callback_requests")
