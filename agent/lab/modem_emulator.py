"""A GSM modem on a pseudo-terminal, for the tests, `bench/modem` and `make demo MODEM=emulated`.

Not used by the agent in production. It lives in the package (not in tests/) so
that the demo and the benchmark, which run from an installed textback, can start
one too. It is a real serial peer: the driver opens `link` (a symlink to the pty's
slave, like `/dev/serial/by-id/usb-…`) with pyserial exactly as it opens a USB
modem, and gammu's `--identify` accepts it, which keeps it honest.

What it does (PDU mode only, as the driver uses): echo on/off, `;`-joined command
lines, CMEE 0/1/2 error formats, SIM PIN, `AT+CMGS` with the `> ` prompt and PDU
validation (the TPDU must be as long as `AT+CMGS=<n>` says), storages SM/ME/SR with
CPMS/CMGR/CMGL/CMGD, CNMI-driven `+CMTI`/`+CDSI` (or `+CDS` with ds=1), incoming
SMS (GSM-7, UCS-2, multipart in any order), status reports after each send, and
`AT+CFUN=1,1` (a reset that takes a moment and loses the PIN state).

Faults to switch on: `+CMS ERROR` for chosen numbers, a network delay before
`+CMGS`, commands left unanswered (a hung modem), answers that come too late, no
`> ` prompt, `+CME ERROR: 515` while "initialising", a URC inside the next
answer, notifications that are lost, and the port vanishing (`unplug`) and
reappearing under another name (`replug`), with SMS arriving meanwhile.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import heapq
import itertools
import logging
import os
import re
import select
import threading
import time
import tty
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from agent.transports.modem import pdu

log = logging.getLogger(__name__)

CMS_TEXT = {1: "Unassigned (unallocated) number", 21: "Short message transfer rejected",
            38: "Network out of order", 304: "Invalid PDU mode parameter",
            332: "Network timeout", 500: "Unknown error", 321: "Invalid memory index"}
CME_TEXT = {3: "operation not allowed", 4: "operation not supported", 10: "SIM not inserted",
            11: "SIM PIN required", 16: "incorrect password", 515: "please wait, init or "
            "command processing in progress", 100: "unknown"}


@dataclass
class SentSms:
    """What the emulator took from `AT+CMGS`: the PDU as written and the TP-MR it gave."""

    pdu: str
    tp_mr: int
    destination: str
    at: float

    @property
    def text(self) -> str:
        """This part's text (UCS-2 halves of an emoji are joined when parts are joined)."""
        from gsmmodem import pdu as gsmpdu

        return str(gsmpdu.decodeSmsPdu(self.pdu).get("text", ""))


@dataclass
class Faults:
    cms_error_for: dict[str, int] = field(default_factory=dict)  # destination -> CMS code
    network_delay: float = 0.0  # before +CMGS: <mr>
    unanswered: int = 0  # the next N command lines get no answer at all
    late_answer: dict[str, float] = field(default_factory=dict)  # command -> delay (once)
    no_prompt: int = 0  # the next N AT+CMGS get no "> " prompt
    busy: int = 0  # the next N commands answer +CME ERROR: 515
    urc_inside_next_answer: list[str] = field(default_factory=list)  # URC lines
    lose_notifications: bool = False  # store SMS but never say +CMTI
    report_status: dict[str, int] = field(default_factory=dict)  # destination -> TP-ST
    report_delay: float = 0.05
    send_reports: bool = True


class ModemEmulator:
    """See the module docstring. Thread-safe: call its methods from any thread."""

    def __init__(self, link: str | os.PathLike[str], *, pin: str = "",
                 model: str = "SIM7600G-H", manufacturer: str = "SIMCOM INCORPORATED",
                 imei: str = "861234050012345", operator: str = "Emulated Telecom",
                 csq: int = 20) -> None:
        self.link = Path(link)
        self.pin = pin
        self.model, self.manufacturer, self.imei, self.operator = (
            model, manufacturer, imei, operator)
        self.csq = csq
        self.faults = Faults()
        self.sent: list[SentSms] = []
        self.commands: list[str] = []
        self.storage: dict[str, dict[int, tuple[int, str]]] = {"SM": {}, "ME": {}, "SR": {}}
        self.capacity = {"SM": 30, "ME": 50, "SR": 30}
        self._lock = threading.RLock()
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._mr = itertools.count(1)
        self._wake_r, self._wake_w = os.pipe()
        self._stop = False
        self._master: int | None = None
        self._slave: int | None = None
        self._reset_state()
        self._plug(self.link)
        self._thread = threading.Thread(target=self._loop, name="modem-emulator", daemon=True)
        self._thread.start()

    # -- state -------------------------------------------------------------------------
    def _reset_state(self) -> None:
        self.echo = True
        self.cmee = 0
        self.pin_ok = not self.pin
        self.cmgf = 0
        self.cnmi = (0, 0, 0, 0, 0)
        self.cpms = ["SM", "SM", "SM"]
        self.smsc = "+447785016005"
        self.booting_until = 0.0
        self._input = b""
        self._pdu_for: int | None = None  # expecting a PDU of this TPDU length

    @property
    def port(self) -> str:
        """The pty slave currently behind `link` (like /dev/ttyUSB0)."""
        return os.ttyname(self._slave) if self._slave is not None else ""

    def _plug(self, link: Path) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)
        self._master, self._slave = master, slave
        self.link = link
        link.parent.mkdir(parents=True, exist_ok=True)
        tmp = link.with_name(link.name + ".new")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(os.ttyname(slave))
        tmp.replace(link)

    def unplug(self) -> None:
        """The USB modem vanishes: the port closes under the driver and its name goes."""
        with self._lock:
            self.link.unlink(missing_ok=True)
            for fd in (self._master, self._slave):
                if fd is not None:
                    os.close(fd)
            self._master = self._slave = None
            self._reset_state()
            self._timers = [t for t in self._timers if t[2].__name__ == "_network"]
        self._wake()

    def replug(self, link: str | os.PathLike[str] | None = None) -> None:
        """It comes back, possibly under another name (ttyUSB0 → ttyUSB3)."""
        with self._lock:
            self._plug(Path(link) if link else self.link)
        self._wake()

    def close(self) -> None:
        self._stop = True
        self._wake()
        self._thread.join(5)
        with self._lock:
            self.link.unlink(missing_ok=True)
            for fd in (self._master, self._slave, self._wake_r, self._wake_w):
                if fd is not None:
                    os.close(fd)
            self._master = self._slave = None

    def __enter__(self) -> ModemEmulator:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- the network's side ------------------------------------------------------------
    def receive_sms(self, sender: str, text: str, *, order: list[int] | None = None,
                    reference: int = 0x42, when: dt.datetime | None = None,
                    memory: str | None = None) -> list[int]:
        """An SMS from `sender` reaches the SIM (parts in `order`, 1-based); their indexes."""
        pdus = pdu.encode_deliver(sender, text, when=when or dt.datetime.now(dt.UTC),
                                  reference=reference)
        indexes = []
        for n in order or range(1, len(pdus) + 1):
            indexes.append(self._store_incoming(pdus[n - 1], memory))
        return indexes

    def _store_incoming(self, hex_pdu: str, memory: str | None) -> int:
        with self._lock:
            mem = memory or self.cpms[2]
            slots = self.storage[mem]
            index = next(i for i in itertools.count(0 if mem == "SM" else 1) if i not in slots)
            slots[index] = (0, hex_pdu)  # REC UNREAD
            if self.cnmi[1] and not self.faults.lose_notifications:
                self._urc(f'+CMTI: "{mem}",{index}')
            return index

    def status_report(self, tp_mr: int, recipient: str, status: int = 0) -> None:
        with self._lock:
            hex_pdu = pdu.encode_status_report(tp_mr, recipient, status,
                                               when=dt.datetime.now(dt.UTC))
            if self.cnmi[3] == 1:
                self._urc(f"+CDS: {pdu.tpdu_length(hex_pdu)}\r\n{hex_pdu}")
                return
            slots = self.storage["SR"]
            index = next(i for i in itertools.count(1) if i not in slots)
            slots[index] = (0, hex_pdu)
            if self.cnmi[3] == 2 and not self.faults.lose_notifications:
                self._urc(f'+CDSI: "SR",{index}')

    def ring(self, caller: str) -> None:
        self._urc("RING")
        self._urc(f'+CLIP: "{caller}",145,,,,0')

    # -- plumbing ----------------------------------------------------------------------
    def _wake(self) -> None:
        os.write(self._wake_w, b"x")

    def _later(self, delay: float, action: Callable[[], None]) -> None:
        with self._lock:
            heapq.heappush(self._timers, (time.monotonic() + delay, next(self._seq), action))
        self._wake()

    def _out(self, data: str) -> None:
        if self._master is None:
            return
        with contextlib.suppress(OSError):
            os.write(self._master, data.encode("latin-1"))

    def _urc(self, line: str) -> None:
        self._out(f"\r\n{line}\r\n")

    def _loop(self) -> None:
        while not self._stop:
            with self._lock:
                now = time.monotonic()
                due = []
                while self._timers and self._timers[0][0] <= now:
                    due.append(heapq.heappop(self._timers)[2])
                timeout = (self._timers[0][0] - now) if self._timers else 1.0
                master = self._master
            for action in due:
                with self._lock:
                    action()
            fds = [self._wake_r] + ([master] if master is not None else [])
            try:
                ready, _, _ = select.select(fds, [], [], max(0.0, timeout))
            except (OSError, ValueError):
                continue
            if self._wake_r in ready:
                os.read(self._wake_r, 4096)
            if master is not None and master in ready:
                try:
                    data = os.read(master, 4096)
                except OSError:
                    continue  # nobody has the port open, or it was just unplugged
                with self._lock:
                    if master == self._master:
                        self._data(data)

    def _data(self, data: bytes) -> None:
        self._input += data
        while self._input:
            if self._pdu_for is not None:
                for stop in (b"\x1a", b"\x1b"):
                    if stop in self._input:
                        body, _, self._input = self._input.partition(stop)
                        length, self._pdu_for = self._pdu_for, None
                        if stop == b"\x1a":
                            self._take_pdu(body.decode("latin-1").strip(), length)
                        break
                else:
                    return
                continue
            end = min((i for i in (self._input.find(b"\r"), self._input.find(b"\n")) if i >= 0),
                      default=-1)
            if end < 0:
                return
            raw, self._input = self._input[:end], self._input[end + 1:]
            line = raw.decode("latin-1").strip()
            if line:
                if self.echo:
                    self._out(line + "\r")
                self._command_line(line)

    # -- commands ----------------------------------------------------------------------
    def _final(self, text: str, delay: float = 0.0) -> None:
        command = self.commands[-1].upper() if self.commands else ""
        delay = self.faults.late_answer.pop(command, delay)
        if delay:
            self._later(delay, lambda: self._out(f"\r\n{text}\r\n"))
        else:
            self._out(f"\r\n{text}\r\n")

    def _cme(self, code: int) -> str:
        if self.cmee == 0:
            return "ERROR"
        return f"+CME ERROR: {code if self.cmee == 1 else CME_TEXT.get(code, code)}"

    def _cms(self, code: int) -> str:
        if self.cmee == 0:
            return "ERROR"
        return f"+CMS ERROR: {code if self.cmee == 1 else CMS_TEXT.get(code, code)}"

    def _command_line(self, line: str) -> None:
        self.commands.append(line)
        if self.faults.unanswered:
            self.faults.unanswered -= 1
            return
        if time.monotonic() < self.booting_until:
            return  # still rebooting after AT+CFUN=1,1
        if not line.upper().startswith("AT"):
            self._final("ERROR")
            return
        if self.faults.busy:
            self.faults.busy -= 1
            self._final(self._cme(515))
            return
        body = line[2:]
        # "AT+CMEE=1;+CREG=2", "ATE0", "ATE0V1": split extended commands on ";"
        commands = [c for c in body.split(";") if c] or [""]
        answer: list[str] = []
        for command in commands:
            try:
                result = self._one(command)
            except _Refused as refused:
                self._emit_answer(answer)
                self._final(refused.final)
                return
            if result is None:  # AT+CMGS: the prompt was given; the PDU comes next
                return
            answer.extend(result)
        self._emit_answer(answer)
        self._final("OK")

    def _emit_answer(self, lines: list[str]) -> None:
        for i, line in enumerate(lines):
            self._out(f"\r\n{line}\r\n")
            if i == 0 and self.faults.urc_inside_next_answer:
                for urc in self.faults.urc_inside_next_answer:
                    self._urc(urc)
                self.faults.urc_inside_next_answer = []

    def _need_sim(self) -> None:
        if not self.pin_ok:
            raise _Refused(self._cme(11))

    def _one(self, command: str) -> list[str] | None:
        upper = command.upper()
        if upper in ("", "Z", "&F", "&F0", "Z0"):
            if upper.startswith("Z"):
                self.echo, self.cmee = True, 0
            return []
        if re.fullmatch(r"(E[01]|V1|Q0|&C1|&D2|X4|S0=0)+", upper):
            if "E0" in upper:
                self.echo = False
            elif "E1" in upper:
                self.echo = True
            return []
        if upper in ("I", "+GMI", "+CGMI"):
            return [self.manufacturer] if upper != "I" else [self.manufacturer, self.model]
        if upper in ("+CGMM", "+GMM"):
            return [self.model]
        if upper in ("+CGMR", "+GMR"):
            return ["Revision: LE20B04SIM7600G22"]
        if upper in ("+CGSN", "+GSN", "+CGSN=1"):
            return [self.imei]
        if upper == "+CIMI":
            self._need_sim()
            return ["001010123456789"]
        if upper.startswith("+CMEE"):
            if "?" in upper:
                return [f"+CMEE: {self.cmee}"]
            self.cmee = int(upper.split("=")[1] or 0)
            return []
        if upper == "+CPIN?":
            return ["+CPIN: READY" if self.pin_ok else "+CPIN: SIM PIN"]
        if upper.startswith("+CPIN="):
            if command.split("=", 1)[1].strip('"') != self.pin:
                raise _Refused(self._cme(16))
            self.pin_ok = True
            self._later(0.01, lambda: self._urc("+CPIN: READY"))
            return []
        if upper == "+CFUN?":
            return ["+CFUN: 1"]
        if upper.startswith("+CFUN="):
            if upper.replace(" ", "") == "+CFUN=1,1":
                self._reset_state()
                self.booting_until = time.monotonic() + 0.3
                self._later(0.35, lambda: self._urc("RDY"))
            return []
        if upper == "+CSQ":
            return [f"+CSQ: {self.csq},99"]
        if upper.startswith(("+CREG", "+CGREG", "+CEREG")):
            name = upper.split("?")[0].split("=")[0]
            if "?" in upper:
                return [f"{name}: 0,{1 if self.pin_ok else 0}"]
            return []
        if upper == "+COPS?":
            self._need_sim()
            return [f'+COPS: 0,0,"{self.operator}",7']
        if upper.startswith("+CMGF"):
            if "?" in upper:
                return [f"+CMGF: {self.cmgf}"]
            if upper.endswith("=1"):
                self.cmgf = 1
            return []
        if upper.startswith("+CSCS"):
            return ['+CSCS: "GSM"'] if "?" in upper else []
        if upper.startswith("+CSCA"):
            self._need_sim()
            if "?" in upper:
                return [f'+CSCA: "{self.smsc}",145']
            self.smsc = command.split("=", 1)[1].split(",")[0].strip('"')
            return []
        if upper.startswith("+CPMS"):
            return self._cpms(upper)
        if upper.startswith("+CNMI"):
            if "?" in upper:
                return ["+CNMI: " + ",".join(map(str, self.cnmi))]
            values = [int(v or 0) for v in upper.split("=")[1].split(",")]
            self.cnmi = tuple((values + [0] * 5)[:5])  # type: ignore[assignment]
            return []
        if upper.startswith(("+CLIP", "+CRC", "+CVHU", "+CSMP", "+CLAC", "+CNMA", "+CSDH",
                             "+CRSM", "+CGDCONT")):
            return []
        if upper.startswith("+CMGS="):
            self._need_sim()
            self._pdu_for = int(upper.split("=")[1])
            if self.faults.no_prompt:
                self.faults.no_prompt -= 1
                return None
            self._out("\r\n> ")
            return None
        if upper.startswith("+CMGR="):
            self._need_sim()
            index = int(upper.split("=")[1])
            slot = self.storage[self.cpms[0]].get(index)
            if slot is None:
                raise _Refused(self._cms(321))
            stat, hex_pdu = slot
            if stat == 0:
                self.storage[self.cpms[0]][index] = (1, hex_pdu)
            return [f"+CMGR: {stat},,{pdu.tpdu_length(hex_pdu)}", hex_pdu]
        if upper.startswith("+CMGL"):
            self._need_sim()
            want = int(upper.split("=")[1]) if "=" in upper else 0
            lines = []
            slots = self.storage[self.cpms[0]]
            for index in sorted(slots):
                stat, hex_pdu = slots[index]
                if want in (4, stat):
                    lines += [f"+CMGL: {index},{stat},,{pdu.tpdu_length(hex_pdu)}", hex_pdu]
                    if stat == 0:
                        slots[index] = (1, hex_pdu)
            return lines
        if upper.startswith("+CMGD="):
            self._need_sim()
            args = upper.split("=")[1].split(",")
            slots = self.storage[self.cpms[0]]
            if len(args) > 1 and int(args[1]) == 4:
                slots.clear()
            elif slots.pop(int(args[0]), None) is None and int(args[0]) not in range(0, 255):
                raise _Refused(self._cms(321))
            return []
        raise _Refused(self._cme(4) if self.cmee else "ERROR")

    def _cpms(self, upper: str) -> list[str]:
        if upper in ("+CPMS=?",):
            return ['+CPMS: ("SM","ME","SR"),("SM","ME","SR"),("SM","ME")']
        if "?" not in upper:
            mems = [m.strip().strip('"') for m in upper.split("=")[1].split(",")]
            for i, mem in enumerate(mems[:3]):
                if mem not in self.storage:
                    raise _Refused(self._cms(302 if mem else 321))
                self.cpms[i] = mem
        if "?" in upper:
            return ["+CPMS: " + ",".join(
                f'"{m}",{len(self.storage[m])},{self.capacity[m]}' for m in self.cpms)]
        return ["+CPMS: " + ",".join(f"{len(self.storage[m])},{self.capacity[m]}"
                                     for m in self.cpms)]

    def _take_pdu(self, hex_pdu: str, length: int) -> None:
        try:
            raw = bytes.fromhex(hex_pdu)
            valid = len(raw) - 1 - raw[0] == length
        except (ValueError, IndexError):
            valid = False
        if not valid:
            self._final(self._cms(304))
            return
        decoded = _submit_fields(raw)
        destination = decoded.destination
        code = self.faults.cms_error_for.get(destination)
        delay = self.faults.network_delay
        if code is not None:
            self._final(self._cms(code), delay)
            return
        mr = next(self._mr) % 256
        self.sent.append(SentSms(hex_pdu, mr, destination, time.time()))

        def _network() -> None:
            self._out(f"\r\n+CMGS: {mr}\r\n")
            self._final("OK")
            if decoded.wants_report and self.faults.send_reports:
                status = self.faults.report_status.get(destination, 0)
                self._later(self.faults.report_delay,
                            lambda: self.status_report(mr, destination, status))

        if delay:
            self._later(delay, _network)
        else:
            _network()


class _Refused(Exception):
    def __init__(self, final: str) -> None:
        self.final = final


@dataclass(frozen=True)
class _Submit:
    destination: str
    wants_report: bool


def _submit_fields(raw: bytes) -> _Submit:
    at = 1 + raw[0]
    first = raw[at]
    digits, toa = raw[at + 2], raw[at + 3]
    semi = raw[at + 4: at + 4 + (digits + 1) // 2].hex()
    number = "".join(semi[i + 1] + semi[i] for i in range(0, len(semi), 2))[:digits]
    return _Submit(("+" if toa & 0x70 == 0x10 else "") + number, bool(first & 0x20))


def main() -> None:
    """`python -m agent.lab.modem_emulator LINK`: a modem on LINK until Ctrl-C (by hand)."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("link", help="path of the symlink to create, e.g. /tmp/ttyMODEM")
    parser.add_argument("--pin", default="")
    args = parser.parse_args()
    with ModemEmulator(args.link, pin=args.pin) as modem:
        print(f"modem emulator on {modem.link} -> {modem.port}; Ctrl-C stops it", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
