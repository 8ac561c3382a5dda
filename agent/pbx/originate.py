"""Calls the PBX places for textback: ring someone first, then connect the customer.

Used for emergencies (ring the on-call target, then dial the customer) and, with
the web UI, for "call back" (ring the staff member's desk phone first). Ringing
our own side first means the customer never answers to silence.

Everything dialled here is either a validated PJSIP endpoint name or an E.164
number that textback normalised itself, never raw text from a caller.
"""

from __future__ import annotations

import re

_ENDPOINT = re.compile(r"[A-Za-z0-9_.-]{1,80}")
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")


def dial_string(target: str, trunk: str) -> str:
    """`desk` → `PJSIP/desk`; `+15551234567` → `PJSIP/+15551234567@trunk`."""
    if _E164.fullmatch(target):
        return f"PJSIP/{target}@{trunk}"
    if _ENDPOINT.fullmatch(target):
        return f"PJSIP/{target}"
    raise ValueError(f"not a PJSIP endpoint or an E.164 number: {target!r}")


def connect_action(first: str, customer: str, *, trunk: str, label: str,
                   ring_seconds: int = 30) -> dict[str, str]:
    """The AMI Originate that rings `first`, then dials `customer` through `trunk`."""
    if not _E164.fullmatch(customer):
        raise ValueError(f"customer number must be E.164, not {customer!r}")
    return {
        "Action": "Originate",
        "Channel": dial_string(first, trunk),
        "Application": "Dial",
        "Data": f"{dial_string(customer, trunk)},60",
        # the phone that rings shows who it is for, e.g. "EMERGENCY <+15551234567>"
        "CallerID": f'"{label}" <{customer}>',
        "Timeout": str(ring_seconds * 1000),
        "Async": "true",
    }
