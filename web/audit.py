"""The audit log (admins only): logins, failed logins, account and settings changes."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, render_template
from sqlalchemy import select

from agent.rules.settings import business_zone
from agent.store.models import AuditEntry
from web.auth import admin_required
from web.db import get_session

bp = Blueprint("audit", __name__, url_prefix="/audit")

SHOWN = 200


@bp.get("")
@admin_required
def index() -> Any:
    session = get_session()
    entries = session.scalars(select(AuditEntry).order_by(AuditEntry.id.desc()).limit(SHOWN))
    return render_template("audit/index.html", entries=list(entries),
                           zone=business_zone(session), shown=SHOWN)
