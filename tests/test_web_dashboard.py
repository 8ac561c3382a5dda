"""The dashboard as an owner reads it: every figure checked against a small day of calls
whose KPIs are worked out by hand below, the business time zone's day boundaries, an
empty period, the SIP trunk's unknown delivery, staff access, and query plans that stay
on the indexes."""

from __future__ import annotations

import datetime as dt
import html
import re
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from conftest import Record, login
from flask.testing import FlaskClient
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

from agent.calls import policy
from agent.calls.tracker import FinishedCall
from agent.messages import outbox
from agent.reports import abtest, queries
from agent.reports.period import parse_period
from agent.rules import settings
from agent.store.models import Call, Contact, Message, MessageEvent

pytestmark = pytest.mark.clock  # make test-clock runs it at awkward instants too

# Tuesday 1 December 2026; Chicago is UTC-6 then, so that local day is
# 06:00 UTC on the 1st to 06:00 UTC on the 2nd
DAY = "from=2026-12-01&to=2026-12-01"
NOON_CHICAGO = dt.datetime(2026, 12, 1, 18, 0, tzinfo=dt.UTC)
_numbers = iter(range(1, 10_000))
DATABASES = ("sqlite", "postgresql")  # a business that scales out reads the same figures


def _call(session: Session, at: dt.datetime, *, missed: bool = True, direction: str = "inbound",
          caller: str | None = "auto", contact: Contact | None = None, **fields: object) -> Call:
    n = next(_numbers)
    call = Call(linkedid=f"1800000000.{n}",
                # a range of their own: the counter is shared by every test that imports
                # these helpers, and must never reach the fixed numbers (Jane's 0101…)
                caller=f"+1312777{n:04d}" if caller == "auto" else caller,
                did="+15559990000", direction=direction, missed=missed,
                reason="noanswer" if missed else None, started_at=at,
                ended_at=at + dt.timedelta(seconds=20),
                contact_id=contact.id if contact else None, **fields)
    session.add(call)
    session.flush()
    return call


def _contact(session: Session, number: str, **fields: object) -> Contact:
    contact = Contact(number=number, created_at=NOON_CHICAGO - dt.timedelta(days=30), **fields)
    session.add(contact)
    session.flush()
    return contact


def _textback(session: Session, call: Call, after_seconds: int,
              history: tuple[str, ...], transport: str = "gsm", *,
              template: str = "templates.business_hours", variant: str | None = None
              ) -> Message:
    """A text-back that left `after_seconds` after the call ended, with its status history."""
    left = call.ended_at + dt.timedelta(seconds=after_seconds)
    message = Message(direction="out", kind="textback", idempotency_key=f"{call.linkedid}:textback",
                      number=call.caller, body="Sorry we missed you", status=history[-1],
                      transport=transport, created_at=call.ended_at, updated_at=left,
                      call_id=call.id, contact_id=call.contact_id, template=template,
                      variant=variant)
    session.add(message)
    session.flush()
    for n, status in enumerate(("queued", *history)):
        at = call.ended_at if status == "queued" else left + dt.timedelta(seconds=n - 1)
        session.add(MessageEvent(message_id=message.id, status=status, at=at))
    return message


def _incoming(session: Session, number: str, at: dt.datetime) -> None:
    session.add(Message(direction="in", kind="reply", number=number, body="yes please",
                        status="received", created_at=at, updated_at=at))


def seed_one_day(session: Session) -> None:
    """Tuesday 1 December in Chicago:

    inbound in the day: 9 (2 answered in the morning, 1 answered at 23:59 local,
    6 missed at lunch)            → missed-call rate 6/9 = 67%
    missed: 1 withheld, 1 landline → contactability 4/6 = 67%
    texted: 3 of the 6 missed      → send rate 3/6 = 50%
    delivery reports: 2 texts (GSM), 1 delivered → 50%; the SIP text is not counted
    left 30 s, 90 s, 60 s after the call ended → median 1 min
    1 reply within 7 days (another one 8 days later does not count) → 1/3 = 33%
    1 caller reached by staff after the call → contacted 1/6 = 17%
    1 opt-out after a text-back     → 1/3 = 33%
    recovered leads: 1 (replied and reached)
    """
    settings.set(session, "business.timezone", "America/Chicago", NOON_CHICAGO)
    morning = dt.datetime(2026, 12, 1, 15, 0, tzinfo=dt.UTC)
    _call(session, morning, missed=False, answered_by="PJSIP/101")
    _call(session, morning + dt.timedelta(minutes=10), missed=False, answered_by="PJSIP/101")

    jane = _contact(session, "+13125550101", name="Jane",
                    contacted_at=NOON_CHICAGO + dt.timedelta(hours=3))
    replied = _call(session, NOON_CHICAGO, caller=jane.number, contact=jane, decision="send")
    _textback(session, replied, 30, ("sent", "delivered"))
    _incoming(session, jane.number, NOON_CHICAGO + dt.timedelta(hours=1))

    bob = _contact(session, "+13125550102", opted_out=True,
                   opted_out_at=NOON_CHICAGO + dt.timedelta(hours=2))
    failed = _call(session, NOON_CHICAGO + dt.timedelta(minutes=5), caller=bob.number,
                   contact=bob, decision="send")
    _textback(session, failed, 90, ("sent", "failed"))

    sip = _call(session, NOON_CHICAGO + dt.timedelta(minutes=10), decision="send")
    _textback(session, sip, 60, ("submitted",), transport="sip")
    _incoming(session, sip.caller or "", NOON_CHICAGO + dt.timedelta(days=8))

    _call(session, NOON_CHICAGO + dt.timedelta(minutes=20), caller=None, decision="skip",
          skip_reason="withheld")
    _call(session, NOON_CHICAGO + dt.timedelta(minutes=30), decision="skip",
          skip_reason="fixed_line")
    early = _contact(session, "+13125550108", contacted_at=NOON_CHICAGO - dt.timedelta(days=1))
    _call(session, NOON_CHICAGO + dt.timedelta(minutes=40), caller=early.number, contact=early,
          decision="skip", skip_reason="cooldown")

    # not in the figures: an outbound call, and calls either side of the local day
    _call(session, NOON_CHICAGO, direction="outbound")
    _call(session, dt.datetime(2026, 12, 1, 5, 59, tzinfo=dt.UTC))  # 23:59 on the 30th
    _call(session, dt.datetime(2026, 12, 2, 6, 0, tzinfo=dt.UTC))  # 00:00 on the 2nd
    # inside it, by a minute: 23:59 on the 1st
    _call(session, dt.datetime(2026, 12, 2, 5, 59, tzinfo=dt.UTC), missed=False,
          answered_by="PJSIP/102")
    session.commit()


def kpis(page: str) -> dict[str, tuple[str, str]]:
    """slug → (value, detail) as the page shows them."""
    found = re.findall(r'data-kpi="([a-z-]+)">\s*<span class="kpi-name">[^<]*</span>\s*'
                       r'<span class="kpi-value">([^<]*)</span>\s*'
                       r'<span class="kpi-detail">([^<]*)</span>', page)
    return {slug: (html.unescape(value), html.unescape(detail))
            for slug, value, detail in found}


def test_every_figure_of_a_day_matches_the_hand_count(owner: FlaskClient, session: Session
                                                      ) -> None:
    seed_one_day(session)
    page = owner.get(f"/dashboard?{DAY}").get_data(as_text=True)
    shown = kpis(page)
    assert shown["inbound"] == ("9", "6 missed")
    assert shown["missed"] == ("67%", "6 of 9 inbound calls")
    assert shown["contactable"] == ("67%", "4 of 6 missed calls can take an SMS")
    assert shown["sent"] == ("50%", "3 of 6 missed calls texted")
    assert shown["delivery"] == ("50%", "1 of 2 texts with a delivery report")
    assert shown["time"][0] == "1 min"
    assert shown["reply"] == ("33%", "1 of 3 texts answered within 7 days")
    assert shown["contacted"] == ("17%", "1 of 6 missed callers reached by staff")
    assert shown["optout"] == ("33%", "1 of 3 texts followed by an opt-out")
    assert shown["recovered"][0] == "1"
    assert "revenue" not in shown  # no average job value set
    assert "Times in America/Chicago" in page or "times in America/Chicago" in page


def test_revenue_estimate_uses_close_rate_and_job_value(owner: FlaskClient, session: Session
                                                        ) -> None:
    seed_one_day(session)
    now = dt.datetime.now(dt.UTC)
    settings.set(session, "business.average_job_value", "400", now)
    settings.set(session, "business.close_rate", "0.5", now)
    session.commit()
    shown = kpis(owner.get(f"/dashboard?{DAY}").get_data(as_text=True))
    assert shown["revenue"][0] == "200"  # 1 recovered lead × 0.5 × 400
    assert "1 recovered leads × 0.5 close rate × 400 per job" in shown["revenue"][1]


def _contact_of(session: Session, number: str) -> Contact:
    contact = session.scalar(select(Contact).where(Contact.number == number))
    assert contact is not None
    return contact


def test_bookings_after_the_call_count_and_revenue_counts_each_customer_once(
        owner: FlaskClient, session: Session) -> None:
    seed_one_day(session)
    _contact_of(session, "+13125550101").booked_at = NOON_CHICAGO + dt.timedelta(hours=4)
    # booked the day before this call: that job did not come from it
    _contact_of(session, "+13125550108").booked_at = NOON_CHICAGO - dt.timedelta(hours=20)
    dan = _contact(session, "+13125550111", booked_at=NOON_CHICAGO + dt.timedelta(hours=5))
    for minutes in (50, 55):  # called twice, booked one job
        _call(session, NOON_CHICAGO + dt.timedelta(minutes=minutes), caller=dan.number,
              contact=dan, decision="skip", skip_reason="cooldown")
    session.commit()
    shown = kpis(owner.get(f"/dashboard?{DAY}").get_data(as_text=True))
    assert shown["booked"] == ("3", "38% of 8 missed calls booked a job afterwards")
    assert "booked-revenue" not in shown  # no average job value set

    settings.set(session, "business.average_job_value", "400", NOON_CHICAGO)
    settings.set(session, "business.close_rate", "0.5", NOON_CHICAGO)
    session.commit()
    shown = kpis(owner.get(f"/dashboard?{DAY}").get_data(as_text=True))
    assert shown["booked-revenue"] == ("800", "2 booked jobs × 400 per job")
    # the estimate stays beside it: Jane is the one recovered lead (Dan's contact was
    # never marked reached here, as booking from the inbox would have done), × 0.5 × 400
    assert shown["revenue"][0] == "200"


def _staff_reply(session: Session, number: str, at: dt.datetime) -> None:
    session.add(Message(direction="out", kind="staff_reply", number=number, body="On it",
                        status="sent", created_at=at, updated_at=at, sent_by="desk"))


def test_staff_response_time_is_the_median_wait_for_a_first_answer(
        owner: FlaskClient, session: Session) -> None:
    settings.set(session, "business.timezone", "America/Chicago", NOON_CHICAGO)
    hour = dt.timedelta(hours=1)
    minute = dt.timedelta(minutes=1)

    def texted(number: str, at: dt.datetime, **fields: object) -> Contact:
        contact = _contact(session, number, **fields)
        _textback(session, _call(session, at, caller=number, contact=contact,
                                 decision="send"), 5, ("sent", "delivered"))
        return contact

    # answered from the inbox 10 minutes after the reply
    ann = texted("+13125550201", NOON_CHICAGO)
    _incoming(session, ann.number, NOON_CHICAGO + hour)
    _staff_reply(session, ann.number, NOON_CHICAGO + hour + 10 * minute)
    _incoming(session, ann.number, NOON_CHICAGO + 2 * hour)  # a later reply: not a new wait
    # reached by phone (contacted_at) after 40 minutes, before the inbox answer
    texted("+13125550202", NOON_CHICAGO, contacted_at=NOON_CHICAGO + 2 * hour + 40 * minute)
    _incoming(session, "+13125550202", NOON_CHICAGO + 2 * hour)
    _staff_reply(session, "+13125550202", NOON_CHICAGO + 4 * hour)
    # texted twice (two missed calls), one reply: counted once, answered after 20 minutes
    cy = texted("+13125550203", NOON_CHICAGO)
    _textback(session, _call(session, NOON_CHICAGO + 40 * minute, caller=cy.number, contact=cy,
                             decision="send"), 5, ("sent", "delivered"))
    _incoming(session, cy.number, NOON_CHICAGO + 3 * hour)
    _staff_reply(session, cy.number, NOON_CHICAGO + 3 * hour + 20 * minute)
    # staff wrote before the customer replied, never after: still waiting
    texted("+13125550204", NOON_CHICAGO)
    _staff_reply(session, "+13125550204", NOON_CHICAGO + 30 * minute)
    _incoming(session, "+13125550204", NOON_CHICAGO + hour)
    # no reply to the text-back (a staff text alone is no reply), and a reply too late
    texted("+13125550205", NOON_CHICAGO)
    _staff_reply(session, "+13125550205", NOON_CHICAGO + hour)
    texted("+13125550206", NOON_CHICAGO)
    _incoming(session, "+13125550206", NOON_CHICAGO + dt.timedelta(days=8))
    _staff_reply(session, "+13125550206", NOON_CHICAGO + dt.timedelta(days=8, minutes=1))
    session.commit()
    shown = kpis(owner.get(f"/dashboard?{DAY}").get_data(as_text=True))
    # waits of 10, 20 and 40 minutes; one reply not answered
    assert shown["response"] == (
        "20 min", "median from a customer's reply to staff's first answer (3 answered, "
        "1 not yet)")

    # a fourth answered reply: the median of 5, 10, 20 and 40 minutes is 15
    texted("+13125550207", NOON_CHICAGO + 5 * minute)
    _incoming(session, "+13125550207", NOON_CHICAGO + hour)
    _staff_reply(session, "+13125550207", NOON_CHICAGO + hour + 5 * minute)
    session.commit()
    page = owner.get(f"/dashboard?{DAY}").get_data(as_text=True)
    assert kpis(page)["response"][0] == "15 min"
    assert "How these figures are counted" in page and "Staff response time" in page


def test_nobody_answered_yet_reads_n_a(owner: FlaskClient, session: Session) -> None:
    settings.set(session, "business.timezone", "America/Chicago", NOON_CHICAGO)
    call = _call(session, NOON_CHICAGO, decision="send")
    _textback(session, call, 5, ("sent", "delivered"))
    _incoming(session, call.caller or "", NOON_CHICAGO + dt.timedelta(hours=1))
    session.commit()
    shown = kpis(owner.get(f"/dashboard?{DAY}").get_data(as_text=True))
    assert shown["response"] == ("n/a", "none of 1 replies answered yet")


def _tested(session: Session, template: str, variant: str | None, texts: int, replies: int,
            booked: int, start: dt.datetime) -> None:
    """`texts` missed calls texted with `variant`; the first `replies` callers replied
    and the first `booked` of them booked a job."""
    for n in range(texts):
        at = start + dt.timedelta(seconds=20 * n)
        contact = _contact(session, f"+1773555{next(_numbers):04d}")
        if n < booked:
            contact.booked_at = at + dt.timedelta(days=1)
        call = _call(session, at, caller=contact.number, contact=contact, decision="send")
        _textback(session, call, 5, ("sent", "delivered"), template=template,
                  variant=variant)
        if n < replies:
            _incoming(session, contact.number, at + dt.timedelta(hours=2))


def ab_table(page: str) -> dict[tuple[str, str], list[str]]:
    """(template key, variant or "lift") → the cells of its row as the page shows them."""
    rows: dict[tuple[str, str], list[str]] = {}
    for key, body in re.findall(r'<tbody data-test="([a-z._]+)">(.*?)</tbody>', page, re.S):
        for variant, cells in re.findall(r'<tr data-variant="([AB])">(.*?)</tr>', body, re.S):
            rows[key, variant] = re.findall(r"<td[^>]*>([^<]*)</td>", cells)
        lift = re.search(r'<tr class="lift">(.*?)</tr>', body, re.S)
        assert lift is not None
        rows[key, "lift"] = re.findall(r"<td[^>]*>([^<]*)</td>", lift.group(1))
    for key, notes in re.findall(r'<li data-test="([a-z._]+)">(.*?)</li>', page, re.S):
        for metric, note in re.findall(r'data-metric="([a-z]+)">([^<]*)</p>', notes):
            rows[key, metric] = [note]
    return rows


def test_the_ab_table_compares_variants_and_says_when_it_may_be_chance(
        owner: FlaskClient, session: Session) -> None:
    settings.set(session, "business.timezone", "America/Chicago", NOON_CHICAGO)
    hours, voicemail = "templates.business_hours", "templates.voicemail"
    _tested(session, hours, "A", 40, 8, 2, NOON_CHICAGO)
    _tested(session, hours, "B", 40, 20, 4, NOON_CHICAGO + dt.timedelta(minutes=15))
    _tested(session, voicemail, "A", 14, 2, 0, NOON_CHICAGO + dt.timedelta(minutes=30))
    _tested(session, voicemail, "B", 11, 3, 1, NOON_CHICAGO + dt.timedelta(minutes=40))
    # texts sent while no test was running are not part of it
    _tested(session, "templates.after_hours", None, 10, 10, 10,
            NOON_CHICAGO + dt.timedelta(minutes=50))
    session.commit()
    page = owner.get(f"/dashboard?{DAY}").get_data(as_text=True)
    table = ab_table(page)
    assert set(table) == {(key, row) for key in (hours, voicemail)
                          for row in ("A", "B", "lift", "replies", "bookings")}
    # variant, texts sent, replies, reply rate, booked, booking rate
    assert table[hours, "A"] == ["A", "40", "8", "20%", "2", "5%"]
    assert table[hours, "B"] == ["B", "40", "20", "50%", "4", "10%"]
    assert table[hours, "lift"] == ["B vs A", "", "", "+30 points (+150%)", "",
                                    "+5 points (+100%)"]
    assert table[hours, "replies"] == [
        "Replies: B is 30 points better with 40 and 40 texts (p = 0.005): unlikely to be "
        "chance; consider making B the main text."]
    assert table[hours, "bookings"] == [
        "Bookings: B looks 5 points better, but with 40 and 40 texts this may still be "
        "chance (p = 0.40); keep the test running."]
    assert table[voicemail, "A"] == ["A", "14", "2", "14%", "0", "0%"]
    # small rates keep a decimal: 1 booking in 11 texts is 9.1%, not 9%
    assert table[voicemail, "B"] == ["B", "11", "3", "27%", "1", "9.1%"]
    assert table[voicemail, "lift"][3:] == ["+13 points (+91%)", "", "+9.1 points"]
    assert table[voicemail, "replies"] == [
        "Replies: B looks 13 points better, but with 14 and 11 texts this may be chance; "
        "keep the test running."]
    # the page's order is business hours, after hours, voicemail
    assert page.index(f'data-test="{hours}"') < page.index(f'data-test="{voicemail}"')


def test_the_agent_records_each_callers_variant_and_the_table_counts_it(record: Record,
        owner: FlaskClient, session: Session, engine: Engine, tmp_path: Path) -> None:
    """From the missed call to the A/B table: the agent picks and stores the variant."""
    settings.set(session, "business.timezone", "America/Chicago", NOON_CHICAGO)
    settings.set(session, "textback.cooldown", "0s", NOON_CHICAGO)
    settings.set(session, "templates.business_hours_b", "Hi {first_name}, reply with a time "
                 "that suits you and {business} will call.", NOON_CHICAGO)
    session.commit()
    callers = [f"+1312555{n:04d}" for n in range(200, 240)]
    for n, caller in enumerate(callers):
        ended = NOON_CHICAGO + dt.timedelta(minutes=n)
        call = FinishedCall(f"1800000001.{n}", caller, "Dana Fischer", "+15559990000",
                            "inbound", True, "noanswer", False, None, 20.0,
                            ended.timestamp() - 25, ended.timestamp(), "trunk")
        record(session, call, ended + dt.timedelta(seconds=1))
    for message in session.scalars(select(Message).where(Message.kind == "textback")):
        outbox.transition(message, "sent", message.created_at + dt.timedelta(seconds=2))
    session.commit()
    sent = {m.number: m for m in session.scalars(select(Message))}
    assert {n: sent[n].variant for n in callers} == {n: policy.variant_for(n) for n in callers}
    assert all(sent[n].body.startswith("Hi Dana, reply with a time") for n in callers
               if sent[n].variant == "B")
    b = sum(policy.variant_for(n) == "B" for n in callers)
    assert 0 < b < len(callers)
    table = ab_table(owner.get(f"/dashboard?{DAY}").get_data(as_text=True))
    hours = "templates.business_hours"
    assert table[hours, "A"][:2] == ["A", str(len(callers) - b)]
    assert table[hours, "B"][:2] == ["B", str(b)]


def test_no_ab_table_without_a_test(owner: FlaskClient, session: Session) -> None:
    seed_one_day(session)
    page = owner.get(f"/dashboard?{DAY}").get_data(as_text=True)
    assert "A/B tests of the text-back" not in page and "data-test=" not in page


# known values: z = (0.2 - 0.1) / sqrt(0.15 x 0.85 x (1/100 + 1/100)) = 1.9803, and a
# normal table gives 2 x (1 - 0.97617) = 0.0477; z = 0.1 / sqrt(0.25 x 0.75 x 2/200) =
# 2.3094 gives 0.0209; z = 0.3 / sqrt(0.35 x 0.65 x 2/40) = 2.8129 gives 0.0049
@pytest.mark.parametrize(("a", "b", "p"), [
    ((10, 100), (20, 100), 0.0477),
    ((40, 200), (60, 200), 0.0209),
    ((8, 40), (20, 40), 0.0049),
    ((50, 100), (50, 100), 1.0),
])
def test_two_proportion_p_value_matches_the_normal_table(
        a: tuple[int, int], b: tuple[int, int], p: float) -> None:
    assert abtest.two_proportion_p(a[0], a[1], b[0], b[1]) == pytest.approx(p, abs=1e-4)
    # which side is called B does not change the evidence
    assert abtest.two_proportion_p(b[0], b[1], a[0], a[1]) == pytest.approx(p, abs=1e-4)


def test_two_proportion_p_value_edge_cases() -> None:
    assert abtest.two_proportion_p(0, 10, 0, 12) == 1.0  # nobody replied to either
    assert abtest.two_proportion_p(10, 10, 12, 12) == 1.0  # everybody did
    assert abtest.two_proportion_p(0, 1000, 1000, 1000) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError):
        abtest.two_proportion_p(0, 0, 1, 5)


def test_comparison_notes_say_what_a_result_is_worth() -> None:
    small = abtest.compare(14, 2, 11, 3)
    assert not small.trustworthy
    assert small.note == ("B looks 13 points better, but with 14 and 11 texts this may be "
                          "chance; keep the test running.")
    worse = abtest.compare(500, 100, 500, 60)
    assert worse.trustworthy and worse.lift == "-8 points (-40%)"
    assert worse.note == ("B is 8 points worse with 500 and 500 texts (p < 0.001): unlikely "
                          "to be chance; consider ending the test.")
    assert abtest.compare(100, 10, 100, 9).lift == "-1 point (-10%)"
    # bookings are rare: a 1% against 1.4% difference is not rounded away
    assert abtest.compare(1000, 10, 1000, 14).lift == "+0.4 points (+40%)"
    # enough texts but a p-value over 0.05 is not trusted
    unsure = abtest.compare(40, 2, 40, 4)
    assert not unsure.trustworthy and "(p = 0.40)" in unsure.note
    assert abtest.compare(40, 0, 40, 8).lift == "+20 points"  # no relative lift from 0
    missing = abtest.compare(0, 0, 5, 1)
    assert (missing.lift, missing.p_value) == ("n/a", None)
    assert missing.note == "No texts with A in this period yet; keep the test running."


def test_charts_show_the_day_and_the_lunch_hour(owner: FlaskClient, session: Session) -> None:
    seed_one_day(session)
    page = owner.get(f"/dashboard?{DAY}").get_data(as_text=True)
    assert page.count("<svg") == 2
    assert "<title>Tue 01 Dec: 9 calls, 6 missed</title>" in page
    # the six missed calls were at 12:00–12:40 in Chicago, not 18:00 UTC
    assert "Tue 12:00–13:00: 6 of 6 calls missed (100%)" in page
    assert "Tue 09:00–10:00: 0 of 2 calls missed (0%)" in page
    assert "Most missed:" in page


def test_an_empty_period_says_n_a_instead_of_dividing_by_zero(
        owner: FlaskClient, session: Session) -> None:
    seed_one_day(session)
    response = owner.get("/dashboard?from=2020-01-01&to=2020-01-07")
    assert response.status_code == 200
    shown = kpis(response.get_data(as_text=True))
    assert shown["inbound"] == ("0", "0 missed")
    for slug in ("missed", "contactable", "sent", "delivery", "time", "reply", "contacted",
                 "optout", "response"):
        assert shown[slug][0] == "n/a", slug
    assert "Not enough calls yet" in response.get_data(as_text=True)


def test_the_sip_trunk_delivery_rate_is_unknown_not_zero(
        owner: FlaskClient, session: Session) -> None:
    settings.set(session, "business.timezone", "America/Chicago", NOON_CHICAGO)
    for minutes in (0, 5):
        call = _call(session, NOON_CHICAGO + dt.timedelta(minutes=minutes), decision="send")
        _textback(session, call, 10, ("submitted",), transport="sip")
    session.commit()
    shown = kpis(owner.get(f"/dashboard?{DAY}").get_data(as_text=True))
    assert shown["delivery"][0] == "n/a"
    assert "only reports “submitted”" in shown["delivery"][1]
    assert shown["sent"][0] == "100%"
    assert shown["time"][0] == "10 s"  # median of two equal delays


def test_the_default_period_is_the_last_30_local_days_with_today(
        owner: FlaskClient, session: Session) -> None:
    now = dt.datetime.now(dt.UTC)
    _call(session, now - dt.timedelta(minutes=5))
    _call(session, now - dt.timedelta(days=40))  # outside 30 days, inside 90
    session.commit()
    assert kpis(owner.get("/dashboard").get_data(as_text=True))["inbound"][0] == "1"
    assert kpis(owner.get("/dashboard?days=90").get_data(as_text=True))["inbound"][0] == "2"
    odd = owner.get("/dashboard?days=12").get_data(as_text=True)
    assert "Choose 7, 30 or 90 days; showing 30." in odd
    assert "is not a date" in owner.get("/dashboard?from=soon").get_data(as_text=True)


def test_front_desk_staff_see_the_dashboard_and_it_is_the_start_page(
        client: FlaskClient, web_users: dict[str, str], session: Session) -> None:
    seed_one_day(session)
    assert client.get("/dashboard").headers["Location"].startswith("/login?next=")
    login(client, "desk")
    assert client.get("/").headers["Location"] == "/dashboard"
    page = client.get(f"/dashboard?{DAY}").get_data(as_text=True)
    assert kpis(page)["missed"][0] == "67%"
    assert 'href="/dashboard">Dashboard</a>' in page


def test_period_boundaries_follow_the_business_time_zone() -> None:
    zone = ZoneInfo("America/Chicago")
    period, errors = parse_period({"from": "2026-11-01", "to": "2026-11-01"},
                                            dt.date(2026, 12, 1), zone)
    assert errors == []
    # the day DST ends in Chicago has 25 hours
    assert period.start == dt.datetime(2026, 11, 1, 5, 0, tzinfo=dt.UTC)
    assert period.end == dt.datetime(2026, 11, 2, 6, 0, tzinfo=dt.UTC)
    swapped, errors = parse_period({"from": "2026-11-05", "to": "2026-11-01"},
                                             dt.date(2026, 12, 1), zone)
    assert (swapped.first, swapped.last) == (dt.date(2026, 11, 1), dt.date(2026, 11, 5))
    assert errors


QUERIES = ("buckets_sql", "figures_sql", "missed_rows_sql")


def test_the_queries_read_the_call_indexes(session: Session, database: str) -> None:
    """With a million calls no dashboard query may scan the whole calls table, nor the
    messages, events or contacts it looks up for each missed call."""
    d = queries.Dialect.of(session)
    if database == "postgresql":
        # on a tiny table PostgreSQL rightly prefers a scan; forbidding scans shows
        # whether an index could serve each look-up
        session.execute(text("SET LOCAL enable_seqscan = off"))
        params: dict[str, object] = {
            "start": dt.datetime(2026, 11, 1, tzinfo=dt.UTC),
            "end": dt.datetime(2026, 12, 1, tzinfo=dt.UTC),
            "yes": True, "take": 1, "skip": 0, "suffix": ":textback"}
        for name in QUERIES:
            plan = " / ".join(row[0] for row in session.execute(
                text(f"EXPLAIN {getattr(queries, name)(d)}"), params))
            assert "Index" in plan, (name, plan)
            assert not re.search(r"Seq Scan on (calls|messages|message_events|contacts)",
                                 plan), (name, plan)
        return
    params = {"start": "2026-11-01 00:00:00.000000", "end": "2026-12-01 00:00:00.000000",
              "yes": 1, "take": 1, "skip": 0, "suffix": ":textback"}
    for name in QUERIES:
        sql = getattr(queries, name)(d)
        plan = " / ".join(row[-1] for row in session.execute(text(f"EXPLAIN QUERY PLAN {sql}"),
                                                             params))
        assert "USING INDEX ix_calls_" in plan or "USING COVERING INDEX ix_calls_" in plan, (
            name, plan)
        assert not re.search(r"SCAN (c|calls)\b(?! USING)", plan), (name, plan)
        assert not re.search(r"SCAN (m|i|e|r|k|s)\b(?! USING)", plan), (name, plan)
