"""Fake Twilio and Telnyx messaging APIs for the tests: stdlib HTTP servers on loopback
that check authentication and parameters as the real APIs do, answer with the real
APIs' bodies (errors included), and sign the webhooks they send.

The shapes below are those of the providers' public API references.

Twilio — Messages API (https://www.twilio.com/docs/messaging/api/message-resource)
  POST /2010-04-01/Accounts/{AccountSid}/Messages.json
    HTTP Basic auth: AccountSid, AuthToken
    form: To=+1…  Body=…  From=+1… | MessagingServiceSid=MG…  StatusCallback=https://…
  201 {"account_sid": "AC…", "api_version": "2010-04-01", "body": "…",
       "date_created": "Thu, 24 Aug 2023 05:01:45 +0000", "date_sent": null,
       "date_updated": "…", "direction": "outbound-api", "error_code": null,
       "error_message": null, "from": "+1…", "messaging_service_sid": null,
       "num_media": "0", "num_segments": "1", "price": null, "price_unit": "USD",
       "sid": "SM…(32 hex)", "status": "queued", "subresource_uris": {"media": "…"},
       "to": "+1…", "uri": "/2010-04-01/Accounts/AC…/Messages/SM….json"}
  400 {"code": 21211, "message": "The 'To' number +1… is not a valid phone number.",
       "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400}
    21211 invalid 'To' number; 21610 "Attempt to send to unsubscribed recipient"
    (the number replied STOP at the carrier); 21614 "'To' number is not a valid mobile
    number" (https://www.twilio.com/docs/api/errors)
  401 {"code": 20003, "message": "Authenticate", "more_info": "…/20003", "status": 401}
  429 {"code": 20429, "message": "Too Many Requests", …}; 503 {"code": 20503, …}
  GET  …/Messages.json?To=+1…&From=+1…&PageSize=50 (newest first)
  200 {"messages": [ {message as above}, … ], "end": 0, "first_page_uri": "…",
       "next_page_uri": null, "page": 0, "page_size": 50, "previous_page_uri": null,
       "start": 0, "uri": "…"}
  GET  /2010-04-01/Accounts/{AccountSid}.json → 200 {"sid": "AC…", "friendly_name": "…",
       "status": "active", …}
  Status callback (POST form to StatusCallback): MessageSid, MessageStatus (queued,
    sent, delivered, undelivered, failed), ErrorCode (30003…), AccountSid, From, To…
  Incoming message (POST form to the number's webhook): MessageSid, AccountSid, From,
    To, Body, NumMedia, NumSegments…; answered with TwiML.
  X-Twilio-Signature: base64(HMAC-SHA1(AuthToken, URL + each POST field name+value,
    sorted by name)) (https://www.twilio.com/docs/usage/security#validating-requests)

Telnyx — Messaging API v2 (https://developers.telnyx.com/api/messaging/send-message)
  POST /v2/messages   Authorization: Bearer <API key>   Content-Type: application/json
    {"from": "+1…", "to": "+1…", "text": "…", "messaging_profile_id": "…",
     "webhook_url": "https://…", "use_profile_webhooks": false}
    Idempotency-Key: <1-255 of [A-Za-z0-9_:-]>: a retry with the same key and the same
    body gets the first answer replayed (for 24 h); another body with it gets 422
  200 {"data": {"record_type": "message", "direction": "outbound", "id": "<uuid>",
       "type": "SMS", "messaging_profile_id": "…", "from": {"phone_number": "+1…",
       "carrier": "Telnyx", "line_type": "Wireless"}, "to": [{"phone_number": "+1…",
       "status": "queued", "carrier": "…", "line_type": "Wireless"}], "text": "…",
       "parts": 1, "encoding": "GSM-7", "webhook_url": "…", "errors": [], …}}
  400/422 {"errors": [{"code": "40310", "title": "Invalid 'to' address",
       "detail": "…", "source": {"pointer": "/to"}}]}
    40300 "Blocked due to STOP message" (the recipient opted out)
  401 {"errors": [{"code": "10009", "title": "Authentication failed", "detail": "…"}]}
  GET /v2/balance → 200 {"data": {"balance": "300.00", "currency": "USD", …}}
  Webhooks (POST JSON): {"data": {"event_type": "message.sent" | "message.finalized" |
    "message.received", "id": "<event uuid>", "occurred_at": "…", "payload": {message as
    above, "to": [{"status": "sent" | "delivered" | "delivery_failed" | …}],
    "errors": [{"code": "40001", "title": "Not routable"}]}, "record_type": "event"},
    "meta": {"attempt": 1, "delivered_to": "https://…"}}
  Signed: telnyx-timestamp: <unix seconds>, telnyx-signature-ed25519: base64 of the
    Ed25519 signature of "<timestamp>|<raw body>" with the account's key
    (https://developers.telnyx.com/docs/messaging/messages/receiving-webhooks)
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

PUBLIC_URL = "https://textback.example.com"
OUR_NUMBER = "+15550000100"
# the test account's credentials at the fakes
ACCOUNT_SID = "AC" + "5f" * 16
AUTH_TOKEN = "9c0e" * 8
TELNYX_KEY = "KEY0189A2B3C4D5E6F7_fakekeyfortests"

# what a scripted answer may be: an error code the API gives for a number, a status,
# "hang" (the message is taken, the answer never comes in time), "lost" (not taken,
# and no answer in time either) or "slow" (taken, and answered 0.3 s later: its
# webhooks can come first)
Plan = int | str


class FakeApi:
    """One HTTP server in a thread; `handle` is the provider's."""

    name = ""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request seen
        self.messages: list[dict[str, Any]] = []  # the messages it took, oldest first
        self.plans: deque[Plan] = deque()  # answers for the next sends, in order
        self.hang_seconds = 2.0
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: Any) -> None:
                return None

            def do_GET(self) -> None:
                api.dispatch(self, "GET")

            def do_POST(self) -> None:
                api.dispatch(self, "POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            self.messages.clear()
            self.plans.clear()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def dispatch(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        with self.lock:
            self.requests.append((method, urlsplit(handler.path).path))
        status, body, after = self.handle(method, handler.path, dict(handler.headers), raw)
        if after == "hang":
            time.sleep(self.hang_seconds)  # the client gave up meanwhile
        elif after == "slow":
            time.sleep(0.3)  # taken, answered a moment later (within the client's timeout)
        data = json.dumps(body).encode()
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
        except OSError:
            pass

    def next_plan(self) -> Plan | None:
        with self.lock:
            return self.plans.popleft() if self.plans else None

    def posts(self) -> int:
        with self.lock:
            return sum(1 for method, _ in self.requests if method == "POST")

    def handle(self, method: str, path: str, headers: dict[str, str],
               raw: bytes) -> tuple[int, dict[str, Any], str | None]:
        raise NotImplementedError


# ------------------------------------------------------------------------------ Twilio

def twilio_signature(key: str, url: str, form: dict[str, str]) -> str:
    """X-Twilio-Signature as the provider computes it (SignalWire: with its signing key)."""
    data = url + "".join(k + form[k] for k in sorted(form))
    return base64.b64encode(hmac.new(key.encode(), data.encode(), hashlib.sha1).digest()).decode()


class FakeTwilio(FakeApi):
    name = "twilio"

    def __init__(self, account_sid: str, token: str) -> None:
        self.account_sid, self.token = account_sid, token
        self.list_down = 0  # the next message-list reads that answer 503
        super().__init__()

    def reset(self) -> None:
        super().reset()
        self.list_down = 0

    def error(self, status: int, code: int, message: str) -> tuple[int, dict[str, Any], None]:
        return status, {"code": code, "message": message, "status": status,
                        "more_info": f"https://www.twilio.com/docs/errors/{code}"}, None

    def handle(self, method: str, path: str, headers: dict[str, str],
               raw: bytes) -> tuple[int, dict[str, Any], str | None]:
        expected = base64.b64encode(f"{self.account_sid}:{self.token}".encode()).decode()
        if headers.get("Authorization") != f"Basic {expected}":
            return self.error(401, 20003, "Authenticate")
        parts = urlsplit(path)
        account = f"/2010-04-01/Accounts/{self.account_sid}"
        if method == "GET" and parts.path == account + ".json":
            return 200, {"sid": self.account_sid, "friendly_name": "Fake plumbing",
                         "status": "active", "type": "Full"}, None
        if parts.path != account + "/Messages.json":
            return self.error(404, 20404, "The requested resource was not found")
        if method == "GET":
            with self.lock:
                down, self.list_down = self.list_down > 0, max(0, self.list_down - 1)
            if down:
                return self.error(503, 20503, "Service Unavailable")
            query = dict(parse_qsl(parts.query))
            with self.lock:
                found = [m for m in reversed(self.messages)
                         if m["to"] == query.get("To")
                         and query.get("From") in (None, m["from"])]
            return 200, {"messages": found, "page": 0, "page_size": 50, "start": 0, "end": 0,
                         "next_page_uri": None, "previous_page_uri": None,
                         "first_page_uri": parts.path, "uri": path}, None
        form = dict(parse_qsl(raw.decode(), keep_blank_values=True))
        if not form.get("To"):
            return self.error(400, 21604, "A 'To' phone number is required.")
        if not form.get("Body"):
            return self.error(400, 21602, "Message body is required.")
        if not (form.get("From") or form.get("MessagingServiceSid")):
            return self.error(400, 21603, "A 'From' phone number is required.")
        plan = self.next_plan()
        if plan == "lost":  # the request never reached the API: no answer, nothing taken
            return 502, {}, "hang"
        if plan == 503:
            return self.error(503, 20503, "Service Unavailable")
        if plan == 429:
            return self.error(429, 20429, "Too Many Requests")
        if plan == 21211:
            return self.error(400, 21211, f"The 'To' number {form['To']} is not a valid "
                              "phone number.")
        if plan == 21610:
            return self.error(400, 21610, "Attempt to send to unsubscribed recipient")
        if plan == 21614:
            return self.error(400, 21614, f"'To' number {form['To']} is not a valid mobile "
                              "number")
        now = format_datetime(dt.datetime.now(dt.UTC), usegmt=True)
        sid = "SM" + uuid.uuid4().hex
        message = {
            "account_sid": self.account_sid, "api_version": "2010-04-01",
            "body": form["Body"], "date_created": now, "date_sent": None,
            "date_updated": now, "direction": "outbound-api", "error_code": None,
            "error_message": None, "from": form.get("From") or OUR_NUMBER,
            "messaging_service_sid": form.get("MessagingServiceSid"), "num_media": "0",
            "num_segments": "1", "price": None, "price_unit": "USD", "sid": sid,
            "status": "queued", "to": form["To"], "uri": f"{account}/Messages/{sid}.json",
            "subresource_uris": {"media": f"{account}/Messages/{sid}/Media.json"},
            # not in the API's answer: kept to call the status callback back
            "_status_callback": form.get("StatusCallback"),
        }
        with self.lock:
            self.messages.append(message)
        public = {k: v for k, v in message.items() if not k.startswith("_")}
        return 201, public, (plan if plan in ("hang", "slow") else None)

    def signature(self, url: str, form: dict[str, str]) -> str:
        return twilio_signature(self.token, url, form)

    def post(self, client: FlaskClient, url: str, form: dict[str, str],
             signature: str | None = "valid") -> TestResponse:
        headers = {}
        if signature == "valid":
            headers["X-Twilio-Signature"] = self.signature(url, form)
        elif signature is not None:
            headers["X-Twilio-Signature"] = signature
        return client.post(url.removeprefix(PUBLIC_URL), data=form, headers=headers)

    def report(self, client: FlaskClient, message: dict[str, Any], status: str,
               error_code: str | None = None, signature: str | None = "valid") -> TestResponse:
        """The status callback Twilio posts to the StatusCallback the send gave."""
        form = {"MessageSid": message["sid"], "SmsSid": message["sid"],
                "MessageStatus": status, "SmsStatus": status,
                "AccountSid": self.account_sid, "From": message["from"], "To": message["to"],
                "ApiVersion": "2010-04-01"}
        if error_code:
            form["ErrorCode"] = error_code
        return self.post(client, message["_status_callback"], form, signature)

    def text_in(self, client: FlaskClient, sender: str, body: str, sid: str | None = None,
                signature: str | None = "valid") -> TestResponse:
        """A customer's text, as Twilio posts it to the number's messaging webhook."""
        sid = sid or "SM" + uuid.uuid4().hex
        form = {"MessageSid": sid, "SmsMessageSid": sid, "SmsSid": sid,
                "AccountSid": self.account_sid, "From": sender, "To": OUR_NUMBER,
                "Body": body, "NumMedia": "0", "NumSegments": "1", "SmsStatus": "received",
                "ApiVersion": "2010-04-01", "FromCountry": "US", "ToCountry": "US"}
        return self.post(client, PUBLIC_URL + "/hooks/twilio/sms", form, signature)


# ------------------------------------------------------------------------------ Telnyx

class FakeTelnyx(FakeApi):
    name = "telnyx"

    def __init__(self, api_key: str) -> None:
        self.api_key = api_key
        self.private_key = Ed25519PrivateKey.generate()
        self.public_key = base64.b64encode(self.private_key.public_key().public_bytes(
            Encoding.Raw, PublicFormat.Raw)).decode()
        self.replays: dict[str, tuple[bytes, dict[str, Any]]] = {}  # idempotency key
        super().__init__()

    def reset(self) -> None:
        super().reset()
        with self.lock:
            self.replays.clear()

    @staticmethod
    def error(status: int, code: str, title: str, detail: str = "",
              pointer: str | None = None) -> tuple[int, dict[str, Any], None]:
        error: dict[str, Any] = {"code": code, "title": title, "detail": detail or title}
        if pointer:
            error["source"] = {"pointer": pointer}
        return status, {"errors": [error]}, None

    def handle(self, method: str, path: str, headers: dict[str, str],
               raw: bytes) -> tuple[int, dict[str, Any], str | None]:
        if headers.get("Authorization") != f"Bearer {self.api_key}":
            return self.error(401, "10009", "Authentication failed",
                              "The API key is missing or invalid.")
        parts = urlsplit(path)
        if method == "GET" and parts.path == "/v2/balance":
            return 200, {"data": {"record_type": "balance", "balance": "300.00",
                                  "credit_limit": "100.00", "available_credit": "400.00",
                                  "currency": "USD"}}, None
        if method != "POST" or parts.path != "/v2/messages":
            return self.error(404, "10005", "Resource not found")
        if headers.get("Content-Type") != "application/json":
            return self.error(415, "10015", "Unsupported media type")
        key = headers.get("Idempotency-Key")
        if key is not None:
            with self.lock:
                seen = self.replays.get(key)
            if seen is not None:
                if seen[0] != raw:
                    return self.error(422, "10035", "Idempotency key reused",
                                      "The body differs from the first request with this key.")
                return 200, seen[1], None  # the first answer, replayed: nothing sent again
        try:
            body = json.loads(raw)
        except ValueError:
            return self.error(400, "10002", "Invalid JSON")
        if not body.get("to"):
            return self.error(422, "10002", "Missing required parameter", pointer="/to")
        if not body.get("text"):
            return self.error(422, "10002", "Missing required parameter", pointer="/text")
        if not (body.get("from") or body.get("messaging_profile_id")):
            return self.error(422, "10002", "Missing required parameter", pointer="/from")
        plan = self.next_plan()
        if plan == 503:
            return self.error(503, "10011", "Service unavailable")
        if plan == 429:
            return self.error(429, "10011", "Too many requests")
        if plan in (21211, 40310):
            return self.error(400, "40310", "Invalid 'to' address",
                              "The 'to' address should be in E.164 format.", "/to")
        if plan in (21610, 40300):
            return self.error(400, "40300", "Blocked due to STOP message",
                              f"Messages cannot be sent from '{body.get('from')}' to "
                              f"'{body['to']}' due to an existing block rule.")
        message_id = str(uuid.uuid4())
        message = {
            "record_type": "message", "direction": "outbound", "id": message_id,
            "type": "SMS", "messaging_profile_id": body.get("messaging_profile_id"),
            "from": {"phone_number": body.get("from") or OUR_NUMBER, "carrier": "Telnyx",
                     "line_type": "Wireless"},
            "to": [{"phone_number": body["to"], "status": "queued",
                    "carrier": "T-MOBILE USA, INC.", "line_type": "Wireless"}],
            "text": body["text"], "parts": 1, "encoding": "GSM-7",
            "webhook_url": body.get("webhook_url"), "webhook_failover_url": None,
            "errors": [], "media": [], "tags": [],
            "received_at": dt.datetime.now(dt.UTC).isoformat(), "sent_at": None,
        }
        answer = {"data": message}
        with self.lock:
            self.messages.append(message)
            if key is not None:
                self.replays[key] = (raw, answer)
        return 200, answer, (plan if plan in ("hang", "slow") else None)

    def sign(self, raw: bytes, timestamp: int) -> str:
        return base64.b64encode(self.private_key.sign(f"{timestamp}|".encode() + raw)).decode()

    def post(self, client: FlaskClient, event: str, payload: dict[str, Any],
             signature: str | None = "valid", age: float = 0.0) -> TestResponse:
        raw = json.dumps({
            "data": {"event_type": event, "id": str(uuid.uuid4()),
                     "occurred_at": dt.datetime.now(dt.UTC).isoformat(), "payload": payload,
                     "record_type": "event"},
            "meta": {"attempt": 1, "delivered_to": PUBLIC_URL + "/hooks/telnyx"}}).encode()
        timestamp = int(time.time() - age)
        headers = {"telnyx-timestamp": str(timestamp), "Content-Type": "application/json"}
        if signature == "valid":
            headers["telnyx-signature-ed25519"] = self.sign(raw, timestamp)
        elif signature is not None:
            headers["telnyx-signature-ed25519"] = signature
        return client.post("/hooks/telnyx", data=raw, headers=headers)

    def report(self, client: FlaskClient, message: dict[str, Any], status: str,
               error_code: str | None = None, signature: str | None = "valid",
               age: float = 0.0) -> TestResponse:
        payload = json.loads(json.dumps(message))
        payload["to"][0]["status"] = status
        if error_code:
            payload["errors"] = [{"code": error_code, "title": "Not routable",
                                  "detail": "The destination is not reachable by SMS."}]
        event = "message.sent" if status == "sent" else "message.finalized"
        return self.post(client, event, payload, signature, age)

    def text_in(self, client: FlaskClient, sender: str, body: str, sid: str | None = None,
                signature: str | None = "valid", age: float = 0.0) -> TestResponse:
        payload = {"record_type": "message", "direction": "inbound",
                   "id": sid or str(uuid.uuid4()), "type": "SMS", "text": body,
                   "from": {"phone_number": sender, "carrier": "T-MOBILE USA, INC.",
                            "line_type": "Wireless"},
                   "to": [{"phone_number": OUR_NUMBER, "status": "webhook_delivered",
                           "carrier": "Telnyx", "line_type": "Wireless"}],
                   "media": [], "parts": 1, "encoding": "GSM-7",
                   "received_at": dt.datetime.now(dt.UTC).isoformat()}
        return self.post(client, "message.received", payload, signature, age)


Provider = FakeTwilio | FakeTelnyx
Reporter = Callable[..., TestResponse]


@contextmanager
def running_fakes() -> Iterator[dict[str, Provider]]:
    """A fake Twilio and a fake Telnyx, by name, serving the test account; closed after."""
    apis: dict[str, Provider] = {"twilio": FakeTwilio(ACCOUNT_SID, AUTH_TOKEN),
                                 "telnyx": FakeTelnyx(TELNYX_KEY)}
    try:
        yield apis
    finally:
        for api in apis.values():
            api.close()
