"""The lab harness itself: a real Asterisk, SIPp calls, the trunk peer and AMI rights.

The ``lab`` tests start a real Asterisk 22 (see ``agent/lab/fetch-asterisk``) and
SIPp; the others check the harness pieces that need neither.
"""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.lab.errors import LabError
from agent.lab.files import CONF_TEMPLATE_DIR
from agent.lab.pbx import LabPbx
from agent.lab.render import render_template
from agent.lab.trunk import TrunkPeer

PORT_BASE = int(os.environ.get("TEXTBACK_LABPBX_TEST_PORT_BASE", "28000"))
DID = "+15550000100"
CALLER = "+15551239876"
SMS = "Sorry we missed your call!\nReply here or call back 😀 — Zoë's Bakery"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabPbx]:
    with LabPbx(tmp_path_factory.mktemp("labpbx"), PORT_BASE, ring_seconds=2) as pbx:
        yield pbx


@pytest.fixture
def trunk(lab: LabPbx) -> Iterator[TrunkPeer]:
    with lab.trunk_peer() as peer:
        yield peer


def _ami_raw(sock: socket.socket, text: str) -> None:
    sock.sendall(text.replace("\n", "\r\n").encode() + b"\r\n")


def _read_until(sock: socket.socket, needle: bytes, timeout: float = 5.0) -> bytes:
    sock.settimeout(timeout)
    buf = b""
    while needle not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
    return buf


@pytest.mark.lab
def test_missed_trunk_call_then_sms_through_the_trunk(lab: LabPbx, trunk: TrunkPeer) -> None:
    started = time.monotonic()
    call = lab.call(DID, caller_id=CALLER, caller_name="Zoë Caller", from_trunk=True,
                    phone="ring")
    assert call.caller.returncode == 0, call.caller.output()

    # MessageSend over a plain AMI socket as the agent's least-privilege user.
    with socket.create_connection((lab.ami_host, lab.ami_port), timeout=5) as sock:
        assert _read_until(sock, b"\r\n").startswith(b"Asterisk Call Manager/")
        _ami_raw(sock, f"Action: Login\nUsername: {lab.ami_user}\nSecret: {lab.ami_secret}\n"
                       "Events: off\n")
        assert b"Response: Success" in _read_until(sock, b"\r\n\r\n")
        body64 = base64.b64encode(SMS.encode()).decode()
        action_id = uuid.uuid4().hex
        _ami_raw(sock, f"Action: MessageSend\nActionID: {action_id}\n"
                       f"Destination: pjsip:PJSIP/{CALLER}@trunk\n"
                       f"From: <sip:{DID}@127.0.0.1>\nBase64Body: {body64}\n")
        reply = _read_until(sock, f"ActionID: {action_id}".encode())
        reply += _read_until(sock, b"\r\n\r\n") if not reply.endswith(b"\r\n\r\n") else b""
        assert b"Response: Success" in reply, reply

    (msg,) = trunk.wait_for(1, timeout=5)
    assert msg.to == CALLER
    assert msg.body == SMS
    assert DID in msg.from_
    assert time.monotonic() - started < 30


@pytest.mark.lab
def test_textback_user_rights_are_least_privilege(lab: LabPbx) -> None:
    with lab.agent_client() as ami:
        assert ami.action("Ping")["Response"] == "Success"
        channels = ami.action_list("CoreShowChannels")
        assert channels[0]["Response"] == "Success"
        assert channels[-1].get("EventList") == "Complete"
        # MessageSend is allowed (nothing listens on the trunk here: still "submitted").
        sent = ami.action("MessageSend", Destination="pjsip:PJSIP/+15550009999@trunk",
                          From="<sip:+15550000100@127.0.0.1>",
                          Base64Body=base64.b64encode(b"rights check").decode())
        assert sent["Response"] == "Success", sent

        for forbidden, fields in [
            ("Command", {"Command": "core show version"}),
            ("Hangup", {"Channel": "PJSIP/desk-00000000"}),
            ("ModuleLoad", {"Module": "app_dial.so", "LoadType": "reload"}),
        ]:
            resp = ami.action(forbidden, **fields)
            assert resp["Response"] == "Error", (forbidden, resp)
            assert "Permission denied" in resp.get("Message", ""), (forbidden, resp)

        ami.drain()
        call = lab.call(DID, caller_id=CALLER, from_trunk=True, phone="busy")
        assert call.caller.returncode == 0, call.caller.output()
        seen: dict[str, dict[str, str]] = {}
        events: list[dict[str, str]] = []
        deadline = time.monotonic() + 5
        wanted = {"Newchannel", "DialEnd", "VarSet", "Hangup"}
        while not wanted <= seen.keys():
            ev = ami.wait_event(lambda e: "Event" in e, timeout=deadline - time.monotonic())
            seen.setdefault(ev["Event"], ev)
            events.append(ev)
        with contextlib.suppress(LabError):  # the rest of the call's events
            while True:
                events.append(ami.wait_event(lambda e: "Event" in e, timeout=1.0))
        # the user's event filters: only what the agent reads reaches it
        names = {ev["Event"] for ev in events}
        assert not names & {"Cdr", "NewConnectedLine", "TestEvent", "DeviceStateChange"}, names
        assert {ev["Variable"] for ev in events if ev["Event"] == "VarSet"} <= {
            "DIALSTATUS", "VM_MESSAGEFILE", "VMSTATUS"}
        assert all(ev["Application"].casefold() == "voicemail"
                   for ev in events if ev["Event"] == "Newexten")
        assert seen["Newchannel"]["CallerIDNum"] == CALLER
        assert seen["Newchannel"]["Exten"] == DID
        assert seen["Newchannel"]["Channel"].startswith("PJSIP/trunk-")


def test_templates_render_every_placeholder(tmp_path: Path) -> None:
    lab = LabPbx(tmp_path / "run", 29000, asterisk_fs=tmp_path / "fs")
    values = lab.template_values()
    for template in CONF_TEMPLATE_DIR.glob("*.conf"):
        text = render_template(template.read_text(), values)
        assert "${LAB_" not in text, template.name
    lab.render()
    manager = (tmp_path / "run/etc/manager.conf").read_text()
    assert f"secret = {lab.ami_secret}" in manager
    assert f"secret = {lab.admin_secret}" in manager
    assert lab.ami_secret != lab.admin_secret
    assert "\n[directories]\n" in (tmp_path / "run/etc/asterisk.conf").read_text()
    # Dialplan variables are not placeholders.
    assert "${EXTEN}" in (tmp_path / "run/etc/extensions.conf").read_text()


def test_trunk_peer_answers_and_deduplicates_retransmissions() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        probe.settimeout(2)
        free = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
        free.close()
        body = "line one\nline two ✓".encode()
        request = (
            f"MESSAGE sip:+15550001111@127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{probe.getsockname()[1]};branch=z9hG4bKabc\r\n"
            "From: <sip:+15550000100@127.0.0.1>;tag=1\r\n"
            "To: <sip:+15550001111@127.0.0.1>\r\n"
            "Call-ID: dedupe-1\r\nCSeq: 7 MESSAGE\r\n"
            "Content-Type: text/plain\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        with TrunkPeer("127.0.0.1", port, ("127.0.0.1", 9)) as peer:
            for _ in range(3):
                probe.sendto(request, ("127.0.0.1", port))
                reply, _ = probe.recvfrom(4096)
                assert reply.startswith(b"SIP/2.0 200 OK")
                assert b"Call-ID: dedupe-1" in reply
            (msg,) = peer.wait_for(1, timeout=2)
            time.sleep(0.1)
            assert len(peer.messages) == 1
            assert msg.to == "+15550001111"
            assert msg.body == "line one\nline two ✓"
            peer.clear()
            assert peer.messages == []
