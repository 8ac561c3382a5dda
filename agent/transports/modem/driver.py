"""The modem driver: one task owns the serial port and keeps the modem working for years.

What goes wrong with USB modems in the field, and what this does about it:

* the port is renamed when the modem re-enumerates (ttyUSB0 → ttyUSB3): it is
  found by a stable name or a glob (`/dev/serial/by-id/usb-*-if00-port0`) every
  time the link is (re)opened;
* the modem vanishes (unplugged, brown-out on a Pi) or stops answering: the
  supervisor re-opens it; a heartbeat (`AT+CSQ`) notices silence and resets it
  with `AT+CFUN=1,1` before re-opening;
* notifications get lost (during an outage, a reset, a busy moment): the SIM is
  swept with `AT+CMGL=4` after every (re)initialisation and periodically, so an
  SMS can never sit unread until storage fills;
* an SMS is deleted from the SIM only after `on_deliver` returned, i.e. after it
  was committed to the database; reading it twice is harmless (the PDU's hash
  makes it idempotent downstream).

The driver knows nothing of the database: `on_deliver(Deliver)` and
`on_report(StatusReport)` are awaited, and must raise if they could not store.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import itertools
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from agent.config import GsmTransportConfig
from agent.transports.modem import pdu
from agent.transports.modem.at import (
    AtError,
    AtLink,
    AtTimeout,
    LinkClosed,
    Urc,
    finished,
)

log = logging.getLogger(__name__)


class ModemProblem(Exception):
    """The modem cannot be used until a person acts (SIM PIN wrong or missing, no SIM…)."""


class ModemUnavailable(Exception):
    """Not connected or not initialised right now; it may come back by itself."""


@dataclass
class ModemInfo:
    """What `textback doctor` and the log show about the modem."""

    port: str = ""
    device: str = ""  # what the stable name points at, e.g. /dev/ttyUSB2
    manufacturer: str = ""
    model: str = ""
    imei: str = ""
    sim: str = ""  # READY, SIM PIN, SIM PUK…
    operator: str = ""
    registration: str = ""  # home, roaming, searching, denied, not registered
    signal_dbm: int | None = None
    smsc: str = ""
    storage: dict[str, tuple[int, int]] = field(default_factory=dict)  # mem -> used, total


REGISTRATION = {"0": "not registered", "1": "home", "2": "searching", "3": "denied",
                "4": "unknown", "5": "roaming"}


def find_port(pattern: str) -> str | None:
    """The first existing path matching `pattern` (a path or a glob)."""
    if any(ch in pattern for ch in "*?["):
        matches = sorted(glob.glob(pattern))
        return matches[0] if matches else None
    return pattern if os.path.exists(pattern) else None


def csq_dbm(rssi: int) -> int | None:
    """`+CSQ: <rssi>` → dBm (0 → -113 dBm, 31 → -51 dBm, 99 → unknown)."""
    return None if rssi == 99 or not 0 <= rssi <= 31 else -113 + 2 * rssi


class Modem:
    """A GSM modem behind a serial port; `run()` is its one owner task."""

    def __init__(self, config: GsmTransportConfig, *,
                 on_deliver: Callable[[pdu.Deliver], Awaitable[None]],
                 on_report: Callable[[pdu.StatusReport], Awaitable[None]]) -> None:
        self.config = config
        self.on_deliver = on_deliver
        self.on_report = on_report
        self.info = ModemInfo()
        self.problem: str | None = None  # a person must act; shown by doctor and the log
        self.ready = asyncio.Event()
        self.connected_count = 0  # how many times the link came up (tests, metrics)
        self._link: AtLink | None = None
        self._urcs: asyncio.Queue[Urc] = asyncio.Queue()
        self._read_memory = "SM"
        self._receive_memory = "SM"
        self._report_memory: str | None = None
        self._pin_refused = False
        # a storage switch (AT+CPMS), the read, the store and the delete stay together:
        # the URC task and the sweep both read; sends never touch storage
        self._storage_lock = asyncio.Lock()

    # -- the public side ---------------------------------------------------------------
    @property
    def available(self) -> bool:
        return self.ready.is_set()

    def encode(self, number: str, text: str, reference: int) -> list[pdu.SubmitPart]:
        return pdu.encode_submit(number, text, reference=reference, smsc=self.config.smsc,
                                 status_report=self.config.delivery_reports)

    async def send_part(self, part: pdu.SubmitPart) -> int:
        """Submit one part; its TP-MR. Raises AtError (`+CMS ERROR`), AtTimeout (with
        `sent=True` when the PDU went out unanswered), or ModemUnavailable."""
        link = self._link
        if link is None or not self.ready.is_set():
            raise ModemUnavailable(self.problem or "the modem is not connected")
        try:
            lines = await link.submit(f"AT+CMGS={part.tpdu_length}", part.hex,
                                      prompt_timeout=self.config.command_timeout,
                                      timeout=self.config.send_timeout)
        except LinkClosed as exc:
            raise ModemUnavailable(str(exc)) from None
        for line in lines:
            if line.startswith("+CMGS:"):
                return int(line.split(":", 1)[1].split(",")[0])
        raise AtError(f"AT+CMGS={part.tpdu_length}", "OK without +CMGS: <mr>")

    async def command(self, command: str, timeout: float | None = None) -> list[str]:
        link = self._link
        if link is None:
            raise ModemUnavailable("the modem is not connected")
        return await link.command(command, timeout=timeout or self.config.command_timeout)

    # -- the supervisor ----------------------------------------------------------------
    async def run(self) -> None:
        """Open, initialise, sweep, watch; on any failure close and start over. Never returns."""
        import serial
        import serial_asyncio_fast

        missing_logged = False
        while True:
            path = find_port(self.config.port)
            if path is None:
                if not missing_logged:
                    log.warning("no modem at %s; waiting for one (see `textback doctor`)",
                                self.config.port)
                    missing_logged = True
                await asyncio.sleep(self.config.reconnect_delay)
                continue
            missing_logged = False
            try:
                reader, writer = await serial_asyncio_fast.open_serial_connection(
                    url=path, baudrate=self.config.baudrate, exclusive=True)
            except (OSError, serial.SerialException) as exc:
                log.warning("cannot open the modem at %s: %s", path, exc)
                await asyncio.sleep(self.config.reconnect_delay)
                continue
            self.info = ModemInfo(port=path, device=os.path.realpath(path))
            link = AtLink(reader, writer, self._urcs.put_nowait)
            self._link = link
            worker = asyncio.get_running_loop().create_task(self._process_urcs(link),
                                                           name="modem-urcs")
            try:
                await self._initialise(link)
                self.problem = None
                self.connected_count += 1
                self.ready.set()
                log.info("modem ready on %s (%s): %s %s, %s, %s, signal %s dBm", path,
                         self.info.device, self.info.manufacturer, self.info.model,
                         self.info.operator or "no operator", self.info.registration,
                         self.info.signal_dbm)
                await self.sweep()
                await self._watch(link)
            except ModemProblem as exc:
                self.problem = str(exc)
                log.error("modem on %s: %s", path, exc)
            except AtTimeout as exc:
                log.warning("modem on %s stopped answering: %s", path, exc)
                await self._reset(link)
            except (LinkClosed, AtError, OSError, ModemUnavailable) as exc:
                log.warning("modem on %s lost: %s; reconnecting", path, exc)
            except Exception:  # never let one surprise end the port's only owner
                log.exception("modem on %s: unexpected failure; reconnecting", path)
            finally:
                self.ready.clear()
                self._link = None
                worker.cancel()
                await link.close()
                await finished(worker)
            delay = self.config.reconnect_delay * (10 if self.problem else 1)
            await asyncio.sleep(delay)

    async def _initialise(self, link: AtLink) -> None:
        timeout = self.config.command_timeout
        for attempt in range(10):  # a modem still booting says nothing at all
            try:
                await link.command("ATE0", timeout=min(timeout, 1.0))
                break
            except (AtTimeout, AtError):
                if attempt == 9:
                    raise
        await link.command("AT+CMEE=1", timeout=timeout)
        await self._unlock_sim(link)
        await link.command("AT+CMGF=0", timeout=timeout)
        self._receive_memory = await self._storage(link)
        report_ds = 2 if self.config.delivery_reports else 0
        for cnmi in (f"AT+CNMI=2,1,0,{report_ds},0", f"AT+CNMI=1,1,0,{report_ds},0",
                     "AT+CNMI=2,1,0,1,0", "AT+CNMI=2,1,0,0,0"):
            try:
                await link.command(cnmi, timeout=timeout)
                break
            except AtError:
                continue
        if self.config.smsc:
            await link.command(f'AT+CSCA="{self.config.smsc}",145', timeout=timeout)
        await self.refresh_info(link)

    async def _unlock_sim(self, link: AtLink) -> None:
        for _ in range(20):
            try:
                state = (await link.command("AT+CPIN?"))[0].split(":", 1)[1].strip()
            except AtError as exc:
                if exc.cme in ("10", "13", "SIM not inserted", "SIM failure"):
                    raise ModemProblem("no SIM card (or it is not seated)") from None
                raise
            self.info.sim = state
            if state == "READY":
                return
            if state != "SIM PIN":
                raise ModemProblem(f"the SIM says {state}; it needs a person (a PUK, or "
                                   "another SIM)")
            if not self.config.pin:
                raise ModemProblem("the SIM needs a PIN: set [sms.gsm] pin, or remove the "
                                   "PIN with a phone")
            if self._pin_refused:
                raise ModemProblem("the SIM refused the configured PIN; not trying again "
                                   "(three wrong PINs lock it): fix [sms.gsm] pin and restart")
            try:
                await link.command(f'AT+CPIN="{self.config.pin}"')
            except AtError as exc:
                if exc.cme in ("16", "incorrect password"):
                    self._pin_refused = True
                    raise ModemProblem("the SIM refused the configured PIN ([sms.gsm] pin); "
                                       "not retried, three wrong PINs lock the SIM") from None
                raise
            log.info("SIM unlocked with the configured PIN")
            await asyncio.sleep(0.2)
        raise ModemProblem("the SIM did not become ready")

    async def _storage(self, link: AtLink) -> str:
        """SMS and reports into SIM storage (`SM`), else the modem's (`ME`)."""
        for memory in ("SM", "ME"):
            try:
                await link.command(f'AT+CPMS="{memory}","{memory}","{memory}"')
            except AtError:
                continue
            self._read_memory = memory
            try:
                await link.command('AT+CPMS="SR"')
                self._report_memory = "SR"
                await link.command(f'AT+CPMS="{memory}"')
            except AtError:
                self._report_memory = None
            return memory
        raise ModemProblem("the modem accepts neither SIM (SM) nor modem (ME) SMS storage")

    async def refresh_info(self, link: AtLink | None = None) -> ModemInfo:
        """Model, IMEI, operator, registration, signal, SMSC, storage: best effort."""
        link = link or self._link
        if link is None:
            raise ModemUnavailable("the modem is not connected")

        async def ask(command: str) -> str:
            try:
                lines = await link.command(command, timeout=self.config.command_timeout)
            except AtError:
                return ""
            return lines[0] if lines else ""

        info = self.info
        info.manufacturer = await ask("AT+CGMI") or info.manufacturer
        info.model = await ask("AT+CGMM") or info.model
        info.imei = (await ask("AT+CGSN")).strip() or info.imei
        cops = await ask("AT+COPS?")
        info.operator = cops.split(",")[2].strip('"') if cops.count(",") >= 2 else ""
        creg = await ask("AT+CREG?")
        info.registration = REGISTRATION.get(creg.split(",")[-1].strip(), "") if creg else ""
        csq = await ask("AT+CSQ")
        if csq:
            info.signal_dbm = csq_dbm(int(csq.split(":")[1].split(",")[0]))
        csca = await ask("AT+CSCA?")
        info.smsc = csca.split('"')[1] if csca.count('"') >= 2 else ""
        cpms = await ask("AT+CPMS?")
        if cpms:
            fields = [f.strip().strip('"') for f in cpms.split(":", 1)[1].split(",")]
            info.storage = {fields[i]: (int(fields[i + 1]), int(fields[i + 2]))
                            for i in range(0, len(fields) - 2, 3)}
        return info

    async def _watch(self, link: AtLink) -> None:
        """Heartbeat and periodic sweep until the link closes or the modem goes silent."""
        next_sweep = time.monotonic() + self.config.sweep_interval
        silent = 0
        while not link.closed.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(link.closed.wait(), self.config.heartbeat)
                break
            try:
                csq = await link.command("AT+CSQ", timeout=self.config.command_timeout)
                silent = 0
                if csq:
                    self.info.signal_dbm = csq_dbm(int(csq[0].split(":")[1].split(",")[0]))
            except AtTimeout:
                silent += 1
                log.warning("modem did not answer the heartbeat (%d in a row)", silent)
                if silent >= 2:
                    await self._reset(link)
                    return
                continue
            if time.monotonic() >= next_sweep:
                await self.sweep()
                next_sweep = time.monotonic() + self.config.sweep_interval
        raise LinkClosed("the modem's port closed")

    async def _reset(self, link: AtLink) -> None:
        """A modem that stopped answering: `AT+CFUN=1,1` (a full restart), then re-open."""
        log.warning("modem stopped answering: resetting it (AT+CFUN=1,1) and re-opening")
        self.ready.clear()
        with contextlib.suppress(AtTimeout, AtError, LinkClosed):
            await link.command("AT+CFUN=1,1", timeout=2.0)

    # -- receiving ---------------------------------------------------------------------
    async def _process_urcs(self, link: AtLink) -> None:
        while True:
            urc = await self._urcs.get()
            try:
                await self._handle_urc(link, urc)
            except (AtTimeout, AtError, pdu.PduError) as exc:
                log.warning("%s not handled now (%s); the next SIM sweep picks it up",
                            urc.line, exc)
            except LinkClosed:
                self._urcs.put_nowait(urc)  # for the next link; the sweep also finds it
                return
            except Exception:
                log.exception("storing what %s announced failed; left on the SIM for the "
                              "next sweep", urc.line)

    async def _handle_urc(self, link: AtLink, urc: Urc) -> None:
        if urc.name in ("+CMTI", "+CDSI"):
            memory, index = urc.args[0], int(urc.args[1])
            await self._read_and_delete(link, memory, index)
        elif urc.name in ("+CMT", "+CDS") and urc.pdu:
            await self._dispatch(pdu.decode(urc.pdu))
            with contextlib.suppress(AtError, AtTimeout):  # phase 2+ modems want an ack
                await link.command("AT+CNMA", timeout=self.config.command_timeout)
        elif urc.name in ("RING", "+CLIP", "+CRING"):
            log.info("the modem's SIM is being called (%s); calls go to the PBX, not here",
                     urc.line)
        else:
            log.debug("URC %s", urc.line)

    async def _select(self, link: AtLink, memory: str) -> None:
        if memory != self._read_memory:
            await link.command(f'AT+CPMS="{memory}"')
            self._read_memory = memory

    async def _read_and_delete(self, link: AtLink, memory: str, index: int) -> None:
        async with self._storage_lock:  # a sweep may be reading the same slots
            await self._select(link, memory)
            try:
                lines = await link.command(f"AT+CMGR={index}")
            except AtError as exc:
                if exc.cms in ("321", "invalid memory index"):
                    return  # empty: a sweep stored and deleted it already
                raise
            hex_pdu = next((ln for ln in lines[1:] if ln and not ln.startswith("+")), None)
            if hex_pdu is None:
                return
            await self._dispatch(pdu.decode(hex_pdu))
            await link.command(f"AT+CMGD={index}")

    async def _dispatch(self, decoded: pdu.Deliver | pdu.StatusReport) -> None:
        if isinstance(decoded, pdu.StatusReport):
            await self.on_report(decoded)
        else:
            await self.on_deliver(decoded)

    async def sweep(self) -> int:
        """Read, store and delete everything on the SIM (`AT+CMGL=4`); how many were found."""
        link = self._link
        if link is None:
            return 0
        found = 0
        memories = [self._receive_memory] + ([self._report_memory]
                                             if self._report_memory else [])
        async with self._storage_lock:  # notifications wait: no slot is read twice
            for memory in memories:
                await self._select(link, memory)
                lines = await link.command("AT+CMGL=4",
                                           timeout=self.config.command_timeout * 4)
                entries = [(int(head.split(":")[1].split(",")[0]), body)
                           for head, body in itertools.pairwise(lines)
                           if head.startswith("+CMGL:")]
                for index, hex_pdu in entries:
                    found += 1
                    try:
                        await self._dispatch(pdu.decode(hex_pdu))
                    except pdu.PduError as exc:
                        log.error("SIM %s slot %d: %s; left there", memory, index, exc)
                        continue
                    except Exception as exc:  # the database, most likely: try next sweep
                        log.error("SIM %s slot %d not stored (%s); left there", memory,
                                  index, exc)
                        continue
                    await link.command(f"AT+CMGD={index}")
        if found:
            log.info("SIM sweep: %d stored message(s) read and cleared", found)
        return found
