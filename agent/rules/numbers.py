"""Caller numbers: withheld or not, E.164, what kind of line, which time zone.

A caller ID arrives as whatever the trunk put in CallerIDNum: "+442079460958",
"02079460958", "011 44 20 7946 0958", "anonymous", "100" (a desk phone calling
in), or junk. Everything here is parsed with `phonenumbers`, never with
hand-written patterns, because numbering plans change and its metadata follows.
"""

from __future__ import annotations

import functools
import logging

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberFormat, PhoneNumberType

log = logging.getLogger(__name__)

# What PBXes, trunks and carriers put in the caller-ID number when there is no
# number to show. Compared after lower-casing and removing brackets and a SIP URI.
_WITHHELD_WORDS = frozenset(
    {
        "anonymous",
        "unknown",
        "restricted",
        "private",
        "unavailable",
        "withheld",
        "blocked",
        "none",
        "null",
        "invalid",
        "out of area",
        "no caller id",
        "private number",
        "unknown caller",
        "caller id blocked",
        "not available",
    }
)

# Longest digit string still taken for a PBX extension rather than a phone number.
# Real national numbers in the plans we serve have at least 7 digits; extensions
# on small PBXes have 2–6.
_MAX_EXTENSION_DIGITS = 6
# parsing a number with the full numbering plan costs ~0.1 ms; the same callers and the
# business's own DIDs come back all day, and the answers never change while running
CACHED_NUMBERS = 4096

_KINDS = {
    PhoneNumberType.FIXED_LINE: "fixed_line",
    PhoneNumberType.MOBILE: "mobile",
    PhoneNumberType.FIXED_LINE_OR_MOBILE: "fixed_line_or_mobile",
    PhoneNumberType.TOLL_FREE: "toll_free",
    PhoneNumberType.PREMIUM_RATE: "premium_rate",
    PhoneNumberType.SHARED_COST: "shared_cost",
    PhoneNumberType.VOIP: "voip",
    PhoneNumberType.PERSONAL_NUMBER: "personal_number",
    PhoneNumberType.PAGER: "pager",
    PhoneNumberType.UAN: "uan",
    PhoneNumberType.VOICEMAIL: "voicemail",
}


def _strip_uri(raw: str) -> str:
    """Reduce "sip:+4420…@host;user=phone" or "<tel:…>" to the user part."""
    text = raw.strip().strip("<>\"' ").strip()
    lowered = text.lower()
    for scheme in ("sips:", "sip:", "tel:"):
        if lowered.startswith(scheme):
            text = text[len(scheme) :]
            break
    text = text.split("@", 1)[0]
    return text.split(";", 1)[0].strip()


def _digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


def is_withheld(raw: str | None) -> bool:
    """True when the caller did not present a number we could ever text.

    Covers an absent or empty caller ID, the privacy words trunks use
    ("anonymous", "<unknown>", "Restricted", "sip:anonymous@anonymous.invalid"),
    strings without a single digit, and all-zero placeholders ("0000000000"),
    which some carriers send instead of nothing.
    """
    if raw is None:
        return True
    text = _strip_uri(raw)
    words = " ".join(text.lower().replace("_", " ").split())
    if not words or words in _WITHHELD_WORDS:
        return True
    digits = _digits(text)
    return not digits or set(digits) == {"0"}


def _parse(raw: str, region: str) -> phonenumbers.PhoneNumber | None:
    try:
        return phonenumbers.parse(raw, region.upper())
    except NumberParseException:
        return None


@functools.lru_cache(maxsize=CACHED_NUMBERS)
def to_e164(raw: str, region: str) -> str | None:
    """The caller's number in E.164, or None when it is not a valid phone number.

    `region` is the PBX's country (ISO 3166 alpha-2), used for national numbers
    and the country's own international prefix ("00", "011"). Two trunk habits
    are also handled: an international prefix foreign to the region ("00" heard
    on a US trunk), and an international number sent without its "+"
    ("442079460958"). Both are tried only when the national reading is invalid.
    Validity (not mere possibility) is required so that we never text a number
    the numbering plan does not contain.
    """
    if is_withheld(raw):
        return None
    text = _strip_uri(raw)
    candidates = [text]
    digits = _digits(text)
    if not text.startswith("+"):
        for prefix in ("011", "00"):
            if digits.startswith(prefix):
                candidates.append("+" + digits[len(prefix) :])
                break
        candidates.append("+" + digits)
    for candidate in candidates:
        parsed = _parse(candidate, region)
        if parsed is not None and phonenumbers.is_valid_number(parsed):
            return phonenumbers.format_number(parsed, PhoneNumberFormat.E164)
    return None


def _valid_e164(e164: str) -> phonenumbers.PhoneNumber | None:
    parsed = _parse(e164, "ZZ")
    return parsed if parsed is not None and phonenumbers.is_valid_number(parsed) else None


def split_e164(e164: str) -> tuple[int, str] | None:
    """(country code, national significant number) of a valid stored number:
    "+15551234567" → (1, "5551234567"); None otherwise."""
    parsed = _valid_e164(e164)
    return (parsed.country_code, str(parsed.national_number)) if parsed is not None else None


def written_forms(e164: str) -> list[str]:
    """A valid stored number as people and systems write it: E.164, international and
    national ("+1 555-123-4567", "(555) 123-4567"); [] otherwise."""
    parsed = _valid_e164(e164)
    if parsed is None:
        return []
    return [phonenumbers.format_number(parsed, style) for style in (
        PhoneNumberFormat.E164, PhoneNumberFormat.INTERNATIONAL, PhoneNumberFormat.NATIONAL)]


@functools.lru_cache(maxsize=CACHED_NUMBERS)
def number_kind(e164: str) -> str:
    """The line type the numbering plan gives the number.

    One of "mobile", "fixed_line", "fixed_line_or_mobile" (plans such as the
    US/Canada where the number alone cannot tell), "voip", "toll_free",
    "premium_rate", "shared_cost", "personal_number", "pager", "uan",
    "voicemail" or "unknown" (including anything that does not parse).
    """
    parsed = _parse(e164, "ZZ")
    if parsed is None:
        return "unknown"
    return _KINDS.get(phonenumbers.number_type(parsed), "unknown")


def is_internal_extension(raw: str | None, region: str) -> bool:
    """True for a short all-digit caller ID such as "100" or "2001" that is no phone number.

    Internal calls normally carry direction "internal", but a desk phone that
    calls the main number through a trunk loop, or a ring group fed by a local
    queue, can arrive as "inbound" with the extension as caller ID. Short
    service numbers that the plan knows (valid numbers) are not extensions.
    """
    if raw is None:
        return False
    text = _strip_uri(raw)
    compact = "".join(text.split())
    if not compact.isdigit() or len(compact) > _MAX_EXTENSION_DIGITS:
        return False
    parsed = _parse(compact, region)
    return parsed is None or not phonenumbers.is_valid_number(parsed)


def timezones_for(e164: str) -> list[str]:
    """IANA time zones the number's prefix belongs to; [] when the plan does not say.

    Follow-ups must respect quiet hours in the recipient's zone; the area code is
    a defensible proxy. A list of several zones (US toll-free, Canada-wide
    prefixes) means the caller could be in any of them.
    """
    from phonenumbers import timezone  # loads sizeable data; only follow-ups need it

    parsed = _parse(e164, "ZZ")
    if parsed is None:
        return []
    zones = timezone.time_zones_for_number(parsed)
    return [zone for zone in zones if zone != timezone.UNKNOWN_TIMEZONE]


@functools.lru_cache(maxsize=CACHED_NUMBERS)
def format_national(raw: str, region: str) -> str | None:
    """A valid number as people in `region` write it ("020 7946 0958"); None otherwise.

    Used for the {did} merge field, so that "call us on {did}" reads naturally,
    and so that a dialled extension ("s", "100") never appears in a text.
    """
    parsed = _parse(_strip_uri(raw), region)
    if parsed is None or not phonenumbers.is_valid_number(parsed):
        return None
    if phonenumbers.region_code_for_number(parsed) == region.upper():
        return phonenumbers.format_number(parsed, PhoneNumberFormat.NATIONAL)
    return phonenumbers.format_number(parsed, PhoneNumberFormat.INTERNATIONAL)


# the phonenumbers geocoder names US places as a state ("Texas"), a place and the state's
# postal code ("Dallas, TX") or, for one state, "Washington State"
_STATE_CODES = {
    "Alabama": "AL", "Alaska": "AK", "Arizona": "AZ", "Arkansas": "AR", "California": "CA",
    "Colorado": "CO", "Connecticut": "CT", "Delaware": "DE", "Florida": "FL",
    "Georgia": "GA", "Hawaii": "HI", "Idaho": "ID", "Illinois": "IL", "Indiana": "IN",
    "Iowa": "IA", "Kansas": "KS", "Kentucky": "KY", "Louisiana": "LA", "Maine": "ME",
    "Maryland": "MD", "Massachusetts": "MA", "Michigan": "MI", "Minnesota": "MN",
    "Mississippi": "MS", "Missouri": "MO", "Montana": "MT", "Nebraska": "NE",
    "Nevada": "NV", "New Hampshire": "NH", "New Jersey": "NJ", "New Mexico": "NM",
    "New York": "NY", "North Carolina": "NC", "North Dakota": "ND", "Ohio": "OH",
    "Oklahoma": "OK", "Oregon": "OR", "Pennsylvania": "PA", "Rhode Island": "RI",
    "South Carolina": "SC", "South Dakota": "SD", "Tennessee": "TN", "Texas": "TX",
    "Utah": "UT", "Vermont": "VT", "Virginia": "VA", "Washington": "WA",
    "Washington State": "WA", "West Virginia": "WV", "Wisconsin": "WI", "Wyoming": "WY",
    "Washington D.C.": "DC", "Washington, D.C.": "DC",
}  # fmt: skip
US_STATES = frozenset(_STATE_CODES.values())


@functools.lru_cache(maxsize=CACHED_NUMBERS)
def us_state(e164: str) -> str | None:
    """The US state (postal code, "TX") a number's area code is in; None for numbers
    outside the US and where the numbering data names no state (toll-free, new
    overlays). From the geocoder of `phonenumbers`, which keeps up with new area codes
    (checked against every US area code: it names the state, "Dallas, TX" or
    "Texas", or nothing)."""
    from phonenumbers import geocoder  # loads sizeable data; only quiet hours need it

    parsed = _valid_e164(e164)
    if parsed is None or phonenumbers.region_code_for_number(parsed) != "US":
        return None
    place = geocoder.description_for_number(parsed, "en")
    if place in _STATE_CODES:
        return _STATE_CODES[place]
    tail = place.rpartition(", ")[2]
    return tail if tail in US_STATES else None


def is_us(e164: str) -> bool:
    parsed = _valid_e164(e164)
    return parsed is not None and phonenumbers.region_code_for_number(parsed) == "US"
