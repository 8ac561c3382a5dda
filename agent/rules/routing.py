"""Where an inbound call goes now: ring group, overflow, voicemail — from the business hours.

The PBX asks this for every inbound call (the `textback-route` AGI, or the
agent's FastAGI server), so the rules that ring the desk are the very rules
that choose the after-hours text: one schedule, one settings table, no
disagreement between what the caller heard and what they are texted.

The routing hook sits in front of every call, so this module is the standard
library only (no SQLAlchemy, no phonenumbers): a fresh AGI process must decide
in well under 100 ms. The decision itself is pure (`decide(rules, schedule, now,
defaults)`); the callers read the rows (agent.pbx.agi straight from SQLite,
agent.pbx.fastagi through the agent's engine).

Settings (validated here, stored by agent.rules.settings; per DID as
`routing.did.<DID>.<key>`):

    routing.ring_group        dial strings rung first, e.g. ["PJSIP/desk", "PJSIP/desk2"];
                              empty: the dialplan's TEXTBACK_FALLBACK_RING
    routing.ring_seconds      how long they ring (20)
    routing.overflow          dial string(s) rung when the group is busy, unanswered or
                              unavailable, e.g. "PJSIP/+15551234567@trunk"; empty: none
    routing.overflow_seconds  how long the overflow rings (20)
    routing.voicemail         mailbox, e.g. "100@default"; empty: the dialplan's
                              TEXTBACK_FALLBACK_VOICEMAIL; "none": no voicemail
    routing.after_hours       "voicemail", or dial string(s) rung while closed
    routing.holiday           "voicemail", or dial string(s) rung on a holiday

Values that reach the dialplan are checked against a strict character set, so
nothing stored can smuggle dialplan syntax (`,` `(` `$` `{`…) into `Dial()`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from agent.rules import schedule as hours

log = logging.getLogger(__name__)

RouteKind = Literal["open", "closed", "holiday", "fallback"]
VOICEMAIL_TARGET = "voicemail"  # routing.after_hours / routing.holiday: straight to voicemail
NO_VOICEMAIL = "none"  # routing.voicemail: hang up after ringing, no mailbox
DID_PREFIX = "routing.did."

# TECH/resource: PJSIP/desk, Local/100@from-internal/n, PJSIP/+15551234567@trunk.
# No commas, ampersands, parentheses, quotes, "$", braces, brackets, ";" or spaces:
# those are dialplan syntax.
_DIAL_STRING = re.compile(r"[A-Za-z][A-Za-z0-9]{0,15}/[A-Za-z0-9+_.@#*:/-]{1,120}")
_MAILBOX = re.compile(r"[A-Za-z0-9_-]{1,40}(@[A-Za-z0-9_-]{1,40})?")
# A DID as the dialplan passes it: digits, "+", and the letters some trunks use.
_DID = re.compile(r"[A-Za-z0-9+_-]{1,40}")
_MAX_DIAL_STRINGS = 30
_SEPARATORS = re.compile(r"[&,;\s]+")


class RoutingError(ValueError):
    """A routing value is refused; the message says what to write instead."""


# ----------------------------------------------------------------- parsers
# agent.rules.settings wraps these as the validators of the routing.* keys, and the
# AGI runs them again on every row it reads: one definition of "valid".


def parse_dial_strings(value: Any) -> tuple[str, ...]:
    """A list of dial strings, or one string of them separated by "&", "," or spaces."""
    if isinstance(value, str):
        items = [item for item in _SEPARATORS.split(value) if item]
    elif isinstance(value, list | tuple) and all(isinstance(item, str) for item in value):
        items = [item.strip() for item in value if item.strip()]
    else:
        raise RoutingError(f'takes dial strings such as ["PJSIP/desk"], not {json.dumps(value)}')
    if len(items) > _MAX_DIAL_STRINGS:
        raise RoutingError(f"rings at most {_MAX_DIAL_STRINGS} dial strings at once")
    for item in items:
        if not _DIAL_STRING.fullmatch(item):
            raise RoutingError(
                f"{item!r} is not a dial string; write TECH/resource, e.g. PJSIP/desk "
                "or PJSIP/+15551234567@trunk"
            )
    return tuple(dict.fromkeys(items))


def parse_dial_target(value: Any) -> str:
    """Dial strings as one `Dial()` target ("PJSIP/a&PJSIP/b"); "" for none."""
    return "&".join(parse_dial_strings(value))


def parse_seconds(value: Any, *, low: int = 1, high: int = 600) -> int:
    """Whole seconds: 20, "20" or "20s"."""
    text = str(value).strip().lower().removesuffix("s") if not isinstance(value, bool) else ""
    if isinstance(value, int | str) and text.isdigit() and low <= int(text) <= high:
        return int(text)
    raise RoutingError(f"takes whole seconds from {low} to {high}, not {json.dumps(value)}")


def parse_mailbox(value: Any) -> str:
    """A voicemail box ("100" or "100@default"), "" for the dialplan's, or "none"."""
    if not isinstance(value, str):
        raise RoutingError(f'takes a mailbox such as "100@default", not {json.dumps(value)}')
    mailbox = value.strip()
    if mailbox.lower() == NO_VOICEMAIL:
        return NO_VOICEMAIL
    if mailbox and not _MAILBOX.fullmatch(mailbox):
        raise RoutingError(
            f'{mailbox!r} is not a mailbox; write e.g. "100@default", "" for the '
            f'dialplan\'s default or "{NO_VOICEMAIL}"'
        )
    return mailbox


def parse_closed_target(value: Any) -> str:
    """What a closed line does: "voicemail", or the dial strings to ring."""
    if isinstance(value, str) and value.strip().lower() in (VOICEMAIL_TARGET, ""):
        return VOICEMAIL_TARGET
    target = parse_dial_target(value)
    return target or VOICEMAIL_TARGET


def parse_did(text: str) -> str:
    """The DID of a per-DID override key, as the dialplan passes it."""
    did = text.strip()
    if not _DID.fullmatch(did):
        raise RoutingError(f"{text!r} is not a DID; write it as the trunk sends it, e.g. "
                           "+15550000001")
    return did


@dataclass(frozen=True, slots=True)
class RoutingKey:
    """One routing setting: its default, its parser and a line of help."""

    name: str
    default: Any
    parse: Callable[[Any], Any]
    help: str


ROUTING_KEYS: dict[str, RoutingKey] = {
    key.name: key
    for key in (
        RoutingKey("ring_group", [], lambda v: list(parse_dial_strings(v)),
                   'dial strings rung first, e.g. ["PJSIP/desk","PJSIP/desk2"]; '
                   "empty = the dialplan's TEXTBACK_FALLBACK_RING"),
        RoutingKey("ring_seconds", 20, parse_seconds, "seconds the ring group rings"),
        RoutingKey("overflow", "", parse_dial_target,
                   "dial string rung when the ring group is busy/unanswered/unavailable, "
                   "e.g. PJSIP/+15551234567@trunk; empty = straight to voicemail"),
        RoutingKey("overflow_seconds", 20, parse_seconds, "seconds the overflow rings"),
        RoutingKey("voicemail", "", parse_mailbox,
                   "mailbox after ringing, e.g. 100@default; empty = the dialplan's "
                   'TEXTBACK_FALLBACK_VOICEMAIL; "none" = hang up'),
        RoutingKey("after_hours", VOICEMAIL_TARGET, parse_closed_target,
                   'while closed: "voicemail", or a dial string rung before voicemail'),
        RoutingKey("holiday", VOICEMAIL_TARGET, parse_closed_target,
                   'on a holiday: "voicemail", or a dial string rung before voicemail'),
    )
}


def split_did_key(key: str) -> tuple[str, str] | None:
    """`routing.did.<DID>.<name>` → (DID, name); None for any other key."""
    if not key.startswith(DID_PREFIX):
        return None
    did, dot, name = key[len(DID_PREFIX):].rpartition(".")
    return (did, name) if dot and did else None


def _same_did(a: str, b: str) -> bool:
    """Trunks differ on the "+": +15550000001 and 15550000001 are one DID."""
    bare_a, bare_b = a.removeprefix("+"), b.removeprefix("+")
    return a == b or (bare_a.isdigit() and bare_a == bare_b)


# ----------------------------------------------------------------- rules


@dataclass(frozen=True, slots=True)
class Rules:
    """The routing settings in force for one DID (per-DID overrides applied)."""

    ring_group: tuple[str, ...] = ()
    ring_seconds: int = 20
    overflow: str = ""
    overflow_seconds: int = 20
    voicemail: str = ""
    after_hours: str = VOICEMAIL_TARGET
    holiday: str = VOICEMAIL_TARGET

    @classmethod
    def for_did(cls, values: Mapping[str, Any], did: str) -> Rules:
        """The rules for `did` from settings rows (key → stored JSON value).

        Like the agent's settings, a row that no longer validates is logged and
        its default used: one bad row must not send every call to the fallback.
        """
        chosen: dict[str, Any] = {}
        for name, spec in ROUTING_KEYS.items():
            chosen[name] = _checked(f"routing.{name}", spec, values.get(f"routing.{name}"))
        for key, raw in values.items():
            parts = split_did_key(key)
            if parts is None or not _same_did(parts[0], did) or parts[1] not in ROUTING_KEYS:
                continue
            spec = ROUTING_KEYS[parts[1]]
            chosen[parts[1]] = _checked(key, spec, raw, default=chosen[parts[1]])
        chosen["ring_group"] = tuple(chosen["ring_group"])
        return cls(**chosen)


_UNSET = object()


def _checked(key: str, spec: RoutingKey, raw: Any, default: Any = _UNSET) -> Any:
    fallback = spec.default if default is _UNSET else default
    if raw is None:
        return fallback
    try:
        return spec.parse(raw)
    except RoutingError as error:
        log.error("stored setting %s is invalid (%s); using %s", key, error, json.dumps(fallback))
        return fallback


def schedule_from(values: Mapping[str, Any]) -> hours.Schedule:
    """The business hours from settings rows, each bad row replaced by its default.

    The same per-key rule as agent.rules.settings, so the PBX and the text-back read
    the same hours even from a hand-edited row.
    """
    weekly, holidays, zone = "", [], "UTC"
    try:
        weekly = hours.format_weekly(hours.parse_weekly(str(values.get("hours.weekly", ""))))
    except hours.ScheduleError as error:
        log.error("stored setting hours.weekly is invalid (%s); using the default", error)
    raw_holidays = values.get("hours.holidays", [])
    try:
        if isinstance(raw_holidays, str):
            raw_holidays = [d for d in re.split(r"[,;\s]+", raw_holidays) if d]
        holidays = sorted(hours.parse_holidays(raw_holidays))
    except (hours.ScheduleError, TypeError) as error:
        log.error("stored setting hours.holidays is invalid (%s); using the default", error)
    try:
        zone = hours.load_zone(str(values.get("business.timezone", "UTC"))).key
    except hours.ScheduleError as error:
        log.error("stored setting business.timezone is invalid (%s); using UTC", error)
    return hours.Schedule(weekly, holidays, zone)


# ----------------------------------------------------------------- the decision


@dataclass(frozen=True, slots=True)
class DialplanDefaults:
    """What an empty routing setting means: the dialplan's TEXTBACK_FALLBACK_RING and
    TEXTBACK_FALLBACK_VOICEMAIL (its fallback route uses them too)."""

    ring: str = ""
    voicemail: str = ""

    @classmethod
    def from_channel(cls, ring: str, voicemail: str) -> DialplanDefaults:
        """From the channel's variables; whatever does not validate is left empty."""
        defaults = cls()
        try:
            defaults = replace(defaults, ring=parse_dial_target(ring))
        except RoutingError as error:
            log.warning("TEXTBACK_FALLBACK_RING %s", error)
        try:
            defaults = replace(defaults, voicemail=parse_mailbox(voicemail))
        except RoutingError as error:
            log.warning("TEXTBACK_FALLBACK_VOICEMAIL %s", error)
        return defaults


@dataclass(frozen=True, slots=True)
class Route:
    """Where the call goes: the channel variables the dialplan dials from."""

    kind: RouteKind
    ring: str = ""  # Dial() target rung first; "" = none
    ring_seconds: int = 20
    overflow: str = ""  # rung after BUSY/NOANSWER/CHANUNAVAIL; "" = none
    overflow_seconds: int = 20
    voicemail: str = ""  # mailbox afterwards; "" = none
    reason: str = ""  # why, for the log and TEXTBACK_REASON

    def summary(self, did: str, caller: str | None, elapsed_ms: float) -> str:
        """One log line for this call's route, the same from the AGI and FastAGI."""
        return (f"DID {did} caller {caller or '-'}: {self.kind} ring={self.ring or '-'} "
                f"overflow={self.overflow or '-'} voicemail={self.voicemail or '-'} "
                f"({self.reason}; {elapsed_ms:.1f} ms)")

    def log(self, summary: str) -> None:
        if self.kind == "fallback":
            log.warning("fallback route for %s", summary)
        else:
            log.info("route for %s", summary)

    def channel_variables(self) -> dict[str, str]:
        """Name → value, TEXTBACK_ROUTE last: the dialplan trusts a route only once
        that is set, so a process killed half-way still ends in the fallback."""
        if self.kind == "fallback":
            # the dialplan fills the targets in from its own defaults
            return {"TEXTBACK_REASON": self.reason, "TEXTBACK_ROUTE": "fallback"}
        return {
            "TEXTBACK_RING": self.ring,
            "TEXTBACK_RING_SECONDS": str(self.ring_seconds),
            "TEXTBACK_OVERFLOW": self.overflow,
            "TEXTBACK_OVERFLOW_SECONDS": str(self.overflow_seconds),
            "TEXTBACK_VOICEMAIL": self.voicemail,
            "TEXTBACK_REASON": self.reason,
            "TEXTBACK_ROUTE": self.kind,
        }


# both routing entry points (the AGI process and FastAGI in the agent) answer within this
DEADLINE_SECONDS = 0.5


def fallback_for(error: BaseException) -> Route:
    """The safe route when deciding failed, with the reason for the logs."""
    if isinstance(error, TimeoutError):
        return fallback(f"no decision within {DEADLINE_SECONDS * 1000:.0f} ms")
    if isinstance(error, RoutingError):
        return fallback(f"DID not understood: {error}")
    log.error("routing failed", exc_info=error)
    return fallback(f"{type(error).__name__}: {error}")


def fallback(reason: str) -> Route:
    """The route when no decision could be made: the dialplan's own defaults."""
    return Route("fallback", reason=safe_text(reason))


def decide(rules: Rules, schedule: hours.Schedule, now: dt.datetime,
           defaults: DialplanDefaults = DialplanDefaults()) -> Route:
    """Open: the ring group, then overflow, then voicemail. Closed or holiday: the
    after-hours (holiday) target if any, then voicemail. Pure: `now` is passed in."""
    state = schedule.state(now)
    voicemail = rules.voicemail or defaults.voicemail
    if voicemail == NO_VOICEMAIL:
        voicemail = ""
    if state == "open":
        return Route(
            "open",
            ring="&".join(rules.ring_group) or defaults.ring,
            ring_seconds=rules.ring_seconds,
            overflow=rules.overflow,
            overflow_seconds=rules.overflow_seconds,
            voicemail=voicemail,
            reason="open now",
        )
    target = rules.after_hours if state == "closed" else rules.holiday
    ring = "" if target == VOICEMAIL_TARGET else target
    local = now.astimezone(schedule.zone)
    return Route(
        state,
        ring=ring,
        ring_seconds=rules.ring_seconds,
        voicemail=voicemail,
        reason=f"{state} at {local:%a %H:%M} {schedule.zone.key}",
    )


def route_call(values: Mapping[str, Any], did: str, now: dt.datetime,
               defaults: DialplanDefaults = DialplanDefaults()) -> Route:
    """Settings rows + DID + now → the route (what both AGI front ends run)."""
    return decide(Rules.for_did(values, did), schedule_from(values), now, defaults)


def safe_text(text: str, limit: int = 200) -> str:
    """Text fit for a channel variable and an AGI VERBOSE line: printable ASCII without
    quotes or backslashes, shortened. Used on anything that might carry caller input."""
    cleaned = "".join(ch if " " <= ch <= "~" and ch not in "\"\\'" else "?" for ch in text)
    return cleaned[:limit]


# ----------------------------------------------------------------- the rows it reads

# besides every routing.* key: the hours and the zone they are in
SCHEDULE_KEYS = ("hours.weekly", "hours.holidays", "business.timezone")


def settings_from_rows(rows: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """Rows already decoded (e.g. by SQLAlchemy) → the mapping `route_call` reads."""
    return {key: value for key, value in rows
            if key.startswith("routing.") or key in SCHEDULE_KEYS}
