"""`textback doctor` and `textback migrate` as a new IT person meets them: run as root
they check as the user the service runs as (`nobody` here: a user who may read and
write nothing of ours until the fix is run), run as that user they check as
themselves; every failure names the exact command that fixes it, and the commands
are run here to prove they do."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from agent import config as configuration
from agent.cli import main
from agent.ops import access
from agent.ops.doctor import run_checks
from agent.store.db import make_engine, migrate

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")


@pytest.fixture
def home() -> Iterator[Path]:
    """A directory every user can reach (pytest's own tmp is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="textback-doctor-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def unreachable_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def private_file(path: Path, text: str) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    return path


def install(home: Path, ami_port: int | None = None) -> Path:
    """An install as `textback init` leaves it when run as root: everything root's."""
    etc, var = home / "etc", home / "var"
    etc.mkdir()
    secret = private_file(etc / "ami.secret", "s3cret\n")
    private_file(etc / "web.secret", "k" * 48 + "\n")
    config = etc / "textback.toml"
    config.write_text(configuration.render_default(
        ami_secret_file=str(secret), database_url=f"sqlite:///{var / 'textback.db'}",
        ami_port=ami_port or unreachable_port()))
    engine = make_engine(configuration.load(config).database.url)
    migrate(engine)
    engine.dispose()  # SQLite removes the -wal and -shm files with the last connection
    return config


def doctor(config: Path, user: str | None = None) -> list[str]:
    lines: list[str] = []
    run_checks(configuration.load(config), echo=lines.append, user=user)
    return lines


def line_after(lines: list[str], start: str) -> str:
    """The fix printed under the check that starts with `start`."""
    index = next(i for i, line in enumerate(lines) if line.startswith(start))
    assert lines[index + 1].startswith("     fix: "), lines
    return lines[index + 1].removeprefix("     fix: ")


def run_fix(fix: str) -> None:
    subprocess.run(fix, shell=True, check=True)


@as_root
def test_as_root_doctor_checks_as_the_service_user_and_its_fixes_work(home: Path) -> None:
    config = install(home)
    etc, var = config.parent, home / "var"
    lines = doctor(config, user="nobody")
    assert "ok   files checked as nobody, as asked (doctor runs as root)" in lines
    assert f"ok   {config} readable by nobody" in lines  # 0644, as init writes it
    for name in ("ami.secret", "web.secret"):
        start = f"FAIL {etc / name} not readable by nobody: Permission denied"
        assert start in lines
        assert line_after(lines, start) == (f"chown root:nogroup {etc / name} && "
                                            f"chmod 640 {etc / name}")
    database = var / "textback.db"
    start = (f"FAIL database {database} not writable by nobody ({var}, {database}: "
             "attempt to write a readonly database)")
    assert start in lines
    fix = line_after(lines, start)
    assert fix == (f"chown nobody:nogroup {var} {database} && chmod 750 {var} && "
                   f"chmod 600 {database}")
    for name in ("ami.secret", "web.secret"):
        run_fix(line_after(lines, f"FAIL {etc / name} not readable"))
    run_fix(fix)
    lines = doctor(config, user="nobody")
    for name in ("ami.secret", "web.secret"):
        assert f"ok   {etc / name} readable by nobody" in lines
    assert f"ok   database writable by nobody (sqlite:///{database})" in lines
    # the secret files as the README installs them (root:textback 0640) still load
    assert configuration.load(config).ami.secret == "s3cret"
    # and run as that user, doctor checks as itself, with the same words
    lines = access.as_user(access.account("nobody"), lambda: doctor(config))
    assert not any("files checked as" in line for line in lines)
    assert f"ok   {etc / 'ami.secret'} readable by nobody" in lines
    assert f"ok   database writable by nobody (sqlite:///{database})" in lines


@as_root
def test_a_missing_service_user_is_named_with_the_command_that_creates_it(home: Path) -> None:
    lines = doctor(install(home), user="textback-no-such-user")
    start = "FAIL user textback-no-such-user does not exist"
    assert any(line.startswith(start) for line in lines), lines
    assert line_after(lines, start).startswith(
        "useradd --system --home /var/lib/textback --groups dialout textback-no-such-user")


@as_root
def test_the_modem_port_is_checked_as_the_service_user(home: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import grp

    from agent.lab.modem_emulator import ModemEmulator

    monkeypatch.setattr(access, "UNIT_FILES", ())  # whatever this host has installed
    config = install(home)
    config.write_text(config.read_text().replace(
        'transports = ["sip"]', f'transports = ["gsm"]\n[sms.gsm]\nport = "{home}/by-id/usb-*"'))
    with ModemEmulator(home / "by-id" / "usb-SIMCOM_SIM7600-if00-port0", csq=25):
        device = os.path.realpath(next((home / "by-id").iterdir()))
        group = grp.getgrgid(os.stat(device).st_gid).gr_name
        os.chmod(device, 0o660)
        lines = doctor(config, user="nobody")
        start = f"FAIL {device} is not readable and writable by nobody"
        assert start in lines
        assert line_after(lines, start) == (f"usermod -aG {group} nobody, then "
                                            "systemctl restart textback-agent")
        os.chmod(device, 0o666)  # what joining the group does for nobody
        assert f"ok   {device} readable and writable by nobody" in doctor(config, "nobody")


@as_root
def test_as_root_without_a_unit_or_its_user_doctor_says_so_and_checks_as_root(
        home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(access, "installed_unit", lambda: access.Unit("textback-no-such-user"))
    config = install(home)
    lines = doctor(config)
    start = ("??   user textback-no-such-user does not exist (the textback units run as "
             "textback-no-such-user); files checked as root instead")
    assert start in lines  # not a failure: without an installed unit it may not be needed
    assert line_after(lines, start).startswith("useradd --system")
    assert f"ok   {home / 'etc' / 'ami.secret'} readable by root" in lines
    unit = home / "textback-agent.service"
    unit.write_text("[Service]\nUser=textback-no-such-user\n")
    monkeypatch.setattr(access, "installed_unit", lambda: access.Unit(
        "textback-no-such-user", (), unit))
    assert f"FAIL user textback-no-such-user does not exist ({unit} runs as " \
           "textback-no-such-user); files checked as root instead" in doctor(config)


def test_the_service_user_is_read_from_the_installed_unit(tmp_path: Path) -> None:
    unit = tmp_path / "textback-agent.service"
    unit.write_text("[Service]\nUser=pbxsms\nSupplementaryGroups=dialout asterisk\n")
    found = access.installed_unit((tmp_path / "missing.service", unit))
    assert (found.user, found.supplementary_groups, found.path) == (
        "pbxsms", ("dialout", "asterisk"), unit)
    assert access.installed_unit((tmp_path / "missing.service",)) == access.Unit(
        "textback", ("dialout",), None)


@as_root
def test_migrate_on_an_unwritable_database_says_the_file_and_the_fix(home: Path) -> None:
    config = install(home)
    database = home / "var" / "textback.db"
    run_fix(line_after(doctor(config, user="nobody"), "FAIL " + str(config.parent / "ami.secret")))
    CliRunner().invoke(main, ["migrate", "--config", str(config)])  # root's imports, once
    nobody = access.account("nobody")
    assert nobody is not None

    def migrate_as_nobody() -> tuple[int, str]:
        result = CliRunner().invoke(main, ["migrate", "--config", str(config)])
        return result.exit_code, result.output

    code, output = access.as_user(nobody, migrate_as_nobody)
    assert code == 1
    # root's connection above is still open, so its -wal and -shm files are there too
    files = " ".join(str(database) + tail for tail in ("", "-wal", "-shm"))
    # the cause is the operating system's or SQLite's words, whichever write came first
    # (the schema is current, so the first write is the daily figures' backfill)
    [line] = output.splitlines()
    assert re.fullmatch(
        re.escape(f"Error: the database {database} is not writable by nobody "
                  f"({database.parent}, {files.replace(' ', ', ')}: ")
        + r"(Permission denied|attempt to write a readonly database)"
        + re.escape(f"); as root run: chown nobody:nogroup {database.parent} {files} && "
                    f"chmod 750 {database.parent} && chmod 600 {files}"), line), line
    run_fix(output.split("as root run: ")[1].strip())
    code, output = access.as_user(nobody, migrate_as_nobody)
    assert (code, output.strip()) == (0, "database at revision " + output.split()[-1])


@as_root
def test_migrate_where_the_directory_cannot_be_made(home: Path) -> None:
    config = install(home)
    run_fix(f"chown root:nogroup {config.parent / 'ami.secret'} && "
            f"chmod 640 {config.parent / 'ami.secret'}")
    config.write_text(config.read_text().replace(str(home / "var"), str(home / "new" / "db")))
    (home / "new").mkdir(mode=0o755)
    nobody = access.account("nobody")
    assert nobody is not None
    problem = access.as_user(nobody, lambda: access.unwritable_database(
        configuration.load(config).database.url))
    assert problem == (f"the database {home / 'new/db/textback.db'} is not writable by nobody "
                       f"({home / 'new/db'}: no such directory, and {home / 'new'} is not "
                       f"writable); as root run: install -d -o nobody -g nogroup -m 750 "
                       f"{home / 'new/db'}")


class RefusingAmi(threading.Thread):
    """An AMI that refuses every login at once, as Asterisk does a wrong secret."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.logins = 0

    def run(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn:
                conn.sendall(b"Asterisk Call Manager/9.0.0\r\n")
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                if b"Login" not in data:  # doctor's "is anyone listening" probe
                    continue
                action_id = [line.split(b": ", 1)[1] for line in data.split(b"\r\n")
                             if line.lower().startswith(b"actionid: ")]
                self.logins += 1
                conn.sendall(b"Response: Error\r\n" + b"".join(b"ActionID: " + a + b"\r\n"
                                                             for a in action_id)
                             + b"Message: Authentication failed\r\n\r\n")
                time.sleep(0.2)


def test_a_wrong_secret_names_the_secret_file_and_fails_fast(tmp_path: Path) -> None:
    ami = RefusingAmi()
    ami.start()
    try:
        config = install(tmp_path, ami_port=ami.port)
        started = time.monotonic()
        lines = doctor(config)
        elapsed = time.monotonic() - started
    finally:
        ami.server.close()
    start = "FAIL AMI login as 'textback': AMI login as 'textback' refused by " \
            f"127.0.0.1:{ami.port}: Authentication failed"
    assert start in lines
    secret = config.parent / "ami.secret"
    assert line_after(lines, start) == (
        f"textback logs in with the secret in {secret} (ami.secret_file in {config}): "
        "make `secret =` of the [textback] user in Asterisk's manager.conf (FreePBX: "
        "manager_custom.conf) the same, with permit = 127.0.0.1/255.255.255.255; then "
        "`asterisk -rx 'manager reload'`")
    # the first refusal is the answer: no waiting through the agent's reconnect backoff
    assert ami.logins == 1 and elapsed < 6, elapsed
