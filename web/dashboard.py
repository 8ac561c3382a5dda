"""The dashboard: is the business recovering its missed calls, and when does it miss them?

agent.reports.dashboard counts and words the figures (its modules define each one);
web.charts turns the counts into SVG geometry; this view only renders. The same report
downloads as CSV (the key figures, the days), each chart as an SVG file, and prints
(the page's print style, or the printable page without the controls).
"""

from __future__ import annotations

import csv
import io
import logging
from typing import Any

from flask import Blueprint, Response, abort, render_template, request

from agent.reports import experiment_counts
from agent.reports.dashboard import DEFINITIONS, Dashboard, report
from agent.reports.period import PERIODS
from agent.reports.queries import REPLY_WINDOW_DAYS
from web import charts, clock
from web.auth import login_required
from web.db import get_session

log = logging.getLogger(__name__)

bp = Blueprint("dashboard", __name__, url_prefix="/dashboard")
CHARTS = ("daily", "heat")


def _shown() -> Dashboard:
    session = get_session()
    shown = report(session, request.args, clock.now())
    session.commit()  # the days it counted are kept for the next page
    return shown


def _context(shown: Dashboard) -> dict[str, Any]:
    return dict(
        period=shown.period, periods=PERIODS, errors=shown.errors, zone=shown.zone.key,
        kpis=shown.kpis, daily=charts.daily_chart(shown.per_day, shown.period),
        heat=charts.heat_map(shown.per_slot), weekdays=charts.WEEKDAYS, tests=shown.tests,
        reply_days=REPLY_WINDOW_DAYS, definitions=DEFINITIONS, previous=shown.previous_label,
        query=_period_args(), experiments=experiment_counts.recent(get_session(), clock.now()))


def _period_args() -> dict[str, str]:
    return {key: request.args[key] for key in ("days", "from", "to") if request.args.get(key)}


@bp.get("")
@login_required
def index() -> Any:
    return render_template("dashboard/index.html", printable=False, **_context(_shown()))


@bp.get("/print")
@login_required
def printable() -> Any:
    return render_template("dashboard/index.html", printable=True, **_context(_shown()))


def _cell(value: object) -> object:
    """A cell a spreadsheet shows as text: a leading =, +, - or @ would run as a formula."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@"):
        return "'" + value
    return value


def _download(body: str, kind: str, name: str) -> Response:
    response = Response(body, mimetype=kind)
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


@bp.get("/figures.csv")
@login_required
def figures_csv() -> Response:
    """The key figures (value, detail, change, definition), then calls and missed calls per
    local day, as one CSV file."""
    shown = _shown()
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["figure", "value", "detail", f"change on the {shown.previous_label}",
                     "definition"])
    for kpi in shown.kpis:
        writer.writerow([_cell(v) for v in (kpi.name, kpi.value, kpi.detail, kpi.change,
                                             kpi.definition)])
    writer.writerow([])
    writer.writerow(["day", "inbound calls", "missed calls"])
    for day, (calls, missed) in sorted(shown.per_day.items()):
        writer.writerow([day.isoformat(), calls, missed])
    period = shown.period
    return _download(out.getvalue(), "text/csv",
                     f"textback-{period.first.isoformat()}-{period.last.isoformat()}.csv")


@bp.get("/<name>.svg")
@login_required
def chart_svg(name: str) -> Response:
    """One chart as a standalone SVG file (its own styles, no page needed)."""
    if name not in CHARTS:
        abort(404)
    shown = _shown()
    body = render_template(f"dashboard/_{name}.svg", standalone=True, **_context(shown))
    period = shown.period
    return _download(body, "image/svg+xml",
                     f"textback-{name}-{period.first.isoformat()}-{period.last.isoformat()}.svg")
