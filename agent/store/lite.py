"""The settings rows and the audit log of a SQLite database through the sqlite3 module
alone, for the commands that must start fast (`textback settings get/list/set`).

Importing SQLAlchemy and Alembic costs far more than the whole command (about 0.4 s
on a Raspberry Pi class machine; `bench/startup` measures it), so these commands read
and write the two tables they need here, in the formats SQLAlchemy uses for them:
JSON as `json.dumps` writes it, times as naive UTC `YYYY-MM-DD HH:MM:SS.ffffff`. The
schema check is the one `db.check_schema` makes, with the head revision read from
the migration files' `revision = "…"` lines instead of through Alembic.
Standard library only; PostgreSQL goes through SQLAlchemy as before.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

VERSIONS = Path(__file__).with_name("migrations") / "versions"
_REVISION = re.compile(r'^(down_revision|revision)\s*(?::[^=]*)?=\s*["\']?([^"\'\s]*)',
                       re.MULTILINE)


class Unusable(Exception):
    """The database cannot be used as it is; the message says what to do."""


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLAlchemy SQLite URL (sqlite:////abs/path.db, sqlite:///rel.db);
    None for other databases and in-memory ones."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.split("+", 1)[0] != "sqlite" or not rest.startswith("/"):
        return None
    name = rest[1:].split("?", 1)[0]
    return Path(name) if name and name != ":memory:" else None


def head_revision(versions: Path = VERSIONS) -> str | None:
    """The newest migration: the revision no other one names as its down_revision."""
    revisions, parents = set(), set()
    for script in versions.glob("*.py"):
        found = dict((name, value) for name, value in
                     _REVISION.findall(script.read_text(encoding="utf-8")))
        if found.get("revision"):
            revisions.add(found["revision"])
        if found.get("down_revision") not in (None, "", "None"):
            parents.add(found["down_revision"])
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


@contextmanager
def connect(path: Path, *, write: bool = False) -> Iterator[sqlite3.Connection]:
    """A connection to the migrated textback database at `path`, checked as
    `db.check_schema` checks it. With `write`, one transaction that holds the write
    lock from the start and commits when the block ends (rolled back on an error)."""
    url = f"sqlite:///{path}"
    if not path.exists():
        raise Unusable(f"the database {url} has no textback schema; run `textback migrate` "
                       "(or `textback init`)")
    uri = f"{path.absolute().as_uri()}?mode={'rw' if write else 'ro'}"
    try:
        connection = sqlite3.connect(uri, uri=True, timeout=15, isolation_level=None)
    except sqlite3.Error as exc:
        raise Unusable(f"cannot open the database {url}: {exc}") from None
    try:
        connection.execute("PRAGMA busy_timeout=15000")
        try:
            row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
        except sqlite3.OperationalError as exc:
            if "no such table" not in str(exc):
                raise Unusable(f"cannot open the database {url}: {exc}") from None
            raise Unusable(f"the database {url} has no textback schema; run `textback "
                           "migrate` (or `textback init`)") from None
        current, head = (row[0] if row else None), head_revision()
        if current != head:
            raise Unusable(f"the database is at revision {current}, this textback needs "
                           f"{head}; run `textback migrate`")
        if not write:
            yield connection
            return
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield connection
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")
    finally:
        connection.close()


def _json(value: Any) -> str:
    return json.dumps(value)  # SQLAlchemy's JSON type: json.dumps with its defaults


def _when(moment: dt.datetime) -> str:
    """How SQLAlchemy stores a UTC time in SQLite (models.UTCDateTime)."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime given to a UTC column")
    return moment.astimezone(dt.UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def settings(connection: sqlite3.Connection, key: str | None = None) -> dict[str, Any]:
    """The stored settings (every row, or the one of `key`) as {key: value}."""
    query, args = "SELECT key, value FROM settings", ()
    if key is not None:
        query, args = query + " WHERE key = ?", (key,)
    return {name: json.loads(value) if isinstance(value, str | bytes) else value
            for name, value in connection.execute(query, args)}


def put_setting(connection: sqlite3.Connection, key: str, value: Any,
                now: dt.datetime) -> None:
    connection.execute("INSERT INTO settings (key, value, updated_at) VALUES (?, ?, ?) "
                       "ON CONFLICT (key) DO UPDATE SET value = excluded.value, "
                       "updated_at = excluded.updated_at", (key, _json(value), _when(now)))


def delete_setting(connection: sqlite3.Connection, key: str) -> None:
    connection.execute("DELETE FROM settings WHERE key = ?", (key,))


def add_audit(connection: sqlite3.Connection, now: dt.datetime, actor: str | None,
              action: str, target: str | None, ip: str | None,
              details: dict[str, Any]) -> None:
    connection.execute("INSERT INTO audit (at, actor, action, target, ip, details) "
                       "VALUES (?, ?, ?, ?, ?, ?)",
                       (_when(now), actor, action, target, ip, _json(details)))
