"""The AT command link: one command in flight, unsolicited results never lost.

A modem talks on one byte stream in two voices: answers to our commands and
unsolicited result codes (URCs: `+CMTI` a new SMS, `+CDSI`/`+CDS` a status
report, `RING`…) that may arrive at any moment, also between the lines of an
answer. The reader task here sorts every line as it arrives: a URC is handed to
`on_urc` at once (by prefix, even mid-command), everything else belongs to the
command in flight. That is exactly where python-gsmmodem-new loses messages.

`AT+CMGS=<n>` → `> ` → PDU + Ctrl-Z is one step under the same lock as every
other command, so nothing can be written between the command and its PDU.

After a timeout the modem may still answer; a late `OK` must not be read as the
answer to the next command. So a timed-out link is marked dirty and the next
command first re-synchronises: `AT` until one `OK` is followed by silence.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

# URCs by prefix; the two-line ones carry a PDU on the following line
URC_PREFIXES = ("+CMTI:", "+CMT:", "+CDSI:", "+CDS:", "+CBM:", "RING", "+CLIP:", "+CRING:",
                "+CREG:", "+CGREG:", "+CEREG:", "+CUSD:", "NO CARRIER", "RDY", "+CPIN:",
                "+CFUN:", "SMS DONE", "PB DONE", "^RSSI:", "^MODE:", "^BOOT:", "+QIND:")
TWO_LINE_URCS = ("+CMT:", "+CDS:", "+CBM:")
FINAL_OK = "OK"
_ERROR = re.compile(r"^(ERROR|\+CME ERROR: ?(.*)|\+CMS ERROR: ?(.*)|COMMAND NOT SUPPORT)$")
BUSY_CME = {"14", "515", "SIM busy"}  # "SIM busy", "please wait, init in progress"
CTRL_Z, ESC = b"\x1a", b"\x1b"


class LinkClosed(Exception):
    """The serial port went away (USB modem unplugged, re-enumerated, reset)."""


class AtTimeout(Exception):
    """No final result in time; the link will re-synchronise before the next command."""


class AtError(Exception):
    """The modem answered ERROR, `+CME ERROR: <n>` or `+CMS ERROR: <n>`."""

    def __init__(self, command: str, final: str) -> None:
        super().__init__(f"{command}: {final}")
        self.command = command
        self.final = final
        match = _ERROR.match(final)
        self.cme = match.group(2) if match else None
        self.cms = match.group(3) if match else None


@dataclass(frozen=True, slots=True)
class Urc:
    line: str  # e.g. '+CMTI: "SM",3'
    pdu: str | None = None  # the second line of +CMT / +CDS

    @property
    def name(self) -> str:
        return self.line.split(":", 1)[0] if ":" in self.line else self.line

    @property
    def args(self) -> list[str]:
        rest = self.line.split(":", 1)[1] if ":" in self.line else ""
        return [a.strip().strip('"') for a in rest.split(",")]


class _Pending:
    def __init__(self, command: str) -> None:
        self.command = command
        name = command[2:].split("=", 1)[0].split("?", 1)[0]  # "AT+CMGR=3" -> "+CMGR"
        self.prefix = name + ":" if name.startswith(("+", "^")) else None
        self.lines: list[str] = []
        loop = asyncio.get_running_loop()
        self.final: asyncio.Future[str] = loop.create_future()
        self.prompt: asyncio.Future[None] = loop.create_future()


class AtLink:
    """One open serial port spoken to in AT commands; see the module docstring."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 on_urc: Callable[[Urc], None], *, quiet: float = 0.15) -> None:
        self.reader = reader
        self.writer = writer
        self.on_urc = on_urc
        self.quiet = quiet
        self.lock = asyncio.Lock()
        self.closed = asyncio.Event()
        self.last_heard = time.monotonic()
        self._pending: _Pending | None = None
        self._urc_waiting_pdu: str | None = None
        self._stray_finals = 0
        self._dirty = False
        self._task = asyncio.get_running_loop().create_task(self._read(), name="modem-reader")

    # -- reading -----------------------------------------------------------------------
    async def _read(self) -> None:
        buffer = b""
        try:
            while True:
                chunk = await self.reader.read(4096)
                if not chunk:
                    raise LinkClosed("end of file")
                self.last_heard = time.monotonic()
                buffer = self._feed(buffer + chunk)
        except Exception as exc:  # pyserial's SerialException, OSError, LinkClosed
            log.info("modem link closed: %s", exc or type(exc).__name__)
        finally:
            self._close_pending(LinkClosed("the modem's port closed"))
            self.closed.set()

    def _feed(self, buffer: bytes) -> bytes:
        """Consume whole lines (and a bare `> ` prompt); return the unfinished rest."""
        while True:
            buffer = buffer.lstrip(b"\r\n")
            if buffer.startswith(b"> ") and self._pending and not self._pending.prompt.done():
                self._pending.prompt.set_result(None)
                buffer = buffer[2:]
                continue
            ends = [i for i in (buffer.find(b"\r"), buffer.find(b"\n")) if i >= 0]
            if not ends:
                return buffer
            end = min(ends)
            line, buffer = buffer[:end].decode("latin-1").strip(), buffer[end + 1:]
            if line:
                self._line(line)

    def _line(self, line: str) -> None:
        if self._urc_waiting_pdu is not None:
            head, self._urc_waiting_pdu = self._urc_waiting_pdu, None
            self._emit(Urc(head, line))
            return
        pending = self._pending
        if line.startswith(URC_PREFIXES) and not (pending and pending.prefix
                                                   and line.startswith(pending.prefix)):
            if line.startswith(TWO_LINE_URCS):
                self._urc_waiting_pdu = line
            else:
                self._emit(Urc(line))
            return
        if pending is None:
            if line == FINAL_OK or _ERROR.match(line):
                self._stray_finals += 1
            log.debug("modem said %r with no command in flight; ignored", line)
            return
        if line == pending.command or (line.startswith("AT") and not pending.lines):
            return  # echo (before ATE0 took effect)
        if line == FINAL_OK or _ERROR.match(line):
            if not pending.final.done():
                pending.final.set_result(line)
            self._pending = None
            return
        pending.lines.append(line)

    def _emit(self, urc: Urc) -> None:
        log.debug("URC %s", urc.line)
        try:
            self.on_urc(urc)
        except Exception:
            log.exception("handling %s failed", urc.line)

    def _close_pending(self, exc: Exception) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            for future in (pending.final, pending.prompt):
                if not future.done():
                    future.set_exception(exc)
                    future.exception()  # retrieved: nobody may be waiting any more

    # -- writing -----------------------------------------------------------------------
    def _write(self, data: bytes) -> None:
        if self.closed.is_set():
            raise LinkClosed("the modem's port closed")
        self.writer.write(data)

    async def _exchange(self, command: str, timeout: float) -> list[str]:
        pending = _Pending(command)
        self._pending = pending
        self._write(command.encode("ascii") + b"\r")
        return await self._finish(pending, timeout)

    async def _finish(self, pending: _Pending, timeout: float) -> list[str]:
        try:
            final = await asyncio.wait_for(asyncio.shield(pending.final), timeout)
        except TimeoutError:
            if self._pending is pending:
                self._pending = None
            self._dirty = True
            raise AtTimeout(f"{pending.command}: no answer in {timeout:g} s") from None
        if final != FINAL_OK:
            raise AtError(pending.command, final)
        return pending.lines

    async def _resync(self) -> None:
        """`AT` until one `OK` arrives and then nothing else for `quiet` seconds."""
        for _ in range(4):
            strays = self._stray_finals
            try:
                await self._exchange("AT", 1.0)
            except (AtTimeout, AtError):
                continue
            await asyncio.sleep(self.quiet)
            if self._stray_finals == strays and self._pending is None:
                self._dirty = False
                log.info("modem link re-synchronised")
                return
        raise AtTimeout("the modem does not answer AT")

    async def command(self, command: str, *, timeout: float = 5.0,
                      busy_retries: int = 3) -> list[str]:
        """Run one command; its answer lines without the final `OK`.

        `+CME ERROR: 515`/`14` (modem or SIM still initialising) is retried after
        a short wait, a few times, rather than failing the caller.
        """
        for attempt in range(busy_retries + 1):
            async with self.lock:
                if self._dirty:
                    await self._resync()
                try:
                    return await self._exchange(command, timeout)
                except AtError as exc:
                    if exc.cme not in BUSY_CME or attempt == busy_retries:
                        raise
            await asyncio.sleep(0.3 * (attempt + 1))
        raise AssertionError("unreachable")

    async def submit(self, command: str, pdu: str, *, prompt_timeout: float = 5.0,
                     timeout: float = 60.0) -> list[str]:
        """`AT+CMGS=<n>`, wait for `> `, write the PDU and Ctrl-Z: one indivisible step.

        Raises `AtTimeout` with `sent=True` when the PDU went out but no answer
        came: the SMS may or may not have left, and must not be sent again.
        """
        async with self.lock:
            if self._dirty:
                await self._resync()
            pending = _Pending(command)
            self._pending = pending
            self._write(command.encode("ascii") + b"\r")
            waiters = {pending.prompt, pending.final}
            done, _ = await asyncio.wait(waiters, timeout=prompt_timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
            if pending.final in done:
                return await self._finish(pending, 0)  # an error instead of the prompt
            if not done:
                self._write(ESC)  # cancel: the modem must not take what follows as the PDU
                self._pending = None
                self._dirty = True
                raise AtTimeout(f"{command}: no '> ' prompt in {prompt_timeout:g} s")
            with contextlib.suppress(asyncio.CancelledError):
                pending.prompt.result()
            self._write(pdu.encode("ascii") + CTRL_Z)
            try:
                return await self._finish(pending, timeout)
            except AtTimeout as exc:
                exc.sent = True  # type: ignore[attr-defined]
                raise

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(Exception):
            await finished(self._task)
        with contextlib.suppress(Exception):
            self.writer.close()


async def finished(task: asyncio.Task[object]) -> None:
    """Wait for a task just cancelled. Its CancelledError is swallowed, but not one meant
    for the caller: swallowing that would leave the caller running after its own cancel
    (a stopped agent or test waiting for ever on the modem's task)."""
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
