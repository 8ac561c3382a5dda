"""The business rules people edit (name, hours, templates, cooldown…), stored in `settings`.

Infrastructure (AMI, database, transports, the country the PBX is in) lives in
the TOML config file; everything a manager may change while the system runs
lives here, one row per key holding a JSON value. A key without a row has its
default, so upgrades can improve defaults for everyone who never changed them.

Every key has a validator that turns what a person typed (in the web form or
with `textback settings set KEY VALUE`) into the value stored, or raises a
SettingError naming the key. Stored values are validated again when read; a
row that no longer validates (edited by hand, written by an older version) is
logged and replaced by the default, so one bad row never stops text-backs.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import difflib
import functools
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from agent.rules import revocation, routing, schedule, templates
from agent.store import audit

if TYPE_CHECKING:  # SQLAlchemy is imported where a Session is used, not at start-up:
    from sqlalchemy.orm import Session  # `textback settings` runs without it on SQLite

    from agent.store.models import Setting

log = logging.getLogger(__name__)


class SettingError(ValueError):
    """A setting key or value is refused; the message names the key and what to do."""


class UnnamedBusiness(SettingError):
    """A first text without {business}: refused when saved, but one stored by an older
    version stays in force (with a warning) rather than be swapped for the default
    behind its author's back; the settings page asks for the fix at the next save."""

    def __init__(self, message: str, text: str) -> None:
        super().__init__(message)
        self.text = text


# --------------------------------------------------------------- durations

_DURATION_PART = re.compile(r"(\d+)\s*([dhms])")
_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_FORMAT_UNITS = {"h": 3600, "m": 60, "s": 1}  # "24h" reads better than "1d"


def parse_duration(text: str) -> dt.timedelta:
    """Durations such as "0s", "15s", "2m", "1h30m", "24h", "7d" → timedelta, else ValueError.

    A unit is required on every number: a bare "15" could mean seconds or minutes.
    """
    compact = text.strip().lower()
    position, total = 0, 0
    for match in _DURATION_PART.finditer(compact):
        if compact[position : match.start()].strip():
            break
        total += int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    if not compact or position == 0 or compact[position:].strip():
        raise ValueError(f"{text!r} is not a duration; write e.g. 0s, 15s, 2m, 1h30m or 24h")
    return dt.timedelta(seconds=total)


def format_duration(value: dt.timedelta) -> str:
    """The canonical spelling: timedelta(minutes=90) → "1h30m", 7 days → "168h", zero → "0s"."""
    seconds = int(value.total_seconds())
    parts = []
    for unit, size in _FORMAT_UNITS.items():
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


# --------------------------------------------------------------- validators

Validator = Callable[[str, Any, "str | None"], Any]


def _text(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise SettingError(
            f"{key} takes text, not {json.dumps(value)}; quote it if it looks like a number"
        )
    return value.strip()


def _job_value(key: str, value: Any, region: str | None) -> float:
    """A money amount for the dashboard's revenue estimate; 0 hides the estimate."""
    try:
        amount = float(value)
    except (TypeError, ValueError):
        raise SettingError(f"{key} is a number like 250, not {json.dumps(value)}") from None
    if not 0 <= amount < 1e9:
        raise SettingError(f"{key} is 0 or more")
    return amount


def _amount(key: str, value: Any, region: str | None) -> float:
    """A cost (money or minutes) for the dashboard's cost per booked appointment."""
    try:
        amount = float(value)
    except (TypeError, ValueError):
        raise SettingError(f"{key} is a number like 0.05, not {json.dumps(value)}") from None
    if not 0 <= amount < 1e9:
        raise SettingError(f"{key} is 0 or more")
    return amount


# the transports an SMS part has a price for (costs.sms_part.<transport>)
COST_TRANSPORTS = ("sip", "gsm")


def _close_rate(key: str, value: Any, region: str | None) -> float:
    try:
        rate = float(value)
    except (TypeError, ValueError):
        raise SettingError(f"{key} is a share like 0.3, not {json.dumps(value)}") from None
    if not 0 <= rate <= 1:
        raise SettingError(f"{key} is between 0 and 1 (0.3 = 3 in 10 leads book)")
    return rate


def _business_name(key: str, value: Any, region: str | None) -> str:
    name = " ".join(_text(key, value).split())
    if not name:
        raise SettingError(f"{key} must not be empty; it is how texts name the business")
    if len(name) > 60:
        raise SettingError(f"{key} is {len(name)} characters; keep it under 60 (texts are short)")
    return name


def _timezone(key: str, value: Any, region: str | None) -> str:
    name = _text(key, value)
    try:
        return schedule.load_zone(name).key
    except schedule.ScheduleError as error:
        raise SettingError(f"{key}: {error}") from None


def _booking_link(key: str, value: Any, region: str | None) -> str:
    link = _text(key, value)
    if not link:
        return ""
    parts = urlsplit(link if "://" in link else f"https://{link}")
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https") or "." not in host or any(ch.isspace() for ch in link):
        raise SettingError(
            f"{key}: {link!r} is not a web address; write e.g. https://example.com/book"
        )
    return link


def _weekly(key: str, value: Any, region: str | None) -> str:
    try:
        return schedule.format_weekly(schedule.parse_weekly(_text(key, value)))
    except schedule.ScheduleError as error:
        raise SettingError(f"{key}: {error}") from None


def _list_of_text(key: str, value: Any, *, split_on_spaces: bool = False) -> list[str]:
    """A JSON list, or one string of items separated by commas, semicolons or lines.

    Phone numbers contain spaces, so spaces separate items only where asked.
    """
    if isinstance(value, str):
        text = value.replace(";", ",").replace("\n", ",")
        if split_on_spaces:
            text = text.replace(" ", ",")
        return [item.strip() for item in text.split(",") if item.strip()]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return [item.strip() for item in value if item.strip()]
    raise SettingError(f'{key} takes a list, e.g. ["2026-12-25"], not {json.dumps(value)}')


def _holidays(key: str, value: Any, region: str | None) -> list[str]:
    try:
        dates = schedule.parse_holidays(_list_of_text(key, value, split_on_spaces=True))
    except schedule.ScheduleError as error:
        raise SettingError(f"{key}: {error}") from None
    return [day.isoformat() for day in sorted(dates)]


def _template(key: str, value: Any, region: str | None) -> str:
    text = _text(key, value)
    try:
        templates.validate(text)
    except templates.TemplateError as error:
        raise SettingError(f"{key}: {error}") from None
    return text


def _naming_template(key: str, value: Any, region: str | None) -> str:
    """A text that may be the first one a number gets from us, or answers STOP or HELP:
    CTIA's rules (and carriers' filters) want the business named in it."""
    text = _template(key, value, region)
    if "business" not in templates.fields_used(text):
        raise UnnamedBusiness(
            f"{key} must name the business: put {{business}} in it (e.g. \"thanks for "
            "calling {business}\"); it may be the first text a customer gets from you, and "
            "carriers require the sender to be named", text)
    return text


def _variant_template(key: str, value: Any, region: str | None) -> str:
    """The B text of an A/B test: empty means no test, anything else is a template that
    names the business, like the A text."""
    text = _text(key, value)
    return _naming_template(key, text, region) if text else ""


def _phrases(key: str, value: Any, region: str | None) -> list[str]:
    """Opt-out phrases: each needs a word beyond courtesy words, or "please" alone
    would opt a number out."""
    items = _list_of_text(key, value)
    for item in items:
        words = revocation.words(item)
        if not words or all(word in revocation.COURTESY for word in words):
            raise SettingError(f"{key}: {item!r} has no word that asks to stop; "
                               "courtesy words (please, thanks…) are ignored around phrases")
    return items


def _cap(key: str, value: Any, region: str | None) -> int:
    try:
        number = int(str(value).strip()) if not isinstance(value, bool) else None
    except ValueError:
        number = None
    if number is None or not 0 <= number <= 50:
        raise SettingError(f"{key} is a whole number from 0 to 50 (0 = no limit), "
                           f"not {json.dumps(value)}")
    return number


def _alert_template(key: str, value: Any, region: str | None) -> str:
    """A text to staff: it always has the customer's number and message to show."""
    text = _text(key, value)
    try:
        templates.validate(text, always=("business", "customer", "message"))
    except templates.TemplateError as error:
        raise SettingError(f"{key}: {error}") from None
    return text


def _duration(maximum: dt.timedelta) -> Validator:
    def validate(key: str, value: Any, region: str | None) -> str:
        try:
            duration = parse_duration(_text(key, value))
        except ValueError as error:
            raise SettingError(f"{key}: {error}") from None
        if duration > maximum:
            raise SettingError(f"{key} is at most {format_duration(maximum)}")
        return format_duration(duration)

    return validate


RETENTION_MIN, RETENTION_MAX = dt.timedelta(days=30), dt.timedelta(days=3650)


def _retention(key: str, value: Any, region: str | None) -> str:
    """How long personal data is kept after a customer's last call or text; "0s" = always.

    Stored in days ("730d", not "17520h"): retention is thought of in days and years.
    Anything shorter than RETENTION_MIN is refused: "730m" typed for "730d" would
    erase almost every customer at once, and follow-ups (at most 30 days after a
    text-back) must not lose their customer half-way.
    """
    try:
        duration = parse_duration(_text(key, value))
    except ValueError:
        raise SettingError(f"{key}: {value!r} is not a duration; write e.g. 730d "
                           "(two years), or 0s to keep everything") from None
    if duration and not RETENTION_MIN <= duration <= RETENTION_MAX:
        raise SettingError(f"{key} is 0s (keep everything) or between "
                           f"{RETENTION_MIN.days}d and {RETENTION_MAX.days}d")
    if not duration:
        return "0s"
    rest = duration - dt.timedelta(days=duration.days)
    return f"{duration.days}d{format_duration(rest) if rest else ''}"


def _phone_numbers(key: str, value: Any, region: str | None) -> list[str]:
    from agent.rules import numbers  # phonenumbers: only when a number is checked

    normalised: dict[str, None] = {}
    for raw in _list_of_text(key, value):
        if region is None and not raw.startswith("+"):
            raise SettingError(
                f"{key}: {raw!r} needs its country code (+CC…): no region is configured"
            )
        e164 = numbers.to_e164(raw, region or "ZZ")
        if e164 is None:
            raise SettingError(f"{key}: {raw!r} is not a valid phone number")
        normalised[e164] = None
    return sorted(normalised)


_EMAIL = re.compile(r"[^@\s<>,;]+@[^@\s<>,;]+\.[^@\s<>,;]+")
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def _digest_recipients(key: str, value: Any, region: str | None) -> list[str]:
    """E-mail addresses and mobile numbers (E.164, or national with a region)."""
    addresses = [raw for raw in _list_of_text(key, value) if "@" in raw]
    for address in addresses:
        if not _EMAIL.fullmatch(address):
            raise SettingError(f"{key}: {address!r} is not an e-mail address")
    phones = [raw for raw in _list_of_text(key, value) if "@" not in raw]
    return sorted(dict.fromkeys(address.lower() for address in addresses)) + (
        _phone_numbers(key, phones, region) if phones else [])


def _weekday(key: str, value: Any, region: str | None) -> str:
    day = _text(key, value).lower()
    for name in WEEKDAYS:
        if len(day) >= 3 and name.startswith(day):
            return name
    raise SettingError(f"{key} is a day of the week like monday, not {json.dumps(value)}")


def _hour(key: str, value: Any, region: str | None) -> int:
    try:
        hour = int(str(value).strip().removesuffix(":00"))
    except ValueError:
        raise SettingError(f"{key} is an hour from 0 to 23, not {json.dumps(value)}") from None
    if not 0 <= hour <= 23:
        raise SettingError(f"{key} is an hour from 0 to 23, not {hour}")
    return hour


def _boolean(key: str, value: Any, region: str | None) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "yes", "on", "1"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("false", "no", "off", "0"):
        return False
    raise SettingError(f"{key} is true or false, not {json.dumps(value)}")


def _routing(name: str) -> Validator:
    """The routing parser of agent.rules.routing (the AGI runs the same one on every read)."""
    parse = routing.ROUTING_KEYS[name].parse

    def validate(key: str, value: Any, region: str | None) -> Any:
        try:
            return parse(value)
        except routing.RoutingError as error:
            raise SettingError(f"{key} {error}") from None

    return validate


# ----------------------------------------------------------------- catalogue


@dataclass(frozen=True, slots=True)
class Spec:
    key: str
    default: Any
    help: str
    validator: Validator


# Each is one GSM-7 SMS with the defaults filled in, and stays one with a
# first name, business name and booking link of everyday length (about 15, 15
# and 30 characters); the booking sentence drops out when there is no link.
DEFAULT_BUSINESS_HOURS = (
    "Hi {first_name}, thanks for calling {business}. Sorry we missed you! "
    "We'll call you back soon, or just reply here. Book: {booking_link}"
)
DEFAULT_AFTER_HOURS = (
    "Hi {first_name}, thanks for calling {business}. We're closed now. "
    "We reopen {next_open}. Reply here any time. Book: {booking_link}"
)
DEFAULT_VOICEMAIL = (
    "Hi {first_name}, thanks for calling {business} and leaving a message. "
    "We'll get back to you as soon as we can. Book: {booking_link}"
)

# {business} reads "us" until a name is set, so it only stands where "us" reads well
DEFAULT_OPTOUT = (
    "You're unsubscribed: you won't get any more texts from {business}. "
    "Reply START to resubscribe."
)
DEFAULT_OPTIN = "You're resubscribed to texts from {business}. Reply STOP to opt out."
DEFAULT_HELP = (
    "Thanks for texting {business}. Reply here and a person will get back to you. "
    "Reply STOP to opt out."
)


# Conservative on purpose: each match rings a technician. "leak" alone is left out
# (a dripping tap is not an emergency); sites add their own words.
DEFAULT_EMERGENCY_PHRASES = [
    "emergency", "urgent", "flood", "flooding", "flooded", "water everywhere",
    "burst pipe", "pipe burst", "burst", "no heat", "no heating", "no hot water",
    "gas smell", "smell gas", "smells of gas", "smell of gas", "gas leak", "carbon monoxide",
    "sparks", "burning smell", "sewage", "backing up", "no power", "no electricity",
]
DEFAULT_SCHEDULING_PHRASES = [
    "appointment", "book", "booking", "schedule", "reschedule", "available",
    "availability", "come out", "come by", "come over", "when can", "what time",
    "send someone", "visit",
]
DEFAULT_PRICING_PHRASES = [
    "price", "prices", "pricing", "cost", "costs", "how much", "quote", "estimate",
    "rate", "rates", "charge", "fee", "fees",
]
# Opt-outs in the customer's words (agent.rules.revocation). Keep them unmistakable:
# a text made only of one of these opts the number out with no person looking.
DEFAULT_OPTOUT_PHRASES = [
    "stop texting me", "stop texting", "stop texting us", "stop sending me messages",
    "stop sending messages", "stop sending me texts", "stop sending texts",
    "stop messaging me", "stop contacting me", "stop the texts", "stop these texts",
    "stop the messages", "remove me from your list", "remove me from the list",
    "remove me from your texts", "remove me from your text list", "remove me",
    "remove my number", "take me off your list", "take me off the list", "take me off",
    "take my number off your list", "take my number off", "don't text", "do not text",
    "no more texts", "no more messages", "no more text messages", "don't text me",
    "do not text me", "don't text me again", "don't message me", "do not message me",
    "don't contact me", "do not contact me", "unsubscribe me", "opt me out",
    "leave me alone", "delete my number", "lose my number",
    "no más", "no más mensajes", "no me manden mensajes", "no me manden más mensajes",
    "no me envíen mensajes", "no me envíen más mensajes", "no me escriban",
    "no me escriban más", "ya no me escriban", "dejen de escribirme",
    "dejen de enviarme mensajes", "dejen de mandarme mensajes", "alto", "basta",
    "cancelar", "baja", "darme de baja", "quiero darme de baja", "dar de baja",
    "bórrenme de su lista", "sáquenme de su lista",
]
DEFAULT_EMERGENCY_CUSTOMER = (
    "We're on it: a technician from {business} is calling you right now."
)
DEFAULT_EMERGENCY_ALERT = "EMERGENCY for {business} from {customer}: {message}"
# an answer to a customer who texted first is the first text they get from us: like
# every such text it names the business
DEFAULT_SCHEDULING = (
    "Thanks for texting {business}! You can book a time here: {booking_link}. "
    "Reply with a day and time that suits you and we'll confirm."
)
DEFAULT_PRICING = (
    "Thanks for asking! At {business} prices depend on the job and estimates are free. "
    "Reply with what you need and a good time to call."
)
DEFAULT_REPLY_ALERT = "Reply to {business} from {customer}: {message}"

DEFAULT_FOLLOWUPS = [
    "Hi {first_name}, it's {business} following up on your call. How can we help? "
    "Just reply here.",
    "Hi {first_name}, we'd still love to help. Reply with a good time and we'll call you "
    "back.",
    "Last note from {business}: if you still need help, reply here or call us any time.",
]
DEFAULT_REMINDER = "Reminder: {customer} is still waiting for an answer from {business}: {message}"
DEFAULT_SUPERVISOR_ALERT = "Nobody has answered {customer} yet ({business}): {message}"


def _durations(key: str, value: Any, region: str | None) -> list[str]:
    items = value if isinstance(value, list) else _list_of_text(key, value)
    each = _duration(dt.timedelta(days=30))
    return [each(key, item, region) for item in items]


def _template_list(key: str, value: Any, region: str | None) -> list[str]:
    if not isinstance(value, list) or not value:
        raise SettingError(f"{key} is a JSON list of texts, one per follow-up step")
    return [_template(f"{key}[{i}]", item, region) for i, item in enumerate(value)]


def _window(key: str, value: Any, region: str | None) -> str:
    text = _text(key, value).strip()
    try:
        (_one_window,) = {(s.start, s.end) for s in schedule.parse_weekly(f"mon-sun {text}")}
    except (schedule.ScheduleError, ValueError):
        raise SettingError(f"{key} is one window like 08:00-21:00, not {text!r}") from None
    return text


_ENDPOINT = re.compile(r"[A-Za-z0-9_.-]{1,80}")


def _oncall_target(key: str, value: Any, region: str | None) -> str:
    text = _text(key, value).strip()
    if not text or (_ENDPOINT.fullmatch(text) and not text.lstrip("+").isdigit()):
        return text  # empty (alerts only) or a PJSIP endpoint name
    from agent.rules import numbers

    e164 = numbers.to_e164(text, region or "ZZ")
    if e164 is None:
        raise SettingError(f"{key}: {text!r} is neither a PJSIP endpoint name nor a valid "
                           "phone number (give numbers in E.164, e.g. +15551234567)")
    return e164


def _keywords(key: str, value: Any, region: str | None) -> list[str]:
    words = _list_of_text(key, value)
    if not words or not all(word.strip() for word in words):
        raise SettingError(f"{key} needs at least one word, and no empty ones")
    return words


_SPECS = (
    Spec("business.name", "us", "the business name for {business} in texts", _business_name),
    Spec(
        "business.timezone",
        "UTC",
        "IANA time zone of the business hours, e.g. America/Chicago",
        _timezone,
    ),
    Spec(
        "business.booking_link",
        "",
        "web page where callers book, for {booking_link}; empty leaves that sentence out",
        _booking_link,
    ),
    Spec("business.average_job_value", 0,
         "average value of a job, for the dashboard's revenue estimate; 0 hides it",
         _job_value),
    Spec("business.close_rate", 0.3,
         "share of recovered leads that become a job (0..1), for the revenue estimate",
         _close_rate),
    *(Spec(f"costs.sms_part.{name}", 0,
           f"price of one SMS part sent over {name.upper()}, for the dashboard's cost per "
           "booked appointment", _amount) for name in COST_TRANSPORTS),
    Spec("costs.monthly_software", 0,
         "what textback and its hosting cost a month, for the cost per booked appointment",
         _amount),
    Spec("costs.staff_minutes_per_conversation", 0,
         "minutes of staff time a replied text-back takes, for the cost per booked "
         "appointment", _amount),
    Spec("costs.hourly_rate", 0,
         "staff cost per hour, for the cost per booked appointment", _amount),
    Spec("privacy.retention", "0s",
         "erase a customer's personal data this long after their last call or text "
         "(e.g. 730d); 0s keeps everything; opted-out numbers are kept, only to honour "
         "the opt-out", _retention),
    Spec(
        "hours.weekly",
        "",
        'opening hours, e.g. "mon-fri 08:00-12:00,13:00-17:00; sat 09:00-12:00"; empty = 24/7',
        _weekly,
    ),
    Spec("hours.holidays", [], 'closed dates, e.g. ["2026-12-25"]', _holidays),
    Spec(
        "templates.business_hours",
        DEFAULT_BUSINESS_HOURS,
        "text for a call missed while open",
        _naming_template,
    ),
    Spec(
        "templates.after_hours",
        DEFAULT_AFTER_HOURS,
        "text for a call missed while closed or on a holiday",
        _naming_template,
    ),
    Spec(
        "templates.voicemail",
        DEFAULT_VOICEMAIL,
        "text for a missed call where the caller left a voicemail",
        _naming_template,
    ),
    *(
        Spec(f"{key}_b", "",
             f"a B text to test against {key}: half the callers (chosen by their number, "
             "so each always gets the same one) get it instead, and the dashboard "
             "compares replies and bookings; empty = no test", _variant_template)
        for key in ("templates.business_hours", "templates.after_hours", "templates.voicemail")
    ),
    Spec(
        "keywords.optout",
        ["STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPT OUT",
         "OPTOUT"],
        "whole-message words that opt a number out (any case; add e.g. \"no más\")",
        _keywords,
    ),
    Spec("keywords.optout_phrases", DEFAULT_OPTOUT_PHRASES,
         "opt-outs in the customer's own words (any case, accents and punctuation "
         "ignored): a text made only of these, the keywords and courtesy words opts out; "
         "one that holds them among other words is flagged to staff as a possible opt-out",
         _phrases),
    Spec(
        "keywords.optin",
        ["START", "UNSTOP", "YES"],
        "whole-message words that opt a number back in (only after an opt-out)",
        _keywords,
    ),
    Spec("keywords.help", ["HELP", "INFO"], "whole-message words answered with templates.help",
         _keywords),
    Spec("templates.optout", DEFAULT_OPTOUT,
         "the one confirmation sent after an opt-out (nothing else follows it); names "
         "{business}", _naming_template),
    Spec("templates.optin", DEFAULT_OPTIN, "the reply to an opt-in after an opt-out; names "
         "{business}", _naming_template),
    Spec("templates.help", DEFAULT_HELP, "the reply to HELP/INFO; names {business}",
         _naming_template),
    Spec("intents.emergency", DEFAULT_EMERGENCY_PHRASES,
         "phrases that make a reply an emergency (rings oncall.target at once)", _keywords),
    Spec("intents.scheduling", DEFAULT_SCHEDULING_PHRASES,
         "phrases that make a reply a booking request (answered with templates.scheduling)",
         _keywords),
    Spec("intents.pricing", DEFAULT_PRICING_PHRASES,
         "phrases that make a reply a price question (answered with templates.pricing)",
         _keywords),
    Spec("oncall.target", "",
         "who is rung for an emergency: a PJSIP endpoint (e.g. desk) or a number in E.164; "
         "empty: text alerts only", _oncall_target),
    Spec("oncall.notify_numbers", [], "mobile numbers texted an alert for each emergency",
         _phone_numbers),
    Spec("staff.notify_numbers", [],
         "mobile numbers texted each customer reply that needs a person, until someone "
         "owns the conversation (then the owner's mobile is)", _phone_numbers),
    Spec("templates.emergency_customer", DEFAULT_EMERGENCY_CUSTOMER,
         "the reply to an emergency; names {business}", _naming_template),
    Spec("templates.emergency_alert", DEFAULT_EMERGENCY_ALERT,
         "the alert texted to oncall.notify_numbers ({customer}, {message})",
         _alert_template),
    Spec("templates.scheduling", DEFAULT_SCHEDULING,
         "the reply to a booking request; names {business} (it may be the first text a "
         "number gets)", _naming_template),
    Spec("templates.pricing", DEFAULT_PRICING,
         "the reply to a price question; names {business}", _naming_template),
    Spec("followup.delays", ["30m", "2h", "24h"],
         "follow-ups after a text-back with no reply, counted from the text-back; [] = none",
         _durations),
    Spec("followup.templates", DEFAULT_FOLLOWUPS,
         "the text of each follow-up step (the last one repeats if there are more delays)",
         _template_list),
    Spec("followup.allowed_hours", "08:00-21:00",
         "when follow-ups may go out, in the recipient's local time; 00:00-24:00 = any time",
         _window),
    Spec("compliance.max_automated_per_day", 3,
         "at most this many automated texts (text-back, automatic answers, follow-ups) to "
         "one number in any 24 hours; staff replies and the opt-out confirmation do not "
         "count; what it holds back is kept, cancelled with the reason; 0 = no limit",
         _cap),
    Spec("escalation.reminder_after", "30m",
         "remind staff.notify_numbers when a customer's reply is still unanswered after this",
         _duration(dt.timedelta(days=7))),
    Spec("escalation.supervisor_after", "2h",
         "alert supervisor.notify_numbers when a reply is still unanswered after this",
         _duration(dt.timedelta(days=7))),
    Spec("supervisor.notify_numbers", [], "mobile numbers texted when replies go unanswered",
         _phone_numbers),
    Spec("templates.reminder", DEFAULT_REMINDER,
         "the reminder to staff about an unanswered reply ({customer}, {message})",
         _alert_template),
    Spec("templates.supervisor_alert", DEFAULT_SUPERVISOR_ALERT,
         "the alert to supervisors about an unanswered reply ({customer}, {message})",
         _alert_template),
    Spec("templates.reply_alert", DEFAULT_REPLY_ALERT,
         "the text to staff.notify_numbers for other replies ({customer}, {message})",
         _alert_template),
    Spec(
        "textback.delay",
        "0s",
        "wait after the call ends before texting, e.g. 15s or 2m",
        _duration(dt.timedelta(hours=24)),
    ),
    Spec(
        "textback.cooldown",
        "24h",
        "text the same number at most once in this time; 0s texts every missed call",
        _duration(dt.timedelta(days=90)),
    ),
    Spec(
        "textback.exclusions",
        [],
        "numbers never texted (staff, suppliers), stored in E.164",
        _phone_numbers,
    ),
    Spec(
        "textback.text_fixed_lines",
        False,
        "also text numbers the numbering plan calls landlines (most cannot receive SMS)",
        _boolean,
    ),
    Spec("digest.enabled", False,
         "send the owner a summary of last week (agent.reports.digest)", _boolean),
    Spec("digest.recipients", [],
         "who gets the weekly digest: e-mail addresses (needs [digest.smtp] in the config "
         "file) and/or mobile numbers (texted a short version)", _digest_recipients),
    Spec("digest.day", "monday", "the day the weekly digest goes out, business time zone",
         _weekday),
    Spec("digest.hour", 8, "the hour (0-23) the weekly digest goes out, business time zone",
         _hour),
    *(
        Spec(f"routing.{name}", key.default, key.help, _routing(name))
        for name, key in routing.ROUTING_KEYS.items()
    ),
)
SPECS: dict[str, Spec] = {spec.key: spec for spec in _SPECS}


def _did_spec(key: str) -> Spec | None:
    """`routing.did.<DID>.<name>`: the DID's own value of `routing.<name>`."""
    parts = routing.split_did_key(key)
    if parts is None:
        return None
    did, name = parts
    base = SPECS.get(f"routing.{name}")
    if base is None:
        raise SettingError(f"{key}: per-DID overrides exist for "
                           f"{', '.join(routing.ROUTING_KEYS)}, not {name!r}")
    try:
        routing.parse_did(did)
    except routing.RoutingError as error:
        raise SettingError(f"{key}: {error}") from None
    return Spec(key, base.default, f"for calls to {did}: {base.help}", base.validator)


def _spec(key: str) -> Spec:
    try:
        return SPECS[key]
    except KeyError:
        did_spec = _did_spec(key)
        if did_spec is not None:
            return did_spec
        close = difflib.get_close_matches(key, SPECS, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise SettingError(f"unknown setting {key!r}; {hint}see `textback settings list`") from None


def parse_cli_value(raw: str) -> Any:
    """What `settings set KEY VALUE` stores: JSON when VALUE is valid JSON, else the text.

    So `true`, `[]` and `["+15551234567"]` arrive typed, and `2m` or
    `Acme Plumbing` arrive as text without shell-hostile quoting.
    """
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def in_force(key: str, value: Any, region: str | None = None) -> Any:
    """`validate` for a value read back rather than typed: a first text stored by an
    older version without {business} is kept (see UnnamedBusiness)."""
    try:
        return validate(key, value, region)
    except UnnamedBusiness as error:
        return error.text


def validate(key: str, value: Any, region: str | None = None) -> Any:
    """The value `key` would store for `value`, or SettingError.

    `region` (the PBX's country, from the config file) lets people write
    excluded numbers nationally; without it they must start with "+".
    """
    spec = _spec(key)
    return spec.validator(key, value, region)


def _stored(session: Session, key: str) -> Setting | None:
    from agent.store.models import Setting

    return session.get(Setting, key)


_ABSENT = object()  # no row: the key follows its default


def _effective(spec: Spec, stored: Any = _ABSENT) -> Any:
    """The value in force for a stored value (`_ABSENT`: no row)."""
    if stored is _ABSENT:
        return spec.default
    try:
        return spec.validator(spec.key, stored, None)
    except UnnamedBusiness as error:
        log.warning("stored setting %s: %s; still in force until changed", spec.key, error)
        return error.text
    except SettingError as error:
        log.error("stored setting %s is invalid (%s); using the default", spec.key, error)
        return spec.default


def get(session: Session, key: str) -> Any:
    """The value in force for `key`: the stored one, or the default."""
    spec = _spec(key)
    row = _stored(session, key)
    return _effective(spec, _ABSENT if row is None else row.value)


def business_zone(session: Session) -> ZoneInfo:
    """The business time zone (business.timezone), for showing and counting local times;
    UTC when the stored name is unreadable, so a bad value cannot take a page down."""
    try:
        return schedule.load_zone(get(session, "business.timezone"))
    except Exception:
        log.exception("business.timezone unreadable; showing UTC")
        return ZoneInfo("UTC")


def set(  # the CLI verb; shadows the builtin inside this module only
    session: Session, key: str, value: Any, now: dt.datetime, *, region: str | None = None
) -> Any:
    """Validate and store `value` for `key`; returns what was stored.

    Flushes but does not commit: the caller owns the transaction (a web form
    saving several keys saves all or none).
    """
    from agent.store.models import Setting

    stored = validate(key, value, region)
    row = _stored(session, key)
    if row is None:
        session.add(Setting(key=key, value=stored, updated_at=now))
    else:
        row.value = stored
        row.updated_at = now
    session.flush()
    log.info("setting %s changed", key)
    return stored


def change(session: Session, key: str, value: Any, now: dt.datetime, *, actor: str,
           ip: str | None = None, region: str | None = None) -> tuple[Any, bool]:
    """A person's change to `key` (the web's settings pages, `textback settings set`):
    validated, audited with the old and new value so the owner can see who changed the
    hours or a template, and from what. A value equal to the default is stored as
    "follow the default", so later improvements to defaults still reach it; a value
    equal to the one in force writes nothing. Returns (the value in force, changed?).
    """
    before = get(session, key)
    stored = validate(key, value, region)
    if stored == before:
        return stored, False
    if stored == _spec(key).default:
        reset(session, key)
    else:
        set(session, key, stored, now, region=region)
    audit.audit(session, now, actor, audit.SETTING_CHANGED, key, ip,
                   {"from": before, "to": stored})
    return stored, True


def reset(session: Session, key: str) -> None:
    """Forget the stored value so `key` follows the default again."""
    _spec(key)
    row = _stored(session, key)
    if row is not None:
        session.delete(row)
        session.flush()


@functools.cache
def _stored_query() -> Any:
    """SELECT key, value FROM settings, built once: every missed call reads it."""
    from sqlalchemy import select

    from agent.store.models import Setting
    from agent.store.prepared import Prepared

    return Prepared(select(Setting.__table__.c.key, Setting.__table__.c.value))


def all_values(session: Session) -> dict[str, Any]:
    """Every key with the value in force (defaults merged), in catalogue order."""
    session.flush()  # a value set in this transaction is read back
    return _values(dict(_stored_query().rows(session, {})))


def _values(stored: dict[str, Any]) -> dict[str, Any]:
    """all_values for the stored {key: value}."""
    values = {key: _effective(spec, stored.get(key, _ABSENT)) for key, spec in SPECS.items()}
    for key in sorted(stored):  # per-DID routing overrides exist only where stored
        if key not in SPECS and routing.split_did_key(key) is not None:
            with contextlib.suppress(SettingError):
                values[key] = _effective(_spec(key), stored[key])
    return values


@dataclass(frozen=True)  # no slots: `settings list --json` prints vars(entry)
class Entry:
    """One line of `textback settings list`."""

    key: str
    value: Any
    default: Any
    is_default: bool
    help: str


def catalogue(session: Session) -> list[Entry]:
    """Every setting with its value in force, its default and what it is for."""
    return _entries(all_values(session))


def _entries(values: dict[str, Any]) -> list[Entry]:
    return [
        Entry(key, values[key], spec.default, values[key] == spec.default, spec.help)
        for key, spec in ((key, _spec(key)) for key in values)
    ]


# -- the same on a SQLite file through the sqlite3 module (store/lite.py): the CLI's
# `textback settings` starts in a fraction of the time SQLAlchemy's import takes

def get_in_file(path: Path, key: str) -> Any:
    """`get` on the SQLite database `path`."""
    from agent.store import lite

    spec = _spec(key)
    with lite.connect(path) as connection:
        return _effective(spec, lite.settings(connection, key).get(key, _ABSENT))


def catalogue_in_file(path: Path) -> list[Entry]:
    """`catalogue` on the SQLite database `path`."""
    from agent.store import lite

    with lite.connect(path) as connection:
        return _entries(_values(lite.settings(connection)))


def change_in_file(path: Path, key: str, value: Any, now: dt.datetime, *, actor: str,
                   region: str | None = None) -> tuple[Any, bool]:
    """`change` on the SQLite database `path`: the same validation, row and audit entry,
    in one transaction."""
    from agent.store import lite

    spec = _spec(key)
    stored = validate(key, value, region)
    with lite.connect(path, write=True) as connection:
        before = _effective(spec, lite.settings(connection, key).get(key, _ABSENT))
        if stored == before:
            return stored, False
        if stored == spec.default:
            lite.delete_setting(connection, key)
        else:
            lite.put_setting(connection, key, stored, now)
            log.info("setting %s changed", key)
        details = {"from": before, "to": stored}
        lite.add_audit(connection, now, actor, audit.SETTING_CHANGED, key, None, details)
    audit.logged(actor, audit.SETTING_CHANGED, key, None)
    return stored, True


def defaults() -> dict[str, Any]:
    """Every key with its default: what a fresh install runs on."""
    return {key: spec.default for key, spec in SPECS.items()}
