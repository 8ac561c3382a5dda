"""The web UI's clock and its one time zone.

Every page and form reads the time here (`now`, in UTC, as stored). Every time shown
on a page is in the business time zone (business.timezone) through the `local`
template filter, and the zone is named once, in the header (`business_zone` in every
template), so no page mixes UTC with local times.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

from flask import Flask, g

from agent.rules.settings import business_zone
from web.db import get_session

DEFAULT_FORMAT = "%Y-%m-%d %H:%M"


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def zone() -> ZoneInfo:
    """The business time zone, read once per request."""
    if "business_zone" not in g:
        g.business_zone = business_zone(get_session())
    found: ZoneInfo = g.business_zone
    return found


def local(at: dt.datetime | None, fmt: str = DEFAULT_FORMAT) -> str:
    """`at` as the business's wall clock; a naive time is UTC (as every column stores)."""
    if at is None:
        return ""
    if at.tzinfo is None:
        at = at.replace(tzinfo=dt.UTC)
    return at.astimezone(zone()).strftime(fmt)


def local_iso(at: dt.datetime | None) -> str:
    """For a <time datetime=…> attribute: the same instant, with its offset."""
    if at is None:
        return ""
    if at.tzinfo is None:
        at = at.replace(tzinfo=dt.UTC)
    return at.astimezone(zone()).isoformat()


def init_app(app: Flask) -> None:
    app.jinja_env.filters["local"] = local
    app.jinja_env.filters["local_iso"] = local_iso

    @app.context_processor
    def the_zone() -> dict[str, Any]:
        # only pages that draw the header ask: the zone is read lazily from the database
        return {"business_zone": zone}
