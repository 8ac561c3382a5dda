"""The database schema (SQLAlchemy 2.x declarative models).

Every table here is migrated by Alembic (agent/migrations); change both together.
Timestamps are stored as UTC and come back timezone-aware.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Aware datetimes in, aware UTC datetimes out, on SQLite and PostgreSQL alike."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


class Base(DeclarativeBase):
    pass


class Setting(Base):
    """A business rule (hours, templates, cooldown…) as JSON; absent means the default."""

    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON, nullable=False)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)


class Contact(Base):
    __tablename__ = "contacts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    number: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)  # E.164
    name: Mapped[str | None] = mapped_column(String(200))
    opted_out: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    opted_out_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    tags: Mapped[list[str]] = mapped_column(JSON, default=list, nullable=False)
    source: Mapped[str] = mapped_column(String(32), default="call", nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    # when staff last reached this person (a reply, an answered call back, or marked
    # so by hand): follow-ups and escalations stop there
    contacted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # the inbox: one conversation per contact (agent.messages.inbox). The first staff member to
    # act on it owns it; a customer's call or text reopens a closed one. The inbox
    # lists by last_message_at (the customer's or staff's latest move, not automatic
    # texts); "waiting" is a customer move (last_inbound_at) after contacted_at.
    assigned_to: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", name="fk_contacts_assigned_to_users"))
    conversation_status: Mapped[str] = mapped_column(
        String(16), default="open", server_default="open", nullable=False)  # open | closed
    last_message_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_inbound_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # when staff marked the conversation as a job booked: the dashboard counts these as
    # recovered calls that became work (and compares them per A/B variant)
    booked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # when staff marked the conversation "qualified" (a real lead, whatever its words):
    # the dashboard's qualified conversation rate counts these beside the reply's intent
    qualified_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index("ix_contacts_status_last", "conversation_status", "last_message_at"),
        Index("ix_contacts_assigned_last", "assigned_to", "last_message_at"),
        Index("ix_contacts_last", "last_message_at"),
        # the dashboard's daily figures find the customers reached, booked, opted out or
        # qualified since they were counted (agent.reports.rollups)
        Index("ix_contacts_contacted", "contacted_at"),
        Index("ix_contacts_booked", "booked_at"),
        Index("ix_contacts_opted_out", "opted_out_at"),
        Index("ix_contacts_qualified", "qualified_at"),
    )


class Call(Base):
    """One finished call (all legs of one Linkedid) and what textback decided about it."""

    __tablename__ = "calls"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    linkedid: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    caller: Mapped[str | None] = mapped_column(String(64))  # E.164 where it normalises
    caller_raw: Mapped[str | None] = mapped_column(String(200))
    caller_name: Mapped[str | None] = mapped_column(String(200))
    did: Mapped[str | None] = mapped_column(String(64))
    direction: Mapped[str] = mapped_column(String(16), nullable=False)
    missed: Mapped[bool] = mapped_column(Boolean, nullable=False)
    reason: Mapped[str | None] = mapped_column(String(32))
    voicemail_left: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    answered_by: Mapped[str | None] = mapped_column(String(200))
    ring_seconds: Mapped[float] = mapped_column(Float, default=0.0, nullable=False)
    trunk_endpoint: Mapped[str | None] = mapped_column(String(200))
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    ended_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    # "send" or "skip"; skip_reason says why no text went out (anonymous, cooldown…)
    decision: Mapped[str | None] = mapped_column(String(16))
    skip_reason: Mapped[str | None] = mapped_column(String(64))
    # "live" (seen on AMI) or "cdr" (learnt from the CDR file after an AMI outage)
    source: Mapped[str] = mapped_column(String(16), default="live", nullable=False)
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id"))

    # the call log pages newest first, all calls or missed only, without a sort
    __table_args__ = (
        Index("ix_calls_caller_ended", "caller", "ended_at"),
        Index("ix_calls_started", "started_at"),
        Index("ix_calls_missed_started", "missed", "started_at"),
    )


class Message(Base):
    """An SMS in or out. Outbound rows are written before any transport sees them."""

    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    direction: Mapped[str] = mapped_column(String(8), nullable=False)  # "out" | "in"
    kind: Mapped[str] = mapped_column(String(32), nullable=False)  # "textback", "test", "reply"…
    # one call never texts twice: "<linkedid>:textback"; NULL for messages without one
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    number: Mapped[str] = mapped_column(String(64), nullable=False)  # the customer's, E.164
    from_number: Mapped[str | None] = mapped_column(String(64))  # our DID
    body: Mapped[str] = mapped_column(Text, nullable=False)
    template: Mapped[str | None] = mapped_column(String(100))
    variant: Mapped[str | None] = mapped_column(String(32))
    encoding: Mapped[str | None] = mapped_column(String(8))  # "GSM-7" | "UCS-2"
    segments: Mapped[int | None] = mapped_column(Integer)
    # queued → claimed → sending → submitted|sent → delivered | failed (agent.messages.outbox)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    transport: Mapped[str | None] = mapped_column(String(16))
    provider_ref: Mapped[str | None] = mapped_column(String(200))
    # a messaging API's own id of the message ("SM…", a UUID): its webhooks name it
    provider_id: Mapped[str | None] = mapped_column(String(100), unique=True)
    error: Mapped[str | None] = mapped_column(Text)
    error_kind: Mapped[str | None] = mapped_column(String(16))  # "permanent" | "temporary"
    attempts: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    claimed_by: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    call_id: Mapped[int | None] = mapped_column(ForeignKey("calls.id"))
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id"))
    # the username of the staff member who wrote it (inbox replies); accounts are
    # never deleted, so the name keeps meaning someone
    sent_by: Mapped[str | None] = mapped_column(String(64))
    # the message experiment (experiments.id) this text-back was a cell of, `variant`
    # naming the cell; no foreign key so the column is added without rebuilding the table
    experiment_id: Mapped[int | None] = mapped_column(Integer)

    history: Mapped[list[MessageEvent]] = relationship(
        back_populates="message", order_by="MessageEvent.id", cascade="all, delete-orphan"
    )

    __table_args__ = (
        Index("ix_messages_status_next", "status", "next_attempt_at"),
        Index("ix_messages_number_created", "number", "created_at"),
        # the dashboard's look-up of a customer's replies after a text-back, index-only
        Index("ix_messages_number_direction_created", "number", "direction", "created_at"),
        Index("ix_messages_experiment", "experiment_id"),
        # the dashboard's look-up of staff's first answer to a reply, index-only
        Index("ix_messages_number_kind_created", "number", "kind", "created_at"),
    )


class MessageEvent(Base):
    """The status history of a message: one row per transition, never updated."""

    __tablename__ = "message_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id"), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    detail: Mapped[str | None] = mapped_column(Text)

    message: Mapped[Message] = relationship(back_populates="history")

    # a message's history, and (index-only) when it first reached a status: the dashboard
    # asks that for every text-back of the period
    __table_args__ = (Index("ix_message_events_message_status_at", "message_id", "status", "at"),)


class Job(Base):
    """A durable timer: something to do at `due_at` (a follow-up, a reminder).

    Rows, not sleeps, so a restart loses nothing; a job is claimed and done in one
    transaction, so it never runs twice, even with two agents on one database.
    """

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)  # "followup", "reminder"…
    step: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    due_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    # pending → done | cancelled (with the reason in `detail`)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    # "followup:<message id>:<step>": the same timer is never scheduled twice
    dedupe_key: Mapped[str] = mapped_column(String(200), unique=True, nullable=False)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id"), nullable=False)
    message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id"))
    claimed_by: Mapped[str | None] = mapped_column(String(100))
    detail: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    done_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_jobs_status_due", "status", "due_at"),)


class MessagePart(Base):
    """One SMS-SUBMIT of an outbound message sent by a GSM modem.

    A long text leaves as several parts, each with its own TP-MR from the modem;
    status reports name only the TP-MR, so this is where they are matched (the
    newest part with that TP-MR: it wraps at 256). Parts already sent are not
    sent again when a message is retried after a failure half-way.
    """

    __tablename__ = "message_parts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id"), nullable=False)
    part: Mapped[int] = mapped_column(Integer, nullable=False)  # 1-based
    total: Mapped[int] = mapped_column(Integer, nullable=False)
    tp_mr: Mapped[int | None] = mapped_column(Integer)  # None: sent, answer never came
    # sent → delivered | failed (| pending while the SMSC keeps trying); "unconfirmed"
    # when the modem took the PDU but never answered
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    report_status: Mapped[int | None] = mapped_column(Integer)  # TP-ST of the last report
    sent_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    reported_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        UniqueConstraint("message_id", "part", name="uq_message_parts_message_part"),
        Index("ix_message_parts_tp_mr", "tp_mr", "sent_at"),
    )


class SmsFragment(Base):
    """A part of an incoming multipart SMS, kept until all its parts are here.

    Stored (and only then deleted from the SIM) as each part arrives, so a restart
    or a modem reset between parts loses nothing; `key` is the PDU's hash, so a part
    read twice is kept once.
    """

    __tablename__ = "sms_fragments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    sender: Mapped[str] = mapped_column(String(64), nullable=False)
    reference: Mapped[int] = mapped_column(Integer, nullable=False)  # concatenation ref
    total: Mapped[int] = mapped_column(Integer, nullable=False)
    part: Mapped[int] = mapped_column(Integer, nullable=False)
    body: Mapped[str] = mapped_column(Text, nullable=False)
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)

    __table_args__ = (Index("ix_sms_fragments_group", "sender", "reference", "total"),)


class User(Base):
    """A person who signs in to the web UI: an owner or IT person (admin) or front desk (staff).

    There is no default account and no default password: the first admin comes from
    `textback init`, the others from `textback users add` or an admin. Accounts are
    disabled, never deleted, so the audit log keeps naming who did what.
    """

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    password_hash: Mapped[str] = mapped_column(String(255), nullable=False)  # werkzeug
    role: Mapped[str] = mapped_column(String(16), nullable=False)  # "admin" | "staff"
    phone: Mapped[str | None] = mapped_column(String(64))  # E.164, for alerts
    extension: Mapped[str | None] = mapped_column(String(64))  # the desk phone, for call back
    active: Mapped[bool] = mapped_column(Boolean, default=True, nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    last_login_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # a sound and a desktop notification in the inbox for a customer's text or missed call
    desk_alerts: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true(),
                                              nullable=False)
    # every session cookie carries the generation it was signed in under; raising it
    # (sign-out, a new password, disabling, "sign out everywhere") refuses them all, on
    # the server, however the cookie was kept
    session_generation: Mapped[int] = mapped_column(
        Integer, default=0, server_default="0", nullable=False)


class AuditEntry(Base):
    """Who did what, when: logins, failed logins, account and settings changes. Never updated.

    `actor` is the signed-in username, or "cli" for the command line; `target` is
    what was acted on (the account, the setting key, or the username typed at a
    failed login, which is also what login rate limiting counts).
    """

    __tablename__ = "audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    actor: Mapped[str | None] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(32), nullable=False)
    target: Mapped[str | None] = mapped_column(String(200))
    ip: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, nullable=False)

    __table_args__ = (Index("ix_audit_target_action_at", "target", "action", "at"),)


class CallbackRequest(Base):
    """A staff member's "Call back" from the inbox, waiting for the agent.

    The web process has no AMI link, so it writes this row and the agent (the timers
    loop) claims it once — a conditional UPDATE, like the outbox — and rings the
    desk extension, then dials the customer. The result stays on the row.
    """

    __tablename__ = "callback_requests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id"), nullable=False)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), nullable=False)
    extension: Mapped[str] = mapped_column(String(64), nullable=False)  # desk, at request time
    number: Mapped[str] = mapped_column(String(64), nullable=False)  # the customer's, E.164
    # pending → calling (claimed) → ringing (Originate accepted) | failed
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    claimed_by: Mapped[str | None] = mapped_column(String(100))
    detail: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    done_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_callback_requests_status_created", "status", "created_at"),)


class RingRequest(Base):
    """A ring the web app asks of the agent: an emergency text that came through a
    messaging API's webhook rings the on-call phone, then connects it to the customer.

    The web process has no AMI link: it writes this row, and the agent's timers loop
    claims it once (a conditional UPDATE) and places the call. The result stays here.
    """

    __tablename__ = "ring_requests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    target: Mapped[str] = mapped_column(String(200), nullable=False)  # oncall.target
    number: Mapped[str] = mapped_column(String(64), nullable=False)  # the customer's, E.164
    label: Mapped[str] = mapped_column(String(32), nullable=False)  # "EMERGENCY"
    # pending → calling (claimed) → ringing (Originate accepted) | failed
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    claimed_by: Mapped[str | None] = mapped_column(String(100))
    detail: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    done_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_ring_requests_status_created", "status", "created_at"),)


class TransportStatus(Base):
    """One SMS transport's health as the running agent last saw it (one row per name).

    The web process cannot ask the agent, so the agent writes this row when the state
    changes and at least every HEARTBEAT seconds; an old `updated_at` means the agent
    is not running. Queue depth is not stored: it is a count of queued messages.
    """

    __tablename__ = "transport_status"

    name: Mapped[str] = mapped_column(String(16), primary_key=True)  # "sip" | "gsm"
    state: Mapped[str] = mapped_column(String(16), nullable=False)  # "up" | "down"
    detail: Mapped[str | None] = mapped_column(Text)  # why down, or what is up (model…)
    signal_dbm: Mapped[int | None] = mapped_column(Integer)  # the modem's, when known
    operator: Mapped[str | None] = mapped_column(String(64))
    last_error: Mapped[str | None] = mapped_column(Text)
    last_error_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)


class Experiment(Base):
    """A message experiment (agent.rules.experiments): 2 hooks, 2 CTAs, both (2×2), two
    whole texts (the A/B tests of before) or two text-back delays, one cell per caller.

    `design` holds the texts or delays of each level; `template` is the text-back
    template tested (None for a delay test, which covers every text-back).
    """

    __tablename__ = "experiments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)  # hook|cta|hook_cta|text|delay
    template: Mapped[str | None] = mapped_column(String(100))
    design: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)  # running|stopped|adopted
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    started_by: Mapped[str | None] = mapped_column(String(64))
    stopped_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    stopped_by: Mapped[str | None] = mapped_column(String(64))
    adopted_cell: Mapped[str | None] = mapped_column(String(8))  # the winner written back

    __table_args__ = (Index("ix_experiments_status", "status"),)


class DigestRun(Base):
    """One weekly digest (agent.reports.digest): one row per business week, written before
    anything is sent, so a restart never sends a week's digest twice."""

    __tablename__ = "digest_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    week: Mapped[str] = mapped_column(String(10), unique=True, nullable=False)  # "2026-W49"
    due_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)  # sending|sent|failed
    detail: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    done_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class Note(Base):
    """An internal note on a conversation, by staff for staff: never sent to anyone.
    Added only (audited); shown in the thread's timeline, visibly not a text."""

    __tablename__ = "notes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id"), nullable=False)
    author: Mapped[str] = mapped_column(String(64), nullable=False)  # username
    body: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)

    __table_args__ = (Index("ix_notes_contact_created", "contact_id", "created_at"),)


class SavedReply(Base):
    """A reply the admins wrote once for the front desk to pick (merge fields as in
    templates, filled in for the conversation it is picked in)."""

    __tablename__ = "saved_replies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    title: Mapped[str] = mapped_column(String(80), unique=True, nullable=False)
    body: Mapped[str] = mapped_column(Text, nullable=False)
    updated_by: Mapped[str] = mapped_column(String(64), nullable=False)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)


class ConversationRead(Base):
    """When a user last opened a conversation: what came from the customer after it is
    "new" for that user (each person has their own marker)."""

    __tablename__ = "conversation_reads"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id"), primary_key=True)
    seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)


class ReportDay(Base):
    """One business day's dashboard figures, counted once the day is over
    (agent.reports.rollups): what the dashboard adds up instead of rereading the calls."""

    __tablename__ = "report_days"

    zone: Mapped[str] = mapped_column(String(64), primary_key=True)  # the day's time zone
    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)  # local date
    computed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    figures: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)


class ReportMark(Base):
    """How far the daily figures of a time zone have seen the history: rows after these
    ids, and contacts changed after `checked_at`, send their days to be counted again."""

    __tablename__ = "report_marks"

    zone: Mapped[str] = mapped_column(String(64), primary_key=True)
    checked_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    call_id: Mapped[int] = mapped_column(Integer, nullable=False)
    message_id: Mapped[int] = mapped_column(Integer, nullable=False)
    event_id: Mapped[int] = mapped_column(Integer, nullable=False)
    audit_id: Mapped[int] = mapped_column(Integer, nullable=False)
