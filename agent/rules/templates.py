"""Text-back templates: merge fields, caller names from caller ID, SMS segment counting.

Merge fields are written in braces: ``Hi {first_name}, thanks for calling
{business}.`` A literal brace is doubled (``{{``). Which fields exist is fixed
(FIELDS); a template naming any other field is refused when it is saved
(validate), and render never raises, whatever it is given.

What an empty field does — the rule that keeps every text readable:

* ``{first_name}`` and ``{caller_name}`` fall back to "there", so
  "Hi {first_name}, …" reads "Hi there, …" when caller ID has no usable name.
* Any other field without a value (``{booking_link}`` when there is no booking
  page, ``{next_open}`` when the business never closes, ``{did}``, ``{business}``
  if ever empty) removes the whole *sentence* it stands in. A sentence ends
  after ".", "!" or "?" followed by a space, or at a line break. So write the
  optional parts as sentences of their own: "Sorry we missed you. Book online:
  {booking_link}" becomes "Sorry we missed you." without a link.

Segment counting follows what carriers bill: the GSM 03.38 default alphabet
(7-bit; the extension characters ``^{}\\[~]|€`` and form feed take two units)
gives 160 units in one SMS and 153 per part of a longer one; any other
character switches the whole text to UCS-2, counted in UTF-16 code units
(an emoji is two), 70 in one SMS and 67 per part. A part never ends between
the two units of an escape pair or of a surrogate pair. National language
shift tables are not used: phones and gateways rarely enable them.
"""

from __future__ import annotations

import difflib
import functools
import logging
import re
import unicodedata
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Literal

import gsm0338  # noqa: F401  (registers the "gsm03.38" codec)

log = logging.getLogger(__name__)

FIELDS: Mapping[str, str] = {
    "business": "the business name (setting business.name)",
    "caller_name": "the caller's name from caller ID, or 'there'",
    "first_name": "the caller's first name from caller ID, or 'there'",
    "booking_link": "the booking page (setting business.booking_link)",
    "next_open": "when the business opens again, e.g. 'tomorrow at 8:00'",
    "did": "the number the customer called",
    "customer": "the customer's number (in alerts to staff)",
    "message": "the customer's text (in alerts to staff)",
}
NAME_FALLBACK = "there"
_FALLBACKS = {"first_name": NAME_FALLBACK, "caller_name": NAME_FALLBACK}

MAX_CALLER_NAME = 40  # SIP display names can be long; CNAM is 15

_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
# A sentence ends after . ! or ? (and any closing quote or bracket) plus spaces, or
# after a line break.
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"'”’)\]]*[ \t]+|\n+")


class TemplateError(ValueError):
    """A template cannot be saved; the message names the field or brace at fault."""


# ---------------------------------------------------------------- templates


def _tokens(template: str) -> list[tuple[str, str | None]]:
    """Template → [(literal text, None) | (raw "{x}", field name)], never raising."""
    out: list[tuple[str, str | None]] = []
    position = 0
    for match in _TOKEN.finditer(template):
        if match.start() > position:
            out.append((template[position : match.start()], None))
        text = match.group(0)
        if text in ("{{", "}}"):
            out.append((text[0], None))
        elif match.group(1) is not None:
            out.append((text, match.group(1).strip()))
        else:
            out.append((text, None))  # a lone brace stays as written
        position = match.end()
    if position < len(template):
        out.append((template[position:], None))
    return out


def validate(template: str, always: Collection[str] = ("business",)) -> None:
    """Refuse a template that would not render as its author expects.

    Raises TemplateError for an unknown field (with the closest known one), a
    lone brace, an empty template, or a template in which every sentence
    depends on an optional field (it could render to nothing); `always` names
    the fields that are never empty where this template is used.
    """
    if not template.strip():
        raise TemplateError("the template is empty")
    for match in _TOKEN.finditer(template):
        text, name = match.group(0), match.group(1)
        if text in ("{{", "}}"):
            continue
        if name is None:
            raise TemplateError(
                f"lone {text!r} at character {match.start() + 1}; write {text * 2!r} "
                "for a brace in the text"
            )
        name = name.strip()
        if name not in FIELDS:
            close = difflib.get_close_matches(name, FIELDS, n=1)
            hint = f"did you mean {{{close[0]}}}? " if close else ""
            raise TemplateError(
                f"unknown merge field {{{name}}}; {hint}known fields: "
                + ", ".join(f"{{{field}}}" for field in FIELDS)
            )
    # business.name is never empty; alerts to staff also always carry the customer's
    # number and text, so their templates pass those in `always`
    if not render(template, dict.fromkeys(always, "x")).strip():
        raise TemplateError(
            "every sentence depends on an optional field, so the text could be empty; "
            "add a sentence without {booking_link}, {next_open} or {did}"
        )


def fields_used(template: str) -> set[str]:
    """The merge fields a template names: "Hi {first_name}" → {"first_name"}."""
    return {name for _text, name in _tokens(template) if name}


def _sentences(template: str) -> list[str]:
    """Split a template into sentences, each keeping the spacing that follows it."""
    pieces = []
    position = 0
    for match in _SENTENCE_END.finditer(template):
        pieces.append(template[position : match.end()])
        position = match.end()
    if position < len(template):
        pieces.append(template[position:])
    return pieces


def render(template: str, fields: Mapping[str, object | None]) -> str:
    """The text to send: fields merged in by the rule in the module docstring.

    Never raises: an unknown field (a template saved before a field was
    retired) is treated like an empty optional field, and lone braces stay.
    """
    out = []
    for sentence in _sentences(template):
        parts = []
        dropped = False
        for text, name in _tokens(sentence):
            if name is None:
                parts.append(text)
                continue
            if name not in FIELDS:
                log.warning("template names unknown field {%s}; its sentence is left out", name)
            value = fields.get(name)
            rendered = "" if value is None else " ".join(str(value).split())
            if not rendered:
                rendered = _FALLBACKS.get(name, "")
            if not rendered:
                dropped = True
                break
            parts.append(rendered)
        if not dropped:
            out.append("".join(parts))
    return "".join(out).strip()


# ------------------------------------------------------------- caller names

# What carriers' CNAM and PBXes put where a name would be.
_NOT_NAMES = frozenset(
    {
        "unknown",
        "unknown name",
        "unknown caller",
        "anonymous",
        "anonymous caller",
        "private",
        "private caller",
        "private name",
        "private number",
        "restricted",
        "unavailable",
        "name unavailable",
        "not available",
        "no caller id",
        "no name",
        "withheld",
        "blocked",
        "out of area",
        "wireless caller",
        "cell phone",
        "cellular caller",
        "mobile caller",
        "toll free",
        "toll free call",
        "toll free caller",
        "pay phone",
        "payphone",
        "caller",
        "guest",
        "asterisk",
        "spam risk",
        "scam likely",
        "telemarketer",
        "v",
    }
)
# Leading words of CNAM placeholders that carry a place after them ("CELL PHONE   TX").
_NOT_NAME_PREFIXES = ("wireless caller ", "cell phone ", "toll free ", "pay phone ")
# US states, DC and Canadian provinces: CNAM shows "DALLAS TX" when it only knows a place.
_REGION_CODES = frozenset(
    {
        "AL", "AK", "AZ", "AR", "CA", "CO", "CT", "DE", "DC", "FL", "GA", "HI", "ID", "IL",
        "IN", "IA", "KS", "KY", "LA", "ME", "MD", "MA", "MI", "MN", "MS", "MO", "MT", "NE",
        "NV", "NH", "NJ", "NM", "NY", "NC", "ND", "OH", "OK", "OR", "PA", "RI", "SC", "SD",
        "TN", "TX", "UT", "VT", "VA", "WA", "WV", "WI", "WY", "PR",
        "AB", "BC", "MB", "NB", "NL", "NS", "NT", "NU", "ON", "PE", "QC", "SK", "YT",
    }
)  # fmt: skip
_TITLES = frozenset({"mr", "mrs", "ms", "miss", "mx", "dr", "prof", "sir", "rev"})
# A first word that says the caller ID names an organisation, not a person.
_ORGANISATION_WORDS = frozenset(
    {
        "llc", "inc", "ltd", "limited", "corp", "co", "company", "gmbh", "plc", "sarl", "sa",
        "services", "service", "group", "clinic", "hospital", "school", "church", "bank",
        "pharmacy", "office", "dept", "department", "city", "county", "state", "university",
        "the", "of", "and", "&",
    }
)  # fmt: skip
_MAX_FIRST_NAME = 20


def clean_caller_name(raw: str | None) -> str | None:
    """The caller-ID name made safe to put in a text, or None when it is no name.

    Caller ID is hostile input: control and invisible formatting characters
    are removed, whitespace collapsed, surrounding quotes dropped and the
    result cut to MAX_CALLER_NAME characters. Names without a letter, carrier
    placeholders ("WIRELESS CALLER", "Anonymous") and CNAM place names
    ("DALLAS TX") give None; a real name wrongly dropped reads "Hi there",
    a place kept would read "Hi Dallas".
    """
    if raw is None:
        return None
    visible = "".join(
        " " if ch.isspace() else ch
        for ch in raw
        if ch.isspace() or unicodedata.category(ch)[0] != "C"
    )
    name = " ".join(visible.split()).strip("\"'“”‘’<> ")
    name = " ".join(name.split())
    if len(name) > MAX_CALLER_NAME:
        name = name[:MAX_CALLER_NAME].rstrip(" ,.-")
    if not any(ch.isalpha() for ch in name):
        return None
    lowered = " ".join(name.lower().replace(",", " ").split())
    if lowered in _NOT_NAMES or lowered.startswith(_NOT_NAME_PREFIXES):
        return None
    words = name.replace(",", " ").split()
    if len(words) >= 2 and name.isupper() and words[-1] in _REGION_CODES:
        return None
    return name


def _capitalised(word: str) -> str:
    """Title-case "JOHN" and "john"; mixed case ("McKenzie") stays as the caller wrote it."""
    if not (word.isupper() or word.islower()):
        return word
    parts = []
    for part in word.split("-"):
        initial = part[:1].upper()
        if len(initial) != 1 or initial.lower() != part[:1].lower():
            # "ß" upper-cases to "SS", the micro sign "µ" to a Greek capital that
            # lower-cases to another letter: keep such letters as written
            initial = part[:1]
        parts.append(initial + part[1:].lower())
    return "-".join(parts)


def first_name(name: str | None) -> str | None:
    """A person's first name from a cleaned caller-ID name, or None when unsure.

    "Smith, John" and "Dr. Jane Doe" give "John" and "Jane"; "Maria" gives
    "Maria". All-capital CNAM with several words ("SMITH JOHN") gives None,
    because carriers list the surname first there and we cannot tell.
    Organisations ("Acme Plumbing LLC") give None. Guessing wrong is worse
    than "Hi there".
    """
    if not name:
        return None
    if "," in name:
        surname, _, rest = name.partition(",")
        words = rest.split()
        if not surname.strip():
            return None
    else:
        words = name.split()
        if len(words) > 1 and name.isupper():
            return None
    lowered = {word.lower().strip(".") for word in name.replace(",", " ").split()}
    if lowered & _ORGANISATION_WORDS:
        return None
    while words and words[0].lower().strip(".") in _TITLES:
        words = words[1:]
    if not words:
        return None
    candidate = words[0]
    letters = candidate.replace("-", "").replace("'", "").replace("’", "")
    if not letters.isalpha() or not 2 <= len(candidate) <= _MAX_FIRST_NAME:
        return None
    if candidate[0] in "-'’" or candidate[-1] in "-'’":
        return None
    return _capitalised(candidate)


def full_name(name: str | None) -> str | None:
    """A cleaned caller-ID name as it is said, for {caller_name}; None when unsure.

    "Smith, John" reads "John Smith"; all-capital CNAM is title-cased when it is
    one word or written "SMITH, JOHN"; all-capital words without a comma give
    None, since their order is unknown (carriers often put the surname first).
    """
    if not name:
        return None
    if name.count(",") == 1:
        surname, given = (part.strip() for part in name.split(","))
        if surname and given:
            name = f"{given} {surname}"
    elif len(name.split()) > 1 and name.isupper():
        return None
    if name.isupper():
        return " ".join(_capitalised(word) for word in name.split())
    return name


# ------------------------------------------------------------------ segments


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    """How a text goes over the air: its encoding, length in units, and parts."""

    encoding: Literal["GSM-7", "UCS-2"]
    units: int  # septets (GSM-7) or UTF-16 code units (UCS-2)
    segments: int  # 0 for an empty text
    per_segment: int  # the limit that applied: 160/153 or 70/67


_SINGLE = {"GSM-7": 160, "UCS-2": 70}
_MULTI = {"GSM-7": 153, "UCS-2": 67}


@functools.cache
def _gsm7() -> tuple[dict[int, None], dict[int, None]]:
    """str.translate tables that delete every character GSM-7 carries, and only those
    that take two septets (an escape and the character).

    Read from the gsm0338 codec itself, one encode per character of its alphabet, so
    the count stays the library's: the codec encodes character by character in Python,
    and every text-back is counted (about 50 µs for a 160-character text, against a few
    for two translations). ESC is GSM-7's escape prefix, not a character a message can
    carry on its own, though the codec encodes it: a text holding one goes as UCS-2.
    """
    from gsm0338.charset import BASIC_CHARACTER_SET, BASIC_CHARACTER_SET_EXTENSION

    names = [*BASIC_CHARACTER_SET.values(), *BASIC_CHARACTER_SET_EXTENSION.values()]
    every: dict[int, None] = {}
    double: dict[int, None] = {}
    for name in names:
        character = unicodedata.lookup(name)
        if character == "\x1b":
            continue
        try:
            width = len(character.encode("gsm03.38"))
        except UnicodeEncodeError:  # a character the codec maps twice: it refuses it
            continue
        every[ord(character)] = None
        if width == 2:
            double[ord(character)] = None
    return every, double


def _encoding(text: str) -> tuple[Literal["GSM-7", "UCS-2"], int]:
    """The encoding a text needs, and its length in that encoding's units."""
    every, double = _gsm7()
    if not text.translate(every):  # nothing outside GSM-7's alphabet
        escaped = len(text) - len(text.translate(double))
        return "GSM-7", len(text) + escaped  # an escaped character is 2 septets
    return "UCS-2", len(text.encode("utf-16-le")) // 2


def _char_units(text: str, encoding: Literal["GSM-7", "UCS-2"]) -> list[int]:
    if encoding == "GSM-7":
        return [len(ch.encode("gsm03.38")) for ch in text]
    return [len(ch.encode("utf-16-le")) // 2 for ch in text]


def segments(text: str) -> SegmentInfo:
    """Count a text as a carrier bills it (see the module docstring)."""
    encoding, total = _encoding(text)
    if total <= _SINGLE[encoding]:  # most texts: counted without a look at each character
        return SegmentInfo(encoding, total, 1 if total else 0, _SINGLE[encoding])
    limit = _MULTI[encoding]
    parts, used = 1, 0
    for width in _char_units(text, encoding):
        if used + width > limit:  # an escape or surrogate pair moves whole to the next part
            parts, used = parts + 1, 0
        used += width
    return SegmentInfo(encoding, total, parts, limit)
