"""One database session per request, on the engine the app was created with.

The agent writes to the same database; SQLite in WAL mode (agent.store.db.make_engine)
lets the UI read while it does.
"""

from __future__ import annotations

from flask import Flask, current_app, g
from sqlalchemy.orm import Session


def get_session() -> Session:
    if "db" not in g:
        g.db = current_app.extensions["textback.sessions"]()
    session: Session = g.db
    return session


def close_session(_error: BaseException | None = None) -> None:
    session = g.pop("db", None)
    if session is not None:
        session.close()


def init_app(app: Flask) -> None:
    app.teardown_appcontext(close_session)
