"""Database lifetime: engines (SQLite in WAL mode by default) and Alembic migrations."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)

T = TypeVar("T")

MIGRATIONS = Path(__file__).with_name("migrations")
# SQLite: how long a writer waits for another's lock before "database is locked"
BUSY_TIMEOUT = 15.0


class DatabaseError(Exception):
    """The database cannot be used; the message says what to do."""


# the database is locked past its busy timeout, or the server is away: worth waiting for
UNAVAILABLE = (OperationalError, InterfaceError)


def driver_message(exc: Exception) -> str:
    """What the driver said, in one line (a SQLAlchemy error repeats the statement)."""
    return str(getattr(exc, "orig", None) or exc).splitlines()[0]


def make_engine(url: str) -> Engine:
    """An engine with the pragmas textback relies on.

    SQLite: WAL so the web UI can read while the agent writes; a busy timeout so
    the two processes wait for each other instead of failing; foreign keys on.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT * 1000)}")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def sessions(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def _alembic_config(engine: Engine) -> Any:
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def migrate(engine: Engine) -> str | None:
    """Bring the schema to the newest revision; returns that revision."""
    from alembic import command

    command.upgrade(_alembic_config(engine), "head")
    return current_revision(engine)


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return connection.scalar(text("SELECT version_num FROM alembic_version"))


# `revision = "0007"` / `down_revision = "0006"` (or None) at the top of each migration
_REVISION_LINE = re.compile(r'^(down_revision|revision)\b[^=\n]*=\s*(?:"([^"]*)"|None)', re.M)


def _revisions() -> dict[str, str | None]:
    """Each revision and the one it follows, read from the migration files themselves.

    The agent and the web UI check the schema at every start: Alembic's own reading
    of the scripts imports Alembic and Mako, about 14 MB of a Raspberry Pi's memory
    for the life of the agent, to learn two short strings per file.
    """
    graph: dict[str, str | None] = {}
    for script in sorted((MIGRATIONS / "versions").glob("*.py")):
        found = {name: value for name, value in _REVISION_LINE.findall(script.read_text())}
        if "revision" in found:
            graph[found["revision"]] = found.get("down_revision") or None
    return graph


def head_revision() -> str | None:
    graph = _revisions()
    heads = set(graph) - {parent for parent in graph.values() if parent}
    if len(heads) > 1:
        raise DatabaseError(f"the migrations have several heads: {sorted(heads)}")
    return next(iter(heads), None)


def known_revisions() -> set[str]:
    """Every schema revision this textback knows (an unknown one is from a newer one)."""
    return set(_revisions())


def check_schema(engine: Engine) -> None:
    """Refuse to run on a database that was never migrated or is behind the code."""
    try:
        tables = set(inspect(engine).get_table_names())
    except Exception as exc:
        raise DatabaseError(f"cannot open the database {engine.url!r}: {exc}") from exc
    if "alembic_version" not in tables:
        raise DatabaseError(
            f"the database {engine.url.render_as_string(hide_password=True)} has no textback "
            "schema; run `textback migrate` (or `textback init`)"
        )
    current, head = current_revision(engine), head_revision()
    if current != head:
        raise DatabaseError(f"the database is at revision {current}, this textback needs "
                            f"{head}; run `textback migrate`")


class DbRunner:
    """Runs database work on one dedicated thread, one transaction per call.

    The agent's event loop must keep reading AMI (and answering pings) even while
    SQLite waits for a lock held by the web UI, so no query runs on the loop; one
    thread keeps writes in order and SQLite free of writer contention.

    Each thread keeps its connection rather than taking one from the pool for every
    transaction: a missed call is three short transactions, and the pool's check-out,
    reset and check-in cost more than their statements. A connection the server
    dropped (a PostgreSQL restart) is replaced, and the work run again once on the new
    one: its transaction was rolled back with the old.
    """

    def __init__(self, engine: Engine) -> None:
        import threading
        from concurrent.futures import ThreadPoolExecutor

        self.engine = engine
        self.sessions = sessions(engine)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="textback-db")
        self._local = threading.local()
        self._opened: set[Connection] = set()

    async def __call__(self, work: Callable[[Session], T]) -> T:
        import asyncio

        return await asyncio.get_running_loop().run_in_executor(self._pool, self.run, work)

    def _connection(self) -> Connection:
        connection: Connection | None = getattr(self._local, "connection", None)
        if connection is None or connection.closed or connection.invalidated:
            if connection is not None:
                connection.close()
                self._opened.discard(connection)  # close() may have closed it
            connection = self._local.connection = self.engine.connect()
            self._opened.add(connection)
        return connection

    def run(self, work: Callable[[Session], T]) -> T:
        for last in (False, True):
            connection = self._connection()
            try:
                with Session(bind=connection, expire_on_commit=False) as session, \
                        session.begin():
                    return work(session)
            except DBAPIError as exc:
                if last or not exc.connection_invalidated:
                    raise
                log.warning("the database connection was lost (%s); trying again on a new "
                            "one", driver_message(exc))
        raise AssertionError("unreachable")

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        for connection in self._opened:
            connection.close()
        self._opened.clear()
        self.engine.dispose()
