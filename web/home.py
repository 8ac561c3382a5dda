"""The start page and the health URL.

`/` opens the dashboard for anyone signed in (admin and staff alike: both want to
know whether missed calls are being recovered); signed-out visitors are sent on to
the login page by the dashboard itself.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, jsonify, redirect, url_for
from sqlalchemy import text

from agent.store import status
from web.db import get_session

bp = Blueprint("home", __name__)


@bp.get("/")
def index() -> Any:
    return redirect(url_for("dashboard.index"))


@bp.get("/healthz")
def healthz() -> Any:
    """For monitoring: 200 when the UI can read the database and the agent has no
    finished calls waiting for it; 503 otherwise, saying which."""
    try:
        get_session().execute(text("SELECT 1"))
    except Exception as exc:
        return jsonify(status="error", database=str(exc.__class__.__name__)), 503
    path = status.path_for(current_app.config["DATABASE_URL"])
    agent = status.read(path) if path is not None else None
    if agent and agent.get("calls_waiting"):
        return jsonify(status="degraded", agent=agent), 503
    return jsonify(status="ok")
