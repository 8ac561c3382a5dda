"""Recorded AMI transcripts: the raw traffic of a real Asterisk, replayable offline.

A transcript is what an AMI client received, verbatim, with two additions by the
recorder: a leading ``# banner: ...`` line and an ``X-RecvTS: <unix time>`` line at
the top of every block (the moment the block was received). Blocks are separated
by a blank line. The first block is the login response.

Replaying these files through the CallTracker is how the project proves it reads
real PBX behaviour correctly, so the reader must be boring and forgiving: a
recorder killed mid-write, a hostile caller name with junk bytes or a half-copied
file must cost one block, never the replay.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

RECV_TS = "X-RecvTS"
"""The recorder's receive-time line; not part of AMI, so never exposed as an AMI key."""


@dataclass(frozen=True, slots=True)
class TranscriptEvent:
    """One AMI event from a transcript, with the time the recorder received it.

    ``fields`` maps each header name (spelled as Asterisk sent it) to its *first*
    value, which is what Asterisk's own ``astman_get_header`` would return.
    Headers that legitimately repeat (``ChanVariable`` with several channel
    variables configured) keep every value, in order, in ``repeated``.
    """

    recv_ts: float | None
    fields: dict[str, str]
    repeated: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The AMI event name (``Newchannel``, ``DialEnd`` ...)."""
        return self.fields.get("Event", "")

    def values(self, key: str) -> tuple[str, ...]:
        """Every value sent for ``key``, in order (empty when absent)."""
        if key in self.repeated:
            return self.repeated[key]
        if key in self.fields:
            return (self.fields[key],)
        return ()


class MalformedBlock(ValueError):
    """A block that cannot be an AMI message (a line without a colon)."""


def parse_block(lines: list[str]) -> tuple[float | None, list[tuple[str, str]]]:
    """Split one block into its receive time and its ``(key, value)`` pairs.

    The value keeps everything after ``"Key: "`` verbatim (inner colons, trailing
    spaces of a caller name); only the single separating space is removed.
    """
    recv_ts: float | None = None
    pairs: list[tuple[str, str]] = []
    for line in lines:
        key, sep, value = line.partition(":")
        if not sep or not key or key != key.strip():
            raise MalformedBlock(f"line without a header name: {line[:60]!r}")
        if value.startswith(" "):
            value = value[1:]
        if key == RECV_TS:
            try:
                recv_ts = float(value.strip())
            except ValueError:
                log.warning("transcript: unreadable %s value %r; block kept", RECV_TS, value[:40])
            continue
        pairs.append((key, value))
    return recv_ts, pairs


def _event_from_block(lines: list[str], lineno: int) -> TranscriptEvent | None:
    """Build the event for one block, or ``None`` for non-events and junk (logged)."""
    try:
        recv_ts, pairs = parse_block(lines)
    except MalformedBlock as exc:
        log.warning("transcript: skipping malformed block at line %d: %s", lineno, exc)
        return None
    fields: dict[str, str] = {}
    multi: dict[str, list[str]] = {}
    for key, value in pairs:
        if key in fields:
            multi.setdefault(key, [fields[key]]).append(value)
        else:
            fields[key] = value
    if "Event" not in fields:
        # The login response and any other action response: not an event.
        log.debug("transcript: skipping non-event block at line %d", lineno)
        return None
    repeated = {key: tuple(values) for key, values in multi.items()}
    return TranscriptEvent(recv_ts=recv_ts, fields=fields, repeated=repeated)


def iter_events(lines: Iterable[str]) -> Iterator[TranscriptEvent]:
    """Yield the events of a transcript given as text lines (with or without EOLs).

    Streaming, so a day-long recording is never held in memory. A final block
    that stops mid-line (the recorder was killed) is dropped with a warning: its
    last header would be cut short and could mislead the tracker.
    """
    block: list[str] = []
    block_start = 0
    in_preamble = True
    last_line_complete = True
    for lineno, raw in enumerate(lines, start=1):
        last_line_complete = raw.endswith("\n")
        line = raw.rstrip("\r\n")
        if in_preamble and line.startswith("#"):
            continue  # the recorder's banner
        in_preamble = False
        if line.strip() == "":
            if block:
                event = _event_from_block(block, block_start)
                if event is not None:
                    yield event
                block = []
            continue
        if not block:
            block_start = lineno
        block.append(line)
    if block:
        if not last_line_complete:
            log.warning("transcript: dropping truncated final block at line %d", block_start)
            return
        event = _event_from_block(block, block_start)
        if event is not None:
            yield event


def parse_transcript(data: bytes | str) -> Iterator[TranscriptEvent]:
    """Yield the events of a whole transcript held in memory.

    Bytes are decoded as UTF-8 with replacement: AMI carries whatever the caller's
    carrier put in a caller name, and one bad byte must not cost the recording.
    """
    text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data
    return iter_events(_split_lines(text))


def read_transcript(path: str | os.PathLike[str]) -> Iterator[TranscriptEvent]:
    """Yield the events of the transcript file at ``path``, streaming it.

    Read as bytes and split on LF only: ``str.splitlines`` would also break a
    line at a form feed or U+2028 hidden in a caller name.
    """
    with Path(path).open("rb") as handle:
        yield from iter_events(raw.decode("utf-8", errors="replace") for raw in handle)


def _split_lines(text: str) -> Iterator[str]:
    """Split on LF only, keeping the LF (so a cut-off last line is recognisable)."""
    start = 0
    while start < len(text):
        end = text.find("\n", start)
        if end < 0:
            yield text[start:]
            return
        yield text[start : end + 1]
        start = end + 1


def read_events(path: str | os.PathLike[str]) -> Iterator[tuple[float, dict[str, str]]]:
    """Yield ``(receive time, AMI headers)`` pairs: what a replay feeds the CallTracker.

    A block without a usable ``X-RecvTS`` inherits the previous block's time (or
    0.0 at the start), so time never runs backwards because of one damaged line.
    """
    last = 0.0
    for event in read_transcript(path):
        if event.recv_ts is not None:
            last = event.recv_ts
        yield last, event.fields
