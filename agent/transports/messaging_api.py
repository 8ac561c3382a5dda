"""What the providers' HTTP messaging APIs (transports/twilio.py, transports/telnyx.py)
share: the HTTP client and its health, a send that cannot reach the API, a refusal that
is about the number (the text fails for good, the number is marked) and one that is not.

Each provider keeps its own request, error codes and duplicate guard; this module holds
only the steps that must behave the same for every such API.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any, NoReturn, Protocol

import httpx

from agent.messages.outbox import OutboundSms
from agent.store.db import DbRunner
from agent.transports import SendError, receipts
from agent.transports.health import DOWN, UP, Health

# answers that say the API or our account is in trouble (not the text): shown as DOWN
TROUBLE = (401, 403, 404, 429)


class ApiConfig(Protocol):
    api_base: str
    max_per_minute: int
    max_per_day: int
    timeout: float


class MessagingApiTransport:
    """The common part of a transport that sends through a provider's HTTP API."""

    name: str

    def __init__(self, config: ApiConfig, public_url: str, db: DbRunner,
                 client: httpx.AsyncClient | None = None) -> None:
        self.public_url = public_url
        self.db = db
        self.max_per_minute = config.max_per_minute
        self.max_per_day = config.max_per_day
        self.client = client or httpx.AsyncClient(timeout=config.timeout)
        self._api_base = config.api_base
        self._problem: str | None = None

    def available(self) -> bool:
        return True  # HTTP has no link to watch: a failed request says more

    def health(self) -> Health:
        where = self._api_base
        if self._problem:
            return Health(self.name, DOWN, f"{where}: {self._problem}")
        return Health(self.name, UP, f"messaging API at {where}")

    async def post(self, url: str, **kwargs: Any) -> httpx.Response:
        """POST, with SendError (temporary: nothing was written) when the API cannot be
        reached; any other httpx.HTTPError (written, never answered) is the caller's."""
        try:
            return await self.client.post(url, **kwargs)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            self._problem = f"unreachable: {exc or type(exc).__name__}"
            raise SendError(f"the messaging API is unreachable ({self._problem})",
                            permanent=False) from None

    def taken(self) -> None:
        """The API took a text: it is up."""
        self._problem = None

    async def refused(self, sms: OutboundSms, why: str, *, opted_out: bool,
                      not_textable: bool) -> NoReturn:
        """The API refused the text because of its number: the text fails for good and
        the number is marked, so no transport tries it again."""
        self._problem = None
        await self.db(lambda s: receipts.refused(
            s, sms.number, self.name, opted_out=opted_out, not_textable=not_textable,
            why=why, now=dt.datetime.now(dt.UTC)))
        raise SendError(why, permanent=True)

    def failed(self, status_code: int, why: str) -> NoReturn:
        """Any other refusal: temporary (retried, failed over); one that says the API or
        the account is in trouble also marks the transport down until a send succeeds."""
        if status_code in TROUBLE or status_code >= 500:
            self._problem = why
        raise SendError(why, permanent=False)

    async def close(self) -> None:
        await self.client.aclose()

    async def client_closed(self) -> None:
        """Wait until cancelled, then close the HTTP client: the task that keeps this
        transport alive for `textback send-test`, as AMI's and the modem's do theirs."""
        try:
            await asyncio.Event().wait()
        finally:
            await self.close()


def json_of(response: httpx.Response) -> dict[str, Any]:
    """The answer's JSON object, or {} when it is none."""
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
