"""AMI for test control and recording: a tiny synchronous client and a transcript
recorder (the fixture format)."""

from __future__ import annotations

import base64
import contextlib
import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from agent.lab.errors import LabError


def _parse_block(block: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in block.split("\r\n"):
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    return fields


class AmiClient:
    """Minimal synchronous AMI client for test control (not the agent's client).

    A reader thread splits the stream into blocks; responses (matched by ActionID) go to
    :meth:`action`, events to :attr:`events` (a queue) so tests can assert on them.
    """

    def __init__(self, host: str, port: int, user: str, secret: str, *,
                 events: str = "on", timeout: float = 10.0) -> None:
        self.user = user
        self.timeout = timeout
        self.events: queue.Queue[dict[str, str]] = queue.Queue()
        self._responses: dict[str, queue.Queue[dict[str, str]]] = {}
        self._lock = threading.Lock()
        self._sock = socket.create_connection((host, port), timeout=timeout)
        self._file = self._sock.makefile("rb")
        self.banner = self._file.readline().decode(errors="replace").strip()
        self._sock.settimeout(None)
        self._closed = False
        self._thread = threading.Thread(target=self._reader, name="ami-client", daemon=True)
        self._thread.start()
        resp = self.action("Login", Username=user, Secret=secret, Events=events)
        if resp.get("Response") != "Success":
            self.close()
            raise LabError(f"AMI login as {user} failed: {resp.get('Message')}")

    def _reader(self) -> None:
        buf = b""
        while not self._closed:
            try:
                line = self._file.readline()
            except (OSError, ValueError):
                break
            if not line:
                break
            if line in (b"\r\n", b"\n"):
                if buf:
                    self._dispatch(_parse_block(buf.decode("utf-8", errors="replace")))
                buf = b""
            else:
                buf += line
        self._closed = True

    def _dispatch(self, msg: dict[str, str]) -> None:
        action_id = msg.get("ActionID")
        with self._lock:
            target = self._responses.get(action_id) if action_id else None
        if target is not None and ("Response" in msg or "Event" in msg):
            target.put(msg)
        else:
            self.events.put(msg)

    def send(self, action: str, **fields: str) -> str:
        """Send an action without waiting; return its ActionID."""
        action_id = fields.pop("ActionID", None) or uuid.uuid4().hex
        with self._lock:
            self._responses[action_id] = queue.Queue()
        lines = [f"Action: {action}", f"ActionID: {action_id}"]
        lines += [f"{k}: {v}" for k, v in fields.items()]
        self._sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        return action_id

    def action(self, action: str, **fields: str) -> dict[str, str]:
        """Send an action and return its response (for lists: the first message)."""
        action_id = self.send(action, **fields)
        try:
            return self._responses[action_id].get(timeout=self.timeout)
        except queue.Empty:
            raise LabError(f"no AMI response to {action} within {self.timeout} s") from None

    def action_list(self, action: str, **fields: str) -> list[dict[str, str]]:
        """Send a list action and collect everything up to ``EventList: Complete``."""
        action_id = self.send(action, **fields)
        out: list[dict[str, str]] = []
        deadline = time.monotonic() + self.timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                msg = self._responses[action_id].get(timeout=max(0.0, remaining))
            except queue.Empty:
                raise LabError(f"{action} list incomplete after {self.timeout} s") from None
            out.append(msg)
            if msg.get("EventList") == "Complete" or msg.get("Response") == "Error":
                return out

    def wait_event(self, predicate: Callable[[dict[str, str]], bool],
                   timeout: float = 10.0) -> dict[str, str]:
        """Return the first queued event matching ``predicate`` (others are dropped)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LabError(f"no matching AMI event within {timeout} s")
            try:
                event = self.events.get(timeout=remaining)
            except queue.Empty:
                continue
            if predicate(event):
                return event

    def drain(self) -> list[dict[str, str]]:
        """All events queued so far."""
        out = []
        with contextlib.suppress(queue.Empty):
            while True:
                out.append(self.events.get_nowait())
        return out

    def close(self) -> None:
        if self._closed and self._sock.fileno() < 0:
            return
        with contextlib.suppress(OSError):
            self._sock.sendall(b"Action: Logoff\r\n\r\n")
        self._closed = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()

    def __enter__(self) -> AmiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AmiRecorder:
    """Write everything AMI sends into a transcript file (the fixture format).

    Format: first line ``# banner: <AMI banner>``, then each block as received, preceded
    by ``X-RecvTS: <unix time>`` and followed by a blank line; CRLF becomes LF.  The first
    block is the login response.  Used as a context manager; on exit it keeps reading
    :attr:`settle` seconds so trailing events (Cdr, Hangup) land in the file.
    """

    def __init__(self, host: str, port: int, user: str, secret: str, path: Path, *,
                 settle: float = 1.0) -> None:
        self.host, self.port, self.user, self._secret = host, port, user, secret
        self.path = Path(path)
        self.settle = settle
        self.blocks = 0
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="ami-recorder", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise LabError("AMI recorder did not log in within 10 s")
        if self._error is not None:
            raise LabError(f"AMI recorder failed: {self._error}")

    def _run(self) -> None:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=10)
        except OSError as exc:
            self._error = exc
            self._ready.set()
            return
        sock.settimeout(0.2)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with sock, self.path.open("w", encoding="utf-8", newline="\n") as out:
            buf = b""
            login = (f"Action: Login\r\nUsername: {self.user}\r\nSecret: {self._secret}\r\n"
                     "Events: on\r\n\r\n").encode()
            banner_done = False
            sock.sendall(login)
            while not self._stop.is_set():
                try:
                    chunk = sock.recv(65536)
                except TimeoutError:
                    continue
                except OSError as exc:
                    self._error = exc
                    break
                if not chunk:
                    break
                now = time.time()
                buf += chunk
                if not banner_done:
                    if b"\r\n" not in buf:
                        continue
                    banner, buf = buf.split(b"\r\n", 1)
                    out.write(f"# banner: {banner.decode(errors='replace')}\n")
                    banner_done = True
                while b"\r\n\r\n" in buf:
                    block, buf = buf.split(b"\r\n\r\n", 1)
                    text = block.decode("utf-8", errors="replace").replace("\r\n", "\n")
                    out.write(f"X-RecvTS: {now:.6f}\n{text}\n\n")
                    self.blocks += 1
                    if self.blocks == 1:
                        if not text.startswith("Response: Success"):
                            self._error = LabError(f"login refused: {text}")
                            self._stop.set()
                        self._ready.set()
                out.flush()
            with contextlib.suppress(OSError):
                sock.sendall(b"Action: Logoff\r\n\r\n")
        self._ready.set()

    def stop(self) -> None:
        if self._thread is None:
            return
        time.sleep(self.settle)
        self._stop.set()
        self._thread.join(5)
        self._thread = None

    def __enter__(self) -> AmiRecorder:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def b64(text: str) -> str:
    """Base64 of UTF-8 text, as AMI ``MessageSend``'s ``Base64Body`` wants it."""
    return base64.b64encode(text.encode("utf-8")).decode("ascii")
