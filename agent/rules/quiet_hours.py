"""Quiet hours: when a text that is not a direct answer may reach a customer. (pure)

Several US states allow solicitations only in narrower hours than the federal
08:00–21:00, in the *recipient's* local time (research: docs in the README's
Compliance section). textback treats everything that is not an answer as one —
follow-ups above all — while a text-back right after the customer's call and an
answer to the customer's own text go at once.

- The state comes from the number's area code (`numbers.us_state`); its window
  (`STATE_WINDOWS`, else `DEFAULT_WINDOW`) must hold in every time zone of the
  state, so a state spanning two zones gets the later start and the earlier end.
- A US number whose state is unknown (toll-free, a brand-new overlay) gets the
  strictest window of all states (`STRICTEST`), in every zone its prefix may be in.
- Numbers outside the US get the business's window in the zones of their prefix.
- The business's own window (`followup.allowed_hours`) can only narrow all this.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass

from agent.rules import numbers, schedule
from agent.rules.schedule import Schedule

MINUTES_PER_DAY = 24 * 60
Week = tuple[tuple[int, int], ...]  # (start, end) minutes of each weekday, Monday first

DEFAULT_WINDOW = "mon-sun 08:00-21:00"  # the federal TCPA hours, for every other state
STATE_WINDOWS = {
    "FL": "mon-sun 08:00-20:00",
    "OK": "mon-sun 08:00-20:00",
    "MD": "mon-sun 08:00-20:00",
    "MS": "mon-sun 08:00-20:00",
    "NJ": "mon-sun 08:00-20:00",
    "CT": "mon-sun 09:00-20:00",
    "TX": "mon-sat 09:00-21:00; sun 12:00-21:00",
    "RI": "mon-fri 09:00-18:00; sat-sun 10:00-17:00",
}

# the zones of each state; the first is where most people live. Where a state has
# several, the window must hold in all of them.
_EASTERN, _CENTRAL, _MOUNTAIN, _PACIFIC = (
    "America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles")
STATE_ZONES: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(("CT", "DC", "DE", "GA", "MA", "MD", "ME", "NC", "NH", "NJ", "NY", "OH",
                     "PA", "RI", "SC", "VA", "VT", "WV"), (_EASTERN,)),
    **dict.fromkeys(("AL", "AR", "IA", "IL", "LA", "MN", "MO", "MS", "OK", "WI"),
                    (_CENTRAL,)),
    **dict.fromkeys(("CO", "MT", "NM", "UT", "WY"), (_MOUNTAIN,)),
    **dict.fromkeys(("CA", "NV", "WA"), (_PACIFIC,)),
    "AZ": ("America/Phoenix", _MOUNTAIN),  # the Navajo Nation keeps DST
    "FL": (_EASTERN, _CENTRAL),  # the panhandle
    "IN": ("America/Indiana/Indianapolis", _CENTRAL),
    "KY": (_EASTERN, _CENTRAL),
    "MI": ("America/Detroit", _CENTRAL),
    "TN": (_CENTRAL, _EASTERN),
    "KS": (_CENTRAL, _MOUNTAIN),
    "NE": (_CENTRAL, _MOUNTAIN),
    "ND": (_CENTRAL, _MOUNTAIN),
    "SD": (_CENTRAL, _MOUNTAIN),
    "TX": (_CENTRAL, _MOUNTAIN),  # El Paso
    "ID": ("America/Boise", _PACIFIC),
    "OR": (_PACIFIC, "America/Boise"),
    "AK": ("America/Anchorage", "America/Adak"),
    "HI": ("Pacific/Honolulu",),
}  # fmt: skip
# where a US number of unknown state is taken to be when its prefix names no zone or
# many (toll-free names every zone from Guam to Newfoundland, and no window of a few
# hours holds in all of those at once): the mainland
US_ZONES = (_EASTERN, _CENTRAL, _MOUNTAIN, "America/Phoenix", _PACIFIC)


def week(weekly: str) -> Week:
    """One window per weekday from weekly hours ("mon-sat 09:00-21:00; sun 12:00-21:00");
    a day with several spans keeps the widest, a day with none is (0, 0)."""
    days: dict[int, tuple[int, int]] = {}
    for shift in schedule.parse_weekly(weekly):
        start, end = days.get(shift.day, (shift.start, shift.end))
        days[shift.day] = (min(start, shift.start), min(max(end, shift.end), MINUTES_PER_DAY))
    return tuple(days.get(day, (0, 0)) for day in range(7))


def narrowest(*weeks: Week) -> Week:
    """The hours inside every one of `weeks`: the latest start, the earliest end."""
    out = []
    for day in range(7):
        start = max(w[day][0] for w in weeks)
        end = min(w[day][1] for w in weeks)
        out.append((start, end) if end > start else (0, 0))
    return tuple(out)


def _weekly(days: Week) -> str:
    rules = [f"{schedule.DAY_NAMES[day]} {start // 60:02d}:{start % 60:02d}-"
             f"{end // 60:02d}:{end % 60:02d}"
             for day, (start, end) in enumerate(days) if end > start]
    return "; ".join(rules)


STRICTEST = narrowest(week(DEFAULT_WINDOW), *(week(w) for w in STATE_WINDOWS.values()))


@dataclass(frozen=True, slots=True)
class Window:
    """Where a number's quiet hours come from: the state (or None), the hours allowed
    each weekday, and the zones they must hold in."""

    state: str | None
    days: Week
    zones: tuple[str, ...]
    where: str = ""  # in words: "TX", "US, state unknown", "outside the US"

    def describe(self) -> str:
        weekly = _weekly(self.days)
        hours = (schedule.format_weekly(schedule.parse_weekly(weekly)) or "any time") \
            if weekly else "never"
        return f"{self.where or self.state}: {hours} in {', '.join(self.zones)}"


def window_for(number: str, business_window: str, business_zone: str) -> Window:
    """The hours a non-answer may reach `number` (E.164): its state's, narrowed by the
    business's `followup.allowed_hours` ("08:00-21:00")."""
    return _window_for(number, business_window, business_zone)


@functools.lru_cache(maxsize=1024)
def _window_for(number: str, business_window: str, business_zone: str) -> Window:
    business = week(f"mon-sun {business_window}")
    prefix_zones = tuple(numbers.timezones_for(number))
    if not numbers.is_us(number):
        return Window(None, business, prefix_zones or (business_zone,), "outside the US")
    state = numbers.us_state(number)
    if state is None:
        zones = prefix_zones if 0 < len(prefix_zones) <= 2 else US_ZONES
        return Window(None, narrowest(STRICTEST, business), zones,
                      "US, state unknown: the strictest hours")
    days = narrowest(week(STATE_WINDOWS.get(state, DEFAULT_WINDOW)), business)
    return Window(state, days, STATE_ZONES.get(state) or prefix_zones or US_ZONES, state)


def allowed_at(now: dt.datetime, window: Window) -> dt.datetime:
    """The first moment at or after `now` inside the window in every one of its zones;
    `now` itself when it is allowed already. A window that never opens answers `now`:
    a business that blanked its hours gets late texts rather than none."""
    weekly = _weekly(window.days)
    if not weekly:
        return now
    schedules = [Schedule(weekly=weekly, timezone=zone) for zone in window.zones]
    moment = now
    for _ in range(16):  # zones a few hours apart agree within a few rounds
        later = [s.next_open(moment) for s in schedules if s.state(moment) != "open"]
        candidates = [t for t in later if t is not None]
        if not candidates:
            return moment
        moment = max(candidates)
    return moment
