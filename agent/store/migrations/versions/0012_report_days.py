"""the dashboard's daily figures (report_days, report_marks), the inbox's "qualified"
mark (contacts.qualified_at) and the indexes that find what changed since a day was
counted; the staff-answer look-up becomes index-only (number, kind, created_at)

The days are counted when the dashboard first needs them (agent.reports.rollups): the
counting belongs to the reports, which a migration must not import, and a day's
figures depend on settings (the time zone, the intent phrases) read at that time.

Revision ID: 0012
Revises: 0007
Create Date: 2026-12-07 05:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_CONTACT_INDEXES = (("ix_contacts_contacted", "contacted_at"), ("ix_contacts_booked", "booked_at"),
                    ("ix_contacts_opted_out", "opted_out_at"),
                    ("ix_contacts_qualified", "qualified_at"))


def upgrade() -> None:
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("qualified_at", sa.DateTime(timezone=True), nullable=True))
        for name, column in _CONTACT_INDEXES:
            batch_op.create_index(name, [column], unique=False)
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.create_index("ix_messages_number_kind_created",
                              ["number", "kind", "created_at"], unique=False)
    op.create_table(
        "report_days",
        sa.Column("zone", sa.String(length=64), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("figures", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("zone", "day"),
    )
    op.create_table(
        "report_marks",
        sa.Column("zone", sa.String(length=64), nullable=False),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("call_id", sa.Integer(), nullable=False),
        sa.Column("message_id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.Integer(), nullable=False),
        sa.Column("audit_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("zone"),
    )


def downgrade() -> None:
    op.drop_table("report_marks")
    op.drop_table("report_days")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index("ix_messages_number_kind_created")
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        for name, _column in reversed(_CONTACT_INDEXES):
            batch_op.drop_index(name)
        batch_op.drop_column("qualified_at")
