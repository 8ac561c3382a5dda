from __future__ import annotations

import datetime as dt
import subprocess
import sys
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.rules.schedule import (
    ALWAYS_OPEN,
    Schedule,
    ScheduleError,
    Shift,
    format_day,
    format_weekly,
    parse_day,
    parse_weekly,
)

pytestmark = pytest.mark.clock  # make test-clock runs it at awkward instants too

UTC = dt.UTC
LONDON = ZoneInfo("Europe/London")
NEW_YORK = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")

OFFICE = "mon-fri 08:00-12:00,13:00-17:00; sat 09:00-12:00"


def at(zone: ZoneInfo, *args: int, fold: int = 0) -> dt.datetime:
    return dt.datetime(*args, tzinfo=zone, fold=fold)


# 2026-03-02 is a Monday.
@pytest.mark.parametrize(
    ("when", "state"),
    [
        (at(LONDON, 2026, 3, 2, 7, 59), "closed"),
        (at(LONDON, 2026, 3, 2, 8, 0), "open"),
        (at(LONDON, 2026, 3, 2, 11, 59), "open"),
        (at(LONDON, 2026, 3, 2, 12, 30), "closed"),  # the lunch break
        (at(LONDON, 2026, 3, 2, 13, 0), "open"),
        (at(LONDON, 2026, 3, 2, 17, 0), "closed"),
        (at(LONDON, 2026, 3, 7, 10, 0), "open"),  # Saturday morning
        (at(LONDON, 2026, 3, 7, 13, 0), "closed"),  # Saturday afternoon
        (at(LONDON, 2026, 3, 8, 10, 0), "closed"),  # Sunday
    ],
)
def test_office_hours_with_lunch_break(when: dt.datetime, state: str) -> None:
    assert Schedule(OFFICE, timezone="Europe/London").state(when) == state


def test_the_time_is_judged_in_the_business_zone() -> None:
    schedule = Schedule("mon-fri 09:00-17:00", timezone="America/New_York")
    # 13:30 UTC is 08:30 in New York in winter: not open yet.
    assert schedule.state(dt.datetime(2026, 1, 5, 13, 30, tzinfo=UTC)) == "closed"
    assert schedule.state(dt.datetime(2026, 1, 5, 14, 30, tzinfo=UTC)) == "open"


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        Schedule(OFFICE).state(dt.datetime(2026, 3, 2, 9, 0))


def test_empty_hours_mean_open_around_the_clock() -> None:
    schedule = Schedule("", timezone="Europe/London")
    assert parse_weekly("") == ALWAYS_OPEN
    assert schedule.always_open
    assert schedule.state(at(LONDON, 2026, 3, 8, 3, 0)) == "open"
    assert schedule.next_open(at(LONDON, 2026, 3, 8, 3, 0)) is None


def test_overnight_shift_runs_into_the_next_day() -> None:
    schedule = Schedule("fri 22:00-02:00", timezone="Europe/London")
    assert schedule.state(at(LONDON, 2026, 3, 6, 21, 59)) == "closed"
    assert schedule.state(at(LONDON, 2026, 3, 6, 23, 0)) == "open"
    assert schedule.state(at(LONDON, 2026, 3, 7, 1, 59)) == "open"  # Saturday
    assert schedule.state(at(LONDON, 2026, 3, 7, 2, 0)) == "closed"
    assert schedule.state(at(LONDON, 2026, 3, 6, 1, 0)) == "closed"  # Friday early morning


def test_sunday_night_shift_wraps_into_monday() -> None:
    schedule = Schedule("sun 20:00-04:00", timezone="UTC")
    assert schedule.state(dt.datetime(2026, 3, 2, 3, 0, tzinfo=UTC)) == "open"  # Monday 03:00


def test_day_ranges_wrap_round_the_weekend() -> None:
    assert {s.day for s in parse_weekly("fri-mon 10:00-14:00")} == {4, 5, 6, 0}
    assert {s.day for s in parse_weekly("mon,wed,fri 10:00-14:00")} == {0, 2, 4}
    assert {s.day for s in parse_weekly("Monday, Thurs-Saturday 10:00-14:00")} == {0, 3, 4, 5}


def test_24_00_closes_at_midnight() -> None:
    schedule = Schedule("sat 18:00-24:00", timezone="UTC")
    assert schedule.state(dt.datetime(2026, 3, 7, 23, 59, tzinfo=UTC)) == "open"
    assert schedule.state(dt.datetime(2026, 3, 8, 0, 0, tzinfo=UTC)) == "closed"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("mon-fri", "no opening times"),
        ("08:00-17:00", "names no days"),
        ("tuz 08:00-17:00", "unknown day 'tuz'"),
        ("mon-fry 08:00-17:00", "unknown day 'fry'"),
        ("mon 8:5-17:00", "'8:5' .* is not a time"),
        ("mon 13pm-5pm", "'13pm' .* with am or pm the hour is 1 to 12"),
        ("mon 8:75am-5pm", "'8:75am' .* minutes run to 59"),
        ("mon 8 5", "not a range of two times"),
        ("mon 8-5-7", "not a range of two times"),
        ("sun closed", "every day named is closed"),
        ("closed", "names no days"),
        ("mon-frj 8-5", "unknown day 'frj'"),
        ("mon 25:00-26:00", "'25:00' .* is not a time of day"),
        ("mon 08:60-09:00", "'08:60' .* is not a time of day"),
        ("mon 24:00-02:00", "starts at 24:00"),
        ("mon 09:00-09:00", "same time"),
        ("mon 09:00", "not a range"),
        ("mon,,tue 09:00-10:00", "empty day"),
    ],
)
def test_bad_hours_are_refused_with_a_clear_message(text: str, message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        parse_weekly(text)


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("mon-fri 8-5", "mon-fri 08:00-17:00"),
        ("mon-fri 8am-5pm", "mon-fri 08:00-17:00"),
        ("mon-fri 8 AM - 5 PM", "mon-fri 08:00-17:00"),
        ("mon-fri 8a.m.-5p.m.", "mon-fri 08:00-17:00"),
        ("Mon–Fri 08:00–17:00", "mon-fri 08:00-17:00"),  # en dashes, as word processors type
        ("mon—fri 08:00—17:00", "mon-fri 08:00-17:00"),  # em dashes
        ("mon 8:30a-5p", "mon 08:30-17:00"),
        ("Monday to Friday 8 to 5", "mon-fri 08:00-17:00"),
        ("Mon-Fri: 8-5", "mon-fri 08:00-17:00"),
        ("weekdays 0800-1700", "mon-fri 08:00-17:00"),
        ("weekends 10-2", "sat-sun 10:00-14:00"),
        ("daily 9-5; sun closed", "mon-sat 09:00-17:00"),
        ("mon-fri 9-5\nsat 9-12", "mon-fri 09:00-17:00; sat 09:00-12:00"),
        ("sat closed; mon-fri 9-5", "mon-fri 09:00-17:00"),
        ("mon 9-12, 1-5", "mon 09:00-12:00,13:00-17:00"),  # the afternoon after the morning
        ("mon 9-12 and 1-5pm", "mon 09:00-12:00,13:00-17:00"),
        ("mon 1-5pm", "mon 13:00-17:00"),
        ("mon 9-9", "mon 09:00-21:00"),
        ("sat noon-4pm", "sat 12:00-16:00"),
        ("fri 5pm-midnight", "fri 17:00-24:00"),
        ("fri 8pm-2am", "fri 20:00-02:00"),  # overnight
        ("fri 22-2", "fri 22:00-02:00"),  # a bare evening start runs overnight too
        ("fri 22:00-02:00", "fri 22:00-02:00"),  # 24-hour times mean what they say
        ("mon 10:00-02:00", "mon 10:00-02:00"),
        ("Monday 8.30-17.30", "mon 08:30-17:30"),
        ("mon 12pm-12am", "mon 12:00-24:00"),
        ("mon 8-17", "mon 08:00-17:00"),
    ],
)
def test_hours_are_read_as_owners_write_them_and_stored_canonically(typed: str,
                                                                      stored: str) -> None:
    assert format_weekly(parse_weekly(typed)) == stored
    assert parse_weekly(stored) == parse_weekly(typed)  # and read back the same


@pytest.mark.parametrize(
    ("typed", "spans"),
    [
        ("8-5", [(480, 1020)]),
        ("8am-5pm", [(480, 1020)]),
        ("08:00–17:00", [(480, 1020)]),
        ("8:30a-5p", [(510, 1020)]),
        ("9-12, 1-5", [(540, 720), (780, 1020)]),
        ("closed", []),
        ("Closed", []),
        ("", []),
    ],
)
def test_one_day_of_the_grid_is_read_the_same_way(typed: str, spans: list[tuple[int, int]]
                                                  ) -> None:
    assert parse_day(typed) == spans
    if spans:
        assert parse_day(format_day(spans)) == spans


def test_a_day_the_grid_cannot_read_says_what_was_typed() -> None:
    with pytest.raises(ScheduleError, match="'25:00' in '25:00-26:00' is not a time of day"):
        parse_day("25:00-26:00")


def test_bad_holidays_and_zones_are_refused() -> None:
    with pytest.raises(ScheduleError, match="holiday '25/12/2026'"):
        Schedule(holidays=["25/12/2026"])
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        Schedule(timezone="Mars/Olympus")
    with pytest.raises(ValueError, match="unknown time zone"):
        Schedule(timezone="../etc/passwd")


def test_canonical_form_groups_days() -> None:
    assert format_weekly(parse_weekly("Mon-Fri 8:00-12:00, 13:00-17:00;sat 9:00-12:00")) == (
        "mon-fri 08:00-12:00,13:00-17:00; sat 09:00-12:00"
    )
    assert format_weekly(parse_weekly("fri-mon 22:00-02:00")) == "fri-mon 22:00-02:00"
    assert format_weekly(parse_weekly("sun,mon,wed 10:00-11:00")) == "sun-mon,wed 10:00-11:00"
    assert format_weekly(parse_weekly("mon-sun 00:00-24:00")) == ""


shifts_strategy = st.lists(
    st.builds(
        # A 24-hour shift can only start at midnight ("09:00-09:00" is refused).
        lambda day, start, length: Shift(
            day, start, start + (length if start == 0 else min(length, 1425))
        ),
        st.integers(0, 6),
        st.integers(0, 95).map(lambda q: q * 15),
        st.integers(1, 96).map(lambda q: q * 15),
    ),
    min_size=1,
    max_size=8,
)


@given(shifts_strategy)
def test_hours_survive_format_and_parse(shifts: list[Shift]) -> None:
    expected = tuple(sorted(set(shifts)))
    assert parse_weekly(format_weekly(shifts)) == expected


# ----------------------------------------------------------------- holidays


def test_holiday_closes_the_day() -> None:
    schedule = Schedule(OFFICE, holidays=["2026-12-25"], timezone="Europe/London")
    assert schedule.state(at(LONDON, 2026, 12, 25, 10, 0)) == "holiday"  # a Friday
    assert schedule.state(at(LONDON, 2026, 12, 24, 10, 0)) == "open"
    assert schedule.state(at(LONDON, 2026, 12, 24, 20, 0)) == "closed"
    # Closed on Friday for Christmas, open again on Saturday morning.
    assert schedule.next_open(at(LONDON, 2026, 12, 24, 18, 0)) == at(LONDON, 2026, 12, 26, 9, 0)


def test_holiday_uses_the_business_date_not_utc() -> None:
    schedule = Schedule("", holidays=["2026-07-04"], timezone="America/New_York")
    # 02:00 UTC on 5 July is still 4 July in New York.
    assert schedule.state(dt.datetime(2026, 7, 5, 2, 0, tzinfo=UTC)) == "holiday"
    assert schedule.state(dt.datetime(2026, 7, 5, 5, 0, tzinfo=UTC)) == "open"
    assert schedule.next_open(dt.datetime(2026, 7, 4, 15, 0, tzinfo=UTC)) == at(
        NEW_YORK, 2026, 7, 5, 0, 0
    )


def test_night_shift_of_a_holiday_eve_finishes() -> None:
    schedule = Schedule("mon-sun 20:00-02:00", holidays=["2026-12-25"], timezone="UTC")
    assert schedule.state(dt.datetime(2026, 12, 25, 1, 0, tzinfo=UTC)) == "open"  # 24th's shift
    assert schedule.state(dt.datetime(2026, 12, 25, 21, 0, tzinfo=UTC)) == "holiday"
    assert schedule.state(dt.datetime(2026, 12, 26, 1, 0, tzinfo=UTC)) == "holiday"
    assert schedule.state(dt.datetime(2026, 12, 26, 3, 0, tzinfo=UTC)) == "closed"


def test_next_open_skips_a_run_of_holidays() -> None:
    days = [f"2026-12-{d}" for d in range(24, 32)]
    schedule = Schedule("mon-fri 09:00-17:00", holidays=days, timezone="UTC")
    assert schedule.next_open(dt.datetime(2026, 12, 23, 18, 0, tzinfo=UTC)) == dt.datetime(
        2027, 1, 1, 9, 0, tzinfo=UTC
    )


# ---------------------------------------------------------------------- DST


def test_us_spring_forward_keeps_wall_clock_hours() -> None:
    # Clocks in New York jump 02:00 → 03:00 on Sunday 8 March 2026.
    schedule = Schedule("mon-fri 09:00-17:00", timezone="America/New_York")
    assert schedule.state(dt.datetime(2026, 3, 6, 14, 0, tzinfo=UTC)) == "open"  # 09:00 EST
    assert schedule.state(dt.datetime(2026, 3, 9, 13, 0, tzinfo=UTC)) == "open"  # 09:00 EDT
    assert schedule.state(dt.datetime(2026, 3, 9, 12, 59, tzinfo=UTC)) == "closed"
    opening = schedule.next_open(dt.datetime(2026, 3, 6, 23, 0, tzinfo=UTC))
    assert opening == dt.datetime(2026, 3, 9, 13, 0, tzinfo=UTC)


def test_shift_starting_in_the_skipped_hour_opens_when_the_clocks_jump() -> None:
    schedule = Schedule("sun 02:30-04:00", timezone="America/New_York")
    opening = schedule.next_open(dt.datetime(2026, 3, 7, 12, 0, tzinfo=UTC))
    assert opening == dt.datetime(2026, 3, 8, 7, 0, tzinfo=UTC)  # 03:00 EDT
    assert opening.astimezone(NEW_YORK).hour == 3
    assert schedule.state(opening) == "open"
    assert schedule.state(opening - dt.timedelta(seconds=1)) == "closed"


def test_shift_lost_in_the_skipped_hour_is_not_announced() -> None:
    schedule = Schedule("sun 02:10-02:50", timezone="America/New_York")
    opening = schedule.next_open(dt.datetime(2026, 3, 7, 12, 0, tzinfo=UTC))
    assert opening == at(NEW_YORK, 2026, 3, 15, 2, 10)  # the Sunday after


def test_eu_autumn_repeated_hour_follows_the_wall_clock() -> None:
    # Berlin goes back 03:00 CEST → 02:00 CET on Sunday 25 October 2026.
    schedule = Schedule("sun 02:00-02:30", timezone="Europe/Berlin")
    assert schedule.state(dt.datetime(2026, 10, 25, 0, 15, tzinfo=UTC)) == "open"  # 02:15 CEST
    assert schedule.state(dt.datetime(2026, 10, 25, 0, 45, tzinfo=UTC)) == "closed"  # 02:45 CEST
    assert schedule.state(dt.datetime(2026, 10, 25, 1, 15, tzinfo=UTC)) == "open"  # 02:15 CET
    # From the first 02:45, the next opening is the second 02:00.
    opening = schedule.next_open(dt.datetime(2026, 10, 25, 0, 45, tzinfo=UTC))
    assert opening == dt.datetime(2026, 10, 25, 1, 0, tzinfo=UTC)


def test_eu_business_hours_across_both_changes() -> None:
    schedule = Schedule("mon-fri 08:00-17:00", timezone="Europe/Berlin")
    assert schedule.state(dt.datetime(2026, 3, 27, 7, 30, tzinfo=UTC)) == "open"  # 08:30 CET
    assert schedule.state(dt.datetime(2026, 3, 30, 6, 30, tzinfo=UTC)) == "open"  # 08:30 CEST
    assert schedule.state(dt.datetime(2026, 3, 30, 5, 30, tzinfo=UTC)) == "closed"  # 07:30 CEST
    assert schedule.next_open(dt.datetime(2026, 10, 23, 20, 0, tzinfo=UTC)) == dt.datetime(
        2026, 10, 26, 7, 0, tzinfo=UTC
    )  # Monday 08:00 CET


# ------------------------------------------------------------- next_open


ZONES = ["UTC", "Europe/London", "Europe/Berlin", "America/New_York", "Australia/Sydney"]


@settings(max_examples=60, deadline=None)
@given(
    shifts_strategy,
    st.lists(st.dates(dt.date(2026, 1, 1), dt.date(2026, 12, 31)), max_size=5),
    st.sampled_from(ZONES),
    st.datetimes(dt.datetime(2026, 1, 1), dt.datetime(2026, 12, 31), timezones=st.just(UTC)),
)
def test_next_open_is_the_first_open_moment(
    shifts: list[Shift], holidays: list[dt.date], zone: str, now: dt.datetime
) -> None:
    schedule = Schedule(format_weekly(shifts), holidays, zone)
    opening = schedule.next_open(now)
    if opening is None:
        return
    assert opening >= now
    assert schedule.state(opening) == "open"
    if opening > now:
        assert schedule.state(opening - dt.timedelta(seconds=1)) != "open"
        # Nothing in between is open (checked every 20 minutes).
        probe = now
        while probe < opening:
            assert schedule.state(probe) != "open"
            probe += dt.timedelta(minutes=20)


def test_schedule_imports_only_the_standard_library() -> None:
    code = (
        "import sys; import agent.rules.schedule; "
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('sqlalchemy', 'phonenumbers', 'gsm0338', 'flask', 'panoramisk')]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
