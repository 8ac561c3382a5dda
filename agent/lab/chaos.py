"""Chaos scenarios: a burst of missed calls on a lab, a fault injected mid-burst, then
who was texted once, never, or twice.

Each scenario runs on a fresh lab Asterisk with `textback agent` as its own process
(SQLite, `[pbx] cdr_csv` on the lab's CDR file, as an office would configure it), a
burst of missed calls from the trunk each from its own number, and one fault in the
middle: the agent killed with SIGKILL and started again, Asterisk stopped and started,
Asterisk frozen (SIGSTOP … SIGCONT), the database locked by another process, a SIGTERM
while texts wait for the trunk's rate limit, hostile caller names and inbound texts.

It then waits (bounded) until every caller Asterisk saw — a CDR row or an AMI Hangup
of the inbound leg; a call refused at the SIP level while Asterisk was down is not a
call — has a text at the trunk or nothing more arrives, and counts per caller: texted
once, not texted (lost), texted more than once (duplicate). Recovery is the time from
the end of the fault until every call that had ended by then, or within RECOVERY_GRACE
after, was texted.

Used by `bench/chaos` (`make chaos`: the full scenarios) and tests/test_chaos.py (the
reduced ones in `make test`). Standard library only, like the rest of the lab.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import itertools
import logging
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agent.lab.agentproc import AgentProcess
from agent.lab.children import die_with_parent
from agent.lab.pbx import LabPbx
from agent.lab.phones import LabCall, PhoneBehaviour
from agent.lab.trunk import TrunkPeer

log = logging.getLogger(__name__)

DID = "+15550000100"  # the desk answers each call 486 Busy: a missed call
UNAVAILABLE_DID = "+15550000102"  # an unregistered phone: missed at once (CHANUNAVAIL)
RTP_PORTS = 1000
SYSTEMD_RESTART_SEC = 3.0  # how long systemd waits before starting a dead agent again
# recovery: from the end of the fault until every call that ended before it, or this
# soon after it (calls Asterisk held while frozen or down end just after), was texted
RECOVERY_GRACE = 5.0

# caller names a carrier can pass through: everything a display name may carry (SIPp
# cannot send '[', ']' or line breaks, the lab refuses them)
HOSTILE_NAMES = (
    'Zoë "Boss" O\'Brien',
    "back\\slash\\\\ name\\",
    "Smith, John; Jr.",
    "semi;colon;;name;",
    "🔧🚿 Plumbing 💧 emergency 🔥",
    "A" * 200,
    "Ünïcödé " * 25,
    "Robert'); DROP TABLE calls;--",
    "1' OR '1'='1",
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "&lt;b&gt;&amp;&quot;",
    "{business} {first_name} %s %d {0}",
    "ctrl\x01\x02\x07\x08\x1bc\x1b(B\x7f",
    "tab\there\x0bvt\x0cff",
    "\u202eRTL override\u200b\u200d",
    "NULL",
    "",
    " ",
    '"',
    "\\",
    ",",
)

# inbound texts: the same, plus the sizes around Asterisk's 1,024-byte limit; bytes are
# sent as they are (invalid UTF-8 the way a broken gateway sends it)
HOSTILE_BODIES: tuple[str | bytes, ...] = (
    *(name for name in HOSTILE_NAMES if name.strip()),
    "ß" * 511 + "x",  # 1,023 bytes: the most Asterisk passes
    "Long story. " * 417,  # 5,004 bytes: Asterisk drops the body
    b"caf\xe9 au lait \xff\xfe broken UTF-8",
    b"\xc3\x28 \xa0\xa1 \xf0\x28\x8c\xbc truncated \xe2\x82",
    "x",
)


@dataclass
class Outcome:
    """What one scenario did: the counts, and every check that failed."""

    name: str
    placed: int = 0
    calls: int = 0  # calls Asterisk saw (CDR row or AMI Hangup of the inbound leg)
    texted: int = 0
    lost: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    recovery_s: float | None = None
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0
    agent_log: Path | None = None

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicates or self.problems)

    def line(self) -> str:
        recovery = "never" if self.recovery_s is None else f"{self.recovery_s:.1f} s"
        return (f"{self.name:<28} calls {self.calls:>4} (placed {self.placed:>4})  texted "
                f"{self.texted:>4}  lost {len(self.lost):>3}  duplicates "
                f"{len(self.duplicates):>3}  recovery {recovery:>8}  "
                f"[{self.elapsed_s:.0f} s]  {'ok' if self.ok else 'FAIL'}")

    def report(self) -> str:
        lines = [self.line()]
        lines += [f"    note: {n}" for n in self.notes]
        lines += [f"    problem: {p}" for p in self.problems]
        if self.lost:
            lines.append(f"    lost: {', '.join(self.lost[:20])}")
        if self.duplicates:
            lines.append(f"    duplicates: {', '.join(self.duplicates[:20])}")
        if not self.ok and self.agent_log is not None:
            lines.append(f"    agent log: {self.agent_log}")
        return "\n".join(lines)


class ChaosLab(LabPbx):
    """The lab with an RTP range wide enough for a burst (each call holds two channels'
    RTP and RTCP ports while it lasts); burst ports stay out of single calls' way."""

    def template_values(self) -> dict[str, object]:
        values = super().template_values()
        values["LAB_RTP_START"] = self.ports.base + 1000
        values["LAB_RTP_END"] = self.ports.base + 1000 + RTP_PORTS - 1
        return values

    def burst(self, exten: str, caller_ids: Sequence[str], rate: float, *,
              phone: PhoneBehaviour | None = "busy", answer_after_ms: int = 500,
              hold_ms: int = 2000, timeout: float | None = None) -> LabCall:
        call = super().burst(exten, caller_ids, rate, phone=phone,
                             answer_after_ms=answer_after_ms, hold_ms=hold_ms,
                             timeout=timeout)
        used = int(call.caller.proc.args[call.caller.proc.args.index("-p") + 1])  # type: ignore[union-attr]
        # single calls placed meanwhile must not bind the burst's port
        self._trunk_slots = itertools.cycle([p for p in self.ports.trunk_calls if p != used])
        return call


class HangupWatcher(threading.Thread):
    """The inbound legs' Hangups as an independent AMI client sees them (reconnecting
    while Asterisk is away): CallerIDNum → receive time."""

    def __init__(self, lab: LabPbx) -> None:
        super().__init__(daemon=True, name="chaos-hangups")
        self.lab = lab
        self.hangups: dict[str, float] = {}
        self._closing = threading.Event()
        self._sock: socket.socket | None = None

    def run(self) -> None:
        while not self._closing.is_set():
            with contextlib.suppress(OSError):
                self._watch()
            self._closing.wait(0.5)

    def _watch(self) -> None:
        sock = socket.create_connection((self.lab.ami_host, self.lab.ami_port), timeout=5)
        sock.settimeout(None)
        self._sock = sock
        try:
            sock.sendall(f"Action: Login\r\nUsername: {self.lab.admin_user}\r\nSecret: "
                         f"{self.lab.admin_secret}\r\nEvents: call\r\n\r\n".encode())
            buffer = b""
            while not self._closing.is_set() and (chunk := sock.recv(262144)):
                now = time.time()
                buffer += chunk
                *blocks, buffer = buffer.split(b"\r\n\r\n")
                for block in blocks:
                    if b"Event: Hangup\r\n" not in block:
                        continue
                    fields = dict(line.split(": ", 1) for line in
                                  block.decode(errors="replace").split("\r\n") if ": " in line)
                    if fields.get("Uniqueid") == fields.get("Linkedid"):
                        self.hangups.setdefault(fields.get("CallerIDNum", ""), now)
        finally:
            self._sock = None
            sock.close()

    def close(self) -> None:
        self._closing.set()
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self.join(3)


def cdr_ends(path: Path) -> dict[str, float]:
    """Caller number (src) → end time of its calls in the CDR file (UTC). Every caller
    of a scenario has its own number; the row's context is where the dialplan went last
    (a DID's Goto lands in from-internal), so it is not checked."""
    ends: dict[str, float] = {}
    with contextlib.suppress(OSError), path.open(newline="", errors="replace") as handle:
        for row in csv.reader(handle):
            if len(row) < 12:
                continue
            with contextlib.suppress(ValueError):
                end = dt.datetime.strptime(row[11], "%Y-%m-%d %H:%M:%S").replace(
                    tzinfo=dt.UTC).timestamp()
                ends[row[1]] = max(ends.get(row[1], 0.0), end)
    return ends


def bucket_overdraft(times: Sequence[float], per_minute: int) -> float:
    """Replay send times through the dispatcher's token bucket (capacity per_minute,
    refilled per_minute/60 a second, full at the first send): the deepest it went
    below zero, in texts. 0 means the limit held."""
    tokens, last, worst = float(per_minute), None, 0.0
    for at in sorted(times):
        if last is not None:
            tokens = min(float(per_minute), tokens + (at - last) * per_minute / 60.0)
        last = at
        tokens -= 1
        worst = min(worst, tokens)
    return -worst


def busiest_minute(times: Sequence[float]) -> int:
    ordered = sorted(times)
    return max((sum(1 for t in ordered[i:] if t < start + 60.0)
                for i, start in enumerate(ordered)), default=0)


def wait_for_text_on_its_way(db_path: Path, within: float = 10.0) -> bool:
    """Until a text is between its decision and the trunk (a row claimed or in flight),
    as at most moments of a busy minute; False if none within `within` s."""
    deadline = time.monotonic() + within
    with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as db:
        while time.monotonic() < deadline:
            with contextlib.suppress(sqlite3.OperationalError):
                if db.execute("SELECT 1 FROM messages WHERE status IN ('claimed', 'sending') "
                              "LIMIT 1").fetchone():
                    return True
            time.sleep(0.0005)
    return False


class LockHolder:
    """Another process holding the SQLite database's write lock (BEGIN EXCLUSIVE), as a
    long maintenance query or a stray `sqlite3` shell would: ready at once, locking on
    `lock()`, for `seconds`."""

    def __init__(self, db: Path, seconds: float) -> None:
        code = ("import sqlite3, sys, time\n"
                "c = sqlite3.connect(sys.argv[1], timeout=60, isolation_level=None)\n"
                "print('ready', flush=True)\n"
                "sys.stdin.readline()\n"
                "c.execute('BEGIN EXCLUSIVE')\n"
                "print('locked', flush=True)\n"
                "time.sleep(float(sys.argv[2]))\n"
                "c.execute('COMMIT')\n")
        self.db = db
        self.proc = subprocess.Popen([sys.executable, "-c", code, str(db), str(seconds)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     preexec_fn=die_with_parent)
        assert self.proc.stdout is not None
        if b"ready" not in self.proc.stdout.readline():
            raise RuntimeError(f"could not open {db}")

    def lock(self, pause: int | None = None) -> None:
        """Take the lock; with `pause`, that process (the agent) is stopped until the
        request is on its way, so it cannot finish what it was doing meanwhile."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        if pause is not None:
            os.kill(pause, signal.SIGSTOP)
        try:
            self.proc.stdin.write(b"go\n")
            self.proc.stdin.flush()
            time.sleep(0.02)  # the holder's BEGIN EXCLUSIVE, before the agent's next write
        finally:
            if pause is not None:
                os.kill(pause, signal.SIGCONT)
        if b"locked" not in self.proc.stdout.readline():
            raise RuntimeError(f"could not lock {self.db}")

    def lock_while_sending(self, agent: int, within: float = 10.0) -> bool:
        """Lock while a text is on its way (`wait_for_text_on_its_way`; at `within` s lock
        anyway). The agent is paused for the instant it takes (20 ms), so the moment is
        not missed. Whether a text was caught."""
        caught = wait_for_text_on_its_way(self.db, within)
        self.lock(pause=agent if caught else None)
        return caught

    def wait(self) -> None:
        self.proc.wait(120)


class Chaos:
    """One scenario's world: a fresh lab, the trunk, the agent process, the watcher."""

    def __init__(self, name: str, work: Path, port_base: int, *, max_per_minute: int = 6000,
                 ping_interval: float | None = None, ping_timeout: float | None = None,
                 busy_timeout: float | None = None) -> None:
        self.name, self.work = name, work
        work.mkdir(parents=True, exist_ok=True)
        self.lab = ChaosLab(work / "pbx", port_base, ring_seconds=4)
        self.max_per_minute = max_per_minute
        self.ping = (ping_interval, ping_timeout)
        self.busy_timeout = busy_timeout
        self.outcome = Outcome(name, agent_log=work / "agent.log")
        self.cleared: float | None = None  # when the fault ended
        self._stack = contextlib.ExitStack()
        self.trunk: TrunkPeer
        self.agent: AgentProcess
        self.watcher: HangupWatcher

    @property
    def db_path(self) -> Path:
        return self.work / "textback.db"

    def __enter__(self) -> Chaos:
        self._began = time.monotonic()
        try:
            self._start()
        except BaseException:
            self._stack.close()
            raise
        return self

    def _start(self) -> None:
        self.lab.start()
        self._stack.callback(self.lab.stop)
        self.trunk = self._stack.enter_context(self.lab.trunk_peer())
        config = self.lab.write_agent_config(self.work, ping_interval=self.ping[0],
                                             ping_timeout=self.ping[1], cdr_csv=True)
        config.write_text(config.read_text().replace(
            '[sms.sip]\nendpoint = "trunk"\n',
            f'[sms.sip]\nendpoint = "trunk"\nmax_per_minute = {self.max_per_minute}\n'))
        subprocess.run([sys.executable, "-m", "agent.cli", "migrate", "--config",
                        str(config)], check=True, capture_output=True)
        self.agent = AgentProcess(config, self.work / "agent.log",
                                  busy_timeout=self.busy_timeout)
        self.agent.start()
        self._stack.callback(self._stop_agent)
        self.watcher = HangupWatcher(self.lab)
        self.watcher.start()
        self._stack.callback(self.watcher.close)

    def __exit__(self, *exc: object) -> None:
        self._stack.close()
        self.outcome.elapsed_s = time.monotonic() - self._began

    def _stop_agent(self) -> None:
        proc = self.agent.proc
        if proc is not None and proc.poll() is None:
            rc = self.agent.stop()
            if rc != 0:
                self.outcome.problems.append(f"the agent exited {rc} on SIGTERM at the end")

    # -- the burst and the fault ---------------------------------------------------------
    def burst(self, callers: Sequence[str], rate: float) -> LabCall:
        self.callers = list(callers)
        self.outcome.placed = len(callers)
        self.started = time.time()
        return self.lab.burst(DID, callers, rate, phone="busy")

    def mid_burst(self, calls: int, rate: float, share: float = 0.4) -> None:
        """Sleep until `share` of a burst of `calls` at `rate` has been offered."""
        time.sleep(max(0.0, self.started + calls * share / rate - time.time()))

    def fault_cleared(self) -> None:
        self.cleared = time.time()

    def agent_alive(self) -> bool:
        return self.agent.proc is not None and self.agent.proc.poll() is None

    # -- counting --------------------------------------------------------------------------
    def seen(self) -> set[str]:
        """The callers Asterisk saw: a CDR row, or an AMI Hangup of the inbound leg."""
        wanted = set(self.callers)
        return wanted & (set(cdr_ends(self.lab.cdr_csv)) | set(self.watcher.hangups))

    def texts(self) -> Counter[str]:
        return Counter(m.to for m in list(self.trunk.messages))

    def settle(self, burst: LabCall, *, quiet: float = 30.0, cap: float = 300.0,
               extra: Callable[[], bool] = lambda: True) -> None:
        """Wait for the burst to end, then until every caller Asterisk saw has a text (and
        `extra()` holds), or nothing new reaches the trunk for `quiet` s, or `cap` s."""
        rc = burst.wait(len(self.callers) / 10 + 180)
        if rc:
            self.outcome.notes.append(f"the SIPp caller exited {rc}: some calls failed at "
                                      "the SIP level (not calls Asterisk saw)")
        deadline = time.monotonic() + cap
        last, changed = -1, time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - changed < quiet:
            texts = self.texts()
            if self.seen() <= set(texts) and extra():
                time.sleep(3.0)  # a duplicate would arrive well within this
                break
            if len(self.trunk.messages) != last:
                last, changed = len(self.trunk.messages), time.monotonic()
            time.sleep(0.25)

    def count(self) -> Outcome:
        out = self.outcome
        seen = self.seen()
        texts = self.texts()
        out.calls = len(seen)
        out.texted = sum(1 for c in seen if texts[c])
        out.lost = sorted(c for c in seen if not texts[c])
        out.duplicates = sorted(c for c in seen if texts[c] > 1)
        unseen_texted = sorted(c for c in set(self.callers) - seen if texts[c])
        if unseen_texted:
            out.problems.append(f"{len(unseen_texted)} caller(s) texted that Asterisk has "
                                f"no CDR row or Hangup for: {unseen_texted[:5]}")
        if out.placed - out.calls:
            out.notes.append(f"{out.placed - out.calls} call(s) never reached Asterisk")
        out.recovery_s = self._recovery(seen, texts)
        self._check_database()
        if not self.agent_alive():
            out.problems.append("the agent is not running at the end")
        return out

    def _recovery(self, seen: set[str], texts: Counter[str]) -> float | None:
        if self.outcome.lost:
            return None
        if self.cleared is None:
            return 0.0
        first: dict[str, float] = {}
        for message in list(self.trunk.messages):
            first.setdefault(message.to, message.received_at)
        ends = cdr_ends(self.lab.cdr_csv)
        ended = [c for c in seen if min(ends.get(c, 1e12), self.watcher.hangups.get(c, 1e12))
                 <= self.cleared + RECOVERY_GRACE]
        return max([0.0, *(first[c] - self.cleared for c in ended)])

    def query(self, sql: str, *args: object) -> list[tuple[object, ...]]:
        with contextlib.closing(sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True,
                                                timeout=30)) as db:
            return db.execute(sql, args).fetchall()

    def _check_database(self) -> None:
        out = self.outcome
        stranded = self.query("SELECT status, count(*) FROM messages WHERE status IN "
                              "('queued', 'claimed', 'sending') GROUP BY status")
        if stranded:
            out.problems.append(f"messages stranded: {dict(stranded)}")  # type: ignore[arg-type]
        failed = self.query("SELECT number, error FROM messages WHERE direction = 'out' AND "
                            "status = 'failed'")
        if failed:
            out.notes.append(f"{len(failed)} text(s) failed in the database, e.g. "
                             f"{failed[0][0]}: {failed[0][1]}")
        rows = dict(self.query("SELECT status, count(*) FROM messages WHERE direction = 'out' "
                               "GROUP BY status"))  # type: ignore[arg-type]
        out.notes.append(f"outbound rows by status: {rows}")
        twice = self.query("SELECT caller_raw, count(*) FROM calls GROUP BY caller_raw "
                           "HAVING count(*) > 1")
        if twice:
            out.problems.append(f"{len(twice)} caller(s) recorded as more than one call, e.g. "
                                f"{twice[0]}")
        text = self.outcome.agent_log.read_text(errors="replace") \
            if self.outcome.agent_log else ""
        if text.count("Traceback"):
            out.notes.append(f"{text.count('Traceback')} traceback(s) in the agent's log")
        if text.count("Task exception was never retrieved"):
            out.problems.append(f"{text.count('Task exception was never retrieved')} "
                                "unhandled exception(s) in the agent ('Task exception was "
                                "never retrieved')")


def callers(count: int, prefix: str = "+1312555") -> list[str]:
    return [f"{prefix}{n:04d}" for n in range(count)]


# -- the scenarios ---------------------------------------------------------------------------
def kill_agent(work: Path, port_base: int, calls: int, rate: float) -> Outcome:
    """kill -9 of the agent mid-burst; systemd starts it again a few seconds later."""
    with Chaos("agent kill -9", work, port_base) as chaos:
        burst = chaos.burst(callers(calls), rate)
        chaos.mid_burst(calls, rate)
        assert chaos.agent.proc is not None
        chaos.agent.proc.send_signal(signal.SIGKILL)
        chaos.agent.proc.wait()
        time.sleep(SYSTEMD_RESTART_SEC)
        chaos.agent.start()
        chaos.fault_cleared()
        chaos.settle(burst)
        return chaos.count()


def restart_asterisk(work: Path, port_base: int, calls: int, rate: float,
                     down: float = 5.0) -> Outcome:
    """Asterisk stopped mid-burst and started again `down` s later."""
    with Chaos("asterisk restart", work, port_base) as chaos:
        burst = chaos.burst(callers(calls), rate)
        chaos.mid_burst(calls, rate)
        chaos.lab.stop()
        time.sleep(down)
        chaos.lab.start(timeout=60)
        chaos.fault_cleared()
        chaos.settle(burst)
        if "AMI link restored" not in chaos.agent.log():
            chaos.outcome.problems.append("the agent never said the AMI link was restored")
        return chaos.count()


def freeze_asterisk(work: Path, port_base: int, calls: int, rate: float,
                    frozen: float = 20.0, ping: tuple[float, float] | None = None,
                    per_minute: int = 60, after_texts: int | None = None,
                    share: float = 0.7, while_sending: bool = False) -> Outcome:
    """Asterisk frozen (SIGSTOP) for `frozen` s mid-burst, then SIGCONT; the agent's
    ping watchdog (default 10 + 5 s, or `ping`) must notice the silent link.

    The trunk keeps its default rate limit (60/min), so after the first minute's texts
    the rest drain one by one, as after any burst in an office: the freeze lands while
    texts are being handed to Asterisk (with `after_texts`: once that many reached the
    trunk, else once `share` of the burst was offered; `while_sending`: then as soon as
    a text is on its way)."""
    interval, timeout = ping or (None, None)
    with Chaos(f"asterisk frozen {frozen:g} s", work, port_base, ping_interval=interval,
               ping_timeout=timeout, max_per_minute=per_minute) as chaos:
        chaos.outcome.notes.append(f"[sms.sip] max_per_minute {per_minute}")
        burst = chaos.burst(callers(calls), rate)
        if after_texts is None:
            chaos.mid_burst(calls, rate, share)
        else:
            deadline = time.monotonic() + 60
            while len(chaos.trunk.messages) < after_texts and time.monotonic() < deadline:
                time.sleep(0.05)
        assert chaos.lab.pid is not None and chaos.agent.proc is not None
        agent = chaos.agent.proc.pid
        if while_sending and wait_for_text_on_its_way(chaos.db_path):
            # the agent paused for the instant it takes, so the moment is not missed
            os.kill(agent, signal.SIGSTOP)
            os.kill(chaos.lab.pid, signal.SIGSTOP)
            os.kill(agent, signal.SIGCONT)
        elif while_sending:
            chaos.outcome.notes.append("no text was on its way when Asterisk froze")
        os.kill(chaos.lab.pid, signal.SIGSTOP)
        try:
            time.sleep(frozen)
        finally:
            os.kill(chaos.lab.pid, signal.SIGCONT)
        chaos.fault_cleared()
        chaos.settle(burst, cap=120 + calls * 60 / per_minute)
        if "AMI ping unanswered" not in chaos.agent.log():
            chaos.outcome.notes.append("the ping watchdog did not drop the link")
        return chaos.count()


def lock_database(work: Path, port_base: int, calls: int, rate: float, locked: float,
                  busy_timeout: float | None = None) -> Outcome:
    """Another process holds the SQLite write lock for `locked` s mid-burst, taken while
    a text is on its way (claimed, or with the trunk), as most moments of a burst."""
    with Chaos(f"database locked {locked:g} s", work, port_base,
               busy_timeout=busy_timeout) as chaos:
        if busy_timeout is not None:
            chaos.outcome.notes.append(f"agent's SQLite busy timeout {busy_timeout:g} s")
        holder = LockHolder(chaos.db_path, locked)
        burst = chaos.burst(callers(calls), rate)
        chaos.mid_burst(calls, rate)
        assert chaos.agent.proc is not None
        if not holder.lock_while_sending(chaos.agent.proc.pid):
            chaos.outcome.notes.append("no text was on its way when the lock began")
        holder.wait()
        chaos.fault_cleared()
        chaos.settle(burst)
        return chaos.count()


def sigterm_backlog(work: Path, port_base: int, calls: int, rate: float,
                    per_minute: int) -> Outcome:
    """Texts queued behind a low [sms.sip] max_per_minute; SIGTERM while they wait, start
    again: each caller texted once, no row left claimed or sending, the limit held."""
    with Chaos(f"SIGTERM, {per_minute}/min backlog", work, port_base,
               max_per_minute=per_minute) as chaos:
        burst = chaos.burst(callers(calls), rate)
        # mid-backlog: the bucket's first minute went out, a few of the rest too
        target = per_minute + max(1, (calls - per_minute) // 3)
        deadline = time.monotonic() + 60 + (calls - per_minute) * 60 / per_minute
        while len(chaos.trunk.messages) < target and time.monotonic() < deadline:
            time.sleep(0.1)
        rc = chaos.agent.stop()
        if rc != 0:
            chaos.outcome.problems.append(f"the agent exited {rc} on SIGTERM")
        stranded = chaos.query("SELECT status, count(*) FROM messages WHERE status IN "
                               "('claimed', 'sending') GROUP BY status")
        chaos.outcome.notes.append(f"at SIGTERM {len(chaos.trunk.messages)} texted; rows "
                                   f"left claimed/sending by the stop: {dict(stranded) or 0}")  # type: ignore[arg-type]
        time.sleep(SYSTEMD_RESTART_SEC)
        chaos.agent.start()
        chaos.fault_cleared()
        # a restart counts the last minute's texts as sent from an empty bucket: the
        # first text after it may wait most of a minute
        chaos.settle(burst, quiet=75, cap=120 + calls * 60 / per_minute)
        out = chaos.count()
        times = [m.received_at for m in list(chaos.trunk.messages)]
        overdraft = bucket_overdraft(times, per_minute)
        out.notes.append(f"busiest 60 s: {busiest_minute(times)} texts (token bucket of "
                         f"{per_minute}: at most {per_minute} at once, then one every "
                         f"{60 / per_minute:g} s)")
        if overdraft > 0.5:
            out.problems.append(f"the rate limit was exceeded: {overdraft:.1f} text(s) beyond "
                                f"a {per_minute}/min token bucket")
        return out


def hostile_input(work: Path, port_base: int, calls: int, rate: float,
                  names: Sequence[str] = HOSTILE_NAMES,
                  bodies: Sequence[str | bytes] = HOSTILE_BODIES) -> Outcome:
    """Hostile caller names and inbound texts during a burst of plain missed calls: the
    agent never crashes, each caller texted once, each inbound text stored non-empty."""
    with Chaos("hostile caller IDs and SMS", work, port_base) as chaos:
        plain = callers(calls)
        named = callers(len(names), "+1312556")
        senders = callers(len(bodies), "+1312557")
        burst = chaos.burst(plain, rate)
        chaos.callers = plain + named
        chaos.outcome.placed = len(chaos.callers)
        statuses: list[str] = []

        def texts_in() -> None:
            for sender, body in zip(senders, bodies, strict=True):
                try:
                    statuses.append(chaos.trunk.send_message(DID, sender, body))
                except Exception as exc:
                    statuses.append(f"error {exc}")

        sms = threading.Thread(target=texts_in, daemon=True)
        sms.start()
        for number, name in zip(named, names, strict=True):
            chaos.lab.call(UNAVAILABLE_DID, caller_id=number, caller_name=name or None,
                           from_trunk=True, phone=None, timeout=20)
        sms.join(120)

        def stored() -> bool:
            return len(chaos.query(
                "SELECT DISTINCT number FROM messages WHERE direction = 'in'")) >= len(senders)

        chaos.settle(burst, extra=stored)
        out = chaos.count()
        refused = [f"{s!r}: {st}" for s, st in zip(senders, statuses, strict=False)
                   if not st.split(" ")[1:2] or not st.split(" ")[1].startswith("2")]
        if refused:
            out.notes.append(f"{len(refused)} inbound text(s) not accepted by Asterisk: "
                             f"{refused[:3]}")
        rows = dict(chaos.query("SELECT number, body FROM messages WHERE direction = 'in'"))
        missing = [s for s in senders if s not in rows]
        empty = [s for s in senders if s in rows and not str(rows[s]).strip()]
        if missing:
            out.problems.append(f"{len(missing)} inbound text(s) not stored: "
                                f"{[bodies[senders.index(s)] for s in missing][:4]!r}")
        if empty:
            out.problems.append(f"{len(empty)} inbound text(s) stored empty")
        out.notes.append(f"{len(rows)} of {len(senders)} inbound texts stored")
        return out


SCENARIOS = ("kill", "asterisk-restart", "asterisk-freeze", "db-lock", "sigterm", "hostile")
