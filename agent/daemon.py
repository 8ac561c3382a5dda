"""The agent: wires the missed-call path together and keeps it running.

AMI events → CallTracker → (per finished call) agent.calls.missed: policy → outbox
row → dispatcher → transport. This module holds tasks and wiring only: every
decision is a domain function run on the DbRunner's thread, so a slow disk never
stalls AMI pings and the event loop only moves data.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import signal
import socket
import time
from collections.abc import Mapping
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from agent.calls import cdr, missed
from agent.calls.tracker import CallTracker, FinishedCall
from agent.config import Config
from agent.messages import inbound, inbox, rings, timers
from agent.messages.outbox import OutboundSms
from agent.pbx import originate
from agent.pbx.ami import AmiError, AmiLink
from agent.pbx.fastagi import RoutingServer, database_settings
from agent.privacy import erasure
from agent.reports import digest
from agent.store import lock, status
from agent.store.db import (
    UNAVAILABLE,
    DatabaseError,
    DbRunner,
    check_schema,
    driver_message,
    make_engine,
)
from agent.transports import Transport, health
from agent.transports.dispatcher import Dispatcher
from agent.transports.gsm import GsmModemTransport
from agent.transports.modem.driver import Modem
from agent.transports.modem.store import ModemStore
from agent.transports.sip import SipTrunk

log = logging.getLogger(__name__)

TIMER_TICK = 1.0  # seconds between looks at the jobs table
DIGEST_TICK = 60.0  # seconds between looks at whether the weekly digest is due
FRAGMENT_SWEEP = 60.0  # seconds between looks for multipart SMS that will stay incomplete
HEALTH_TICK = 2.0  # seconds between looks at the transports' state (no I/O: cheap)
RETENTION_SWEEP = 3600.0  # seconds between looks for customers idle past privacy.retention
# erasures per transaction: calls wait for the same database thread, so a backlog is
# worked off one short batch per timer tick (an erasure reads the whole audit log:
# about 50 ms with 100,000 entries on SQLite, so a batch stays well under a second)
RETENTION_BATCH = 10
# how far back the look for calls that ended while the agent was stopped goes (older
# calls would be recorded, not texted, anyway)
RECONCILE_MAX_AGE = missed.MAX_AGE
# Asterisk writes a call's CDR rows just after its hangup; wait this long before reading
CDR_WRITE_DELAY = 2.0
# a call in progress when the AMI link dropped is looked for in the CDR file, less and less
# often, until its rows are there (a long call may last this long)
OPEN_CALL_WATCH = 4 * 3600.0
CDR_LOOK_MAX_INTERVAL = 60.0
# a decision the database could not take is retried, oldest call first, after this
# (doubling up to the maximum): a lock held by a backup, a long query, a restarting server
DECISION_RETRY = 0.5
DECISION_RETRY_MAX = 15.0
DATABASE_NAG = 30.0  # seconds between log lines while calls wait for the database
LOCK_CHECK = 30.0  # PostgreSQL: seconds between looks at the connection holding the lock


T = TypeVar("T")


def _given(section: T | None) -> T:
    """A provider's table, which the config requires when its transport is listed."""
    assert section is not None
    return section


def _twilio(config: Config, db: DbRunner) -> Transport:
    # the messaging APIs' modules (an HTTP client, a TLS stack, signatures) are loaded
    # only where one is configured: an agent on the SIP trunk or a modem stays small
    from agent.transports.twilio import TwilioTransport

    return TwilioTransport(_given(config.sms.twilio), config.web.public_url, db)


def _telnyx(config: Config, db: DbRunner) -> Transport:
    from agent.transports.telnyx import TelnyxTransport

    return TelnyxTransport(_given(config.sms.telnyx), config.web.public_url, db)


def _utc(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, dt.UTC)


class Agent:
    def __init__(self, config: Config) -> None:
        self.config = config
        engine = make_engine(config.database.url)
        check_schema(engine)
        self.db = DbRunner(engine)
        pbx = config.pbx
        self.tracker = CallTracker(pbx.trunk_endpoints, pbx.inbound_contexts)
        self.ami = AmiLink(config.ami, self.on_event, config_path=str(config.path),
                           on_up=self.on_up, on_down=self.on_down)
        # the modem's one owner task starts in run(); its SMS take the same way in as SIP's
        self.modem: Modem | None = None
        self.modem_store: ModemStore | None = None
        if "gsm" in config.sms.transports:
            self.modem_store = modem_store = ModemStore(self.db, self.deliver_inbound)
            self.modem = Modem(config.sms.gsm, on_deliver=modem_store.deliver,
                               on_report=modem_store.report)
        transports = {"sip": lambda: SipTrunk(config.sms.sip, self.ami),
                      "gsm": lambda: GsmModemTransport(config.sms.gsm, self.modem, self.db),
                      # their webhooks land on the web app, which shares the database
                      "twilio": lambda: _twilio(config, self.db),
                      "telnyx": lambda: _telnyx(config, self.db)}
        self.dispatcher = Dispatcher(
            self.db, [transports[name]() for name in config.sms.transports],
            worker=f"{socket.gethostname()}/agent", max_attempts=config.sms.max_attempts,
        )
        self._settle: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._down_since: float | None = None
        self._cdr_lookup_since: float | None = None  # a CDR look-up is scheduled from then
        self._cdr_looking = False
        # Linkedid → first seen, of calls in progress when AMI dropped, until the CDR
        # file (or the database) accounts for them
        self._unaccounted: dict[str, float] = {}
        # decisions are taken one at a time, oldest call first; the calls waiting for
        # the database stay in memory meanwhile
        self._decisions = asyncio.Lock()
        self._waiting = 0
        self._db_trouble_since: float | None = None
        self._db_nagged = 0.0
        self._status_file = status.path_for(config.database.url)
        self.stop: asyncio.Event | None = None  # set to stop run()

    # -- AMI side --------------------------------------------------------------------
    def on_event(self, event: Mapping[str, str]) -> None:
        if event.get("Event") == "UserEvent" and event.get("UserEvent") == "SMSIn":
            self._spawn(self.handle_sms(event))
            return
        for call in self.tracker.feed(event, time.time()):
            self._spawn(self.handle(call))
        self._arm_settle_timer()

    def _arm_settle_timer(self) -> None:
        for unknown in self.tracker.drain_unknown():
            if unknown.reason == "joined_mid_call" and self.config.pbx.cdr_csv is not None:
                # it started while AMI was not watched (an outage, before start-up) and
                # just ended: the CDR file says how
                log.info("call %s: started before AMI was watched; reading its outcome from "
                         "the CDR file", unknown)
                self._look_up_soon(unknown.first_seen)
                continue
            log.warning("call %s: outcome unknown (%s), not texted", unknown, unknown.reason)
        deadline = self.tracker.next_deadline()
        if deadline is None:
            return
        loop = asyncio.get_running_loop()
        when = loop.time() + max(0.0, deadline - time.time())
        if self._settle is not None and self._settle.when() <= when:
            return
        if self._settle is not None:
            self._settle.cancel()
        self._settle = loop.call_at(when, self._expire)

    def _expire(self) -> None:
        self._settle = None
        for call in self.tracker.expire(time.time()):
            self._spawn(self.handle(call))
        self._arm_settle_timer()

    def on_up(self, first: bool) -> None:
        cdr_csv = self.config.pbx.cdr_csv
        if first:
            if cdr_csv is not None:  # calls that ended while the agent was stopped
                self._spawn(self.look_up_after_start())
            return
        down = self._down_since
        self._down_since = None
        now = time.time()
        gap = f"{now - down:.1f} s" if down else "an unknown time"
        if cdr_csv is None:
            log.warning("AMI link restored after %s: calls that ended while it was down were "
                        "not seen and are not texted (set [pbx] cdr_csv to read them from "
                        "Asterisk's CDR file)", gap)
            return
        # events were already lost while the watchdog waited for the unanswered ping
        blind = self.config.ami.ping_interval + self.config.ami.ping_timeout
        since = down - blind if down else now - RECONCILE_MAX_AGE.total_seconds()
        log.warning("AMI link restored after %s: looking in %s for calls that ended while "
                    "it was down, once Asterisk has written them", gap, cdr_csv)
        self._look_up_soon(since)

    def on_down(self) -> None:
        self._down_since = time.time()
        lost = self.tracker.reset()
        later = ("its outcome is read from the CDR file once it ended"
                 if self.config.pbx.cdr_csv is not None else "outcome unknown, not texted")
        for unknown in lost:
            log.warning("call %s: in progress when the AMI link dropped; %s", unknown, later)
            if self.config.pbx.cdr_csv is not None:
                self._unaccounted[unknown.linkedid] = unknown.first_seen

    # -- calls the AMI link did not see: Asterisk's CDR file -----------------------------
    def _look_up_soon(self, since: float) -> None:
        """One CDR look-up for calls that ended from `since` on, once their rows are
        written; calls ending meanwhile join it rather than each reading the file."""
        pending = self._cdr_lookup_since
        self._cdr_lookup_since = since if pending is None else min(pending, since)
        if not self._cdr_looking:
            self._cdr_looking = True
            self._spawn(self._look_up_later())

    async def _look_up_later(self) -> None:
        """Read the CDR file after Asterisk had time to write it; then again, less and
        less often, while calls left open by an AMI drop are not in it yet."""
        delay = CDR_WRITE_DELAY
        try:
            while True:
                await asyncio.sleep(delay)
                now = time.time()
                since, self._cdr_lookup_since = self._cdr_lookup_since, None
                if self._unaccounted:
                    oldest = min(self._unaccounted.values())
                    since = oldest if since is None else min(since, oldest)
                if since is None:
                    return
                found = await self.reconcile(since, now)
                self._account_for(found, now)
                if self._cdr_lookup_since is not None:
                    delay = CDR_WRITE_DELAY  # calls ended meanwhile: their turn soon
                elif self._unaccounted:
                    delay = min(delay * 2, CDR_LOOK_MAX_INTERVAL)
                else:
                    return
        finally:
            self._cdr_looking = False

    def _account_for(self, found: set[str], now: float) -> None:
        for linkedid in found & self._unaccounted.keys():
            del self._unaccounted[linkedid]
        for linkedid, first_seen in list(self._unaccounted.items()):
            if now - first_seen > OPEN_CALL_WATCH:
                del self._unaccounted[linkedid]
                log.warning("call %s: in progress when the AMI link dropped and still not in "
                            "the CDR file %.0f h later; no longer looked for", linkedid,
                            OPEN_CALL_WATCH / 3600)

    async def look_up_after_start(self) -> None:
        """Look up the calls that ended in the last RECONCILE_MAX_AGE: the agent was
        stopped, or not yet running (calls already recorded are skipped by Linkedid,
        so a call the last run lost to a database fault is found too).

        A database without calls is a fresh install: the PBX's history is not for it
        to text.
        """
        newest = await self.db(missed.newest_end)
        if newest is None:
            log.info("no calls recorded yet: not looking for missed calls in the CDR file")
            return
        self._look_up_soon(time.time() - RECONCILE_MAX_AGE.total_seconds())

    async def reconcile(self, since: float, until: float) -> set[str]:
        """Hand the missed inbound calls the CDR file shows ending in [since, until], and
        not recorded yet, to the normal decision step (source "cdr"). Returns the
        Linkedids of every call the file has rows of, missed or not.

        The Call.linkedid unique constraint and the text-back's idempotency key make this
        safe to repeat: a call is never texted twice, however often it is looked up.
        """
        pbx = self.config.pbx
        path = pbx.cdr_csv
        assert path is not None
        try:
            tail = await asyncio.to_thread(cdr.read, path,
                                           zone=dt.UTC if pbx.cdr_csv_utc else None)
        except OSError as exc:
            log.error("cannot read the CDR file %s (%s): calls that ended while AMI was not "
                      "watched are not texted. Let the agent's user read it (e.g. usermod "
                      "-aG asterisk textback, then restart the agent); `textback doctor` "
                      "checks it", path, exc.strerror or exc)
            return set()
        if since < tail.complete_since:
            log.warning("the last %d MB of the CDR file reach back to %s only: calls that "
                        "ended before that are not looked up", cdr.TAIL_BYTES // 2**20,
                        _utc(tail.complete_since).isoformat(timespec="seconds"))
            since = tail.complete_since
        ended = cdr.missed_calls(tail.rows, since, until, trunk_endpoints=pbx.trunk_endpoints,
                                  inbound_contexts=pbx.inbound_contexts)

        known = await self.db(lambda s: missed.recorded(s, (c.linkedid for c in ended)))
        unseen = [call for call in ended if call.linkedid not in known]
        log.info("CDR file %s: %d missed inbound call(s) ended between %s and %s, %d not "
                 "seen on AMI", path, len(ended), _utc(since).isoformat(timespec="seconds"),
                 _utc(until).isoformat(timespec="seconds"), len(unseen))
        for call in unseen:
            await self.handle(call, source=missed.CDR)
        return cdr.call_keys(tail.rows)

    # -- the decision ------------------------------------------------------------------
    async def handle(self, call: FinishedCall, source: str = missed.LIVE) -> None:
        self._waiting += 1
        try:
            async with self._decisions:  # asyncio.Lock wakes its waiters oldest first
                queued, outcome, handed_to = await self._record(call, source)
        finally:
            self._waiting -= 1
        if isinstance(queued, OutboundSms):
            self.dispatcher.submit(queued, handed_to)
        elif queued:
            self.dispatcher.wake()
        log.info("call %s from %s to %s%s: %s", call.linkedid, call.caller or "withheld",
                 call.did, " (from the CDR file)" if source == missed.CDR else "", outcome)

    async def _record(self, call: FinishedCall,
                      source: str) -> tuple[OutboundSms | bool, str, str | None]:
        """The decision for one call, retried until the database takes it: a finished
        call is never dropped because the database was locked or away.

        A text-back due now is handed to its transport in the same transaction when
        one has room for it (Dispatcher.reserve): the text is in flight as it is
        committed, one commit and one trip to the database thread sooner."""
        region, dispatcher = self.config.pbx.default_region, self.dispatcher
        delay = DECISION_RETRY

        def decide(session: Session, reserved: str | None
                   ) -> tuple[OutboundSms | bool, str, str | None]:
            queued, outcome = missed.record(session, call, dt.datetime.now(dt.UTC),
                                            region=region, worker=dispatcher.worker,
                                            source=source)
            return queued, outcome, dispatcher.hand_over_queued(session, queued, reserved)

        while True:
            reserved = dispatcher.reserve()
            try:
                result = await self.db(lambda s, r=reserved: decide(s, r))
            except BaseException as exc:
                if reserved is not None:  # rolled back: nothing was handed over
                    dispatcher.refund(reserved)
                if not isinstance(exc, UNAVAILABLE):
                    raise
                self._database_trouble(call, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, DECISION_RETRY_MAX)
                continue
            if reserved is not None and result[2] is None:
                dispatcher.refund(reserved)
            if self._db_trouble_since is not None:
                self._database_back()
            return result

    def _database_trouble(self, call: FinishedCall, exc: Exception) -> None:
        now = time.time()
        first = self._db_trouble_since is None
        if first:
            self._db_trouble_since = now
        if first or now - self._db_nagged >= DATABASE_NAG:
            self._db_nagged = now
            log.warning("the database cannot take call %s (%s): %d finished call(s) kept in "
                        "memory, recorded in order as soon as it can", call.linkedid,
                        driver_message(exc), self._waiting)
        self._publish_status()

    def _database_back(self) -> None:
        assert self._db_trouble_since is not None
        log.warning("the database is back after %.1f s: recording the %d finished call(s) "
                    "kept in memory", time.time() - self._db_trouble_since, self._waiting)
        self._db_trouble_since = None
        self._publish_status()

    def _publish_status(self) -> None:
        """What /healthz shows about the agent while the database cannot."""
        if self._status_file is None:
            return
        trouble = self._db_trouble_since
        try:
            status.write(self._status_file, {
                "calls_waiting": self._waiting if trouble is not None else 0,
                "database_unavailable_since": _utc(trouble).isoformat() if trouble else None,
                "at": _utc(time.time()).isoformat()})
        except OSError as exc:
            log.warning("cannot write %s: %s", self._status_file, exc.strerror or exc)

    async def handle_sms(self, event: Mapping[str, str]) -> None:
        try:
            sms = inbound.from_user_event(event, dt.datetime.now(dt.UTC))
        except inbound.MalformedSms as exc:
            log.warning("inbound SMS skipped: %s", exc)
            return
        await self.deliver_inbound(sms)

    async def deliver_inbound(self, sms: inbound.InboundSms) -> None:
        """The one way in for a customer's text, whatever transport brought it."""
        region, worker = self.config.pbx.default_region, self.dispatcher.worker
        taken = await self.db(lambda s: inbound.take(s, sms, region, worker))
        if taken is None:
            return
        message, reaction = taken.message, taken.reaction
        log.info("SMS from %s to %s stored as message %d (%s): %d text(s) queued%s",
                 message.number, sms.to, message.id, reaction.intent or "reply",
                 len(reaction.messages),
                 f", ringing {reaction.ring_oncall}" if reaction.ring_oncall else "")
        if reaction.ring_oncall:
            self._spawn(self.ring(reaction.ring_oncall, message.number, "EMERGENCY"))
        for due in taken.due:
            self.dispatcher.submit(due)
        if taken.later:
            self.dispatcher.wake()

    async def ring(self, first: str, customer: str, label: str) -> None:
        """Ring `first` (on-call phone or number), then connect it to the customer."""
        try:
            action = originate.connect_action(first, customer, trunk=self.config.dial_trunk,
                                              label=label)
            await self.ami.action(action, timeout=5)
        except (ValueError, AmiError) as exc:
            log.error("could not ring %s for %s: %s (the alert texts still go out; does the "
                      "AMI user have write = originate?)", first, customer, exc)
            return
        log.info("ringing %s to connect %s (%s)", first, customer, label)

    async def run_timers(self) -> None:
        """Due follow-ups and reminders, once a second (rows, so restarts lose nothing)."""
        worker, trunk = self.dispatcher.worker, self.config.dial_trunk
        next_expiry = next_purge = 0.0
        while True:
            try:
                due, callbacks, ringing = await self.db(lambda s: self.due_now(s, worker))
                for sms in due:
                    self.dispatcher.submit(sms)
                await inbox.place(self.db, self.ami.action, trunk, callbacks)
                await rings.place(self.db, self.ami.action, trunk, ringing)
                if self.modem_store is not None and time.monotonic() >= next_expiry:
                    next_expiry = time.monotonic() + FRAGMENT_SWEEP
                    await self.modem_store.expire()
            except Exception:  # a bad row must not stop every later timer
                log.exception("running due timers failed; trying again shortly")
            if time.monotonic() >= next_purge:
                # set first: a failing erasure is retried in an hour, not every second
                next_purge = time.monotonic() + RETENTION_SWEEP
                try:
                    erased = await self.db(self.purge_expired)
                except Exception:
                    log.exception("erasing customers past privacy.retention failed; trying "
                                  "again in an hour")
                else:
                    if erased:
                        log.info("privacy.retention: erased the personal data of %d "
                                 "customer(s) idle for longer", erased)
                    if erased >= RETENTION_BATCH:  # more are waiting: go on next tick
                        next_purge = time.monotonic()
            await asyncio.sleep(TIMER_TICK)

    @staticmethod
    def due_now(session: Session, worker: str) -> tuple[list[OutboundSms],
                                                         list[inbox.Claimed],
                                                         list[rings.Claimed]]:
        """What is due this tick, in one transaction (it runs every second, idle or
        not): follow-ups and reminders, "Call back" clicks from the inbox (the web UI has
        no AMI link), and emergencies texted through a messaging API's webhook (the web
        app took them: web/hooks.py)."""
        now = dt.datetime.now(dt.UTC)
        return (timers.due_now(session, now, worker), inbox.claim_pending(session, now, worker),
                rings.claim_pending(session, now, worker))

    async def run_digest(self) -> None:
        """The owner's weekly digest when due (agent.reports.digest decides and sends)."""
        while True:
            try:
                await digest.run_once(self.db, self.config, dt.datetime.now(dt.UTC))
            except Exception:  # the digest must never stop the agent
                log.exception("the weekly digest failed; trying again in a minute")
            await asyncio.sleep(DIGEST_TICK)

    def purge_expired(self, session: Session) -> int:
        """One batch of erasures past privacy.retention; returns how many were erased."""
        return erasure.purge_due(session, dt.datetime.now(dt.UTC),
                                 self.config.pbx.default_region, limit=RETENTION_BATCH)

    async def report_health(self) -> None:
        """Publish each transport's state for the web UI: on change, and every heartbeat."""
        published: dict[str, tuple[health.Health, health.SendFailure | None]] = {}
        written_at = -health.HEARTBEAT
        while True:
            snapshot = {t.name: (t.health(), self.dispatcher.last_failure.get(t.name))
                        for t in self.dispatcher.transports}
            beat = time.monotonic() - written_at >= health.HEARTBEAT
            rows = snapshot if beat else {name: seen for name, seen in snapshot.items()
                                          if published.get(name) != seen}
            if rows:
                try:
                    await self.db(lambda s, rows=rows: health.publish_all(
                        s, rows.values(), dt.datetime.now(dt.UTC)))
                    published.update(rows)
                    if beat:
                        written_at = time.monotonic()
                except Exception:  # the panel can wait; sending must not
                    log.exception("could not publish the transports' state; trying again")
            await asyncio.sleep(HEALTH_TICK)

    # -- lifetime ----------------------------------------------------------------------
    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("handling a call failed", exc_info=task.exception())

    async def watch_lock(self, held: lock.DatabaseLock, stop: asyncio.Event) -> None:
        """PostgreSQL keeps the one-agent lock only while its connection lives: when the
        server dropped it (a restart, a network cut), take it again, or stop if another
        agent took the database meanwhile."""
        current = held
        try:
            while True:
                await asyncio.sleep(LOCK_CHECK)
                if await asyncio.to_thread(current.alive):
                    continue
                try:
                    fresh = await asyncio.to_thread(lock.acquire, self.config.database.url,
                                                    "agent")
                except lock.LockHeld as exc:
                    holder = exc.holder.describe() if exc.holder else "another agent"
                    log.error("the database's lock was lost with its connection and another "
                              "agent took it (%s); this agent stops", holder)
                    stop.set()
                    return
                except DatabaseError as exc:
                    log.warning("the database's lock was lost with its connection, and the "
                                "database cannot be reached to take it again (%s)", exc)
                    continue
                log.warning("the database's lock was lost with its connection; taken again")
                if current is not held:
                    current.release()
                current = fresh
        finally:
            if current is not held:
                current.release()

    async def run(self, held: lock.DatabaseLock | None = None) -> None:
        self.stop = stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        log.info("textback agent starting: AMI %s:%s, transports %s",
                 self.config.ami.host, self.config.ami.port, ", ".join(self.config.sms.transports))
        self._publish_status()  # whatever a previous run left there is over
        workers = [loop.create_task(self.ami.run(), name="ami"),
                   loop.create_task(self.dispatcher.run(), name="dispatcher"),
                   loop.create_task(self.run_timers(), name="timers"),
                   loop.create_task(self.report_health(), name="health"),
                   loop.create_task(self.run_digest(), name="digest")]
        if self.modem is not None:
            workers.append(loop.create_task(self.modem.run(), name="modem"))
        if held is not None and held.can_be_lost:
            workers.append(loop.create_task(self.watch_lock(held, stop), name="lock"))
        routing_server = None
        if self.config.agi.enabled:  # FastAGI routing; the dialplan falls back without it
            routing_server = RoutingServer(self.config.agi.host, self.config.agi.port,
                                           database_settings(self.db.engine))
            try:
                await routing_server.start()
            except OSError as exc:
                log.error("FastAGI routing cannot listen on %s:%s (%s); calls take the "
                          "dialplan's fallback route", self.config.agi.host,
                          self.config.agi.port, exc.strerror)
                routing_server = None
        stopped = loop.create_task(stop.wait())
        done, _ = await asyncio.wait([stopped, *workers], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not stopped and task.exception() is not None:
                log.error("%s stopped", task.get_name(), exc_info=task.exception())
        log.info("textback agent stopping")
        if self._tasks:  # calls being decided: their rows land, their sends fail over
            await asyncio.wait(self._tasks, timeout=5)
        if self._waiting:
            log.error("stopping with %d finished call(s) the database did not take; %s",
                      self._waiting, "the next start reads them from the CDR file"
                      if self.config.pbx.cdr_csv else "they are lost (set [pbx] cdr_csv)")
        await self.dispatcher.drain(timeout=5)
        for transport in self.dispatcher.transports:
            close = getattr(transport, "close", None)  # a messaging API's HTTP client
            if close is not None:
                await close()
        if routing_server is not None:
            await routing_server.close()
        self.ami.close()
        for task in [*workers, stopped]:
            task.cancel()
        await asyncio.gather(*workers, stopped, return_exceptions=True)
        self.db.close()


def run(config: Config) -> None:
    # one agent per database, checked before AMI or the modem is touched; held until exit
    with lock.acquire(config.database.url, "agent") as held:
        asyncio.run(Agent(config).run(held))
