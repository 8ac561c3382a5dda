"""Every kind of message (Message.kind), declared once.

The kind says why a text exists; the inbox labels it, the dashboard counts by it,
opt-out and retention rules look at it. The strings are stored in the database:
never rename one.
"""

from __future__ import annotations

# in: a customer's text, whatever transport brought it
SMS = "sms"

# out, to the caller of a missed call
TEXTBACK = "textback"  # the text-back itself
FOLLOWUP = "followup"  # a polite nudge later, while the lead stays quiet

# out, answering a customer's text
OPT_OUT_CONFIRMATION = "optout_confirm"  # the one text after STOP
OPT_IN_CONFIRMATION = "optin_confirm"  # after START
HELP = "help"  # after HELP
EMERGENCY_REPLY = "emergency_reply"  # "we are on it" to an emergency
AUTO_REPLY = "auto_reply"  # a scheduling or pricing question answered at once
STAFF_REPLY = "staff_reply"  # written by the front desk in the inbox

# out, to staff
ALERT = "alert"  # a customer replied, an emergency, a reminder or a supervisor's escalation

# out, by IT staff checking the SMS path (`textback send-test`, the transports page)
TEST = "test"

# the only text an opted-out number may still get: the confirmation of its STOP
EXEMPT_FROM_OPT_OUT = frozenset({OPT_OUT_CONFIRMATION})

# automated texts to a customer, counted and held back by compliance.max_automated_per_day
# (several US states cap them at 3 in 24 h); staff replies, STOP/START/HELP answers and
# alerts to staff are not
AUTOMATED = frozenset({TEXTBACK, FOLLOWUP, AUTO_REPLY, EMERGENCY_REPLY})
