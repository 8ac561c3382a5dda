"""Asterisk's CDR file read back into missed calls (agent/cdr.py).

RECORDED (fixtures/cdr/Master.csv) is the file as the lab Asterisk 22 wrote it
(cdr.conf [csv] usegmtime, loguniqueid, loguserfield, newcdrcolumns) for one call
of each scenario, all from the trunk, in the order it wrote them; the other
layouts are the same rows without the optional columns, as Asterisk writes them
with those options off.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import logging
import socket
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from agent.calls import cdr
from agent.calls.tracker import FinishedCall

pytestmark = pytest.mark.clock  # make test-clock runs it at awkward instants too

FIXTURES = Path(__file__).parent / "fixtures"

RECORDED = (FIXTURES / "cdr" / "Master.csv").read_text(encoding="utf-8").splitlines()


def utc(text: str) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp()


SINCE, UNTIL = utc("2026-12-01 11:55:00"), utc("2026-12-01 11:57:00")
TRUNK_MISSED = {  # caller -> (Linkedid, reason)
    "+12125559000": ("1796126150.0", "noanswer"),
    "+12125559001": ("1796126154.2", "busy"),
    # the caller hung up while it rang: the file says NO ANSWER, like a timeout
    "+12125559002": ("1796126156.4", "noanswer"),
    "+12125559003": ("1796126158.6", "chanunavail"),
    "+12125559005": ("1796126163.9", "voicemail"),
    "+12125559007": ("1796126172.14", "noanswer"),  # FreePBX-style ring group, Local
    "+12125559009": ("1796126178.25", "abandoned_ivr"),
    "+12125559010": ("1796126182.26", "busy"),
}
ANSWERED = {"+12125559004", "+12125559006", "+12125559008"}  # phone, ring group, via Local


def missed(lines: list[str], since: float = SINCE, until: float = UNTIL,
           **kwargs: object) -> dict[str | None, FinishedCall]:
    options: dict[str, object] = {"trunk_endpoints": ["trunk"]} | kwargs
    calls = cdr.missed_calls(cdr.parse(lines), since, until, **options)  # type: ignore[arg-type]
    return {call.caller: call for call in calls}


def relayout(lines: list[str], *, uniqueid: bool, userfield: bool,
             linkedid: bool) -> list[str]:
    """The rows as Asterisk writes them with loguniqueid/loguserfield/newcdrcolumns set so."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for fields in csv.reader(lines):
        base, (unique, user, peer, linked, sequence) = fields[:16], fields[16:]
        writer.writerow(base + [unique] * uniqueid + [user] * userfield
                        + [peer, linked, sequence] * linkedid)
    return out.getvalue().splitlines()


def test_every_missed_trunk_call_is_found_with_the_reason_agent_calls_would_give() -> None:
    found = missed(RECORDED)
    assert {caller: (call.linkedid, call.reason) for caller, call in found.items()} \
        == TRUNK_MISSED
    assert not ANSWERED & found.keys()


def test_a_missed_call_carries_what_the_text_back_needs() -> None:
    call = missed(RECORDED)["+12125559001"]
    assert (call.direction, call.missed, call.caller_name, call.trunk_endpoint) == (
        "inbound", True, "Alice Caller", "trunk")
    assert call.did == "100"  # where the dialplan was: the lab jumps from the DID to 100
    assert (call.started_at, call.ended_at) == (utc("2026-12-01 11:55:54"),) * 2
    assert not call.voicemail_left and call.answered_by is None
    voicemail = missed(RECORDED)["+12125559005"]
    assert voicemail.ring_seconds == 2.0  # rang 2 s, then the mailbox answered
    assert voicemail.ended_at - voicemail.started_at == 5.0


@pytest.mark.parametrize(
    ("uniqueid", "userfield", "linkedid"),
    [(True, True, True), (True, False, True), (False, False, True), (True, True, False),
     (True, False, False)],
)
def test_each_column_layout_reads_the_same_missed_calls(
        uniqueid: bool, userfield: bool, linkedid: bool) -> None:
    lines = relayout(RECORDED, uniqueid=uniqueid, userfield=userfield, linkedid=linkedid)
    found = missed(lines)
    assert {caller: (call.linkedid, call.reason) for caller, call in found.items()} \
        == TRUNK_MISSED
    assert found["+12125559007"].started_at == utc("2026-12-01 11:56:12")


def test_without_linkedids_a_call_answered_behind_a_local_channel_is_not_texted() -> None:
    # the ";2" half's rows (the phone that answered) cannot be tied to the call, so an
    # answered Local channel must count as answered
    lines = relayout(RECORDED, uniqueid=True, userfield=False, linkedid=False)
    assert "+12125559008" not in missed(lines)


def test_rows_that_name_no_call_are_skipped_with_the_fix(caplog: pytest.LogCaptureFixture
                                                         ) -> None:
    lines = relayout(RECORDED, uniqueid=False, userfield=True, linkedid=False)
    with caplog.at_level(logging.WARNING, "agent.calls.cdr"):
        assert missed(lines) == {}
    assert "loguniqueid = yes and newcdrcolumns = yes" in caplog.text


def test_garbage_lines_are_logged_and_skipped_never_raised(caplog: pytest.LogCaptureFixture
                                                           ) -> None:
    good = RECORDED[2:4]  # the busy call
    garbage = [
        '"","+12125559000","100"',  # cut short (a disk full, a rotated file)
        good[0][:130],  # cut in the middle of a field
        good[0].replace("2026-12-01 11:55:54", "yesterday"),
        good[0].replace('"from-internal",', ""),  # a column short: the rest shifted
        good[0] + ',"surplus","columns","beyond","any","layout"',
        '"unterminated, quote',
        "\x00\x00\x00\x00",
        "\ufffd\ufffd binary \ufffd junk",
        good[0].replace("2026-12-01 11:55:54\",,\"2026-12-01 11:55:54",
                        "2026-12-01 11:55:54\",,\"2026-12-01 11:50:00"),  # ends before start
        "",
    ]
    with caplog.at_level(logging.WARNING, "agent.calls.cdr"):
        rows = cdr.parse([garbage[0], good[0], *garbage[1:], good[1]])
    assert [row.sequence for row in rows] == [3, 5]
    assert "9 line(s) not understood" in caplog.text
    assert "+1212555" not in caplog.text  # callers' numbers stay out of warnings
    assert missed([*garbage, *good])["+12125559001"].reason == "busy"


def test_a_hostile_caller_name_stays_one_field_and_is_unescaped() -> None:
    call = missed(RECORDED)["+12125559010"]
    assert call.caller_name == 'Zoë "Boss", O\'Brien <script>'
    # a name built to look like more columns, escaped the way Asterisk writes it: \" in
    # the caller ID, then "" in the CSV
    evil = '\\", "PJSIP/desk-00000099","Dial","x","2026-12-01 11:56:22",,"ANSWERED'
    clid = '"' + evil.replace("\\", "\\\\").replace('"', '\\"') + '" <+12125559002>'
    line = RECORDED[4].replace('"""Alice Caller"" <+12125559002>"',
                               '"' + clid.replace('"', '""') + '"')
    assert line != RECORDED[4]
    (row,) = cdr.parse([line])
    assert (row.channel, row.disposition) == ("PJSIP/trunk-00000004", "NO ANSWER")
    # what the caller typed, without the From header's quoted-pair escape
    assert cdr.caller_name(row.clid) == evil.removeprefix("\\")
    assert missed([line])["+12125559002"].reason == "noanswer"


@pytest.mark.parametrize(
    ("clid", "name"),
    [('"Alice Caller" <+12125550001>', "Alice Caller"),
     ("Bob <+12125550001>", "Bob"),
     ("<+12125550001>", None),
     ('"" <+12125550001>', None),
     ("+12125550001", None),
     ('"<unknown>" <>', None),
     ('"O\'Brien, <img src=x>" <+1>', "O'Brien, <img src=x>")],
)
def test_caller_name_from_the_caller_id(clid: str, name: str | None) -> None:
    assert cdr.caller_name(clid) == name


def test_a_withheld_caller_has_no_number() -> None:
    line = RECORDED[2].replace('"+12125559001"', '"anonymous"', 1)
    (call,) = cdr.missed_calls(cdr.parse([line]), SINCE, UNTIL, trunk_endpoints=["trunk"])
    assert call.caller is None and call.reason == "busy"


def test_rows_are_grouped_per_call_in_any_order() -> None:
    shuffled = list(reversed(RECORDED))
    assert missed(shuffled).keys() == missed(RECORDED).keys()
    two = missed(RECORDED[0:4])  # two calls, two rows each
    assert sorted(two) == ["+12125559000", "+12125559001"]


def test_only_calls_that_ended_inside_the_window() -> None:
    ended = utc("2026-12-01 11:55:54")  # the busy call, written in whole seconds
    assert "+12125559001" in missed(RECORDED, since=ended + 0.6)  # same second: kept
    assert "+12125559001" not in missed(RECORDED, since=ended + 1.2)
    assert "+12125559001" in missed(RECORDED, until=ended)
    assert "+12125559001" not in missed(RECORDED, until=ended - 1)
    calls = cdr.missed_calls(cdr.parse(RECORDED), SINCE, UNTIL, trunk_endpoints=["trunk"])
    assert [c.ended_at for c in calls] == sorted(c.ended_at for c in calls)  # oldest first


def test_inbound_is_the_trunk_or_an_inbound_context() -> None:
    assert missed(RECORDED, trunk_endpoints=["carrier"]) == {}
    by_context = missed(RECORDED, trunk_endpoints=[], inbound_contexts=["from-internal"])
    assert "+12125559001" in by_context
    internal = RECORDED[2].replace("PJSIP/trunk-00000002", "PJSIP/desk2-00000002")
    assert missed([internal]) == {}


def test_times_in_the_hosts_local_zone_when_usegmtime_is_off() -> None:
    chicago = ZoneInfo("America/Chicago")  # UTC-6 in December
    (utc_row,) = cdr.parse([RECORDED[5]])
    (local_row,) = cdr.parse([RECORDED[5]], zone=chicago)
    assert local_row.start - utc_row.start == 6 * 3600


def test_read_takes_the_tail_of_a_large_file(tmp_path: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "Master.csv"
    filler = RECORDED[0]  # a missed call's first row, many times over
    with path.open("w", encoding="utf-8") as handle:
        for _ in range(2000):
            handle.write(filler + "\n")
        handle.write("\n".join(RECORDED[2:4]) + "\n")
        handle.write(RECORDED[4][:100])  # Asterisk is writing this line right now
    with caplog.at_level(logging.WARNING, "agent.calls.cdr"):
        tail = cdr.read(path, max_bytes=10_000)
    assert not tail.whole_file
    assert 25 < len(tail.rows) < 10_000 // len(filler) + 1
    assert tail.rows[-1].sequence == 5  # the line being written is left for next time
    assert caplog.text == ""  # neither cut line counts as garbage
    whole = cdr.read(path)
    assert whole.whole_file and len(whole.rows) == 2002
    # a call ending soon after the first row read may have rows before it: not trusted
    assert tail.complete_since == utc("2026-12-01 11:55:52") + cdr.TAIL_MARGIN
    assert whole.complete_since < utc("2000-01-01")


def test_read_survives_any_bytes_in_a_caller_name(tmp_path: Path) -> None:
    path = tmp_path / "Master.csv"
    line = RECORDED[2].replace("Alice Caller", "Ren\xe9e").encode("latin-1")
    separators = RECORDED[4].replace("Alice Caller", "Line\u2028Sep\x1cFile\x85Next")
    path.write_bytes(line + b"\n" + separators.encode() + b"\n")
    first, second = cdr.read(path).rows
    assert cdr.caller_name(first.clid) == "Ren\ufffde"
    assert cdr.caller_name(second.clid) == "Line\u2028Sep\x1cFile\x85Next"
    with pytest.raises(FileNotFoundError):
        cdr.read(tmp_path / "missing.csv")


def test_doctor_says_whether_the_file_can_be_used(tmp_path: Path) -> None:
    from agent.config import parse
    from agent.ops.doctor import run_checks

    path = tmp_path / "Master.csv"
    with socket.socket() as probe:  # no Asterisk needed: AMI is simply unreachable
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cfg = parse({"ami": {"secret": "x", "port": port},
                 "database": {"url": f"sqlite:///{tmp_path / 'textback.db'}"},
                 "pbx": {"cdr_csv": str(path)}}, tmp_path / "textback.toml")

    def doctor() -> str:
        lines: list[str] = []
        run_checks(cfg, echo=lines.append)
        return "\n".join(lines)

    report = doctor()
    assert f"FAIL CDR file {path} does not exist" in report
    assert "load cdr_csv.so" in report
    path.write_text("\n".join(relayout(RECORDED, uniqueid=False, userfield=False,
                                       linkedid=False)) + "\n")
    report = doctor()
    assert f"FAIL CDR file {path}: rows have no uniqueid or linkedid column" in report
    assert "newcdrcolumns = yes" in report
    path.write_text("\n".join(RECORDED) + "\n")
    assert f"ok   CDR file {path} readable by" in doctor()
