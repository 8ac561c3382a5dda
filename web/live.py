"""Live updates pushed to every open page: one server-sent events stream per page.

The rows are written by other processes (the agent) and by other web workers, so the
web UI learns of them from the database itself: ONE watcher thread per web process
asks the database every POLL_SECONDS whether anything was committed (SQLite's
`PRAGMA data_version` on its own connection, PostgreSQL's transaction snapshot: a
constant-time question either way) and, only when something was, what a page must
hear of: the new customer texts and missed calls (rows past the last ids it saw) and
how many customers wait. Every stream waits on the watcher's condition; none queries.

A stream holds one of waitress's threads while the page is open, so at most
`LIVE_MAX_STREAMS` are held (`textback web` sizes its threads for them, see the
README); a page refused a stream (503), or whose stream breaks, polls the small JSON
endpoints instead and tries the stream again later. A stream ends after
STREAM_SECONDS and the browser's EventSource reconnects (with Last-Event-ID, so
nothing said meanwhile is lost), which also frees threads held by pages that
vanished without closing their connection.
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Flask, Response, current_app, request
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from agent.messages import inbox
from agent.rules import numbers
from agent.store.models import Call, Contact, Message, User
from web.auth import login_required

log = logging.getLogger(__name__)

bp = Blueprint("live", __name__, url_prefix="/live")

POLL_SECONDS = 0.25  # how often the watcher asks the database whether anything changed
PING_SECONDS = 15.0  # a comment line on a quiet stream: proxies keep it, dead peers show
STREAM_SECONDS = 300.0  # then the browser reconnects (and a vanished page's thread is free)
RETRY_MS = 2000  # what EventSource waits before reconnecting
KEPT = 500  # events kept for a page that reconnects with Last-Event-ID
PREVIEW = 120


@dataclass(frozen=True)
class Event:
    seq: int
    data: dict[str, Any]

    def encoded(self) -> bytes:
        return f"id: {self.seq}\nevent: change\ndata: {json.dumps(self.data)}\n\n".encode()


class Watcher:
    """Watches the database for commits and tells every waiting stream."""

    def __init__(self, engine: Engine, region: str) -> None:
        self.engine, self.region = engine, region
        self.sessions = sessionmaker(engine)
        self.cond = threading.Condition()
        self.events: collections.deque[Event] = collections.deque(maxlen=KEPT)
        self.seq = 0
        self.streams = 0
        self.waiting = 0
        self._last_message = self._last_call = 0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.ready = threading.Event()  # the baseline is taken: changes from now on count

    # -- the one loop ----------------------------------------------------------------
    def start(self) -> None:
        with self.cond:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="live-watcher",
                                            daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop watching and end every stream (the pages reconnect to whoever serves next)."""
        self._stop.set()
        with self.cond:
            self.cond.notify_all()

    def _run(self) -> None:
        version: object = None
        connection = None
        while not self._stop.is_set():
            try:
                if connection is None:
                    connection = self.engine.connect()
                    self._baseline()
                now = self._version(connection)
                self.ready.set()
                if version is not None and now != version:
                    self._changed()
                version = now
            except Exception:  # the database away for a moment: reconnect, never die
                log.exception("live updates: cannot read the database; retrying")
                if connection is not None:
                    connection.invalidate()
                    connection = None
                version = None
                self._stop.wait(5)
            self._stop.wait(POLL_SECONDS)

    def _version(self, connection: Any) -> object:
        """Changes whenever any connection (any process) committed a write."""
        if self.engine.dialect.name == "sqlite":
            value = connection.exec_driver_sql("PRAGMA data_version").scalar()
        else:  # PostgreSQL: the snapshot moves when a writing transaction starts or ends
            value = connection.exec_driver_sql("SELECT txid_current_snapshot()::text").scalar()
        connection.rollback()  # hold no snapshot between questions
        return value

    def _baseline(self) -> None:
        with self.sessions() as session:
            self._last_message = session.scalar(select(func.max(Message.id))) or 0
            self._last_call = session.scalar(select(func.max(Call.id))) or 0
            self.waiting = self._count_waiting(session)

    @staticmethod
    def _count_waiting(session: Session) -> int:
        return session.scalar(select(func.count()).select_from(Contact)
                              .where(inbox.waiting_clause())) or 0

    def _changed(self) -> None:
        """Something was committed: what is new for the pages, told to every stream."""
        with self.sessions() as session:
            alerts = self.alerts(session)
            self.waiting = self._count_waiting(session)
        self.publish({"waiting": self.waiting, "alerts": alerts,
                      "at": dt.datetime.now(dt.UTC).isoformat()})

    def alerts(self, session: Session) -> list[dict[str, Any]]:
        """New customer texts and missed calls since the last look."""
        found: list[dict[str, Any]] = []
        names = {}
        texts = session.scalars(select(Message).where(
            Message.id > self._last_message).order_by(Message.id).limit(200)).all()
        calls = session.scalars(select(Call).where(
            Call.id > self._last_call).order_by(Call.id).limit(200)).all()
        numbers_seen = {m.number for m in texts} | {c.caller for c in calls}
        if numbers_seen:
            names = {c.number: (c.id, c.name) for c in session.scalars(
                select(Contact).where(Contact.number.in_(numbers_seen)))}
        for message in texts:
            self._last_message = max(self._last_message, message.id)
            if message.direction == "in":
                found.append(self._alert("text", message.number, names,
                                         " ".join(message.body.split())[:PREVIEW]))
        for call in calls:
            self._last_call = max(self._last_call, call.id)
            if call.missed and call.direction == "inbound":
                found.append(self._alert("call", call.caller, names, "Missed call"))
        return found

    def _alert(self, kind: str, number: str, names: dict[str, tuple[int, str | None]],
               body: str) -> dict[str, Any]:
        contact_id, name = names.get(number, (None, None))
        shown = numbers.format_national(number, self.region) or number
        return {"kind": kind, "contact": contact_id, "who": name or shown,
                "number": shown, "body": body}

    def publish(self, data: dict[str, Any]) -> None:
        with self.cond:
            self.seq += 1
            self.events.append(Event(self.seq, data))
            self.cond.notify_all()

    # -- the streams -------------------------------------------------------------------
    def since(self, seq: int, timeout: float) -> list[Event]:
        """The events after `seq`, waiting up to `timeout` for one."""
        with self.cond:
            if self.seq <= seq:
                self.cond.wait(timeout)
            return [event for event in self.events if event.seq > seq]

    def stream(self, last: int | None, hello: dict[str, Any]) -> Iterator[bytes]:
        """What one page reads until STREAM_SECONDS pass (or it goes away)."""
        try:
            yield f"retry: {RETRY_MS}\n\n".encode()
            seq = self.seq if last is None or last > self.seq else last
            yield Event(seq, hello).encoded()
            ends = time.monotonic() + STREAM_SECONDS
            while (left := ends - time.monotonic()) > 0 and not self._stop.is_set():
                events = self.since(seq, min(PING_SECONDS, left))
                if not events:
                    yield b": ping\n\n"
                for event in events:
                    seq = event.seq
                    yield event.encoded()
        finally:
            with self.cond:
                self.streams -= 1


REQUEST_THREADS = 8  # for page loads and posts, whatever the open streams hold
MAX_STREAMS = 24  # a desk of 10-20 open pages (several tabs each), with room to spare


def threads(app: Flask) -> int:
    """Waitress's threads for `app`: one per live stream it may hold, plus the others."""
    return REQUEST_THREADS + int(app.config["LIVE_MAX_STREAMS"])


def watcher(app: Flask | None = None) -> Watcher:
    return (app or current_app).extensions["textback.live"]


def init_app(app: Flask, engine: Engine) -> None:
    app.config.setdefault("LIVE_MAX_STREAMS", MAX_STREAMS)
    app.extensions["textback.live"] = Watcher(engine, app.config["REGION"])

    @app.context_processor
    def alerts_setting() -> dict[str, Any]:
        def live_alerts() -> bool:
            """The signed-in user's choice of sound and desktop alerts (base.html)."""
            from flask_login import current_user

            from web.db import get_session

            me = get_session().get(User, current_user.user_id)
            return bool(me and me.desk_alerts)

        return {"live_alerts": live_alerts}


@bp.get("/stream")
@login_required
def stream() -> Any:
    live = watcher()
    live.start()  # lazily: an app only created (a test, a command) starts no thread
    with live.cond:
        if live.streams >= current_app.config["LIVE_MAX_STREAMS"]:
            log.warning("live updates: %d streams open, this page polls instead",
                        live.streams)
            return Response("too many open pages; this one polls\n", status=503,
                            mimetype="text/plain")
        live.streams += 1
    raw = request.headers.get("Last-Event-ID", "")
    hello = {"waiting": live.waiting, "alerts": [], "hello": True}
    response = Response(live.stream(int(raw) if raw.isdigit() else None, hello),
                        mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"  # nginx in front: pass each event on
    return response
