"""Should this finished call get a text-back, which text, and when? (pure; time passed in)

A call is texted only when every check below passes. They run in this order,
and the first that fails is the skip reason recorded on the call, so the
reason shown is the most basic one, the one a person would look at first:

1. ``answered``            somebody picked up (any leg): nothing was missed
2. ``not_inbound``         internal or outbound calls are not customers calling
3. ``withheld``            no number to text (anonymous, restricted, junk)
4. ``internal_extension``  "100", "2001": a desk phone, not a customer
5. ``invalid_number``      the caller ID is not a valid number in the plan
6. ``excluded``            the business listed the number (staff, suppliers)
7. ``opted_out``           the caller sent STOP
8. ``known_undeliverable`` earlier sends to the number failed permanently
9. ``fixed_line``          the numbering plan says landline (unless allowed)
10. ``cooldown``           we texted the number within textback.cooldown
11. ``too_late``           everything else allowed a text, but the call ended longer
                           than ``max_age`` ago (learnt from the CDR file after an AMI
                           outage): "sorry we missed you" hours later reads oddly

The template: a voicemail gets templates.voicemail; otherwise the business
state when the text goes out picks templates.business_hours ("open") or
templates.after_hours ("closed" or "holiday"). The text goes out at
``ended_at + textback.delay``, or now if that has passed (a call learnt late,
after an outage); the state and {next_open} are judged at that moment, so the
text is true when it is read.

A/B tests: when the chosen template has a B text (templates.business_hours_b,
templates.after_hours_b, templates.voicemail_b), the caller's number picks the
variant: the first bytes of the SHA-256 of its E.164 form, even → "A", odd →
"B". So about half the callers get B, one caller always gets the same text (a
second call does not switch them), and a restart or a replay decides the same.
Without a B text there is no test and the variant is None.

Experiments (agent.rules.experiments) come first: a running one on the chosen template
picks the caller's cell and its text; a running delay test picks the cell's delay.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from agent.calls.tracker import FinishedCall
from agent.rules import experiments, numbers, settings, templates
from agent.rules.schedule import Schedule

log = logging.getLogger(__name__)

SkipReason = Literal[
    "answered",
    "not_inbound",
    "withheld",
    "internal_extension",
    "invalid_number",
    "excluded",
    "opted_out",
    "known_undeliverable",
    "fixed_line",
    "cooldown",
    "too_late",
]
Variant = Literal["A", "B"]

_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip


# the last rules built per region, with the settings they came from: every call reads
# the settings, which change rarely, and validating all of them is most of a decision's
# work otherwise
_RULES: dict[str, tuple[dict[str, Any], Rules]] = {}


@dataclass(frozen=True)
class Rules:
    """The business rules policy needs, parsed once from the settings."""

    business: str
    booking_link: str
    schedule: Schedule
    template_business_hours: str
    template_after_hours: str
    template_voicemail: str
    # the B texts of A/B tests; "" = no test for that template
    template_business_hours_b: str
    template_after_hours_b: str
    template_voicemail_b: str
    delay: dt.timedelta
    cooldown: dt.timedelta
    exclusions: frozenset[str]
    text_fixed_lines: bool
    region: str  # the PBX's country, from the config file

    @classmethod
    def from_settings(cls, values: Mapping[str, Any], region: str) -> Rules:
        """Rules from a settings dict (settings.all_values); missing keys take defaults.

        Values are validated again, so a hand-built dict cannot smuggle in
        hours or templates the settings screen would have refused.
        """
        cached = _RULES.get(region)
        if cached is not None and cached[0] == values:
            return cached[1]  # the settings did not change since the last call
        merged = settings.defaults() | dict(values)
        checked = {key: settings.in_force(key, merged[key], region) for key in settings.SPECS}
        rules = cls(
            business=checked["business.name"],
            booking_link=checked["business.booking_link"],
            schedule=Schedule.from_settings(checked),
            template_business_hours=checked["templates.business_hours"],
            template_after_hours=checked["templates.after_hours"],
            template_voicemail=checked["templates.voicemail"],
            template_business_hours_b=checked["templates.business_hours_b"],
            template_after_hours_b=checked["templates.after_hours_b"],
            template_voicemail_b=checked["templates.voicemail_b"],
            delay=settings.parse_duration(checked["textback.delay"]),
            cooldown=settings.parse_duration(checked["textback.cooldown"]),
            exclusions=frozenset(checked["textback.exclusions"]),
            text_fixed_lines=checked["textback.text_fixed_lines"],
            region=region.upper(),
        )
        _RULES[region] = (dict(values), rules)
        return rules

    def template(self, key: str) -> str:
        return {
            "templates.business_hours": self.template_business_hours,
            "templates.after_hours": self.template_after_hours,
            "templates.voicemail": self.template_voicemail,
        }[key]

    def template_b(self, key: str) -> str:
        """The B text tested against `key`; "" when no test is running."""
        return {
            "templates.business_hours": self.template_business_hours_b,
            "templates.after_hours": self.template_after_hours_b,
            "templates.voicemail": self.template_voicemail_b,
        }[key]


@dataclass(frozen=True, slots=True)
class CallerHistory:
    """What the database knows about the caller's number."""

    opted_out: bool = False
    last_textback_at: dt.datetime | None = None
    permanent_failure: bool = False  # an earlier send to this number failed for good


@dataclass(frozen=True, slots=True)
class Send:
    template_key: str
    body: str
    send_at: dt.datetime
    encoding: Literal["GSM-7", "UCS-2"]
    segments: int
    variant: str | None = None  # the A/B variant or the experiment's cell, else None
    experiment_id: int | None = None  # the running experiment the text is a cell of


@dataclass(frozen=True, slots=True)
class Skip:
    reason: SkipReason


Decision = Send | Skip


def variant_for(number: str) -> Variant:
    """The A/B variant of a caller: fixed by the number alone, so it never changes."""
    digest = hashlib.sha256(number.encode()).digest()
    return "B" if int.from_bytes(digest[:8], "big") % 2 else "A"


def describe_opening(opening: dt.datetime, reference: dt.datetime, schedule: Schedule) -> str:
    """When the business opens, as a person in its time zone would say it.

    Relative to the reference day in the business zone: "today at 13:00",
    "tomorrow at 8:00", a weekday within the coming week ("Monday at 8:00"),
    and a date beyond it ("on 4 January at 8:00"). Times are on the 24-hour
    clock without a leading zero, understood in every country.
    """
    local = opening.astimezone(schedule.zone)
    days = (local.date() - reference.astimezone(schedule.zone).date()).days
    clock = f"{local.hour}:{local.minute:02d}"
    if days <= 0:
        return f"today at {clock}"
    if days == 1:
        return f"tomorrow at {clock}"
    if days < 7:
        return f"{_WEEKDAYS[local.weekday()]} at {clock}"
    return f"on {local.day} {_MONTHS[local.month - 1]} at {clock}"


def merge_fields(call: FinishedCall, rules: Rules, at: dt.datetime) -> dict[str, str | None]:
    """The merge-field values for a text about `call` sent at `at`.

    None means "no value" and follows the templates module's rule (names read
    "there", other sentences drop out). {next_open} has a value only while the
    business is not open and will open again.
    """
    name = templates.clean_caller_name(call.caller_name)
    opening = None
    if rules.schedule.state(at) != "open":
        next_open = rules.schedule.next_open(at)
        if next_open is not None:
            opening = describe_opening(next_open, at, rules.schedule)
    return {
        "business": rules.business,
        "caller_name": templates.full_name(name),
        "first_name": templates.first_name(name),
        "booking_link": rules.booking_link or None,
        "next_open": opening,
        "did": numbers.format_national(call.did, rules.region) if call.did else None,
    }


def _skip_reason(
    call: FinishedCall, number: str | None, history: CallerHistory, rules: Rules, now: dt.datetime,
    max_age: dt.timedelta | None,
) -> SkipReason | None:
    if not call.missed:
        return "answered"
    if call.direction != "inbound":
        return "not_inbound"
    if numbers.is_withheld(call.caller):
        return "withheld"
    if numbers.is_internal_extension(call.caller, rules.region):
        return "internal_extension"
    if number is None:
        return "invalid_number"
    if number in rules.exclusions:
        return "excluded"
    if history.opted_out:
        return "opted_out"
    if history.permanent_failure:
        return "known_undeliverable"
    if not rules.text_fixed_lines and numbers.number_kind(number) == "fixed_line":
        return "fixed_line"
    if history.last_textback_at is not None and now - history.last_textback_at < rules.cooldown:
        return "cooldown"
    ended = dt.datetime.fromtimestamp(call.ended_at, dt.UTC)
    if max_age is not None and now - ended > max_age:
        return "too_late"
    return None


def decide(
    call: FinishedCall,
    number: str | None,
    history: CallerHistory,
    rules: Rules,
    now: dt.datetime,
    *,
    max_age: dt.timedelta | None = None,
    plans: tuple[experiments.Plan, ...] = (),
) -> Decision:
    """Send or Skip for one finished call; `number` is the caller in E.164 or None.

    `max_age`: a call that ended longer ago than this is not texted (``too_late``).
    """
    reason = _skip_reason(call, number, history, rules, now, max_age)
    if reason is not None:
        log.debug("call %s: no text-back (%s)", call.linkedid, reason)
        return Skip(reason)
    delay, variant, experiment = rules.delay, None, None
    timing = experiments.pick(plans, None) if plans else None
    if timing is not None and timing.delays is not None:
        assert number is not None  # _skip_reason sends only to valid numbers
        variant, experiment = experiments.cell_for(number, 1), timing.experiment_id
        delay = timing.delays[variant]
    send_at = dt.datetime.fromtimestamp(call.ended_at, dt.UTC) + delay
    read_at = max(send_at, now)
    if call.voicemail_left:
        key = "templates.voicemail"
    elif rules.schedule.state(read_at) == "open":
        key = "templates.business_hours"
    else:
        key = "templates.after_hours"
    text = rules.template(key)
    tested = experiments.pick(plans, key) if plans else None
    if tested is not None and tested.texts is not None:
        assert number is not None
        variant, experiment = experiments.cell_for(number, tested.factors), tested.experiment_id
        text = tested.texts[variant]
    elif experiment is None and rules.template_b(key):
        assert number is not None  # _skip_reason sends only to valid numbers
        variant = variant_for(number)
        if variant == "B":
            text = rules.template_b(key)
    body = templates.render(text, merge_fields(call, rules, read_at))
    info = templates.segments(body)
    return Send(key, body, send_at, info.encoding, info.segments, variant, experiment)
