"""Asterisk's CDR file (cdr_csv's Master.csv): the calls that ended while AMI was not watched.

The agent learns about calls from AMI events. While the AMI link is down (or the
agent is stopped) those events are gone for good, but Asterisk still writes one
CSV row per CDR to ``/var/log/asterisk/cdr-csv/Master.csv``. After the link comes
back the agent reads the end of that file and hands every missed inbound call it
has not seen to the normal decision step (agent.daemon), so it is texted once,
like any other.

Pure except :func:`read`: rows in, :class:`~agent.calls.tracker.FinishedCall` out, with the
time window passed in.

Columns (cdr_csv writes them in this order; the optional ones depend on cdr.conf
``[csv]``)::

    accountcode, src, dst, dcontext, clid, channel, dstchannel, lastapp, lastdata,
    start, answer, end, duration, billsec, disposition, amaflags,
    [uniqueid if loguniqueid=yes], [userfield if loguserfield=yes],
    [peeraccount, linkedid, sequence if newcdrcolumns=yes]

So a row has 16 to 21 fields. Rows of one call share the ``linkedid`` (the
``Linkedid`` AMI reports, so a call seen live and in the file is one call);
without ``newcdrcolumns`` the ``uniqueid`` of the caller's channel stands in for
it (for the channel that started the call they are equal), but then the legs
behind a Local channel cannot be joined to the call, which makes the reading more
cautious (see :func:`missed_calls`).

What the file cannot say, compared with AMI: whether a voicemail was left
(``voicemail_left`` is False), whether the caller hung up while it rang (a
cancelled Dial is ``NO ANSWER``: reason ``noanswer``), and the DID when the
dialplan jumped elsewhere (``dst`` is the extension the dialplan was in, e.g.
``100`` after ``Goto(from-internal,100,1)``).
"""

from __future__ import annotations

import csv
import datetime as dt
import logging
import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass

from agent.calls.tracker import FinishedCall, MissReason
from agent.pbx.callerid import sip_display_name
from agent.pbx.channels import parse_channel
from agent.rules import numbers

log = logging.getLogger(__name__)

# Enough for many hours of a busy small-business PBX (a row is ~250 bytes: 8 MB is
# ~30,000 rows) while a years-old Master.csv of gigabytes is never read whole.
TAIL_BYTES = 8 * 1024 * 1024
# A row is written when its part of the call ends, so the rows of one call lie close
# together in the file, but not side by side: a call that ended just after the first
# row read may have rows (the phone that answered) before the part read.
TAIL_MARGIN = 600.0

_BASE_FIELDS = 16  # accountcode .. amaflags: always written
_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"  # cdr_csv's DATE_FORMAT "%Y-%m-%d %T"
# "1796126046.0", or "pbx1-1796126046.0" when asterisk.conf sets systemname
_UNIQUEID_RE = re.compile(r"^(?:[^,\s]+-)?\d+\.\d+$")
_CLID_QUOTED_RE = re.compile(r'^\s*"((?:[^"\\]|\\.)*)"\s*<([^<>]*)>\s*$', re.DOTALL)
_CLID_PLAIN_RE = re.compile(r"^\s*(.*?)\s*<([^<>]*)>\s*$", re.DOTALL)
_ESCAPE_RE = re.compile(r"\\(.)", re.DOTALL)

ANSWERED = "ANSWERED"
# everything ast_cdr_disp2str writes: another word in that column means shifted columns
_DISPOSITIONS = frozenset({ANSWERED, "NO ANSWER", "BUSY", "FAILED", "CONGESTION", "CANCEL",
                           "UNKNOWN"})
# ast_cdr_disp2str: a disposition as the miss reason agent.calls.tracker uses for the same
# DialStatus (FAILED is what CHANUNAVAIL leaves; CANCEL only with
# canceldispositionenabled in cdr.conf)
_DISPOSITION_REASON: dict[str, MissReason] = {
    "NO ANSWER": "noanswer",
    "BUSY": "busy",
    "FAILED": "chanunavail",
    "CONGESTION": "congestion",
    "CANCEL": "cancel",
}
# When one moment ends several ways (a ring group): someone rang > nobody could ring,
# as agent.calls.tracker ranks DialEnd statuses.
_RANK: dict[MissReason, int] = {
    "cancel": 5,
    "noanswer": 4,
    "busy": 3,
    "congestion": 2,
    "chanunavail": 1,
}
_WAITING_APPS = frozenset({"dial", "queue", "followme", "page"})


@dataclass(frozen=True, slots=True)
class CdrRow:
    """One line of Master.csv; times are unix seconds (the file has whole seconds)."""

    src: str  # the caller ID number
    dst: str  # the extension the dialplan was in
    dcontext: str
    clid: str  # '"Name" <number>'
    channel: str  # party A
    dstchannel: str  # party B, "" when the dialplan alone handled the channel
    lastapp: str
    start: float
    answer: float | None
    end: float
    disposition: str  # ANSWERED, NO ANSWER, BUSY, FAILED, CONGESTION
    uniqueid: str | None
    linkedid: str | None
    sequence: int | None

    @property
    def call_key(self) -> str | None:
        """The Linkedid of the call this row belongs to, as AMI names it."""
        return self.linkedid or self.uniqueid


@dataclass(frozen=True, slots=True)
class CdrTail:
    """What :func:`read` found: the rows, and whether they reach back to the file's start."""

    rows: list[CdrRow]
    whole_file: bool

    @property
    def complete_since(self) -> float:
        """Calls that ended from then on have all their rows in the part read."""
        if self.whole_file or not self.rows:
            return -math.inf
        return self.rows[0].end + TAIL_MARGIN  # the first row read was written at its end


def read(path: str | os.PathLike[str], *, zone: dt.tzinfo | None = dt.UTC,
         max_bytes: int = TAIL_BYTES) -> CdrTail:
    """The rows of the last `max_bytes` of the file (raises OSError when unreadable).

    The file only grows, and what is wanted is always at its end: seek there and
    drop the first, partial line. `zone` is how the file writes times: UTC with
    ``usegmtime = yes``, None for the host's local time.
    """
    with open(path, "rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        offset = max(0, size - max_bytes)
        handle.seek(offset)
        data = handle.read(size - offset)
    if offset:
        data = data.partition(b"\n")[2]
    # Asterisk writes whole lines: a last one without its newline is still being written
    # (cut inside a uniqueid, it would even parse, as another call)
    data = data[:data.rfind(b"\n") + 1]
    # a caller name is whatever the network sent: never let its bytes stop the read, and
    # split on newlines only (str.splitlines would also split on U+2028 in a name)
    text = data.decode("utf-8", errors="replace")
    return CdrTail(parse(text.split("\n"), zone=zone), whole_file=offset == 0)


def parse(lines: Iterable[str], *, zone: dt.tzinfo | None = dt.UTC) -> list[CdrRow]:
    """Parse lines of Master.csv; unreadable lines are logged (once, counted) and skipped.

    Line by line on purpose: a stray quote in one garbled line cannot swallow the
    rows after it. Each line is read by its own field count, so the rows written
    before and after a change of cdr.conf [csv] are both understood.
    """
    rows: list[CdrRow] = []
    skipped = 0
    first_bad = 0
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        row = parse_line(line, zone=zone)
        if row is None:
            skipped += 1
            first_bad = first_bad or number
            log.debug("CDR line %d not understood: %r", number, line[:300])
            continue
        rows.append(row)
    if skipped:
        log.warning("CDR file: %d line(s) not understood and skipped (the first is line %d "
                    "of the part read)", skipped, first_bad)
    return rows


def parse_line(line: str, *, zone: dt.tzinfo | None = dt.UTC) -> CdrRow | None:
    """One Master.csv line as a row, or None when it is not one."""
    try:
        fields = next(csv.reader([line]), None)
    except csv.Error:
        return None
    if fields is None or not _BASE_FIELDS <= len(fields) <= _BASE_FIELDS + 5:
        return None
    extra = fields[_BASE_FIELDS:]
    linkedid = None
    sequence = None
    if len(extra) >= 3:  # newcdrcolumns: peeraccount, linkedid, sequence
        *extra, _peeraccount, linkedid, raw_sequence = extra
        if not _UNIQUEID_RE.match(linkedid) or not raw_sequence.isdigit():
            return None
        sequence = int(raw_sequence)
    uniqueid = None
    if extra and _UNIQUEID_RE.match(extra[0]):
        uniqueid = extra[0]  # loguniqueid comes before loguserfield
    elif len(extra) == 2:
        return None  # both optional columns, yet the first is no uniqueid: misaligned
    disposition = fields[14].strip().upper()
    if disposition not in _DISPOSITIONS or not (fields[12].isdigit() and fields[13].isdigit()):
        return None
    try:
        start = _when(fields[9], zone)
        end = _when(fields[11], zone)
        answer = _when(fields[10], zone) if fields[10] else None
    except (ValueError, OverflowError, OSError):  # not a date, or one no clock can hold
        return None
    if end < start:
        return None
    return CdrRow(
        src=fields[1], dst=fields[2], dcontext=fields[3], clid=fields[4],
        channel=fields[5], dstchannel=fields[6], lastapp=fields[7],
        start=start, answer=answer, end=end, disposition=disposition,
        uniqueid=uniqueid, linkedid=linkedid, sequence=sequence,
    )


def _when(text: str, zone: dt.tzinfo | None) -> float:
    moment = dt.datetime.strptime(text.strip(), _TIME_FORMAT)
    if zone is not None:
        moment = moment.replace(tzinfo=zone)
    return moment.timestamp()  # naive: the host's local time, as Asterisk wrote it


def caller_name(clid: str) -> str | None:
    """The name in a CDR caller ID (``"Name" <number>``), unescaped (the CDR's quoting,
    then the SIP display name's, as on AMI); None when absent."""
    quoted = _CLID_QUOTED_RE.match(clid)
    if quoted:
        name = sip_display_name(_ESCAPE_RE.sub(r"\1", quoted.group(1)))
    else:
        plain = _CLID_PLAIN_RE.match(clid)
        name = plain.group(1) if plain else ""
    name = name.strip()
    return name if name and name != "<unknown>" else None


def call_keys(rows: Iterable[CdrRow]) -> set[str]:
    """The Linkedids of the calls these rows belong to: the calls the file accounts for."""
    return {key for row in rows if (key := row.call_key) is not None}


def missed_calls(rows: Iterable[CdrRow], since: float, until: float, *,
                 trunk_endpoints: Iterable[str], inbound_contexts: Iterable[str] = ()
                 ) -> list[FinishedCall]:
    """The inbound calls that ended in [since, until] and that no person answered.

    Inbound as agent.calls.tracker decides it: the caller's channel is on a trunk endpoint,
    or its rows were in one of `inbound_contexts`. A person answered when a row is
    ANSWERED with a phone (not a Local channel or the PBX's own machinery) as its
    destination. Without Linkedids the legs behind a Local channel are not in the
    call's rows, so an answered Local channel counts as a person: better a missed
    call not texted than a customer who talked to someone told they were missed.

    Rows carry whole seconds, so `since` is widened to its second. Calls come back
    oldest first.
    """
    trunks = frozenset(trunk_endpoints)
    contexts = frozenset(inbound_contexts)
    groups: dict[str, list[CdrRow]] = {}
    keyless = 0
    for row in rows:
        key = row.call_key
        if key is None:
            keyless += 1
            continue
        groups.setdefault(key, []).append(row)
    if keyless:
        log.warning("CDR file: %d row(s) name no call (no uniqueid or linkedid column): set "
                    "loguniqueid = yes and newcdrcolumns = yes in cdr.conf [csv]", keyless)
    floor_since = math.floor(since)
    found: list[FinishedCall] = []
    for key, group in groups.items():
        call = _finished(key, group, trunks, contexts)
        if call is not None and floor_since <= call.ended_at <= until:
            found.append(call)
    found.sort(key=lambda call: (call.ended_at, call.linkedid))
    return found


def _finished(key: str, group: list[CdrRow], trunks: frozenset[str],
              contexts: frozenset[str]) -> FinishedCall | None:
    """The call these rows tell of, if it was inbound and missed."""
    linked = any(row.linkedid for row in group)
    caller_rows = _caller_rows(key, group, linked)
    first = min(caller_rows, key=_order)
    channel = parse_channel(first.channel)
    from_trunk = not channel.is_local and channel.resource in trunks
    if not from_trunk and not any(row.dcontext in contexts for row in caller_rows):
        return None
    if any(_person_answered(row, linked) for row in group):
        return None
    started = min(row.start for row in caller_rows)
    ended = max(row.end for row in caller_rows)
    reason, waited_until = _miss_reason(group, ended)
    ring_end = min(max(waited_until, started), ended)
    caller = None if numbers.is_withheld(first.src) else first.src
    return FinishedCall(
        linkedid=key,
        caller=caller,
        caller_name=caller_name(first.clid),
        did=first.dst if first.dst not in ("", "s") else None,
        direction="inbound",
        missed=True,
        reason=reason,
        voicemail_left=False,  # the file does not say; the plain missed-call text is sent
        answered_by=None,
        ring_seconds=ring_end - started,
        started_at=started,
        ended_at=ended,
        trunk_endpoint=channel.resource or None,
    )


def _order(row: CdrRow) -> tuple[float, int]:
    return row.start, row.sequence if row.sequence is not None else 0


def _caller_rows(key: str, group: list[CdrRow], linked: bool) -> list[CdrRow]:
    """The rows of the channel that started the call (whose Uniqueid is the Linkedid)."""
    if not linked:
        return group  # grouped by uniqueid: every row is the caller's channel
    own = [row for row in group if row.uniqueid == key]
    if own:
        return own
    # no uniqueid column: the channel of the call's first row started it
    first = min(group, key=_order)
    return [row for row in group if row.channel == first.channel]


def _person_answered(row: CdrRow, linked: bool) -> bool:
    if row.disposition != ANSWERED or not row.dstchannel:
        return False
    channel = parse_channel(row.dstchannel)
    if channel.is_local:
        return not linked  # the ";2" half's own rows say what answered it, when we have them
    return channel.is_person


def _miss_reason(group: list[CdrRow], ended: float) -> tuple[MissReason, float]:
    """Why nobody answered, in the tracker's precedence, and when the wait for a person ended."""
    voicemail = [row for row in group if row.lastapp.casefold() == "voicemail"]
    if voicemail:
        reached = min(row.answer or row.start for row in voicemail)
        return "voicemail", reached
    episodes = [
        (row.end, _DISPOSITION_REASON[row.disposition]) for row in group
        if row.disposition in _DISPOSITION_REASON
        and (row.dstchannel or row.lastapp.casefold() in _WAITING_APPS)
    ]
    if episodes:  # the latest ringing decides, as it was the caller's last experience
        when, reason = max(episodes, key=lambda item: (item[0], _RANK[item[1]]))
        return reason, when
    answered = [row.answer for row in group if row.disposition == ANSWERED and row.answer]
    if answered:  # only the PBX itself answered: a menu, an announcement
        return "abandoned_ivr", min(answered)
    others = [_DISPOSITION_REASON[row.disposition] for row in group
              if row.disposition in _DISPOSITION_REASON]
    return max(others, key=_RANK.__getitem__, default="noanswer"), ended
