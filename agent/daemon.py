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
from typing import Any

from sqlalchemy.orm import Session

from agent.calls import cdr, missed
from agent.calls.tracker import CallTracker, FinishedCall
from agent.config import Config
from agent.messages import inbound, inbox, timers
from agent.messages.outbox import OutboundSms
from agent.pbx import originate
from agent.pbx.ami import AmiError, AmiLink
from agent.pbx.fastagi import RoutingServer, database_settings
from agent.privacy import erasure
from agent.store.db import DbRunner, check_schema, make_engine
from agent.transports import health
from agent.transports.dispatcher import Dispatcher
from agent.transports.gsm import GsmModemTransport
from agent.transports.modem.driver import Modem
from agent.transports.modem.store import ModemStore
from agent.transports.sip import SipTrunk

log = logging.getLogger(__name__)

TIMER_TICK = 1.0  # seconds between looks at the jobs table
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
                      "gsm": lambda: GsmModemTransport(config.sms.gsm, self.modem, self.db)}
        self.dispatcher = Dispatcher(
            self.db, [transports[name]() for name in config.sms.transports],
            worker=f"{socket.gethostname()}/agent", max_attempts=config.sms.max_attempts,
        )
        self._settle: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._down_since: float | None = None
        self._cdr_lookup_since: float | None = None  # a CDR look-up is scheduled from then

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
                self._spawn(self.reconcile_after_start())
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
                    "it was down", gap, cdr_csv)
        self._spawn(self.reconcile(since, now))

    def on_down(self) -> None:
        self._down_since = time.time()
        lost = self.tracker.reset()
        later = ("its outcome is read from the CDR file when the link is back"
                 if self.config.pbx.cdr_csv is not None else "outcome unknown, not texted")
        for linkedid in lost:
            log.warning("call %s: in progress when the AMI link dropped; %s", linkedid, later)

    # -- calls the AMI link did not see: Asterisk's CDR file -----------------------------
    def _look_up_soon(self, since: float) -> None:
        """One CDR look-up for calls that ended from `since` on, once their rows are
        written; calls ending meanwhile join it rather than each reading the file."""
        pending = self._cdr_lookup_since
        self._cdr_lookup_since = since if pending is None else min(pending, since)
        if pending is None:
            self._spawn(self._look_up_later())

    async def _look_up_later(self) -> None:
        await asyncio.sleep(CDR_WRITE_DELAY)
        since, self._cdr_lookup_since = self._cdr_lookup_since, None
        if since is not None:
            await self.reconcile(since, time.time())

    async def reconcile_after_start(self) -> None:
        """Look up calls that ended since the newest call recorded (at most
        RECONCILE_MAX_AGE back): the agent was stopped, or not yet running.

        A database without calls is a fresh install: the PBX's history is not for it
        to text.
        """
        newest = await self.db(missed.newest_end)
        if newest is None:
            log.info("no calls recorded yet: not looking for missed calls in the CDR file")
            return
        now = time.time()
        await self.reconcile(max(newest.timestamp(), now - RECONCILE_MAX_AGE.total_seconds()),
                             now)

    async def reconcile(self, since: float, until: float) -> None:
        """Hand the missed inbound calls the CDR file shows ending in [since, until], and
        not recorded yet, to the normal decision step (source "cdr").

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
            return
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

    # -- the decision ------------------------------------------------------------------
    async def handle(self, call: FinishedCall, source: str = missed.LIVE) -> None:
        region, worker = self.config.pbx.default_region, self.dispatcher.worker
        queued, outcome = await self.db(lambda s: missed.record(
            s, call, dt.datetime.now(dt.UTC), region=region, worker=worker, source=source))
        if isinstance(queued, OutboundSms):
            self.dispatcher.submit(queued)
        elif queued:
            self.dispatcher.wake()
        log.info("call %s from %s to %s%s: %s", call.linkedid, call.caller or "withheld",
                 call.did, " (from the CDR file)" if source == missed.CDR else "", outcome)

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
                due = await self.db(lambda s: timers.due_now(s, dt.datetime.now(dt.UTC), worker))
                for sms in due:
                    self.dispatcher.submit(sms)
                # "Call back" clicks from the inbox (the web UI has no AMI link)
                await inbox.run_pending(self.db, self.ami.action, trunk, worker)
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

    async def run(self) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        log.info("textback agent starting: AMI %s:%s, transports %s",
                 self.config.ami.host, self.config.ami.port, ", ".join(self.config.sms.transports))
        workers = [loop.create_task(self.ami.run(), name="ami"),
                   loop.create_task(self.dispatcher.run(), name="dispatcher"),
                   loop.create_task(self.run_timers(), name="timers"),
                   loop.create_task(self.report_health(), name="health")]
        if self.modem is not None:
            workers.append(loop.create_task(self.modem.run(), name="modem"))
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
        await self.dispatcher.drain(timeout=5)
        if routing_server is not None:
            await routing_server.close()
        self.ami.close()
        for task in [*workers, stopped]:
            task.cancel()
        await asyncio.gather(*workers, stopped, return_exceptions=True)
        self.db.close()


def run(config: Config) -> None:
    asyncio.run(Agent(config).run())
