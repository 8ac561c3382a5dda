"""End to end on the real lab Asterisk: SIPp calls in, the agent process decides,
SIP MESSAGEs arrive at the trunk peer.

The agent runs as its own process (`textback agent`), exactly as systemd runs it,
and reaches AMI through a small TCP relay the tests can cut or freeze, to play a
network drop and a half-dead link.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from agent.lab.agentproc import AgentProcess, wait_until
from agent.lab.pbx import LabPbx
from agent.lab.trunk import TrunkMessage, TrunkPeer
from agent.messages import inbound, outbox
from agent.store.db import make_engine, sessions
from agent.store.models import Call, Message, TransportStatus

pytestmark = pytest.mark.lab

PORT_BASE = int(os.environ.get("TEXTBACK_TEST_PORT_BASE", "26000"))
DID = "+15550000100"  # rings desk for a few seconds (lab dialplan)
_numbers = itertools.count(1)


def new_caller() -> str:
    """Each test calls from its own number, so cooldowns never couple tests."""
    return f"+1212555{next(_numbers):04d}"


def new_caller_abroad() -> str:
    """A German mobile: no US state's quiet hours apply to it, so with
    followup.allowed_hours 00:00-24:00 its follow-ups go at any hour the test runs
    (a New York number's wait for 8:00 there)."""
    return f"+49151{next(_numbers):08d}"


class AmiRelay:
    """A TCP relay between the agent and Asterisk's AMI that can cut or freeze the link."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.frozen = threading.Event()
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        self.accepted = 0
        threading.Thread(target=self._accept, args=(self.server,), daemon=True).start()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            self.accepted += 1
            self.pairs.append((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                while self.frozen.is_set():  # a half-dead link: bytes go nowhere
                    time.sleep(0.05)
                    data = b""
                if data:
                    dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with _quiet():
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def cut(self) -> None:
        for client, upstream in self.pairs:
            for s in (client, upstream):
                with _quiet():
                    s.shutdown(socket.SHUT_RDWR)
        self.pairs.clear()

    def refuse(self) -> None:
        """Asterisk unreachable: the link is cut and new connections are refused."""
        with _quiet():
            self.server.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
        self.server.close()
        self.cut()

    def accept_again(self) -> None:
        self.server = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, args=(self.server,), daemon=True).start()

    def close(self) -> None:
        self.server.close()
        self.cut()


class _quiet:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return True


@pytest.fixture(scope="module")
def relay(lab: LabPbx) -> Iterator[AmiRelay]:
    relay = AmiRelay(lab.ami_port)
    yield relay
    relay.close()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory, lab: LabPbx, relay: AmiRelay) -> Path:
    work = tmp_path_factory.mktemp("agent")
    config = lab.write_agent_config(work, ami_port=relay.port, ping_interval=1,
                                    ping_timeout=1)
    subprocess.run([sys.executable, "-m", "agent.cli", "migrate", "--config", str(config)],
                   check=True, capture_output=True)
    return work


@pytest.fixture(scope="module")
def agent(workdir: Path) -> Iterator[AgentProcess]:
    process = AgentProcess(workdir / "textback.toml", workdir / "agent.log")
    process.start()
    yield process
    assert process.stop() == 0, process.log()[-3000:]


@pytest.fixture(scope="module")
def db(workdir: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{workdir / 'textback.db'}")
    yield engine
    engine.dispose()


def calls_from(db: Engine, number: str) -> list[Call]:
    with sessions(db)() as s:
        return list(s.scalars(select(Call).where(Call.caller_raw == number).order_by(Call.id)))


def texts_to(trunk: TrunkPeer, number: str) -> list[TrunkMessage]:
    return [m for m in list(trunk.messages) if m.to == number]


def expect_one_text(trunk: TrunkPeer, number: str) -> TrunkMessage:
    wait_until(f"a text to {number}", lambda: texts_to(trunk, number))
    time.sleep(0.5)  # a duplicate would arrive well within this
    texts = texts_to(trunk, number)
    assert len(texts) == 1, texts
    return texts[0]


def expect_no_text(db: Engine, trunk: TrunkPeer, number: str, calls: int = 1) -> list[Call]:
    rows = wait_until(f"{calls} decided call(s) from {number}",
                      lambda: len(calls_from(db, number)) >= calls and calls_from(db, number))
    time.sleep(0.5)
    assert texts_to(trunk, number) == []
    return rows  # type: ignore[return-value]


@pytest.mark.parametrize(
    ("exten", "phone", "scenario", "reason"),
    [
        (DID, "ring", "uac_call", "noanswer"),
        (DID, "busy", "uac_call", "busy"),
        (DID, "ring", "uac_cancel", "cancel"),
        ("+15550000102", None, "uac_call", "chanunavail"),
    ],
)
def test_missed_call_from_the_trunk_is_texted_once(
        lab: LabPbx, trunk: TrunkPeer, agent: AgentProcess, db: Engine,
        exten: str, phone: str | None, scenario: str, reason: str) -> None:
    caller = new_caller()
    lab.call(exten, caller_id=caller, caller_name="Dana Fischer", from_trunk=True,
             phone=phone, scenario=scenario, hold_ms=1000)  # type: ignore[arg-type]
    text = expect_one_text(trunk, caller)
    assert "missed your call" in text.body.lower() or "sorry" in text.body.lower(), text.body
    (call,) = calls_from(db, caller)
    assert (call.direction, call.missed, call.reason, call.decision) == (
        "inbound", True, reason, "send")
    with sessions(db)() as s:
        (message,) = s.scalars(select(Message).where(Message.number == caller)).all()
        assert message.status == "submitted" and message.transport == "sip"
        assert message.body == text.body


def test_answered_call_is_not_texted(lab: LabPbx, trunk: TrunkPeer, agent: AgentProcess,
                                     db: Engine) -> None:
    caller = new_caller()
    lab.call(DID, caller_id=caller, from_trunk=True, phone="answer", hold_ms=500)
    (call,) = expect_no_text(db, trunk, caller)
    assert (call.missed, call.answered_by, call.skip_reason) == (False, "PJSIP/desk", "answered")


def test_anonymous_caller_is_not_texted(lab: LabPbx, trunk: TrunkPeer, agent: AgentProcess,
                                        db: Engine) -> None:
    before = len(trunk.messages)
    lab.call(DID, anonymous=True, from_trunk=True, phone="ring")
    with sessions(db)() as s:
        wait_until("the anonymous call", lambda: s.scalar(
            select(Call).where(Call.skip_reason == "withheld")))
    time.sleep(0.5)
    assert len(trunk.messages) == before


def test_same_caller_twice_within_cooldown_gets_one_text(
        lab: LabPbx, trunk: TrunkPeer, agent: AgentProcess, db: Engine) -> None:
    caller = new_caller()
    lab.call(DID, caller_id=caller, from_trunk=True, phone="busy")
    expect_one_text(trunk, caller)
    lab.call(DID, caller_id=caller, from_trunk=True, phone="busy")
    rows = expect_no_text_beyond_one(db, trunk, caller, calls=2)
    assert [r.decision for r in rows] == ["send", "skip"]
    assert rows[1].skip_reason == "cooldown"


def expect_no_text_beyond_one(db: Engine, trunk: TrunkPeer, number: str,
                              calls: int) -> list[Call]:
    rows = wait_until(f"{calls} decided calls from {number}",
                      lambda: len(calls_from(db, number)) >= calls and calls_from(db, number))
    time.sleep(0.5)
    assert len(texts_to(trunk, number)) == 1
    return rows  # type: ignore[return-value]


def test_agent_restart_between_calls_never_duplicates(
        lab: LabPbx, trunk: TrunkPeer, agent: AgentProcess, db: Engine) -> None:
    caller, other = new_caller(), new_caller()
    lab.call(DID, caller_id=caller, from_trunk=True, phone="busy")
    expect_one_text(trunk, caller)
    assert agent.stop() == 0
    agent.start()
    lab.call(DID, caller_id=caller, from_trunk=True, phone="busy")
    expect_no_text_beyond_one(db, trunk, caller, calls=2)
    lab.call(DID, caller_id=other, from_trunk=True, phone="busy")
    expect_one_text(trunk, other)


def test_ami_link_cut_and_restored(lab: LabPbx, trunk: TrunkPeer, agent: AgentProcess,
                                   relay: AmiRelay, db: Engine) -> None:
    mark = len(agent.log())
    relay.cut()
    agent.wait_log("AMI connection", after=mark)  # "... lost"
    agent.wait_log("AMI connected", after=mark, timeout=30)
    caller = new_caller()
    lab.call(DID, caller_id=caller, from_trunk=True, phone="busy")
    expect_one_text(trunk, caller)
    assert agent.proc is not None and agent.proc.poll() is None


def test_frozen_ami_link_is_noticed_by_the_watchdog(
        lab: LabPbx, trunk: TrunkPeer, agent: AgentProcess, relay: AmiRelay) -> None:
    mark = len(agent.log())
    accepted = relay.accepted
    relay.frozen.set()
    try:
        agent.wait_log("AMI ping unanswered", after=mark, timeout=30)
    finally:
        relay.frozen.clear()
    relay.cut()  # the frozen pumps are stuck; let the agent's new connection through
    wait_until("a new AMI connection", lambda: relay.accepted > accepted, timeout=40)
    agent.wait_log("AMI connected", after=mark, timeout=30)
    caller = new_caller()
    lab.call(DID, caller_id=caller, from_trunk=True, phone="busy")
    expect_one_text(trunk, caller)


def doctor(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent.cli", "doctor", "--config", str(config)],
                          capture_output=True, text=True, timeout=60)


def test_doctor_passes_on_a_good_setup(workdir: Path, agent: AgentProcess) -> None:
    done = doctor(workdir / "textback.toml")
    assert done.returncode == 0, done.stdout + done.stderr
    for line in ("ok   AMI reachable", "ok   AMI login as 'textback'",
                 "ok   AMI permissions: MessageSend and Originate allowed",
                 "ok   database writable"):
        assert line in done.stdout


def test_doctor_names_the_fix_for_a_wrong_secret(workdir: Path, tmp_path: Path) -> None:
    secret = tmp_path / "ami.secret"
    fd = os.open(secret, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"not-the-secret")
    os.close(fd)
    config = tmp_path / "textback.toml"
    config.write_text((workdir / "textback.toml").read_text().replace(
        str(workdir / "ami.secret"), str(secret)))
    done = doctor(config)
    assert done.returncode == 1
    assert "FAIL AMI login as 'textback'" in done.stdout
    # the fix names the file the secret came from and the line of manager.conf to match
    fix = done.stdout.split("FAIL AMI login", 1)[1].split("\n")[1]
    assert f"fix: textback logs in with the secret in {secret} (ami.secret_file in " \
        f"{config})" in fix
    assert "`secret =` of the [textback] user in Asterisk's manager.conf" in fix


def test_doctor_when_asterisk_is_unreachable(workdir: Path, tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    config = tmp_path / "textback.toml"
    text = (workdir / "textback.toml").read_text()
    config.write_text(text.replace(text.split("port = ")[1].split("\n")[0], str(free), 1))
    done = doctor(config)
    assert done.returncode == 1
    assert f"FAIL AMI reachable at 127.0.0.1:{free}" in done.stdout
    assert "enabled = yes" in done.stdout


def test_hostile_caller_name_is_texted_safely(lab: LabPbx, trunk: TrunkPeer,
                                              agent: AgentProcess, db: Engine) -> None:
    # the first name is used; everything else a caller controls stays out of the text
    caller = new_caller()
    name = 'Zoë "Boss" O\'Brien <script>alert(1)</script> 🔧; DROP TABLE calls'
    lab.call(DID, caller_id=caller, caller_name=name, from_trunk=True, phone="busy")
    text = expect_one_text(trunk, caller)
    assert text.body.startswith("Hi Zoë, thanks for calling"), text.body
    assert "<script>" not in text.body and "DROP" not in text.body
    (call,) = calls_from(db, caller)
    assert call.caller_name is not None and "<script>" in call.caller_name  # kept as received
    # "Surname, First" with junk after the comma: no first name to trust, so "Hi there"
    caller = new_caller()
    lab.call(DID, caller_id=caller, caller_name='O\'Brien, <img src=x onerror=1>',
             from_trunk=True, phone="busy")
    assert expect_one_text(trunk, caller).body.startswith("Hi there, thanks for calling")
    assert agent.proc is not None and agent.proc.poll() is None


def test_wrong_ami_secret_is_reported_and_retried(lab: LabPbx, tmp_path: Path) -> None:
    config = lab.write_agent_config(tmp_path)
    (tmp_path / "ami.secret").write_text("wrong")
    subprocess.run([sys.executable, "-m", "agent.cli", "migrate", "--config", str(config)],
                   check=True, capture_output=True)
    process = AgentProcess(config, tmp_path / "agent.log")
    process.start(wait_for="AMI login as 'textback' refused")
    try:
        _reported_and_retried(process, config, tmp_path)
    finally:
        assert process.stop() == 0


def _reported_and_retried(process: AgentProcess, config: Path, tmp_path: Path) -> None:
    process.wait_log(f"the secret sent is the one in {tmp_path / 'ami.secret'} "
                     "([ami] secret_file): it must match secret= of the [textback] user")
    process.wait_log("reconnecting to AMI in")
    assert process.proc.poll() is None  # still running, still trying
    # the web UI's transports panel says why the trunk cannot send
    engine = make_engine(f"sqlite:///{tmp_path / 'textback.db'}")
    try:
        def explained() -> TransportStatus | None:
            with sessions(engine)() as s:
                row = s.get(TransportStatus, "sip")
                return row if row is not None and "refused" in (row.detail or "") else None

        row = wait_until("the trunk's state with the reason", explained)
        assert isinstance(row, TransportStatus)
        assert row.state == "down" and "AMI login as 'textback'" in (row.detail or "")
    finally:
        engine.dispose()


def test_the_agent_publishes_the_trunk_as_up(agent: AgentProcess, db: Engine) -> None:
    def up() -> TransportStatus | None:
        with sessions(db)() as s:
            row = s.get(TransportStatus, "sip")
            return row if row is not None and row.state == "up" else None

    row = wait_until("the trunk reported up", up)
    assert isinstance(row, TransportStatus)
    assert "AMI connected" in (row.detail or "")
    age = dt.datetime.now(dt.UTC) - row.updated_at
    assert age < dt.timedelta(seconds=40), age  # refreshed at least every 30 s


def test_send_test_while_the_agent_runs_goes_through_the_agent(
        trunk: TrunkPeer, agent: AgentProcess, workdir: Path) -> None:
    # the agent holds the AMI link (and, with a modem, the port): the CLI queues the
    # text pinned to the transport and waits for the agent's outcome
    customer = new_caller()
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "agent.cli", "send-test", "--config",
                           str(workdir / "textback.toml"), "--to", customer, "--text",
                           "path check", "--transport", "sip"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert re.match(r"message \d+: submitted via sip", done.stdout), done.stdout
    assert expect_one_text(trunk, customer).body == "path check"
    print(f"send-test through the running agent: {time.monotonic() - started:.1f} s")


def test_a_send_test_queued_by_another_process_leaves_by_its_transport(
        trunk: TrunkPeer, agent: AgentProcess, db: Engine) -> None:
    sip, gsm = new_caller(), new_caller()
    with sessions(db)() as s, s.begin():
        for number, transport in ((sip, "sip"), (gsm, "gsm")):
            outbox.enqueue(s, now=dt.datetime.now(dt.UTC), kind="test", number=number,
                           body=f"test via {transport}", idempotency_key=None,
                           transport=transport)
    assert expect_one_text(trunk, sip).body == "test via sip"

    def refused() -> Message | None:
        with sessions(db)() as s:
            message = s.scalar(select(Message).where(Message.number == gsm))
            return message if message is not None and message.error else None

    message = wait_until("the gsm-pinned test to be refused", refused)
    assert isinstance(message, Message)
    assert "gsm: not configured" in (message.error or ""), message.error
    assert texts_to(trunk, gsm) == []  # never failed over to the trunk


def text_in(trunk: TrunkPeer, db: Engine, customer: str, body: str) -> list[Message]:
    """A customer's text sent by the carrier to the DID; the inbound rows it became."""
    status = trunk.send_message("+15550000100", customer, body)
    assert status.split()[1].startswith("2"), status

    def stored() -> list[Message]:
        with sessions(db)() as s:
            return list(s.scalars(select(Message).where(Message.number == customer,
                                                        Message.direction == "in")))

    return wait_until("the text in the database", stored)  # type: ignore[return-value]


def test_reply_from_the_trunk_is_stored_for_the_contact(
        lab: LabPbx, trunk: TrunkPeer, agent: AgentProcess, db: Engine) -> None:
    customer = new_caller()
    body = "Yes please call me back, after 5pm; thanks! Grüße 👍"
    (message,) = text_in(trunk, db, customer, body)
    assert (message.body, message.status, message.transport) == (body, "received", "sip")
    assert message.from_number == "+15550000100"


GSM7_7_PARTS = ("Leak under the sink again, " * 42)[:1071]  # 7 × 153 characters
UCS2_7_PARTS = ("Течёт кран на кухне, " * 23)[:469]  # 7 × 67 characters, 827 bytes


@pytest.mark.parametrize(("body", "intact"), [
    ("ß" * 511 + "x", True),  # 1,023 bytes: the most Asterisk passes
    (UCS2_7_PARTS, True),
    (GSM7_7_PARTS[:1000], True),  # 7 parts too (919 characters and more), 1,000 bytes
    (GSM7_7_PARTS, False),  # 1,071 bytes
    ("Long story. " * 417, False),  # 5,004 bytes
])
def test_a_long_text_arrives_whole_or_as_a_note_never_empty(
        lab: LabPbx, trunk: TrunkPeer, agent: AgentProcess, db: Engine, body: str,
        intact: bool) -> None:
    (message,) = text_in(trunk, db, new_caller(), body)
    size = len(body.encode())
    if intact:
        assert message.body == body
    else:  # Asterisk drops bodies of 1,024 bytes or more: the desk sees that it came
        assert message.body == inbound.too_long_note(size)
        assert f"{size:,} bytes" in message.body


def test_stop_is_honoured_and_start_reverses_it(
        lab: LabPbx, trunk: TrunkPeer, agent: AgentProcess, db: Engine) -> None:
    customer = new_caller()
    trunk.send_message("+15550000100", customer, "Stop")
    confirmation = expect_one_text(trunk, customer)
    assert "unsubscribed" in confirmation.body
    lab.call(DID, caller_id=customer, from_trunk=True, phone="busy")
    (call,) = wait_until("the call after STOP", lambda: calls_from(db, customer))  # type: ignore[misc]
    assert (call.missed, call.skip_reason) == (True, "opted_out")
    time.sleep(0.5)
    assert len(texts_to(trunk, customer)) == 1  # only the confirmation

    trunk.send_message("+15550000100", customer, "START")
    wait_until("the opt-in confirmation", lambda: len(texts_to(trunk, customer)) == 2)
    lab.call(DID, caller_id=customer, from_trunk=True, phone="busy")
    wait_until("a text-back again", lambda: len(texts_to(trunk, customer)) == 3)
    assert "missed you" in texts_to(trunk, customer)[-1].body


def set_setting(workdir: Path, key: str, value: str) -> None:
    subprocess.run([sys.executable, "-m", "agent.cli", "settings", "set", "--config",
                    str(workdir / "textback.toml"), key, value], check=True,
                   capture_output=True)


def test_emergency_reply_rings_oncall_and_alerts_staff(
        lab: LabPbx, trunk: TrunkPeer, agent: AgentProcess, workdir: Path) -> None:
    oncall_mobile = "+13125550199"
    set_setting(workdir, "oncall.target", "desk2")
    set_setting(workdir, "oncall.notify_numbers", f'["{oncall_mobile}"]')
    try:
        customer = new_caller()
        phone = lab.phone("desk2", "answer", answer_after_ms=200, timeout=20)
        time.sleep(0.25)
        sent = time.monotonic()
        trunk.send_message("+15550000100", customer, "Water everywhere in the kitchen!!")
        lab.wait_channel("PJSIP/desk2", timeout=2)  # the on-call phone is ringing
        rang_after = time.monotonic() - sent
        assert rang_after < 2, rang_after
        reassurance = expect_one_text(trunk, customer)
        assert "calling you" in reassurance.body
        alert = expect_one_text(trunk, oncall_mobile)
        assert alert.body.endswith(f"from {customer}: Water everywhere in the kitchen!!")
        # the technician answered; the PBX then dialled the customer through the trunk
        assert phone.wait(20) == 0, phone.output()
    finally:
        set_setting(workdir, "oncall.target", "")
        set_setting(workdir, "oncall.notify_numbers", "[]")


@pytest.fixture
def quick_followups(workdir: Path) -> Iterator[None]:
    set_setting(workdir, "followup.delays", '["2s"]')
    # the test runs at any hour: for callers abroad (no US state's hours) that is allowed
    set_setting(workdir, "followup.allowed_hours", "00:00-24:00")
    yield
    set_setting(workdir, "followup.delays", '["30m", "2h", "24h"]')
    set_setting(workdir, "followup.allowed_hours", "08:00-21:00")


def test_quiet_lead_gets_one_followup(lab: LabPbx, trunk: TrunkPeer, agent: AgentProcess,
                                      quick_followups: None) -> None:
    caller = new_caller_abroad()
    lab.call(DID, caller_id=caller, caller_name="Dana Fischer", from_trunk=True, phone="busy")
    wait_until("the follow-up", lambda: len(texts_to(trunk, caller)) >= 2, timeout=10)
    time.sleep(1.5)
    textback, followup = texts_to(trunk, caller)
    assert "missed you" in textback.body
    assert followup.body.startswith("Hi Dana, it's us following up")
    assert 1.5 < followup.received_at - textback.received_at < 4.5


def test_no_followup_once_the_customer_replied(
        lab: LabPbx, trunk: TrunkPeer, agent: AgentProcess, quick_followups: None) -> None:
    caller = new_caller_abroad()
    lab.call(DID, caller_id=caller, from_trunk=True, phone="busy")
    expect_one_text(trunk, caller)
    trunk.send_message("+15550000100", caller, "Thanks, call me at 5")
    time.sleep(3.5)
    assert len(texts_to(trunk, caller)) == 1


def test_followup_survives_an_agent_restart_and_fires_once(
        lab: LabPbx, trunk: TrunkPeer, agent: AgentProcess, quick_followups: None) -> None:
    caller = new_caller_abroad()
    lab.call(DID, caller_id=caller, from_trunk=True, phone="busy")
    expect_one_text(trunk, caller)
    assert agent.stop() == 0  # the follow-up is due while the agent is down
    time.sleep(2.5)
    agent.start()
    wait_until("the follow-up after the restart", lambda: len(texts_to(trunk, caller)) == 2)
    time.sleep(2)
    assert len(texts_to(trunk, caller)) == 2


def test_calling_back_before_the_delay_cancels_the_text_back(
        lab: LabPbx, trunk: TrunkPeer, agent: AgentProcess, workdir: Path, db: Engine) -> None:
    set_setting(workdir, "textback.delay", "8s")
    try:
        caller = new_caller()
        lab.call(DID, caller_id=caller, from_trunk=True, phone="busy")
        lab.call(DID, caller_id=caller, from_trunk=True, phone="answer", hold_ms=300)
        wait_until("both calls", lambda: len(calls_from(db, caller)) == 2)
        with sessions(db)() as s:
            (textback,) = s.scalars(select(Message).where(Message.number == caller)).all()
            assert textback.status == "cancelled"
            assert textback.history[-1].detail == "called again and was answered"
        time.sleep(0.5)
        assert texts_to(trunk, caller) == []
    finally:
        set_setting(workdir, "textback.delay", "0s")


def migrated(config: Path) -> Path:
    subprocess.run([sys.executable, "-m", "agent.cli", "migrate", "--config", str(config)],
                   check=True, capture_output=True)
    return config


def test_calls_that_end_while_the_ami_link_is_down_are_texted_from_the_cdr(
        lab: LabPbx, trunk: TrunkPeer, agent: AgentProcess, tmp_path: Path) -> None:
    relay = AmiRelay(lab.ami_port)
    config = migrated(lab.write_agent_config(tmp_path, ami_port=relay.port, ping_interval=1,
                                             ping_timeout=1, cdr_csv=True))
    watching = AgentProcess(config, tmp_path / "agent.log")
    engine = make_engine(f"sqlite:///{tmp_path / 'textback.db'}")
    assert agent.stop() == 0  # it would see these calls live and text them itself
    try:
        watching.start()
        missed, answered = new_caller(), new_caller()
        relay.refuse()
        watching.wait_log("AMI connection to")  # "... lost"
        lab.call(DID, caller_id=missed, from_trunk=True, phone="busy")
        lab.call(DID, caller_id=answered, from_trunk=True, phone="answer", hold_ms=300)
        assert texts_to(trunk, missed) == []
        relay.accept_again()
        watching.wait_log("AMI link restored", timeout=40)
        text = expect_one_text(trunk, missed)
        assert "missed you" in text.body, text.body
        (call,) = calls_from(engine, missed)
        assert (call.source, call.direction, call.reason, call.decision) == (
            "cdr", "inbound", "busy", "send")
        watching.wait_log("1 missed inbound call(s)")  # the answered one is not among them
        assert texts_to(trunk, answered) == [] and calls_from(engine, answered) == []
    finally:
        if watching.proc is not None and watching.proc.poll() is None:
            assert watching.stop() == 0, watching.log()[-3000:]
        relay.close()
        engine.dispose()
        agent.start()


def test_calls_missed_while_the_agent_was_stopped_are_texted_at_start_up(
        lab: LabPbx, trunk: TrunkPeer, agent: AgentProcess, tmp_path: Path) -> None:
    config = migrated(lab.write_agent_config(tmp_path, cdr_csv=True))
    watching = AgentProcess(config, tmp_path / "agent.log")
    engine = make_engine(f"sqlite:///{tmp_path / 'textback.db'}")
    assert agent.stop() == 0  # one agent watching at a time
    try:
        watching.start()
        before, meanwhile = new_caller(), new_caller()
        lab.call(DID, caller_id=before, from_trunk=True, phone="busy")
        expect_one_text(trunk, before)
        assert watching.stop() == 0
        lab.call(DID, caller_id=meanwhile, from_trunk=True, phone="busy")
        watching.start()
        expect_one_text(trunk, meanwhile)
        assert [c.source for c in calls_from(engine, meanwhile)] == ["cdr"]
        # the call before the stop is in the file too: found again, not texted again
        assert [c.source for c in calls_from(engine, before)] == ["live"]
        assert len(texts_to(trunk, before)) == 1
    finally:
        if watching.proc is not None and watching.proc.poll() is None:
            assert watching.stop() == 0, watching.log()[-3000:]
        engine.dispose()
        agent.start()
