"""`textback-route`: the AGI Asterisk runs for each inbound call to choose its route.

Called from the dialplan (asterisk/extensions_textback.conf) as
`AGI(/opt/textback/bin/textback-route,<DID>)`. It reads the routing settings and
the business hours from the same database and with the same schedule code as
the agent, and answers with channel variables (TEXTBACK_ROUTE, TEXTBACK_RING…).

Calls must never depend on textback: every failure — no config, database
missing or locked, a bad row, an exception, no answer within DEADLINE_SECONDS —
ends in `TEXTBACK_ROUTE=fallback`, which the dialplan turns into its own
defaults, and the reason goes to Asterisk's log (VERBOSE) and to stderr.

A new process starts per call, so it imports only the standard library, pyst2
and the stdlib-only modules routing and schedule (no SQLAlchemy: ~300 ms).
It reads only `[database] url` from the config file, never the AMI secret:
it runs as Asterisk's user, which need not be able to read it.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import os
import signal
import sqlite3
import sys
import time
import tomllib
from pathlib import Path
from types import FrameType
from typing import Any

from asterisk.agi import AGI

from agent.config import DatabaseConfig, resolve_path
from agent.rules import routing

log = logging.getLogger(__name__)

# The caller hears silence while this runs: past this, ring the fallback instead.
DEADLINE_SECONDS = routing.DEADLINE_SECONDS
# How long to wait for a SQLite lock (the agent or the web UI writing).
LOCK_WAIT_SECONDS = 0.05


class DecisionTimeout(TimeoutError):
    """The decision took longer than DEADLINE_SECONDS."""


def database_url(config_path: Path) -> str:
    """`[database] url` of the config file (the default when the table is absent)."""
    with config_path.open("rb") as handle:
        data = tomllib.load(handle)
    database = data.get("database", {})
    url = database.get("url", DatabaseConfig.url) if isinstance(database, dict) else None
    if not isinstance(url, str) or not url:
        raise ValueError(f"{config_path}: [database] url must be a string")
    return url


ROUTING_SETTINGS_SQL = (
    "SELECT key, value FROM settings WHERE key LIKE 'routing.%' OR key IN ("
    + ", ".join(f"'{key}'" for key in routing.SCHEDULE_KEYS) + ")"
)


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLAlchemy SQLite URL (sqlite:////abs/path.db); None otherwise."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.split("+", 1)[0] != "sqlite" or not rest.startswith("/"):
        return None
    path = rest[1:].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def read_settings_sqlite(path: Path, *, timeout: float = 0.05) -> dict[str, Any]:
    """The hours and routing rows, read-only, waiting at most `timeout` for a lock.

    Straight from the sqlite3 module: importing SQLAlchemy alone would cost more
    than the whole decision. Read-only (`mode=ro`) so a missing database is an
    error rather than a new empty file, and a locked one fails fast instead of
    holding the caller in silence: the caller's fallback is ringing, not waiting.
    """
    uri = Path(path).absolute().as_uri() + "?mode=ro"
    connection = sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None)
    try:
        rows = connection.execute(ROUTING_SETTINGS_SQL).fetchall()
    finally:
        connection.close()
    return {key: json.loads(value) if isinstance(value, str | bytes) else value
            for key, value in rows}


def decide(did: str, now: dt.datetime, defaults: routing.DialplanDefaults,
           config_path: Path | None = None) -> routing.Route:
    """The route for a call to `did` at `now`; a fallback route (with why) on any failure."""
    path = config_path or resolve_path(None)
    try:
        url = database_url(path)
    except FileNotFoundError:
        return routing.fallback(f"no config file {path} (set TEXTBACK_CONFIG in the "
                                "environment of Asterisk, or run textback init)")
    except (OSError, ValueError) as error:  # TOMLDecodeError is a ValueError
        return routing.fallback(f"config {path} unusable: {error}")
    database = sqlite_path(url)
    if database is None:
        return routing.fallback("the database is not SQLite; the AGI reads SQLite only, "
                                "use the agent's FastAGI server ([agi] enabled = true)")
    try:
        values = read_settings_sqlite(database, timeout=LOCK_WAIT_SECONDS)
    except sqlite3.Error as error:
        detail = str(error)
        if "unable to open" in detail:
            detail = "missing or unreadable (unable to open database file)"
        return routing.fallback(f"database {database} {detail}")
    return routing.route_call(values, did, now, defaults)


def _deadline(_signum: int, _frame: FrameType | None) -> None:
    raise DecisionTimeout


class _Session:
    """The AGI conversation with Asterisk (pyst2), kept quiet: pyst2 echoes the whole
    AGI environment — caller ID included — to stderr, which is Asterisk's log."""

    def __init__(self) -> None:
        stdin = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace")
        self._quiet = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
        self.agi = AGI(stdin=stdin, stdout=sys.stdout, stderr=self._quiet)

    @property
    def env(self) -> dict[str, str]:
        return self.agi.env

    def get(self, name: str) -> str:
        return str(self.agi.get_variable(name))

    def set(self, name: str, value: str) -> None:
        self.agi.set_variable(name, value)

    def verbose(self, text: str) -> None:
        self.agi.verbose(routing.safe_text(text, 400), 1)


def _setup_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(
        f"textback-route[{os.getpid()}] %(levelname)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])


def main() -> int:
    """Run one AGI request; always exits 0 (the dialplan reads the variables, not the code)."""
    started = time.monotonic()
    _setup_logging()
    try:
        session = _Session()
    except Exception as error:  # no AGI conversation: the dialplan's fallback takes over
        log.error("no AGI session with Asterisk (%s); the dialplan falls back", error)
        return 0
    raw_did = session.env.get("agi_arg_1", "") or session.env.get("agi_extension", "")
    caller = routing.safe_text(session.env.get("agi_callerid", ""), 40)
    previous = signal.signal(signal.SIGALRM, _deadline)
    signal.setitimer(signal.ITIMER_REAL, DEADLINE_SECONDS)
    did = routing.safe_text(raw_did, 40)
    try:
        did = routing.parse_did(raw_did)
        defaults = routing.DialplanDefaults.from_channel(
            session.get("TEXTBACK_FALLBACK_RING"),
            session.get("TEXTBACK_FALLBACK_VOICEMAIL"),
        )
        route = decide(did, dt.datetime.now(dt.UTC), defaults)
    except Exception as error:  # whatever failed, the phones keep ringing
        route = routing.fallback_for(error)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    elapsed_ms = (time.monotonic() - started) * 1000
    summary = route.summary(did, caller, elapsed_ms)
    route.log(summary)
    try:
        for name, value in route.channel_variables().items():
            session.set(name, value)
        session.verbose(f"textback-route: {'FALLBACK ' if route.kind == 'fallback' else ''}"
                        f"{summary}")
    except Exception as error:  # the caller hung up, or Asterisk went away
        log.warning("could not hand the route to Asterisk: %s", error)
    return 0


if __name__ == "__main__":
    sys.exit(main())
