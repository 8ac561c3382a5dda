from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from agent.rules import settings
from agent.rules.settings import SettingError
from agent.rules.templates import render, segments
from agent.store.models import Base, Setting

pytestmark = pytest.mark.clock  # make test-clock runs it at awkward instants too

NOW = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)


@pytest.fixture
def session() -> Iterator[Session]:
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        yield session
    engine.dispose()


def test_fresh_install_runs_on_defaults(session: Session) -> None:
    values = settings.all_values(session)
    assert values["business.name"] == "us"
    assert values["business.timezone"] == "UTC"
    assert values["hours.weekly"] == ""
    assert values["textback.delay"] == "0s"
    assert values["textback.cooldown"] == "24h"
    assert values["textback.text_fixed_lines"] is False
    assert all(entry.is_default for entry in settings.catalogue(session))


def test_set_then_get(session: Session) -> None:
    stored = settings.set(session, "business.name", "  Acme   Plumbing ", NOW)
    assert stored == "Acme Plumbing"
    assert settings.get(session, "business.name") == "Acme Plumbing"
    settings.set(session, "business.name", "Acme Heating", NOW + dt.timedelta(hours=1))
    row = session.get(Setting, "business.name")
    assert row is not None and row.value == "Acme Heating"
    assert row.updated_at == NOW + dt.timedelta(hours=1)


def test_settings_list_shows_what_changed(session: Session) -> None:
    settings.set(session, "textback.delay", "2m", NOW)
    entries = {entry.key: entry for entry in settings.catalogue(session)}
    assert entries["textback.delay"].value == "2m"
    assert entries["textback.delay"].default == "0s"
    assert not entries["textback.delay"].is_default
    assert entries["textback.cooldown"].is_default
    assert all(entry.help for entry in entries.values())


def test_reset_returns_to_the_default(session: Session) -> None:
    settings.set(session, "textback.delay", "2m", NOW)
    settings.reset(session, "textback.delay")
    assert settings.get(session, "textback.delay") == "0s"


def test_unknown_key_suggests_close_ones(session: Session) -> None:
    with pytest.raises(SettingError, match=r"unknown setting 'textback.dealy'.*textback.delay"):
        settings.set(session, "textback.dealy", "2m", NOW)
    with pytest.raises(SettingError, match="unknown setting 'hours'"):
        settings.get(session, "hours")


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("true", True),
        ("false", False),
        ("[]", []),
        ('["+12015550123"]', ["+12015550123"]),
        ("2m", "2m"),
        ("Acme Plumbing", "Acme Plumbing"),
        ('"123"', "123"),
        ("mon-fri 08:00-17:00", "mon-fri 08:00-17:00"),
    ],
)
def test_cli_values(raw: str, value: object) -> None:
    assert settings.parse_cli_value(raw) == value


@pytest.mark.parametrize(
    ("key", "value", "stored"),
    [
        ("hours.weekly", "Mon-Fri 8:00-12:00, 13:00-17:00", "mon-fri 08:00-12:00,13:00-17:00"),
        ("hours.weekly", "", ""),
        ("hours.holidays", "2026-12-26, 2026-12-25", ["2026-12-25", "2026-12-26"]),
        ("hours.holidays", ["2026-12-25", "2026-12-25"], ["2026-12-25"]),
        ("business.timezone", "America/Chicago", "America/Chicago"),
        ("business.booking_link", "https://acme.example/book", "https://acme.example/book"),
        ("business.booking_link", "acme.example/book", "acme.example/book"),
        ("business.booking_link", "", ""),
        ("textback.delay", "90s", "1m30s"),
        ("textback.delay", "1h 30m", "1h30m"),
        ("textback.delay", "0s", "0s"),
        ("textback.cooldown", "7d", "168h"),
        ("textback.cooldown", "0s", "0s"),
        ("textback.text_fixed_lines", True, True),
        ("textback.text_fixed_lines", "yes", True),
        (
            "textback.exclusions",
            "(201) 555-0123, +44 20 7946 0958",
            ["+12015550123", "+442079460958"],
        ),
        ("textback.exclusions", ["2015550123", "+12015550123"], ["+12015550123"]),
    ],
)
def test_values_are_normalised_on_set(
    session: Session, key: str, value: object, stored: object
) -> None:
    assert settings.set(session, key, value, NOW, region="US") == stored
    assert settings.get(session, key) == stored


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("business.name", "", "business.name must not be empty"),
        ("business.name", 123, "business.name takes text"),
        (
            "business.timezone",
            "Europe/Londn",
            "business.timezone: unknown time zone 'Europe/Londn'",
        ),
        (
            "business.booking_link",
            "call us",
            "business.booking_link: 'call us' is not a web address",
        ),
        ("business.booking_link", "ftp://x.example", "not a web address"),
        ("hours.weekly", "mon-fri 9:5-17:00", "hours.weekly: '9:5' .* is not a time"),
        ("hours.holidays", ["25/12/2026"], "hours.holidays: holiday '25/12/2026'"),
        ("hours.holidays", {"day": "2026-12-25"}, "hours.holidays takes a list"),
        ("templates.after_hours", "Hi {frist_name}", r"templates.after_hours: unknown merge field"),
        ("textback.delay", "15", "textback.delay: '15' is not a duration"),
        ("textback.delay", "soon", "not a duration"),
        ("textback.delay", "2d", "textback.delay is at most 24h"),
        ("textback.cooldown", "-1h", "not a duration"),
        ("textback.exclusions", ["555"], "textback.exclusions: '555' is not a valid phone number"),
        ("textback.text_fixed_lines", "maybe", "textback.text_fixed_lines is true or false"),
    ],
)
def test_bad_values_are_refused_naming_the_key(
    session: Session, key: str, value: object, message: str
) -> None:
    with pytest.raises(SettingError, match=message):
        settings.set(session, key, value, NOW, region="US")
    assert session.get(Setting, key) is None


def test_national_exclusions_need_a_region() -> None:
    with pytest.raises(SettingError, match=r"'2015550123' needs its country code"):
        settings.validate("textback.exclusions", ["2015550123"])
    assert settings.validate("textback.exclusions", ["+12015550123"]) == ["+12015550123"]


def test_a_broken_stored_row_falls_back_to_the_default(session: Session) -> None:
    session.add(Setting(key="textback.delay", value="whenever", updated_at=NOW))
    session.flush()
    assert settings.get(session, "textback.delay") == "0s"
    assert settings.all_values(session)["textback.delay"] == "0s"


def test_set_does_not_commit(session: Session) -> None:
    settings.set(session, "business.name", "Acme", NOW)
    session.rollback()
    assert settings.get(session, "business.name") == "us"


@pytest.mark.parametrize(
    "key", ["templates.business_hours", "templates.after_hours", "templates.voicemail"]
)
def test_default_templates_are_one_plain_sms(key: str) -> None:
    template = settings.SPECS[key].default
    settings.validate(key, template)
    bare = render(template, {"business": "us", "next_open": "tomorrow at 8:00"})
    assert "{" not in bare and bare.startswith("Hi there, thanks for calling us")
    assert "Book" not in bare  # no link, no booking sentence
    everyday = render(
        template,
        {
            "business": "Smith Plumbing",
            "first_name": "Christopher",
            "next_open": "Wednesday at 13:00",
            "booking_link": "https://smithplumbing.com/book",
        },
    )
    for text in (bare, everyday):
        info = segments(text)
        assert info.encoding == "GSM-7" and info.segments == 1, text


@given(st.integers(0, 90 * 86400))
def test_durations_survive_format_and_parse(seconds: int) -> None:
    value = dt.timedelta(seconds=seconds)
    assert settings.parse_duration(settings.format_duration(value)) == value


def test_every_default_is_already_in_canonical_form() -> None:
    for key, spec in settings.SPECS.items():
        assert settings.validate(key, spec.default) == spec.default, key


def test_settings_list_entries_turn_into_json(session: Session) -> None:
    entry = settings.catalogue(session)[0]
    assert vars(entry) == {
        "key": "business.name",
        "value": "us",
        "default": "us",
        "is_default": True,
        "help": entry.help,
    }
