"""The dashboard: is the business recovering its missed calls, and when does it miss them?

agent.reports.dashboard counts and words the figures (its modules define each one);
web.charts turns the counts into SVG geometry; this view only renders.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, render_template, request

from agent.reports import experiment_counts
from agent.reports.dashboard import DEFINITIONS, report
from agent.reports.period import PERIODS
from agent.reports.queries import REPLY_WINDOW_DAYS
from web import charts, clock
from web.auth import login_required
from web.db import get_session

log = logging.getLogger(__name__)

bp = Blueprint("dashboard", __name__, url_prefix="/dashboard")


@bp.get("")
@login_required
def index() -> Any:
    shown = report(get_session(), request.args, clock.now())
    return render_template(
        "dashboard/index.html", period=shown.period, periods=PERIODS, errors=shown.errors,
        zone=shown.zone.key, kpis=shown.kpis,
        daily=charts.daily_chart(shown.per_day, shown.period),
        heat=charts.heat_map(shown.per_slot), weekdays=charts.WEEKDAYS,
        figures=shown.counts, tests=shown.tests, reply_days=REPLY_WINDOW_DAYS,
        definitions=DEFINITIONS,
        experiments=experiment_counts.recent(get_session(), clock.now()))
