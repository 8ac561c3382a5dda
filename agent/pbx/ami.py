"""The one AMI connection: login, event stream, actions, and its health.

panoramisk parses the protocol and pairs actions with responses; this module owns
what panoramisk leaves weak (see its Manager): a refused login is reported and
retried with backoff instead of passing silently, a ping whose reply never comes
declares the link dead, reconnects back off, actions pending on a dead link fail
at once instead of being replayed later (a replayed MessageSend would text twice),
and bytes are decoded incrementally so a UTF-8 caller name split across two TCP
reads is not mangled.
"""

from __future__ import annotations

import asyncio
import codecs
import logging
import random
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from panoramisk.actions import Action
from panoramisk.ami_protocol import AMIProtocol
from panoramisk.message import Message

from agent.config import AmiConfig

log = logging.getLogger(__name__)

# The event classes the agent needs: call (Newchannel, Dial*, Bridge*, Hangup, Queue*),
# dialplan (VarSet DIALSTATUS / VM_MESSAGEFILE), user (UserEvent SMSIn), agent
# (AgentConnect for queues), system (Shutdown: Asterisk is leaving, not broken). The
# [textback] user's event filters in manager.conf narrow these to the events the agent
# reads; everything else stays in Asterisk.
EVENT_CLASSES = "call,dialplan,user,agent,system"

EventHandler = Callable[[dict[str, str]], None]


class AmiError(Exception):
    """Asterisk answered an action with an error."""


class AmiUnavailable(AmiError):
    """There is no logged-in AMI link right now (or it died while waiting)."""


class AmiNoAnswer(AmiUnavailable):
    """The action was written to Asterisk but not answered in time: a frozen or
    overloaded Asterisk may still carry it out when it resumes."""


class _Everything:
    """panoramisk replays 'unforgettable' actions after a reconnect; we forget all."""

    def __contains__(self, item: object) -> bool:
        return True


class _Protocol(AMIProtocol):
    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self.encoding = "utf-8"
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""

    def data_received(self, data: bytes) -> None:
        text = self._buffer + self._decoder.decode(data)
        *blocks, self._buffer = text.split("\r\n\r\n")
        for block in blocks:
            block = block.strip()
            if (block.startswith("Event: ") and "\r\nActionID: " not in block
                    and not block.startswith("Event: Shutdown")):
                # an event no action waits for (nearly the whole stream): straight into
                # the dict the agent reads, without panoramisk's Message on the way
                event: dict[str, str] = {}
                for line in block.split("\r\n"):
                    key, separator, value = line.partition(": ")
                    if separator and key not in event:  # a repeated header: the first
                        event[key] = value
                self.factory.deliver(event)
                continue
            try:
                message = Message.from_line(block)
            except Exception:  # a block panoramisk cannot parse must not kill the link
                log.warning("unparseable AMI block skipped: %r", block[:200])
                continue
            if message is not None:
                self.handle_message(message)

    def close(self) -> None:
        for action in list(self.responses.values()):
            if not action.future.done():
                # written, never answered: Asterisk may still carry it out
                action.future.set_exception(AmiNoAnswer("the AMI link was lost before "
                                                        "Asterisk answered"))
        self.responses.clear()
        if not self.closed:
            self.closed = True
            self.transport.close()


class AmiLink:
    """Keeps one logged-in AMI session alive and hands every event to `on_event`.

    `on_up(first)` runs after each successful login (first=False after a
    reconnect, so the caller can reconcile); `on_down()` after the link is lost.
    """

    def __init__(
        self,
        config: AmiConfig,
        on_event: EventHandler,
        *,
        config_path: str = "the config file",
        events: str = EVENT_CLASSES,
        on_up: Callable[[bool], None] | None = None,
        on_down: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self.on_event = on_event
        self.config_path = config_path
        self.events = events
        self.on_up = on_up
        self.on_down = on_down
        self.connected = False
        self.last_error: str | None = None
        # "restarting" / "shutting down" once Asterisk announced it, until the next login
        self.asterisk_leaving: str | None = None
        # which Asterisk process answers (its start-up time, from CoreStatus): the same
        # one after a reconnect means it was frozen or slow, not restarted
        self.instance: str | None = None
        # One action in flight at a time. A frozen Asterisk that resumes carries out the
        # first action it reads and then finds the link closed (the ping watchdog gave
        # up on it) and drops the rest: with one action written at a time, an action
        # left unanswered is exactly the one it carried out, so the SIP transport can
        # tell "sent by a frozen Asterisk" from "lost with a restarted one".
        self._one_at_a_time = asyncio.Lock()
        self._protocol: _Protocol | None = None
        self._lost: asyncio.Future[None] | None = None
        self._up = asyncio.Event()
        self._closing = False
        self._logins = 0
        # panoramisk's protocol calls back into its "factory" for these
        self.forgetable_actions = _Everything()
        self.awaiting_actions: deque[Any] = deque()
        self.save_stream = None

    # -- panoramisk factory interface -------------------------------------------------
    def dispatch(self, message: Message) -> None:
        self.deliver({k: (v[0] if isinstance(v, list) else v) for k, v in message.items()})

    def deliver(self, event: dict[str, str]) -> None:
        if event.get("Event") == "Shutdown":
            self.asterisk_leaving = ("restarting" if event.get("Restart") == "True"
                                     else "shutting down")
            log.warning("Asterisk is %s (%s)", self.asterisk_leaving,
                        event.get("Shutdown", "").lower() or "no reason given")
        try:
            self.on_event(event)
        except Exception:  # one bad event must never take the agent down
            log.exception("AMI event %s skipped after an error", event.get("Event"))

    def connection_lost(self, exc: object) -> None:
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)

    # -- public -------------------------------------------------------------------------
    async def wait_up(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._up.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def action(self, fields: Mapping[str, str], timeout: float = 5.0) -> Message:
        """Send one action and return its response; AmiError on Error, AmiUnavailable
        when there is no link or no answer within `timeout`."""
        # asyncio.timeout, not wait_for: no task and no future of its own (every text
        # through the trunk comes here); a free lock is taken without waiting at all
        try:
            async with asyncio.timeout(timeout):
                await self._one_at_a_time.acquire()
        except TimeoutError:
            raise AmiUnavailable(f"{fields.get('Action')} not sent: Asterisk has not answered "
                                 "the action before it") from None
        try:
            protocol = self._protocol
            if not self.connected or protocol is None or protocol.closed:
                raise AmiUnavailable("not connected to Asterisk")
            future = protocol.send(Action(dict(fields)))
            try:
                async with asyncio.timeout(timeout):
                    response = await future
            except TimeoutError:
                # Asterisk answers every action at once (MessageSend and Originate are
                # queued), so it is frozen or gone: the link is taken for dead now, before
                # the next action could be written to it. A frozen Asterisk that resumes
                # carries out the one action it read, and only that one stays unanswered.
                log.error("Asterisk did not answer %s within %g s: the AMI link is taken "
                          "for dead, reconnecting", fields.get("Action"), timeout)
                self.last_error = f"no answer to {fields.get('Action')} within {timeout:g} s"
                protocol.close()
                if protocol is self._protocol:  # this link's session ends now
                    self.connection_lost(None)
                raise AmiNoAnswer(f"no answer to {fields.get('Action')} within "
                                  f"{timeout:g} s") from None
        finally:
            self._one_at_a_time.release()
        if isinstance(response, list):  # list actions: the first message is the response
            response = response[0]
        if not response.success:
            raise AmiError(response.get("Message") or "Error")
        return response

    def close(self) -> None:
        self._closing = True
        if self._protocol is not None:
            self._protocol.close()
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)

    async def run(self) -> None:
        """Connect, log in, watch, reconnect — until close()."""
        delay = _Backoff()
        while not self._closing:
            login_refused = await self._session(delay)
            if self._closing:
                break
            wait = delay.next(cap=60.0 if login_refused else 30.0)
            log.info("reconnecting to AMI in %.1f s", wait)
            await asyncio.sleep(wait)

    # -- internals -----------------------------------------------------------------------
    async def _session(self, delay: _Backoff) -> bool:
        """One connection's life. Returns True when the login was refused."""
        cfg = self.config
        loop = asyncio.get_running_loop()
        where = f"{cfg.host}:{cfg.port}"
        try:
            _transport, protocol = await asyncio.wait_for(
                loop.create_connection(_Protocol, cfg.host, cfg.port), 10
            )
        except (OSError, TimeoutError) as exc:
            self.last_error = f"cannot connect to AMI at {where}: {exc}"
            log.warning("%s (is Asterisk running, and is manager.conf enabled on that "
                        "address?)", self.last_error)
            return False
        assert isinstance(protocol, _Protocol)
        protocol.factory = self
        self._protocol = protocol
        self._lost = loop.create_future()
        try:
            response = await asyncio.wait_for(protocol.send(Action({
                "Action": "Login", "Username": cfg.username, "Secret": cfg.secret,
                "Events": self.events,
            })), 10)
        except (TimeoutError, AmiUnavailable):
            self.last_error = f"AMI at {where} did not answer the login"
            log.error(self.last_error)
            protocol.close()
            return False
        if not response.success:
            self.last_error = (f"AMI login as {cfg.username!r} refused by {where}: "
                               f"{response.get('Message', 'no reason given')}")
            source = (f"{cfg.secret_file} ([ami] secret_file)" if cfg.secret_file
                      else f"[ami] secret in {self.config_path}")
            log.error("%s; the secret sent is the one in %s: it must match secret= of the "
                      "[%s] user in Asterisk's manager.conf (and its permit= lines)",
                      self.last_error, source, cfg.username)
            protocol.close()
            return True
        self.instance = await self._instance(protocol)
        self.connected = True
        self.last_error = None
        self.asterisk_leaving = None
        self._logins += 1
        delay.reset()
        self._up.set()
        log.info("AMI connected to %s as %s", where, cfg.username)
        if self.on_up is not None:
            self.on_up(self._logins == 1)
        try:
            await self._watch(protocol)
        finally:
            self.connected = False
            self._up.clear()
            protocol.close()
            if self.on_down is not None:
                self.on_down()
        return False

    async def _ping(self, protocol: _Protocol) -> None:
        async with self._one_at_a_time:
            await protocol.send(Action({"Action": "Ping"}))

    async def _instance(self, protocol: _Protocol) -> str | None:
        """The running Asterisk's start-up time (CoreStatus; the AMI user's reporting
        write privilege allows it), or None when it cannot be had."""
        try:
            response = await asyncio.wait_for(
                protocol.send(Action({"Action": "CoreStatus"})), self.config.ping_timeout)
        except (TimeoutError, AmiUnavailable):
            return None
        if isinstance(response, list):
            response = response[0]
        if not response.success or not response.get("CoreStartupTime"):
            return None
        return f"{response.get('CoreStartupDate', '')} {response.get('CoreStartupTime')}"

    async def _watch(self, protocol: _Protocol) -> None:
        """Ping every interval; a reply that never comes means the link is dead."""
        cfg = self.config
        lost = self._lost
        assert lost is not None
        while not lost.done():
            done, _ = await asyncio.wait({lost}, timeout=cfg.ping_interval)
            if done or self._closing:
                break
            try:
                await asyncio.wait_for(self._ping(protocol), cfg.ping_timeout)
            except TimeoutError:
                self.last_error = f"AMI ping unanswered for {cfg.ping_timeout:g} s"
                log.error("%s: the link is dead, reconnecting", self.last_error)
                return
            except AmiUnavailable:
                break
        if not self._closing:
            self.last_error = "AMI connection lost"
            log.error("AMI connection to %s:%s lost", cfg.host, cfg.port)


class _Backoff:
    """Exponential backoff with jitter, so many agents do not reconnect in lockstep."""

    def __init__(self, first: float = 1.0) -> None:
        self.first = first
        self.current = first

    def next(self, cap: float) -> float:
        value = min(self.current, cap)
        self.current = min(self.current * 2, cap)
        return value * random.uniform(0.8, 1.2)

    def reset(self) -> None:
        self.current = self.first
