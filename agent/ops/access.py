"""What the service's user may do: read the config and the secrets, write the database,
open the modem's port. Each answer comes with the exact command that fixes it.

`textback doctor` is often run as root while the units run as `textback`, and root
may read and write everything, so root's own success proves nothing. As root, each
probe runs in a forked child that became the service's user (its groups and the
unit's SupplementaryGroups=, its gid, its uid) and tries for real: `open()`,
`os.access()`, a SQLite write transaction.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# the User= of the shipped units (systemd/textback-agent.service)
SERVICE_USER = "textback"
UNIT_FILES = tuple(Path(directory) / "textback-agent.service" for directory in
                   ("/etc/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system"))


@dataclass(frozen=True)
class Account:
    """A user as a service runs as it: uid, primary gid, every group it holds."""

    name: str
    uid: int
    gid: int
    group: str  # the primary group's name
    groups: tuple[int, ...]

    @property
    def owner(self) -> str:
        """`user:group` for chown."""
        return f"{self.name}:{self.group}"


@dataclass(frozen=True)
class Unit:
    """Who the installed agent unit runs as (the shipped defaults when none is installed)."""

    user: str = SERVICE_USER
    supplementary_groups: tuple[str, ...] = ("dialout",)
    path: Path | None = None


def installed_unit(files: tuple[Path, ...] | None = None) -> Unit:
    """User= and SupplementaryGroups= of the first textback-agent unit installed."""
    for path in UNIT_FILES if files is None else files:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError:
            continue
        user = re.findall(r"^\s*User=(\S+)\s*$", text, re.MULTILINE)
        groups = re.findall(r"^\s*SupplementaryGroups=(.*)$", text, re.MULTILINE)
        return Unit(user[-1] if user else "root",
                    tuple(name for line in groups for name in line.split()), path)
    return Unit()


def account(name: str, extra_groups: tuple[str, ...] = ()) -> Account | None:
    """The user `name` as a unit with SupplementaryGroups=`extra_groups` runs it; None
    when there is no such user."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    gids = set(os.getgrouplist(name, entry.pw_gid))
    for group in extra_groups:
        try:
            gids.add(grp.getgrnam(group).gr_gid)
        except KeyError:
            continue
    try:
        group_name = grp.getgrgid(entry.pw_gid).gr_name
    except KeyError:
        group_name = str(entry.pw_gid)
    return Account(name, entry.pw_uid, entry.pw_gid, group_name, tuple(sorted(gids)))


def current() -> Account:
    """The user this process runs as."""
    uid = os.geteuid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = str(uid)
    gid = os.getegid()
    try:
        group = grp.getgrgid(gid).gr_name
    except KeyError:
        group = str(gid)
    return Account(name, uid, gid, group, tuple(os.getgroups()))


def as_user(user: Account, probe: Callable[[], Any]) -> Any:
    """`probe()` run as `user` (a JSON-able result); in this process when we are that
    user already, else in a forked child that drops to it (which needs root)."""
    if user.uid == os.geteuid():
        return probe()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: become the user, probe, report, and leave at once
        try:
            os.close(read_end)
            os.setgroups(list(user.groups))
            os.setgid(user.gid)
            os.setuid(user.uid)
            answer = {"result": probe()}
        except BaseException as exc:  # whatever it is, the parent reports it
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        try:
            with os.fdopen(write_end, "w") as pipe:
                json.dump(answer, pipe)
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        text = pipe.read()
    os.waitpid(pid, 0)
    answer = json.loads(text) if text else {"error": "the probe died"}
    if "error" in answer:
        raise RuntimeError(f"checking as {user.name} failed: {answer['error']}")
    return answer["result"]


# -- probes: run as the user, return None when fine, else what failed --------------------

def read_problem(path: Path) -> str | None:
    """Can this process read `path`? None, or the reason (Permission denied…)."""
    try:
        with open(path, "rb") as handle:
            handle.read(1)
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def device_problem(path: Path) -> str | None:
    """May this process open `path` for reading and writing? Asked with access(2), not
    open(): closing a modem's port may hang it up."""
    return None if os.access(path, os.R_OK | os.W_OK) else "Permission denied"


def database_problem(path: Path) -> dict[str, Any] | None:
    """Can this process write the SQLite file `path`? None, or {"paths": what is not
    writable, "error": SQLite's words}. A WAL database also needs to create its -wal and
    -shm files in the directory, so the directory is checked as well as the file."""
    directory = path.parent
    if not directory.is_dir():  # `textback migrate` makes it when its parent allows
        parent = next(p for p in directory.parents if p.is_dir())
        if os.access(parent, os.W_OK | os.X_OK):
            return None
        return {"paths": [], "missing": str(directory),
                "error": f"no such directory, and {parent} is not writable"}
    paths = [] if os.access(directory, os.W_OK | os.X_OK) else [str(directory)]
    for name in (path, *_wal_files(path)):
        if name.exists() and not os.access(name, os.R_OK | os.W_OK):
            paths.append(str(name))
    if not path.exists():  # created by `textback migrate` when the directory allows it
        return {"paths": paths, "error": "Permission denied"} if paths else None
    try:
        connection = sqlite3.connect(f"{path.absolute().as_uri()}?mode=rw", uri=True,
                                     timeout=5, isolation_level=None)
        try:
            connection.execute("BEGIN IMMEDIATE")
            connection.execute("ROLLBACK")
        finally:
            connection.close()
    except sqlite3.Error as exc:  # with no path to blame (locked, damaged…): "paths" is []
        return {"paths": paths, "error": str(exc)}
    return {"paths": paths, "error": "Permission denied"} if paths else None


def _wal_files(path: Path) -> tuple[Path, Path]:
    return path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")


# -- fixes ---------------------------------------------------------------------------------

def secret_fix(path: Path, user: Account) -> str:
    """Let `user` read a secret or the config file, and nobody else."""
    return f"chown root:{user.group} {path} && chmod 640 {path}"


def database_fix(path: Path, user: Account, problem: dict[str, Any] | None = None) -> str:
    """The commands (as root) that give `user` the SQLite database `path`: its directory
    and the file, with the -wal and -shm files that exist."""
    directory = path.parent
    if problem and problem.get("missing"):
        return f"install -d -o {user.name} -g {user.group} -m 750 {directory}"
    files = [name for name in (path, *_wal_files(path)) if name.exists()]
    targets = " ".join(str(name) for name in (directory, *files))
    fix = f"chown {user.owner} {targets} && chmod 750 {directory}"
    if files:
        fix += f" && chmod 600 {' '.join(str(name) for name in files)}"
    return fix


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLAlchemy SQLite URL; None for other databases and :memory:."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.split("+", 1)[0] != "sqlite" or not rest.startswith("/"):
        return None
    name = rest[1:].split("?", 1)[0]
    return Path(name) if name and name != ":memory:" else None


def unwritable_database(url: str) -> str | None:
    """One line for IT staff when this process cannot write the SQLite database of
    `url`: the file, why, and the commands that fix it; None when it can (or the
    database is not SQLite)."""
    path = sqlite_file(url)
    if path is None:
        return None
    problem = database_problem(path)
    if problem is None or (not problem["paths"] and not problem.get("missing")):
        return None
    user = current()
    where = ", ".join(problem["paths"]) or problem.get("missing", str(path))
    return (f"the database {path} is not writable by {user.name} ({where}: "
            f"{problem['error']}); as root run: {database_fix(path, user, problem)}")
