"""The dispatcher: takes due messages from the outbox and hands them to transports.

Order of a send: claim the row (queued → sending, committed) → hand it to the
first available transport in `[sms] transports` → record what happened. A
temporary failure tries the next transport, then comes back later with
exponential backoff, a bounded number of times; a permanent failure ends that
message at once, so one invalid number never holds up the ones behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Sequence

from sqlalchemy.orm import Session

from agent import outbox
from agent.conversations import EXEMPT_FROM_OPT_OUT
from agent.db import DbRunner
from agent.health import SendFailure
from agent.models import Message
from agent.outbox import OutboundSms
from agent.transports import SendError, SendResult, Transport

log = logging.getLogger(__name__)

RETRY_FIRST = 5.0  # seconds before the first retry; doubles each time
RETRY_CAP = 600.0
IDLE_POLL = 5.0  # also picks up rows other processes (web UI, CLI) queued


class RateLimiter:
    """A token bucket per transport (e.g. a SIM may send only so many per minute).

    A token is one SMS part as the network counts them: a three-part text costs
    three, so a 6/min SIM limit holds for long texts too. A text longer than the
    whole bucket goes once the bucket is full, rather than never.
    """

    def __init__(self, per_minute: int) -> None:
        self.capacity = float(max(1, per_minute))
        self.rate = self.capacity / 60.0
        self.tokens = self.capacity
        self.stamp = time.monotonic()

    def _cost(self, parts: int) -> float:
        return min(float(max(1, parts)), self.capacity)

    def take(self, now: float, parts: int = 1) -> bool:
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        cost = self._cost(parts)
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False

    def wait_time(self, parts: int = 1) -> float:
        return max(0.0, (self._cost(parts) - self.tokens) / self.rate)


def retry_delay(attempts: int) -> float:
    return min(RETRY_CAP, RETRY_FIRST * 2 ** max(0, attempts - 1))


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Dispatcher:
    def __init__(self, db: DbRunner, transports: Sequence[Transport], *, worker: str,
                 max_attempts: int) -> None:
        self.db = db
        self.transports = list(transports)
        self.limits = {t.name: RateLimiter(t.max_per_minute) for t in self.transports}
        # the newest error each transport gave, for the transports panel
        self.last_failure: dict[str, SendFailure] = {}
        self.worker = worker
        self.max_attempts = max_attempts
        self._wake = asyncio.Event()
        self._sending: set[asyncio.Task[None]] = set()

    def wake(self) -> None:
        """Something was queued: look now rather than at the next poll."""
        self._wake.set()

    def submit(self, sms: OutboundSms) -> None:
        """Send a message this worker claimed already (a text-back due now)."""
        task = asyncio.get_running_loop().create_task(self._send(sms))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def drain(self, timeout: float) -> None:
        """Let sends already handed to a transport finish (at shutdown)."""
        if self._sending:
            await asyncio.wait(set(self._sending), timeout=timeout)

    async def run(self) -> None:
        stuck = await self.db(lambda s: outbox.recover_interrupted(s, utcnow(), self.worker))
        if stuck:
            log.warning("%d message(s) were being sent when the agent last stopped; marked "
                        "failed, not resent (their fate is unknown)", stuck)
        while True:
            self._wake.clear()
            timeout = IDLE_POLL
            if any(t.available() for t in self.transports):
                batch = await self.db(self._claim)
                for sms in batch:
                    await self._send(sms)
                if batch:
                    continue
                due = await self.db(outbox.next_due)
                if due is not None:
                    timeout = min(IDLE_POLL, max(0.0, (due - utcnow()).total_seconds()))
            else:
                timeout = 1.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    def _claim(self, session: Session) -> list[OutboundSms]:
        now = utcnow()
        ready: list[OutboundSms] = []
        # one at a time: a claimed row is "sending" until its transport answers, and a
        # stop in between fails it as "fate unknown" — so never hold more than the one
        # actually in flight (a modem at 6/min would otherwise strand a whole batch)
        for message in outbox.claim_due(session, now, self.worker, limit=1):
            # opt-out is checked at send time, for every message, queued ones included
            if (message.kind not in EXEMPT_FROM_OPT_OUT
                    and outbox.opted_out(session, message.number)):
                outbox.transition(message, outbox.CANCELLED, now, "the recipient opted out")
                log.info("message %d to %s cancelled: opted out", message.id, message.number)
                continue
            ready.append(outbox.outbound(message))
        return ready

    async def _send(self, sms: OutboundSms) -> None:
        problems: list[str] = []
        limited_for: list[float] = []
        pinned = sms.pinned_transport
        if pinned and pinned not in self.limits:
            problems.append(f"{pinned}: not configured in this agent ([sms] transports)")
        for transport in self.transports:
            if pinned and transport.name != pinned:
                continue
            if not transport.available():
                problems.append(f"{transport.name}: unavailable")
                continue
            limiter = self.limits[transport.name]
            if not limiter.take(time.monotonic(), sms.parts):
                limited_for.append(limiter.wait_time(sms.parts))
                problems.append(f"{transport.name}: rate limit")
                continue
            try:
                result = await transport.send(sms)
            except SendError as exc:
                self.last_failure[transport.name] = SendFailure(str(exc), utcnow())
                if exc.permanent:
                    await self.db(lambda s, e=exc, t=transport: self._failed(s, sms, t, str(e)))
                    return
                problems.append(f"{transport.name}: {exc}")
                continue
            await self.db(lambda s, r=result, t=transport: self._done(s, sms, t, r))
            return
        await self.db(lambda s: self._later(s, sms, problems, limited_for))

    def _done(self, session: Session, sms: OutboundSms, transport: Transport,
              result: SendResult) -> None:
        message = session.get_one(Message, sms.id)
        message.transport = transport.name
        message.provider_ref = result.provider_ref
        message.attempts = sms.attempts + 1
        message.error = message.error_kind = None
        outbox.transition(message, result.status, utcnow(), transport.name)
        log.info("message %d to %s %s via %s", sms.id, sms.number, result.status,
                 transport.name)

    def _failed(self, session: Session, sms: OutboundSms, transport: Transport,
                error: str) -> None:
        message = session.get_one(Message, sms.id)
        message.transport = transport.name
        message.attempts = sms.attempts + 1
        message.error, message.error_kind = error, "permanent"
        outbox.transition(message, outbox.FAILED, utcnow(), error)
        log.warning("message %d to %s failed permanently via %s: %s", sms.id, sms.number,
                    transport.name, error)

    def _later(self, session: Session, sms: OutboundSms, problems: list[str],
               limited_for: list[float]) -> None:
        message = session.get_one(Message, sms.id)
        now = utcnow()
        error = "; ".join(problems) or "no transport configured"
        if limited_for and len(limited_for) == len(problems):
            # only rate limits stood in the way: wait for a token, not an attempt
            message.next_attempt_at = now + dt.timedelta(seconds=min(limited_for))
            outbox.transition(message, outbox.QUEUED, now, error)
            return
        message.attempts = sms.attempts + 1
        message.error, message.error_kind = error, "temporary"
        if message.attempts >= self.max_attempts:
            outbox.transition(message, outbox.FAILED, now, f"gave up after "
                              f"{message.attempts} attempts: {error}")
            log.warning("message %d to %s failed after %d attempts: %s", sms.id, sms.number,
                        message.attempts, error)
            return
        wait = retry_delay(message.attempts)
        message.next_attempt_at = now + dt.timedelta(seconds=wait)
        outbox.transition(message, outbox.QUEUED, now, f"retry in {wait:.0f} s: {error}")
        log.info("message %d to %s: %s; retry %d in %.0f s", sms.id, sms.number, error,
                 message.attempts, wait)
