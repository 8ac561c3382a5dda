"""SMS through Twilio's Messages API, or SignalWire's compatible (LaML) one (`[sms.twilio]`).

Send: `POST {api_base}/2010-04-01/Accounts/{sid}/Messages.json` with To, From (or
MessagingServiceSid), Body and StatusCallback, HTTP Basic auth (account SID, auth
token). A 201 carries the message's `sid`: stored on the row (`provider_id`), the row
is "submitted", and the provider reports its fate to `/hooks/twilio/status` on the
web app (web/hooks.py, agent.transports.receipts).

Errors: a 400 whose `code` says the number itself cannot be texted (21211 invalid,
21610 replied STOP at the carrier, 21614 not a mobile…) fails the text for good, and
the number is marked (agent.transports.receipts.refused); 429, 5xx, an unreachable
API and a request without an answer are temporary (retried with backoff, failed over).
Other 4xx (bad credentials, a From that is not ours) are temporary too: the next
transport may still reach the customer while someone fixes the configuration.

No duplicate after a timeout: Twilio's Messages API honours no idempotency key, so a
request that was written but never answered leaves the text's fate unknown. The
transport then asks the API's message list (To, From, sent since just before the
first try) for a message with the same body, at once and before any later retry; it
is taken as sent when found, sent again only when the provider answers that it is not
there, and never failed over meanwhile (SendError(uncertain=True) pins it here).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import logging
from collections.abc import Iterable, Mapping

import httpx
from sqlalchemy import select

from agent.config import TwilioConfig
from agent.messages.outbox import OutboundSms
from agent.store.db import DbRunner
from agent.store.models import Message
from agent.transports import SendError, SendResult, receipts
from agent.transports.messaging_api import MessagingApiTransport, json_of

log = logging.getLogger(__name__)

NAME = "twilio"
STATUS_PATH = "/hooks/twilio/status"
INBOUND_PATH = "/hooks/twilio/sms"
# the error codes of a refused send that are about the number itself: retrying, here or
# through another transport, cannot help (https://www.twilio.com/docs/api/errors)
PERMANENT = {
    21211: "invalid 'To' phone number",
    21217: "the number does not appear to be valid",
    21407: "this number type cannot be texted",
    21408: "no permission to send to this region",
    21610: "the recipient replied STOP to this sender",
    21612: "the number cannot be reached from this sender",
    21614: "not a mobile number",
    21635: "'To' number is a landline",
}
OPTED_OUT = 21610
NOT_TEXTABLE = (21614, 21635)
# delivery failures reported by the status callback that are about the number
UNDELIVERABLE = {30005: "unknown destination handset", 30006: "landline or unreachable carrier"}
# MessageStatus → the row's state; the others (queued, accepted, sending…) move nothing
STATES = {"sent": receipts.SENT, "delivered": receipts.DELIVERED,
          "undelivered": receipts.FAILED, "failed": receipts.FAILED}
LOOK_BACK = dt.timedelta(minutes=2)  # clock skew allowed when looking for an unanswered send


def signature(token: str, url: str, params: Iterable[tuple[str, str]]) -> str:
    """X-Twilio-Signature: base64 of HMAC-SHA1, keyed with the auth token, over the full
    URL the provider called (with its query) and every POST field, sorted by name then
    value, each name followed by its value."""
    data = url + "".join(name + value for name, value in sorted(params))
    digest = hmac.new(token.encode("utf-8"), data.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def signature_ok(token: str, url: str, params: Iterable[tuple[str, str]],
                 given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(signature(token, url, params), given or "")


def state_of(status: str) -> str | None:
    return STATES.get(status.strip().lower())


def error_words(code: str | None, message: str | None = None) -> str:
    """'Twilio error 30003: unreachable destination handset' for the thread."""
    if not code:
        return message or "no reason given"
    words = message or UNDELIVERABLE.get(_int(code) or 0) or PERMANENT.get(_int(code) or 0)
    return f"Twilio error {code}" + (f": {words}" if words else "")


def _int(value: object) -> int | None:
    try:
        return int(str(value))
    except ValueError:
        return None


class TwilioTransport(MessagingApiTransport):
    name = NAME

    def __init__(self, config: TwilioConfig, public_url: str, db: DbRunner,
                 client: httpx.AsyncClient | None = None) -> None:
        super().__init__(config, public_url, db, client)
        self.config = config
        # message id → when its first request was written, for sends never answered
        self._unanswered: dict[int, dt.datetime] = {}

    @property
    def messages_url(self) -> str:
        return (f"{self.config.api_base}/2010-04-01/Accounts/{self.config.account_sid}"
                "/Messages.json")

    @property
    def auth(self) -> tuple[str, str]:
        return (self.config.account_sid, self.config.auth_token)

    def form(self, sms: OutboundSms) -> dict[str, str]:
        fields = {"To": sms.number, "Body": sms.body,
                  # our row's id in the callback's address: a report that comes before
                  # this send's answer is recorded still finds its row
                  "StatusCallback": f"{self.public_url}{STATUS_PATH}?message={sms.id}"}
        if self.config.messaging_service_sid:
            fields["MessagingServiceSid"] = self.config.messaging_service_sid
        else:
            fields["From"] = self.config.from_number
        return fields

    async def send(self, sms: OutboundSms) -> SendResult:
        since = self._unanswered.pop(sms.id, None)
        if since is None and sms.pinned_transport == self.name and sms.attempts > 0:
            # pinned here after an unanswered send by an agent that has since restarted
            since = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
        if since is not None:
            found = await self._look_for(sms, since)
            if found:
                log.warning("message %d: the provider had taken it (%s) though it never "
                            "answered; not sent again", sms.id, found)
                return SendResult(status="submitted", provider_id=found, provider_ref=found)
            if found is None:  # still cannot ask: sending now could text them twice
                self._unanswered[sms.id] = since
                raise SendError("the messaging API could not say whether it took an earlier "
                                "try of this text; asked again later", permanent=False,
                                uncertain=True)
        started = dt.datetime.now(dt.UTC) - LOOK_BACK
        try:
            response = await self.post(self.messages_url, data=self.form(sms),
                                       auth=self.auth)
        except httpx.HTTPError as exc:
            # written, maybe taken, never answered: look at once, then decide
            return await self._unanswered_send(sms, started, exc)
        return await self._answered(sms, response)

    async def _answered(self, sms: OutboundSms, response: httpx.Response) -> SendResult:
        body = json_of(response)
        if response.status_code in (200, 201) and body.get("sid"):
            self.taken()
            sid = str(body["sid"])
            return SendResult(status="submitted", provider_id=sid, provider_ref=sid)
        code = _int(body.get("code"))
        words = str(body.get("message") or response.reason_phrase or "")
        text = f"Twilio answered {response.status_code}" + (
            f", error {code}: {words}" if code else f": {words}")
        if response.status_code == 400 and code in PERMANENT:
            await self.refused(sms, text, opted_out=code == OPTED_OUT,
                               not_textable=code in NOT_TEXTABLE)
        self.failed(response.status_code, text)

    async def _unanswered_send(self, sms: OutboundSms, started: dt.datetime,
                               exc: Exception) -> SendResult:
        found = await self._look_for(sms, started)
        if found:
            log.warning("message %d: no answer to the send, but the provider has it (%s)",
                        sms.id, found)
            return SendResult(status="submitted", provider_id=found, provider_ref=found)
        if found is None:  # the list could not be read either: the fate stays unknown
            self._unanswered[sms.id] = started
            raise SendError(f"no answer from the messaging API ({type(exc).__name__}); "
                            "retried here only, after looking whether it took the text",
                            permanent=False, uncertain=True)
        raise SendError(f"no answer from the messaging API ({type(exc).__name__}), which "
                        "does not have the text", permanent=False)

    async def _look_for(self, sms: OutboundSms, since: dt.datetime) -> str | bool | None:
        """The sid of a message to this number with this body created since `since`;
        False when the provider says there is none; None when it cannot be asked."""
        # newest first; not filtered by DateSent, which a message still queued lacks
        params = {"To": sms.number, "PageSize": "50"}
        if self.config.from_number and not self.config.messaging_service_sid:
            params["From"] = self.config.from_number
        try:
            response = await self.client.get(self.messages_url, params=params, auth=self.auth)
        except httpx.HTTPError:
            return None
        if response.status_code != 200:
            return None
        candidates = []
        for item in json_of(response).get("messages") or []:
            if not isinstance(item, Mapping) or item.get("body") != sms.body:
                continue
            created = _rfc2822(str(item.get("date_created") or ""))
            if item.get("sid") and (created is None or created >= since):
                candidates.append(str(item["sid"]))
        if not candidates:
            return False
        # an earlier text with the same words (stored with its own id) is not this one
        known = await self.db(lambda s: set(s.scalars(
            select(Message.provider_id).where(Message.provider_id.in_(candidates)))))
        return next((sid for sid in candidates if sid not in known), False)



async def check_account(config: TwilioConfig, client: httpx.AsyncClient) -> str:
    """One authenticated GET of the account (`textback doctor`): its name, or raises
    SendError with what the API said."""
    url = f"{config.api_base}/2010-04-01/Accounts/{config.account_sid}.json"
    response = await client.get(url, auth=(config.account_sid, config.auth_token))
    body = json_of(response)
    if response.status_code != 200:
        raise SendError(f"GET {url} answered {response.status_code}: "
                        f"{body.get('message') or response.reason_phrase}", permanent=True)
    return str(body.get("friendly_name") or body.get("sid") or "ok")


def _rfc2822(text: str) -> dt.datetime | None:
    from email.utils import parsedate_to_datetime

    try:
        return parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
