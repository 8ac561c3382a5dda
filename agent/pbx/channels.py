"""Asterisk channel names: ``PJSIP/desk-0000001a`` says the technology, the endpoint
(a phone or a trunk) and, for Local channels, which half.

The AMI path (agent.calls.tracker) and the CDR path (agent.calls.cdr) read them
the same way from here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Channel technologies that never put a person on the line: Local halves are
# plumbing (follow the chain), the rest are the PBX's own machinery.
_MACHINE_TECHS = frozenset(
    {
        "local",
        "message",
        "announcer",
        "cbann",
        "cbrec",
        "snoop",
        "recorder",
        "unicastrtp",
        "multicastrtp",
        "audiosocket",
        "websocket",
        "bridge",
        "surrogate",
    }
)
_CHANNEL_RE = re.compile(
    r"^(?P<tech>[^/]+)/(?P<resource>.+?)(?:-(?P<seq>[0-9A-Fa-f]+))?(?P<half>;[12])?$", re.DOTALL
)

@dataclass(frozen=True, slots=True)
class Channel:
    """What a channel name says: ``PJSIP/desk-0000001a`` -> tech PJSIP, endpoint desk."""

    tech: str
    resource: str
    local_half: str | None  # "1"/"2" for Local channels
    base: str  # the name without ";1"/";2", shared by both Local halves

    @property
    def endpoint(self) -> str:
        return f"{self.tech}/{self.resource}"

    @property
    def is_person(self) -> bool:
        return self.tech.casefold() not in _MACHINE_TECHS

    @property
    def is_local(self) -> bool:
        return self.tech.casefold() == "local"


def parse_channel(name: str) -> Channel:
    """Split an Asterisk channel name into technology, endpoint and Local half."""
    clean = name.split("<", 1)[0]  # "<ZOMBIE>", "<MASQ>" after a masquerade
    match = _CHANNEL_RE.match(clean)
    if match is None:
        return Channel(tech=clean, resource="", local_half=None, base=clean)
    half = match["half"][1:] if match["half"] else None
    base = clean[: -len(match["half"])] if match["half"] else clean
    return Channel(match["tech"], match["resource"], half, base)


def endpoint_of(name: str) -> str:
    """``PJSIP/desk-0000001a`` -> ``PJSIP/desk``: a stable name for a phone or trunk."""
    channel = parse_channel(name)
    return channel.endpoint if channel.resource else channel.tech
