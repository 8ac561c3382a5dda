"""The dispatcher: takes due messages from the outbox and hands them to transports.

Order of a send: claim the row (queued → sending, committed) → hand it to the
first available transport in `[sms] transports` → record what happened. A
temporary failure tries the next transport, then comes back later with
exponential backoff, a bounded number of times; a permanent failure ends that
message at once, so one invalid number never holds up the ones behind it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from agent.messages import outbox
from agent.messages.kinds import EXEMPT_FROM_OPT_OUT
from agent.messages.outbox import OutboundSms
from agent.store.db import DbRunner
from agent.store.models import Message, MessageEvent
from agent.transports import SendError, SendResult, Transport
from agent.transports.health import SendFailure

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


class DailyBudget:
    """SMS parts a transport may send in any 24 hours: a consumer SIM (or an unregistered
    long code) that sends more than a couple of hundred a day gets flagged and blocked.

    Counted in wall-clock time and seeded from the database when the dispatcher starts,
    so a restart does not hand out a fresh day.
    """

    WINDOW = 86400.0

    def __init__(self, per_day: int) -> None:
        self.per_day = per_day
        self.spent: collections.deque[tuple[float, int]] = collections.deque()
        self.total = 0

    def _forget_before(self, now: float) -> None:
        while self.spent and self.spent[0][0] <= now - self.WINDOW:
            self.total -= self.spent.popleft()[1]

    def allows(self, now: float, parts: int) -> bool:
        if self.per_day <= 0:
            return True
        self._forget_before(now)
        return self.total + min(max(1, parts), self.per_day) <= self.per_day

    def spend(self, at: float, parts: int) -> None:
        self.spent.append((at, max(1, parts)))
        self.total += max(1, parts)

    def wait_time(self, now: float) -> float:
        """Seconds until the oldest part counted leaves the window."""
        self._forget_before(now)
        return max(1.0, self.spent[0][0] + self.WINDOW - now) if self.spent else 1.0


def sent_today(session: Session, transport: str, now: dt.datetime) -> list[tuple[float, int]]:
    """(when, parts) of what `transport` sent in the last 24 hours, oldest first."""
    rows = session.execute(
        select(func.min(MessageEvent.at), Message.segments)
        .join(Message, Message.id == MessageEvent.message_id)
        .where(Message.transport == transport, MessageEvent.status.in_(outbox.LEFT),
               MessageEvent.at > now - dt.timedelta(seconds=DailyBudget.WINDOW))
        .group_by(Message.id, Message.segments)
    ).all()
    return sorted((at.timestamp(), segments or 1) for at, segments in rows)


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
        self.budgets = {t.name: DailyBudget(t.max_per_day) for t in self.transports}
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
        for name, budget in self.budgets.items():
            if budget.per_day > 0:
                for at, parts in await self.db(lambda s, n=name: sent_today(s, n, utcnow())):
                    budget.spend(at, parts)
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
            budget = self.budgets[transport.name]
            if not budget.allows(time.time(), sms.parts):
                limited_for.append(budget.wait_time(time.time()))
                problem = f"{transport.name}: daily limit ({budget.per_day} parts in 24 h)"
                problems.append(problem)
                self.last_failure[transport.name] = SendFailure(problem, utcnow())
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
            budget.spend(time.time(), sms.parts)
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
