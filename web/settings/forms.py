"""A settings page's form: its fields with their previews, saving them all or none, and
the page they are drawn on.

Saving validates every field of the section with the catalogue's own validators and
stores all of them or none, in one transaction; each change is audited like
`textback settings set` (old and new value). A value saved equal to its default
forgets the stored row, so the key follows the default again, including a better
default shipped by a later version.
"""

from __future__ import annotations

import json
import logging
import zoneinfo
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from flask import render_template, request
from flask_login import current_user
from sqlalchemy.orm import Session
from werkzeug.datastructures import MultiDict

from agent.rules import settings
from web import clock
from web.db import get_session
from web.settings.fields import (
    MAX_FIELD,
    Section,
    base_key,
    default_region,
    default_text,
    in_words,
    kind,
    label,
    layout,
    sections,
    sent,
    shown,
    typed,
)
from web.settings.preview import Preview, field_help, render_preview, sample_fields

log = logging.getLogger(__name__)


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


def build_fields(session: Session, keys: Iterable[str], values: Mapping[str, Any],
                 form: MultiDict[str, str] | None = None,
                 errors: Mapping[str, str] | None = None,
                 reset: str | None = None) -> dict[str, Field]:
    """Fields with the stored values, or with what was typed when `form` is given."""
    region, now, errors = default_region(), clock.now(), errors or {}
    fields: dict[str, Field] = {}
    for key in keys:
        spec = settings.SPECS[key]
        if key == reset:
            value = shown(key, spec.default)
        elif form is not None and sent(key, form):
            value = typed(key, form)
        else:
            value = shown(key, values[key])
        item = Field(key, label(key), spec.help, kind(key), value, default_text(key),
                     values[key] == spec.default, errors.get(key))
        if base_key(key) != key:
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
    region = default_region()
    errors: dict[str, str] = {}
    checked: dict[str, Any] = {}
    for key, value in inputs.items():
        try:
            checked[key] = settings.validate(key, value, region)
        except settings.SettingError as exc:
            errors[key] = in_words(key, exc)
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


def check(key: str, value: Any) -> str | None:
    try:
        settings.validate(key, value, default_region())
    except settings.SettingError as exc:
        return in_words(key, exc)
    return None



def too_long(form: MultiDict[str, str]) -> bool:
    return any(len(value) > MAX_FIELD for _key, value in form.items(multi=True))


def saved_message(changed: list[str]) -> str:
    if not changed:
        return "Saved (nothing had changed)."
    return "Saved: " + ", ".join(label(key) for key in changed) + "."


def render_section(page: Section, fields: dict[str, Field], status: int = 200,
                   **extra: Any) -> Any:
    """A section's page with these fields, grouped as the section groups them."""
    session = get_session()
    groups = [(group, [fields[key] for key in keys]) for group, keys in layout()[page.slug]
              if any(key in fields for key in keys)]
    merge_help = None
    if any(item.kind in ("template", "templates") for item in fields.values()):
        merge_help = field_help(session, settings.all_values(session), default_region(),
                                clock.now())
    if page.slug == "routing":
        extra.setdefault("overrides", stored_overrides(settings.all_values(session)))
    template = "settings/hours.html" if page.slug == "hours" else "settings/section.html"
    return render_template(template, section=page, sections=sections(), groups=groups,
                           merge_help=merge_help, zones=zones() if "business.timezone"
                           in fields else (), **extra), status


@cache
def zones() -> list[str]:
    return sorted(zoneinfo.available_timezones())


def stored_overrides(values: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Per-DID routing overrides (set with the CLI), shown on the routing page."""
    return [(key, json.dumps(value, ensure_ascii=False)) for key, value in values.items()
            if key not in settings.SPECS and key.startswith("routing.did.")]
