"""Business hours: weekly shifts, holidays and a time zone; "open", "closed" or "holiday".

The same code answers the policy ("after-hours text or business-hours text?")
and the dialplan routing hook, which must start in well under 100 ms, so this
module imports the standard library only.

The weekly hours are one string, edited by people::

    mon-fri 08:00-12:00,13:00-17:00; sat 09:00-12:00

Rules are separated by ";" (or lines). Each rule is days then times. Days: "mon",
"tue", "wed", "thu", "fri", "sat", "sun" (full names work too), lists "mon,wed",
ranges "mon-fri", including ranges that wrap round the week ("fri-mon"), and
"weekdays", "weekends", "daily". Times: "HH:MM-HH:MM", several per rule for split
shifts. "24:00" closes at midnight; an end earlier than the start runs overnight
("fri 22:00-02:00" is open until 02:00 on Saturday). Days not named are closed, and
so are days in a rule that says so ("sun closed", which wins over other rules).
An empty string is open around the clock.

Owners write hours as they would on a shop door, and that is read too: "8-5"
(a morning opening with a bare end closes in the afternoon: 08:00-17:00),
"8am-5pm", "8:30a-5p", "08:00–17:00" (any dash, or "to"), "0800-1700", "noon",
"midnight". What is stored is always the canonical form (`format_weekly`).

Times are wall-clock times in the business's zone. On a DST change a shift
simply follows the clock on the wall: a shift starting inside the hour the
clocks skip opens when the clocks jump, and the hour the clocks repeat is
judged by its wall-clock time both times round.

A holiday is a local date on which no shift *starts*: the day is closed, and
an overnight shift of the evening before still runs until it ends (the night
crew does not walk out at midnight).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

log = logging.getLogger(__name__)

State = Literal["open", "closed", "holiday"]

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_ALIASES = {
    **{name: index for index, name in enumerate(DAY_NAMES)},
    "monday": 0,
    "tues": 1,
    "tuesday": 1,
    "wednesday": 2,
    "thur": 3,
    "thurs": 3,
    "thursday": 3,
    "friday": 4,
    "saturday": 5,
    "sunday": 6,
}
_MINUTES_PER_DAY = 24 * 60
# How far ahead next_open looks past the last holiday: one full week always
# contains every weekly shift.
_LOOKAHEAD_DAYS = 8


class ScheduleError(ValueError):
    """The hours, holidays or time zone are not understood; the message says what to fix."""


@dataclass(frozen=True, order=True, slots=True)
class Shift:
    """One opening on one weekday, in minutes from that day's midnight.

    `end` is greater than `start` and at most `start + 1440`; an end past 1440
    is an overnight shift that runs into the next day.
    """

    day: int  # 0 = Monday
    start: int
    end: int


ALWAYS_OPEN: tuple[Shift, ...] = tuple(Shift(day, 0, _MINUTES_PER_DAY) for day in range(7))


# How people write a time: "8", "8:30", "08:00", "17.30", "0800", "8am", "8:30 p.m.",
# "5p", "noon", "midnight".
_TIME = re.compile(
    r"(?:(?P<hour>\d{1,2})(?:[:.h](?P<minute>\d{2}))?\s*(?:(?P<half>[ap])\.?\s*m?\.?)?"
    r"|(?P<compact>\d{3,4})|(?P<word>noon|midday|midnight))"
)
_DASHES = re.compile(r"\s*(?:[-\u2010-\u2015\u2212~]|\bto\b|\buntil\b|\btill\b)\s*")
_DAY_WORDS = {"weekdays": "mon-fri", "weekends": "sat,sun", "weekend": "sat,sun",
              "daily": "mon-sun", "everyday": "mon-sun", "every day": "mon-sun",
              "all week": "mon-sun"}
_CLOSED = re.compile(r"\s*\b(?:closed|shut|off)\s*$")
_HINT = "write it like 8:00, 8am, 5:30pm or 17:30"


@dataclass(frozen=True, slots=True)
class _Time:
    minutes: int
    # "5", "12" or "5:30" with no am/pm: at the end of a morning shift, 5 pm
    vague: bool


def _parse_time(text: str, *, rule: str) -> _Time:
    written = text.strip()
    match = _TIME.fullmatch(written.lower())
    if not match:
        raise ScheduleError(f"{written!r} in {rule!r} is not a time; {_HINT}")
    if match["word"]:
        return _Time(0 if match["word"] == "midnight" else 12 * 60, vague=False)
    if match["compact"]:  # "0800", "930": hours and minutes run together
        hour, minute = int(match["compact"][:-2]), int(match["compact"][-2:])
    else:
        hour, minute = int(match["hour"]), int(match["minute"] or 0)
    if minute > 59:
        raise ScheduleError(f"{written!r} in {rule!r} is not a time of day: minutes run to 59")
    if match["half"]:
        if not 1 <= hour <= 12:
            raise ScheduleError(f"{written!r} in {rule!r} is not a time of day: with am or "
                                "pm the hour is 1 to 12")
        hour = hour % 12 + (12 if match["half"] == "p" else 0)
        return _Time(hour * 60 + minute, vague=False)
    value = hour * 60 + minute
    if value > _MINUTES_PER_DAY:
        raise ScheduleError(f"{written!r} in {rule!r} is not a time of day (00:00 to 24:00)")
    # "5", "12" or "5:30" may be either half of the day; "05:00" and "10:00" are 24-hour
    vague = 1 <= hour <= 12 and (match["minute"] is None or len(match["hour"]) == 1)
    return _Time(value, vague=vague)


def _parse_span(span: str, *, rule: str, after: int = 0) -> tuple[int, int]:
    """"8-5", "8am-5pm", "08:00–17:00", "8:30a-5p" → (start, end) in minutes.

    `after` is where the day's previous shift ended: in "9-12, 1-5" the second shift is
    in the afternoon."""
    parts = _DASHES.split(span.strip())
    if len(parts) != 2 or not all(parts):
        raise ScheduleError(f"{span.strip()!r} in {rule!r} is not a range of two times; "
                            "write e.g. 8am-5pm or 08:00-17:00")
    first, last = (_parse_time(part, rule=rule) for part in parts)
    start, end = first.minutes, last.minutes
    if last.vague and end <= start < 12 * 60:
        end += 12 * 60  # "8-5": a morning opening closes in the afternoon
    elif first.vague and not last.vague and start + 12 * 60 < end:
        start += 12 * 60  # "1-5pm": both in the afternoon
    if first.vague and start < after <= start + 12 * 60:
        start += 12 * 60  # "9-12, 1-5": the second shift follows the first
        if last.vague and end < start:
            end += 12 * 60
    if start == _MINUTES_PER_DAY:
        raise ScheduleError(f"{span.strip()!r} in {rule!r} starts at 24:00; start at 00:00")
    if end == start:
        raise ScheduleError(
            f"{span.strip()!r} in {rule!r} opens and closes at the same time; "
            "write 00:00-24:00 for the whole day"
        )
    if end < start:
        end += _MINUTES_PER_DAY  # overnight into the next day
    return start, end


def _parse_days(text: str, *, rule: str) -> list[int]:
    days: list[int] = []
    text = text.strip().rstrip(":").strip()  # "Mon-Fri: 8-5"
    text = _DAY_WORDS.get(text.lower(), text)
    for part in text.split(","):
        part = part.strip().lower()
        if not part:
            raise ScheduleError(f"empty day in {rule!r}; separate days with commas, e.g. mon,wed")
        pieces = [piece.strip().rstrip(".") for piece in _DASHES.split(part, maxsplit=1)]
        first, last = pieces[0], pieces[1] if len(pieces) == 2 else None
        for name in (first, last) if last is not None else (first,):
            if name not in _DAY_ALIASES:
                raise ScheduleError(f"unknown day {name!r} in {rule!r}; use "
                                    f"{', '.join(DAY_NAMES)} (or the full names)")
        start = _DAY_ALIASES[first]
        stop = _DAY_ALIASES[last] if last is not None else start
        span = (stop - start) % 7  # "fri-mon" wraps round the weekend
        days.extend((start + offset) % 7 for offset in range(span + 1))
    return days


def _parse_rule(rule: str) -> tuple[list[int], list[Shift]]:
    """One rule → (its days, their shifts); a rule ending in "closed" has days but no shifts."""
    closed = _CLOSED.search(rule)
    if closed:
        days_text = rule[:closed.start()].strip()
        if not days_text:
            raise ScheduleError(f"{rule!r} names no days; say which are closed, e.g. sun closed")
        return _parse_days(days_text, rule=rule), []
    # The days are everything before the first time: "mon, wed 8:00-12:00", "sat noon-4pm".
    first_time = re.search(r"\d|\bnoon\b|\bmidday\b|\bmidnight\b", rule, re.IGNORECASE)
    cut = first_time.start() if first_time else len(rule)
    days_text, times_text = rule[:cut].strip(), rule[cut:].strip()
    if not days_text:
        raise ScheduleError(f"{rule!r} names no days; start the rule with days, e.g. mon-fri")
    if not times_text:
        raise ScheduleError(f"{rule!r} has no opening times; add them, e.g. {rule} 8am-5pm, "
                            f"or write {rule} closed")
    days = _parse_days(days_text, rule=rule)
    return days, [Shift(day, start, end) for start, end in _parse_spans(times_text, rule=rule)
                  for day in days]


def _parse_spans(text: str, *, rule: str) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    for span in re.split(r",|\band\b|&", text):
        spans.append(_parse_span(span, rule=rule, after=spans[-1][1] if spans else 0))
    return spans


def parse_day(text: str) -> list[tuple[int, int]]:
    """One day's hours as typed in a grid ("8-5", "9-12, 1-5", "closed") → its (start, end)
    shifts in minutes; [] when closed. A ScheduleError quotes what was typed."""
    text = text.strip()
    if not text or _CLOSED.fullmatch(" " + text.lower()):
        return []
    return _parse_spans(text, rule=text)


def format_day(spans: Iterable[tuple[int, int]]) -> str:
    """One day's shifts as the grid shows them: "08:00-12:00, 13:00-17:00"."""
    return ", ".join(f"{_format_time(start)}-{_format_time(end)}" for start, end in spans)


def parse_weekly(text: str) -> tuple[Shift, ...]:
    """Weekly hours string → sorted, de-duplicated shifts; "" means open 24/7."""
    if not text.strip():
        return ALWAYS_OPEN
    shifts: set[Shift] = set()
    closed: set[int] = set()
    for rule in re.split(r"[;\n]", text):
        if rule.strip():
            days, found = _parse_rule(rule.strip())
            shifts.update(found)
            if not found:
                closed.update(days)
    # "closed" wins over any rule naming the same day ("daily 9-5; sun closed")
    shifts = {shift for shift in shifts if shift.day not in closed}
    if not shifts:
        if closed:
            raise ScheduleError("every day named is closed; leave the hours empty for open "
                                "around the clock, or give some opening times")
        return ALWAYS_OPEN
    return tuple(sorted(shifts))


def _format_time(minutes: int) -> str:
    minutes %= _MINUTES_PER_DAY * 2
    if minutes > _MINUTES_PER_DAY:
        minutes -= _MINUTES_PER_DAY
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _format_days(days: list[int]) -> str:
    runs: list[list[int]] = []
    for day in sorted(days):
        if runs and runs[-1][-1] == day - 1:
            runs[-1].append(day)
        else:
            runs.append([day])
    if len(runs) > 1 and runs[0][0] == 0 and runs[-1][-1] == 6:
        runs[0] = runs.pop() + runs[0]  # "fri-mon" rather than "mon,fri-sun"
    parts = []
    for run in runs:
        if len(run) == 1:
            parts.append(DAY_NAMES[run[0]])
        else:
            parts.append(f"{DAY_NAMES[run[0]]}-{DAY_NAMES[run[-1]]}")
    return ",".join(parts)


def format_weekly(shifts: Iterable[Shift]) -> str:
    """The canonical string for shifts; parse_weekly(format_weekly(s)) gives s back.

    Days with the same times are grouped ("mon-fri 08:00-17:00"); open 24/7 is "".
    """
    ordered = tuple(sorted(set(shifts)))
    if ordered == ALWAYS_OPEN:
        return ""
    by_day: dict[int, tuple[tuple[int, int], ...]] = {}
    for shift in ordered:
        by_day[shift.day] = (*by_day.get(shift.day, ()), (shift.start, shift.end))
    groups: dict[tuple[tuple[int, int], ...], list[int]] = {}
    for day, times in by_day.items():
        groups.setdefault(times, []).append(day)
    rules = []
    for times, days in sorted(groups.items(), key=lambda item: min(item[1])):
        spans = ",".join(f"{_format_time(s)}-{_format_time(e)}" for s, e in times)
        rules.append(f"{_format_days(days)} {spans}")
    return "; ".join(rules)


def parse_holidays(values: Iterable[str | dt.date]) -> frozenset[dt.date]:
    """ISO dates ("2026-12-25") → dates; a ScheduleError names the first bad one."""
    dates = set()
    for value in values:
        if isinstance(value, dt.date):
            dates.add(value)
            continue
        try:
            dates.add(dt.date.fromisoformat(str(value).strip()))
        except ValueError:
            raise ScheduleError(
                f"holiday {value!r} is not a date; write it as YYYY-MM-DD, e.g. 2026-12-25"
            ) from None
    return frozenset(dates)


def load_zone(name: str) -> ZoneInfo:
    """The IANA zone called `name`; ScheduleError (a ValueError) when there is none."""
    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ScheduleError(
            f"unknown time zone {name!r}; use an IANA name such as Europe/London "
            "or America/New_York"
        ) from None


def _first_instant_at_or_after(wall: dt.datetime, zone: ZoneInfo) -> dt.datetime:
    """The first instant whose local wall-clock time is `wall` or later (DST gaps included)."""
    earlier = wall.replace(tzinfo=zone, fold=0)
    if earlier.astimezone(dt.UTC).astimezone(zone).replace(tzinfo=None) == wall:
        return earlier  # fold=0 is the first of two readings in a repeated hour
    # `wall` lies in a gap the clocks skip: the answer is the second they jump.
    # Zone transitions fall on whole seconds, so bisect over integer timestamps.
    low = int(wall.replace(tzinfo=zone, fold=1).timestamp())
    high = int(earlier.timestamp())
    while high - low > 1:
        middle = (low + high) // 2
        if dt.datetime.fromtimestamp(middle, zone).replace(tzinfo=None) >= wall:
            high = middle
        else:
            low = middle
    return dt.datetime.fromtimestamp(high, zone)


class Schedule:
    """Business hours in one time zone. Pure: every question takes the time in."""

    def __init__(
        self,
        weekly: str = "",
        holidays: Iterable[str | dt.date] = (),
        timezone: str = "UTC",
    ) -> None:
        self.shifts = parse_weekly(weekly)
        self.holidays = parse_holidays(holidays)
        self.zone = load_zone(timezone)

    @classmethod
    def from_settings(cls, values: Mapping[str, Any]) -> Schedule:
        """Built from the settings keys hours.weekly, hours.holidays and business.timezone."""
        return cls(
            values.get("hours.weekly", ""),
            values.get("hours.holidays", ()),
            values.get("business.timezone", "UTC"),
        )

    @property
    def always_open(self) -> bool:
        """Open every minute of every day, with no holidays."""
        return self.shifts == ALWAYS_OPEN and not self.holidays

    def __repr__(self) -> str:
        return (
            f"Schedule({format_weekly(self.shifts)!r}, "
            f"{sorted(d.isoformat() for d in self.holidays)!r}, {self.zone.key!r})"
        )

    def _local(self, now: dt.datetime) -> dt.datetime:
        if now.tzinfo is None:
            raise ValueError("Schedule needs an aware datetime (naive times have no zone)")
        return now.astimezone(self.zone).replace(tzinfo=None)

    def _shifts_starting(self, day: dt.date) -> list[tuple[dt.datetime, dt.datetime]]:
        """Wall-clock [start, end) of the shifts starting on a local date, [] on holidays."""
        if day in self.holidays:
            return []
        midnight = dt.datetime.combine(day, dt.time())
        return [
            (midnight + dt.timedelta(minutes=s.start), midnight + dt.timedelta(minutes=s.end))
            for s in self.shifts
            if s.day == day.weekday()
        ]

    def state(self, now: dt.datetime) -> State:
        """Open during a shift; else "holiday" on a holiday; else "closed"."""
        wall = self._local(now)
        today = wall.date()
        for day in (today - dt.timedelta(days=1), today):
            for start, end in self._shifts_starting(day):
                if start <= wall < end:
                    return "open"
        if today in self.holidays:
            return "holiday"
        # Past midnight after a holiday: a shift of the holiday evening that
        # would still be running is closed for the holiday, not for the night.
        eve = today - dt.timedelta(days=1)
        if eve in self.holidays:
            eve_midnight = dt.datetime.combine(eve, dt.time())
            for shift in self.shifts:
                if shift.day == eve.weekday() and wall < eve_midnight + dt.timedelta(
                    minutes=shift.end
                ):
                    return "holiday"
        return "closed"

    def _opening(self, start: dt.datetime, now: dt.datetime) -> dt.datetime | None:
        """The first instant at or after `now` when the wall clock reaches `start`, if any."""
        opening = _first_instant_at_or_after(start, self.zone)
        if opening >= now:
            return opening
        # Already past, unless the clocks go back and show `start` a second time.
        again = start.replace(tzinfo=self.zone, fold=1)
        return again if again.utcoffset() != opening.utcoffset() and again >= now else None

    def next_open(self, now: dt.datetime) -> dt.datetime | None:
        """When the business is next open, as an aware UTC datetime; `now` when open now.

        UTC because Python adds and subtracts zone-aware datetimes on the wall
        clock, which is wrong across a DST change; convert for display only.

        None when there is nothing to announce: the business never closes
        (open 24/7 without holidays), or no shift starts within a week of the
        last holiday (it never opens again).
        """
        if self.always_open:
            return None
        if self.state(now) == "open":
            return now.astimezone(dt.UTC)
        wall = self._local(now)
        day = wall.date()
        last = max([day, *self.holidays]) + dt.timedelta(days=_LOOKAHEAD_DAYS)
        # Shifts of earlier days started before `now`, and any of them still
        # running would have made the state "open": only today onwards.
        while day <= last:
            openings = [
                opening
                for start, end in self._shifts_starting(day)
                if (opening := self._opening(start, now)) is not None
                and self._local(opening) < end  # not a shift lost in a skipped hour
            ]
            if openings:
                return min(openings).astimezone(dt.UTC)
            day += dt.timedelta(days=1)
        return None
