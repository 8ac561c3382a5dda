"""CallTracker: AMI events in, finished calls out (pure, one object per PBX).

Asterisk reports *legs* (channels); the business cares about *calls*. Every leg
of one call carries the same ``Linkedid``, and the leg that started it (the
caller's channel, the "inbound leg") is the one whose ``Uniqueid == Linkedid``.
The tracker collects facts per call as they arrive and decides the outcome when
the inbound leg hangs up, because only then is it certain the caller will not be
answered any more.

Facts are kept unordered and evaluated at decision time: Asterisk publishes
events on several internal topics, so a ``Cdr`` can overtake a ``DialEnd`` and a
Local channel's half can report its answer before the leg that dialled it does.

Missed means the external caller never talked to a person. The precedence of the
miss reasons, chosen so the text-back can say something true:

1. answered by a person (``DialEnd ANSWER`` to a real channel, a bridge with a
   real channel, ``AgentConnect``, ``Pickup``) -> not missed, reason ``None``;
2. the caller reached voicemail -> ``voicemail`` (whether a message was left is
   ``voicemail_left``): whatever rang before, the caller's last experience was
   the mailbox, and a left message changes what the business should do;
3. otherwise the *latest* waiting episode decides: a queue stay without an agent
   -> ``abandoned_queue`` if the caller hung up while queued, ``noanswer`` if
   the queue let them go (timeout, empty queue: Asterisk fires
   ``QueueCallerAbandon`` then too, so the caller's own ``HangupRequest`` is what
   tells the two apart); a ``Dial`` -> its status (``cancel`` when the caller
   hung up while it rang, ``busy``, ``noanswer``, ``chanunavail``,
   ``congestion``). Within one Dial, ``VarSet DIALSTATUS`` is
   Asterisk's own summary; without it the DialEnds are combined as
   cancel > noanswer > busy > congestion > chanunavail (someone rang beats
   nobody could ring);
4. only the PBX itself answered (IVR, announcement) -> ``abandoned_ivr``;
5. nothing at all happened: ``cancel`` if the caller hung up (``HangupRequest``
   before any dialplan hangup), ``busy``/``congestion``/``chanunavail`` from the
   hangup cause, else ``noanswer``.

Latency: the decision is made on the inbound leg's ``Hangup`` itself unless a
leg that can still change the outcome is alive: a Dial from the caller's path
without its ``DialEnd``, or a Local channel half that the caller is connected
through (FreePBX running voicemail or an IVR inside ``Local/...;2``: the message
is saved only after the caller hung up). Those calls wait for that leg, at most
``settle`` seconds, via :meth:`CallTracker.expire`. In recordings of every
common scenario (direct, ring group, Local-channel ring group, queue, IVR,
voicemail, pickup, transfer), what follows the inbound ``Hangup`` is only the
other legs' ``Hangup``, ``BridgeLeave``, ``Cdr`` and device-state events:
nothing that changes the outcome, so nothing worth waiting for.

Without the ``dialplan`` event class (no ``VarSet``/``Newexten``) the outcome
is the same, except that reaching voicemail *without* leaving a message is
then invisible (``MessageWaiting`` only fires for a left message).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from agent.pbx.callerid import ami_unescape, sip_display_name
from agent.pbx.channels import endpoint_of, parse_channel

log = logging.getLogger(__name__)

Direction = Literal["inbound", "internal", "outbound"]
MissReason = Literal[
    "noanswer",
    "busy",
    "cancel",
    "chanunavail",
    "congestion",
    "abandoned_queue",
    "abandoned_ivr",
    "voicemail",
]
UnknownReason = Literal["reset", "joined_mid_call", "max_age", "evicted"]


@dataclass(frozen=True, slots=True)
class FinishedCall:
    """One call (all legs sharing a Linkedid), decided after the inbound leg hung up."""

    linkedid: str
    caller: str | None  # CallerIDNum as received; None when withheld/anonymous
    caller_name: str | None
    did: str | None  # the number or extension dialled (Exten of the first leg)
    direction: Direction
    missed: bool
    reason: MissReason | None  # None when answered
    voicemail_left: bool
    answered_by: str | None  # endpoint (e.g. "PJSIP/desk") of the leg that answered
    ring_seconds: float
    started_at: float  # unix time of the first leg's Newchannel
    ended_at: float  # unix time of the inbound leg's Hangup
    trunk_endpoint: str | None  # the trunk the call came in on (replies leave by it)


@dataclass(frozen=True, slots=True)
class UnknownCall:
    """A call whose outcome the tracker cannot know, so it must not be texted blindly.

    ``reset``: open when the AMI link dropped; ``joined_mid_call``: its first leg
    started before we were listening; ``max_age``: no Hangup for hours (lost
    event); ``evicted``: pushed out by the bound on untracked Linkedids. The
    agent logs these instead of silently losing them.
    """

    linkedid: str
    reason: UnknownReason
    first_seen: float
    caller: str | None = None
    caller_name: str | None = None
    did: str | None = None
    direction: Direction | None = None

    def __str__(self) -> str:
        return self.linkedid


_WITHHELD = frozenset(
    {"", "<unknown>", "unknown", "anonymous", "restricted", "private", "withheld", "unavailable"}
)
_DIAL_REASON: dict[str, MissReason] = {
    "CANCEL": "cancel",
    "NOANSWER": "noanswer",
    "BUSY": "busy",
    "CONGESTION": "congestion",
    "CHANUNAVAIL": "chanunavail",
    "INVALIDARGS": "chanunavail",
    "DONTCALL": "noanswer",
    "TORTURE": "noanswer",
}
# When one Dial ends several ways (ring group): someone rang > nobody could ring.
_DIAL_RANK: dict[MissReason, int] = {
    "cancel": 5,
    "noanswer": 4,
    "busy": 3,
    "congestion": 2,
    "chanunavail": 1,
}
_CAUSE_REASON: dict[str, MissReason] = {
    "17": "busy",
    "34": "congestion",
    "38": "congestion",
    "41": "congestion",
    "42": "congestion",
    "1": "chanunavail",
    "3": "chanunavail",
    "20": "chanunavail",
    "27": "chanunavail",
}
_FACT_CAP = 256  # per list/dict of one call: a looping queue must not grow without end


@dataclass(slots=True)
class _QueueStay:
    joined_at: float
    left_at: float | None = None


@dataclass(slots=True)
class _Call:
    """Everything learnt about one Linkedid until it is decided (then dropped)."""

    linkedid: str
    started_at: float
    inbound_name: str
    caller: str | None
    caller_name: str | None
    did: str | None
    direction_inbound: bool
    trunk_endpoint: str | None
    dials_trunk: bool = False
    legs: set[str] = field(default_factory=set)
    names: dict[str, str] = field(default_factory=dict)
    hung_up: set[str] = field(default_factory=set)
    up_at: dict[str, float] = field(default_factory=dict)
    open_dials: dict[str, str] = field(default_factory=dict)  # dest Uniqueid -> dialler
    dial_ends: dict[str, dict[str, tuple[float, str]]] = field(default_factory=dict)
    dialstatus: dict[str, tuple[float, str]] = field(default_factory=dict)
    answers: list[tuple[float, str, str]] = field(default_factory=list)  # (t, dialler, dest)
    agent_connects: list[tuple[float, str, str, str]] = field(default_factory=list)
    queue_members: set[str] = field(default_factory=set)
    queue: dict[str, list[_QueueStay]] = field(default_factory=dict)
    bridged: dict[frozenset[str], float] = field(default_factory=dict)
    pickups: dict[str, tuple[float, str]] = field(default_factory=dict)
    vm_reached: dict[str, float] = field(default_factory=dict)
    vm_left: set[str] = field(default_factory=set)
    hangup_requested: dict[str, float] = field(default_factory=dict)  # far end hung up
    dialplan_hangup_at: float | None = None  # the inbound leg's SoftHangupRequest
    hangup_cause: str = ""
    ended_at: float | None = None


@dataclass(slots=True)
class _Orphan:
    """A Linkedid seen without its first leg's Newchannel (we joined mid-call)."""

    first_seen: float
    caller: str | None = None
    caller_name: str | None = None


def _caller_id(value: str | None) -> str | None:
    """CallerIDNum as received, or None when the network withheld it."""
    if value is None or value.strip().casefold() in _WITHHELD:
        return None
    return value


def _caller_name(value: str | None) -> str | None:
    if value is None:
        return None
    name = sip_display_name(ami_unescape(value))
    return None if name.strip() in ("", "<unknown>") else name


def _capped_set(target: dict[str, float], key: str, value: float) -> None:
    """Keep the earliest time per key, but never more than _FACT_CAP keys."""
    if key in target:
        target[key] = min(target[key], value)
    elif len(target) < _FACT_CAP:
        target[key] = value


class CallTracker:
    """Turns the AMI event stream into one :class:`FinishedCall` per call.

    Pure: time comes in with each event (``now`` is when it was received; the
    agent passes ``time.time()``, a replay the recorded ``X-RecvTS``), there is no
    I/O, and caller data is only ever logged at debug level.
    """

    def __init__(
        self,
        trunk_endpoints: Iterable[str] = ("trunk",),
        inbound_contexts: Iterable[str] = (),
        settle: float = 0.5,
        *,
        max_age: float = 6 * 3600.0,
        max_untracked: int = 10_000,
        straggler_window: float = 120.0,
    ) -> None:
        self.trunk_endpoints = frozenset(trunk_endpoints)
        self.inbound_contexts = frozenset(inbound_contexts)
        self.settle = settle
        self.max_age = max_age
        self.max_untracked = max_untracked
        self.straggler_window = straggler_window
        self._calls: dict[str, _Call] = {}  # by Linkedid, in creation order
        self._leg_call: dict[str, str] = {}  # Uniqueid -> Linkedid of the call it serves
        self._bridges: dict[str, dict[str, str]] = {}  # BridgeUniqueid -> {Uniqueid: Channel}
        self._settling: dict[str, float] = {}  # Linkedid -> settle deadline
        self._orphans: OrderedDict[str, _Orphan] = OrderedDict()
        self._done: OrderedDict[str, float] = OrderedDict()  # decided/forgotten Linkedids
        self._unknown: list[UnknownCall] = []

    # -- public API ------------------------------------------------------------------
    @property
    def open_calls(self) -> int:
        """Calls whose first leg we saw start and that are not decided yet."""
        return len(self._calls)

    def feed(self, event: Mapping[str, str], now: float) -> list[FinishedCall]:
        """Take one AMI event; return the calls it finished (usually none)."""
        handler = _HANDLERS.get(event.get("Event", ""))
        if handler is None:
            return []
        finished: list[FinishedCall] = []
        try:
            handler(self, event, now, finished)
        except (TypeError, ValueError, AttributeError):
            # A header that is not a string (a client library turning a repeated
            # header into a list): lose this event, never the event loop.
            log.warning("AMI %s event with unexpected header types ignored", event.get("Event"))
        self._prune_done(now)
        return finished

    def expire(self, now: float) -> list[FinishedCall]:
        """Decide calls whose settle time has passed; give up on calls older than max_age."""
        due = [lid for lid, deadline in self._settling.items() if deadline <= now]
        finished = [self._decide(self._calls[lid]) for lid in due]
        while self._calls:
            oldest = next(iter(self._calls.values()))
            if oldest.started_at + self.max_age > now:
                break
            self._forget(oldest, "max_age", now)
        while self._orphans:
            linkedid, orphan = next(iter(self._orphans.items()))
            if orphan.first_seen + self.max_age > now:
                break
            self._report_orphan(linkedid, "max_age", now)
        self._prune_done(now)
        return finished

    def next_deadline(self) -> float | None:
        """When :meth:`expire` next has work: a settle time or the oldest call's max age."""
        deadlines = list(self._settling.values())
        if self._calls:
            deadlines.append(next(iter(self._calls.values())).started_at + self.max_age)
        if self._orphans:
            deadlines.append(next(iter(self._orphans.values())).first_seen + self.max_age)
        return min(deadlines) if deadlines else None

    def reset(self, now: float | None = None) -> list[UnknownCall]:
        """Forget every open call (after an AMI reconnect) and say which ones they were.

        Events lost while the link was down make their outcome unknowable; the
        agent logs them as unknown rather than texting (or silently dropping) them.
        Their Linkedids stay remembered for ``straggler_window`` so a late event
        does not resurrect them as a mid-call join.
        """
        lost = [self._unknown_from_call(call, "reset") for call in self._calls.values()]
        lost += [
            UnknownCall(lid, "reset", o.first_seen, o.caller, o.caller_name)
            for lid, o in self._orphans.items()
        ]
        when = now if now is not None else max((u.first_seen for u in lost), default=0.0)
        for unknown in lost:
            self._done[unknown.linkedid] = when
        self._calls.clear()
        self._settling.clear()
        self._leg_call.clear()
        self._bridges.clear()
        self._orphans.clear()
        return lost

    forget_all = reset

    def drain_unknown(self) -> list[UnknownCall]:
        """Calls given up on since the last drain (joined mid-call, too old, evicted)."""
        unknown, self._unknown = self._unknown, []
        return unknown

    # -- routing ---------------------------------------------------------------------
    def _call_for(self, uniqueid: str, linkedid: str, now: float) -> _Call | None:
        """The open call a leg belongs to; registers the leg on first sight.

        A leg stays with the call it first served even if Asterisk later gives it
        an older Linkedid (bridges propagate the oldest one), so a pickup or
        transfer never moves facts away from the call that needs them.
        """
        owner = self._leg_call.get(uniqueid)
        if owner is not None:
            return self._calls.get(owner)
        call = self._calls.get(linkedid)
        if call is not None:
            call.legs.add(uniqueid)
            self._leg_call[uniqueid] = linkedid
            return call
        if linkedid and linkedid not in self._done:
            self._note_orphan(linkedid, now)
        return None

    def _leg(self, event: Mapping[str, str], now: float) -> tuple[_Call, str] | None:
        """The call and Uniqueid of the channel an event is about (None if untracked)."""
        uniqueid = event.get("Uniqueid", "")
        linkedid = event.get("Linkedid", "")
        channel = event.get("Channel", "")
        if not uniqueid or not linkedid or channel.startswith("Message/"):
            return None
        call = self._call_for(uniqueid, linkedid, now)
        if call is None:
            orphan = self._orphans.get(linkedid)
            if orphan is not None and uniqueid == linkedid and orphan.caller is None:
                # Keep who was calling, so the unknown call can still be followed up.
                orphan.caller = _caller_id(event.get("CallerIDNum"))
                orphan.caller_name = _caller_name(event.get("CallerIDName"))
            return None
        _learn_name(call, uniqueid, channel)
        return call, uniqueid

    def _note_orphan(self, linkedid: str, now: float) -> None:
        if linkedid in self._orphans:
            return
        log.debug("Linkedid %s: legs seen without its first leg (joined mid-call)", linkedid)
        self._orphans[linkedid] = _Orphan(first_seen=now)
        while len(self._orphans) > self.max_untracked:
            self._report_orphan(next(iter(self._orphans)), "evicted", now)

    def _report_orphan(self, linkedid: str, reason: UnknownReason, now: float) -> None:
        orphan = self._orphans.pop(linkedid)
        self._remember_unknown(
            UnknownCall(linkedid, reason, orphan.first_seen, orphan.caller, orphan.caller_name)
        )
        self._done[linkedid] = now

    def _remember_unknown(self, unknown: UnknownCall) -> None:
        self._unknown.append(unknown)
        if len(self._unknown) > self.max_untracked:
            del self._unknown[0]

    def _prune_done(self, now: float) -> None:
        done = self._done
        while done:
            linkedid, when = next(iter(done.items()))
            if when + self.straggler_window > now and len(done) <= self.max_untracked:
                break
            del done[linkedid]

    # -- event handlers (facts only; decisions are made in _decide) --------------------
    def _on_newchannel(self, event: Mapping[str, str], now: float, out: list) -> None:
        uniqueid = event.get("Uniqueid", "")
        linkedid = event.get("Linkedid", "")
        channel = event.get("Channel", "")
        if not uniqueid or not linkedid or channel.startswith("Message/"):
            return
        if (uniqueid == linkedid and linkedid not in self._calls and linkedid not in self._done
                and uniqueid not in self._leg_call):  # not a leg already serving a call
            self._start_call(event, now)
            return
        found = self._leg(event, now)
        if found is None:
            return
        call, _ = found
        if uniqueid != linkedid and self._is_trunk(channel):
            call.dials_trunk = True
        self._recheck(call, out)

    def _start_call(self, event: Mapping[str, str], now: float) -> None:
        linkedid = event["Linkedid"]
        channel = event.get("Channel", "")
        parsed = parse_channel(channel)
        from_trunk = self._is_trunk(channel)
        inbound = from_trunk or event.get("Context", "") in self.inbound_contexts
        exten = event.get("Exten", "")
        self._orphans.pop(linkedid, None)
        call = _Call(
            linkedid=linkedid,
            started_at=now,
            inbound_name=channel,
            caller=_caller_id(event.get("CallerIDNum")),
            caller_name=_caller_name(event.get("CallerIDName")),
            did=exten if exten not in ("", "s") else None,
            direction_inbound=inbound,
            trunk_endpoint=parsed.resource if inbound and parsed.resource else None,
        )
        call.legs.add(linkedid)
        call.names[linkedid] = channel
        self._calls[linkedid] = call
        self._leg_call[linkedid] = linkedid
        log.debug("call %s started on %s", linkedid, endpoint_of(channel))

    def _on_newcallerid(self, event: Mapping[str, str], now: float, out: list) -> None:
        found = self._leg(event, now)
        if found is None:
            return
        call, uniqueid = found
        if uniqueid == call.linkedid:
            # Fill in what the first event lacked (a CID lookup ran); never overwrite.
            call.caller = call.caller or _caller_id(event.get("CallerIDNum"))
            call.caller_name = call.caller_name or _caller_name(event.get("CallerIDName"))

    def _on_newstate(self, event: Mapping[str, str], now: float, out: list) -> None:
        found = self._leg(event, now)
        if found is None:
            return
        call, uniqueid = found
        if event.get("ChannelStateDesc") == "Up" or event.get("ChannelState") == "6":
            _capped_set(call.up_at, uniqueid, now)

    def _on_newexten(self, event: Mapping[str, str], now: float, out: list) -> None:
        if event.get("Application", "").casefold() != "voicemail":
            return
        found = self._leg(event, now)
        if found is not None:
            call, uniqueid = found
            _capped_set(call.vm_reached, uniqueid, now)

    def _on_varset(self, event: Mapping[str, str], now: float, out: list) -> None:
        variable = event.get("Variable", "")
        if variable not in ("DIALSTATUS", "VM_MESSAGEFILE", "VMSTATUS"):
            return
        value = event.get("Value", "")
        if not value:
            return
        found = self._leg(event, now)
        if found is None:
            return
        call, uniqueid = found
        if variable == "DIALSTATUS":
            previous = call.dialstatus.get(uniqueid)
            if (previous is None and len(call.dialstatus) < _FACT_CAP) or (
                previous is not None and previous[0] <= now
            ):
                call.dialstatus[uniqueid] = (now, value.upper())
            return
        _capped_set(call.vm_reached, uniqueid, now)
        if variable == "VM_MESSAGEFILE" or value.upper() == "SUCCESS":
            call.vm_left.add(uniqueid)
        self._recheck(call, out)

    def _on_message_waiting(self, event: Mapping[str, str], now: float, out: list) -> None:
        found = self._leg(event, now)
        if found is None:
            return
        call, uniqueid = found
        new = event.get("New", "1")
        if not new.isdigit() or int(new) > 0:
            _capped_set(call.vm_reached, uniqueid, now)
            call.vm_left.add(uniqueid)
            self._recheck(call, out)

    def _on_dial_begin(self, event: Mapping[str, str], now: float, out: list) -> None:
        dest = event.get("DestUniqueid", "")
        dest_channel = event.get("DestChannel", "")
        found = self._leg(event, now)
        if found is None:
            # An Originate has no dialling channel: the destination leg is all there is.
            self._leg(_dest_view(event), now)
            return
        call, dialler = found
        if dest:
            self._adopt(call, dest, dest_channel)
            if dest not in call.hung_up and len(call.open_dials) < _FACT_CAP:
                call.open_dials[dest] = dialler
        if self._is_trunk(dest_channel):
            call.dials_trunk = True

    def _on_dial_end(self, event: Mapping[str, str], now: float, out: list) -> None:
        found = self._leg(event, now)
        if found is None:
            return
        call, dialler = found
        dest = event.get("DestUniqueid", "")
        status = event.get("DialStatus", "").upper()
        if not dest or not status:
            return
        self._adopt(call, dest, event.get("DestChannel", ""))
        call.open_dials.pop(dest, None)
        ends = call.dial_ends.setdefault(dialler, {})
        if dest in ends or len(ends) < _FACT_CAP:
            ends[dest] = (now, status)
        if status == "ANSWER" and len(call.answers) < _FACT_CAP:
            call.answers.append((now, dialler, dest))
        self._recheck(call, out)

    def _on_hangup_request(self, event: Mapping[str, str], now: float, out: list) -> None:
        found = self._leg(event, now)
        if found is None:
            return
        call, uniqueid = found
        if event.get("Event") != "SoftHangupRequest":
            _capped_set(call.hangup_requested, uniqueid, now)
        elif uniqueid == call.linkedid:
            first = call.dialplan_hangup_at
            call.dialplan_hangup_at = now if first is None else min(first, now)

    def _on_hangup(self, event: Mapping[str, str], now: float, out: list) -> None:
        uniqueid = event.get("Uniqueid", "")
        linkedid = event.get("Linkedid", "")
        for members in self._bridges.values():
            members.pop(uniqueid, None)
        if uniqueid and uniqueid == linkedid and linkedid in self._orphans:
            self._report_orphan(linkedid, "joined_mid_call", now)
            return
        found = self._leg(event, now)
        if found is None:
            return
        call, uniqueid = found
        call.hung_up.add(uniqueid)
        call.open_dials.pop(uniqueid, None)
        if uniqueid != call.linkedid:
            # A long queue wait creates a leg per ring attempt: keep only live ones
            # routable (late events still reach the call through their Linkedid).
            call.legs.discard(uniqueid)
            self._leg_call.pop(uniqueid, None)
        if uniqueid == call.linkedid and call.ended_at is None:
            call.ended_at = now
            call.hangup_cause = event.get("Cause", "")
            self._settling[call.linkedid] = now + self.settle
        self._recheck(call, out)

    def _on_bridge_enter(self, event: Mapping[str, str], now: float, out: list) -> None:
        bridge = event.get("BridgeUniqueid", "")
        found = self._leg(event, now)
        if not bridge or found is None:
            return
        call, uniqueid = found
        channel = event.get("Channel", "")
        members = self._bridges.setdefault(bridge, {})
        if event.get("BridgeTechnology") != "holding_bridge":
            # Parked callers share a holding bridge without hearing each other.
            for other, other_channel in members.items():
                if other == uniqueid:
                    continue
                pair = frozenset((uniqueid, other))
                for owner in {call.linkedid, self._leg_call.get(other, "")}:
                    target = self._calls.get(owner)
                    if target is not None and len(target.bridged) < _FACT_CAP:
                        target.bridged.setdefault(pair, now)
                        _learn_name(target, uniqueid, channel)
                        _learn_name(target, other, other_channel)
                        self._recheck(target, out)
        members[uniqueid] = channel

    def _on_bridge_leave(self, event: Mapping[str, str], now: float, out: list) -> None:
        bridge = event.get("BridgeUniqueid", "")
        members = self._bridges.get(bridge)
        if members is not None:
            members.pop(event.get("Uniqueid", ""), None)
            if not members:
                del self._bridges[bridge]

    def _on_bridge_destroy(self, event: Mapping[str, str], now: float, out: list) -> None:
        self._bridges.pop(event.get("BridgeUniqueid", ""), None)

    def _on_queue_join(self, event: Mapping[str, str], now: float, out: list) -> None:
        found = self._leg(event, now)
        if found is None:
            return
        call, uniqueid = found
        stays = call.queue.setdefault(uniqueid, [])
        if len(stays) < _FACT_CAP and not any(s.joined_at == now for s in stays):
            stays.append(_QueueStay(joined_at=now))

    def _on_queue_leave(self, event: Mapping[str, str], now: float, out: list) -> None:
        found = self._leg(event, now)
        if found is None:
            return
        call, uniqueid = found
        stays = call.queue.setdefault(uniqueid, [])
        open_stays = [s for s in stays if s.left_at is None and s.joined_at <= now]
        if open_stays:
            open_stays[-1].left_at = now
        elif not stays:
            stays.append(_QueueStay(joined_at=call.started_at, left_at=now))

    def _on_agent_event(self, event: Mapping[str, str], now: float, out: list) -> None:
        found = self._leg(event, now)
        dest = event.get("DestUniqueid", "")
        if found is None or not dest:
            return
        call, caller = found
        self._adopt(call, dest, event.get("DestChannel", ""))
        if len(call.queue_members) < _FACT_CAP:
            call.queue_members.add(dest)
        if event.get("Event") == "AgentConnect" and len(call.agent_connects) < _FACT_CAP:
            member = event.get("Interface") or event.get("DestChannel", "")
            call.agent_connects.append((now, caller, dest, member))
            self._recheck(call, out)

    def _on_pickup(self, event: Mapping[str, str], now: float, out: list) -> None:
        target = event.get("TargetUniqueid", "")
        linkedid = event.get("TargetLinkedid", "")
        picker = event.get("Channel", "")
        if not target or not linkedid:
            return
        call = self._call_for(target, linkedid, now)
        if call is not None and picker:
            call.pickups[target] = (now, picker)
            self._absorb(call, event, now)
            self._recheck(call, out)

    def _absorb(self, call: _Call, pickup: Mapping[str, str], now: float) -> None:
        """The call of a phone that picked `call` up (desk2 dialling **desk) is how that
        call was answered, not a call of its own: its legs join the picked-up call (and
        so do its events still to come, even when AMI delivers them late)."""
        picker = pickup.get("Uniqueid", "")
        if not picker:
            return
        owners = {self._leg_call.get(picker) or "", pickup.get("Linkedid", "")}
        for own in owners - {"", call.linkedid}:
            other = self._calls.pop(own, None)
            if other is not None:
                self._merge(call, other)
            self._orphans.pop(own, None)
            self._settling.pop(own, None)
            self._done[own] = now  # its late events belong to the picked-up call now
        self._leg_call[picker] = call.linkedid
        call.legs.add(picker)

    def _merge(self, call: _Call, other: _Call) -> None:
        for leg in other.legs:
            self._leg_call[leg] = call.linkedid
            call.legs.add(leg)
            if leg in other.names:
                _learn_name(call, leg, other.names[leg])
            if leg in other.up_at:
                call.up_at.setdefault(leg, other.up_at[leg])
        call.hung_up |= other.hung_up

    # -- decision --------------------------------------------------------------------
    def _adopt(self, call: _Call, uniqueid: str, channel: str) -> None:
        """Attach a leg named only as a destination (DestUniqueid) to the call."""
        if not uniqueid:
            return
        if uniqueid not in self._leg_call:
            self._leg_call[uniqueid] = call.linkedid
            call.legs.add(uniqueid)
        _learn_name(call, uniqueid, channel)

    def _is_trunk(self, channel: str) -> bool:
        parsed = parse_channel(channel)
        return not parsed.is_local and parsed.resource in self.trunk_endpoints

    def _recheck(self, call: _Call, out: list[FinishedCall]) -> None:
        """After the caller hung up, decide as soon as nothing pending can change it."""
        if call.ended_at is None or call.linkedid not in self._calls:
            return
        path = _caller_path(call)
        if _person_answer(call, path) is not None or not _pending(call, path):
            out.append(self._decide(call))

    def _decide(self, call: _Call) -> FinishedCall:
        path = _caller_path(call)
        ended_at = call.ended_at if call.ended_at is not None else call.started_at
        answer = _person_answer(call, path)
        voicemail_left = any(uid in call.vm_left for uid in path)
        if answer is not None:
            answered_at, answered_by = answer
            reason: MissReason | None = None
            ring_end = answered_at
        else:
            answered_by = None
            reason, ring_end = _miss_reason(call, path, ended_at)
        if call.direction_inbound:
            direction: Direction = "inbound"
        elif call.dials_trunk:
            direction = "outbound"
        else:
            direction = "internal"
        ring_end = min(max(ring_end, call.started_at), ended_at)
        finished = FinishedCall(
            linkedid=call.linkedid,
            caller=call.caller,
            caller_name=call.caller_name,
            did=call.did,
            direction=direction,
            missed=answer is None,
            reason=reason,
            voicemail_left=voicemail_left,
            answered_by=answered_by,
            ring_seconds=ring_end - call.started_at,
            started_at=call.started_at,
            ended_at=ended_at,
            trunk_endpoint=call.trunk_endpoint,
        )
        self._drop(call, ended_at)
        log.debug("call %s decided: missed=%s reason=%s", call.linkedid, finished.missed, reason)
        return finished

    def _drop(self, call: _Call, now: float) -> None:
        self._calls.pop(call.linkedid, None)
        self._settling.pop(call.linkedid, None)
        for uniqueid in call.legs:
            if self._leg_call.get(uniqueid) == call.linkedid:
                del self._leg_call[uniqueid]
        self._done[call.linkedid] = now
        self._done.move_to_end(call.linkedid)

    def _forget(self, call: _Call, reason: UnknownReason, now: float) -> None:
        self._remember_unknown(self._unknown_from_call(call, reason))
        self._drop(call, now)

    def _unknown_from_call(self, call: _Call, reason: UnknownReason) -> UnknownCall:
        direction: Direction = (
            "inbound" if call.direction_inbound else "outbound" if call.dials_trunk else "internal"
        )
        return UnknownCall(
            call.linkedid,
            reason,
            call.started_at,
            call.caller,
            call.caller_name,
            call.did,
            direction,
        )


def _learn_name(call: _Call, uniqueid: str, channel: str) -> None:
    """Remember a leg's channel name (first one wins: later names may be zombies)."""
    if channel and uniqueid not in call.names and len(call.names) < _FACT_CAP:
        call.names[uniqueid] = channel


def _dest_view(event: Mapping[str, str]) -> dict[str, str]:
    """The destination half of a Dial event, shaped like a channel event."""
    return {
        "Channel": event.get("DestChannel", ""),
        "Uniqueid": event.get("DestUniqueid", ""),
        "Linkedid": event.get("DestLinkedid", ""),
    }


def _other_local_half(call: _Call, uniqueid: str) -> str | None:
    """The Uniqueid of the ``;2`` half paired with a ``Local/...;1`` leg, if seen."""
    name = call.names.get(uniqueid)
    if name is None:
        return None
    parsed = parse_channel(name)
    if not parsed.is_local or parsed.local_half != "1":
        return None
    wanted = parsed.base + ";2"
    for other, other_name in call.names.items():
        if other_name.split("<", 1)[0] == wanted:
            return other
    return None


def _is_person(call: _Call, uniqueid: str) -> bool:
    name = call.names.get(uniqueid)
    return name is not None and parse_channel(name).is_person


def _caller_path(call: _Call) -> set[str]:
    """The channels the caller was connected through: the inbound leg plus the ``;2``
    halves of Local channels that answered it (FreePBX ring groups, follow-me, queues).
    A Local half that never answered the caller is left out, so its CANCEL/voicemail
    does not count as the caller's experience."""
    path = {call.linkedid}
    connections = [(dialler, dest) for _, dialler, dest in call.answers]
    connections += [(caller, dest) for _, caller, dest, _ in call.agent_connects]
    for pair in call.bridged:
        if len(pair) == 2:
            first, second = tuple(pair)
            connections += [(first, second), (second, first)]
    grew = True
    while grew:
        grew = False
        for source, dest in connections:
            if source in path:
                half = _other_local_half(call, dest)
                if half is not None and half not in path:
                    path.add(half)
                    grew = True
    return path


def _person_answer(call: _Call, path: set[str]) -> tuple[float, str] | None:
    """(time, endpoint) of the first person the caller was connected to, if any."""
    found: list[tuple[float, str]] = []
    for when, dialler, dest in call.answers:
        if dialler in path and _is_person(call, dest):
            found.append((when, dest))
    for pair, when in call.bridged.items():
        if len(pair) != 2 or not pair & path:
            continue
        for member in pair - path:
            if _is_person(call, member):
                found.append((when, member))
    for when, caller, dest, member in call.agent_connects:
        if caller in path:
            found.append((when, dest if _is_person(call, dest) else f"member:{member}"))
    if not found:
        return None
    when, who = min(found)
    if who in call.pickups:
        return when, endpoint_of(call.pickups[who][1])
    if who.startswith("member:"):
        # A Local queue member: name the phone the member's chain reached, if seen.
        phones = sorted(
            (t, dest) for t, dialler, dest in call.answers if _is_person(call, dest)
        )
        who = phones[0][1] if phones else who
        if who.startswith("member:"):
            return when, endpoint_of(who.removeprefix("member:"))
    return when, endpoint_of(call.names.get(who, who))


def _pending(call: _Call, path: set[str]) -> bool:
    """Whether a leg still alive can change the (so far unanswered) outcome."""
    if any(dialler in path for dialler in call.open_dials.values()):
        return True
    return any(uid not in call.hung_up for uid in path if uid != call.linkedid)


def _miss_reason(call: _Call, path: set[str], ended_at: float) -> tuple[MissReason, float]:
    """Why the caller never talked to a person, and when their wait for one ended."""
    episodes: list[tuple[float, MissReason]] = []
    for dialler in path:
        outcome = _dial_outcome(call, dialler)
        if outcome is not None:
            episodes.append(outcome)
        for stay in call.queue.get(dialler, ()):
            left = stay.left_at if stay.left_at is not None else ended_at
            gave_up = _caller_hangup(call, dialler)
            queued_out = gave_up is None or gave_up > left
            episodes.append((left, "noanswer" if queued_out else "abandoned_queue"))
    vm_times = [call.vm_reached[uid] for uid in path if uid in call.vm_reached]
    if vm_times or any(uid in call.vm_left for uid in path):
        vm_start = min(vm_times, default=ended_at)
        before = [when for when, _ in episodes if when <= vm_start]
        return "voicemail", max(before, default=_pbx_answer_time(call, path, vm_start))
    if episodes:
        when, reason = max(episodes, key=lambda item: (item[0], _DIAL_RANK.get(item[1], 0)))
        return reason, when
    up = [call.up_at[uid] for uid in path if uid in call.up_at]
    if up:
        return "abandoned_ivr", min(up)
    gave_up = call.hangup_requested.get(call.linkedid)
    dialplan = call.dialplan_hangup_at
    if gave_up is not None and (dialplan is None or gave_up <= dialplan):
        return "cancel", ended_at
    return _CAUSE_REASON.get(call.hangup_cause, "noanswer"), ended_at


def _caller_hangup(call: _Call, uniqueid: str) -> float | None:
    """When the caller hung up on this channel (or on the inbound leg), if they did."""
    times = [
        call.hangup_requested[uid]
        for uid in (uniqueid, call.linkedid)
        if uid in call.hangup_requested
    ]
    return min(times, default=None)


def _pbx_answer_time(call: _Call, path: set[str], default: float) -> float:
    up = [call.up_at[uid] for uid in path if uid in call.up_at]
    return min(up, default=default)


def _dial_outcome(call: _Call, dialler: str) -> tuple[float, MissReason] | None:
    """How the dialler's last Dial ended, as a miss reason (None if it was answered)."""
    variable = call.dialstatus.get(dialler)
    if variable is not None:
        # Asterisk's own summary of the last Dial (needs the "dialplan" event class).
        when, status = variable
        reason = _DIAL_REASON.get(status)
        return (when, reason) if reason is not None else None
    ends = [
        end for dest, end in call.dial_ends.get(dialler, {}).items()
        if dest not in call.queue_members
    ]
    known = [(_DIAL_REASON[status], when) for when, status in ends if status in _DIAL_REASON]
    if not known or any(status == "ANSWER" for _, status in ends):
        return None
    best = max(known, key=lambda item: _DIAL_RANK[item[0]])[0]
    return max(when for _, when in known), best


_Handler = Callable[[CallTracker, Mapping[str, str], float, list[FinishedCall]], None]
_HANDLERS: dict[str, _Handler] = {
    "Newchannel": CallTracker._on_newchannel,
    "NewCallerid": CallTracker._on_newcallerid,
    "Newstate": CallTracker._on_newstate,
    "Newexten": CallTracker._on_newexten,
    "VarSet": CallTracker._on_varset,
    "MessageWaiting": CallTracker._on_message_waiting,
    "DialBegin": CallTracker._on_dial_begin,
    "DialEnd": CallTracker._on_dial_end,
    "HangupRequest": CallTracker._on_hangup_request,
    "SoftHangupRequest": CallTracker._on_hangup_request,
    "Hangup": CallTracker._on_hangup,
    "BridgeEnter": CallTracker._on_bridge_enter,
    "BridgeLeave": CallTracker._on_bridge_leave,
    "BridgeDestroy": CallTracker._on_bridge_destroy,
    "QueueCallerJoin": CallTracker._on_queue_join,
    "QueueCallerLeave": CallTracker._on_queue_leave,
    "QueueCallerAbandon": CallTracker._on_queue_leave,
    "AgentCalled": CallTracker._on_agent_event,
    "AgentRingNoAnswer": CallTracker._on_agent_event,
    "AgentConnect": CallTracker._on_agent_event,
    "Pickup": CallTracker._on_pickup,
}
