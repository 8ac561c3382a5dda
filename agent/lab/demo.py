"""`textback demo` (`make demo`): the whole missed-call path on a lab Asterisk.

Starts a real Asterisk 22 with a trunk, a desk phone that rings and nobody
answers, and the carrier's side of the trunk; runs the agent as systemd would;
places an unanswered call with SIPp; shows the SMS that reached the carrier and
the rows in the database. Then it waits, so more calls can be placed.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from agent.lab.errors import LabError
from agent.lab.modem_emulator import ModemEmulator
from agent.lab.pbx import LabPbx
from agent.lab.phones import find_sipp
from agent.lab.trunk import TrunkPeer
from agent.store.db import make_engine, sessions
from agent.store.models import Call, Message
from agent.transports.modem import pdu

PORT_BASE = int(os.environ.get("TEXTBACK_DEMO_PORT_BASE", "25000"))
# routed by the shipped dialplan (asterisk/extensions_textback.conf): the routing AGI
# reads the hours and routing settings from the demo's database on every call
DID = "+15550010100"
BUSINESS = "Rapid Rooter Plumbing"


def _say(text: str = "") -> None:
    print(text, flush=True)


def _textback(*args: str) -> list[str]:
    return [sys.executable, "-m", "agent.cli", *args]


def _start_web(work: Path, config: Path) -> tuple[subprocess.Popen[bytes], str]:
    """The admin UI on this lab's database, with a demo admin whose password is made up
    now (there is no default password, not even in the demo)."""
    port = PORT_BASE + 80  # inside the lab's port range, unused by the PBX
    with config.open("a") as handle:
        handle.write(f"[web]\nport = {port}\n")
    password = secrets.token_urlsafe(12)
    for name, text in (("web.secret", secrets.token_urlsafe(48)), ("admin.password", password)):
        fd = os.open(work / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
    subprocess.run(_textback("users", "add", "--config", str(config), "demo", "--role", "admin",
                             "--password-file", str(work / "admin.password")),
                   check=True, capture_output=True)
    web = subprocess.Popen(_textback("web", "--config", str(config)),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    for _ in range(50):  # the UI is worth showing only once it answers
        try:
            with urllib.request.urlopen(url + "healthz", timeout=1):
                return web, f"{url}  (user demo, password {password})"
        except OSError:
            time.sleep(0.1)
    return web, "!! the admin UI did not start (see `textback web --config " f"{config}`)"


def _pump(stream: object, watching: threading.Event) -> None:
    """Show the agent's log; `watching` is set once it is logged in to AMI."""
    for line in iter(stream.readline, b""):  # type: ignore[attr-defined]
        text = line.decode(errors="replace")
        if "AMI connected" in text:
            watching.set()
        sys.stdout.write("   agent | " + text)
        sys.stdout.flush()


def _via_modem(modem: ModemEmulator, before: int) -> bool:
    """Wait for the text at the emulated modem and show it as the network took it."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and len(modem.sent) <= before:
        time.sleep(0.05)
    time.sleep(0.5)  # the other parts of a long text
    parts = modem.sent[before:]
    if not parts:
        _say("!! no SMS reached the modem within 15 s; see the agent's log above")
        return False
    _say(f"\n<< SMS submitted by the GSM modem ({modem.model} on {modem.port}) to "
         f"{parts[0].destination}, {len(parts)} part(s), TP-MR "
         f"{', '.join(str(p.tp_mr) for p in parts)}:")
    for line in pdu.join_utf16("".join(p.text for p in parts)).splitlines() or [""]:
        _say(f"     | {line}")
    return True


def _place_call(lab: LabPbx, trunk: TrunkPeer, db: Path, caller: str, name: str,
                modem: ModemEmulator | None = None) -> bool:
    before = len(modem.sent) if modem else len(trunk.messages)
    _say(f"\n>> {name} ({caller}) calls {BUSINESS} on {DID}; the desk phone rings, "
         "nobody answers…")
    lab.call(DID, caller_id=caller, caller_name=name, from_trunk=True, phone="ring")
    if modem is not None:
        if not _via_modem(modem, before):
            return False
        time.sleep(0.3)  # the delivery report
        _show_rows(db, caller)
        return True
    try:
        texts = trunk.wait_for(before + 1, timeout=10)
    except Exception:
        _say("!! no SMS reached the trunk within 10 s; see the agent's log above")
        return False
    text = texts[before]
    call, _ = _rows(db, caller)
    _say(f"\n<< SMS at the carrier's side of the trunk, to {text.to}:")
    for line in text.body.splitlines() or [""]:
        _say(f"     | {line}")
    if call is not None:
        latency = (text.received_at - call.ended_at.timestamp()) * 1000
        _say(f"   {latency:.1f} ms after the caller's leg hung up")
    _show_rows(db, caller)
    return True


def _conversation(trunk: TrunkPeer, db: Path, caller: str, name: str) -> bool:
    """The customer answers the text-back; the agent answers the price question."""
    question = "Hi, how much for a new water heater?"
    before = len(trunk.messages)
    _say(f"\n>> {name} replies by SMS: {question!r}")
    trunk.send_message(DID, caller, question)
    try:
        answer = trunk.wait_for(before + 1, timeout=10)[before]
    except Exception:
        _say("!! no automatic answer reached the trunk within 10 s")
        return False
    _say(f"<< automatic answer (a price question) to {answer.to}:")
    for line in answer.body.splitlines() or [""]:
        _say(f"     | {line}")
    _say("   (follow-ups stop now that they replied; a person takes it from here)")
    _show_rows(db, caller)
    return True


def _rows(db: Path, caller: str) -> tuple[Call | None, list[Message]]:
    engine = make_engine(f"sqlite:///{db}")
    with sessions(engine)() as s:
        call = s.scalars(select(Call).where(Call.caller_raw == caller)
                         .order_by(Call.id.desc())).first()
        messages = s.scalars(select(Message).options(selectinload(Message.history))
                             .where(Message.number == caller).order_by(Message.id)).all()
    engine.dispose()
    return call, list(messages)


def _show_rows(db: Path, caller: str) -> None:
    call, messages = _rows(db, caller)
    if call is not None:
        _say(f"\n   calls row:    {call.linkedid}  {call.direction}  missed={call.missed}  "
             f"reason={call.reason}  ring={call.ring_seconds:.1f}s  decision={call.decision}")
    for m in messages:
        trail = " → ".join(e.status for e in m.history)
        if m.direction == "in":
            _say(f"   messages row: #{m.id}  {m.kind}  from {m.number}  via {m.transport}  "
                 f"[{trail}]")
        else:
            _say(f"   messages row: #{m.id}  {m.kind}  to {m.number}  via {m.transport}  "
                 f"{m.segments} segment(s) {m.encoding}  [{trail}]")


def run_demo(*, calls: int = 1, once: bool = False, modem: str | None = None) -> int:
    """`modem="emulated"`: texts leave through the GSM modem path (an emulated modem).

    What the lab cannot do here (no SIPp, no Asterisk tree, ports in use…) is said in
    one sentence on stderr, exit status 1."""
    logging.getLogger("agent.lab").setLevel(logging.WARNING)  # the story, not the plumbing
    try:
        find_sipp()  # before anything starts
        return _run(calls=calls, once=once, modem=modem)
    except LabError as exc:
        print(f"textback demo: {exc}", file=sys.stderr, flush=True)
        return 1


def _textback_script() -> str:
    """How to run `textback` from here (for the hints the demo prints)."""
    script = Path(sys.executable).parent / "textback"
    if not script.exists():
        return "textback"
    with contextlib.suppress(ValueError):
        return str(script.relative_to(Path.cwd()))
    return str(script)


def _run(*, calls: int, once: bool, modem: str | None) -> int:
    work = Path(tempfile.mkdtemp(prefix="textback-demo-"))
    _say(f"textback demo — working in {work}")
    _say("starting the lab Asterisk 22 (trunk, a desk phone, voicemail)…")
    with LabPbx(work / "pbx", PORT_BASE, ring_seconds=3,
                textback_config=work / "textback.toml") as lab, lab.trunk_peer() as trunk:
        config = lab.write_agent_config(work)
        emulated = None
        if modem == "emulated":
            emulated = ModemEmulator(work / "serial" / "usb-SIMCOM_SIM7600G-H-if03-port0")
            with config.open("a") as handle:  # the modem first, the trunk as failover
                handle.write(f'[sms]\ntransports = ["gsm", "sip"]\n[sms.gsm]\n'
                             f'port = "{work / "serial" / "usb-*-port0"}"\n'
                             f"max_per_minute = 30\n")
            _say(f"an emulated GSM modem answers on {emulated.link} → {emulated.port}")
        subprocess.run(_textback("migrate", "--config", str(config)), check=True,
                       capture_output=True)
        for key, value in (("business.name", BUSINESS), ("routing.ring_group", "PJSIP/desk"),
                           ("routing.ring_seconds", "3"), ("routing.voicemail", "none")):
            subprocess.run(_textback("settings", "set", "--config", str(config), key, value),
                           check=True, capture_output=True)
        processes: list[subprocess.Popen[bytes]] = []
        try:
            web, login = _start_web(work, config)
            processes.append(web)
            agent = subprocess.Popen(_textback("agent", "--config", str(config)),
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            processes.append(agent)
            watching = threading.Event()
            threading.Thread(target=_pump, args=(agent.stdout, watching), daemon=True).start()
            # a call placed before the agent watches AMI is only known from the CDR file
            deadline = time.monotonic() + 30
            while not watching.wait(0.1) and agent.poll() is None:
                if time.monotonic() > deadline:
                    break
            if agent.poll() is not None or not watching.is_set():
                _say("!! the agent did not start or could not log in to AMI")
                return 1
            ok = True
            numbers = (f"+1212555{n:04d}" for n in itertools.count(100))
            names = itertools.cycle(["Alice Caller", "Bob Byrne", "Chloé Martin", "Dev Patel"])
            for n in range(calls):
                caller, name = next(numbers), next(names)
                ok = _place_call(lab, trunk, work / "textback.db", caller, name,
                                 emulated) and ok
                if n == 0 and emulated is None:
                    ok = _conversation(trunk, work / "textback.db", caller, name) and ok
            _say(f"\n   Admin UI: {login}")
            if not once:
                _say("\n" + "=" * 72)
                _say(" The lab PBX, the agent and the admin UI keep running.")
                _say(f" Admin UI: {login}")
                _say(" Press Enter to place another unanswered call (a new caller each time).")
                _say(f" Rules: {_textback_script()} settings list --config {config}")
                _say(" Ctrl-C stops everything.")
                _say("=" * 72)
                try:
                    while sys.stdin.readline():
                        ok = _place_call(lab, trunk, work / "textback.db", next(numbers),
                                         next(names), emulated) and ok
                    while True:  # no terminal (stdin closed): keep running until Ctrl-C
                        time.sleep(3600)
                except KeyboardInterrupt:
                    _say("\nstopping…")
        finally:  # the agent and the admin UI never outlive the demo's lab
            for process in reversed(processes):
                process.terminate()
                process.wait(10)
            if emulated is not None:
                emulated.close()
    return 0 if ok else 1
