"""The carrier's side of the lab's SIP trunk, for SMS (SIP MESSAGE both ways)."""

from __future__ import annotations

import logging
import queue
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass

from agent.lab.errors import LabError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrunkMessage:
    """One SIP MESSAGE the trunk received (an outbound SMS as the carrier sees it)."""

    received_at: float
    to: str
    from_: str
    body: str
    call_id: str
    content_type: str


_HEADER_ALIASES = {"i": "call-id", "f": "from", "t": "to", "v": "via", "c": "content-type",
                   "l": "content-length"}


def _parse_sip(data: bytes) -> tuple[str, dict[str, list[str]], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("utf-8", errors="replace").split("\r\n")
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            continue
        key = name.strip().lower()
        key = _HEADER_ALIASES.get(key, key)
        headers.setdefault(key, []).append(value.strip())
    length = headers.get("content-length")
    if length and length[0].isdigit():
        body = body[: int(length[0])]
    return lines[0], headers, body


def _uri_user(uri: str) -> str:
    m = re.search(r"sips?:([^@;>]+)@", uri)
    return m.group(1) if m else ""


class TrunkPeer:
    """The carrier's side of the SIP trunk, for SMS: a tiny UDP SIP UAS in a thread.

    Answers every out-of-dialog ``MESSAGE`` with ``200 OK`` and records it once (a
    retransmission — same Call-ID and CSeq — is answered again but not recorded).  It can
    also send an inbound ``MESSAGE`` to Asterisk from the same port, which Asterisk
    identifies as the ``trunk`` endpoint (inbound SMS into the shipped
    ``[textback-sms-in]``).  Other requests get ``200 OK`` for OPTIONS and ``405`` otherwise.
    """

    def __init__(self, host: str, port: int, asterisk: tuple[str, int]) -> None:
        self.host, self.port = host, port
        self.asterisk = asterisk
        self.messages: list[TrunkMessage] = []
        self._seen: set[tuple[str, str]] = set()
        self._cond = threading.Condition()
        self._responses: dict[str, queue.Queue[str]] = {}
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._running = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._sock.bind((self.host, self.port))
        self._sock.settimeout(0.2)
        self._running = True
        self._thread = threading.Thread(target=self._serve, name="trunk-peer", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._running = False
        if self._thread is not None:
            self._thread.join(2)
            self._thread = None
        self._sock.close()

    def __enter__(self) -> TrunkPeer:
        if self._thread is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def clear(self) -> None:
        with self._cond:
            self.messages.clear()

    def wait_for(self, count: int = 1, timeout: float = 5.0) -> list[TrunkMessage]:
        """Wait until ``count`` messages are recorded; return them (raise on timeout)."""
        with self._cond:
            ok = self._cond.wait_for(lambda: len(self.messages) >= count, timeout)
            if not ok:
                raise LabError(
                    f"trunk received {len(self.messages)} MESSAGE(s), expected {count}"
                )
            return list(self.messages)

    def _serve(self) -> None:
        while self._running:
            try:
                data, addr = self._sock.recvfrom(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            try:
                self._handle(data, addr)
            except Exception:
                log.exception("trunk peer: bad datagram from %s", addr)

    def _handle(self, data: bytes, addr: tuple[str, int]) -> None:
        if not data.strip():
            return  # keep-alive
        start, headers, body = _parse_sip(data)
        call_id = (headers.get("call-id") or [""])[0]
        if start.startswith("SIP/2.0"):
            target = self._responses.get(call_id)
            if target is not None:
                target.put(start)
            return
        method, _, rest = start.partition(" ")
        request_uri = rest.rsplit(" ", 1)[0]
        cseq = (headers.get("cseq") or [""])[0]
        if method == "MESSAGE":
            key = (call_id, cseq)
            with self._cond:
                if key not in self._seen:
                    self._seen.add(key)
                    self.messages.append(TrunkMessage(
                        received_at=time.time(),
                        to=_uri_user(request_uri),
                        from_=(headers.get("from") or [""])[0],
                        body=body.decode("utf-8", errors="replace"),
                        call_id=call_id,
                        content_type=(headers.get("content-type") or [""])[0],
                    ))
                    self._cond.notify_all()
            self._reply(addr, headers, "200 OK")
        elif method == "OPTIONS":
            self._reply(addr, headers, "200 OK")
        elif method != "ACK":
            self._reply(addr, headers, "405 Method Not Allowed")

    def _reply(self, addr: tuple[str, int], headers: dict[str, list[str]], status: str) -> None:
        to = (headers.get("to") or [""])[0]
        if ";tag=" not in to:
            to += ";tag=trunk" + uuid.uuid4().hex[:8]
        lines = [f"SIP/2.0 {status}"]
        lines += [f"Via: {v}" for v in headers.get("via", [])]
        lines += [f"From: {(headers.get('from') or [''])[0]}", f"To: {to}",
                  f"Call-ID: {(headers.get('call-id') or [''])[0]}",
                  f"CSeq: {(headers.get('cseq') or [''])[0]}",
                  "Server: textback-lab-trunk", "Content-Length: 0", "", ""]
        self._sock.sendto("\r\n".join(lines).encode(), addr)

    def send_message(self, to_did: str, from_number: str, body: str | bytes, *,
                     timeout: float = 5.0) -> str:
        """Send an inbound SMS to Asterisk as the carrier; return the final status line.

        ``body`` as bytes is sent as it is (e.g. invalid UTF-8, as a broken gateway
        sends it). Retransmits like a UAC (500 ms, 1 s, 2 s...) until a final response
        arrives.
        """
        host, port = self.asterisk
        call_id = f"{uuid.uuid4().hex}@{self.host}"
        payload = body if isinstance(body, bytes) else body.encode("utf-8")
        request = "\r\n".join([
            f"MESSAGE sip:{to_did}@{host}:{port} SIP/2.0",
            f"Via: SIP/2.0/UDP {self.host}:{self.port};branch=z9hG4bK{uuid.uuid4().hex}",
            "Max-Forwards: 70",
            f"From: <sip:{from_number}@{self.host}:{self.port}>;tag={uuid.uuid4().hex[:10]}",
            f"To: <sip:{to_did}@{host}:{port}>",
            f"Call-ID: {call_id}",
            "CSeq: 1 MESSAGE",
            "Content-Type: text/plain;charset=UTF-8",
            f"Content-Length: {len(payload)}",
            "", "",
        ]).encode() + payload
        responses: queue.Queue[str] = queue.Queue()
        self._responses[call_id] = responses
        try:
            deadline = time.monotonic() + timeout
            interval = 0.5
            self._sock.sendto(request, self.asterisk)
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise LabError(f"no final response to MESSAGE within {timeout} s")
                try:
                    status = responses.get(timeout=min(interval, remaining))
                except queue.Empty:
                    self._sock.sendto(request, self.asterisk)
                    interval = min(interval * 2, 4.0)
                    continue
                code = status.split(" ", 2)[1] if status.count(" ") >= 1 else ""
                if code.isdigit() and int(code) >= 200:
                    return status
        finally:
            self._responses.pop(call_id, None)
