"""One agent per database: a lock the agent holds for its whole life (and `textback
restore` while it replaces the database).

Two agents on one database would both watch AMI and text every missed call twice, so
the second one refuses before it touches AMI or the modem, naming the first.

SQLite: an exclusive flock() on `<database>.lock`, beside the database. The kernel
drops it when the holder exits, however it exits (kill -9 included), so the file's
existence means nothing; its content only describes the holder for the refusal.

PostgreSQL: a session-level advisory lock on a connection of its own, kept open for
the agent's lifetime, so agents on two hosts refuse each other too. The holder's
description is that connection's application_name, which the refused one reads from
pg_stat_activity.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from agent.store.db import DatabaseError

# the advisory lock's key on PostgreSQL (one bigint; under 2**31, so pg_locks shows it
# as objid with classid 0): "txbk"
ADVISORY_KEY = 0x7478626B
APPLICATION_PREFIX = "textback"
# PostgreSQL lets a backend go a moment after its client died; a new agent started
# right then (systemd restarting it) waits this long for the lock before refusing
PG_GRACE = 2.0


@dataclass(frozen=True)
class Holder:
    """Who holds a database: what (agent, restore), where, which process, since when."""

    role: str
    host: str
    pid: int
    since: dt.datetime

    def describe(self) -> str:
        return (f"host {self.host}, pid {self.pid}, since "
                f"{self.since.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S} UTC")


class LockHeld(DatabaseError):
    """Another process holds the database; the message names it in one line."""

    def __init__(self, database: str, holder: Holder | None, wanted_by: str) -> None:
        self.database, self.holder = database, holder
        who = (f"a textback {holder.role} ({holder.describe()})" if holder
               else "another textback agent (it has not said which yet)")
        then = ("only one agent may run on a database: stop that one first"
                if wanted_by == "agent" else f"stop it before the {wanted_by}")
        super().__init__(f"{who} holds the database {database}; {then} "
                         "(systemctl stop textback-agent)")


class DatabaseLock:
    """A held lock; release() (or leaving the with block) lets the next one in."""

    def __init__(self, release: Any, holder: Holder, alive: Any = None) -> None:
        self._release, self.holder = release, holder
        self._alive = alive

    @property
    def can_be_lost(self) -> bool:
        """True for PostgreSQL's lock, which lives as long as its connection."""
        return self._alive is not None

    def alive(self) -> bool:
        """False when the lock may be gone without our releasing it: PostgreSQL ended its
        connection (a server restart, a network cut). A flock lasts as long as we do."""
        return self._alive is None or self._alive()

    def release(self) -> None:
        if self._release is not None:
            self._release()
            self._release = None

    def __enter__(self) -> DatabaseLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def acquire(url: str, role: str = "agent") -> DatabaseLock:
    """Take the database's lock for this process, or raise LockHeld naming the holder."""
    me = Holder(role=role, host=socket.gethostname(), pid=os.getpid(),
                since=dt.datetime.now(dt.UTC).replace(microsecond=0))
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if not database or database == ":memory:":
            return DatabaseLock(None, me)  # a private database: nobody else can share it
        return _flock(Path(database), me)
    return _advisory(url, me)


# -- SQLite ---------------------------------------------------------------------------

def lock_path(database: Path) -> Path:
    return database.with_name(database.name + ".lock")


def _flock(database: Path, me: Holder) -> DatabaseLock:
    path = lock_path(database)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        writable = True
    except PermissionError:
        # made by another user (root ran restore, say): flock works on a read-only
        # descriptor too, only the description stays the old one
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise DatabaseError(f"cannot open the lock file {path}: {exc.strerror}; run "
                                "as the user the agent runs as") from None
        writable = False
    except OSError as exc:
        raise DatabaseError(f"cannot open the lock file {path}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_holder(fd)
        os.close(fd)
        raise LockHeld(str(database), holder, me.role) from None
    if writable:
        _give_to_database_owner(path, database)
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps({"role": me.role, "host": me.host, "pid": me.pid,
                                   "since": me.since.isoformat()}) + "\n").encode(), 0)

    def release() -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    return DatabaseLock(release, me)


def _give_to_database_owner(path: Path, database: Path) -> None:
    """Root made the lock file (restore run by root): let the agent's user open it."""
    if os.geteuid() != 0:
        return
    try:
        owner = database.stat()
        os.chown(path, owner.st_uid, owner.st_gid)
    except OSError:
        pass


def _read_holder(fd: int) -> Holder | None:
    """The holder's description; it writes it just after locking, so wait a moment."""
    deadline = time.monotonic() + 1.0
    while True:
        try:
            fields = json.loads(os.pread(fd, 4096, 0))
            return Holder(role=str(fields["role"]), host=str(fields["host"]),
                          pid=int(fields["pid"]),
                          since=dt.datetime.fromisoformat(fields["since"]))
        except (ValueError, KeyError, TypeError):
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)


# -- PostgreSQL -----------------------------------------------------------------------

def _application_name(me: Holder) -> str:
    # application_name keeps 63 bytes: the host is last, so only a very long one is cut
    name = f"{APPLICATION_PREFIX} {me.role} {me.pid} {int(me.since.timestamp())} {me.host}"
    return name.encode()[:63].decode(errors="ignore")


def _parse_application_name(name: str | None) -> Holder | None:
    parts = (name or "").split(" ", 4)
    if len(parts) != 5 or parts[0] != APPLICATION_PREFIX:
        return None
    try:
        return Holder(role=parts[1], host=parts[4], pid=int(parts[2]),
                      since=dt.datetime.fromtimestamp(int(parts[3]), dt.UTC))
    except ValueError:
        return None


HOLDER_SQL = text("""
    SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 0 AND l.objid = :key
      AND l.objsubid = 1
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
""")


def _advisory(url: str, me: Holder) -> DatabaseLock:
    shown = make_url(url).render_as_string(hide_password=True)
    # its own connection, never pooled, in autocommit (an idle transaction held for
    # days would be cut by idle_in_transaction_session_timeout); the server's
    # keepalives free the lock within about a minute when the agent's host dies
    engine = create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT",
                           connect_args={
                               "application_name": _application_name(me),
                               "options": "-c idle_session_timeout=0 "
                                          "-c idle_in_transaction_session_timeout=0 "
                                          "-c tcp_keepalives_idle=30 "
                                          "-c tcp_keepalives_interval=10 "
                                          "-c tcp_keepalives_count=3"})
    try:
        connection = engine.connect()
    except Exception as exc:
        engine.dispose()
        raise DatabaseError(f"cannot open the database {shown}: {exc}") from exc
    deadline = time.monotonic() + PG_GRACE
    try:
        while not connection.scalar(text("SELECT pg_try_advisory_lock(:key)"),
                                    {"key": ADVISORY_KEY}):
            if time.monotonic() >= deadline:
                name = connection.scalar(HOLDER_SQL, {"key": ADVISORY_KEY})
                raise LockHeld(shown, _parse_application_name(name), me.role)
            time.sleep(0.2)
    except BaseException:
        connection.close()
        engine.dispose()
        raise

    def release() -> None:
        try:
            connection.close()  # ends the session, and the lock with it
        finally:
            engine.dispose()

    def alive() -> bool:
        # the session holds the lock until it ends: a session that answers still has it
        try:
            connection.execute(text("SELECT 1"))
        except Exception:
            return False
        return True

    return DatabaseLock(release, me, alive)
