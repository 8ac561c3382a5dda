"""The hours page: the weekly hours as a grid, the holidays, and whether open now.

The weekly hours are a grid (a day, an "open" box, its shifts) composed into the
`hours.weekly` string; what is stored reads back into the same grid. The page says
whether the business is open now and when it next opens, as a caller would find it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flask import abort, flash, redirect, request, url_for
from werkzeug.datastructures import MultiDict

from agent.calls import policy
from agent.rules import schedule, settings
from web import clock
from web.db import get_session
from web.settings.fields import (
    HOURS_KEYS,
    Section,
    default_text,
    label,
    section_keys,
    sent,
    submitted,
)
from web.settings.forms import (
    Field,
    build_fields,
    check,
    render_section,
    save,
    saved_message,
    too_long,
)

DAYS = tuple(zip(schedule.DAY_NAMES, ("Monday", "Tuesday", "Wednesday", "Thursday",
                                      "Friday", "Saturday", "Sunday"), strict=True))


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
    """(rows as typed, the composed hours.weekly string, an error about the whole week).

    Each day is read as an owner writes it ("8-5", "8am-5pm", "8:30a-5p", "closed":
    agent.rules.schedule.parse_day) and stored in the canonical form, which is what the
    grid shows once saved. Errors are sentences, without the settings key.
    """
    days: list[Day] = []
    rules: list[str] = []
    for code, name in DAYS:
        day = Day(code, name, f"open_{code}" in form, form.get(f"shifts_{code}", "").strip())
        if day.open:
            try:  # each day on its own, so the error stands next to its day
                spans = schedule.parse_day(day.shifts)
            except schedule.ScheduleError as exc:
                day.error = f"{name}: {exc}."
            else:
                if spans:
                    rules.append(f"{code} {schedule.format_day(spans)}")
                elif day.shifts:  # "closed" typed in a ticked day: it is closed
                    day.open, day.shifts = False, ""
                else:
                    day.error = (f"{name} is ticked open but has no hours; write e.g. 8am-5pm "
                                 "or 08:00-17:00, or untick it.")
        days.append(day)
    if any(day.error for day in days):
        return days, None, "The weekly hours are not saved: fix the days marked below."
    if not rules:
        # an empty string means open around the clock: never the meaning of "no box ticked"
        return days, None, ("No day is ticked open. For open around the clock, tick every "
                            "day with 00:00-24:00.")
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


def page(section: Section) -> Any:
    """The hours page of `section` (GET shows it; POST saves the grid, the holidays and
    the section's other keys, all or none)."""
    session = get_session()
    values = settings.all_values(session)
    keys = section_keys("hours")
    other = keys[len(HOURS_KEYS):]
    if request.method == "GET":
        return _render_hours(section, values, hours_grid(values["hours.weekly"]),
                             "\n".join(values["hours.holidays"]),
                             build_fields(session, other, values))
    form = request.form
    if too_long(form):
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
        return _render_hours(section, values, days, holidays,
                             build_fields(session, other, values, form, reset=reset))
    inputs: dict[str, Any] = {
        "hours.holidays": [line.strip() for line in holidays.splitlines() if line.strip()],
        **{key: submitted(key, form) for key in other if sent(key, form)}}
    if weekly is None:
        # nothing can be saved, but every other mistake shows at once too
        errors = {key: error for key in inputs if (error := check(key, inputs[key]))}
        errors["hours.weekly"] = weekly_error or "The weekly hours are not valid."
    else:
        errors, changed = save(session, {"hours.weekly": weekly, **inputs})
        if not errors:
            flash(saved_message(changed), "info")
            return redirect(url_for("settings.section", slug="hours"))
    return _render_hours(section, values, days, holidays,
                         build_fields(session, other, values, form, errors),
                         errors=errors, status=400)


def _render_hours(page: Section, values: Mapping[str, Any], days: list[Day], holidays: str,
                  fields: dict[str, Field], errors: Mapping[str, str] | None = None,
                  status: int = 200) -> Any:
    errors = errors or {}
    state, sentence = hours_status(values, clock.now())
    weekly, holiday_spec = settings.SPECS["hours.weekly"], settings.SPECS["hours.holidays"]
    return render_section(
        page, fields, status, failed=bool(errors), days=days,
        weekly_error=errors.get("hours.weekly"),
        weekly_default="open around the clock",
        weekly_is_default=values["hours.weekly"] == weekly.default,
        stored_weekly=values["hours.weekly"], holidays=holidays,
        holidays_error=errors.get("hours.holidays"),
        holidays_default=default_text("hours.holidays"),
        holidays_is_default=values["hours.holidays"] == holiday_spec.default,
        zone=values["business.timezone"], state=state, status_sentence=sentence)
