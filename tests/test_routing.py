"""Where a call goes: the routing decision (pure, `now` passed in) and the AGI around it."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from agent.pbx import agi
from agent.rules import routing, settings
from agent.rules.routing import DialplanDefaults, Route
from agent.rules.schedule import Schedule
from agent.store.db import sessions

pytestmark = pytest.mark.clock  # make test-clock runs it at awkward instants too

UTC = dt.UTC
WEEKDAYS = "mon-fri 08:00-17:00"
DEFAULTS = DialplanDefaults(ring="PJSIP/100", voicemail="100@default")
STORED_AT = dt.datetime(2026, 1, 1, tzinfo=UTC)


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def route_for(values: dict[str, Any], now: dt.datetime, did: str = "+15550000001") -> Route:
    return routing.route_call(values, did, now, DEFAULTS)


# ---------------------------------------------------------------- the decision

def test_open_rings_the_group_then_overflow_then_voicemail() -> None:
    values = {"hours.weekly": WEEKDAYS, "routing.ring_group": ["PJSIP/desk", "PJSIP/desk2"],
              "routing.ring_seconds": 15, "routing.overflow": "PJSIP/+15557654321@trunk",
              "routing.overflow_seconds": 30, "routing.voicemail": "200@sales"}
    route = route_for(values, at("2026-03-04T10:00:00+00:00"))  # a Wednesday
    assert route == Route("open", ring="PJSIP/desk&PJSIP/desk2", ring_seconds=15,
                          overflow="PJSIP/+15557654321@trunk", overflow_seconds=30,
                          voicemail="200@sales", reason="open now")


def test_fresh_install_follows_the_dialplans_own_defaults() -> None:
    route = route_for({}, at("2026-03-04T03:00:00+00:00"))  # open 24/7 out of the box
    assert (route.kind, route.ring, route.voicemail, route.overflow) == (
        "open", "PJSIP/100", "100@default", "")


def test_after_hours_goes_to_voicemail_without_ringing() -> None:
    values = {"hours.weekly": WEEKDAYS, "routing.ring_group": ["PJSIP/desk"],
              "routing.overflow": "PJSIP/desk2"}
    route = route_for(values, at("2026-03-04T19:30:00+00:00"))
    assert (route.kind, route.ring, route.overflow, route.voicemail) == (
        "closed", "", "", "100@default")
    assert route.reason == "closed at Wed 19:30 UTC"


def test_after_hours_can_ring_an_answering_service_first() -> None:
    values = {"hours.weekly": WEEKDAYS, "routing.after_hours": "PJSIP/+15550009999@trunk"}
    route = route_for(values, at("2026-03-07T12:00:00+00:00"))  # Saturday
    assert (route.kind, route.ring) == ("closed", "PJSIP/+15550009999@trunk")


def test_a_holiday_takes_the_holiday_route_even_in_opening_hours() -> None:
    values = {"hours.weekly": WEEKDAYS, "hours.holidays": ["2026-12-25"],
              "routing.ring_group": ["PJSIP/desk"], "routing.holiday": "voicemail",
              "routing.after_hours": "PJSIP/oncall"}
    route = route_for(values, at("2026-12-25T10:00:00+00:00"))  # a Friday
    assert (route.kind, route.ring, route.voicemail) == ("holiday", "", "100@default")
    assert route_for(values, at("2026-12-24T20:00:00+00:00")).ring == "PJSIP/oncall"


def test_no_voicemail_means_hang_up_after_ringing() -> None:
    route = route_for({"routing.voicemail": "none"}, at("2026-03-04T10:00:00+00:00"))
    assert route.voicemail == ""


@pytest.mark.parametrize(
    ("zone", "utc", "expected"),
    [
        # the same instant, three businesses: the hours are wall-clock hours where they are
        ("Europe/London", "2026-06-03T07:30:00+00:00", "open"),  # 08:30 BST
        ("America/Chicago", "2026-06-03T07:30:00+00:00", "closed"),  # 02:30 CDT
        ("Australia/Sydney", "2026-06-03T07:30:00+00:00", "open"),  # 17:30 AEST
    ],
)
def test_hours_are_read_in_the_business_time_zone(zone: str, utc: str, expected: str) -> None:
    values = {"hours.weekly": "mon-fri 08:00-18:00", "business.timezone": zone}
    assert route_for(values, at(utc)).kind == expected


@pytest.mark.parametrize(
    ("utc", "expected"),
    [
        # New York springs forward on Sun 8 March 2026 (02:00 EST → 03:00 EDT)
        ("2026-03-08T12:59:00+00:00", "closed"),  # 08:59 EDT, Sunday (weekend)
        ("2026-03-09T11:59:00+00:00", "closed"),  # Monday 07:59 EDT
        ("2026-03-09T12:00:00+00:00", "open"),  # Monday 08:00 EDT (would be 07:00 in EST)
        ("2026-03-06T12:59:00+00:00", "closed"),  # Friday 07:59 EST, before the change
        ("2026-03-06T13:00:00+00:00", "open"),  # Friday 08:00 EST
        # and falls back on Sun 1 November 2026
        ("2026-10-30T12:00:00+00:00", "open"),  # Friday 08:00 EDT
        ("2026-11-02T12:30:00+00:00", "closed"),  # Monday 07:30 EST
        ("2026-11-02T13:00:00+00:00", "open"),  # Monday 08:00 EST
        ("2026-11-02T22:00:00+00:00", "open"),  # Monday 17:00 EST
        ("2026-11-02T23:00:00+00:00", "closed"),  # Monday 18:00 EST
    ],
)
def test_dst_changes_follow_the_wall_clock(utc: str, expected: str) -> None:
    values = {"hours.weekly": "mon-fri 08:00-18:00", "business.timezone": "America/New_York"}
    assert route_for(values, at(utc)).kind == expected


def test_overnight_shift_across_a_dst_change() -> None:
    # Saturday 22:00 to Sunday 04:00 while Europe/Berlin springs forward at 02:00 → 03:00
    values = {"hours.weekly": "sat 22:00-04:00", "business.timezone": "Europe/Berlin"}
    assert route_for(values, at("2026-03-29T01:30:00+00:00")).kind == "open"  # 03:30 CEST
    assert route_for(values, at("2026-03-29T02:00:00+00:00")).kind == "closed"  # 04:00 CEST


def test_the_decision_agrees_with_the_schedule_the_text_back_uses() -> None:
    values = {"hours.weekly": "mon-fri 09:00-12:00,13:00-17:00", "hours.holidays": ["2026-07-03"],
              "business.timezone": "America/Los_Angeles"}
    agent_schedule = Schedule.from_settings(values)
    start = at("2026-06-29T00:00:00+00:00")
    for quarter in range(0, 7 * 24 * 4):
        now = start + dt.timedelta(minutes=15 * quarter)
        assert route_for(values, now).kind == agent_schedule.state(now), now


# ---------------------------------------------------------------- per-DID overrides

def test_a_did_override_wins_for_that_did_only() -> None:
    values = {"routing.ring_group": ["PJSIP/desk"],
              "routing.did.+15550000002.ring_group": ["PJSIP/sales1", "PJSIP/sales2"],
              "routing.did.+15550000002.voicemail": "300@sales"}
    now = at("2026-03-04T10:00:00+00:00")
    assert route_for(values, now, "+15550000001").ring == "PJSIP/desk"
    sales = route_for(values, now, "+15550000002")
    assert (sales.ring, sales.voicemail) == ("PJSIP/sales1&PJSIP/sales2", "300@sales")
    # trunks that drop the "+" still reach the same override
    assert route_for(values, now, "15550000002").ring == "PJSIP/sales1&PJSIP/sales2"


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize(
    "value",
    ["PJSIP/desk,20,tT", "PJSIP/desk)", "PJSIP/${EVIL}", "Local/1@x(n)", "PJSIP/a b;c",
     "PJSIP/\"x\"", "desk", "PJSIP/", 'PJSIP/desk"&PJSIP/x'],
)
def test_dial_strings_with_dialplan_syntax_are_refused(value: str) -> None:
    with pytest.raises(routing.RoutingError):
        routing.parse_dial_strings([value])
    with pytest.raises(settings.SettingError, match=r"routing\.overflow"):
        settings.validate("routing.overflow", value)


def test_a_bad_stored_row_falls_back_to_its_default_not_the_whole_route() -> None:
    values = {"routing.ring_group": ["PJSIP/desk"], "routing.overflow": "PJSIP/x,tT",
              "routing.ring_seconds": "soon", "hours.weekly": "whenever"}
    route = route_for(values, at("2026-03-04T10:00:00+00:00"))
    assert (route.kind, route.ring, route.overflow, route.ring_seconds) == (
        "open", "PJSIP/desk", "", 20)


def test_fallback_sets_only_the_route_and_the_reason_route_last() -> None:
    route = routing.fallback('database "x" is locked\n')
    assert list(route.channel_variables().items()) == [
        ("TEXTBACK_REASON", "database ?x? is locked?"), ("TEXTBACK_ROUTE", "fallback")]
    assert list(route_for({}, at("2026-03-04T10:00:00+00:00")).channel_variables())[-1] == (
        "TEXTBACK_ROUTE")


def test_settings_keys_and_defaults() -> None:
    assert {key: spec.default for key, spec in settings.SPECS.items()
            if key.startswith("routing.")} == {
        "routing.ring_group": [], "routing.ring_seconds": 20, "routing.overflow": "",
        "routing.overflow_seconds": 20, "routing.voicemail": "",
        "routing.after_hours": "voicemail", "routing.holiday": "voicemail"}
    assert settings.validate("routing.ring_group", "PJSIP/desk & PJSIP/desk2") == [
        "PJSIP/desk", "PJSIP/desk2"]
    assert settings.validate("routing.ring_seconds", "25s") == 25
    assert settings.validate("routing.after_hours", "") == "voicemail"
    with pytest.raises(settings.SettingError, match="per-DID overrides exist for"):
        settings.validate("routing.did.+15550000001.colour", "red")
    with pytest.raises(settings.SettingError, match="is not a DID"):
        settings.validate("routing.did.+1555 000.ring_group", "PJSIP/desk")


def test_per_did_overrides_are_listed_and_reset(session: Session) -> None:
    key = "routing.did.+15550000002.ring_group"
    settings.set(session, key, "PJSIP/sales1,PJSIP/sales2", STORED_AT)
    assert settings.get(session, key) == ["PJSIP/sales1", "PJSIP/sales2"]
    listed = {entry.key: entry for entry in settings.catalogue(session)}
    assert listed[key].value == ["PJSIP/sales1", "PJSIP/sales2"] and not listed[key].is_default
    settings.reset(session, key)
    assert key not in settings.all_values(session)


# ---------------------------------------------------------------- the AGI's reading

def write_config(tmp_path: Path, database: Path) -> Path:
    config = tmp_path / "textback.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{database}"\n')
    return config


def test_agi_reads_what_textback_settings_stored(engine: Engine, tmp_path: Path) -> None:
    with sessions(engine)() as session, session.begin():
        settings.set(session, "hours.weekly", WEEKDAYS, STORED_AT)
        settings.set(session, "business.timezone", "America/Chicago", STORED_AT)
        settings.set(session, "routing.ring_group", ["PJSIP/desk"], STORED_AT)
        settings.set(session, "routing.after_hours", "PJSIP/oncall", STORED_AT)
    database = Path(engine.url.database or "")
    config = write_config(tmp_path, database)
    open_route = agi.decide("+15550000001", at("2026-03-04T15:00:00+00:00"), DEFAULTS, config)
    assert (open_route.kind, open_route.ring) == ("open", "PJSIP/desk")
    closed = agi.decide("+15550000001", at("2026-03-04T23:30:00+00:00"), DEFAULTS, config)
    assert (closed.kind, closed.ring) == ("closed", "PJSIP/oncall")
    assert closed.reason == "closed at Wed 17:30 America/Chicago"


def test_agi_falls_back_and_says_why(engine: Engine, tmp_path: Path) -> None:
    now = at("2026-03-04T15:00:00+00:00")
    missing = agi.decide("+1", now, DEFAULTS, tmp_path / "nowhere.toml")
    assert missing.kind == "fallback" and "no config file" in missing.reason
    gone = agi.decide("+1", now, DEFAULTS, write_config(tmp_path, tmp_path / "gone.db"))
    assert gone.kind == "fallback" and "gone.db missing or unreadable" in gone.reason
    assert not (tmp_path / "gone.db").exists()  # read-only: never creates an empty database
    (tmp_path / "pg.toml").write_text('[database]\nurl = "postgresql://textback@db/textback"\n')
    postgres = agi.decide("+1", now, DEFAULTS, tmp_path / "pg.toml")
    assert postgres.kind == "fallback" and "FastAGI" in postgres.reason
    (tmp_path / "bad.toml").write_text("[database\n")
    assert "unusable" in agi.decide("+1", now, DEFAULTS, tmp_path / "bad.toml").reason


def test_agi_falls_back_fast_when_the_database_is_locked(engine: Engine, tmp_path: Path) -> None:
    database = Path(engine.url.database or "")
    config = write_config(tmp_path, database)
    engine.dispose()  # a WAL database locks exclusively only with no other connection open
    holder = sqlite3.connect(database, isolation_level=None)
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        route = agi.decide("+1", at("2026-03-04T15:00:00+00:00"), DEFAULTS, config)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert route.kind == "fallback" and "is locked" in route.reason


# ---------------------------------------------------------------- the AGI process

def run_agi(env: dict[str, str], did: str = "+15550000001",
            callerid: str = "+15551230001") -> subprocess.CompletedProcess[str]:
    """Talk to `textback-route` as Asterisk does: environment, blank line, replies."""
    script = (f"agi_request: textback-route\nagi_channel: PJSIP/trunk-00000001\n"
              f"agi_callerid: {callerid}\nagi_extension: s\nagi_arg_1: {did}\n\n"
              "200 result=1 (PJSIP/100)\n200 result=1 (100@default)\n"
              + "200 result=1\n" * 12)
    return subprocess.run([sys.executable, "-m", "agent.pbx.agi"], input=script, text=True,
                          capture_output=True, timeout=30, env=env)


def sent_variables(stdout: str) -> dict[str, str]:
    variables = {}
    for line in stdout.splitlines():
        if line.startswith("SET VARIABLE "):
            name, value = line[len("SET VARIABLE "):].split(" ", 1)
            variables[json.loads(name)] = json.loads(value)
    return variables


def test_agi_process_answers_asterisk(engine: Engine, tmp_path: Path) -> None:
    with sessions(engine)() as session, session.begin():
        settings.set(session, "routing.ring_group", ["PJSIP/desk", "PJSIP/desk2"], STORED_AT)
    config = write_config(tmp_path, Path(engine.url.database or ""))
    done = run_agi({"TEXTBACK_CONFIG": str(config), "PATH": "/usr/bin:/bin"},
                   callerid='"Evil\\" <x>" <+1555;rm -rf>')
    variables = sent_variables(done.stdout)
    assert variables["TEXTBACK_ROUTE"] == "open", done.stderr
    assert variables["TEXTBACK_RING"] == "PJSIP/desk&PJSIP/desk2"
    assert done.stdout.splitlines()[-1].startswith('VERBOSE "textback-route: DID +15550000001')
    assert "rm -rf" not in done.stdout.split("VERBOSE", 1)[0]  # the caller ID is only logged


def test_agi_process_without_config_sets_the_fallback(tmp_path: Path) -> None:
    done = run_agi({"TEXTBACK_CONFIG": str(tmp_path / "none.toml")})
    variables = sent_variables(done.stdout)
    assert variables["TEXTBACK_ROUTE"] == "fallback"
    assert "no config file" in variables["TEXTBACK_REASON"]
    assert "fallback route" in done.stderr and done.returncode == 0


def test_agi_process_refuses_a_hostile_did(tmp_path: Path) -> None:
    done = run_agi({"TEXTBACK_CONFIG": str(tmp_path / "none.toml")}, did="100,tT)")
    assert sent_variables(done.stdout)["TEXTBACK_ROUTE"] == "fallback"
    assert "DID not understood" in sent_variables(done.stdout)["TEXTBACK_REASON"]


def test_agi_never_imports_the_orm() -> None:
    # `import sqlalchemy` alone costs ~300 ms on the target machine; the AGI budget is 100
    probe = "import sys, agent.pbx.agi; print(sorted(m for m in sys.modules if " \
            "m.split('.')[0] in " \
            "('sqlalchemy', 'phonenumbers', 'alembic', 'flask', 'panoramisk')))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True, timeout=30)
    assert done.stdout.strip() == "[]"


def test_fastagi_is_off_unless_the_config_turns_it_on(tmp_path: Path) -> None:
    from agent import config

    path = tmp_path / "textback.toml"
    assert config.parse({"ami": {"secret": "s3cret"}}, path).agi.enabled is False
    on = config.parse({"ami": {"secret": "s3cret"}, "agi": {"enabled": True, "port": 4600}},
                      path).agi
    assert (on.enabled, on.host, on.port) == (True, "127.0.0.1", 4600)
    with pytest.raises(config.ConfigError, match=r"agi\.enabled must be true or false"):
        config.parse({"ami": {"secret": "s3cret"}, "agi": {"enabled": "yes"}}, path)
