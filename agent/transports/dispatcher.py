"""The dispatcher: takes due messages from the outbox and hands them to transports.

Order of a send: claim the row (queued → claimed, committed) → find the first
transport in `[sms] transports` that is up and within its limits → mark the row in
flight (claimed → sending, committed) → hand it to that transport → record what
happened. A missed call's text-back due now makes that choice before its decision
(`reserve`) and is marked in flight in the decision's own transaction
(`hand_over_queued`): one commit before it leaves, not two. A claimed row no
transport has seen can always go back to the queue: a stop gives it back, a restart
puts it back. Only a row in flight at a stop is "fate unknown" (failed, never resent:
it may have reached the customer).

A temporary failure tries the next transport, then comes back later with
exponential backoff, a bounded number of times; a permanent failure ends that
message at once, so one invalid number never holds up the ones behind it. A failure
that may have sent the text all the same (a messaging API that took the request and
never answered) is not failed over: the row is pinned to that transport, which finds
out whether it has the text before sending again. Waiting
for a rate limit costs no attempt: when a transport's bucket is empty, the texts
waiting get turns, one each, at the instants the bucket will have their tokens, so a
backlog of n is claimed about n times, not n² times.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import logging
import math
from collections.abc import Callable, Iterable, Sequence

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from agent.messages import outbox
from agent.messages.kinds import EXEMPT_FROM_OPT_OUT
from agent.messages.outbox import OutboundSms
from agent.store.db import UNAVAILABLE, DbRunner, driver_message
from agent.store.models import Message, MessageEvent
from agent.transports import SendError, SendResult, Transport
from agent.transports.health import SendFailure

log = logging.getLogger(__name__)

RETRY_FIRST = 5.0  # seconds before the first retry; doubles each time
RETRY_CAP = 600.0
IDLE_POLL = 5.0  # also picks up rows other processes (web UI, CLI) queued
TURNS_PER_TRANSACTION = 500  # waiting texts given their turns at once
EPSILON = 1e-6  # tokens: float rounding never costs a text its turn
STOPPED = "back in the queue: the agent stopped before handing it to a transport"
ORPHANED = "back in the queue: claimed, then left by a send that failed before its transport"
RECORD_RETRIES = (1.0, 2.0, 4.0, 8.0)  # seconds between tries to record a send's outcome
# a claim this old that no send holds was left by one (a text-back claimed a moment ago
# may not have reached submit() yet)
ORPHAN_AFTER = 30.0


class RateLimiter:
    """A token bucket per transport (e.g. a SIM may send only so many per minute).

    A token is one SMS part as the network counts them: a three-part text costs
    three, so a 6/min SIM limit holds for long texts too. A text longer than the
    whole bucket goes once the bucket is full, rather than never.

    Times are wall-clock seconds, passed in. A text that finds the bucket empty is
    booked a *turn* (`book`): the instant the bucket will have its tokens, after the
    turns booked already. The bookings are kept as the bucket's state just after the
    last turn, so a text without a turn cannot take the tokens a booked one will
    need: it queues behind them.
    """

    WINDOW = 60.0

    def __init__(self, per_minute: int, now: float = 0.0) -> None:
        self.capacity = float(max(1, per_minute))
        self.rate = self.capacity / 60.0
        self.tokens = self.capacity
        self.stamp = now
        self._plan: tuple[float, float] | None = None  # (tokens, at) after the last turn

    def _cost(self, parts: int) -> float:
        return min(float(max(1, parts)), self.capacity)

    def _refill(self, now: float) -> None:
        if now > self.stamp:  # a clock stepping back refills nothing
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now

    def seed(self, sent: Iterable[tuple[float, int]], now: float) -> None:
        """Start from what left in the last minute, (when, parts) each, so a restart
        does not hand out a fresh bucket: empty a minute ago, then each of those."""
        self.tokens, self.stamp, self._plan = 0.0, now - self.WINDOW, None
        for at, parts in sorted(sent):
            self._refill(min(at, now))
            self.tokens -= self._cost(parts)
        self._refill(now)

    def _free(self, now: float) -> float:
        """Tokens a text without a turn may take now (none while turns lie ahead)."""
        self._refill(now)
        if self._plan is None:
            return self.tokens
        tokens, at = self._plan
        if at > now:
            return -math.inf
        planned = min(self.capacity, tokens + (now - at) * self.rate)
        if planned >= self.capacity:
            self._plan = None  # every turn is long past
        return min(self.tokens, planned)

    def take(self, now: float, parts: int = 1, *, booked: bool = False) -> bool:
        """Spend the tokens of a text going now; `booked`: it is this text's turn."""
        cost = self._cost(parts)
        if booked:
            self._refill(now)
            have = self.tokens
        else:
            have = self._free(now)
        if have + EPSILON < cost:
            return False
        self.tokens -= cost
        if not booked and self._plan is not None:
            tokens, at = self._plan
            self._plan = (min(self.capacity, tokens + (now - at) * self.rate) - cost, now)
        return True

    def refund(self, parts: int = 1) -> None:
        """Give back what `take` spent for a text that did not go after all."""
        cost = self._cost(parts)
        self.tokens = min(self.capacity, self.tokens + cost)
        if self._plan is not None:
            tokens, at = self._plan
            self._plan = (min(self.capacity, tokens + cost), at)

    def _next(self, now: float, cost: float) -> tuple[float, float]:
        if self._plan is not None and self._plan[1] > now:
            tokens, base = self._plan
        else:
            tokens, base = self._free(now), now
        at = base + max(0.0, cost - tokens) / self.rate
        return at, min(self.capacity, tokens + (at - base) * self.rate) - cost

    def turn(self, now: float, parts: int = 1) -> float:
        """When a text of `parts` could go, after the turns booked already."""
        return self._next(now, self._cost(parts))[0]

    def book(self, now: float, parts: int = 1) -> float:
        """Book that turn and return it."""
        at, tokens = self._next(now, self._cost(parts))
        self._plan = (tokens, at)
        return at

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


def sent_since(session: Session, transport: str, since: dt.datetime) -> list[tuple[float, int]]:
    """(when, parts) of what `transport` sent after `since`, oldest first."""
    rows = session.execute(
        select(func.min(MessageEvent.at), Message.segments)
        .join(Message, Message.id == MessageEvent.message_id)
        .where(Message.transport == transport, MessageEvent.status.in_(outbox.LEFT),
               MessageEvent.at > since)
        .group_by(Message.id, Message.segments)
    ).all()
    return sorted((at.timestamp(), segments or 1) for at, segments in rows)


def sent_today(session: Session, transport: str, now: dt.datetime) -> list[tuple[float, int]]:
    """(when, parts) of what `transport` sent in the last 24 hours, oldest first."""
    return sent_since(session, transport, now - dt.timedelta(seconds=DailyBudget.WINDOW))


def retry_delay(attempts: int) -> float:
    return min(RETRY_CAP, RETRY_FIRST * 2 ** max(0, attempts - 1))


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def at_or_after(ts: float) -> dt.datetime:
    """A turn as a datetime, never before it (rounded up to the microsecond)."""
    return _EPOCH + dt.timedelta(microseconds=math.ceil(ts * 1_000_000))


class Dispatcher:
    def __init__(self, db: DbRunner, transports: Sequence[Transport], *, worker: str,
                 max_attempts: int, clock: Callable[[], dt.datetime] = utcnow) -> None:
        self.db = db
        self.clock = clock
        self.transports = list(transports)
        self.limits = {t.name: RateLimiter(t.max_per_minute, self._now())
                       for t in self.transports}
        self.budgets = {t.name: DailyBudget(t.max_per_day) for t in self.transports}
        # the newest error each transport gave, for the transports panel
        self.last_failure: dict[str, SendFailure] = {}
        self.worker = worker
        self.max_attempts = max_attempts
        self._wake = asyncio.Event()
        self._sending: set[asyncio.Task[None]] = set()
        self._held: set[int] = set()  # ids of the claimed rows a send task is working on
        self._booked: dict[int, tuple[str, float]] = {}  # message id: (transport, turn)
        # what the last run left was sorted out (_start): until then a row in flight
        # would be taken for one it left, so nothing is handed over with its decision
        self.started = asyncio.Event()
        self._closing = False  # drain() began: claim nothing more
        self._stopping = False  # drain() is done waiting: hand nothing more over

    def _now(self) -> float:
        return self.clock().timestamp()

    def wake(self) -> None:
        """Something was queued: look now rather than at the next poll."""
        self._wake.set()

    def submit(self, sms: OutboundSms, handed_to: str | None = None) -> None:
        """Send a message this worker claimed already (a text-back due now); one
        `hand_over_queued` handed to a transport already goes straight to it."""
        self._spawn(sms, handed_to)

    def reserve(self) -> str | None:
        """The transport a one-part text due now would take, with its token spent: the
        text-back of a missed call is then handed to it in the transaction that queues
        it (`hand_over_queued`), a commit and a trip to the database thread fewer. The
        same choice as a send's (the first transport up, within its day and its rate);
        None when none could take it now. What is not used goes back (`refund`)."""
        if self._closing or not self.started.is_set():
            return None
        now = self._now()
        for transport in self.transports:
            if (transport.available() and self.budgets[transport.name].allows(now, 1)
                    and self.limits[transport.name].take(now, 1)):
                return transport.name
        return None

    def refund(self, transport: str) -> None:
        self.limits[transport].refund(1)

    def hand_over_queued(self, session: Session, queued: OutboundSms | bool,
                         transport: str | None) -> str | None:
        """On the database thread, in the transaction that queued and claimed `queued`:
        claimed → sending for the `reserve`d transport, when it is one part due now and
        the dispatcher is not stopping. Returns the transport it was handed to.

        Its commit is then the moment the text is in flight, as a separate hand-over's
        would be: the loop sends it next (`submit(sms, handed_to)`)."""
        if (transport is None or not isinstance(queued, OutboundSms) or queued.parts != 1
                or queued.pinned_transport is not None or self._stopping):
            return None
        if not outbox.hand_over(session, queued.id, self.clock(), self.worker, transport):
            return None
        return transport

    def _spawn(self, sms: OutboundSms, handed_to: str | None = None) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(self._send(sms, handed_to))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)
        return task

    async def drain(self, timeout: float) -> None:
        """At shutdown: claim nothing more, let the sends under way finish (at most
        `timeout` seconds), then give what this worker claimed and never handed to a
        transport back to the queue. A send still in a transport's hands then is
        abandoned in flight (the next start fails it: its fate is unknown), before the
        transport itself stops and could make it look like a failure worth a retry."""
        self._closing = True
        self._wake.set()
        if self._sending:
            await asyncio.wait(set(self._sending), timeout=timeout)
        self._stopping = True
        # after every hand-over already asked for: each is either in flight, or sees
        # _stopping on the database thread and gives its claim back
        released = await self.db(lambda s: outbox.release_claims(s, self.clock(), self.worker,
                                                                 STOPPED))
        if released:
            log.info("%d claimed message(s) back in the queue for the next start", released)
        if self._sending:
            log.warning("%d message(s) still with a transport at the stop: their fate is "
                        "unknown", len(self._sending))
            for task in list(self._sending):
                task.cancel()
            await asyncio.wait(set(self._sending), timeout=1.0)

    async def run(self) -> None:
        await self._start()
        while not self._closing:
            self._wake.clear()
            timeout = IDLE_POLL
            if any(t.available() for t in self.transports):
                held = frozenset(self._held)
                batch, due = await self.db(lambda s, held=held: self._claim(s, held))
                if self._closing:
                    break  # what was just claimed, drain() gives back
                for sms in batch:
                    await self._spawn(sms)  # cancelling run() cancels it: a hard stop
                if batch:
                    continue
                if due is not None:
                    timeout = min(IDLE_POLL, max(0.0, (due - self.clock()).total_seconds()))
            else:
                timeout = 1.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def _start(self) -> None:
        """Limits counted from what already left (a restart hands out no fresh minute
        or day), and what the last run left behind sorted out."""
        now = self.clock()

        def read(session: Session) -> tuple[dict[str, tuple[list[tuple[float, int]], ...]],
                                            tuple[int, int]]:
            minute = now - dt.timedelta(seconds=RateLimiter.WINDOW)
            sent = {name: (sent_since(session, name, minute),
                           sent_today(session, name, now) if budget.per_day > 0 else [])
                    for name, budget in self.budgets.items()}
            return sent, outbox.recover_interrupted(session, now, self.worker)

        sent, (failed, requeued) = await self.db(read)
        for name, (last_minute, today) in sent.items():
            self.limits[name].seed(last_minute, now.timestamp())
            for at, parts in today:
                self.budgets[name].spend(at, parts)
        if failed:
            log.warning("%d message(s) were with a transport when the agent last stopped; "
                        "marked failed, not resent (their fate is unknown)", failed)
        if requeued:
            log.info("%d message(s) claimed but never handed to a transport when the agent "
                     "last stopped: back in the queue", requeued)
        self.started.set()

    def _claim(self, session: Session, held: frozenset[int] = frozenset()
               ) -> tuple[list[OutboundSms], dt.datetime | None]:
        """The next due row, claimed; else when the next one is due (and the claims no
        send holds any more, after a database error, given back to the queue)."""
        now = self.clock()
        ready: list[OutboundSms] = []
        # one at a time: the rest stay visibly queued, and a text that must wait for a
        # rate limit goes back with the turns of all the others (_give_turns)
        claimed = outbox.claim_due(session, now, self.worker, limit=1)
        for message in claimed:
            # opt-out is checked at send time, for every message, queued ones included
            if (message.kind not in EXEMPT_FROM_OPT_OUT
                    and outbox.opted_out(session, message.number)):
                outbox.transition(message, outbox.CANCELLED, now, "the recipient opted out")
                log.info("message %d to %s cancelled: opted out", message.id, message.number)
                continue
            ready.append(outbox.outbound(message))
        if claimed:
            return ready, None
        orphans = outbox.release_claims(
            session, now, self.worker, ORPHANED, keep=held,
            claimed_before=now - dt.timedelta(seconds=ORPHAN_AFTER))
        if orphans:
            log.warning("%d claimed message(s) no send holds any more: back in the queue",
                        orphans)
        return ready, outbox.next_due(session)

    async def _record(self, work: Callable[[Session], object]) -> object:
        """A send's outcome into its row, tried again while the database refuses (locked
        past its busy timeout): a text that left must not stay "in flight"."""
        for wait in (*RECORD_RETRIES, None):
            try:
                return await self.db(work)
            except SQLAlchemyError as exc:
                if wait is None:
                    raise
                # a lock or a server away says what it is in a line; anything else shows
                # where it came from
                log.warning("recording a send failed (%s); trying again in %.0f s",
                            driver_message(exc), wait, exc_info=not isinstance(exc, UNAVAILABLE))
                await asyncio.sleep(wait)
        return None

    async def _send(self, sms: OutboundSms, handed_to: str | None = None) -> None:
        self._held.add(sms.id)
        try:
            await self._try_transports(sms, handed_to)
        except SQLAlchemyError:
            # a claim left here goes back to the queue at the next idle look (_claim)
            log.exception("message %d: the database failed during its send", sms.id)
        finally:
            self._held.discard(sms.id)

    async def _try_transports(self, sms: OutboundSms, handed_to: str | None = None) -> None:
        problems: list[str] = []
        turns: list[tuple[float, str]] = []  # rate limits: when each could take it
        days: list[float] = []  # daily limits: when each could take it
        tried = False
        # handed over with the decision (hand_over_queued): its transport's token is spent
        # already, and the transports before it in the order could not take it then
        handed = handed_to is not None
        transports = self.transports
        if handed_to is not None:
            transports = transports[[t.name for t in transports].index(handed_to):]
        uncertain: str | None = None  # the transport that may have sent it
        booked = self._booked.pop(sms.id, ("", 0.0))[0]
        pinned = sms.pinned_transport
        if pinned and pinned not in self.limits:
            problems.append(f"{pinned}: not configured in this agent ([sms] transports)")
        for transport in transports:
            if pinned and transport.name != pinned:
                continue
            if not transport.available():
                problems.append(f"{transport.name}: unavailable")
                continue
            now = self._now()
            budget = self.budgets[transport.name]
            # a reserved transport took the text within its day and rate at the decision
            if transport.name != handed_to:
                if not budget.allows(now, sms.parts):
                    days.append(now + budget.wait_time(now))
                    problem = f"{transport.name}: daily limit ({budget.per_day} parts in 24 h)"
                    problems.append(problem)
                    self.last_failure[transport.name] = SendFailure(problem, self.clock())
                    continue
                limiter = self.limits[transport.name]
                if not limiter.take(now, sms.parts, booked=booked == transport.name):
                    turns.append((limiter.turn(now, sms.parts), transport.name))
                    problems.append(f"{transport.name}: rate limit")
                    continue
            if not handed:
                # in flight from here: committed before the transport sees it
                handed = await self.db(lambda s, t=transport: self._hand_over(s, sms, t.name))
                if not handed:
                    return  # cancelled meanwhile, or given back at a stop
            tried = True
            try:
                result = await transport.send(sms)
            except SendError as exc:
                self.last_failure[transport.name] = SendFailure(str(exc), self.clock())
                if exc.permanent:
                    await self._record(lambda s, e=exc, t=transport: self._failed(s, sms, t,
                                                                                  str(e)))
                    return
                problems.append(f"{transport.name}: {exc}")
                if exc.uncertain:
                    # it may have left: another transport now could text them twice
                    uncertain = transport.name
                    break
                continue
            budget.spend(self._now(), sms.parts)
            await self._record(lambda s, r=result, t=transport: self._done(s, sms, t, r))
            return
        when: float | None = None
        turn = False
        if (turns or days) and not tried:
            # only limits (and transports that are down) stood in the way: wait for a
            # turn, not an attempt
            now = self._now()
            best = min(((self.limits[name].turn(now, sms.parts), name) for _, name in turns),
                       default=None)
            if best is not None and (not days or best[0] <= min(days)):
                when, turn = self.limits[best[1]].book(now, sms.parts), True
                self._booked[sms.id] = (best[1], when)
            else:
                when = min(days)
        waiting = await self._record(lambda s: self._later(s, sms, problems, when, turn,
                                                           uncertain))
        assert isinstance(waiting, list)
        if waiting:
            turns_given = self._give_turns(waiting)
            if turns_given:
                await self.db(lambda s: outbox.reschedule(s, self.clock(), turns_given))

    def _hand_over(self, session: Session, sms: OutboundSms, transport: str) -> bool:
        now = self.clock()
        if self._stopping:  # read on the database thread: ordered with drain's release
            message = session.get_one(Message, sms.id)
            if message.status == outbox.CLAIMED and message.claimed_by == self.worker:
                outbox.release(message, now, STOPPED)
            return False
        return outbox.hand_over(session, sms.id, now, self.worker, transport)

    def _give_turns(self, waiting: list[tuple[int, int, str | None]]
                    ) -> list[tuple[int, dt.datetime, str]]:
        """Turns for the texts waiting behind one that found its transports' buckets
        empty: each booked where its tokens come first. (id, when, why) of those that
        cannot go now; the others stay due."""
        now = self._now()
        for message_id, (_name, at) in list(self._booked.items()):
            if at < now - 3600:  # booked, then cancelled or sent another way
                del self._booked[message_id]
        turns: list[tuple[int, dt.datetime, str]] = []
        for message_id, parts, pinned in waiting:
            if message_id in self._booked:
                continue  # its turn has come: it goes when claimed, as booked
            best: tuple[float, str] | None = None
            for transport in self.transports:
                if pinned and transport.name != pinned:
                    continue
                if not transport.available() or not self.budgets[transport.name].allows(
                        now, parts):
                    continue
                at = self.limits[transport.name].turn(now, parts)
                if best is None or at < best[0]:
                    best = (at, transport.name)
            if best is None or best[0] <= now:
                continue  # it can go now, or nothing could take it: the claim will say
            at = self.limits[best[1]].book(now, parts)
            self._booked[message_id] = (best[1], at)
            turns.append((message_id, at_or_after(at),
                          f"{best[1]}: rate limit; its turn in {at - now:.0f} s"))
        return turns

    def _done(self, session: Session, sms: OutboundSms, transport: Transport,
              result: SendResult) -> None:
        if not outbox.left(session, sms.id, self.clock(), status=result.status,
                           transport=transport.name, provider_ref=result.provider_ref,
                           provider_id=result.provider_id, attempts=sms.attempts + 1):
            # the provider's webhook told its fate before this answer was recorded
            log.info("message %d to %s: reported via %s before its send was recorded",
                     sms.id, sms.number, transport.name)
            return
        log.info("message %d to %s %s via %s", sms.id, sms.number, result.status,
                 transport.name)

    def _failed(self, session: Session, sms: OutboundSms, transport: Transport,
                error: str) -> None:
        message = session.get_one(Message, sms.id)
        message.transport = transport.name
        message.attempts = sms.attempts + 1
        message.error, message.error_kind = error, "permanent"
        outbox.transition(message, outbox.FAILED, self.clock(), error)
        log.warning("message %d to %s failed permanently via %s: %s", sms.id, sms.number,
                    transport.name, error)

    def _later(self, session: Session, sms: OutboundSms, problems: list[str],
               when: float | None, turn: bool, uncertain: str | None = None
               ) -> list[tuple[int, int, str | None]]:
        """Back to the queue; with a turn booked, also returns the texts due now that
        wait behind this one (they get turns too, rather than each being claimed)."""
        message = session.get_one(Message, sms.id)
        if (message.status not in (outbox.CLAIMED, outbox.SENDING)
                or message.claimed_by != self.worker):
            return []  # cancelled meanwhile (opted out, reached, erased)
        now = self.clock()
        error = "; ".join(problems) or "no transport configured"
        if when is not None:
            message.next_attempt_at = at_or_after(when)
            detail = f"{error}; its turn in {when - now.timestamp():.0f} s" if turn else error
            outbox.transition(message, outbox.QUEUED, now, detail)
            return outbox.waiting_due(session, now, TURNS_PER_TRANSACTION) if turn else []
        message.attempts = sms.attempts + 1
        message.error, message.error_kind = error, "temporary"
        if uncertain:
            message.transport = uncertain  # pinned: only it can tell whether it left
        if message.attempts >= self.max_attempts:
            outbox.transition(message, outbox.FAILED, now, f"gave up after "
                              f"{message.attempts} attempts: {error}")
            log.warning("message %d to %s failed after %d attempts: %s", sms.id, sms.number,
                        message.attempts, error)
            return []
        wait = retry_delay(message.attempts)
        message.next_attempt_at = now + dt.timedelta(seconds=wait)
        outbox.transition(message, outbox.QUEUED, now, f"retry in {wait:.0f} s: {error}")
        log.info("message %d to %s: %s; retry %d in %.0f s", sms.id, sms.number, error,
                 message.attempts, wait)
        return []
