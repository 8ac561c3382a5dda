"""SIPp phones and callers: the scenario files, the processes, a call in progress."""

from __future__ import annotations

import contextlib
import logging
import shutil
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from agent.lab.children import die_with_parent
from agent.lab.errors import LabError
from agent.lab.files import SIPP_TEMPLATE_DIR
from agent.lab.ports import LOCALHOST
from agent.lab.render import render_template

log = logging.getLogger(__name__)

ANONYMOUS_FROM = '"Anonymous" <sip:anonymous@anonymous.invalid>'

Scenario = Literal["uac_call", "uac_cancel"]
PhoneBehaviour = Literal["ring", "answer", "busy"]


def sip_display_name(name: str) -> str:
    """Quote a caller name as a SIP display name (RFC 3261 quoted-string)."""
    escaped = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def check_sipp_safe(value: str, what: str) -> None:
    """SIPp reads ``[word]`` as a keyword and the file is XML CDATA: refuse what breaks it."""
    bad = [c for c in ("[", "]", "\r", "\n") if c in value]
    if bad or "]]>" in value:
        raise LabError(f"{what} {value!r} contains characters SIPp cannot send: {bad}")


def from_header(caller_id: str, caller_name: str | None, *, anonymous: bool,
                port: int) -> str:
    """The caller's ``From`` header: display name and URI, or the usual anonymous one."""
    if anonymous:
        return ANONYMOUS_FROM
    check_sipp_safe(caller_id, "caller ID")
    uri = f"<sip:{caller_id}@{LOCALHOST}:{port}>"
    if not caller_name:
        return uri
    check_sipp_safe(caller_name, "caller name")
    return f"{sip_display_name(caller_name)} {uri}"


def find_sipp() -> str:
    """Path of the ``sipp`` binary, or a clear instruction to install it."""
    path = shutil.which("sipp")
    if path is None:
        raise LabError("sipp not found; install it with: sudo apt-get install sip-tester")
    return path


def write_scenario(template: str, values: Mapping[str, object], path: Path) -> Path:
    """Render the SIPp scenario template ``<template>.xml`` into ``path``."""
    text = render_template((SIPP_TEMPLATE_DIR / f"{template}.xml").read_text(), values)
    path.write_text(text, encoding="utf-8")
    return path


@dataclass
class SippProcess:
    """One running SIPp instance (a phone or a caller)."""

    role: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    scenario_path: Path

    def wait(self, timeout: float | None = None) -> int:
        return self.proc.wait(timeout=timeout)

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    def stop(self) -> None:
        """End SIPp if it is still running (SIGTERM by PID, then SIGKILL)."""
        if self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=2)

    def output(self) -> str:
        """SIPp's error log if it wrote one (the useful part), else its screen output."""
        for path in (self.log_path.with_suffix(".errors"), self.log_path):
            with contextlib.suppress(OSError):
                text = path.read_text(errors="replace")
                if text.strip():
                    return text
        return ""


@dataclass
class LabCall:
    """A call in progress: the caller UAC and the phone UASs that take part."""

    exten: str
    caller: SippProcess
    phones: list[SippProcess] = field(default_factory=list)
    started: float = field(default_factory=time.time)

    def wait(self, timeout: float = 60.0, *, phone_grace: float = 1.5) -> int:
        """Wait for the caller to finish, give the phones a moment, stop leftovers.

        Returns the caller's SIPp exit code (0 = the scenario ran as written, which for
        ``uac_call`` includes a call rejected with 486/480...).
        """
        try:
            rc = self.caller.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise LabError(
                f"caller for {self.exten} still running after {timeout} s:\n"
                + self.caller.output()[-2000:]
            ) from None
        deadline = time.monotonic() + phone_grace
        for phone in self.phones:
            with contextlib.suppress(subprocess.TimeoutExpired):
                phone.wait(max(0.0, deadline - time.monotonic()))
            phone.stop()
        if rc != 0:
            log.warning("caller SIPp for %s exited %s:\n%s", self.exten, rc,
                        self.caller.output()[-1500:])
        for phone in self.phones:
            if phone.returncode not in (0, None):
                log.info("phone %s SIPp exited %s", phone.role, phone.returncode)
        return rc

    def stop(self) -> None:
        self.caller.stop()
        for phone in self.phones:
            phone.stop()


def spawn_sipp(role: str, scenario: Path, args: list[str], cwd: Path) -> SippProcess:
    """Start SIPp on ``scenario`` with ``args``; its output and errors go beside it."""
    log_path = scenario.with_suffix(f".{role}.log")
    err_path = scenario.with_suffix(f".{role}.errors")
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            [find_sipp(), *args, "-sf", str(scenario), "-trace_err", "-error_file",
             str(err_path)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            cwd=cwd, start_new_session=True, preexec_fn=die_with_parent,
        )
    return SippProcess(role, proc, log_path, scenario)
