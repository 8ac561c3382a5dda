"""message experiments (hook × CTA, whole texts, delays) and the weekly digest's runs; the
A/B tests of templates.*_b become one-factor experiments with their texts' history

Revision ID: 0013
Revises: 0007
Create Date: 2026-12-07 05:20:00
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_TEMPLATES = ("templates.business_hours", "templates.after_hours", "templates.voicemail")
_LABELS = {"templates.business_hours": "Missed call while open",
           "templates.after_hours": "Missed call while closed",
           "templates.voicemail": "Missed call with a voicemail"}


def upgrade() -> None:
    op.create_table(
        "experiments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("template", sa.String(length=100), nullable=True),
        sa.Column("design", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_by", sa.String(length=64), nullable=True),
        sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("stopped_by", sa.String(length=64), nullable=True),
        sa.Column("adopted_cell", sa.String(length=8), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_experiments_status", "experiments", ["status"], unique=False)
    op.create_table(
        "digest_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("week", sa.String(length=10), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("week"),
    )
    # a plain nullable column: SQLite adds it without rebuilding the messages table
    op.add_column("messages", sa.Column("experiment_id", sa.Integer(), nullable=True))
    op.create_index("ix_messages_experiment", "messages", ["experiment_id"], unique=False)
    _ab_tests_to_experiments()


def _ab_tests_to_experiments() -> None:
    """Each template with a B text, or with A/B history, becomes a one-factor experiment
    ("text"): running while its B text is set, stopped otherwise; its text-backs are
    linked to it, so the counts so far are kept. Level A is null: the template as it
    stands, which is what A always was. The B settings rows are then removed: the
    experiment carries the B text now."""
    bind = op.get_bind()
    experiments = sa.table(
        "experiments", sa.column("id", sa.Integer), sa.column("name", sa.String),
        sa.column("kind", sa.String), sa.column("template", sa.String),
        sa.column("design", sa.JSON), sa.column("status", sa.String),
        sa.column("started_at", sa.DateTime(timezone=True)), sa.column("started_by", sa.String),
        sa.column("stopped_at", sa.DateTime(timezone=True)))
    stored = sa.table("settings", sa.column("key", sa.String), sa.column("value", sa.JSON))
    now = dt.datetime.now(dt.UTC)
    for key in _TEMPLATES:
        b_text = bind.execute(sa.select(stored.c.value).where(stored.c.key == f"{key}_b")
                              ).scalar()  # the JSON decoded, on either database
        b_text = b_text if isinstance(b_text, str) and b_text.strip() else None
        first, last = bind.execute(sa.text(
            "SELECT MIN(created_at), MAX(created_at) FROM messages WHERE template = :key "
            "AND variant IN ('A', 'B') AND direction = 'out'"), {"key": key}).one()
        if b_text is None and first is None:
            continue
        started = _aware(first) or now
        bind.execute(experiments.insert().values(
            name=f"{_LABELS[key]}: A/B test", kind="text", template=key,
            design={"text": [None, b_text or ""]},
            status="running" if b_text else "stopped", started_at=started,
            started_by="migration", stopped_at=None if b_text else (_aware(last) or now)))
        new_id = bind.execute(sa.text("SELECT MAX(id) FROM experiments")).scalar()
        bind.execute(sa.text(
            "UPDATE messages SET experiment_id = :id WHERE template = :key "
            "AND variant IN ('A', 'B') AND direction = 'out'"), {"id": new_id, "key": key})
        bind.execute(sa.text("DELETE FROM settings WHERE key = :key"), {"key": f"{key}_b"})


def _aware(value: object) -> dt.datetime | None:
    """A timestamp read through raw SQL: SQLite gives text, PostgreSQL a datetime."""
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    assert isinstance(value, dt.datetime)
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def downgrade() -> None:
    op.drop_index("ix_messages_experiment", table_name="messages")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_column("experiment_id")
    op.drop_table("digest_runs")
    op.drop_index("ix_experiments_status", table_name="experiments")
    op.drop_table("experiments")
