"""The owner's weekly digest: last week's figures by e-mail and/or text message.

When (due, pure, `now` passed in): on digest.day at digest.hour in the business time
zone (Monday 8:00 by default), reporting the Monday-to-Sunday week before the one the
digest is sent in. The local time is turned into UTC for each week on its own, so the
digest keeps its local hour across DST changes (8:00 in Chicago is 14:00 UTC in winter,
13:00 UTC in summer); an hour that does not exist that day (spring forward) goes out an
hour later. A digest not sent at its time (the agent was down) still goes out up to
LATE_LIMIT later, then that week is skipped.

Exactly once: a DigestRun row per week (unique) is written, in the same transaction as
the texts to the mobile recipients (queued in the outbox like other staff alerts),
before the e-mail is handed to the SMTP server ([digest.smtp] in the config file). A
restart finds the row and sends nothing again; a failed e-mail is logged and recorded
on the row (status "failed"), not retried, so nobody gets it twice.

What it says: missed calls, texted, replied, booked, the revenue (booked jobs × the
average job value, when set), the slowest staff answer to a customer's text, the hour
of the week with the most missed calls, and the experiments that reached a result or
whose winner was adopted during the week.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session, aliased

from agent.config import Config, SmtpConfig
from agent.messages import kinds, outbox
from agent.reports import wording
from agent.rules import experiments, settings, templates
from agent.store.models import DigestRun, Message

log = logging.getLogger(__name__)

T = TypeVar("T")
Db = Callable[[Callable[[Session], T]], Awaitable[T]]

LATE_LIMIT = dt.timedelta(hours=24)
SENDING, SENT, FAILED = "sending", "sent", "failed"
SMTP_TIMEOUT = 30.0
_DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


@dataclass(frozen=True)
class Due:
    week: str  # the ISO week the digest is sent in, "2026-W49": one digest per week
    due_at: dt.datetime  # UTC
    first: dt.date  # the local week reported, Monday…
    last: dt.date  # …to Sunday


def due(now: dt.datetime, zone: ZoneInfo, day: str, hour: int) -> Due | None:
    """This week's digest when its local time has come (and not LATE_LIMIT ago), else None."""
    local = now.astimezone(zone)
    monday = local.date() - dt.timedelta(days=local.weekday())
    send_date = monday + dt.timedelta(days=settings.WEEKDAYS.index(day))
    # fold=0: an hour that does not exist that day reads with the offset before the change
    due_at = dt.datetime.combine(send_date, dt.time(hour), zone).astimezone(dt.UTC)
    if not due_at <= now < due_at + LATE_LIMIT:
        return None
    iso = send_date.isocalendar()
    return Due(f"{iso.year}-W{iso.week:02d}", due_at, monday - dt.timedelta(days=7),
               monday - dt.timedelta(days=1))


@dataclass(frozen=True)
class Digest:
    business: str
    zone: str
    first: dt.date
    last: dt.date
    missed: int
    texted: int
    replied: int
    booked: int
    revenue: str  # "900 (3 booked jobs × 300)" or the recovered leads without a job value
    slowest: str  # "2 h 5 min (a text on Tue 1 Dec at 14:02)" or "none answered"
    worst_hour: str  # "Tuesday 9:00–10:00 (4 missed calls)" or "no missed calls"
    results: tuple[str, ...]  # one line per experiment that reached a result


def _slowest(session: Session, start: dt.datetime, end: dt.datetime, zone: ZoneInfo) -> str:
    """The longest wait from a customer's text (received in the week) to staff's first
    text answer after it; texts still unanswered are counted beside it."""
    answer = aliased(Message)
    answered_at = (select(func.min(answer.created_at)).where(
        answer.number == Message.number, answer.direction == "out",
        answer.kind == kinds.STAFF_REPLY, answer.created_at >= Message.created_at)
        .correlate(Message).scalar_subquery())
    rows = session.execute(select(Message.created_at, answered_at).where(
        Message.direction == "in", Message.created_at >= start,
        Message.created_at < end)).all()
    waits = []
    unanswered = 0
    for received, answered in rows:
        if answered is None:
            unanswered += 1
            continue
        if isinstance(answered, str):  # SQLite's MIN() comes back as text
            answered = dt.datetime.fromisoformat(answered)
        if answered.tzinfo is None:
            answered = answered.replace(tzinfo=dt.UTC)
        waits.append((answered - received, received))
    waiting = f"; {unanswered:,} not answered by text" if unanswered else ""
    if not waits:
        return f"no customer text answered by text{waiting}" if rows else "no customer texts"
    wait, received = max(waits)
    local = received.astimezone(zone)
    return (f"{wording.format_seconds(wait.total_seconds())} (a text on "
            f"{local:%a} {local.day} {local:%b} at {local:%H:%M}){waiting}")


def _worst_hour(per_slot: dict[tuple[int, int], list[int]]) -> str:
    missed = {slot: counts[1] for slot, counts in per_slot.items() if counts[1]}
    if not missed:
        return "no missed calls"
    (weekday, hour), count = max(missed.items(), key=lambda item: (item[1], -item[0][0],
                                                                     -item[0][1]))
    return (f"{_DAY_NAMES[weekday]} {hour}:00–{hour + 1}:00 ({count:,} missed "
            f"call{'' if count == 1 else 's'})")


def _results(session: Session, start: dt.datetime, end: dt.datetime,
             now: dt.datetime) -> tuple[str, ...]:
    lines = []
    from agent.reports import experiment_counts

    for report in experiment_counts.recent(session, now, days=8, limit=20):
        if report.status == experiments.ADOPTED and report.stopped_at is not None \
                and start <= report.stopped_at < end:
            lines.append(f"{report.name}: cell {report.adopted_cell} adopted.")
        elif report.status == experiments.RUNNING and report.reached_result:
            found = " ".join(factor.note for factor in report.factors if factor.winner)
            lines.append(f"{report.name}: {found} Adopt it in Settings › Experiments.")
    return tuple(lines)


def figures(session: Session, first: dt.date, last: dt.date, now: dt.datetime) -> Digest:
    """The digest of the local days first…last (the dashboard's own counts)."""
    from agent.reports import dashboard  # the agent loads the figures only when one is due

    shown = dashboard.report(session, {"from": first.isoformat(), "to": last.isoformat()},
                             now)
    c = shown.figures.counts
    booked_customers = len(shown.figures.booked_contacts)  # each counted once
    job_value = float(settings.get(session, "business.average_job_value") or 0)
    if job_value > 0:
        revenue = (f"{booked_customers * job_value:,.0f} ({booked_customers:,} booked "
                   f"job{'' if booked_customers == 1 else 's'} × {job_value:,.0f})")
    else:
        revenue = (f"n/a ({c['recovered']:,} recovered leads; set "
                   "business.average_job_value for revenue)")
    start, end = shown.period.start, shown.period.end
    return Digest(
        settings.get(session, "business.name"), shown.zone.key, first, last, c["missed"],
        c["texted"], c["replied"], c["booked"], revenue,
        _slowest(session, start, end, shown.zone),
        _worst_hour(shown.per_slot), _results(session, start, end, now))


def _span(digest: Digest) -> str:
    return (f"{digest.first:%a} {digest.first.day} {digest.first:%b} to "
            f"{digest.last:%a} {digest.last.day} {digest.last:%b %Y}")


def email_text(digest: Digest) -> tuple[str, str]:
    """(subject, body) of the e-mail."""
    subject = f"{digest.business}: last week's missed calls ({_span(digest)})"
    lines = [
        f"Last week at {digest.business} ({_span(digest)}, {digest.zone}):",
        "",
        f"Missed calls:  {digest.missed:,}",
        f"Texted:        {digest.texted:,}",
        f"Replied:       {digest.replied:,}",
        f"Booked:        {digest.booked:,}",
        f"Revenue:       {digest.revenue}",
        f"Slowest staff response: {digest.slowest}",
        f"Worst hour:    {digest.worst_hour}",
        "",
    ]
    if digest.results:
        lines += ["Experiments with a result:", *(f"- {line}" for line in digest.results), ""]
    else:
        lines += ["No experiment reached a result this week.", ""]
    lines.append("The dashboard has the details; this digest is set in Settings › Business.")
    return subject, "\n".join(lines) + "\n"


def sms_text(digest: Digest) -> str:
    """The short version for mobile recipients."""
    text = (f"{digest.business}, last week: {digest.missed:,} missed calls, "
            f"{digest.texted:,} texted, {digest.replied:,} replied, {digest.booked:,} "
            f"booked. Revenue {digest.revenue.split(' (')[0]}. Worst hour: "
            f"{digest.worst_hour.split(' (')[0]}.")
    if digest.results:
        text += f" {len(digest.results)} experiment result(s): see the dashboard."
    return text


@dataclass(frozen=True)
class Claimed:
    run_id: int
    week: str
    emails: tuple[str, ...]
    subject: str
    body: str


def claim(session: Session, now: dt.datetime, region: str | None) -> Claimed | None:
    """The digest due now, recorded (and its texts queued) so it is never sent twice;
    None when nothing is due, it is off, or this week's went already."""
    values = settings.all_values(session)
    recipients = values["digest.recipients"]
    if not values["digest.enabled"] or not recipients:
        return None
    zone = settings.business_zone(session)
    found = due(now, zone, values["digest.day"], values["digest.hour"])
    if found is None or session.scalar(select(DigestRun.id).where(
            DigestRun.week == found.week)) is not None:
        return None
    run = DigestRun(week=found.week, due_at=found.due_at, status=SENDING, created_at=now)
    session.add(run)
    session.flush()
    digest = figures(session, found.first, found.last, now)
    short = sms_text(digest)
    info = templates.segments(short)
    for number in (r for r in recipients if "@" not in r):
        outbox.enqueue(session, now=now, kind=kinds.ALERT, number=number, body=short,
                       idempotency_key=f"digest:{found.week}:{number}",
                       encoding=info.encoding, segments=info.segments)
    subject, body = email_text(digest)
    emails = tuple(r for r in recipients if "@" in r)
    log.info("weekly digest %s (%s to %s) queued for %d number(s) and %d address(es)",
             found.week, found.first, found.last, len(recipients) - len(emails), len(emails))
    return Claimed(run.id, found.week, emails, subject, body)


def send_email(smtp: SmtpConfig, to: tuple[str, ...], subject: str, body: str) -> None:
    """Hand one e-mail to the SMTP server (blocking: run it off the event loop)."""
    # loaded when a digest goes out, not in every agent (memory on a Pi)
    import smtplib
    import ssl
    from email.message import EmailMessage

    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = smtp.sender, ", ".join(to), subject
    message.set_content(body)
    context = ssl.create_default_context()
    if smtp.security == "ssl":
        client: smtplib.SMTP = smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=SMTP_TIMEOUT,
                                                context=context)
    else:
        client = smtplib.SMTP(smtp.host, smtp.port, timeout=SMTP_TIMEOUT)
    with client:
        if smtp.security == "starttls":
            client.starttls(context=context)
        if smtp.username:
            client.login(smtp.username, smtp.password)
        client.send_message(message)


def finish(session: Session, run_id: int, now: dt.datetime, error: str | None) -> None:
    run = session.get(DigestRun, run_id)
    assert run is not None
    run.status, run.detail, run.done_at = (FAILED if error else SENT), error, now


def _smtp_error() -> type[Exception]:
    import smtplib

    return smtplib.SMTPException


async def run_once(db: Db[Any], config: Config, now: dt.datetime) -> str | None:
    """Send this week's digest if it is due; the week sent, or None. The agent calls this
    every minute; the SMTP conversation runs on a thread, never on the database's."""
    claimed: Claimed | None = await db(lambda s: claim(s, now, config.pbx.default_region))
    if claimed is None:
        return None
    error = None
    if claimed.emails:
        smtp = config.digest.smtp
        if not smtp.configured:
            error = "no [digest.smtp] in the config file: e-mail recipients were skipped"
        else:
            try:
                await asyncio.to_thread(send_email, smtp, claimed.emails, claimed.subject,
                                        claimed.body)
            except (OSError, _smtp_error()) as exc:
                error = f"the SMTP server {smtp.host}:{smtp.port}: {exc}"
    if error:
        log.error("weekly digest %s: %s", claimed.week, error)
    await db(lambda s: finish(s, claimed.run_id, now, error))
    return claimed.week


def preview(session: Session, now: dt.datetime) -> str:
    """`textback digest --preview`: the digest of the last full week before `now`."""
    zone = settings.business_zone(session)
    local = now.astimezone(zone).date()
    monday = local - dt.timedelta(days=local.weekday())
    digest = figures(session, monday - dt.timedelta(days=7), monday - dt.timedelta(days=1),
                     now)
    subject, body = email_text(digest)
    return f"Subject: {subject}\n\n{body}\nText message:\n{sms_text(digest)}\n"


def last_runs(session: Session, limit: int = 5) -> list[DigestRun]:
    return list(session.scalars(select(DigestRun).order_by(DigestRun.id.desc()).limit(limit)))

