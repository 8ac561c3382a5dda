"""The ports one lab uses, and whether they are free."""

from __future__ import annotations

import socket
from dataclasses import dataclass

from agent.lab.errors import LabError

LOCALHOST = "127.0.0.1"


@dataclass(frozen=True)
class PortLayout:
    """Every port one lab uses, derived from a base so labs can sit side by side.

    A lab occupies ``base .. base+299``: SIP and AMI, fixed phone ports, five caller
    ports and five trunk call-origin ports (so up to five concurrent calls of each kind),
    100 RTP ports for Asterisk and 100 media ports for SIPp.
    """

    base: int

    @property
    def sip(self) -> int:
        return self.base

    @property
    def ami(self) -> int:
        return self.base + 1

    @property
    def desk(self) -> int:
        return self.base + 3

    @property
    def desk2(self) -> int:
        return self.base + 4

    @property
    def trunk(self) -> int:
        """The trunk peer's port: where Asterisk sends SIP MESSAGE (outbound SMS)."""
        return self.base + 5

    @property
    def callers(self) -> tuple[int, ...]:
        return tuple(range(self.base + 10, self.base + 15))

    @property
    def trunk_calls(self) -> tuple[int, ...]:
        """Source ports of calls that arrive "from the carrier" (identified as trunk)."""
        return tuple(range(self.base + 15, self.base + 20))

    @property
    def rtp_start(self) -> int:
        return self.base + 100

    @property
    def rtp_end(self) -> int:
        return self.base + 199

    @property
    def media(self) -> tuple[int, ...]:
        """SIPp media ports (RTP, RTCP, video RTP, video RTCP per slot)."""
        return tuple(range(self.base + 200, self.base + 300, 4))

    def endpoint_port(self, name: str) -> int:
        return {"desk": self.desk, "desk2": self.desk2}[name]


def ensure_ports_valid(base: int) -> None:
    if not 1024 <= base <= 65535 - 300:
        raise LabError(f"port base {base} out of range (1024..65235)")


def check_ports_free(ports: PortLayout) -> None:
    """Fail early if another lab (or anything) holds the SIP/AMI/trunk ports.

    Asterisk itself only logs a failed bind and keeps running deaf, which would turn
    into baffling test timeouts much later.
    """
    busy = []
    checks = [(socket.SOCK_DGRAM, ports.sip), (socket.SOCK_STREAM, ports.ami),
              (socket.SOCK_DGRAM, ports.trunk)]
    for kind, port in checks:
        with socket.socket(socket.AF_INET, kind) as sock:
            # like Asterisk itself: a port in TIME_WAIT from the last lab is free
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((LOCALHOST, port))
            except OSError:
                busy.append(port)
    if busy:
        raise LabError(f"ports {busy} on {LOCALHOST} are in use (another lab still "
                       f"running?); choose another port base than {ports.base}")
