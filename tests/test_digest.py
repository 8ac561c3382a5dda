"""The weekly digest through a real SMTP server (aiosmtpd, in this process): it arrives
at the configured local hour, across the end of daylight saving time in Chicago, once a
week even after a restart, with the right figures for a seeded week; mobile recipients
get a text queued in the outbox; `textback digest --preview` prints the same figures."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
from collections.abc import Iterator
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiosmtpd.controller import Controller
from click.testing import CliRunner
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from agent import cli
from agent.config import parse
from agent.messages import kinds
from agent.reports import digest
from agent.rules import experiments, settings
from agent.store.db import DbRunner
from agent.store.models import Call, Contact, DigestRun, Message, MessageEvent

pytestmark = pytest.mark.clock  # times are passed in; make test-clock reruns it too

DATABASES = ("sqlite", "postgresql")  # the digest reads both the same
def _free_port() -> int:
    # a port of its own: the suite's faketime instants run side by side (make test-clock)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


SMTP_PORT = _free_port()
CHICAGO = ZoneInfo("America/Chicago")
SETUP = dt.datetime(2026, 10, 1, tzinfo=dt.UTC)
OWNER_MOBILE = "+13125550100"


def chicago(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=CHICAGO)


class Inbox:
    """What the SMTP server received."""

    def __init__(self) -> None:
        self.mail: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = message_from_bytes(envelope.content, policy=policy.default)
        self.mail.append((envelope.rcpt_tos, parsed))
        return "250 OK"


@pytest.fixture(scope="module")
def smtp() -> Iterator[Inbox]:
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=SMTP_PORT)
    controller.start()
    yield inbox
    controller.stop()


def _config(engine: Engine, tmp_path: Path) -> Any:
    return parse({"ami": {"secret": "x"},
                  "database": {"url": engine.url.render_as_string(hide_password=False)},
                  "digest": {"smtp": {"host": "127.0.0.1", "port": SMTP_PORT,
                                      "security": "none",
                                      "sender": "textback@rapidrooter.example"}}},
                 tmp_path / "textback.toml")


def _missed(session: Session, n: int, when: dt.datetime, *, texted: bool = True,
            reply_after: dt.timedelta | None = None, staff_after: dt.timedelta | None = None,
            booked: bool = False) -> None:
    """One missed call at local time `when`, its text-back, the reply, staff's answer."""
    number = f"+1312555{n:04d}"
    at = when.astimezone(dt.UTC)
    contact = Contact(number=number, created_at=at, source="call",
                      booked_at=at + dt.timedelta(hours=3) if booked else None)
    session.add(contact)
    session.flush()
    call = Call(linkedid=f"17.{n}", caller=number, direction="inbound", missed=True,
                reason="noanswer", started_at=at - dt.timedelta(seconds=25), ended_at=at,
                decision="send" if texted else "skip", contact_id=contact.id)
    session.add(call)
    session.flush()
    if not texted:
        return
    text = Message(direction="out", kind=kinds.TEXTBACK, idempotency_key=f"17.{n}:textback",
                   number=number, body="Sorry we missed you", status="sent", attempts=1,
                   created_at=at, updated_at=at, call_id=call.id, contact_id=contact.id)
    session.add(text)
    session.flush()
    session.add(MessageEvent(message_id=text.id, status="sent", at=at + dt.timedelta(seconds=2)))
    if reply_after is not None:
        replied = at + reply_after
        session.add(Message(direction="in", kind=kinds.SMS, number=number, body="Leaking pipe",
                            status="received", created_at=replied, updated_at=replied,
                            contact_id=contact.id))
        if staff_after is not None:
            answered = replied + staff_after
            session.add(Message(direction="out", kind=kinds.STAFF_REPLY, number=number,
                                body="On our way", status="sent", attempts=1,
                                created_at=answered, updated_at=answered,
                                contact_id=contact.id))


def _seed(session: Session) -> None:
    """The week of Mon 26 Oct – Sun 1 Nov 2026 in Chicago (daylight saving time ends on
    the Sunday), plus calls just outside it that must not count."""
    for key, value in (("business.name", "Rapid Rooter Plumbing"),
                       ("business.timezone", "America/Chicago"),
                       ("business.average_job_value", 300), ("digest.enabled", True),
                       ("digest.recipients", ["owner@rapidrooter.example", OWNER_MOBILE])):
        settings.set(session, key, value, SETUP)
    # Tuesday 9–10: three missed calls, the worst hour
    _missed(session, 1, chicago(2026, 10, 27, 9, 5), reply_after=dt.timedelta(minutes=2),
            staff_after=dt.timedelta(minutes=10), booked=True)
    _missed(session, 2, chicago(2026, 10, 27, 9, 20), reply_after=dt.timedelta(minutes=1),
            staff_after=dt.timedelta(hours=2, minutes=5))
    _missed(session, 3, chicago(2026, 10, 27, 9, 40))
    _missed(session, 4, chicago(2026, 10, 29, 16, 0), booked=True)
    _missed(session, 5, chicago(2026, 11, 1, 23, 30), texted=False)  # Sunday night, CST
    # outside the week: the Sunday before, and the Monday of the digest itself
    _missed(session, 6, chicago(2026, 10, 25, 23, 50))
    _missed(session, 7, chicago(2026, 11, 2, 0, 10))
    _experiment_with_a_result(session)
    session.commit()


def _experiment_with_a_result(session: Session) -> None:
    """Two whole texts tested in early October: B answered by 25 of 40, A by 5 of 40."""
    start = chicago(2026, 10, 1, 9).astimezone(dt.UTC)
    row = experiments.start(session, start, name="Spring texts", kind="text",
                            template="templates.business_hours",
                            design={"text": [None, "Sorry we missed you. Reply here."]},
                            actor="owner")
    for cell, replies in (("A", 5), ("B", 25)):
        for i in range(40):
            at = start + dt.timedelta(minutes=10 * i + (5 if cell == "B" else 0))
            number = f"+1773555{i:02d}{ord(cell)}"
            text = Message(direction="out", kind=kinds.TEXTBACK, number=number, body="x",
                           status="sent", attempts=1, created_at=at, updated_at=at,
                           experiment_id=row.id, variant=cell)
            session.add(text)
            session.flush()
            session.add(MessageEvent(message_id=text.id, status="sent", at=at))
            if i < replies:
                session.add(Message(direction="in", kind=kinds.SMS, number=number,
                                    body="ok", status="received", created_at=at,
                                    updated_at=at))


def test_the_digest_arrives_at_8_local_across_the_dst_change_once_with_the_figures(
        engine: Engine, session: Session, tmp_path: Path, smtp: Inbox) -> None:
    _seed(session)
    config = _config(engine, tmp_path)

    async def run(now: dt.datetime) -> str | None:
        runner = DbRunner(engine)  # a new one each time, as after a restart
        try:
            return await digest.run_once(runner, config, now)
        finally:
            runner._pool.shutdown(wait=True)

    # the Monday before: 8:00 CDT is 13:00 UTC
    assert asyncio.run(run(dt.datetime(2026, 10, 26, 12, 59, tzinfo=dt.UTC))) is None
    assert asyncio.run(run(dt.datetime(2026, 10, 26, 13, 0, tzinfo=dt.UTC))) == "2026-W44"
    # after the change 8:00 CST is 14:00 UTC: 13:00 UTC is 7:00 local, not yet
    smtp.mail.clear()
    assert asyncio.run(run(dt.datetime(2026, 11, 2, 13, 0, tzinfo=dt.UTC))) is None
    assert asyncio.run(run(dt.datetime(2026, 11, 2, 13, 59, 59, tzinfo=dt.UTC))) is None
    assert smtp.mail == []
    assert asyncio.run(run(dt.datetime(2026, 11, 2, 14, 0, tzinfo=dt.UTC))) == "2026-W45"
    # later that day, and after a restart: nothing again
    assert asyncio.run(run(dt.datetime(2026, 11, 2, 14, 1, tzinfo=dt.UTC))) is None
    assert asyncio.run(run(dt.datetime(2026, 11, 2, 20, 0, tzinfo=dt.UTC))) is None

    assert len(smtp.mail) == 1
    recipients, mail = smtp.mail[0]
    assert recipients == ["owner@rapidrooter.example"]
    assert mail["Subject"] == ("Rapid Rooter Plumbing: last week's missed calls "
                               "(Mon 26 Oct to Sun 1 Nov 2026)")
    body = mail.get_content().replace("\r\n", "\n")
    assert "Missed calls:  5\n" in body
    assert "Texted:        4\n" in body
    assert "Replied:       2\n" in body
    assert "Booked:        2\n" in body
    assert "Revenue:       600 (2 booked jobs × 300)\n" in body
    assert "Slowest staff response: 2 h 5 min (a text on Tue 27 Oct at 09:21)" in body
    assert "Worst hour:    Tuesday 9:00–10:00 (3 missed calls)" in body
    assert ("Experiments with a result:\n- Spring texts: Text B has the better reply rate "
            "(50 points with 40 and 40 texts; the 95% interval leaves out zero): unlikely to "
            "be chance. Adopt it in Settings › Experiments.\n") in body

    with session.begin():
        runs = {r.week: r.status for r in session.scalars(select(DigestRun))}
        texts = session.scalars(select(Message).where(
            Message.number == OWNER_MOBILE, Message.kind == kinds.ALERT)).all()
    assert runs == {"2026-W44": "sent", "2026-W45": "sent"}
    assert [t.idempotency_key for t in texts] == [f"digest:2026-W44:{OWNER_MOBILE}",
                                                  f"digest:2026-W45:{OWNER_MOBILE}"]
    assert texts[1].status == "queued"
    assert texts[1].body == ("Rapid Rooter Plumbing, last week: 5 missed calls, 4 texted, "
                             "2 replied, 2 booked. Revenue 600. Worst hour: Tuesday "
                             "9:00–10:00. 1 experiment result(s): see the dashboard.")


def test_due_is_the_local_hour_each_week_and_never_a_missing_one() -> None:
    # spring forward in Chicago: Sunday 8 March 2026, 2:00 does not exist
    found = digest.due(dt.datetime(2026, 3, 8, 9, tzinfo=dt.UTC), CHICAGO, "sunday", 2)
    assert found is not None and found.due_at == dt.datetime(2026, 3, 8, 8, tzinfo=dt.UTC)
    assert (found.first, found.last) == (dt.date(2026, 2, 23), dt.date(2026, 3, 1))
    # a digest the agent could not send in time goes out late, but not days late
    monday = dt.datetime(2026, 11, 2, 14, tzinfo=dt.UTC)
    assert digest.due(monday + dt.timedelta(hours=23), CHICAGO, "monday", 8) is not None
    assert digest.due(monday + dt.timedelta(hours=25), CHICAGO, "monday", 8) is None


def test_a_failing_smtp_server_is_recorded_and_not_retried(
        engine: Engine, session: Session, tmp_path: Path) -> None:
    _seed(session)
    config = parse({"ami": {"secret": "x"},
                    "database": {"url": engine.url.render_as_string(hide_password=False)},
                    "digest": {"smtp": {"host": "127.0.0.1", "port": 1, "security": "none",
                                        "sender": "textback@rapidrooter.example"}}},
                   tmp_path / "textback.toml")
    runner = DbRunner(engine)
    try:
        now = dt.datetime(2026, 11, 2, 14, 5, tzinfo=dt.UTC)
        assert asyncio.run(digest.run_once(runner, config, now)) == "2026-W45"
        assert asyncio.run(digest.run_once(runner, config, now)) is None
    finally:
        runner._pool.shutdown(wait=True)
    with session.begin():
        run = session.scalars(select(DigestRun)).one()
    assert run.status == "failed" and "127.0.0.1:1" in (run.detail or "")


def test_preview_prints_last_weeks_digest(engine: Engine, session: Session,
                                          tmp_path: Path) -> None:
    _seed(session)
    path = tmp_path / "textback.toml"
    secret = tmp_path / "ami.secret"
    secret.write_text("x")
    secret.chmod(0o600)
    path.write_text(f'[ami]\nsecret_file = "{secret}"\n[database]\n'
                    f'url = "{engine.url.render_as_string(hide_password=False)}"\n')
    result = CliRunner().invoke(cli.main, ["digest", "--config", str(path), "--preview",
                                           "--at", "2026-11-04T10:00-06:00"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Subject: Rapid Rooter Plumbing: last week's missed "
                                    "calls (Mon 26 Oct to Sun 1 Nov 2026)")
    assert "Missed calls:  5\n" in result.output
    assert "Text message:\nRapid Rooter Plumbing, last week: 5 missed calls" in result.output
    with session.begin():
        assert session.scalars(select(DigestRun)).all() == []  # a preview sends nothing
