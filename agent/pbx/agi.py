"""`textback-route`: the AGI Asterisk runs for each inbound call to choose its route.

Called from the dialplan (asterisk/extensions_textback.conf) as
`AGI(/opt/textback/bin/textback-route,<DID>)`. It reads the routing settings and
the business hours from the same database and with the same schedule code as
the agent, and answers with channel variables (TEXTBACK_ROUTE, TEXTBACK_RING…).

Calls must never depend on textback: every failure — no config, database
missing or locked, a bad row, an exception, no answer within DEADLINE_SECONDS —
ends in `TEXTBACK_ROUTE=fallback`, which the dialplan turns into its own
defaults, and the reason goes to Asterisk's log (VERBOSE) and to stderr.

A new process starts per call, so it imports only the standard library and the
stdlib-only modules routing and schedule (no SQLAlchemy: ~300 ms; not even
agent.config, whose dozen dataclasses cost more than the decision, nor pyst2: the
three AGI commands it needs are a few lines here). `bench/startup` measures it.
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

from agent.rules import routing

log = logging.getLogger(__name__)

# The caller hears silence while this runs: past this, ring the fallback instead.
DEADLINE_SECONDS = routing.DEADLINE_SECONDS
# How long to wait for a SQLite lock (the agent or the web UI writing).
LOCK_WAIT_SECONDS = 0.05


# agent.config's defaults (DEFAULT_PATH, $TEXTBACK_CONFIG, DatabaseConfig.url), spelt
# out so the AGI need not import it; tests/test_startup.py checks they agree
DEFAULT_CONFIG = Path("/etc/textback/textback.toml")
DEFAULT_DATABASE_URL = "sqlite:////var/lib/textback/textback.db"


class DecisionTimeout(TimeoutError):
    """The decision took longer than DEADLINE_SECONDS."""


class AgiError(Exception):
    """Asterisk refused a command, or the channel hung up."""


def configured_path() -> Path:
    """$TEXTBACK_CONFIG, else /etc/textback/textback.toml (as agent.config.resolve_path)."""
    return Path(os.environ.get("TEXTBACK_CONFIG") or DEFAULT_CONFIG)


def database_url(config_path: Path) -> str:
    """`[database] url` of the config file (the default when the table is absent)."""
    with config_path.open("rb") as handle:
        data = tomllib.load(handle)
    database = data.get("database", {})
    url = database.get("url", DEFAULT_DATABASE_URL) if isinstance(database, dict) else None
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
    path = config_path or configured_path()
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


def _quote(text: str) -> str:
    """An AGI command argument: in double quotes, with quotes and backslashes escaped
    and on one line (Asterisk's AGI parser undoes the escapes)."""
    flat = " ".join(text.splitlines())
    return '"' + flat.replace("\\", "\\\\").replace('"', '\\"') + '"'


class _Session:
    """The AGI conversation with Asterisk: its environment ("agi_x: y" lines up to a blank
    one), then one command per line, each answered "200 result=N (data)". Nothing of it
    is echoed to stderr (Asterisk's log): the environment holds the caller ID."""

    def __init__(self) -> None:
        # Asterisk sends SIGHUP when the caller hangs up: finish (and log) instead of dying
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        self._in = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace")
        self.env: dict[str, str] = {}
        while line := self._in.readline().strip():
            key, _, value = line.partition(":")
            if key.strip():
                self.env[key.strip()] = value.strip()

    def _command(self, command: str) -> tuple[str, str]:
        """Send one command; (result, data) of Asterisk's 200 answer, else AgiError."""
        sys.stdout.write(command + "\n")
        sys.stdout.flush()
        answer = self._in.readline().strip()
        code, _, rest = answer.partition(" ")
        result, _, data = rest.partition(" ")
        if code != "200" or not result.startswith("result=") or result == "result=-1":
            raise AgiError(f"{command.split(' ', 2)[:2]} answered {answer[:80]!r}")
        data = data.strip()
        return result[len("result="):], data[1:-1] if data.startswith("(") else data

    def get(self, name: str) -> str:
        result, data = self._command(f"GET VARIABLE {_quote(name)}")
        return data if result == "1" else ""

    def set(self, name: str, value: str) -> None:
        self._command(f"SET VARIABLE {_quote(name)} {_quote(value)}")

    def verbose(self, text: str) -> None:
        self._command(f"VERBOSE {_quote(routing.safe_text(text, 400))} 1")


def _setup_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(
        f"textback-route[{os.getpid()}] %(levelname)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])


def main() -> int:
    """The `textback-route` command: one AGI request, then exit 0 at once (the dialplan
    reads the variables, not the code). Leaving with os._exit skips the interpreter's
    clean-up of every module, a tenth of the AGI's time, which this process has no use for."""
    route_once()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:  # Asterisk went away: nobody is left to read it
        pass
    os._exit(0)


def route_once() -> None:
    """Answer one AGI request on stdin/stdout; never raises."""
    started = time.monotonic()
    _setup_logging()
    try:
        session = _Session()
    except Exception as error:  # no AGI conversation: the dialplan's fallback takes over
        log.error("no AGI session with Asterisk (%s); the dialplan falls back", error)
        return
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


if __name__ == "__main__":
    sys.exit(main())
