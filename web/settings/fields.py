"""What the settings pages show of each key: which page and group it sits in, its
label, how it is edited, and how a form's fields read back into values.

Every key of the catalogue (agent.rules.settings.SPECS) lands on a page: the keys a
group names first (each followed by its A/B variant, templates.<name>_b), then keys
by prefix, the rest on "Other"; a later version's new keys therefore always show.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import Any

from flask import abort, current_app
from werkzeug.datastructures import MultiDict

from agent.rules import settings

MAX_FIELD = 5000  # characters: far above any real setting, far below a memory problem
FOLLOWUP_TEMPLATES = "followup.templates"
HOURS_KEYS = ("hours.weekly", "hours.holidays")

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
    "costs.sms_part.sip": "Price of an SMS part (SIP trunk)",
    "costs.sms_part.gsm": "Price of an SMS part (GSM modem)",
    "costs.monthly_software": "Software cost a month",
    "costs.staff_minutes_per_conversation": "Staff minutes per conversation",
    "costs.hourly_rate": "Staff cost per hour",
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
    "keywords.optout_phrases": "Opt-out phrases",
    "compliance.max_automated_per_day": "Automated texts per number, at most, in 24 hours",
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
    "digest.enabled": "Send a weekly digest",
    "digest.recipients": "Digest recipients (e-mail or mobile)",
    "digest.day": "Digest day",
    "digest.hour": "Digest hour (0-23)",
}


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
             Group("Costs", ("costs.sms_part.sip", "costs.sms_part.gsm",
                             "costs.monthly_software", "costs.staff_minutes_per_conversation",
                             "costs.hourly_rate"), ("costs.",),
                   hint="For the dashboard's cost per booked appointment: (SMS parts × "
                   "their price + the software's monthly cost for the period + replied "
                   "conversations × minutes × hourly rate) / booked jobs. 0 leaves a part "
                   "out."),
             Group("Privacy", ("privacy.retention",), ("privacy.",),
                   hint="The agent looks once an hour and erases as \"Erase this person's "
                   "data\" on a contact's page does: their calls and texts still count in the "
                   "dashboard, without number, name or words. Write days: 730d is two "
                   "years, 30d the least."),
             Group("Weekly digest", ("digest.enabled", "digest.recipients", "digest.day",
                                     "digest.hour"), ("digest.",),
                   hint="Last week's figures, at this hour in the business time zone. "
                   "E-mail needs [digest.smtp] in the config file; numbers get a text."))),
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
                   hint="A whole message, in any case, surrounding punctuation ignored. "
                   "Opt-out phrases also count with courtesy words around them "
                   "(\"please stop texting me, thanks\"); inside a longer text they "
                   "flag it to staff as a possible opt-out."),
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
                                  "escalation.supervisor_after"), ("escalation.",)),
             Group("Compliance", ("compliance.max_automated_per_day",), ("compliance.",),
                   hint="Follow-ups also keep to the quiet hours of the customer's state "
                   "(from the area code); the hours above can only narrow them."))),
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


def variant_key(key: str) -> str | None:
    """`templates.<name>_b`, the A/B variant of a template, when the catalogue has one."""
    candidate = f"{key}_b"
    return candidate if key.startswith("templates.") and candidate in settings.SPECS else None


def base_key(key: str) -> str:
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
                    variant = variant_key(key)
                    if variant:
                        placed.setdefault(variant, (section.slug, index))
    placed.update({key: ("hours", -1) for key in HOURS_KEYS})  # the grid shows these
    for key in settings.SPECS:
        if key in placed:
            continue
        spot = next(((section.slug, index) for section in SECTIONS
                     for index, group in enumerate(section.groups)
                     if group.prefixes and key.startswith(group.prefixes)), None)
        if spot is None and base_key(key) in placed:
            spot = placed[base_key(key)]  # a variant of a key placed by prefix
        placed[key] = spot or (OTHER.slug, 0)
    pages: dict[str, list[tuple[Group, list[str]]]] = {}
    for section in (*SECTIONS, OTHER):
        groups = []
        for index, group in enumerate(section.groups):
            named = [k for key in group.keys for k in (key, variant_key(key)) if k]
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


def find_section(slug: str) -> Section:
    for section in sections():
        if section.slug == slug:
            return section
    abort(404)


def section_keys(slug: str) -> list[str]:
    keys = [key for _group, group_keys in layout()[slug] for key in group_keys]
    return [*HOURS_KEYS, *keys] if slug == "hours" else keys


# -------------------------------------------------------------------- fields


def default_region() -> str:
    """The region numbers without +country code are read in (pbx.default_region)."""
    return str(current_app.config["REGION"] or "US")


def label(key: str) -> str:
    base = base_key(key)
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


def typed(key: str, form: MultiDict[str, str]) -> Any:
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


def in_words(key: str, error: Exception) -> str:
    """A refusal as the page shows it, beside its field: without the settings key the
    command line needs ("hours.weekly: '25:00' is not…" → "'25:00' is not…")."""
    message = str(error)
    step = re.match(re.escape(key) + r"\[(\d+)\]: ", message)
    if step:  # one of a list of templates (the follow-ups)
        return f"Step {int(step.group(1)) + 1}: {message[step.end():]}"
    if message.startswith(f"{key}: "):
        message = message[len(key) + 2:]
        return message[:1].upper() + message[1:]
    if message.startswith(f"{key} "):
        return label(key) + message[len(key):]
    return message
