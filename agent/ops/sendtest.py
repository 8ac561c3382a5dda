"""`textback send-test` and `textback messages`: IT staff check the SMS path by hand.

A test SMS is an outbox row like any other (kind "test", no idempotency key)
before a transport sees it, and goes through the dispatcher's own send step, so
what it proves is what the agent does. While an agent runs on the database, the
row is queued pinned to the chosen transport and the running agent sends it (it
holds the modem's port and the AMI link); only when no agent runs does send-test
open the transport itself.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import socket
import time
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from agent.config import Config
from agent.messages import kinds, outbox
from agent.rules import numbers, templates
from agent.store import lock
from agent.store.db import DbRunner, check_schema, make_engine
from agent.store.models import Message, MessagePart
from agent.transports.dispatcher import Dispatcher

log = logging.getLogger(__name__)


class SendTestError(Exception):
    """Worded for the person at the shell."""


async def _leave_on_sim(_: object) -> None:
    # the agent stores incoming SMS; this short-lived process leaves them on the SIM
    raise RuntimeError("send-test does not store incoming SMS; the agent will")


async def _transport(cfg: Config, name: str, db: DbRunner) -> tuple[Any, Any]:
    """(transport, task keeping it alive) once it is ready to send."""
    if name == "gsm":
        from agent.transports.gsm import GsmModemTransport
        from agent.transports.modem.driver import Modem, find_port

        if find_port(cfg.sms.gsm.port) is None:
            raise SendTestError(f"no modem at {cfg.sms.gsm.port} ([sms.gsm] port in "
                                f"{cfg.path}); is it plugged in? run `textback doctor`")
        modem = Modem(cfg.sms.gsm, on_deliver=_leave_on_sim, on_report=_leave_on_sim)
        task = asyncio.get_running_loop().create_task(modem.run())
        try:
            await asyncio.wait_for(modem.ready.wait(), 20)
        except TimeoutError:
            task.cancel()
            raise SendTestError(
                f"the modem ({cfg.sms.gsm.port}) is not ready: "
                f"{modem.problem or 'not found, busy or not answering'}; if the agent is "
                "running it holds the port (stop it, or let it send); run `textback doctor`"
            ) from None
        return GsmModemTransport(cfg.sms.gsm, modem, db), task
    if name in ("twilio", "telnyx"):  # HTTP: nothing to keep alive but the client
        from agent.transports.telnyx import TelnyxTransport
        from agent.transports.twilio import TwilioTransport

        provider = (TwilioTransport(cfg.sms.twilio, cfg.web.public_url, db)
                    if name == "twilio" and cfg.sms.twilio is not None else
                    TelnyxTransport(cfg.sms.telnyx, cfg.web.public_url, db)
                    if name == "telnyx" and cfg.sms.telnyx is not None else None)
        if provider is None:
            raise SendTestError(f"[sms.{name}] is not in {cfg.path}; see the README's "
                                "\"US texting\"")
        return provider, asyncio.get_running_loop().create_task(provider.client_closed())
    from agent.pbx.ami import AmiLink
    from agent.transports.sip import SipTrunk

    ami = AmiLink(cfg.ami, lambda _event: None, config_path=str(cfg.path), events="off")
    task = asyncio.get_running_loop().create_task(ami.run())
    if not await ami.wait_up(8):
        task.cancel()
        raise SendTestError(f"AMI login failed: {ami.last_error}; run `textback doctor`")
    return SipTrunk(cfg.sms.sip, ami), task


def queue_test(session: Session, now: dt.datetime, number: str, text: str, *,
               transport: str | None = None, claim_for: str | None = None) -> Message:
    """Queue one test text: an outbox row like any other (kind "test", no idempotency
    key), its encoding and SMS parts counted as for any text. The caller checks the
    number and commits.

    `transport` pins it to that transport, with no failover: the transports page tests one
    route through the running agent. `claim_for` claims it at once for that worker:
    `textback send-test` sends it itself, through the one transport it opened.
    """
    info = templates.segments(text)
    message = outbox.enqueue(session, now=now, kind=kinds.TEST, number=number, body=text,
                             idempotency_key=None, encoding=info.encoding,
                             segments=info.segments, claim_for=claim_for, transport=transport)
    assert message is not None  # no idempotency key: never a duplicate
    return message


# how often send-test looks whether the running agent has sent its text
POLL = 0.2


def send_test(cfg: Config, to: str, text: str, transport: str) -> Message:
    number = numbers.to_e164(to, cfg.pbx.default_region)
    if number is None:
        raise SendTestError(f"{to!r} is not a phone number (region {cfg.pbx.default_region})")
    engine = make_engine(cfg.database.url)
    check_schema(engine)
    db = DbRunner(engine)
    timeout = (cfg.sms.gsm.send_timeout if transport == "gsm" else 10) + 30
    try:
        held = lock.acquire(cfg.database.url, "send-test")
    except lock.LockHeld as running:
        log.info("an agent runs (%s): it sends the test text",
                 running.holder.describe() if running.holder else "starting")
        try:
            return _through_the_agent(db, number, text, transport, timeout)
        finally:
            db.close()
    with held:  # no agent may start and open the port meanwhile
        return _by_itself(cfg, db, number, text, transport, timeout)


def _through_the_agent(db: DbRunner, number: str, text: str, transport: str,
                       timeout: float) -> Message:
    """Queue the text pinned to `transport`; the running agent sends it. Waits for the
    outcome, as the person at the shell wants to know it."""
    queued = db.run(lambda s: queue_test(s, dt.datetime.now(dt.UTC), number, text,
                                         transport=transport))
    deadline = time.monotonic() + timeout
    while True:
        message = db.run(lambda s: s.get_one(Message, queued.id))
        if message.status in (*outbox.LEFT, *outbox.FINAL):
            return message
        if time.monotonic() >= deadline:
            raise SendTestError(
                f"the running agent has not sent message {queued.id} within {timeout:g} s "
                f"(it is {message.status}); see `textback messages` and the transports page")
        time.sleep(POLL)


def _by_itself(cfg: Config, db: DbRunner, number: str, text: str, transport: str,
               timeout: float) -> Message:
    worker = f"{socket.gethostname()}/send-test"

    async def main() -> int:
        chosen, task = await _transport(cfg, transport, db)

        def queue(session: Session) -> outbox.OutboundSms:
            return outbox.outbound(queue_test(session, dt.datetime.now(dt.UTC), number, text,
                                              claim_for=worker))

        try:
            sms = await db(queue)
            dispatcher = Dispatcher(db, [chosen], worker=worker, max_attempts=1)
            dispatcher.submit(sms)
            await dispatcher.drain(timeout=timeout)
            return sms.id
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    try:
        message_id = asyncio.run(main())
        return db.run(lambda s: s.get_one(Message, message_id))
    finally:
        db.close()


def recent(cfg: Config, limit: int) -> list[dict[str, Any]]:
    """The newest messages, in and out, as plain dicts (for `textback messages`)."""
    engine = make_engine(cfg.database.url)
    check_schema(engine)
    db = DbRunner(engine)

    def read(session: Session) -> list[dict[str, Any]]:
        rows = session.scalars(select(Message).order_by(Message.id.desc()).limit(limit)).all()
        parts = dict(session.execute(
            select(MessagePart.message_id, func.count())
            .where(MessagePart.message_id.in_([m.id for m in rows]))
            .group_by(MessagePart.message_id)).all())
        return [{
            "id": m.id, "direction": m.direction, "number": m.number, "body": m.body,
            "status": m.status, "transport": m.transport,
            "parts": parts.get(m.id) or m.segments, "kind": m.kind,
            "created_at": m.created_at.isoformat(), "updated_at": m.updated_at.isoformat(),
            "error": m.error,
        } for m in rows]

    try:
        return db.run(read)
    finally:
        db.close()
