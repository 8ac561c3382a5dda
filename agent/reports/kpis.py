"""The dashboard's key figures: every KPI of the playbooks, from a period's daily figures
(agent.reports.rollups), each with its definition and its change since the period
before.

DEFINITIONS below is what the page shows in each figure's tooltip and in "How these
figures are counted"; the README repeats it. The counts behind them are made per
missed call in agent.reports.rollups._count_call (and, for the figures it had before
the daily figures, the raw statement of agent.reports.queries, which the tests hold
the daily figures to).
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.reports import wording
from agent.reports.queries import REPLY_WINDOW_DAYS
from agent.reports.rollups import Figures, percentile

# slug → (name, definition), in the order the page shows them
DEFINITIONS: dict[str, tuple[str, str]] = {
    "inbound": ("Inbound calls", "calls to the business in the period; the detail says how "
                "many were missed."),
    "missed": ("Missed-call rate", "missed inbound calls / inbound calls."),
    "contactable": ("Contactability", "missed calls that could get an SMS (the number was "
                    "not withheld, invalid or a landline) / missed calls."),
    "sent": ("Text-back send rate", "missed calls whose text-back left (submitted, sent or "
             "delivered) / missed calls."),
    "delivery": ("Delivery rate", "delivered / text-backs sent over a route that reports "
                 "delivery (a messaging API's “delivered” or “undelivered”, a modem's "
                 "report; the SIP trunk only says “submitted”: then it is n/a)."),
    "time": ("Time to text", "seconds from the end of the missed call to its text-back "
             "leaving: the median, and the 90th percentile (9 in 10 texts left sooner)."),
    "reply": ("Reply rate", f"text-backs answered by the customer within {REPLY_WINDOW_DAYS} "
              "days / text-backs sent."),
    "qualified": ("Qualified conversation rate", "replies that are real leads / replies: the "
                  "first reply asks to book, asks a price or is an emergency (by the phrases "
                  "in Settings → Conversations), or staff marked the conversation "
                  "“Qualified” in the inbox after the call."),
    "contacted": ("Contacted rate", "missed calls whose caller staff reached afterwards (an "
                  "answered call back or call, “Mark contacted”, a booking) / missed calls."),
    "optout": ("Opt-out rate", "text-backs after which the customer opted out / text-backs "
               "sent."),
    "response": ("Staff response time", "for each customer's first reply within 7 days to a "
                 "text-back of these missed calls (each reply counted once), the time until "
                 "staff first answered it: a reply from the inbox, or the customer reached (an "
                 "answered call back or call, “Mark contacted”, a booking). The median of the "
                 "answered replies; the ones nobody has answered yet are counted beside it. "
                 "Only the latest time a customer was reached is kept, so a call back followed "
                 "by a later contact counts at the later one."),
    "booked": ("Booked", "missed calls whose caller's conversation was marked “Booked a job” in "
               "the inbox at or after the call (a customer who called three times counts "
               "three times)."),
    "booking-delivered": ("Booking rate per delivered text", "booked missed calls whose "
                          "text-back was delivered / text-backs delivered."),
    "booking-reply": ("Booking rate per reply", "booked missed calls whose caller replied to "
                      "the text-back / text-backs replied to."),
    "revenue-per-call": ("Revenue per missed call", "booked revenue (booked customers, each "
                         "once, × business.average_job_value) / text-backs sent, as the "
                         "playbooks count it: what each text-back brought in."),
    "cost-per-booking": ("Cost per booked appointment", "(SMS + software + staff time) / "
                         "booked jobs. SMS: the text-backs' parts × costs.sms_part.<transport>; "
                         "software: costs.monthly_software for the period's share of a month "
                         "(days × 12 / 365); staff time: replies × "
                         "costs.staff_minutes_per_conversation / 60 × costs.hourly_rate."),
    "revenue": ("Revenue estimate", "recovered leads (replied or reached by staff) × "
                "business.close_rate × business.average_job_value."),
    "booked-revenue": ("Booked revenue", "booked customers, each counted once, × "
                       "business.average_job_value."),
    "recovered": ("Recovered leads", "missed calls whose caller replied to the text-back or "
                  "was reached by staff."),
}
RATES = frozenset({"missed", "contactable", "sent", "delivery", "reply", "qualified",
                   "contacted", "optout", "booking-delivered", "booking-reply"})
LOWER_IS_BETTER = frozenset({"missed", "optout", "time", "response", "cost-per-booking"})
NEUTRAL = frozenset({"inbound"})  # more calls is neither better nor worse


@dataclass(frozen=True)
class Costs:
    """What the cost per booked appointment adds up (settings costs.*)."""

    sms_part: dict[str, float]  # transport → price of one SMS part
    monthly_software: float = 0.0
    staff_minutes_per_conversation: float = 0.0
    hourly_rate: float = 0.0

    @property
    def any(self) -> bool:
        return bool(any(self.sms_part.values()) or self.monthly_software
                    or self.staff_minutes_per_conversation * self.hourly_rate)


@dataclass(frozen=True)
class Kpi:
    name: str
    value: str  # "42%", "1 min 20 s", "n/a"
    detail: str  # the fraction or the reason behind it
    slug: str
    definition: str = ""
    change: str = ""  # "+3 points on the previous 30 days", "" when nothing to compare
    trend: str = ""  # "better" | "worse" | "same" | ""


@dataclass(frozen=True)
class Money:
    job_value: float
    close_rate: float
    costs: Costs


def measures(f: Figures, money: Money, days: int) -> dict[str, float | None]:
    """Each KPI as a number (rates as fractions, times in seconds, money in units), for
    the value shown and the change on the previous period."""
    c = f.counts

    def ratio(part: float, whole: float) -> float | None:
        return part / whole if whole else None

    booked_customers = len(f.booked_contacts)
    waits = f.response_histogram()
    out: dict[str, float | None] = {
        "inbound": f.inbound,
        "missed": ratio(c["missed"], f.inbound),
        "contactable": ratio(c["contactable"], c["missed"]),
        "sent": ratio(c["texted"], c["missed"]),
        "delivery": ratio(c["delivered"], c["reported"]),
        "time": percentile(f.text_delays, 50),
        "reply": ratio(c["replied"], c["texted"]),
        "qualified": ratio(c["qualified"], c["replied"]),
        "contacted": ratio(c["contacted"], c["missed"]),
        "optout": ratio(c["opted_out"], c["texted"]),
        "response": percentile(waits, 50),
        "booked": c["booked"],
        "booking-delivered": ratio(c["booked_delivered"], c["delivered"]),
        "booking-reply": ratio(c["booked_replied"], c["replied"]),
        "revenue": c["recovered"] * money.close_rate * money.job_value,
        "booked-revenue": booked_customers * money.job_value,
        "recovered": c["recovered"],
        "revenue-per-call": ratio(booked_customers * money.job_value, c["texted"])
        if money.job_value else None,
        "cost-per-booking": ratio(cost(f, money.costs, days), booked_customers)
        if money.costs.any else None,
    }
    return out


def cost(f: Figures, costs: Costs, days: int) -> float:
    sms = sum(parts * costs.sms_part.get(transport, 0.0) for transport, parts in f.parts.items())
    software = costs.monthly_software * days * 12 / 365
    staff = f.counts["replied"] * costs.staff_minutes_per_conversation / 60 * costs.hourly_rate
    return sms + software + staff


def _money(value: float) -> str:
    return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"


def _change(slug: str, now: float | None, before: float | None, label: str
            ) -> tuple[str, str]:
    """How a figure moved since the previous period: points for rates, a share otherwise."""
    if now is None or before is None:
        return f"no figure for the {label} to compare", ""
    if slug in RATES:
        moved = 100 * (now - before)
        text = "same as" if round(moved, 1) == 0 else \
            f"{'+' if moved > 0 else '−'}{wording.points(moved)} on"
    elif before == 0:
        return (f"same as the {label}" if now == 0 else f"none in the {label}"), \
            "same" if now == 0 else ""
    else:
        moved = (now - before) / abs(before)
        text = "same as" if round(100 * moved) == 0 else \
            f"{'+' if moved > 0 else '−'}{wording.fine(abs(100 * moved))}% on"
    if text == "same as":
        return f"same as the {label}", "same"
    if slug in NEUTRAL:
        return f"{text} the {label}", ""
    better = (moved < 0) == (slug in LOWER_IS_BETTER)
    return f"{text} the {label}", "better" if better else "worse"


def kpis(f: Figures, money: Money, days: int, previous: Figures | None = None,
         previous_label: str = "previous period") -> list[Kpi]:
    """The key figures worded, each with its definition and its change on `previous`."""
    c = f.counts
    values = measures(f, money, days)
    before = measures(previous, money, days) if previous is not None else {}

    def rate(slug: str, part: int, whole: int, of: str) -> tuple[str, str, str]:
        return (slug, *wording.rate(part, whole, of))

    time_detail = "no texts in this period"
    if values["time"] is not None:
        p90 = percentile(f.text_delays, 90)
        time_detail = f"median, from the end of the missed call; 90% within " \
                      f"{wording.format_seconds(p90 or 0)}"
    delivery = rate("delivery", c["delivered"], c["reported"], "texts with a delivery report")
    if c["reported"] == 0 and c["texted"]:
        delivery = ("delivery", "n/a", "the SIP trunk only reports “submitted”: delivery is "
                    "unknown")
    shown: list[tuple[str, str, str]] = [
        ("inbound", f"{f.inbound:,}", f"{c['missed']:,} missed"),
        rate("missed", c["missed"], f.inbound, "inbound calls"),
        rate("contactable", c["contactable"], c["missed"], "missed calls can take an SMS"),
        rate("sent", c["texted"], c["missed"], "missed calls texted"),
        delivery,
        ("time", wording.format_seconds(values["time"]) if values["time"] is not None
         else "n/a", time_detail),
        rate("reply", c["replied"], c["texted"], f"texts answered within "
             f"{REPLY_WINDOW_DAYS} days"),
        rate("qualified", c["qualified"], c["replied"], "replies qualified"),
        rate("contacted", c["contacted"], c["missed"], "missed callers reached by staff"),
        rate("optout", c["opted_out"], c["texted"], "texts followed by an opt-out"),
        _response(f, values["response"]),
        ("booked", f"{c['booked']:,}",
         f"{wording.share(c['booked'], c['missed'])} of {c['missed']:,} missed calls "
         "booked a job afterwards" if c["missed"] else "no missed calls in this period"),
        ("booking-delivered", wording.share(c["booked_delivered"], c["delivered"]),
         f"{c['booked_delivered']:,} of {c['delivered']:,} delivered texts booked"
         if c["delivered"] else "no delivered texts in this period"),
        ("booking-reply", wording.share(c["booked_replied"], c["replied"]),
         f"{c['booked_replied']:,} of {c['replied']:,} replies booked"
         if c["replied"] else "no replies in this period"),
    ]
    jobs = len(f.booked_contacts)
    if money.job_value > 0:
        shown += [
            ("revenue", f"{values['revenue']:,.0f}",
             f"{c['recovered']:,} recovered leads × {money.close_rate:g} close rate × "
             f"{money.job_value:,.0f} per job"),
            ("booked-revenue", f"{jobs * money.job_value:,.0f}",
             f"{jobs:,} booked jobs × {money.job_value:,.0f} per job"),
            ("revenue-per-call", "n/a" if values["revenue-per-call"] is None
             else _money(values["revenue-per-call"]),
             f"{jobs * money.job_value:,.0f} booked revenue / {c['texted']:,} texts sent"
             if c["texted"] else "no texts sent in this period"),
        ]
    else:
        shown += [
            ("recovered", f"{c['recovered']:,}", "replied or reached by staff (set "
             "business.average_job_value for a revenue estimate)"),
            ("revenue-per-call", "n/a", "set business.average_job_value to count it"),
        ]
    if money.costs.any:
        spent = cost(f, money.costs, days)
        shown.append(("cost-per-booking", "n/a" if not jobs else _money(spent / jobs),
                      f"{_money(spent)} spent / {jobs:,} booked jobs" if jobs
                      else f"{_money(spent)} spent, no booked jobs in this period"))
    else:
        shown.append(("cost-per-booking", "n/a", "set the costs.* settings to count it"))
    out = []
    for slug, value, detail in shown:
        name, definition = DEFINITIONS[slug]
        change, trend = ("", "") if previous is None else _change(
            slug, values.get(slug), before.get(slug), previous_label)
        out.append(Kpi(name, value, detail, slug, definition, change, trend))
    return out


def _response(f: Figures, median: float | None) -> tuple[str, str, str]:
    slug = "response"
    replies = f.replies
    answered = replies - f.unanswered - sum(1 for wait in f.responses.values() if wait is None)
    if replies == 0:
        return slug, "n/a", "no replies to text-backs in this period"
    if answered == 0:
        return slug, "n/a", f"none of {replies:,} replies answered yet"
    waiting = replies - answered
    detail = f"median from a customer's reply to staff's first answer ({answered:,} " \
             f"answered" + (f", {waiting:,} not yet)" if waiting else ")")
    return slug, wording.format_seconds(median or 0), detail
