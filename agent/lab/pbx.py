"""A real Asterisk PBX in a directory, for tests, ``make demo`` and benchmarks.

Why this exists: the agent's whole job is to interpret what a real Asterisk says on AMI
when real SIP calls fail in real ways (ring groups, Local channels, queues, pickups...).
Mocks of AMI would only encode our own assumptions, so the tests drive an actual
Asterisk 22 with SIPp phones instead.  :class:`LabPbx` renders the configuration
(:mod:`agent.lab.render`) into a run directory (own ports, own secrets, own spool), starts
the Asterisk that :mod:`agent.lab.fetch` unpacked, without root, places calls with SIPp
(:mod:`agent.lab.phones`), and hands out the trunk peer (:mod:`agent.lab.trunk`) and AMI
clients (:mod:`agent.lab.ami`).  The lab is standard library only, so it works before
the project's dependencies are installed.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import re
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Literal

from agent.lab.ami import AmiClient, AmiRecorder
from agent.lab.children import die_with_parent
from agent.lab.errors import LabError
from agent.lab.fetch import asterisk_argv, find_asterisk
from agent.lab.phones import (
    LabCall,
    PhoneBehaviour,
    Scenario,
    SippProcess,
    check_sipp_safe,
    from_header,
    spawn_sipp,
    write_scenario,
)
from agent.lab.ports import LOCALHOST, PortLayout, check_ports_free, ensure_ports_valid
from agent.lab.render import render_config, routing_agi
from agent.lab.trunk import TrunkPeer

log = logging.getLogger(__name__)

AMI_USER = "textback"
ADMIN_USER = "labadmin"
DEFAULT_CALLER_ID = "+15551230001"
DEFAULT_CALLER_NAME = "Alice Caller"

Endpoint = Literal["caller", "trunk", "desk", "desk2"]


class LabPbx:
    """One lab Asterisk: configuration, process, SIPp calls, AMI helpers.

    >>> with LabPbx(tmp_path, 25000) as lab:       # doctest: +SKIP
    ...     lab.call("+15550000100", from_trunk=True, phone="ring").wait()
    """

    def __init__(
        self,
        run_dir: Path,
        port_base: int,
        ami_secret: str | None = None,
        *,
        admin_secret: str | None = None,
        ring_seconds: int = 4,
        asterisk_fs: Path | None = None,
        textback_config: Path | None = None,
    ) -> None:
        ensure_ports_valid(port_base)
        self.run_dir = Path(run_dir).resolve()
        # what the routing AGI reads (Asterisk passes its environment on to AGI children);
        # by default a file that does not exist, so a developer's own config is never read
        # and routed calls take the dialplan's fallback
        self.textback_config = Path(textback_config or self.run_dir / "textback.toml")
        self.ports = PortLayout(port_base)
        self._ami_secret = ami_secret or secrets.token_urlsafe(18)
        self._admin_secret = admin_secret or secrets.token_urlsafe(18)
        self.ring_seconds = ring_seconds
        self._fs = asterisk_fs
        self._proc: subprocess.Popen[bytes] | None = None
        self._out: object | None = None
        self._caller_slots = itertools.cycle(self.ports.callers)
        self._trunk_slots = itertools.cycle(self.ports.trunk_calls)
        self._media_slots = itertools.cycle(self.ports.media)
        self._seq = itertools.count(1)

    # ----------------------------------------------------------------- properties
    @property
    def fs(self) -> Path:
        """The unpacked Asterisk tree (fetched on first use)."""
        if self._fs is None:
            self._fs = find_asterisk()
        return self._fs

    @property
    def etc_dir(self) -> Path:
        return self.run_dir / "etc"

    @property
    def log_dir(self) -> Path:
        return self.run_dir / "log"

    @property
    def ami_host(self) -> str:
        return LOCALHOST

    @property
    def ami_port(self) -> int:
        return self.ports.ami

    @property
    def ami_user(self) -> str:
        """The least-privilege account the agent uses."""
        return AMI_USER

    @property
    def ami_secret(self) -> str:
        return self._ami_secret

    @property
    def admin_user(self) -> str:
        """Read/write-all account for test control and transcript recording."""
        return ADMIN_USER

    @property
    def admin_secret(self) -> str:
        return self._admin_secret

    @property
    def sip_host(self) -> str:
        return LOCALHOST

    @property
    def sip_port(self) -> int:
        return self.ports.sip

    @property
    def trunk_port(self) -> int:
        """Where the trunk peer listens for SIP MESSAGE (see :class:`TrunkPeer`)."""
        return self.ports.trunk

    @property
    def caller_port(self) -> int:
        """First of the caller UAC ports (``caller`` endpoint)."""
        return self.ports.callers[0]

    @property
    def desk_port(self) -> int:
        return self.ports.desk

    @property
    def desk2_port(self) -> int:
        return self.ports.desk2

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def messages_log(self) -> Path:
        return self.log_dir / "messages.log"

    @property
    def cdr_csv(self) -> Path:
        """Asterisk's CDR file (cdr_csv: UTC times, uniqueid and linkedid columns)."""
        return self.log_dir / "cdr-csv" / "Master.csv"

    # ----------------------------------------------------------------- lifecycle
    def template_values(self) -> dict[str, object]:
        """All ``LAB_*`` values the configuration templates use."""
        values: dict[str, object] = {
            "LAB_FS": self.fs,
            "LAB_ETC_DIR": self.etc_dir,
            "LAB_VAR_DIR": self.run_dir / "var",
            "LAB_RUN_DIR": self.run_dir / "run",
            "LAB_LOG_DIR": self.log_dir,
            "LAB_SIP_PORT": self.ports.sip,
            "LAB_AMI_PORT": self.ports.ami,
            "LAB_DESK_PORT": self.ports.desk,
            "LAB_DESK2_PORT": self.ports.desk2,
            "LAB_TRUNK_PORT": self.ports.trunk,
            "LAB_RTP_START": self.ports.rtp_start,
            "LAB_RTP_END": self.ports.rtp_end,
            "LAB_AMI_SECRET": self._ami_secret,
            "LAB_ADMIN_SECRET": self._admin_secret,
            "LAB_RING_SECONDS": self.ring_seconds,
            "LAB_TEXTBACK_AGI": self.routing_agi,
        }
        for i, port in enumerate(self.ports.callers):
            values[f"LAB_CALLER_PORT_{i}"] = port
        for i, port in enumerate(self.ports.trunk_calls):
            values[f"LAB_TRUNK_CALL_PORT_{i}"] = port
        return values

    def render(self) -> None:
        """Write the rendered configuration into ``run_dir/etc`` and create the dirs."""
        for secret in (self._ami_secret, self._admin_secret):
            if not re.fullmatch(r"[A-Za-z0-9_.~+-]{8,}", secret):
                raise LabError("AMI secrets must be 8+ chars of [A-Za-z0-9_.~+-]")
        values = self.template_values()
        # log/cdr-csv: cdr_csv writes Master.csv there but does not create the directory
        for sub in ("etc", "var/lib", "var/spool", "var/cache", "run", "log", "log/cdr-csv",
                    "sipp"):
            (self.run_dir / sub).mkdir(parents=True, exist_ok=True)
        ctl = self.run_dir / "run" / "asterisk.ctl"
        if len(str(ctl)) > 100:
            raise LabError(f"run dir too long for Asterisk's control socket: {ctl}")
        render_config(self.etc_dir, values)

    @property
    def routing_agi(self) -> Path:
        """The `textback-route` AGI the dialplan runs (see :func:`routing_agi`)."""
        return routing_agi(self.run_dir)

    def _asterisk_argv(self, *args: str) -> list[str]:
        return asterisk_argv(self.fs, self.etc_dir / "asterisk.conf", *args)

    def check_ports_free(self) -> None:
        """Fail early if another lab (or anything) holds our SIP/AMI/trunk ports."""
        check_ports_free(self.ports)

    def start(self, timeout: float = 20.0) -> None:
        """Render the config, start Asterisk and wait until it is fully booted."""
        if self.running:
            return
        self.check_ports_free()
        self.render()
        out_path = self.log_dir / "asterisk.out"
        out = out_path.open("ab")
        self._out = out
        log.info("starting lab Asterisk in %s (SIP %d, AMI %d)", self.run_dir,
                 self.ports.sip, self.ports.ami)
        self._proc = subprocess.Popen(
            self._asterisk_argv("-f", "-n"),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=self.run_dir,
            env={**os.environ, "TEXTBACK_CONFIG": str(self.textback_config)},
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                rc = self._proc.returncode
                self._proc = None
                raise LabError(f"Asterisk exited with {rc} while starting:\n{self._log_tail()}")
            probe = subprocess.run(
                self._asterisk_argv("-rx", "core waitfullybooted"),
                capture_output=True, timeout=10, check=False,
            )
            if probe.returncode == 0 and self._ami_ready():
                break
            if time.monotonic() > deadline:
                self.stop()
                raise LabError(f"Asterisk not fully booted after {timeout} s:\n{self._log_tail()}")
            time.sleep(0.1)
        failures = [line for line in self._log_tail(400).splitlines()
                    if "Unable to bind" in line or "could not be started" in line]
        if failures:
            self.stop()
            raise LabError("Asterisk could not bind its ports:\n" + "\n".join(failures))
        log.info("lab Asterisk pid %d fully booted", self._proc.pid)

    def _ami_ready(self) -> bool:
        try:
            with socket.create_connection((LOCALHOST, self.ports.ami), timeout=1):
                return True
        except OSError:
            return False

    def _log_tail(self, lines: int = 40) -> str:
        parts = []
        for path in (self.log_dir / "asterisk.out", self.messages_log):
            with contextlib.suppress(OSError):
                text = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(parts) or "(no Asterisk output)"

    def stop(self, timeout: float = 5.0) -> None:
        """Stop Asterisk by PID (SIGTERM = clean shutdown; SIGKILL after ``timeout``)."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log.warning("Asterisk pid %d ignored SIGTERM; killing", proc.pid)
                proc.kill()
                proc.wait(timeout=5)
        out = self._out
        self._out = None
        if out is not None:
            out.close()  # type: ignore[attr-defined]

    def __enter__(self) -> LabPbx:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ----------------------------------------------------------------- control
    def cli(self, command: str, timeout: float = 10.0) -> str:
        """Run an Asterisk CLI command (``asterisk -rx``) and return its output."""
        proc = subprocess.run(
            self._asterisk_argv("-rx", command),
            capture_output=True, text=True, timeout=timeout, check=False,
        )
        if proc.returncode != 0:
            raise LabError(f"CLI {command!r} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc.stdout

    def admin_client(self) -> AmiClient:
        """A connected AMI client logged in as ``labadmin`` (caller closes it)."""
        return AmiClient(LOCALHOST, self.ports.ami, ADMIN_USER, self._admin_secret)

    def agent_client(self, *, events: str = "on") -> AmiClient:
        """A connected AMI client logged in as the agent's ``textback`` account."""
        return AmiClient(LOCALHOST, self.ports.ami, AMI_USER, self._ami_secret, events=events)

    def ami(self, action: str, **fields: str) -> dict[str, str]:
        """Run one AMI action as ``labadmin`` and return the response."""
        with self.admin_client() as client:
            return client.action(action, **fields)

    def channels(self) -> list[str]:
        """Names of the live channels (``core show channels concise``)."""
        out = self.cli("core show channels concise")
        return [line.split("!", 1)[0] for line in out.splitlines() if "!" in line]

    def wait_channel(self, prefix: str, timeout: float = 10.0, *, state: str = "") -> str:
        """Wait for a live channel whose name starts with ``prefix`` (optionally in a
        state such as ``Up``) and return its name."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.cli("core show channels concise")
            for line in out.splitlines():
                parts = line.split("!")
                if parts[0].startswith(prefix) and (not state or parts[4:5] == [state]):
                    return parts[0]
            time.sleep(0.1)
        raise LabError(f"no channel {prefix}* {state} within {timeout} s")

    def recorder(self, path: Path) -> AmiRecorder:
        """An (unstarted) AMI transcript recorder logged in as ``labadmin``."""
        return AmiRecorder(LOCALHOST, self.ports.ami, ADMIN_USER, self._admin_secret, path)

    def record(self, path: Path, until: Callable[[], object] | float, *,
               settle: float = 1.0) -> Path:
        """Record AMI into ``path`` until ``until()`` returns (a callable: the scenario) or
        for ``until`` seconds, then ``settle`` more seconds for the trailing events."""
        with self.recorder(path) as rec:
            if callable(until):
                until()
            else:
                time.sleep(until)
            rec.settle = settle
        return path

    def write_agent_config(self, work: Path, *, ami_port: int | None = None,
                           ping_interval: float | None = None,
                           ping_timeout: float | None = None, cdr_csv: bool = False) -> Path:
        """A textback config for an agent watching this lab, in ``work``.

        The AMI secret goes to its own 0600 file, as `textback init` does it;
        ``ami_port`` lets a test put a relay between the agent and Asterisk;
        ``cdr_csv`` has the agent read this lab's Master.csv after an AMI outage.
        """
        secret = work / "ami.secret"
        fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(self.ami_secret)
        watchdog = "".join(f"{key} = {value}\n" for key, value in
                           (("ping_interval", ping_interval), ("ping_timeout", ping_timeout))
                           if value is not None)
        path = work / "textback.toml"
        path.write_text(
            f'[ami]\nhost = "{LOCALHOST}"\nport = {ami_port or self.ami_port}\n'
            f'username = "{self.ami_user}"\nsecret_file = "{secret}"\n{watchdog}'
            f'[pbx]\ntrunk_endpoints = ["trunk"]\n'
            + (f'cdr_csv = "{self.cdr_csv}"\n' if cdr_csv else "")
            + f'[database]\nurl = "sqlite:///{work / "textback.db"}"\n'
            f'[sms.sip]\nendpoint = "trunk"\n'
        )
        return path

    def trunk_peer(self) -> TrunkPeer:
        """A started :class:`TrunkPeer` on this lab's trunk port (caller closes it)."""
        peer = TrunkPeer(LOCALHOST, self.ports.trunk, (LOCALHOST, self.ports.sip))
        peer.start()
        return peer

    # ----------------------------------------------------------------- SIPp
    def _sipp_file(self, template: str, values: Mapping[str, object]) -> Path:
        path = self.run_dir / "sipp" / f"{next(self._seq):04d}-{template}.xml"
        return write_scenario(template, values, path)

    def _spawn_sipp(self, role: str, scenario: Path, args: list[str]) -> SippProcess:
        return spawn_sipp(role, scenario, args, self.run_dir / "sipp")

    def phone(self, name: str, behaviour: PhoneBehaviour, *, answer_after_ms: int = 500,
              calls: int = 1, timeout: float = 30.0) -> SippProcess:
        """Start phone ``desk``/``desk2`` as a SIPp UAS that rings, answers or is busy."""
        port = self.ports.endpoint_port(name)
        scenario = self._sipp_file(
            f"uas_{behaviour}", {"LAB_PHONE": name, "LAB_ANSWER_AFTER_MS": answer_after_ms}
        )
        args = ["-i", LOCALHOST, "-p", str(port), "-mp", str(next(self._media_slots)),
                "-m", str(calls), "-nostdin", "-timeout", f"{int(timeout)}s",
                "-timeout_error"]
        return self._spawn_sipp(name, scenario, args)

    def call(
        self,
        exten: str,
        *,
        caller_id: str = DEFAULT_CALLER_ID,
        caller_name: str | None = DEFAULT_CALLER_NAME,
        anonymous: bool = False,
        from_trunk: bool = False,
        from_endpoint: Endpoint | None = None,
        scenario: Scenario = "uac_call",
        hold_ms: int = 2000,
        phone: PhoneBehaviour | None = "ring",
        phone2: PhoneBehaviour | None = None,
        answer_after_ms: int = 500,
        timeout: float = 30.0,
        wait: bool = True,
    ) -> LabCall:
        """Place one call to ``exten`` with SIPp.

        ``phone``/``phone2`` start ``desk``/``desk2`` as UASs first (None: not started).
        ``from_trunk`` sends the INVITE from a trunk call-origin port, so Asterisk sees
        an inbound carrier call on ``PJSIP/trunk-…`` in ``[from-trunk]`` (use a DID as
        ``exten``).  ``from_endpoint="desk2"`` calls from desk2's port (e.g. a pickup).
        ``scenario="uac_cancel"`` rings ``hold_ms`` then CANCELs; ``"uac_call"`` holds an
        answered call ``hold_ms`` then sends BYE.  ``anonymous`` sends the usual
        ``"Anonymous" <sip:anonymous@anonymous.invalid>``.  With ``wait=False`` the
        :class:`LabCall` is returned at once (concurrent calls); otherwise it has ended.
        """
        endpoint: Endpoint = from_endpoint or ("trunk" if from_trunk else "caller")
        if endpoint == "caller":
            port = next(self._caller_slots)
        elif endpoint == "trunk":
            port = next(self._trunk_slots)
        else:
            port = self.ports.endpoint_port(endpoint)
        check_sipp_safe(exten, "extension")
        from_hdr = from_header(caller_id, caller_name, anonymous=anonymous, port=port)
        contact_user = "anonymous" if anonymous else caller_id
        phones: list[SippProcess] = []
        ring_budget = timeout + 5
        if phone is not None:
            phones.append(self.phone("desk", phone, answer_after_ms=answer_after_ms,
                                     timeout=ring_budget))
        if phone2 is not None:
            phones.append(self.phone("desk2", phone2, answer_after_ms=answer_after_ms,
                                     timeout=ring_budget))
        if phones:
            time.sleep(0.25)  # let the UASs bind their sockets before the INVITE fans out
        uac = self._sipp_file(scenario, {"LAB_FROM": from_hdr, "LAB_CONTACT_USER": contact_user,
                                         "LAB_HOLD_MS": hold_ms})
        args = [f"{LOCALHOST}:{self.ports.sip}", "-s", exten, "-i", LOCALHOST, "-p", str(port),
                "-mp", str(next(self._media_slots)), "-m", "1", "-nostdin",
                "-timeout", f"{int(timeout)}s", "-timeout_error"]
        log.info("call %s from %s port %d (%s)", exten, endpoint, port, scenario)
        lab_call = LabCall(exten, self._spawn_sipp(f"{endpoint}-uac", uac, args), phones)
        if wait:
            lab_call.wait(timeout + 5)
        return lab_call

    def burst(
        self,
        exten: str,
        caller_ids: Sequence[str],
        rate: float,
        *,
        phone: PhoneBehaviour | None = "busy",
        answer_after_ms: int = 500,
        hold_ms: int = 2000,
        timeout: float | None = None,
    ) -> LabCall:
        """Place ``len(caller_ids)`` calls to ``exten`` from the trunk at ``rate`` calls/s,
        each with its own caller ID, from one SIPp UAC (``-r``/``-m`` and an injection
        file), for load benchmarks.

        ``phone`` starts ``desk`` as one UAS for all the calls (``"busy"``: each is
        rejected at once, so the calls are short).  No limit on simultaneous calls is
        put on SIPp.  ``timeout`` (default: the burst's length plus 60 s) bounds each
        SIPp process.  Returns at once; ``.wait()`` the :class:`LabCall`.
        """
        if not caller_ids:
            raise LabError("a burst needs at least one caller ID")
        if rate <= 0:
            raise LabError(f"call rate must be positive, not {rate}")
        check_sipp_safe(exten, "extension")
        for caller_id in caller_ids:
            check_sipp_safe(caller_id, "caller ID")
            if ";" in caller_id:
                raise LabError(f"caller ID {caller_id!r} contains ';' (the injection "
                               "file's separator)")
        calls = len(caller_ids)
        budget = timeout if timeout is not None else calls / rate + 60
        port = next(self._trunk_slots)
        phones: list[SippProcess] = []
        if phone is not None:
            phones.append(self.phone("desk", phone, answer_after_ms=answer_after_ms,
                                     calls=calls, timeout=budget + 5))
            time.sleep(0.25)  # let the UAS bind its socket before the first INVITE
        injection = self.run_dir / "sipp" / f"{next(self._seq):04d}-callers.csv"
        injection.write_text("SEQUENTIAL\n" + "".join(f"{c};\n" for c in caller_ids))
        uac = self._sipp_file("uac_call", {"LAB_FROM": f"<sip:[field0]@{LOCALHOST}:{port}>",
                                           "LAB_CONTACT_USER": "[field0]",
                                           "LAB_HOLD_MS": hold_ms})
        args = [f"{LOCALHOST}:{self.ports.sip}", "-s", exten, "-i", LOCALHOST, "-p", str(port),
                "-mp", str(next(self._media_slots)), "-m", str(calls), "-l", str(calls),
                "-r", f"{rate:g}", "-rp", "1000", "-inf", str(injection), "-nostdin",
                "-timeout", f"{int(budget)}s", "-timeout_error"]
        log.info("burst of %d calls to %s at %g/s from trunk port %d", calls, exten, rate,
                 port)
        return LabCall(exten, self._spawn_sipp("trunk-burst", uac, args), phones)


@contextlib.contextmanager
def running_lab(run_dir: Path, port_base: int, **kwargs: object) -> Iterator[LabPbx]:
    """``with running_lab(dir, base) as lab:`` — start a lab and always stop it."""
    lab = LabPbx(run_dir, port_base, **kwargs)  # type: ignore[arg-type]
    lab.start()
    try:
        yield lab
    finally:
        lab.stop()
