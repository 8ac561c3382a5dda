"""The settings pages (admins only): every business rule of agent.rules.settings, by area.

One page per section, each one form. Saving validates every field of the section with
the catalogue's own validators and stores all of them or none, in one transaction;
each change is audited like `textback settings set` (old and new value). A value saved
equal to its default forgets the stored row, so the key follows the default again,
including a better default shipped by a later version.

The weekly hours are a grid (a day, an "open" box, its shifts) composed into the
`hours.weekly` string; what is stored reads back into the same grid. Templates get a
live preview: a JSON endpoint renders the typed text with sample values through the
agent's own functions (policy.merge_fields, templates.render, templates.segments), so
the preview and the real text never disagree.

The transports page shows what the running agent last published (agent.transports.health), the
outbox queue, and queues test texts pinned to one transport; the agent sends them.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import zoneinfo
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import phonenumbers
from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import current_user
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from werkzeug.datastructures import MultiDict

from agent.calls import policy
from agent.calls.tracker import FinishedCall
from agent.messages import outbox
from agent.rules import numbers, schedule, settings, templates
from agent.rules.settings import business_zone
from agent.store.models import Call, Message, TransportStatus
from agent.transports import health
from web import clock
from web.auth import admin_required
from web.db import get_session

log = logging.getLogger(__name__)

bp = Blueprint("settings", __name__, url_prefix="/settings")

MAX_FIELD = 5000  # characters: far above any real setting, far below a memory problem
MAX_TEST_TEXT = 1000  # a test text is a text message, like an inbox reply
RECENT_TESTS = 10
FOLLOWUP_TEMPLATES = "followup.templates"
HOURS_KEYS = ("hours.weekly", "hours.holidays")
DAYS = tuple(zip(schedule.DAY_NAMES, ("Monday", "Tuesday", "Wednesday", "Thursday",
                                      "Friday", "Saturday", "Sunday"), strict=True))

# the sample caller of every preview: a name caller ID shows for a real person
SAMPLE_CALLER_NAME = "Jane Smith"
SAMPLE_MESSAGE = "Water is coming through the kitchen ceiling, can someone come today?"

# the texts policy.decide chooses between for a missed call (and their A/B variants)
TEXTBACK_TEMPLATES = ("templates.business_hours", "templates.after_hours",
                      "templates.voicemail")
# alerts that agent.messages.timers renders with the business, customer and message only
ESCALATION_ALERTS = ("templates.reminder", "templates.supervisor_alert")
# alerts that agent.messages.conversations renders like its replies, plus customer and message
REPLY_ALERTS = ("templates.emergency_alert", "templates.reply_alert")

LABELS = {
    "business.name": "Business name",
    "business.timezone": "Time zone",
    "business.booking_link": "Booking link",
    "business.average_job_value": "Average job value",
    "business.close_rate": "Close rate",
    "privacy.retention": "Erase customers' data after",
    "hours.weekly": "Weekly hours",
    "hours.holidays": "Holidays",
    "templates.business_hours": "Missed call while open",
    "templates.after_hours": "Missed call while closed",
    "templates.voicemail": "Missed call with a voicemail",
    "textback.delay": "Wait before texting",
    "textback.cooldown": "At most one text per number every",
    "textback.exclusions": "Never text these numbers",
    "textback.text_fixed_lines": "Text landlines too",
    "keywords.optout": "Opt-out words",
    "keywords.optin": "Opt-in words",
    "keywords.help": "Help words",
    "templates.optout": "Opt-out confirmation",
    "templates.optin": "Opt-in confirmation",
    "templates.help": "Answer to HELP",
    "intents.emergency": "Emergency phrases",
    "intents.scheduling": "Booking phrases",
    "intents.pricing": "Price phrases",
    "templates.emergency_customer": "Answer to an emergency",
    "templates.scheduling": "Answer to a booking request",
    "templates.pricing": "Answer to a price question",
    "followup.delays": "Follow-up delays",
    FOLLOWUP_TEMPLATES: "Follow-up texts",
    "followup.allowed_hours": "Follow-ups only between",
    "escalation.reminder_after": "Remind staff after",
    "escalation.supervisor_after": "Alert supervisors after",
    "oncall.target": "On-call phone (rung for emergencies)",
    "oncall.notify_numbers": "Emergency alert numbers",
    "staff.notify_numbers": "Staff numbers",
    "supervisor.notify_numbers": "Supervisor numbers",
    "templates.emergency_alert": "Emergency alert",
    "templates.reply_alert": "Reply alert",
    "templates.reminder": "Reminder to staff",
    "templates.supervisor_alert": "Alert to supervisors",
    "routing.ring_group": "Ring group",
    "routing.ring_seconds": "Ring group rings for (seconds)",
    "routing.overflow": "Overflow",
    "routing.overflow_seconds": "Overflow rings for (seconds)",
    "routing.voicemail": "Voicemail box",
    "routing.after_hours": "While closed",
    "routing.holiday": "On a holiday",
}
TRANSPORT_LABELS = {"sip": "SIP trunk", "gsm": "GSM modem"}


# ------------------------------------------------------------------ sections


@dataclass(frozen=True)
class Group:
    """A titled part of a section: its named keys first, then keys with its prefixes."""

    title: str
    keys: tuple[str, ...] = ()
    prefixes: tuple[str, ...] = ()
    hint: str = ""


@dataclass(frozen=True)
class Section:
    slug: str
    title: str
    intro: str
    groups: tuple[Group, ...]


SECTIONS: tuple[Section, ...] = (
    Section("business", "Business",
            "Who you are, as your texts and the dashboard say it, and how long "
            "customers' data is kept.",
            (Group("Business", ("business.name", "business.timezone", "business.booking_link",
                                "business.average_job_value", "business.close_rate"),
                   ("business.",)),
             Group("Privacy", ("privacy.retention",), ("privacy.",),
                   hint="The agent looks once an hour and erases as \"Erase this person's "
                   "data\" on a contact's page does: their calls and texts still count in the "
                   "dashboard, without number, name or words. Write days: 730d is two "
                   "years, 30d the least."))),
    Section("hours", "Hours",
            "When you are open: the text-back and the call routing both follow these hours.",
            (Group("More", (), ("hours.",)),)),
    Section("textback", "Text-back",
            "The text a caller gets after a missed call, and when they get it.",
            (Group("Texts to missed callers", TEXTBACK_TEMPLATES,
                   hint="Which one goes out: the voicemail text when the caller left a "
                   "message, otherwise the open or closed text by your hours at the "
                   "moment it is sent."),
             Group("When and to whom", ("textback.delay", "textback.cooldown",
                                        "textback.exclusions", "textback.text_fixed_lines"),
                   ("textback.",)))),
    Section("conversations", "Conversations",
            "What happens when customers text back: keywords, automatic answers, "
            "follow-ups and escalation.",
            (Group("Keywords", ("keywords.optout", "keywords.optin", "keywords.help"),
                   ("keywords.",),
                   hint="A whole message, in any case, surrounding punctuation ignored."),
             Group("Answers to keywords", ("templates.optout", "templates.optin",
                                           "templates.help")),
             Group("What a reply is about", ("intents.emergency", "intents.scheduling",
                                             "intents.pricing"), ("intents.",),
                   hint="A phrase anywhere in the message; an emergency wins over the "
                   "others."),
             Group("Automatic answers", ("templates.emergency_customer",
                                         "templates.scheduling", "templates.pricing")),
             Group("Follow-ups", ("followup.delays", FOLLOWUP_TEMPLATES,
                                  "followup.allowed_hours"), ("followup.",)),
             Group("Escalation", ("escalation.reminder_after",
                                  "escalation.supervisor_after"), ("escalation.",)))),
    Section("people", "People",
            "Who is rung or texted about emergencies and replies, and what they read.",
            (Group("Who is told", ("oncall.target", "oncall.notify_numbers",
                                   "staff.notify_numbers", "supervisor.notify_numbers"),
                   ("oncall.", "staff.", "supervisor.")),
             Group("Alert texts", (*REPLY_ALERTS, *ESCALATION_ALERTS)))),
    Section("routing", "Call routing",
            "Where inbound calls ring, by the same hours (the dialplan asks textback).",
            (Group("Call routing", (), ("routing.",),
                   hint="Changes apply to the next call, without reloading Asterisk."),)),
)
OTHER = Section("other", "Other", "Settings without a page of their own.",
                (Group("Other"),))


def _variant(key: str) -> str | None:
    """`templates.<name>_b`, the A/B variant of a template, when the catalogue has one."""
    candidate = f"{key}_b"
    return candidate if key.startswith("templates.") and candidate in settings.SPECS else None


def _base_key(key: str) -> str:
    """The template a variant stands in for (itself for any other key)."""
    if key.endswith("_b") and key[:-2] in settings.SPECS:
        return key[:-2]
    return key


@cache
def layout() -> dict[str, list[tuple[Group, list[str]]]]:
    """Section slug → its groups with their keys. Every catalogue key lands on a page:
    named keys (and their variants) first, then by prefix, the rest on "Other"."""
    placed: dict[str, tuple[str, int]] = {}
    for section in SECTIONS:
        for index, group in enumerate(section.groups):
            for key in group.keys:
                if key in settings.SPECS:
                    placed.setdefault(key, (section.slug, index))
                    variant = _variant(key)
                    if variant:
                        placed.setdefault(variant, (section.slug, index))
    placed.update({key: ("hours", -1) for key in HOURS_KEYS})  # the grid shows these
    for key in settings.SPECS:
        if key in placed:
            continue
        spot = next(((section.slug, index) for section in SECTIONS
                     for index, group in enumerate(section.groups)
                     if group.prefixes and key.startswith(group.prefixes)), None)
        if spot is None and _base_key(key) in placed:
            spot = placed[_base_key(key)]  # a variant of a key placed by prefix
        placed[key] = spot or (OTHER.slug, 0)
    pages: dict[str, list[tuple[Group, list[str]]]] = {}
    for section in (*SECTIONS, OTHER):
        groups = []
        for index, group in enumerate(section.groups):
            named = [k for key in group.keys for k in (key, _variant(key)) if k]
            rest = [key for key in settings.SPECS if key not in named]
            keys = [key for key in (*named, *rest) if placed.get(key) == (section.slug, index)]
            if keys:
                groups.append((group, keys))
        pages[section.slug] = groups
    return pages


def sections() -> list[Section]:
    """The menu: every section with keys (Other only when something landed there)."""
    pages = layout()
    return [section for section in (*SECTIONS, OTHER)
            if section.slug != OTHER.slug or pages[OTHER.slug]]


def _section(slug: str) -> Section:
    for section in sections():
        if section.slug == slug:
            return section
    abort(404)


def section_keys(slug: str) -> list[str]:
    keys = [key for _group, group_keys in layout()[slug] for key in group_keys]
    return [*HOURS_KEYS, *keys] if slug == "hours" else keys


# -------------------------------------------------------------------- fields


def label(key: str) -> str:
    base = _base_key(key)
    if base != key:
        return f"{label(base)} (variant B)"
    return LABELS.get(key) or key.partition(".")[2].replace("_", " ").replace(".", " ").capitalize()


def kind(key: str) -> str:
    """How the key is edited: text, number, bool, list (one per line), template, templates."""
    default = settings.SPECS[key].default
    if key == "business.timezone":
        return "timezone"
    if key.startswith("templates.") and isinstance(default, str):
        return "template"
    if isinstance(default, list) and "templates" in key:
        return "templates"
    if isinstance(default, bool):
        return "bool"
    if isinstance(default, list):
        return "list"
    if isinstance(default, int | float):
        return "number"
    return "text"


def shown(key: str, value: Any) -> Any:
    """A stored value as its form field shows it (the inverse of `submitted`)."""
    edit = kind(key)
    if edit == "bool":
        return bool(value)
    if edit == "templates":
        return [str(item) for item in value] if isinstance(value, list) else [str(value)]
    if isinstance(value, list):
        return "\n".join(str(item) for item in value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # 350.0 reads "350"
    return "" if value is None else str(value)


def submitted(key: str, form: MultiDict[str, str]) -> Any:
    """What the form sent for `key`, in the form the validator takes."""
    edit = kind(key)
    if edit == "bool":
        return key in form
    if edit == "templates":
        return [text.strip() for text in form.getlist(key) if text.strip()]
    if edit == "list":
        # one item per line, so a keyword or phrase may itself hold a comma
        return [line.strip() for line in form.get(key, "").splitlines() if line.strip()]
    return form.get(key, "")


def _raw(key: str, form: MultiDict[str, str]) -> Any:
    """What the person typed, to show it again after an error."""
    edit = kind(key)
    if edit == "bool":
        return key in form
    if edit == "templates":
        return [text for text in form.getlist(key) if text.strip()]
    return form.get(key, "")


def sent(key: str, form: MultiDict[str, str]) -> bool:
    """Whether the form had a field for `key`. Every field but an unticked box sends at
    least an empty value, so a missing one was not on the page (loaded before an
    upgrade added the key): that key is left as it is, not refused as empty."""
    return key in form or kind(key) == "bool"


def default_text(key: str) -> str:
    value = settings.SPECS[key].default
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        return ", ".join(str(item) for item in value) if value else "(none)"
    return shown(key, value) or "(empty)"


@dataclass(frozen=True)
class Preview:
    """A template as it would go out: the text, how it is sent, and what is wrong."""

    text: str
    encoding: str
    segments: int
    units: int
    per_segment: int
    characters: int
    error: str | None = None


@dataclass
class Field:
    key: str
    label: str
    help: str
    kind: str
    value: Any
    default: str
    is_default: bool
    error: str | None = None
    previews: list[Preview] = field(default_factory=list)
    empty_note: str | None = None  # what an empty template means, where empty is allowed


# ------------------------------------------------------------------ previews


def _region() -> str:
    return str(current_app.config["REGION"] or "US")


def _example(region: str, kind_: int) -> str | None:
    example = phonenumbers.example_number_for_type(region, kind_)
    return phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164) \
        if example else None


def sample_numbers(session: Session, region: str) -> tuple[str, str]:
    """(a caller's number, the DID called): the newest real DID when there is one."""
    caller = _example(region, phonenumbers.PhoneNumberType.MOBILE) or "+12015550123"
    did = session.scalar(select(Call.did).where(Call.direction == "inbound",
                                                Call.did.is_not(None))
                         .order_by(Call.started_at.desc()).limit(1))
    return caller, did or _example(region, phonenumbers.PhoneNumberType.FIXED_LINE) or caller


def _sample_moment(key: str, hours: schedule.Schedule, now: dt.datetime) -> dt.datetime:
    """When the sample text is sent: a moment the template is really used at.

    The open text at the next opening (now when open), the closed text at the next
    closed quarter hour (so {next_open} has the value a caller would read).
    """
    if key == "templates.business_hours":
        return hours.next_open(now) or now
    if key != "templates.after_hours":
        return now
    moment = now
    for _ in range(8 * 24 * 4):
        if hours.state(moment) != "open":
            return moment
        moment += dt.timedelta(minutes=15)
    return now  # open around the clock (or never): the sentence drops, as it would


def sample_fields(session: Session, key: str, values: Mapping[str, Any], region: str,
                  now: dt.datetime) -> dict[str, str | None]:
    """The merge fields the agent would fill in for `key`, for a sample caller.

    Each kind of text gets the fields its sender passes: a text-back the merge fields
    of policy.merge_fields for a sample missed call; replies, follow-ups and alerts
    those agent.messages.conversations and agent.messages.timers pass.
    """
    caller, did = sample_numbers(session, region)
    base = FOLLOWUP_TEMPLATES if key.startswith(FOLLOWUP_TEMPLATES) else _base_key(key)
    if base in TEXTBACK_TEMPLATES:
        try:
            rules = policy.Rules.from_settings(values, region)
        except settings.SettingError:
            # a stored value this region refuses must not take the settings pages down
            log.exception("stored settings do not validate; previewing with the defaults")
            rules = policy.Rules.from_settings({}, region)
        at = _sample_moment(base, rules.schedule, now)
        call = FinishedCall(
            linkedid="preview", caller=caller, caller_name=SAMPLE_CALLER_NAME, did=did,
            direction="inbound", missed=True,
            reason="voicemail" if base == "templates.voicemail" else "noanswer",
            voicemail_left=base == "templates.voicemail", answered_by=None, ring_seconds=20.0,
            started_at=at.timestamp() - 20, ended_at=at.timestamp(), trunk_endpoint=None)
        return policy.merge_fields(call, rules, at)
    common = {"business": values["business.name"],
              "booking_link": values["business.booking_link"]}
    if base == FOLLOWUP_TEMPLATES:
        name = templates.clean_caller_name(SAMPLE_CALLER_NAME)
        return {**common, "first_name": templates.first_name(name),
                "caller_name": templates.full_name(name)}
    if base in ESCALATION_ALERTS:
        return {"business": values["business.name"], "customer": caller,
                "message": SAMPLE_MESSAGE}
    if base in REPLY_ALERTS:
        return {**common, "did": did, "customer": caller, "message": SAMPLE_MESSAGE}
    return {**common, "did": did}


def render_preview(key: str, text: str, fields: Mapping[str, str | None], region: str,
                   step: int = 0) -> Preview:
    """The text as the agent would send it, with the validator's complaint if any."""
    error = None
    try:
        if kind(key) == "templates":
            settings.validate(key, [text], region)
        else:
            settings.validate(key, text, region)
    except settings.SettingError as exc:
        # a list of templates is checked one step at a time here: name the real step
        error = str(exc).replace(f"{key}[0]", f"{key}[{step}]", 1)
    body = templates.render(text, fields)
    info = templates.segments(body)
    return Preview(body, info.encoding, info.segments, info.units, info.per_segment,
                   len(body), error)


def _previewable(key: str) -> bool:
    return key in settings.SPECS and kind(key) in ("template", "templates")


def field_help(session: Session, values: Mapping[str, Any], region: str,
               now: dt.datetime) -> list[tuple[str, str, str]]:
    """(field, what it is, what it becomes in the preview) for the merge-field list."""
    sample: dict[str, str | None] = {}
    for key in ("templates.business_hours", "templates.after_hours", "templates.reminder"):
        for name, value in sample_fields(session, key, values, region, now).items():
            if value and not sample.get(name):
                sample[name] = value
    rows = []
    for name, meaning in templates.FIELDS.items():
        becomes = sample.get(name) or templates.render(f"{{{name}}}", {})
        rows.append((name, meaning, becomes or "(nothing: its sentence is left out)"))
    return rows


# -------------------------------------------------------------- form handling


def build_fields(session: Session, keys: Iterable[str], values: Mapping[str, Any],
                 form: MultiDict[str, str] | None = None,
                 errors: Mapping[str, str] | None = None,
                 reset: str | None = None) -> dict[str, Field]:
    """Fields with the stored values, or with what was typed when `form` is given."""
    region, now, errors = _region(), clock.now(), errors or {}
    fields: dict[str, Field] = {}
    for key in keys:
        spec = settings.SPECS[key]
        if key == reset:
            value = shown(key, spec.default)
        elif form is not None and sent(key, form):
            value = _raw(key, form)
        else:
            value = shown(key, values[key])
        item = Field(key, label(key), spec.help, kind(key), value, default_text(key),
                     values[key] == spec.default, errors.get(key))
        if _base_key(key) != key:
            item.empty_note = "Empty: no A/B test, every caller gets the text above."
        if item.kind in ("template", "templates"):
            sample = sample_fields(session, key, values, region, now)
            texts = value if item.kind == "templates" else [value]
            item.previews = [render_preview(key, text, sample, region, step)
                             for step, text in enumerate(texts)]
        fields[key] = item
    return fields


def save(session: Session, inputs: Mapping[str, Any]) -> tuple[dict[str, str], list[str]]:
    """Validate every input, then store them all in one transaction, or none.

    Returns (errors by key, keys changed). Unchanged values are not written, so the
    audit log lists only real changes and untouched keys keep following defaults.
    """
    region = _region()
    errors: dict[str, str] = {}
    checked: dict[str, Any] = {}
    for key, value in inputs.items():
        try:
            checked[key] = settings.validate(key, value, region)
        except settings.SettingError as exc:
            errors[key] = str(exc)
    if errors:
        return errors, []
    now = clock.now()
    changed: list[str] = []
    try:
        for key, value in checked.items():
            _stored, did_change = settings.change(session, key, value, now,
                                                  actor=current_user.username,
                                                  ip=request.remote_addr, region=region)
            if did_change:
                changed.append(key)
        session.commit()
    except Exception:
        session.rollback()
        raise
    if changed:
        log.info("%s changed %s", current_user.username, ", ".join(changed))
    return {}, changed


def _too_long(form: MultiDict[str, str]) -> bool:
    return any(len(value) > MAX_FIELD for _key, value in form.items(multi=True))


def _saved_message(changed: list[str]) -> str:
    if not changed:
        return "Saved (nothing had changed)."
    return "Saved: " + ", ".join(label(key) for key in changed) + "."


# -------------------------------------------------------------------- hours


@dataclass
class Day:
    code: str  # "mon": the form's names are open_<code> and shifts_<code>
    name: str
    open: bool
    shifts: str  # "08:00-12:00, 13:00-17:00"
    error: str | None = None


def hours_grid(weekly: str) -> list[Day]:
    """The stored weekly string as one row per day (every day 00:00-24:00 for 24/7)."""
    shifts = schedule.parse_weekly(weekly)
    days = []
    for index, (code, name) in enumerate(DAYS):
        mine = [shift for shift in shifts if shift.day == index]
        # the canonical formatter, for one day: "mon 08:00-12:00,13:00-17:00"
        text = schedule.format_weekly(mine).partition(" ")[2].replace(",", ", ") if mine else ""
        days.append(Day(code, name, bool(mine), text))
    return days


def read_grid(form: MultiDict[str, str]) -> tuple[list[Day], str | None, str | None]:
    """(rows as typed, the composed hours.weekly string, an error about the whole week)."""
    days: list[Day] = []
    rules: list[str] = []
    for code, name in DAYS:
        day = Day(code, name, f"open_{code}" in form, form.get(f"shifts_{code}", "").strip())
        if day.open:
            if not day.shifts:
                day.error = (f"hours.weekly: {name} is ticked open but has no hours; write "
                             "e.g. 08:00-17:00, or untick it")
            else:
                try:  # each day on its own, so the error stands next to its day
                    settings.validate("hours.weekly", f"{code} {day.shifts}")
                    rules.append(f"{code} {day.shifts}")
                except settings.SettingError as exc:
                    day.error = str(exc)
        days.append(day)
    if any(day.error for day in days):
        return days, None, "hours.weekly: fix the days marked below"
    if not rules:
        # an empty string means open around the clock: never the meaning of "no box ticked"
        return days, None, ("hours.weekly: no day is ticked open. For open around the "
                            "clock, tick every day with 00:00-24:00")
    return days, "; ".join(rules), None


def hours_status(values: Mapping[str, Any], now: dt.datetime) -> tuple[str, str]:
    """(state, sentence) for the stored hours: "Now: closed — opens tomorrow at 8:00…"."""
    hours = schedule.Schedule.from_settings(values)
    state = hours.state(now)
    if hours.always_open:
        return "open", "Now: open. No hours are set, so you are open around the clock."
    if state == "open":
        return "open", "Now: open."
    closed = "closed for a holiday" if state == "holiday" else "closed"
    opening = hours.next_open(now)
    if opening is None:
        return state, f"Now: {closed}. No opening is set in the coming week."
    local = opening.astimezone(hours.zone)
    return state, (f"Now: {closed} — next opening {policy.describe_opening(opening, now, hours)}"
                   f" ({local:%a %d %b %Y %H:%M} {hours.zone.key}).")


# -------------------------------------------------------------------- pages


@bp.get("")
@admin_required
def index() -> Any:
    return redirect(url_for("settings.section", slug=SECTIONS[0].slug))


def _render_section(page: Section, fields: dict[str, Field], status: int = 200,
                    **extra: Any) -> Any:
    session = get_session()
    groups = [(group, [fields[key] for key in keys]) for group, keys in layout()[page.slug]
              if any(key in fields for key in keys)]
    merge_help = None
    if any(item.kind in ("template", "templates") for item in fields.values()):
        merge_help = field_help(session, settings.all_values(session), _region(), clock.now())
    if page.slug == "routing":
        extra.setdefault("overrides", stored_overrides(settings.all_values(session)))
    template = "settings/hours.html" if page.slug == "hours" else "settings/section.html"
    return render_template(template, section=page, sections=sections(), groups=groups,
                           merge_help=merge_help, zones=_zones() if "business.timezone"
                           in fields else (), **extra), status


@cache
def _zones() -> list[str]:
    return sorted(zoneinfo.available_timezones())


@bp.route("/<slug>", methods=["GET", "POST"])
@admin_required
def section(slug: str) -> Any:
    page = _section(slug)
    if slug == "hours":
        return _hours(page)
    session = get_session()
    keys = section_keys(slug)
    values = settings.all_values(session)
    if request.method == "GET":
        return _render_section(page, build_fields(session, keys, values))
    form = request.form
    if _too_long(form):
        abort(413)
    reset = form.get("reset")
    if reset in keys:
        flash(f"{label(reset)} shows its default again. Save to keep it.", "info")
        return _render_section(page, build_fields(session, keys, values, form, reset=reset))
    errors, changed = save(session, {key: submitted(key, form) for key in keys
                                     if sent(key, form)})
    if errors:
        return _render_section(page, build_fields(session, keys, values, form, errors),
                               400, failed=True)
    flash(_saved_message(changed), "info")
    return redirect(url_for("settings.section", slug=slug))


def _hours(page: Section) -> Any:
    session = get_session()
    values = settings.all_values(session)
    keys = section_keys("hours")
    other = keys[len(HOURS_KEYS):]
    if request.method == "GET":
        return _render_hours(page, values, hours_grid(values["hours.weekly"]),
                             "\n".join(values["hours.holidays"]),
                             build_fields(session, other, values))
    form = request.form
    if _too_long(form):
        abort(413)
    days, weekly, weekly_error = read_grid(form)
    holidays = form.get("holidays", "")
    reset = form.get("reset")
    if reset in keys:
        for day in days:
            day.error = None  # only filling in a default: nothing was checked or saved
        if reset == "hours.weekly":
            days = hours_grid(settings.SPECS["hours.weekly"].default)
        elif reset == "hours.holidays":
            holidays = "\n".join(settings.SPECS["hours.holidays"].default)
        flash(f"{label(reset)} shows its default again. Save to keep it.", "info")
        return _render_hours(page, values, days, holidays,
                             build_fields(session, other, values, form, reset=reset))
    inputs: dict[str, Any] = {
        "hours.holidays": [line.strip() for line in holidays.splitlines() if line.strip()],
        **{key: submitted(key, form) for key in other if sent(key, form)}}
    if weekly is None:
        # nothing can be saved, but every other mistake shows at once too
        errors = {key: error for key in inputs if (error := _check(key, inputs[key]))}
        errors["hours.weekly"] = weekly_error or "hours.weekly is not valid"
    else:
        errors, changed = save(session, {"hours.weekly": weekly, **inputs})
        if not errors:
            flash(_saved_message(changed), "info")
            return redirect(url_for("settings.section", slug="hours"))
    return _render_hours(page, values, days, holidays,
                         build_fields(session, other, values, form, errors),
                         errors=errors, status=400)


def _render_hours(page: Section, values: Mapping[str, Any], days: list[Day], holidays: str,
                  fields: dict[str, Field], errors: Mapping[str, str] | None = None,
                  status: int = 200) -> Any:
    errors = errors or {}
    state, sentence = hours_status(values, clock.now())
    weekly, holiday_spec = settings.SPECS["hours.weekly"], settings.SPECS["hours.holidays"]
    return _render_section(
        page, fields, status, failed=bool(errors), days=days,
        weekly_error=errors.get("hours.weekly"),
        weekly_default="open around the clock",
        weekly_is_default=values["hours.weekly"] == weekly.default,
        stored_weekly=values["hours.weekly"], holidays=holidays,
        holidays_error=errors.get("hours.holidays"),
        holidays_default=default_text("hours.holidays"),
        holidays_is_default=values["hours.holidays"] == holiday_spec.default,
        zone=values["business.timezone"], state=state, status_sentence=sentence)


def _check(key: str, value: Any) -> str | None:
    try:
        settings.validate(key, value, _region())
    except settings.SettingError as exc:
        return str(exc)
    return None


@bp.post("/preview")
@admin_required
def preview() -> Any:
    """The typed template as the agent would send it now, for the live preview.

    JSON in ({"key", "text", "step"}) and out ({"text", "encoding", "segments", …,
    "error"}); the CSRF token travels in the X-CSRFToken header.
    """
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        return jsonify(error="send JSON: {\"key\": …, \"text\": …}"), 400
    key, text, step = data.get("key"), data.get("text"), data.get("step", 0)
    if not isinstance(key, str) or not _previewable(key):
        return jsonify(error="no such template"), 400
    if not isinstance(text, str) or len(text) > MAX_FIELD:
        return jsonify(error=f"the text is at most {MAX_FIELD} characters"), 400
    if not isinstance(step, int) or isinstance(step, bool) or not 0 <= step < 100:
        step = 0
    session = get_session()
    region = _region()
    fields = sample_fields(session, key, settings.all_values(session), region, clock.now())
    result = render_preview(key, text, fields, region, step)
    return jsonify(text=result.text, encoding=result.encoding, segments=result.segments,
                   units=result.units, per_segment=result.per_segment,
                   characters=result.characters, error=result.error)


# --------------------------------------------------------------- transports


@dataclass(frozen=True)
class TransportView:
    name: str
    label: str
    state: str  # "up" | "down" | "unknown" (never reported)
    detail: str | None
    signal_dbm: int | None
    signal_word: str | None
    operator: str | None
    last_error: str | None
    last_error_at: str | None
    reported: str | None  # "12 s ago"
    warning: str | None  # the agent is not reporting


def signal_word(dbm: int | None) -> str | None:
    """A modem's signal in a word: -105 dBm is the least `textback doctor` accepts."""
    if dbm is None:
        return None
    if dbm >= -70:
        return "excellent"
    if dbm >= -85:
        return "good"
    if dbm >= -105:
        return "weak"
    return "none"


def ago(delta: dt.timedelta) -> str:
    seconds = max(0, int(delta.total_seconds()))
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    if seconds < 48 * 3600:
        return f"{round(seconds / 3600)} h"
    return f"{round(seconds / 86400)} days"


def transport_names(session: Session) -> list[str]:
    """The configured transports in failover order; without a config, those reported."""
    config = current_app.config.get("TEXTBACK_CONFIG")
    if config is not None:
        return list(config.sms.transports)
    return list(session.scalars(select(TransportStatus.name).order_by(TransportStatus.name)))


def transports(session: Session, now: dt.datetime, zone: zoneinfo.ZoneInfo) -> list[TransportView]:
    views = []
    for name in transport_names(session):
        row = session.get(TransportStatus, name)
        title = TRANSPORT_LABELS.get(name, name)
        if row is None:
            views.append(TransportView(
                name, title, "unknown", None, None, None, None, None, None, None,
                "The agent has not reported on this transport yet: is it running?"))
            continue
        since = now - row.updated_at
        warning = (f"The agent has not reported for {ago(since)}: is it running?"
                   if health.is_stale(row, now) else None)
        views.append(TransportView(
            name, title, row.state, row.detail, row.signal_dbm, signal_word(row.signal_dbm),
            row.operator, row.last_error,
            f"{row.last_error_at.astimezone(zone):%Y-%m-%d %H:%M:%S}"
            if row.last_error_at else None, f"{ago(since)} ago", warning))
    return views


@dataclass(frozen=True)
class Queue:
    depth: int
    oldest_age: str | None


def queue(session: Session, now: dt.datetime) -> Queue:
    depth, oldest = session.execute(
        select(func.count(), func.min(Message.created_at))
        .where(Message.direction == "out", Message.status == outbox.QUEUED)).one()
    if oldest is not None and oldest.tzinfo is None:  # aggregates skip the UTC column type
        oldest = oldest.replace(tzinfo=dt.UTC)
    return Queue(depth, ago(now - oldest) if oldest else None)


def recent_tests(session: Session) -> list[Message]:
    return list(session.scalars(select(Message).where(Message.kind == "test")
                                .order_by(Message.id.desc()).limit(RECENT_TESTS)))


def _panel(session: Session) -> dict[str, Any]:
    now = clock.now()
    zone = business_zone(session)
    return {"transports": transports(session, now, zone), "queue": queue(session, now),
            "tests": recent_tests(session), "zone": zone}


def _render_transports(form: Mapping[str, str] | None = None,
                       errors: Mapping[str, str] | None = None, status: int = 200) -> Any:
    session = get_session()
    form = form or {}
    return render_template(
        "settings/transports.html", section=None, sections=sections(),
        names=[(name, TRANSPORT_LABELS.get(name, name)) for name in transport_names(session)],
        form=form, errors=errors or {}, region=_region(), max_text=MAX_TEST_TEXT,
        **_panel(session)), status


@bp.get("/transports")
@admin_required
def transports_page() -> Any:
    return _render_transports()


@bp.get("/transports/panel")
@admin_required
def transports_panel() -> Any:
    """The status, queue and recent tests, for the page's polling to swap in."""
    return render_template("settings/_panel.html", **_panel(get_session()))


@bp.post("/transports/test")
@admin_required
def send_test() -> Any:
    """Queue one test text through the chosen transport; the agent sends it."""
    session = get_session()
    region = _region()
    raw = (request.form.get("number") or "").strip()
    text = (request.form.get("text") or "").strip()
    chosen = request.form.get("transport") or ""
    errors: dict[str, str] = {}
    names = transport_names(session)
    if chosen not in names:
        errors["transport"] = ("Choose a transport: " + ", ".join(names) if names else
                               "No transport is configured or reported yet.")
    number = numbers.to_e164(raw, region) if raw else None
    if not raw:
        errors["number"] = "Enter the number to text."
    elif number is None:
        errors["number"] = (f"{raw} is not a valid phone number (numbers without +country "
                            f"code are read as {region}).")
    elif outbox.opted_out(session, number):
        errors["number"] = (f"{number} has opted out of texts (it replied STOP): nothing is "
                            "sent to it, tests included. Use another number.")
    if not text:
        errors["text"] = "Write the text to send."
    elif len(text) > MAX_TEST_TEXT:
        errors["text"] = f"A test text is at most {MAX_TEST_TEXT} characters."
    if errors or number is None:
        return _render_transports(request.form, errors, 400)
    info = templates.segments(text)
    message = outbox.enqueue(session, now=clock.now(), kind="test", number=number, body=text,
                             idempotency_key=None, encoding=info.encoding,
                             segments=info.segments, transport=chosen)
    assert message is not None  # no idempotency key: never a duplicate
    session.commit()
    log.info("%s queued test message %d to %s through %s", current_user.username, message.id,
             number, chosen)
    flash(f"Test text queued for {number} through the {TRANSPORT_LABELS.get(chosen, chosen)} "
          f"({info.segments} SMS, {info.encoding}). The agent sends it within a few seconds; "
          "its status shows below.", "info")
    return redirect(url_for("settings.transports_page"))


def stored_overrides(values: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Per-DID routing overrides (set with the CLI), shown on the routing page."""
    return [(key, json.dumps(value, ensure_ascii=False)) for key, value in values.items()
            if key not in settings.SPECS and key.startswith("routing.did.")]
