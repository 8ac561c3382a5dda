"""Live previews of the templates: the typed text as the agent would send it now.

The JSON endpoint renders the typed text with sample values through the agent's own
functions (policy.merge_fields, templates.render, templates.segments), so the preview
and the real text never disagree. Each kind of text gets the merge fields its sender
passes, for a sample caller.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import phonenumbers
from flask import jsonify, request
from sqlalchemy import select
from sqlalchemy.orm import Session

from agent.calls import policy
from agent.calls.tracker import FinishedCall
from agent.rules import schedule, settings, templates
from agent.store.models import Call
from web import clock
from web.auth import admin_required
from web.db import get_session
from web.settings.fields import (
    ESCALATION_ALERTS,
    FOLLOWUP_TEMPLATES,
    MAX_FIELD,
    REPLY_ALERTS,
    TEXTBACK_TEMPLATES,
    base_key,
    default_region,
    in_words,
    kind,
)

log = logging.getLogger(__name__)

# the sample caller of every preview: a name caller ID shows for a real person
SAMPLE_CALLER_NAME = "Jane Smith"
SAMPLE_MESSAGE = "Water is coming through the kitchen ceiling, can someone come today?"


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
    base = FOLLOWUP_TEMPLATES if key.startswith(FOLLOWUP_TEMPLATES) else base_key(key)
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
    """The text as the agent would send it, with the validator's complaint if any, in
    words as the field shows it (forms.in_words)."""
    error = None
    try:
        if kind(key) == "templates":
            settings.validate(key, [text], region)
        else:
            settings.validate(key, text, region)
    except settings.SettingError as exc:
        # a list of templates is checked one step at a time here: name the real step
        error = in_words(key, settings.SettingError(
            str(exc).replace(f"{key}[0]", f"{key}[{step}]", 1)))
    body = templates.render(text, fields)
    info = templates.segments(body)
    return Preview(body, info.encoding, info.segments, info.units, info.per_segment,
                   len(body), error)


def previewable(key: str) -> bool:
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


# POST /settings/preview (the area's URLs are in web/settings/__init__.py)
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
    if not isinstance(key, str) or not previewable(key):
        return jsonify(error="no such template"), 400
    if not isinstance(text, str) or len(text) > MAX_FIELD:
        return jsonify(error=f"the text is at most {MAX_FIELD} characters"), 400
    if not isinstance(step, int) or isinstance(step, bool) or not 0 <= step < 100:
        step = 0
    session = get_session()
    region = default_region()
    fields = sample_fields(session, key, settings.all_values(session), region, clock.now())
    result = render_preview(key, text, fields, region, step)
    return jsonify(text=result.text, encoding=result.encoding, segments=result.segments,
                   units=result.units, per_segment=result.per_segment,
                   characters=result.characters, error=result.error)
