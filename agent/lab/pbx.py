"""A real Asterisk PBX in a directory, for tests, ``make demo`` and benchmarks.

Why this exists: the agent's whole job is to interpret what a real Asterisk says on AMI
when real SIP calls fail in real ways (ring groups, Local channels, queues, pickups...).
Mocks of AMI would only encode our own assumptions, so the tests drive an actual
Asterisk 22 with SIPp phones instead.  This module is the harness:

* :class:`LabPbx` renders the configuration templates of ``asterisk/lab/conf`` into a run
  directory (own ports, own secrets, own spool), starts Asterisk without root and stops it.
* :meth:`LabPbx.call` places calls with SIPp (a caller UAC plus the phones as UASs).
* :class:`TrunkPeer` plays the carrier's side of the SIP trunk for SMS (SIP MESSAGE).
* :class:`AmiRecorder` writes raw AMI transcripts in the fixture format
  (``X-RecvTS:`` line before each block), :class:`AmiClient` is a tiny synchronous AMI
  client for test control.

Standard library only, so it works before the project's dependencies are installed.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import itertools
import logging
import os
import queue
import re
import secrets
import shutil
import signal
import socket
import string
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Literal

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
LAB_DIR = REPO_ROOT / "asterisk" / "lab"
CONF_TEMPLATE_DIR = LAB_DIR / "conf"
SIPP_TEMPLATE_DIR = LAB_DIR / "sipp"
FETCH_SCRIPT = LAB_DIR / "fetch-asterisk"
# textback's shipped dialplan, included by the lab's extensions.conf exactly as shipped
SHIPPED_DIALPLAN = REPO_ROOT / "asterisk" / "extensions_textback.conf"

LOCALHOST = "127.0.0.1"
AMI_USER = "textback"
ADMIN_USER = "labadmin"
DEFAULT_CALLER_ID = "+15551230001"
DEFAULT_CALLER_NAME = "Alice Caller"
ANONYMOUS_FROM = '"Anonymous" <sip:anonymous@anonymous.invalid>'

Scenario = Literal["uac_call", "uac_cancel"]
PhoneBehaviour = Literal["ring", "answer", "busy"]
Endpoint = Literal["caller", "trunk", "desk", "desk2"]


class LabError(RuntimeError):
    """The lab could not be prepared, started or driven (message says what to do)."""


class _LabTemplate(string.Template):
    """``string.Template`` that only touches ``${LAB_NAME}`` placeholders.

    The dialplan and SIPp files are full of ``${EXTEN}`` and ``[keyword]`` syntax of their
    own; restricting substitution to the ``LAB_`` prefix leaves them alone while a missing
    lab value still raises ``KeyError`` instead of silently producing a broken config.
    """

    pattern = (
        r"\$(?:(?P<escaped>(?!))|(?P<named>(?!))"
        r"|\{(?P<braced>LAB_[A-Z0-9_]+)\}|(?P<invalid>(?!)))"
    )


def render_template(text: str, values: Mapping[str, object]) -> str:
    """Substitute ``${LAB_*}`` placeholders; raise :class:`LabError` for a missing one."""
    try:
        return _LabTemplate(text).substitute({k: str(v) for k, v in values.items()})
    except KeyError as exc:
        raise LabError(f"template placeholder {exc} has no value") from None


def find_asterisk(*, env: Mapping[str, str] | None = None) -> Path:
    """Locate the unpacked Asterisk tree.

    ``TEXTBACK_LAB_ASTERISK`` wins (CI can point at a prepared tree); otherwise
    ``asterisk/lab/fetch-asterisk`` is run, which is instant when the cache is warm and
    downloads Debian's packages once otherwise.  Its last stdout line is the tree.
    """
    env = os.environ if env is None else env
    override = env.get("TEXTBACK_LAB_ASTERISK")
    if override:
        fs = Path(override)
    else:
        if not FETCH_SCRIPT.exists():
            raise LabError(f"{FETCH_SCRIPT} is missing")
        proc = subprocess.run(
            [str(FETCH_SCRIPT)], capture_output=True, text=True, timeout=900, check=False
        )
        if proc.returncode != 0:
            raise LabError(
                f"{FETCH_SCRIPT.name} failed (exit {proc.returncode}):\n{proc.stderr.strip()}"
            )
        lines = proc.stdout.strip().splitlines()
        if not lines:
            raise LabError(f"{FETCH_SCRIPT.name} printed no path")
        fs = Path(lines[-1])
    if not (fs / "usr/sbin/asterisk").exists():
        raise LabError(f"{fs} is not an unpacked Asterisk tree (no usr/sbin/asterisk)")
    return fs


def find_sipp() -> str:
    """Path of the ``sipp`` binary, or a clear instruction to install it."""
    path = shutil.which("sipp")
    if path is None:
        raise LabError("sipp not found; install it with: sudo apt-get install sip-tester")
    return path


@dataclass(frozen=True)
class PortLayout:
    """Every port one lab uses, derived from a base so labs can sit side by side.

    A lab occupies ``base .. base+299``: SIP and AMI, fixed phone ports, five caller
    ports and five trunk call-origin ports (so up to five concurrent calls of each kind),
    100 RTP ports for Asterisk and 100 media ports for SIPp.
    """

    base: int

    @property
    def sip(self) -> int:
        return self.base

    @property
    def ami(self) -> int:
        return self.base + 1

    @property
    def desk(self) -> int:
        return self.base + 3

    @property
    def desk2(self) -> int:
        return self.base + 4

    @property
    def trunk(self) -> int:
        """The trunk peer's port: where Asterisk sends SIP MESSAGE (outbound SMS)."""
        return self.base + 5

    @property
    def callers(self) -> tuple[int, ...]:
        return tuple(range(self.base + 10, self.base + 15))

    @property
    def trunk_calls(self) -> tuple[int, ...]:
        """Source ports of calls that arrive "from the carrier" (identified as trunk)."""
        return tuple(range(self.base + 15, self.base + 20))

    @property
    def rtp_start(self) -> int:
        return self.base + 100

    @property
    def rtp_end(self) -> int:
        return self.base + 199

    @property
    def media(self) -> tuple[int, ...]:
        """SIPp media ports (RTP, RTCP, video RTP, video RTCP per slot)."""
        return tuple(range(self.base + 200, self.base + 300, 4))

    def endpoint_port(self, name: str) -> int:
        return {"desk": self.desk, "desk2": self.desk2}[name]


try:  # resolved in the parent: the forked child must not dlopen (loader lock + threads)
    _PRCTL = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # pragma: no cover - not Linux/glibc
    _PRCTL = None


def _die_with_parent() -> None:
    """In the child before exec: ask Linux to SIGTERM it when the parent dies.

    A crashed or killed test run must not leave a lab Asterisk (or SIPp) holding ports.
    """
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _ensure_ports_valid(base: int) -> None:
    if not 1024 <= base <= 65535 - 300:
        raise LabError(f"port base {base} out of range (1024..65235)")


def _sip_display_name(name: str) -> str:
    """Quote a caller name as a SIP display name (RFC 3261 quoted-string)."""
    escaped = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _check_sipp_safe(value: str, what: str) -> None:
    """SIPp reads ``[word]`` as a keyword and the file is XML CDATA: refuse what breaks it."""
    bad = [c for c in ("[", "]", "\r", "\n") if c in value]
    if bad or "]]>" in value:
        raise LabError(f"{what} {value!r} contains characters SIPp cannot send: {bad}")


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
        _ensure_ports_valid(port_base)
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
        for template in sorted(CONF_TEMPLATE_DIR.glob("*.conf")):
            text = render_template(template.read_text(), values)
            target = self.etc_dir / template.name
            target.write_text(text)
            if template.name == "manager.conf":
                target.chmod(0o600)
        shutil.copyfile(SHIPPED_DIALPLAN, self.etc_dir / SHIPPED_DIALPLAN.name)

    @property
    def routing_agi(self) -> Path:
        """The `textback-route` AGI the dialplan runs: the installed console script, or
        (before `pip install`) a wrapper with the same entry point in the run dir."""
        installed = Path(sys.executable).parent / "textback-route"
        if installed.exists():
            return installed
        wrapper = self.run_dir / "agi-bin" / "textback-route"
        wrapper.parent.mkdir(parents=True, exist_ok=True)
        wrapper.write_text(f"#!{sys.executable}\nimport sys\nfrom agent.pbx.agi import main\n"
                           "sys.exit(main())\n")
        wrapper.chmod(0o755)
        return wrapper

    def _asterisk_argv(self, *args: str) -> list[str]:
        fs = self.fs
        libs = f"{fs}/usr/lib/x86_64-linux-gnu:{fs}/usr/lib/x86_64-linux-gnu/pulseaudio"
        return [
            str(fs / "usr/lib64/ld-linux-x86-64.so.2"),
            "--library-path",
            libs,
            str(fs / "usr/sbin/asterisk"),
            "-C",
            str(self.etc_dir / "asterisk.conf"),
            *args,
        ]

    def check_ports_free(self) -> None:
        """Fail early if another lab (or anything) holds our SIP/AMI/trunk ports.

        Asterisk itself only logs a failed bind and keeps running deaf, which would turn
        into baffling test timeouts much later.
        """
        busy = []
        checks = [(socket.SOCK_DGRAM, self.ports.sip), (socket.SOCK_STREAM, self.ports.ami),
                  (socket.SOCK_DGRAM, self.ports.trunk)]
        for kind, port in checks:
            with socket.socket(socket.AF_INET, kind) as sock:
                # like Asterisk itself: a port in TIME_WAIT from the last lab is free
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind((LOCALHOST, port))
                except OSError:
                    busy.append(port)
        if busy:
            raise LabError(f"ports {busy} on {LOCALHOST} are in use (another lab still "
                           f"running?); choose another port base than {self.ports.base}")

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
            preexec_fn=_die_with_parent,
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
        text = render_template((SIPP_TEMPLATE_DIR / f"{template}.xml").read_text(), values)
        path = self.run_dir / "sipp" / f"{next(self._seq):04d}-{template}.xml"
        path.write_text(text, encoding="utf-8")
        return path

    def _spawn_sipp(self, role: str, scenario: Path, args: list[str]) -> SippProcess:
        log_path = scenario.with_suffix(f".{role}.log")
        err_path = scenario.with_suffix(f".{role}.errors")
        with log_path.open("wb") as out:
            proc = subprocess.Popen(
                [find_sipp(), *args, "-sf", str(scenario), "-trace_err", "-error_file",
                 str(err_path)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                cwd=self.run_dir / "sipp", start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        return SippProcess(role, proc, log_path, scenario)

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
        _check_sipp_safe(exten, "extension")
        if anonymous:
            from_hdr = ANONYMOUS_FROM
        else:
            _check_sipp_safe(caller_id, "caller ID")
            uri = f"<sip:{caller_id}@{LOCALHOST}:{port}>"
            if caller_name:
                _check_sipp_safe(caller_name, "caller name")
                from_hdr = f"{_sip_display_name(caller_name)} {uri}"
            else:
                from_hdr = uri
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


# --------------------------------------------------------------------------- agent
def wait_until(what: str, check: Callable[[], object], timeout: float = 15.0) -> object:
    """Poll `check` until it returns something truthy (returned), or fail naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class AgentProcess:
    """`textback agent` in its own process, with its log captured."""

    def __init__(self, config: Path, log_path: Path) -> None:
        self.config, self.log_path = config, log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.offset = 0

    def start(self, wait_for: str = "AMI connected") -> None:
        """Start it and wait for `wait_for` in its log. It dies with this process, so a
        failed test never leaves an agent texting from a stale lab."""
        self.offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "agent.cli", "agent", "--config", str(self.config)],
                stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent,
            )
        self.wait_log(wait_for)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[self.offset:]

    def wait_log(self, text: str, timeout: float = 20.0, after: int = 0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log()[after:]:
                return
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"agent exited ({self.proc.returncode}):\n{self.log()}")
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not in the agent's log within {timeout} s:\n"
                             f"{self.log()[-3000:]}")

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.terminate()
        try:
            return self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


# --------------------------------------------------------------------------- AMI
def _parse_block(block: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in block.split("\r\n"):
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    return fields


class AmiClient:
    """Minimal synchronous AMI client for test control (not the agent's client).

    A reader thread splits the stream into blocks; responses (matched by ActionID) go to
    :meth:`action`, events to :attr:`events` (a queue) so tests can assert on them.
    """

    def __init__(self, host: str, port: int, user: str, secret: str, *,
                 events: str = "on", timeout: float = 10.0) -> None:
        self.user = user
        self.timeout = timeout
        self.events: queue.Queue[dict[str, str]] = queue.Queue()
        self._responses: dict[str, queue.Queue[dict[str, str]]] = {}
        self._lock = threading.Lock()
        self._sock = socket.create_connection((host, port), timeout=timeout)
        self._file = self._sock.makefile("rb")
        self.banner = self._file.readline().decode(errors="replace").strip()
        self._sock.settimeout(None)
        self._closed = False
        self._thread = threading.Thread(target=self._reader, name="ami-client", daemon=True)
        self._thread.start()
        resp = self.action("Login", Username=user, Secret=secret, Events=events)
        if resp.get("Response") != "Success":
            self.close()
            raise LabError(f"AMI login as {user} failed: {resp.get('Message')}")

    def _reader(self) -> None:
        buf = b""
        while not self._closed:
            try:
                line = self._file.readline()
            except (OSError, ValueError):
                break
            if not line:
                break
            if line in (b"\r\n", b"\n"):
                if buf:
                    self._dispatch(_parse_block(buf.decode("utf-8", errors="replace")))
                buf = b""
            else:
                buf += line
        self._closed = True

    def _dispatch(self, msg: dict[str, str]) -> None:
        action_id = msg.get("ActionID")
        with self._lock:
            target = self._responses.get(action_id) if action_id else None
        if target is not None and ("Response" in msg or "Event" in msg):
            target.put(msg)
        else:
            self.events.put(msg)

    def send(self, action: str, **fields: str) -> str:
        """Send an action without waiting; return its ActionID."""
        action_id = fields.pop("ActionID", None) or uuid.uuid4().hex
        with self._lock:
            self._responses[action_id] = queue.Queue()
        lines = [f"Action: {action}", f"ActionID: {action_id}"]
        lines += [f"{k}: {v}" for k, v in fields.items()]
        self._sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        return action_id

    def action(self, action: str, **fields: str) -> dict[str, str]:
        """Send an action and return its response (for lists: the first message)."""
        action_id = self.send(action, **fields)
        try:
            return self._responses[action_id].get(timeout=self.timeout)
        except queue.Empty:
            raise LabError(f"no AMI response to {action} within {self.timeout} s") from None

    def action_list(self, action: str, **fields: str) -> list[dict[str, str]]:
        """Send a list action and collect everything up to ``EventList: Complete``."""
        action_id = self.send(action, **fields)
        out: list[dict[str, str]] = []
        deadline = time.monotonic() + self.timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                msg = self._responses[action_id].get(timeout=max(0.0, remaining))
            except queue.Empty:
                raise LabError(f"{action} list incomplete after {self.timeout} s") from None
            out.append(msg)
            if msg.get("EventList") == "Complete" or msg.get("Response") == "Error":
                return out

    def wait_event(self, predicate: Callable[[dict[str, str]], bool],
                   timeout: float = 10.0) -> dict[str, str]:
        """Return the first queued event matching ``predicate`` (others are dropped)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LabError(f"no matching AMI event within {timeout} s")
            try:
                event = self.events.get(timeout=remaining)
            except queue.Empty:
                continue
            if predicate(event):
                return event

    def drain(self) -> list[dict[str, str]]:
        """All events queued so far."""
        out = []
        with contextlib.suppress(queue.Empty):
            while True:
                out.append(self.events.get_nowait())
        return out

    def close(self) -> None:
        if self._closed and self._sock.fileno() < 0:
            return
        with contextlib.suppress(OSError):
            self._sock.sendall(b"Action: Logoff\r\n\r\n")
        self._closed = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()

    def __enter__(self) -> AmiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AmiRecorder:
    """Write everything AMI sends into a transcript file (the fixture format).

    Format: first line ``# banner: <AMI banner>``, then each block as received, preceded
    by ``X-RecvTS: <unix time>`` and followed by a blank line; CRLF becomes LF.  The first
    block is the login response.  Used as a context manager; on exit it keeps reading
    :attr:`settle` seconds so trailing events (Cdr, Hangup) land in the file.
    """

    def __init__(self, host: str, port: int, user: str, secret: str, path: Path, *,
                 settle: float = 1.0) -> None:
        self.host, self.port, self.user, self._secret = host, port, user, secret
        self.path = Path(path)
        self.settle = settle
        self.blocks = 0
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="ami-recorder", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise LabError("AMI recorder did not log in within 10 s")
        if self._error is not None:
            raise LabError(f"AMI recorder failed: {self._error}")

    def _run(self) -> None:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=10)
        except OSError as exc:
            self._error = exc
            self._ready.set()
            return
        sock.settimeout(0.2)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with sock, self.path.open("w", encoding="utf-8", newline="\n") as out:
            buf = b""
            login = (f"Action: Login\r\nUsername: {self.user}\r\nSecret: {self._secret}\r\n"
                     "Events: on\r\n\r\n").encode()
            banner_done = False
            sock.sendall(login)
            while not self._stop.is_set():
                try:
                    chunk = sock.recv(65536)
                except TimeoutError:
                    continue
                except OSError as exc:
                    self._error = exc
                    break
                if not chunk:
                    break
                now = time.time()
                buf += chunk
                if not banner_done:
                    if b"\r\n" not in buf:
                        continue
                    banner, buf = buf.split(b"\r\n", 1)
                    out.write(f"# banner: {banner.decode(errors='replace')}\n")
                    banner_done = True
                while b"\r\n\r\n" in buf:
                    block, buf = buf.split(b"\r\n\r\n", 1)
                    text = block.decode("utf-8", errors="replace").replace("\r\n", "\n")
                    out.write(f"X-RecvTS: {now:.6f}\n{text}\n\n")
                    self.blocks += 1
                    if self.blocks == 1:
                        if not text.startswith("Response: Success"):
                            self._error = LabError(f"login refused: {text}")
                            self._stop.set()
                        self._ready.set()
                out.flush()
            with contextlib.suppress(OSError):
                sock.sendall(b"Action: Logoff\r\n\r\n")
        self._ready.set()

    def stop(self) -> None:
        if self._thread is None:
            return
        time.sleep(self.settle)
        self._stop.set()
        self._thread.join(5)
        self._thread = None

    def __enter__(self) -> AmiRecorder:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------- SIP trunk
@dataclass(frozen=True)
class TrunkMessage:
    """One SIP MESSAGE the trunk received (an outbound SMS as the carrier sees it)."""

    received_at: float
    to: str
    from_: str
    body: str
    call_id: str
    content_type: str


_HEADER_ALIASES = {"i": "call-id", "f": "from", "t": "to", "v": "via", "c": "content-type",
                   "l": "content-length"}


def _parse_sip(data: bytes) -> tuple[str, dict[str, list[str]], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("utf-8", errors="replace").split("\r\n")
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            continue
        key = name.strip().lower()
        key = _HEADER_ALIASES.get(key, key)
        headers.setdefault(key, []).append(value.strip())
    length = headers.get("content-length")
    if length and length[0].isdigit():
        body = body[: int(length[0])]
    return lines[0], headers, body


def _uri_user(uri: str) -> str:
    m = re.search(r"sips?:([^@;>]+)@", uri)
    return m.group(1) if m else ""


class TrunkPeer:
    """The carrier's side of the SIP trunk, for SMS: a tiny UDP SIP UAS in a thread.

    Answers every out-of-dialog ``MESSAGE`` with ``200 OK`` and records it once (a
    retransmission — same Call-ID and CSeq — is answered again but not recorded).  It can
    also send an inbound ``MESSAGE`` to Asterisk from the same port, which Asterisk
    identifies as the ``trunk`` endpoint (inbound SMS into ``[sms-in]``).  Other
    requests get ``200 OK`` for OPTIONS and ``405`` otherwise.
    """

    def __init__(self, host: str, port: int, asterisk: tuple[str, int]) -> None:
        self.host, self.port = host, port
        self.asterisk = asterisk
        self.messages: list[TrunkMessage] = []
        self._seen: set[tuple[str, str]] = set()
        self._cond = threading.Condition()
        self._responses: dict[str, queue.Queue[str]] = {}
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._running = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._sock.bind((self.host, self.port))
        self._sock.settimeout(0.2)
        self._running = True
        self._thread = threading.Thread(target=self._serve, name="trunk-peer", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._running = False
        if self._thread is not None:
            self._thread.join(2)
            self._thread = None
        self._sock.close()

    def __enter__(self) -> TrunkPeer:
        if self._thread is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def clear(self) -> None:
        with self._cond:
            self.messages.clear()

    def wait_for(self, count: int = 1, timeout: float = 5.0) -> list[TrunkMessage]:
        """Wait until ``count`` messages are recorded; return them (raise on timeout)."""
        with self._cond:
            ok = self._cond.wait_for(lambda: len(self.messages) >= count, timeout)
            if not ok:
                raise LabError(
                    f"trunk received {len(self.messages)} MESSAGE(s), expected {count}"
                )
            return list(self.messages)

    def _serve(self) -> None:
        while self._running:
            try:
                data, addr = self._sock.recvfrom(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            try:
                self._handle(data, addr)
            except Exception:
                log.exception("trunk peer: bad datagram from %s", addr)

    def _handle(self, data: bytes, addr: tuple[str, int]) -> None:
        if not data.strip():
            return  # keep-alive
        start, headers, body = _parse_sip(data)
        call_id = (headers.get("call-id") or [""])[0]
        if start.startswith("SIP/2.0"):
            target = self._responses.get(call_id)
            if target is not None:
                target.put(start)
            return
        method, _, rest = start.partition(" ")
        request_uri = rest.rsplit(" ", 1)[0]
        cseq = (headers.get("cseq") or [""])[0]
        if method == "MESSAGE":
            key = (call_id, cseq)
            with self._cond:
                if key not in self._seen:
                    self._seen.add(key)
                    self.messages.append(TrunkMessage(
                        received_at=time.time(),
                        to=_uri_user(request_uri),
                        from_=(headers.get("from") or [""])[0],
                        body=body.decode("utf-8", errors="replace"),
                        call_id=call_id,
                        content_type=(headers.get("content-type") or [""])[0],
                    ))
                    self._cond.notify_all()
            self._reply(addr, headers, "200 OK")
        elif method == "OPTIONS":
            self._reply(addr, headers, "200 OK")
        elif method != "ACK":
            self._reply(addr, headers, "405 Method Not Allowed")

    def _reply(self, addr: tuple[str, int], headers: dict[str, list[str]], status: str) -> None:
        to = (headers.get("to") or [""])[0]
        if ";tag=" not in to:
            to += ";tag=trunk" + uuid.uuid4().hex[:8]
        lines = [f"SIP/2.0 {status}"]
        lines += [f"Via: {v}" for v in headers.get("via", [])]
        lines += [f"From: {(headers.get('from') or [''])[0]}", f"To: {to}",
                  f"Call-ID: {(headers.get('call-id') or [''])[0]}",
                  f"CSeq: {(headers.get('cseq') or [''])[0]}",
                  "Server: textback-lab-trunk", "Content-Length: 0", "", ""]
        self._sock.sendto("\r\n".join(lines).encode(), addr)

    def send_message(self, to_did: str, from_number: str, body: str, *,
                     timeout: float = 5.0) -> str:
        """Send an inbound SMS to Asterisk as the carrier; return the final status line.

        Retransmits like a UAC (500 ms, 1 s, 2 s...) until a final response arrives.
        """
        host, port = self.asterisk
        call_id = f"{uuid.uuid4().hex}@{self.host}"
        payload = body.encode("utf-8")
        request = "\r\n".join([
            f"MESSAGE sip:{to_did}@{host}:{port} SIP/2.0",
            f"Via: SIP/2.0/UDP {self.host}:{self.port};branch=z9hG4bK{uuid.uuid4().hex}",
            "Max-Forwards: 70",
            f"From: <sip:{from_number}@{self.host}:{self.port}>;tag={uuid.uuid4().hex[:10]}",
            f"To: <sip:{to_did}@{host}:{port}>",
            f"Call-ID: {call_id}",
            "CSeq: 1 MESSAGE",
            "Content-Type: text/plain;charset=UTF-8",
            f"Content-Length: {len(payload)}",
            "", "",
        ]).encode() + payload
        responses: queue.Queue[str] = queue.Queue()
        self._responses[call_id] = responses
        try:
            deadline = time.monotonic() + timeout
            interval = 0.5
            self._sock.sendto(request, self.asterisk)
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise LabError(f"no final response to MESSAGE within {timeout} s")
                try:
                    status = responses.get(timeout=min(interval, remaining))
                except queue.Empty:
                    self._sock.sendto(request, self.asterisk)
                    interval = min(interval * 2, 4.0)
                    continue
                code = status.split(" ", 2)[1] if status.count(" ") >= 1 else ""
                if code.isdigit() and int(code) >= 200:
                    return status
        finally:
            self._responses.pop(call_id, None)


def b64(text: str) -> str:
    """Base64 of UTF-8 text, as AMI ``MessageSend``'s ``Base64Body`` wants it."""
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


@contextlib.contextmanager
def running_lab(run_dir: Path, port_base: int, **kwargs: object) -> Iterator[LabPbx]:
    """``with running_lab(dir, base) as lab:`` — start a lab and always stop it."""
    lab = LabPbx(run_dir, port_base, **kwargs)  # type: ignore[arg-type]
    lab.start()
    try:
        yield lab
    finally:
        lab.stop()
