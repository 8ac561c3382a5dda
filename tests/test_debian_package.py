"""The Debian package, for real: deb/build makes the .deb (as `make deb` does) and apt
installs it into a throw-away Debian 12 root made by mmdebstrap, where the units'
commands run as their User= the way systemd runs them (runuser with the unit's
groups, environment and umask); then an upgrade over a database with data, a
reinstall, a remove and a purge.

The base root (essential packages, apt, python3, python3-venv, adduser) is made once
per machine and cached as ~/.cache/textback/bookworm-root-*.tar; each test run
extracts it into a temporary directory. Needs root (chroot) and mmdebstrap (`make
test` installs it). No systemd runs inside the root: the first install takes the
maintainer scripts' path for that (units enabled, nothing started), and the upgrade
runs under a stand-in systemctl that logs what the scripts stop and start.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shlex
import shutil
import signal
import socket
import sqlite3
import subprocess
import time
import tomllib
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.deb, pytest.mark.timeout(900)]

TOP = Path(__file__).resolve().parent.parent
SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "adduser")
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "textback"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CONF = "/etc/textback/textback.toml"
# the units the package enables: every file of systemd/ with an [Install] section
WANTED_BY = {unit.name: m[1] for unit in sorted((TOP / "systemd").iterdir())
             if (m := re.search(r"(?m)^WantedBy=(\S+)", unit.read_text()))}

if os.geteuid() != 0:
    pytest.skip("installing the package in a chroot needs root", allow_module_level=True)
if not shutil.which("mmdebstrap") or not shutil.which("dpkg-deb"):
    pytest.skip("mmdebstrap is not installed (make mmdebstrap installs it)",
                allow_module_level=True)


def _version() -> str:
    with open(TOP / "pyproject.toml", "rb") as handle:
        return str(tomllib.load(handle)["project"]["version"])


def _next_version(version: str) -> str:
    head, _, last = version.rpartition(".")
    return f"{head}.{int(last) + 1}" if last.isdigit() else f"{version}.1"


class Root:
    """A Debian root in a directory, run by chroot with a clean environment."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __truediv__(self, inside: str) -> Path:
        return self.path / inside.lstrip("/")

    def command(self, *argv: str) -> list[str]:
        return ["env", "-i", f"PATH={PATH}", "LANG=C.UTF-8", "DEBIAN_FRONTEND=noninteractive",
                "chroot", str(self.path), *argv]

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(self.command(*argv), capture_output=True, text=True,
                              timeout=300)
        if check and done.returncode != 0:
            raise AssertionError(f"{shlex.join(argv)} exited {done.returncode}\n"
                                 f"{done.stdout}\n{done.stderr}")
        return done

    def apt(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run("apt-get", "-y", "-q", *args)

    def install(self, deb: Path, *options: str) -> subprocess.CompletedProcess[str]:
        shutil.copy(deb, self / "tmp")
        return self.apt("install", *options, f"/tmp/{deb.name}")

    def user_groups(self, user: str) -> list[str]:
        return self.run("id", "-nG", user).stdout.split()

    def unit(self, name: str) -> dict[str, list[str]]:
        """The [Service] keys of an installed unit, each with its values in order."""
        keys: dict[str, list[str]] = {}
        section = ""
        for line in (self / f"/lib/systemd/system/{name}").read_text().splitlines():
            line = line.strip()
            if line.startswith("["):
                section = line
            elif section == "[Service]" and "=" in line and not line.startswith("#"):
                key, value = line.split("=", 1)
                keys.setdefault(key.strip(), []).append(value.strip())
        return keys

    def as_unit(self, name: str, command: str) -> list[str]:
        """`command` of unit `name` as systemd runs it: User=, Group=, the user's groups
        and SupplementaryGroups=, a fresh environment with Environment=, UMask=, cwd /."""
        unit = self.unit(name)
        user, group = unit["User"][0], unit["Group"][0]
        extra = [g for v in unit.get("SupplementaryGroups", []) for g in v.split()]
        groups = [g for g in dict.fromkeys(self.user_groups(user) + extra) if g != group]
        home = self.run("getent", "passwd", user).stdout.split(":")[5]
        env = [f"PATH={PATH}", f"HOME={home}", f"USER={user}", f"LOGNAME={user}",
               "SHELL=/usr/sbin/nologin", "LANG=C.UTF-8"]
        env += [item for v in unit.get("Environment", []) for item in shlex.split(v)]
        umask = unit.get("UMask", ["0022"])[0]
        argv = shlex.split(command.lstrip("-@:+!"))
        return self.command(
            "runuser", "-u", user, "-g", group, *[a for g in groups for a in ("-G", g)], "--",
            "env", "-i", *env, "sh", "-c", f'umask {umask}; cd /; exec "$@"', "sh", *argv)

    def run_as_unit(self, name: str, command: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(self.as_unit(name, command), capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, f"{command}: {done.stdout}\n{done.stderr}"
        return done

    def textback(self, *args: str) -> subprocess.CompletedProcess[str]:
        """A textback command as the README says to run one: as the textback user."""
        return self.run("runuser", "-u", "textback", "--", "textback", *args)

    def processes(self, cmdline: str) -> list[tuple[int, int, set[int]]]:
        """uid, gid and groups of each Python process of the virtualenv in this root
        whose command line contains `cmdline` (from the host's /proc: the root has none
        mounted)."""
        found = []
        for proc in Path("/proc").iterdir():
            try:
                if os.readlink(proc / "root") != str(self.path):
                    continue
                command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                status = (proc / "status").read_text()
            except OSError:
                continue
            if command.startswith("/opt/textback/bin/python") and cmdline in command:
                ids = {line.split(":")[0]: line.split()[1:] for line in status.splitlines()}
                found.append((int(ids["Uid"][0]), int(ids["Gid"][0]),
                              {int(g) for g in ids["Groups"]}))
        return found

    def credentials(self, user: str, extra: list[str]) -> tuple[int, int, set[int]]:
        """The uid, gid and groups systemd gives a unit with User=user (its groups in
        /etc/group, its own group, and the unit's SupplementaryGroups=)."""
        entry = self.run("getent", "passwd", user).stdout.split(":")
        names = self.user_groups(user) + [g for v in extra for g in v.split()]
        gids = {int(self.run("getent", "group", n).stdout.split(":")[2]) for n in names}
        return int(entry[2]), int(entry[3]), gids

    def stat(self, inside: str) -> tuple[str, str, int]:
        owner, group, mode = self.run("stat", "-c", "%U %G %a", inside).stdout.split()
        return owner, group, int(mode, 8)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def _running(argv: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def _wait_for(predicate: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


# -- fixtures ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def arch() -> str:
    return subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True,
                          check=True).stdout.strip()


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory,
           arch: str) -> dict[str, tuple[Path, subprocess.Popen[str]]]:
    """This tree's package at pyproject's version and at the next one (the upgrade),
    built side by side by deb/build, the script behind `make deb`; started here, while
    the Debian root is made or unpacked, and waited for by `debs`."""
    out = tmp_path_factory.mktemp("debs")
    return {v: (out / f"textback_{v}_{arch}.deb",
                subprocess.Popen([str(TOP / "deb/build"), "--arch", arch, "--version", v,
                                  "--out", str(out)], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True))
            for v in (_version(), _next_version(_version()))}


@pytest.fixture(scope="module")
def debs(builds: dict[str, tuple[Path, subprocess.Popen[str]]]) -> dict[str, Path]:
    for deb, build in builds.values():
        _stdout, stderr = build.communicate(timeout=600)
        assert build.returncode == 0, stderr
        assert deb.exists()
    return {version: deb for version, (deb, _) in builds.items()}


def _base_root(suite: str) -> Path:
    """A minimal Debian `suite` with python3 and python3-venv, as a cached tarball."""
    recipe = f"{suite} apt {' '.join(BASE_PACKAGES)}"
    tarball = CACHE / f"{suite}-root-{hashlib.sha256(recipe.encode()).hexdigest()[:10]}.tar"
    if not tarball.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        partial = tarball.with_suffix(f".{os.getpid()}.partial")
        done = subprocess.run(["mmdebstrap", "--quiet", "--variant=apt", "--format=tar",
                               f"--include={','.join(BASE_PACKAGES)}", suite, str(partial)],
                              capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr[-3000:]
        partial.rename(tarball)
    return tarball


@pytest.fixture(scope="module")
def base_root() -> Path:
    return _base_root(SUITE)


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory, builds: object, base_root: Path,
           request: pytest.FixtureRequest) -> Root:
    """A fresh Debian 12 root with the first package installed by apt (removed after
    the module: a root is about 300 MB)."""
    root = Root(tmp_path_factory.mktemp("bookworm"))
    request.addfinalizer(lambda: shutil.rmtree(root.path, ignore_errors=True))
    subprocess.run(["tar", "-xf", str(base_root), "-C", str(root.path)], check=True)
    debs: dict[str, Path] = request.getfixturevalue("debs")
    first = next(iter(debs.values()))
    installed = root.install(first)
    assert "textback doctor" in installed.stdout  # the next steps after a first install
    # the agent must not reach an Asterisk of this machine, and the web UI needs a port
    conf = root / CONF
    text = conf.read_text()
    text = re.sub(r"(?m)^port = 5038$", f"port = {_free_port()}", text)
    text = re.sub(r"(?m)^port = 8080$", f"port = {_free_port()}", text)
    conf.write_text(text)
    return root


# -- the tests -------------------------------------------------------------------------


def test_install_lays_out_files_user_and_permissions(system: Root) -> None:
    root = system
    # the program: a virtualenv for the target's own python3, commands on the PATH
    venv_cfg = (root / "/opt/textback/pyvenv.cfg").read_text()
    assert "home = /usr/bin" in venv_cfg
    assert os.readlink(root / "/usr/bin/textback") == "/opt/textback/bin/textback"
    assert os.readlink(root / "/usr/bin/textback-route") == "/opt/textback/bin/textback-route"
    assert "agent" in root.run("textback", "--help").stdout
    # the user and its groups
    assert root.run("getent", "passwd", "textback").stdout.split(":")[5] == "/var/lib/textback"
    assert "dialout" in root.user_groups("textback")
    # configuration: made by textback init; the secrets readable by textback's group only
    assert root.stat("/etc/textback") == ("root", "textback", 0o750)
    assert root.stat(CONF) == ("root", "textback", 0o640)
    for secret in ("/etc/textback/ami.secret", "/etc/textback/web.secret"):
        assert root.stat(secret) == ("root", "textback", 0o640), secret
    assert root.stat("/var/lib/textback") == ("textback", "textback", 0o750)
    owner, _, mode = root.stat("/var/lib/textback/textback.db")
    assert owner == "textback" and mode & 0o007 == 0
    # units (every file of systemd/), enabled and not started; udev rule; snippets; docs
    for unit in (TOP / "systemd").iterdir():
        assert (root / f"/lib/systemd/system/{unit.name}").read_text() == unit.read_text()
    assert {"textback-agent.service", "textback-web.service"} <= WANTED_BY.keys()
    for unit, target in WANTED_BY.items():
        link = root / f"/etc/systemd/system/{target}.wants/{unit}"
        assert os.readlink(link) == f"/lib/systemd/system/{unit}"
    assert (root / "/lib/udev/rules.d/99-textback-modem.rules").exists()
    for conf in (TOP / "asterisk").glob("*.conf"):
        assert (root / f"/usr/share/textback/asterisk/{conf.name}").exists()
    for doc in ("README.md", "ARCHITECTURE.md", "asterisk/README.md", "hardware/README.md",
                "copyright", "changelog.gz"):
        assert (root / f"/usr/share/doc/textback/{doc}").exists(), doc
    # nothing the package installed is writable by others
    writable = root.run("find", "/opt/textback", "/etc/textback", "/var/lib/textback",
                        "/usr/share/textback", "-perm", "-o+w", "-not", "-type", "l").stdout
    assert writable == ""


def test_units_run_as_their_user(system: Root, tmp_path: Path) -> None:
    root = system
    agent = root.unit("textback-agent.service")
    web = root.unit("textback-web.service")
    assert agent["ExecStartPre"] == web["ExecStartPre"] == ["/opt/textback/bin/textback migrate"]
    for command in agent["ExecStartPre"]:
        assert "database at revision" in root.run_as_unit("textback-agent.service",
                                                          command).stdout
    # the agent starts, finds no Asterisk and keeps trying, as textback
    log = tmp_path / "agent.log"
    with _running(root.as_unit("textback-agent.service", agent["ExecStart"][0]), log) as proc:
        _wait_for(lambda: "reconnecting to AMI" in log.read_text(), 60,
                  f"an AMI retry in {log}")
        assert proc.poll() is None, log.read_text()
        assert root.processes("/opt/textback/bin/textback agent") == [
            root.credentials("textback", agent["SupplementaryGroups"])], "the agent's ids"
    text = log.read_text()
    assert "cannot connect to AMI" in text
    for problem in ("Traceback", "Permission denied", "PermissionError", "readonly",
                    "readable by others"):
        assert problem not in text, text
    # the web UI: its migrate, then it serves /healthz from the database
    for command in web["ExecStartPre"]:
        root.run_as_unit("textback-web.service", command)
    port = tomllib.loads((root / CONF).read_text())["web"]["port"]
    log = tmp_path / "web.log"
    with _running(root.as_unit("textback-web.service", web["ExecStart"][0]), log) as proc:
        def healthy() -> bool:
            assert proc.poll() is None, log.read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False
        _wait_for(healthy, 60, "the web UI's /healthz")
    assert "Traceback" not in log.read_text()
    # settings from the shell, as the textback user
    root.textback("settings", "set", "business.name", "Rapid Rooter Plumbing")
    assert "Rapid Rooter Plumbing" in root.textback("settings", "list").stdout
    # textback doctor, as root like the next steps say: only Asterisk is missing here
    doctor = root.run("textback", "doctor", check=False)
    failed = [line for line in doctor.stdout.splitlines() if line.startswith("FAIL")]
    assert doctor.returncode == 1 and failed and all("AMI" in f for f in failed), doctor.stdout
    # whatever the units and commands wrote belongs to textback and nobody else
    listing = root.run("find", "/var/lib/textback", "-printf", "%u:%g %m %p\\n").stdout
    for line in listing.splitlines():
        owner, mode, _path = line.split(" ", 2)
        assert owner == "textback:textback", line
        assert int(mode, 8) & 0o007 == 0, line


# systemctl as the maintainer scripts use it: is-active answers from /run/active-units,
# every call is logged, and a start notes which backups exist at that moment
SYSTEMCTL = """#!/bin/sh
echo "$*" >> /run/systemctl.log
case "$1" in
  --quiet) shift ;;
esac
case "$1" in
  is-active) for unit; do :; done; grep -qx "$unit" /run/active-units ;;
  start) echo "backups: $(ls /var/lib/textback/backups)" >> /run/systemctl.log ;;
esac
"""

ADD_CALLS = """
import datetime as dt
from agent import config
from agent.store.db import make_engine, sessions
from agent.store.models import Call
cfg = config.load()
now = dt.datetime.now(dt.UTC)
with sessions(make_engine(cfg.database.url))() as session, session.begin():
    for n in range(3):
        session.add(Call(linkedid=f"deb-{n}", caller=f"+1555000000{n}", direction="inbound",
                         missed=True, reason="noanswer", started_at=now, ended_at=now))
"""


def _count_calls(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(db)) as con:
        return int(con.execute("SELECT count(*) FROM calls WHERE linkedid LIKE 'deb-%'")
                   .fetchone()[0])


def test_upgrade_reinstall_remove_purge(system: Root, debs: dict[str, Path]) -> None:
    root = system
    first, second = debs
    agent_unit = "textback-agent.service"
    # a database with calls and settings
    root.run_as_unit(agent_unit, "/opt/textback/bin/python -c " + shlex.quote(ADD_CALLS))
    root.textback("settings", "set", "textback.cooldown", "12h")
    with (root / CONF).open("a") as conf:
        conf.write("# edited by the admin\n")
    kept = {name: (root / f"/etc/textback/{name}").read_bytes()
            for name in ("textback.toml", "ami.secret", "web.secret")}
    db = root / "/var/lib/textback/textback.db"

    def unchanged() -> None:
        for name, content in kept.items():
            assert (root / f"/etc/textback/{name}").read_bytes() == content, name
        assert _count_calls(db) == 3
        assert root.textback("settings", "get", "textback.cooldown").stdout.strip() == '"12h"'

    # upgrade, with the agent and the web UI running under a stand-in systemd (the
    # maintainer scripts see /run/systemd/system and call this systemctl): stopped,
    # a backup of the database, the migrations, then started again
    (root / "/run/systemd/system").mkdir(parents=True)
    (root / "/run/active-units").write_text("textback-agent.service\ntextback-web.service\n")
    stub = root / "/usr/bin/systemctl"  # on apt's PATH for dpkg; the root has no systemd
    assert not stub.exists()
    stub.write_text(SYSTEMCTL)
    stub.chmod(0o755)
    upgraded = root.install(debs[second])
    calls = (root / "/run/systemctl.log").read_text().splitlines()
    stop_agent = calls.index("stop textback-agent.service")
    stop_web = calls.index("stop textback-web.service")
    start = calls.index("start textback-agent.service textback-web.service")
    assert max(stop_agent, stop_web) < start
    assert f"upgrade-{first}-to-{second}" in calls[start + 1]  # the backup was there
    assert not any(c.startswith(("start", "restart")) for c in calls[start + 2:]), calls
    stub.unlink()
    shutil.rmtree(root / "/run/systemd")

    # config and data kept
    assert "textback doctor" not in upgraded.stdout  # the first-install message only
    status = root.run("dpkg-query", "-W", "-f", "${Version}", "textback").stdout
    assert status == second
    folder = f"/var/lib/textback/backups/upgrade-{first}-to-{second}"
    backups = list((root / folder).iterdir())
    assert [b.suffix for b in backups] == [".db"], backups
    assert _count_calls(backups[0]) == 3
    owner, _, mode = root.stat(f"{folder}/{backups[0].name}")
    assert owner == "textback" and mode & 0o077 == 0
    unchanged()
    root.run_as_unit(agent_unit, root.unit(agent_unit)["ExecStartPre"][0])

    # reinstall of the same version: nothing changes, no second backup
    root.install(debs[second], "--reinstall")
    unchanged()
    assert len(list((root / "/var/lib/textback/backups").iterdir())) == 1
    assert len(list((root / folder).iterdir())) == 1

    # remove: the program goes, configuration, data and the user stay
    root.apt("remove", "textback")
    assert not (root / "/opt/textback").exists()
    assert not os.path.lexists(root / "/usr/bin/textback")
    assert root.run("getent", "passwd", "textback").returncode == 0
    unchanged_files = {name: (root / f"/etc/textback/{name}").read_bytes() for name in kept}
    assert unchanged_files == kept
    assert _count_calls(db) == 3

    # installed again after a remove: the same configuration and data, no new init
    again = root.install(debs[second])
    assert "textback doctor" not in again.stdout
    unchanged()

    # purge: configuration, data, program and the user are gone
    root.apt("purge", "textback")
    for path in ("/etc/textback", "/var/lib/textback", "/opt/textback"):
        assert not (root / path).exists(), path
    assert root.run("getent", "passwd", "textback", check=False).returncode == 2
    assert root.run("getent", "group", "textback", check=False).returncode == 2
    for unit, target in WANTED_BY.items():
        assert not os.path.lexists(root / f"/etc/systemd/system/{target}.wants/{unit}")


def test_installs_on_debian_13(tmp_path_factory: pytest.TempPathFactory,
                               debs: dict[str, Path], request: pytest.FixtureRequest) -> None:
    """trixie's python3 is 3.13: the package's cp313 wheels make the same virtualenv."""
    root = Root(tmp_path_factory.mktemp("trixie"))
    request.addfinalizer(lambda: shutil.rmtree(root.path, ignore_errors=True))
    subprocess.run(["tar", "-xf", str(_base_root("trixie")), "-C", str(root.path)], check=True)
    root.install(next(iter(debs.values())))
    assert "version = 3.13." in (root / "/opt/textback/pyvenv.cfg").read_text()
    unit = "textback-agent.service"
    assert "database at revision" in root.run_as_unit(
        unit, root.unit(unit)["ExecStartPre"][0]).stdout
    root.textback("settings", "set", "business.name", "Rapid Rooter Plumbing")
    for secret in ("/etc/textback/ami.secret", "/etc/textback/web.secret"):
        assert root.stat(secret) == ("root", "textback", 0o640), secret
    assert root.stat("/var/lib/textback/textback.db") == ("textback", "textback", 0o600)
