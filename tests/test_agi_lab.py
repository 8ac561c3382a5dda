"""The shipped routing dialplan on the real lab Asterisk, with SIPp phones.

The lab includes asterisk/extensions_textback.conf exactly as shipped and runs
the `textback-route` AGI with TEXTBACK_CONFIG in Asterisk's environment; DIDs
+1555001NXXX enter it through [textback-inbound]. Every rule change below is a
database write only: Asterisk is never reloaded.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from agent.lab.pbx import LabPbx
from agent.lab.trunk import TrunkPeer
from agent.rules import settings
from agent.rules.schedule import DAY_NAMES
from agent.store.db import make_engine, sessions

pytestmark = pytest.mark.lab

PORT_BASE = int(os.environ.get("TEXTBACK_TEST_AGI_PORT_BASE", "30000"))
FASTAGI_PORT = PORT_BASE + 90  # inside the lab's range, unused by it
DID = "+15550010100"  # routed by textback (lab dialplan: +1555001NXXX)
_numbers = itertools.count(1)


def new_caller() -> str:
    return f"+1312555{next(_numbers):04d}"


@dataclass
class Observed:
    """What Asterisk did with one call, from AMI."""

    routes: list[str] = field(default_factory=list)  # TEXTBACK_ROUTE values, in order
    reason: str = ""
    dialled: list[str] = field(default_factory=list)  # endpoints rung (DialBegin)
    answered_by: list[str] = field(default_factory=list)
    voicemail: bool = False


def place(lab: LabPbx, **call: Any) -> Observed:
    """Place one call to the routed DID and report what the PBX did with it."""
    seen = Observed()
    with lab.admin_client() as ami:
        call.setdefault("caller_id", new_caller())
        lab.call(call.pop("did", DID), from_trunk=True, hold_ms=call.pop("hold_ms", 800), **call)
        time.sleep(0.3)  # the last events of the hangup
        for event in ami.drain():
            name = event.get("Event")
            if name == "VarSet" and event.get("Variable") == "TEXTBACK_ROUTE":
                value = event.get("Value", "")
                if value and seen.routes[-1:] != [value]:  # the AGI, then the dialplan
                    seen.routes.append(value)
            elif name == "VarSet" and event.get("Variable") == "TEXTBACK_REASON":
                seen.reason = event.get("Value", "")
            elif name == "DialBegin":
                seen.dialled.append(event.get("DestChannel", "").rsplit("-", 1)[0])
            elif name == "DialEnd" and event.get("DialStatus") == "ANSWER":
                seen.answered_by.append(event.get("DestChannel", "").rsplit("-", 1)[0])
            elif name == "Newexten" and event.get("Application") == "VoiceMail":
                seen.voicemail = True
    return seen


class Agent:
    """`textback agent` as its own process (it texts back, and serves FastAGI)."""

    def __init__(self, config: Path, log_path: Path) -> None:
        self.config, self.log_path = config, log_path
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "agent.cli", "agent", "--config", str(config)],
                stdout=log, stderr=subprocess.STDOUT)
        self.wait_log("AMI connected")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log():
            assert self.proc.poll() is None, self.log()
            assert time.monotonic() < deadline, f"{text!r} not in:\n{self.log()[-3000:]}"
            time.sleep(0.05)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("agi")


@pytest.fixture(scope="module")
def lab(work: Path) -> Iterator[LabPbx]:
    with LabPbx(work / "pbx", PORT_BASE, ring_seconds=2,
                textback_config=work / "textback.toml") as pbx:
        yield pbx


@pytest.fixture(scope="module")
def db(lab: LabPbx, work: Path) -> Iterator[Engine]:
    config = lab.write_agent_config(work)
    config.write_text(config.read_text() + f"[agi]\nenabled = true\nport = {FASTAGI_PORT}\n")
    subprocess.run([sys.executable, "-m", "agent.cli", "migrate", "--config", str(config)],
                   check=True, capture_output=True)
    engine = make_engine(f"sqlite:///{work / 'textback.db'}")
    change(engine, {"routing.ring_group": ["PJSIP/desk"], "routing.ring_seconds": 2,
                    "routing.overflow": "PJSIP/desk2", "routing.overflow_seconds": 2,
                    "routing.voicemail": "100@default"})
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def agent(db: Engine, work: Path) -> Iterator[Agent]:
    process = Agent(work / "textback.toml", work / "agent.log")
    process.wait_log("FastAGI routing on")
    yield process
    process.stop()


@pytest.fixture(scope="module")
def trunk(lab: LabPbx) -> Iterator[TrunkPeer]:
    with lab.trunk_peer() as peer:
        yield peer


def change(engine: Engine, values: dict[str, Any]) -> None:
    """What `textback settings set` does (same code), several keys at once."""
    now = dt.datetime.now(dt.UTC)
    with sessions(engine)() as session, session.begin():
        for key, value in values.items():
            if value is None:
                settings.reset(session, key)
            else:
                settings.set(session, key, value, now)


def texts_to(trunk: TrunkPeer, number: str, timeout: float = 10.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while not (bodies := [m.body for m in list(trunk.messages) if m.to == number]):
        assert time.monotonic() < deadline, f"no text to {number}"
        time.sleep(0.05)
    time.sleep(0.3)  # a duplicate would arrive within this
    return [m.body for m in list(trunk.messages) if m.to == number] or bodies


def last_reload(lab: LabPbx) -> int:
    """Seconds from Asterisk's start to its last reload (0: never reloaded)."""
    lines = dict(line.split(":", 1) for line in
                 lab.cli("core show uptime seconds").splitlines() if ":" in line)
    return int(lines["System uptime"]) - int(lines["Last reload"])


def test_during_hours_the_desk_rings(lab: LabPbx, db: Engine) -> None:
    seen = place(lab, phone="answer")
    assert seen.routes == ["open"]
    assert seen.dialled == ["PJSIP/desk"] and seen.answered_by == ["PJSIP/desk"]
    assert not seen.voicemail


def test_desk_busy_rings_the_overflow_phone(lab: LabPbx, db: Engine) -> None:
    seen = place(lab, phone="busy", phone2="answer")
    assert seen.routes == ["open", "overflow"]
    assert seen.dialled == ["PJSIP/desk", "PJSIP/desk2"]
    assert seen.answered_by == ["PJSIP/desk2"]


def test_after_hours_goes_to_voicemail_and_the_text_says_closed(
        lab: LabPbx, db: Engine, agent: Agent, trunk: TrunkPeer) -> None:
    reloaded = last_reload(lab)
    in_three_days = DAY_NAMES[(dt.datetime.now(dt.UTC).weekday() + 3) % 7]
    change(db, {"hours.weekly": f"{in_three_days} 09:00-10:00"})  # closed right now
    try:
        caller = new_caller()
        seen = place(lab, caller_id=caller, phone="ring")  # hangs up during the greeting
    finally:
        change(db, {"hours.weekly": None})
    assert seen.routes == ["closed"] and seen.reason.startswith("closed at ")
    assert seen.dialled == []  # the desk did not ring
    assert seen.voicemail
    (body,) = texts_to(trunk, caller)
    assert "We're closed now" in body, body  # templates.after_hours
    assert abs(last_reload(lab) - reloaded) <= 1  # the PBX was never reloaded


def test_a_holiday_takes_the_closed_route(lab: LabPbx, db: Engine) -> None:
    today = dt.datetime.now(dt.UTC).date()  # the AGI reads the clock itself
    # tomorrow too: the call may reach the AGI after midnight
    holidays = [today.isoformat(), (today + dt.timedelta(days=1)).isoformat()]
    change(db, {"hours.holidays": holidays, "routing.holiday": "voicemail"})
    try:
        seen = place(lab, phone="ring", hold_ms=300)
    finally:
        change(db, {"hours.holidays": None})
    assert seen.routes == ["holiday"]
    assert seen.dialled == [] and seen.voicemail


def test_database_removed_the_fallback_still_rings_the_desk(
        lab: LabPbx, db: Engine, work: Path) -> None:
    database = work / "textback.db"
    database.rename(work / "textback.db.away")
    try:
        seen = place(lab, phone="answer")
    finally:
        (work / "textback.db.away").rename(database)
    assert seen.routes == ["fallback"]
    assert seen.dialled == ["PJSIP/desk"] and seen.answered_by == ["PJSIP/desk"]
    log = lab.messages_log.read_text(errors="replace")
    assert "textback-route: FALLBACK" in log
    assert f"database {database} missing or unreadable" in log  # the AGI says why
    assert "textback: fallback route for DID" in log  # and so does the dialplan


def test_the_agi_missing_altogether_still_rings_the_desk(lab: LabPbx, db: Engine) -> None:
    lab.ami("Setvar", Variable="TEXTBACK_AGI", Value="/nonexistent/textback-route")
    try:
        seen = place(lab, phone="answer")
    finally:
        lab.ami("Setvar", Variable="TEXTBACK_AGI", Value=str(lab.routing_agi))
    assert seen.routes == ["fallback"] and seen.reason == "AGI status NOTFOUND"
    assert seen.answered_by == ["PJSIP/desk"]


def test_fastagi_in_the_agent_routes_the_same_way(lab: LabPbx, db: Engine, agent: Agent) -> None:
    url = f"agi://127.0.0.1:{FASTAGI_PORT}/textback-route"
    lab.ami("Setvar", Variable="TEXTBACK_AGI", Value=url)
    try:
        seen = place(lab, phone="busy", phone2="answer")
        agent.wait_log("route for DID " + DID)
        agent.stop()  # calls never depend on the agent
        unserved = place(lab, phone="answer")
    finally:
        lab.ami("Setvar", Variable="TEXTBACK_AGI", Value=str(lab.routing_agi))
    assert seen.routes == ["open", "overflow"] and seen.answered_by == ["PJSIP/desk2"]
    assert unserved.routes == ["fallback"] and unserved.answered_by == ["PJSIP/desk"]


def test_shipped_sms_context_is_loaded(lab: LabPbx) -> None:
    shown = lab.cli("dialplan show textback-sms-in")
    assert "UserEvent(SMSIn," in shown and "BodyB64: ${BASE64_ENCODE(${MESSAGE(body)})}" in shown
