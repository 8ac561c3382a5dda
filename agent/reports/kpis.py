"""The dashboard's key figures from the period's counts (agent.reports.queries).

Definitions (shown on the page too, so an owner can check them):
  missed-call rate   missed inbound calls / inbound calls
  contactability     missed calls that could get an SMS (not withheld, invalid or a
                     landline) / missed calls
  send rate          missed calls whose text-back left (submitted, sent or
                     delivered) / missed calls
  delivery rate      delivered / text-backs sent over a route that reports delivery
                     (a messaging API's "delivered" or "undelivered", a modem's report;
                     the SIP trunk only says "submitted": then it is n/a)
  time to text       median from the end of the missed call to the text leaving
  reply rate         text-backs answered by the customer within 7 days / text-backs
  contacted rate     missed calls whose caller staff reached afterwards
                     (contacts.contacted_at) / missed calls
  opt-out rate       text-backs after which the customer opted out / text-backs
  recovered leads    missed calls whose caller replied or was reached
  revenue estimate   recovered leads x business.close_rate x business.average_job_value
  booked             missed calls whose caller's conversation was marked "Booked a job"
                     in the inbox at or after the call started (contacts.booked_at >=
                     calls.started_at) / missed calls
  booked revenue     booked customers (each counted once, however often they called) x
                     business.average_job_value
  staff response     median time from a customer's reply to a text-back to staff's
                     first answer. The replies: the first text from the caller within 7
                     days of each text-back of the period's missed calls, each reply
                     counted once. The answer: the earliest of a reply from the inbox
                     (a staff_reply text to that number) and the moment staff reached the
                     customer (contacts.contacted_at: an answered call back or call,
                     "Mark contacted", a booking), at or after the reply. contacted_at
                     keeps only the latest reach, so a call back followed by a later
                     reach counts at the later one. Replies nobody has answered yet are
                     left out of the median and counted beside it.

Each count is one SQL aggregate of agent.reports.queries (the CASE of the same name in
its figures statement); this module divides them and words the result.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.reports import wording
from agent.reports.queries import REPLY_WINDOW_DAYS, Counts

# how the figures are counted, as the page explains them (the module docstring has more)
DEFINITIONS = (
    ("Booked", "missed calls whose caller's conversation was marked “Booked a job” in the "
     "inbox at or after the call (a customer who called three times counts three times)."),
    ("Booked revenue", "booked customers, each counted once, × business.average_job_value."),
    ("Staff response time", "for each customer's first reply within 7 days to a text-back "
     "of these missed calls (each reply counted once), the time until staff first answered "
     "it: a reply from the inbox, or the customer reached (an answered call back or call, "
     "“Mark contacted”, a booking). The median of the answered replies; the ones nobody has "
     "answered yet are counted beside it. Only the latest time a customer was reached is "
     "kept, so a call back followed by a later contact counts at the later one."),
)


@dataclass(frozen=True)
class Kpi:
    name: str
    value: str  # "42%", "1 min 20 s", "n/a"
    detail: str  # the fraction or the reason behind it
    slug: str


def kpis(c: Counts, close_rate: float, job_value: float) -> list[Kpi]:
    def rate(name: str, slug: str, part: int, whole: int, of: str) -> Kpi:
        return Kpi(name, *wording.rate(part, whole, of), slug=slug)

    delivery = rate("Delivery rate", "delivery", c.delivered, c.reported, "texts with a "
                    "delivery report")
    if c.reported == 0 and c.texted:
        delivery = Kpi("Delivery rate", "n/a", "the SIP trunk only reports “submitted”: "
                       "delivery is unknown", "delivery")
    out = [
        Kpi("Inbound calls", f"{c.inbound:,}", f"{c.missed:,} missed", "inbound"),
        rate("Missed-call rate", "missed", c.missed, c.inbound, "inbound calls"),
        rate("Contactability", "contactable", c.contactable, c.missed,
             "missed calls can take an SMS"),
        rate("Text-back send rate", "sent", c.texted, c.missed, "missed calls texted"),
        delivery,
        Kpi("Time to text", wording.format_seconds(c.median_seconds)
            if c.median_seconds is not None else "n/a",
            "median, from the end of the missed call" if c.median_seconds is not None
            else "no texts in this period", "time"),
        rate("Reply rate", "reply", c.replied, c.texted, f"texts answered within "
             f"{REPLY_WINDOW_DAYS} days"),
        rate("Contacted rate", "contacted", c.contacted, c.missed,
             "missed callers reached by staff"),
        rate("Opt-out rate", "optout", c.opted_out, c.texted, "texts followed by an opt-out"),
        _response_kpi(c),
        Kpi("Booked", f"{c.booked:,}",
            f"{wording.share(c.booked, c.missed)} of {c.missed:,} missed calls "
            "booked a job afterwards" if c.missed else "no missed calls in this period",
            "booked"),
    ]
    if job_value > 0:
        estimate = c.recovered * close_rate * job_value
        out.append(Kpi("Revenue estimate", f"{estimate:,.0f}",
                       f"{c.recovered:,} recovered leads × {close_rate:g} close rate × "
                       f"{job_value:,.0f} per job", "revenue"))
        out.append(Kpi("Booked revenue", f"{c.booked_customers * job_value:,.0f}",
                       f"{c.booked_customers:,} booked jobs × {job_value:,.0f} per job",
                       "booked-revenue"))
    else:
        out.append(Kpi("Recovered leads", f"{c.recovered:,}", "replied or reached by staff "
                       "(set business.average_job_value for a revenue estimate)", "recovered"))
    return out


def _response_kpi(c: Counts) -> Kpi:
    name, slug = "Staff response time", "response"
    if c.replies == 0:
        return Kpi(name, "n/a", "no replies to text-backs in this period", slug)
    waiting = c.replies - c.answered
    if c.response_seconds is None:
        return Kpi(name, "n/a", f"none of {c.replies:,} replies answered yet", slug)
    detail = f"median from a customer's reply to staff's first answer ({c.answered:,} " \
             f"answered" + (f", {waiting:,} not yet)" if waiting else ")")
    return Kpi(name, wording.format_seconds(c.response_seconds), detail, slug)

