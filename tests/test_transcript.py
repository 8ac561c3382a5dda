"""The transcript reader: real recordings, and the damage real files suffer."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.pbx.transcript import parse_transcript, read_events, read_transcript

AMI = Path(__file__).parent / "fixtures" / "ami"

HEADER = "# banner: Asterisk Call Manager/11.0.0\n"
LOGIN = "X-RecvTS: 100.0\nResponse: Success\nMessage: Authentication accepted\n\n"


def block(recv_ts: float, *lines: str) -> str:
    return f"X-RecvTS: {recv_ts}\n" + "\n".join(lines) + "\n\n"


HANGUP = block(101.5, "Event: Hangup", "Channel: PJSIP/desk-00000001", "Uniqueid: 1.1",
               "Linkedid: 1.0", "Cause: 16")


@pytest.mark.parametrize("path", sorted(AMI.glob("*.txt")), ids=lambda p: p.stem)
def test_recorded_transcripts_read_as_events_only(path: Path) -> None:
    events = list(read_transcript(path))
    assert events, "every recording holds at least FullyBooted"
    for event in events:
        assert event.name, event
        assert "X-RecvTS" not in event.fields
        assert "Response" not in event.fields
        assert event.recv_ts is not None
    times = [event.recv_ts for event in events]
    assert times == sorted(times)


def test_banner_and_login_response_are_skipped() -> None:
    [event] = list(parse_transcript(HEADER + LOGIN + HANGUP))
    assert event.recv_ts == 101.5
    assert event.fields == {
        "Event": "Hangup", "Channel": "PJSIP/desk-00000001", "Uniqueid": "1.1",
        "Linkedid": "1.0", "Cause": "16",
    }


def test_values_keep_colons_and_spaces_verbatim() -> None:
    text = block(1.0, "Event: Newexten", "AppData: call from \"A: B\" <+1555>  ",
                 "AccountCode: ", "CallerIDName:  two leading")
    [event] = list(parse_transcript(text))
    assert event.fields["AppData"] == 'call from "A: B" <+1555>  '
    assert event.fields["AccountCode"] == ""
    assert event.fields["CallerIDName"] == " two leading"


def test_repeated_headers_keep_every_value_in_order() -> None:
    text = block(1.0, "Event: Newchannel", "ChanVariable: A=1", "ChanVariable: B=2",
                 "Uniqueid: 1.0")
    [event] = list(parse_transcript(text))
    assert event.fields["ChanVariable"] == "A=1"
    assert event.values("ChanVariable") == ("A=1", "B=2")
    assert event.values("Uniqueid") == ("1.0",)
    assert event.values("Missing") == ()


def test_crlf_line_endings_are_accepted() -> None:
    text = (HEADER + LOGIN + HANGUP).replace("\n", "\r\n")
    [event] = list(parse_transcript(text))
    assert event.fields["Cause"] == "16"


def test_block_with_a_line_without_colon_is_skipped_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bad = block(100.5, "Event: DialEnd", "this line has no colon", "Uniqueid: 1.0")
    with caplog.at_level(logging.WARNING, logger="agent.pbx.transcript"):
        events = list(parse_transcript(HEADER + LOGIN + bad + HANGUP))
    assert [e.name for e in events] == ["Hangup"]
    assert "malformed" in caplog.text


def test_binary_junk_and_invalid_utf8_never_crash(caplog: pytest.LogCaptureFixture) -> None:
    junk = b"X-RecvTS: 100.2\n\x00\x01\x02\xff\xfe garbage\n\n"
    bad_utf8 = b"X-RecvTS: 100.3\nEvent: Newchannel\nCallerIDName: Caf\xe9 \xc3\n\n"
    data = HEADER.encode() + LOGIN.encode() + junk + bad_utf8 + HANGUP.encode()
    with caplog.at_level(logging.WARNING, logger="agent.pbx.transcript"):
        events = list(parse_transcript(data))
    assert [e.name for e in events] == ["Newchannel", "Hangup"]
    assert events[0].fields["CallerIDName"] == "Caf\ufffd \ufffd"


def test_truncated_final_block_is_dropped(caplog: pytest.LogCaptureFixture) -> None:
    cut = "X-RecvTS: 102.0\nEvent: Hangup\nChannel: PJSIP/tru"
    with caplog.at_level(logging.WARNING, logger="agent.pbx.transcript"):
        events = list(parse_transcript(HEADER + LOGIN + HANGUP + cut))
    assert [e.recv_ts for e in events] == [101.5]
    assert "truncated" in caplog.text


def test_final_block_without_blank_line_but_complete_lines_is_kept() -> None:
    events = list(parse_transcript(HEADER + LOGIN + HANGUP.rstrip("\n") + "\n"))
    assert [e.name for e in events] == ["Hangup"]


def test_unreadable_recv_ts_keeps_the_event_and_read_events_carries_time_forward(
    tmp_path: Path,
) -> None:
    path = tmp_path / "t.txt"
    path.write_text(HEADER + LOGIN + HANGUP + HANGUP.replace("X-RecvTS: 101.5", "X-RecvTS: ?"))
    assert [t for t, _ in read_events(path)] == [101.5, 101.5]


def test_form_feed_and_line_separator_inside_a_value_do_not_split_the_line(
    tmp_path: Path,
) -> None:
    name = "A\x0cB\u2028C\x1cD"
    text = block(1.0, "Event: Newchannel", f"CallerIDName: {name}", "Uniqueid: 1.0")
    path = tmp_path / "t.txt"
    path.write_bytes((HEADER + text).encode())
    [event] = list(read_transcript(path))
    assert event.fields["CallerIDName"] == name
    [event] = list(parse_transcript(HEADER + text))
    assert event.fields["CallerIDName"] == name


@settings(max_examples=200, deadline=None)
@given(
    value=st.text(
        alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"),
        max_size=300,
    )
)
def test_any_single_line_value_round_trips(value: str) -> None:
    text = block(5.0, "Event: Newchannel", f"CallerIDName: {value}", "Uniqueid: 1.0")
    [event] = list(parse_transcript((HEADER + LOGIN + text).encode()))
    assert event.fields["CallerIDName"] == value


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=2000))
def test_arbitrary_bytes_never_crash(data: bytes) -> None:
    for event in parse_transcript(HEADER.encode() + data):
        assert "Event" in event.fields
