"""The `gsm` transport end to end: outbox rows → dispatcher → modem driver → emulated
modem on a pty, and back (incoming SMS and status reports into the database)."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import shutil
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from smspdudecoder.easy import read_outgoing_sms
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, selectinload

from agent.config import ConfigError, GsmTransportConfig, parse
from agent.lab.modem_emulator import ModemEmulator
from agent.messages import inbound, outbox
from agent.messages.outbox import OutboundSms
from agent.store.db import DbRunner
from agent.store.models import Message, MessagePart, SmsFragment
from agent.transports import SendError, SendResult
from agent.transports.dispatcher import Dispatcher
from agent.transports.gsm import GsmModemTransport
from agent.transports.health import Health
from agent.transports.modem.driver import Modem
from agent.transports.modem.store import ModemStore

# what takes the time in (the fragment store) gets a fixed instant; texts for the running
# dispatcher, which reads the clock itself, are queued by the clock (see queue)
NOW = dt.datetime(2026, 12, 1, 15, 0, tzinfo=dt.UTC)
FAST = GsmTransportConfig(heartbeat=0.3, reconnect_delay=0.05, command_timeout=0.6,
                          send_timeout=2.0, max_per_minute=600)


class Trunk:
    """The SIP trunk's stand-in for failover (the real one is tested in test_integration)."""

    name = "sip"
    max_per_minute = 600
    max_per_day = 0

    def __init__(self) -> None:
        self.sent: list[OutboundSms] = []

    def available(self) -> bool:
        return True

    async def send(self, sms: OutboundSms) -> SendResult:
        self.sent.append(sms)
        return SendResult("submitted")


class Site:
    """A database, an emulated modem, the driver, the gsm transport and a dispatcher."""

    def __init__(self, engine: Engine, tmp: Path, *, config: GsmTransportConfig = FAST,
                 with_trunk: bool = False, link: str = "ttyUSB0") -> None:
        self.db = DbRunner(engine)
        self.emulator = ModemEmulator(tmp / link)
        self.config = dataclasses.replace(config, port=str(tmp / "ttyUSB*"))
        modem_store = ModemStore(self.db, self._store)
        self.modem = Modem(self.config, on_deliver=modem_store.deliver,
                           on_report=modem_store.report)
        self.gsm = GsmModemTransport(self.config, self.modem, self.db)
        self.trunk = Trunk()
        transports = [self.gsm, self.trunk] if with_trunk else [self.gsm]
        self.dispatcher = Dispatcher(self.db, transports, worker="test", max_attempts=3)

    async def _store(self, sms: inbound.InboundSms) -> None:
        await self.db(lambda s: inbound.receive(s, sms, "US"))

    def rows(self) -> list[Message]:
        return self.db.run(lambda s: list(s.scalars(
            select(Message).options(selectinload(Message.history)).order_by(Message.id))))

    def run(self, scenario: Callable[[Site], Awaitable[None]], *, modem: bool = True) -> None:
        async def main() -> None:
            tasks = [asyncio.create_task(self.dispatcher.run())]
            if modem:
                tasks.append(asyncio.create_task(self.modem.run()))
            try:
                await scenario(self)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run(main())

    def close(self) -> None:
        self.emulator.close()
        self.db.close()


@pytest.fixture
def site(engine: Engine, tmp_path: Path) -> Site:
    made = Site(engine, tmp_path)
    yield made  # type: ignore[misc]
    made.close()


def queue(session: Session, number: str, body: str, key: str) -> None:
    """A text queued a minute ago: due for the running dispatcher."""
    queued = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    outbox.enqueue(session, now=queued, kind="textback", number=number, body=body,
                   idempotency_key=key)


async def until(condition: Callable[[], bool], timeout: float = 8.0) -> None:
    for _ in range(int(timeout / 0.03)):
        if condition():
            return
        await asyncio.sleep(0.03)
    raise AssertionError("condition not reached in time")


def test_queued_texts_leave_by_modem_and_are_delivered(site: Site, session: Session) -> None:
    long_text = "Sorry we missed your call 😀 — we will ring you back within the hour. " * 2
    queue(session, "+15557654321", "Thanks for calling!", "a")
    queue(session, "+15557654322", long_text, "b")
    session.commit()

    async def scenario(s: Site) -> None:
        await until(lambda: [m.status for m in s.rows()] == ["delivered", "delivered"])

    site.run(scenario)
    rows = site.rows()
    assert [e.status for e in rows[1].history] == [
        "queued", "claimed", "sending", "sent", "delivered"]
    assert rows[1].transport == "gsm" and rows[1].provider_ref.startswith("TP-MR ")
    parts = [p for p in site.emulator.sent if p.destination == "+15557654322"]
    assert "".join(read_outgoing_sms(p.pdu)["content"] for p in parts) == long_text
    stored = session.scalars(select(MessagePart).order_by(MessagePart.id)).all()
    assert [(p.message_id, p.part, p.status) for p in stored] == [
        (1, 1, "delivered"), (2, 1, "delivered"), (2, 2, "delivered"), (2, 3, "delivered")]


def test_a_failed_delivery_report_fails_the_message(site: Site, session: Session) -> None:
    site.emulator.faults.report_status = {"+15557654321": 0x41}  # incompatible destination
    queue(session, "+15557654321", "hello", "a")
    session.commit()

    async def scenario(s: Site) -> None:
        await until(lambda: s.rows()[0].status == "failed")

    site.run(scenario)
    assert "could not deliver part 1 of 1 (TP-ST 0x41)" in (site.rows()[0].error or "")


def test_a_burst_of_sms_and_reports_is_stored_exactly_once(site: Site, session: Session) -> None:
    for n in range(6):
        queue(session, f"+1555765{n:04d}", f"text-back {n}", str(n))
    session.commit()
    site.emulator.faults.network_delay = 0.03

    async def scenario(s: Site) -> None:
        await asyncio.wait_for(s.modem.ready.wait(), 5)
        s.emulator.faults.urc_inside_next_answer = ['+CMTI: "SM",9']
        s.emulator.storage["SM"][9] = (0, _deliver_pdu("+15550000009", "inside an answer"))
        for n in range(15):
            s.emulator.receive_sms(f"+1555000{n:04d}", f"reply {n} 👍")
            await asyncio.sleep(0.004)
        s.emulator.receive_sms("+15550000099", "out of order " * 25, order=[3, 1, 2])
        await until(lambda: sum(m.direction == "in" for m in s.rows()) == 17
                    and all(m.status == "delivered" for m in s.rows() if m.direction == "out"))
        await s.modem.sweep()  # and a sweep afterwards finds nothing left to store again
        await asyncio.sleep(0.2)

    site.run(scenario)
    incoming = [m for m in site.rows() if m.direction == "in"]
    assert sorted(m.body for m in incoming) == sorted(
        [f"reply {n} 👍" for n in range(15)] + ["inside an answer", "out of order " * 25])
    assert {m.transport for m in incoming} == {"gsm"}
    assert session.scalars(select(SmsFragment)).all() == []
    assert all(not slots for slots in site.emulator.storage.values())


def _deliver_pdu(sender: str, text: str) -> str:
    from agent.transports.modem import pdu

    return pdu.encode_deliver(sender, text, when=dt.datetime.now(dt.UTC))[0]


def test_invalid_number_fails_permanently_network_trouble_retries(
        site: Site, session: Session) -> None:
    site.emulator.faults.cms_error_for = {"+15550000001": 1, "+15550000038": 38}

    async def scenario(s: Site) -> None:
        await asyncio.wait_for(s.modem.ready.wait(), 5)
        with pytest.raises(SendError) as bad:
            await s.gsm.send(OutboundSms(1, "+15550000001", None, "hi", 0))
        with pytest.raises(SendError) as busy:
            await s.gsm.send(OutboundSms(2, "+15550000038", None, "hi", 0))
        assert bad.value.permanent and "unassigned" in str(bad.value)
        assert not busy.value.permanent

    queue(session, "+15550000001", "hi", "1")
    queue(session, "+15550000038", "hi", "2")
    session.commit()
    site.run(scenario)


def test_modem_down_fails_over_to_the_sip_trunk(engine: Engine, tmp_path: Path,
                                                session: Session) -> None:
    site = Site(engine, tmp_path, with_trunk=True)
    site.emulator.unplug()  # no modem at all
    queue(session, "+15557654321", "via the trunk", "a")
    session.commit()

    async def scenario(s: Site) -> None:
        await until(lambda: s.rows()[0].status == "submitted")

    try:
        site.run(scenario)
    finally:
        site.close()
    assert site.rows()[0].transport == "sip"
    assert [m.body for m in site.trunk.sent] == ["via the trunk"]


def test_the_transports_panel_sees_signal_operator_and_trouble(
        engine: Engine, tmp_path: Path) -> None:
    site = Site(engine, tmp_path, with_trunk=True)
    site.emulator.faults.cms_error_for = {f"+1555765432{n}": 38 for n in range(3)}
    seen: dict[str, Health] = {}

    async def scenario(s: Site) -> None:
        seen["before"] = s.gsm.health()
        await asyncio.wait_for(s.modem.ready.wait(), 5)
        seen["ready"] = s.gsm.health()
        await s.db(lambda session: [queue(session, f"+1555765432{n}", "x", str(n))
                                    for n in range(3)])
        s.dispatcher.wake()
        await until(lambda: len(s.rows()) == 3
                    and all(m.status == "submitted" for m in s.rows()))
        seen["cooling"] = s.gsm.health()
        s.emulator.unplug()
        await until(lambda: not s.modem.available)
        seen["unplugged"] = s.gsm.health()

    try:
        site.run(scenario)
    finally:
        site.close()
    assert seen["before"].state == "down"
    ready = seen["ready"]
    assert (ready.state, ready.operator, ready.signal_dbm) == ("up", "Emulated Telecom", -73)
    assert "network: home" in ready.detail
    assert seen["cooling"].state == "down" and "3 failed sends" in seen["cooling"].detail
    assert seen["unplugged"].state == "down"
    failure = site.dispatcher.last_failure["gsm"]
    assert failure.error == "the modem could not send: +CMS ERROR: 38", failure.error


def test_repeated_temporary_failures_move_traffic_to_the_trunk(
        engine: Engine, tmp_path: Path) -> None:
    site = Site(engine, tmp_path, with_trunk=True)
    site.emulator.faults.cms_error_for = {f"+1555765432{n}": 38 for n in range(4)}

    def queue_four(session: Session) -> None:
        for n in range(4):
            queue(session, f"+1555765432{n}", f"text {n}", str(n))

    async def scenario(s: Site) -> None:
        await asyncio.wait_for(s.modem.ready.wait(), 5)
        await s.db(queue_four)
        s.dispatcher.wake()
        await until(lambda: len(s.rows()) == 4
                    and all(m.status == "submitted" for m in s.rows()))
        assert not s.gsm.available()  # cooling off after 3 failures in a row
        assert s.modem.available  # though the modem itself is fine

    try:
        site.run(scenario)
    finally:
        site.close()
    assert {m.transport for m in site.rows()} == {"sip"}
    assert len(site.emulator.commands) > 0 and site.emulator.sent == []
    assert len(site.trunk.sent) == 4


def test_a_restart_with_texts_queued_sends_each_once(engine: Engine, tmp_path: Path,
                                                     session: Session) -> None:
    slow = dataclasses.replace(FAST, send_timeout=5.0)
    first = Site(engine, tmp_path / "1", config=slow)
    first.emulator.faults.network_delay = 0.4
    # no delivery reports: a report landing before the rows are read would turn a "sent"
    # into "delivered" (this test is about what was sent, and how often)
    first.emulator.faults.send_reports = False
    queue(session, "+15557654320", "text 0", "0")
    queue(session, "+15557654321", "text 1", "1")
    session.commit()

    async def stop_mid_send(s: Site) -> None:
        await until(lambda: len(s.emulator.sent) == 1)
        # the network now holds the 2nd far longer than a loaded machine takes to stop,
        # so the stop surely lands while it is in flight
        s.emulator.faults.network_delay = 4.0
        await until(lambda: len(s.emulator.sent) == 2)  # the 2nd is at the network now

    try:
        first.run(stop_mid_send)  # the agent stops (cancelled) while a send is in flight
    finally:
        first.close()
    queue(session, "+15557654322", "text 2", "2")  # queued while the agent was down
    queue(session, "+15557654323", "text 3", "3")
    session.commit()
    second = Site(engine, tmp_path / "2", config=slow)
    second.emulator.faults.send_reports = False

    async def finish(s: Site) -> None:
        await until(lambda: all(m.status not in ("queued", "claimed", "sending")
                                for m in s.rows()))

    try:
        second.run(finish)
    finally:
        second.close()
    rows = second.rows()
    destinations = [p.destination for p in first.emulator.sent + second.emulator.sent]
    assert len(destinations) == len(set(destinations)) == 4  # nobody texted twice
    assert [m.status for m in rows] == ["sent", "failed", "sent", "sent"]
    assert rows[1].error_kind == "unknown"  # in flight at the stop: not resent, visibly


def test_gsm_config_is_read_and_checked(tmp_path: Path) -> None:
    base = {"ami": {"secret": "x"}}
    cfg = parse({**base, "sms": {"transports": ["gsm", "sip"], "gsm": {
        "port": "/dev/serial/by-id/usb-*-if00-port0", "pin": "1234",
        "max_per_minute": 10, "max_per_day": 150, "delivery_reports": False}}},
        tmp_path / "t.toml")
    assert cfg.sms.transports == ("gsm", "sip")
    assert (cfg.sms.gsm.pin, cfg.sms.gsm.max_per_minute, cfg.sms.gsm.max_per_day,
            cfg.sms.gsm.delivery_reports) == ("1234", 10, 150, False)
    assert (cfg.sms.sip.max_per_day, parse(base, tmp_path / "t.toml").sms.gsm.max_per_day) \
        == (0, 200)  # the trunk has no daily limit of its own; a SIM gets 200 parts
    for bad, words in [({"pin": "12a4"}, "sms.gsm.pin"), ({"smsc": "0044"}, "sms.gsm.smsc"),
                       ({"speed": 1}, "sms.gsm.speed is not a known key"),
                       ({"max_per_minute": 0}, "sms.gsm.max_per_minute"),
                       ({"max_per_day": -1}, "sms.gsm.max_per_day")]:
        with pytest.raises(ConfigError, match=words) as caught:
            parse({**base, "sms": {"gsm": bad}}, tmp_path / "t.toml")
        assert str(tmp_path / "t.toml") in str(caught.value)


@pytest.mark.skipif(shutil.which("gammu") is None,
                    reason="Debian's gammu is not installed (make test installs it as root)")
def test_gammu_accepts_the_emulator_as_a_modem(tmp_path: Path) -> None:
    with ModemEmulator(tmp_path / "ttyUSB0"):
        rc = tmp_path / "gammurc"
        rc.write_text(f"[gammu]\ndevice = {tmp_path / 'ttyUSB0'}\nconnection = at\n")
        result = subprocess.run(["gammu", "-c", str(rc), "--identify"], capture_output=True,
                                text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "861234050012345" in result.stdout and "SIMCOM" in result.stdout


def test_a_multipart_sms_missing_a_part_is_stored_marked_after_the_wait(
        session: Session) -> None:
    from agent.transports.modem import pdu
    from agent.transports.modem.store import FRAGMENT_TIMEOUT, expire_fragments, store_fragment

    text = "We have water coming through the kitchen ceiling 😟 please call " * 3
    parts = [pdu.decode(h) for h in pdu.encode_deliver("+15557650001", text, when=NOW,
                                                        reference=7)]
    assert len(parts) == 3
    for part in (parts[0], parts[2]):  # part 2 never comes
        assert isinstance(part, pdu.Deliver)
        whole, _ids = store_fragment(session, part, NOW)
        assert whole is None
    session.commit()
    assert expire_fragments(session, NOW + FRAGMENT_TIMEOUT / 2) == []  # still waiting
    ((sms, ids),) = expire_fragments(session, NOW + FRAGMENT_TIMEOUT + dt.timedelta(minutes=1))
    first, third = (p.text for p in (parts[0], parts[2]))  # type: ignore[union-attr]
    assert sms.body == pdu.join_utf16(f"{first} [part 2 of 3 never arrived] {third}").strip()
    assert sms.sender == "+15557650001" and len(ids) == 2
    assert "😟" in sms.body  # the emoji in part 1 survives its own part's decoding


def test_a_multipart_sms_with_emoji_split_across_parts_is_stored_whole(
        session: Session) -> None:
    from agent.transports.modem import pdu
    from agent.transports.modem.store import store_fragment

    text = "x" * 66 + "😟🔥 the boiler is making a loud bang every few minutes 🚿" * 2
    parts = [pdu.decode(h) for h in pdu.encode_deliver("+15557650002", text, when=NOW,
                                                        reference=8)]
    assert len(parts) >= 2
    results = [store_fragment(session, part, NOW) for part in reversed(parts)]  # type: ignore[arg-type]
    whole, ids = results[-1]
    assert whole is not None and whole.body == text and len(ids) == len(parts)
