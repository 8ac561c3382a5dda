"""The modem driver against the emulated modem on a real pseudo-terminal.

Nothing of the serial layer is mocked: the driver opens the emulator's pty by
its symlinked "stable name" with pyserial, as it opens a USB modem. PDUs that
leave are decoded by smspdudecoder, an independent decoder.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from smspdudecoder.easy import read_outgoing_sms

from agent.config import GsmTransportConfig
from agent.lab.modem_emulator import ModemEmulator
from agent.rules import templates
from agent.transports.modem import pdu
from agent.transports.modem.at import AtError, AtTimeout
from agent.transports.modem.driver import Modem

FAST = dict(heartbeat=0.3, reconnect_delay=0.05, command_timeout=0.6, send_timeout=2.0,
            sweep_interval=600.0)


class Harness:
    """An emulated modem, the driver on it, and what the driver handed over."""

    def __init__(self, tmp: Path, **config: Any) -> None:
        self.tmp = tmp
        self.emulator = ModemEmulator(tmp / "by-id" / "usb-SIMCOM_SIM7600-if00-port0",
                                      pin=config.pop("emulator_pin", ""))
        self.config = GsmTransportConfig(port=str(tmp / "by-id" / "usb-*-if00-port0"),
                                         **{**FAST, **config})
        self.received: list[pdu.Deliver] = []
        self.reports: list[pdu.StatusReport] = []
        self.modem = Modem(self.config, on_deliver=self._deliver, on_report=self._report)

    async def _deliver(self, sms: pdu.Deliver) -> None:
        self.received.append(sms)

    async def _report(self, report: pdu.StatusReport) -> None:
        self.reports.append(report)

    def texts(self) -> list[str]:
        return [d.text for d in self.received]


def run(tmp: Path, scenario: Callable[[Harness], Awaitable[None]], *,
        before: Callable[[Harness], None] | None = None, **config: Any) -> Harness:
    harness = Harness(tmp, **config)
    if before is not None:
        before(harness)

    async def main() -> None:
        task = asyncio.create_task(harness.modem.run())
        try:
            await scenario(harness)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    try:
        asyncio.run(main())
    finally:
        harness.emulator.close()
    return harness


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached in time")


async def ready(h: Harness) -> None:
    await asyncio.wait_for(h.modem.ready.wait(), 5)


def decoded_text(sent: list[str]) -> str:
    """Join parts decoded by smspdudecoder; drops the CR that pads 7 spare bits."""
    out = []
    for hex_pdu in sent:
        text = read_outgoing_sms(hex_pdu)["content"]
        out.append(text[:-1] if text.endswith("\r") else text)
    return "".join(out)


@pytest.mark.parametrize("text", [
    "Hi Ana, sorry we missed your call. Reply here or call back: +1 555 0100.",
    "Rapid Rooter Plumbing: sorry we missed you! " * 6,  # 3 parts of GSM-7
    "Prices {from} [€49] ~ " * 9,  # escapes at part boundaries are never split
    "Merci Chloé 😀🔧 on vous rappelle " * 4,  # UCS-2 with surrogate pairs, multipart
])
def test_texts_leave_as_the_customer_will_read_them(tmp_path: Path, text: str) -> None:
    async def scenario(h: Harness) -> None:
        await ready(h)
        for part in h.modem.encode("+15557654321", text, reference=0x21):
            await h.modem.send_part(part)

    h = run(tmp_path, scenario)
    sent = [s.pdu for s in h.emulator.sent]
    assert decoded_text(sent) == text
    assert len(sent) == templates.segments(text).segments
    assert {read_outgoing_sms(p)["recipient"] for p in sent} == {"+15557654321"}


@given(st.text(st.sampled_from("ab €[😀é\n@"), max_size=400))
def test_any_text_splits_and_joins_back(text: str) -> None:
    parts = pdu.encode_submit("+15557654321", text, reference=9)
    assert "".join(p.text for p in parts) == text
    assert len(parts) == max(1, templates.segments(text).segments)
    delivered = [pdu.decode(h) for h in pdu.encode_deliver(
        "+15557654321", text, when=dt.datetime(2026, 1, 2, tzinfo=dt.UTC), reference=9)]
    assert pdu.reassemble(delivered) == text  # type: ignore[arg-type]


def test_urcs_in_the_middle_of_answers_and_bursts_are_never_lost(tmp_path: Path) -> None:
    async def scenario(h: Harness) -> None:
        await ready(h)
        # a notification inside the answer to AT+CSQ, then a burst while sending
        h.emulator.faults.urc_inside_next_answer = ['+CMTI: "SM",17']
        h.emulator.storage["SM"][17] = (0, pdu.encode_deliver(
            "+15550000017", "inside an answer", when=dt.datetime.now(dt.UTC))[0])
        assert await h.modem.command("AT+CSQ") == ["+CSQ: 20,99"]
        h.emulator.faults.network_delay = 0.05
        sending = asyncio.create_task(_send_many(h, 5))
        for n in range(12):
            h.emulator.receive_sms(f"+1555000{n:04d}", f"burst {n}")
            await asyncio.sleep(0.005)
        await sending
        await until(lambda: len(h.received) == 13 and len(h.reports) == 5)
        await asyncio.sleep(0.2)

    h = run(tmp_path, scenario)
    assert sorted(h.texts()) == sorted(["inside an answer"] + [f"burst {n}" for n in range(12)])
    assert sorted(r.tp_mr for r in h.reports) == [s.tp_mr for s in h.emulator.sent]
    assert all(not slots for slots in h.emulator.storage.values())  # SIM left empty


async def _send_many(h: Harness, count: int) -> None:
    for n in range(count):
        for part in h.modem.encode(f"+1555999{n:04d}", f"out {n}", reference=n):
            await h.modem.send_part(part)


def test_lost_notifications_are_recovered_by_the_start_up_sweep(tmp_path: Path) -> None:
    def while_the_agent_was_off(h: Harness) -> None:
        h.emulator.faults.lose_notifications = True
        h.emulator.receive_sms("+15551110001", "left on the SIM while the agent was off")
        h.emulator.receive_sms("+15551110002", "long one " * 30, order=[2, 1])

    async def scenario(h: Harness) -> None:
        await until(lambda: len(h.received) == 3)

    h = run(tmp_path, scenario, before=while_the_agent_was_off)
    assert "left on the SIM while the agent was off" in h.texts()
    assert pdu.reassemble([d for d in h.received if d.concat]) == "long one " * 30
    assert not h.emulator.storage["SM"]


def test_cms_errors_reach_the_caller_with_their_code(tmp_path: Path) -> None:
    errors: list[AtError] = []

    async def scenario(h: Harness) -> None:
        await ready(h)
        h.emulator.faults.cms_error_for = {"+15550000001": 1, "+15550000038": 38}
        for number in ("+15550000001", "+15550000038"):
            with pytest.raises(AtError) as caught:
                await h.modem.send_part(h.modem.encode(number, "hi", 0)[0])
            errors.append(caught.value)
        assert await h.modem.send_part(h.modem.encode("+15550000002", "hi", 0)[0]) >= 0

    h = run(tmp_path, scenario)
    assert [e.cms for e in errors] == ["1", "38"]
    assert len(h.emulator.sent) == 1


def test_a_late_ok_is_not_taken_as_the_next_answer(tmp_path: Path) -> None:
    async def scenario(h: Harness) -> None:
        await ready(h)
        h.emulator.faults.late_answer = {"AT+CLIP=1": 0.9}  # after the driver's 0.6 s timeout
        with pytest.raises(AtTimeout):
            await h.modem.command("AT+CLIP=1")
        # the late OK arrives while the next command is in flight
        assert await h.modem.command("AT+CGMM") == ["SIM7600G-H"]
        assert await h.modem.command("AT+CSQ") == ["+CSQ: 20,99"]

    run(tmp_path, scenario)


def test_no_prompt_cancels_and_the_next_send_works(tmp_path: Path) -> None:
    async def scenario(h: Harness) -> None:
        await ready(h)
        h.emulator.faults.no_prompt = 1
        with pytest.raises(AtTimeout) as caught:
            await h.modem.send_part(h.modem.encode("+15550000001", "first", 0)[0])
        assert not getattr(caught.value, "sent", False)  # nothing left: safe to retry
        await h.modem.send_part(h.modem.encode("+15550000001", "again", 0)[0])

    h = run(tmp_path, scenario)
    assert [decoded_text([s.pdu]) for s in h.emulator.sent] == ["again"]


def test_a_modem_busy_initialising_is_waited_for(tmp_path: Path) -> None:
    async def scenario(h: Harness) -> None:
        await ready(h)
        h.emulator.faults.busy = 2  # +CME ERROR: 515 twice
        assert await h.modem.command("AT+CGMM") == ["SIM7600G-H"]

    run(tmp_path, scenario)


def test_a_silent_modem_is_reset_and_comes_back(tmp_path: Path) -> None:
    async def scenario(h: Harness) -> None:
        await ready(h)
        await until(lambda: h.emulator.commands.count("AT+CMGL=4") == 2)  # start-up sweep
        h.emulator.faults.unanswered = 6  # it stops answering for a while
        await until(lambda: h.modem.connected_count == 2, timeout=15)
        await h.modem.send_part(h.modem.encode("+15550000001", "after the reset", 0)[0])

    h = run(tmp_path, scenario)
    assert any(c.replace(" ", "") == "AT+CFUN=1,1" for c in h.emulator.commands)
    assert decoded_text([h.emulator.sent[-1].pdu]) == "after the reset"


def test_sim_pin_from_the_config_unlocks_the_sim(tmp_path: Path) -> None:
    async def scenario(h: Harness) -> None:
        await ready(h)
        assert h.modem.info.sim == "SIM PIN" or h.emulator.pin_ok

    h = run(tmp_path, scenario, emulator_pin="1234", pin="1234")
    assert 'AT+CPIN="1234"' in h.emulator.commands


def test_a_missing_or_wrong_pin_is_reported_and_never_guessed(tmp_path: Path) -> None:
    async def missing(h: Harness) -> None:
        await until(lambda: h.modem.problem is not None)
        assert "needs a PIN" in (h.modem.problem or "")
        assert not h.modem.available

    run(tmp_path / "a", missing, emulator_pin="1234")

    async def wrong(h: Harness) -> None:
        await until(lambda: h.modem.problem is not None)
        await asyncio.sleep(1.5)  # several reconnect cycles
        assert "refused" in (h.modem.problem or "")

    h = run(tmp_path / "b", wrong, emulator_pin="1234", pin="9999")
    assert sum(c.startswith("AT+CPIN=") for c in h.emulator.commands) == 1


def test_the_modem_vanishes_and_returns_under_another_name(tmp_path: Path) -> None:
    async def scenario(h: Harness) -> None:
        await ready(h)
        first = h.modem.info.port
        h.emulator.unplug()
        await until(lambda: not h.modem.available)
        h.emulator.receive_sms("+15552220001", "sent while the modem was away")
        await asyncio.sleep(0.2)
        h.emulator.replug(tmp_path / "by-id" / "usb-SIMCOM_SIM7600-if03-if00-port0")
        await until(lambda: h.modem.available and h.modem.info.port != first)
        await until(lambda: "sent while the modem was away" in h.texts())
        await h.modem.send_part(h.modem.encode("+15550000001", "back", 0)[0])

    h = run(tmp_path, scenario)
    assert h.modem.connected_count == 2
    assert h.texts().count("sent while the modem was away") == 1


def test_a_cancelled_owner_stops_even_while_it_waits_for_its_link_to_close() -> None:
    # stopping the agent (or a test) cancels the modem's task at any moment, also while it
    # waits for the link's reader to finish: swallowing that cancel left it running
    from agent.transports.modem.at import finished

    async def slow_to_stop() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            await asyncio.sleep(0.2)  # closing the serial port takes a moment
            raise

    async def owner(after: list[str]) -> None:
        child = asyncio.create_task(slow_to_stop())
        await asyncio.sleep(0)
        child.cancel()
        await finished(child)
        after.append("went on after its own cancel")
        await asyncio.sleep(10)

    async def main() -> list[str]:
        after: list[str] = []
        task = asyncio.create_task(owner(after))
        await asyncio.sleep(0.05)  # the owner is waiting for the child now
        task.cancel()
        await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 2)
        return after

    assert asyncio.run(main()) == []
