"""The playbooks' figures on the dashboard, worked out by hand on the day of
test_web_dashboard.seed_one_day: qualified conversations (the reply's intent or the
inbox's "Qualified lead" mark, audited), booking rates per delivered text and per reply,
time to text at the 90th percentile, revenue per missed call, cost per booked
appointment from the costs settings, the change on the day before; a booking made in
the inbox after the day was counted shows at the next read; and the downloads."""

from __future__ import annotations

import csv
import datetime as dt
import io

import pytest
from conftest import csrf_token
from flask.testing import FlaskClient
from sqlalchemy import delete, select
from sqlalchemy.orm import Session
from test_web_dashboard import DAY, NOON_CHICAGO, kpis, seed_one_day

from agent.reports import rollups
from agent.rules import settings
from agent.store.models import AuditEntry, Contact, ReportDay

pytestmark = pytest.mark.clock


def _post(client: FlaskClient, path: str, **data: str) -> str:
    data["csrf_token"] = csrf_token(client, "/inbox")
    return client.post(path, data=data, follow_redirects=True).get_data(as_text=True)


def _jane(session: Session) -> Contact:
    jane = session.scalar(select(Contact).where(Contact.number == "+13125550101"))
    assert jane is not None
    return jane


def test_the_playbook_figures_of_a_day(owner: FlaskClient, session: Session) -> None:
    seed_one_day(session)
    shown = kpis(owner.get(f"/dashboard?{DAY}").get_data(as_text=True))
    # Jane's "yes please" asks for nothing: not qualified by its words
    assert shown["qualified"] == ("0%", "0 of 1 replies qualified")
    # texts left 30, 60 and 90 s after the calls: 9 in 10 within the slowest
    assert shown["time"] == ("1 min", "median, from the end of the missed call; 90% within "
                             "1 min 30 s")
    assert shown["revenue-per-call"][0] == "n/a"  # no job value yet
    assert shown["cost-per-booking"] == ("n/a", "set the costs.* settings to count it")

    jane = _jane(session)
    refused = owner.post(f"/inbox/{jane.id}/qualified", data={"qualified": "yes"})
    assert refused.status_code == 400  # no CSRF token
    assert "Marked as a qualified lead" in _post(owner, f"/inbox/{jane.id}/qualified",
                                                 qualified="yes")
    assert "Not qualified" in owner.get(f"/inbox/{jane.id}").get_data(as_text=True)
    _post(owner, f"/inbox/{jane.id}/booking", booked="yes")
    for key, value in (("business.average_job_value", "400"), ("costs.sms_part.gsm", "0.05"),
                       ("costs.sms_part.sip", "0.02"), ("costs.monthly_software", "30"),
                       ("costs.staff_minutes_per_conversation", "10"),
                       ("costs.hourly_rate", "30")):
        settings.set(session, key, value, NOON_CHICAGO)
    session.commit()
    shown = kpis(owner.get(f"/dashboard?{DAY}").get_data(as_text=True))
    assert shown["qualified"] == ("100%", "1 of 1 replies qualified")
    assert shown["booked"][0] == "1"  # booked in the inbox after the day was counted
    assert shown["booking-delivered"] == ("100%", "1 of 1 delivered texts booked")
    assert shown["booking-reply"] == ("100%", "1 of 1 replies booked")
    # 400 booked revenue / 3 texts sent
    assert shown["revenue-per-call"] == ("133", "400 booked revenue / 3 texts sent")
    # SMS 2 × 0.05 (GSM) + 1 × 0.02 (SIP) + software 30 × 12 / 365 + 1 reply × 10 min at
    # 30 an hour = 0.12 + 0.99 + 5 = 6.11, for 1 booked job
    assert shown["cost-per-booking"] == ("6.11", "6.11 spent / 1 booked jobs")

    assert "No longer marked" in _post(owner, f"/inbox/{jane.id}/qualified", qualified="no")
    shown = kpis(owner.get(f"/dashboard?{DAY}").get_data(as_text=True))
    assert shown["qualified"] == ("0%", "0 of 1 replies qualified")
    actions = session.scalars(select(AuditEntry.action).where(
        AuditEntry.target == jane.number).order_by(AuditEntry.id)).all()
    assert actions == ["qualified", "booked", "qualified_cleared"]


def test_each_figure_says_how_it_moved_since_the_period_before(
        owner: FlaskClient, session: Session) -> None:
    seed_one_day(session)
    page = owner.get(f"/dashboard?{DAY}").get_data(as_text=True)
    # the day before had one call, missed (23:59 on 30 November)
    assert ('<span class="kpi-change better">−33 points on the previous 1 day</span>'
            in page)  # missed-call rate 100% → 67%
    assert '<span class="kpi-change">+800% on the previous 1 day</span>' in page
    assert "no figure for the previous 1 day to compare" in page  # no texts the day before
    assert 'title="Missed-call rate: missed inbound calls / inbound calls."' in page


def test_the_figures_download_as_csv_and_the_charts_as_svg(owner: FlaskClient,
                                                          session: Session) -> None:
    seed_one_day(session)
    response = owner.get(f"/dashboard/figures.csv?{DAY}")
    assert response.mimetype == "text/csv"
    assert "textback-2026-12-01-2026-12-01.csv" in response.headers["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(response.get_data(as_text=True))))
    assert rows[0] == ["figure", "value", "detail", "change on the previous 1 day",
                       "definition"]
    figures = {row[0]: row for row in rows[1:] if row}
    assert figures["Missed-call rate"][1:3] == ["67%", "6 of 9 inbound calls"]
    assert figures["Inbound calls"][3] == "'+800% on the previous 1 day"  # not a formula
    assert ["day", "inbound calls", "missed calls"] in rows
    assert ["2026-12-01", "9", "6"] in rows

    svg = owner.get(f"/dashboard/heat.svg?{DAY}")
    assert svg.mimetype == "image/svg+xml"
    body = svg.get_data(as_text=True)
    assert body.startswith('<?xml version="1.0" encoding="UTF-8"?>')
    assert "<title>Tue 12:00–13:00: 6 of 6 calls missed (100%)</title>" in body
    assert owner.get(f"/dashboard/pie.svg?{DAY}").status_code == 404

    printable = owner.get(f"/dashboard/print?{DAY}").get_data(as_text=True)
    assert 'class="filters"' not in printable and "Figures (CSV)" not in printable
    assert '<details class="kpi-definition" open>' in printable


def test_migrate_counts_the_past_days_the_dashboard_then_reads(
        owner: FlaskClient, session: Session) -> None:
    seed_one_day(session)
    before = kpis(owner.get(f"/dashboard?{DAY}").get_data(as_text=True))
    session.execute(delete(ReportDay))
    session.commit()
    later = NOON_CHICAGO + dt.timedelta(days=3)
    assert rollups.backfill(session, later, days=5) == 5
    days = session.scalars(select(ReportDay.day).order_by(ReportDay.day)).all()
    assert days == [dt.date(2026, 11, 29) + dt.timedelta(days=n) for n in range(5)]
    assert rollups.backfill(session, later, days=5) == 0  # nothing left to count
    assert kpis(owner.get(f"/dashboard?{DAY}").get_data(as_text=True)) == before
