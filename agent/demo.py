"""`textback demo` (`make demo`): the whole missed-call path on a lab Asterisk.

Starts a real Asterisk 22 with a trunk, a desk phone that rings and nobody
answers, and the carrier's side of the trunk; runs the agent as systemd would;
places an unanswered call with SIPp; shows the SMS that reached the carrier and
the rows in the database. Then it waits, so more calls can be placed.
"""

from __future__ import annotations

import itertools
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from agent.db import make_engine, sessions
from agent.labpbx import LabPbx, TrunkPeer
from agent.models import Call, Message

PORT_BASE = int(os.environ.get("TEXTBACK_DEMO_PORT_BASE", "25000"))
DID = "+15550000100"
BUSINESS = "Rapid Rooter Plumbing"


def _say(text: str = "") -> None:
    print(text, flush=True)


def _textback(*args: str) -> list[str]:
    return [sys.executable, "-m", "agent.cli", *args]


def _pump(stream: object) -> None:
    for line in iter(stream.readline, b""):  # type: ignore[attr-defined]
        sys.stdout.write("   agent | " + line.decode(errors="replace"))
        sys.stdout.flush()


def _place_call(lab: LabPbx, trunk: TrunkPeer, db: Path, caller: str, name: str) -> bool:
    before = len(trunk.messages)
    _say(f"\n>> {name} ({caller}) calls {BUSINESS} on {DID}; the desk phone rings, "
         "nobody answers…")
    lab.call(DID, caller_id=caller, caller_name=name, from_trunk=True, phone="ring")
    try:
        texts = trunk.wait_for(before + 1, timeout=10)
    except Exception:
        _say("!! no SMS reached the trunk within 10 s; see the agent's log above")
        return False
    text = texts[before]
    engine = make_engine(f"sqlite:///{db}")
    with sessions(engine)() as s:
        call = s.scalars(select(Call).where(Call.caller_raw == caller)
                         .order_by(Call.id.desc())).first()
        messages = s.scalars(select(Message).options(selectinload(Message.history))
                             .where(Message.number == caller).order_by(Message.id)).all()
    engine.dispose()
    _say(f"\n<< SMS at the carrier's side of the trunk, to {text.to}:")
    for line in text.body.splitlines() or [""]:
        _say(f"     | {line}")
    if call is not None:
        latency = (text.received_at - call.ended_at.timestamp()) * 1000
        _say(f"   {latency:.1f} ms after the caller's leg hung up")
        _say(f"\n   calls row:    {call.linkedid}  {call.direction}  missed={call.missed}  "
             f"reason={call.reason}  ring={call.ring_seconds:.1f}s  decision={call.decision}")
    for m in messages:
        trail = " → ".join(e.status for e in m.history)
        _say(f"   messages row: #{m.id}  {m.kind}  to {m.number}  via {m.transport}  "
             f"{m.segments} segment(s) {m.encoding}  [{trail}]")
    return True


def run_demo(*, calls: int = 1, once: bool = False) -> int:
    logging.getLogger("agent.labpbx").setLevel(logging.WARNING)  # the story, not the plumbing
    work = Path(tempfile.mkdtemp(prefix="textback-demo-"))
    _say(f"textback demo — working in {work}")
    _say("starting the lab Asterisk 22 (trunk, a desk phone, voicemail)…")
    with LabPbx(work / "pbx", PORT_BASE, ring_seconds=3) as lab, lab.trunk_peer() as trunk:
        config = lab.write_agent_config(work)
        subprocess.run(_textback("migrate", "--config", str(config)), check=True,
                       capture_output=True)
        subprocess.run(_textback("settings", "set", "--config", str(config), "business.name",
                                 BUSINESS), check=True, capture_output=True)
        agent = subprocess.Popen(_textback("agent", "--config", str(config)),
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        threading.Thread(target=_pump, args=(agent.stdout,), daemon=True).start()
        time.sleep(1.0)
        if agent.poll() is not None:
            _say("!! the agent did not start")
            return 1
        ok = True
        numbers = (f"+1212555{n:04d}" for n in itertools.count(100))
        names = itertools.cycle(["Alice Caller", "Bob Byrne", "Chloé Martin", "Dev Patel"])
        for _ in range(calls):
            ok = _place_call(lab, trunk, work / "textback.db", next(numbers), next(names)) and ok
        if not once:
            _say("\n" + "=" * 72)
            _say(" The lab PBX and the agent keep running.")
            _say(" Press Enter to place another unanswered call (a new caller each time).")
            _say(f" Rules: .venv/bin/textback settings list --config {config}")
            _say(" Ctrl-C stops everything.")
            _say("=" * 72)
            try:
                while sys.stdin.readline():
                    ok = _place_call(lab, trunk, work / "textback.db", next(numbers),
                                     next(names)) and ok
                while True:  # no terminal (stdin closed): keep running until Ctrl-C
                    time.sleep(3600)
            except KeyboardInterrupt:
                _say("\nstopping…")
        agent.terminate()
        agent.wait(10)
    return 0 if ok else 1
