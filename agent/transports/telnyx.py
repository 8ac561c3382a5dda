"""SMS through Telnyx's Messaging API v2 (`[sms.telnyx]`).

Send: `POST {api_base}/v2/messages` with a JSON body (from or messaging_profile_id, to,
text, webhook_url), `Authorization: Bearer <API key>`. A 200 carries `data.id`: stored
on the row (`provider_id`), the row is "submitted"; Telnyx then posts `message.sent`
and `message.finalized` to `/hooks/telnyx` on the web app (web/hooks.py), and the
customers' texts as `message.received`.

Webhooks are signed with Ed25519: `telnyx-signature-ed25519` (base64) over
`<telnyx-timestamp>|<raw body>`, checked with the account's public key; a timestamp
more than five minutes old is refused, so a captured callback cannot be replayed.

Errors: a refusal whose code is about the number (40300: it replied STOP, Telnyx
blocks it; 40310: not a valid number) fails the text for good and marks the number
(agent.transports.receipts.refused); 429, 5xx, an unreachable API and other refusals
are temporary (retried with backoff, failed over).

No duplicate after a timeout: each text is sent with an `Idempotency-Key` made from
its row (id, number and body) and a byte-for-byte identical body, so Telnyx answers a
retry of a request it took with the same message instead of sending a second one. A
request that was written but never answered is retried through Telnyx alone
(SendError(uncertain=True)), never failed over to a transport that would text again.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.config import TelnyxConfig
from agent.messages.outbox import OutboundSms
from agent.store.db import DbRunner
from agent.transports import SendError, SendResult, receipts
from agent.transports.messaging_api import MessagingApiTransport, json_of

log = logging.getLogger(__name__)

NAME = "telnyx"
HOOK_PATH = "/hooks/telnyx"
MAX_AGE = dt.timedelta(minutes=5)  # a signed webhook older than this is refused
OPTED_OUT = "40300"  # "Blocked due to STOP message"
PERMANENT = {OPTED_OUT: "the recipient replied STOP to this sender",
             "40310": "invalid 'to' address", "40001": "not routable (landline?)"}
NOT_TEXTABLE = ("40001",)
# to[0].status in message.sent / message.finalized → the row's state
STATES = {"sent": receipts.SENT, "delivered": receipts.DELIVERED,
          "sending_failed": receipts.FAILED, "delivery_failed": receipts.FAILED}


def signature_ok(public_key: str, timestamp: str | None, body: bytes, given: str | None,
                 now: dt.datetime) -> bool:
    """True when `given` signs `timestamp|body` with the account's key and the timestamp
    is no more than five minutes old (nor more than five minutes ahead)."""
    if not timestamp or not given or not timestamp.isdigit():
        return False
    if abs(now.timestamp() - int(timestamp)) > MAX_AGE.total_seconds():
        return False
    try:
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key))
        key.verify(base64.b64decode(given, validate=True), timestamp.encode() + b"|" + body)
    except (InvalidSignature, ValueError, binascii.Error):
        return False
    return True


@dataclass(frozen=True, slots=True)
class Event:
    """One webhook, as much of it as textback uses."""

    kind: str  # "message.received" | "message.sent" | "message.finalized" | …
    message_id: str
    sender: str  # message.received: the customer's number
    to: str  # the first recipient's number
    text: str
    media: int  # pictures or files with it
    status: str  # the first recipient's status: "sent", "delivered", "delivery_failed"…
    errors: list[Any]


def read_event(raw: bytes) -> Event:
    """The webhook's JSON body; ValueError when it is not one."""
    try:
        data = json.loads(raw)["data"]
        payload = data["payload"]
        first = (payload.get("to") or [{}])[0]
        return Event(kind=str(data["event_type"]), message_id=str(payload.get("id") or ""),
                     sender=str((payload.get("from") or {}).get("phone_number") or ""),
                     to=str(first.get("phone_number") or ""),
                     text=str(payload.get("text") or ""),
                     media=len(payload.get("media") or []),
                     status=str(first.get("status") or ""),
                     errors=list(payload.get("errors") or []))
    except (KeyError, TypeError, AttributeError, IndexError) as exc:
        raise ValueError(f"not a Telnyx webhook: {exc!r}") from None


def error_words(errors: object) -> tuple[str | None, str]:
    """(the first error's code, words for the thread) from a payload's `errors`."""
    if not isinstance(errors, list) or not errors or not isinstance(errors[0], dict):
        return None, "no reason given"
    first = errors[0]
    code = str(first.get("code") or "") or None
    words = str(first.get("title") or first.get("detail") or PERMANENT.get(code or "", ""))
    return code, f"Telnyx error {code}: {words}" if code else words


def idempotency_key(sms: OutboundSms) -> str:
    """The same for every try of one text, different for any other text (also after the
    database was re-created and ids start again: the number and body are in it)."""
    digest = hashlib.sha256(f"{sms.number}|{sms.body}".encode()).hexdigest()[:24]
    return f"textback-{sms.id}-{digest}"


class TelnyxTransport(MessagingApiTransport):
    name = NAME

    def __init__(self, config: TelnyxConfig, public_url: str, db: DbRunner,
                 client: httpx.AsyncClient | None = None) -> None:
        super().__init__(config, public_url, db, client)
        self.config = config

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.config.api_key}",
                "Content-Type": "application/json", "Accept": "application/json"}

    def body(self, sms: OutboundSms) -> bytes:
        fields: dict[str, Any] = {"to": sms.number, "text": sms.body,
                                  "webhook_url": f"{self.public_url}{HOOK_PATH}",
                                  "use_profile_webhooks": False}
        if self.config.from_number:
            fields["from"] = self.config.from_number
        if self.config.messaging_profile_id:
            fields["messaging_profile_id"] = self.config.messaging_profile_id
        # sorted and compact: every try of one text is byte for byte the same request
        return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()

    async def send(self, sms: OutboundSms) -> SendResult:
        url = f"{self.config.api_base}/v2/messages"
        headers = {**self.headers, "Idempotency-Key": idempotency_key(sms)}
        try:
            response = await self.post(url, content=self.body(sms), headers=headers)
        except httpx.HTTPError as exc:
            raise SendError(f"no answer from the messaging API ({type(exc).__name__}); "
                            "retried here only, with the same idempotency key",
                            permanent=False, uncertain=True) from None
        body = json_of(response)
        data = body.get("data")
        if response.status_code == 200 and isinstance(data, dict) and data.get("id"):
            self.taken()
            return SendResult(status="submitted", provider_id=str(data["id"]),
                              provider_ref=str(data["id"]))
        code, words = error_words(body.get("errors"))
        text = f"Telnyx answered {response.status_code}: {words}"
        if code in PERMANENT and 400 <= response.status_code < 500:
            await self.refused(sms, text, opted_out=code == OPTED_OUT,
                               not_textable=code in NOT_TEXTABLE)
        self.failed(response.status_code, text)


async def check_account(config: TelnyxConfig, client: httpx.AsyncClient) -> str:
    """One authenticated GET (`textback doctor`): the account's balance, or raises
    SendError with what the API said."""
    url = f"{config.api_base}/v2/balance"
    response = await client.get(url, headers={"Authorization": f"Bearer {config.api_key}",
                                              "Accept": "application/json"})
    body = json_of(response)
    if response.status_code != 200:
        _code, words = error_words(body.get("errors"))
        raise SendError(f"GET {url} answered {response.status_code}: {words}", permanent=True)
    data = body.get("data") or {}
    return f"balance {data.get('balance', '?')} {data.get('currency', '')}".strip()

