"""SMS transports: each sends one outbound message and says what happened.

A transport raises `SendError` with `permanent=True` when retrying can never
help (an invalid destination), so one bad number never blocks the queue, and
`permanent=False` for everything that may pass (link down, timeouts, congestion).
`uncertain=True` (temporary) says the request may have reached the provider, which
gave no answer: the text is then retried through that transport alone, which finds
out whether it took it before sending again, never failed over to another one (which
could text the customer twice).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from agent.messages.outbox import OutboundSms
from agent.transports.health import Health


class SendError(Exception):
    def __init__(self, text: str, *, permanent: bool, uncertain: bool = False) -> None:
        super().__init__(text)
        self.permanent = permanent
        self.uncertain = uncertain and not permanent


@dataclass(frozen=True, slots=True)
class SendResult:
    status: str  # "submitted" (handed on, fate unknown) or "sent" (accepted by the network)
    provider_ref: str | None = None
    provider_id: str | None = None  # a messaging API's unique id, named by its webhooks


class Transport(Protocol):
    name: str
    max_per_minute: int
    max_per_day: int  # SMS parts in any 24 h; 0: no daily limit

    def available(self) -> bool:
        """False when sending now cannot work (link down), so failover can skip it."""
        ...

    async def send(self, sms: OutboundSms) -> SendResult: ...

    def health(self) -> Health:
        """Its state for the transports panel (cheap: no I/O, read from what it knows)."""
        ...
