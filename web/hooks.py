"""The messaging providers' webhooks: delivery reports and customers' texts.

Twilio (and SignalWire) post forms to `/hooks/twilio/status` and `/hooks/twilio/sms`,
signed with `X-Twilio-Signature` (SignalWire: `X-SignalWire-Signature`, the same HMAC
keyed with the project's signing key); Telnyx posts JSON events to `/hooks/telnyx`, signed
with Ed25519. A request whose signature is missing or wrong gets 403 and nothing is
stored. These routes take no CSRF token (a provider has none), never read or set a
session, refuse bodies over MAX_BODY, and have no rate limit of their own: only a
valid signature gets anything done, and the sign-in limits (agent.people.accounts)
never see them, so a busy provider is never locked out.

A report changes the agent's rows through agent.transports.receipts; a text takes
the same way in as SIP and modem texts (agent.messages.inbound.take), and what it sets
off is queued for the agent's dispatcher, which sends it at its next look (within
seconds); an emergency's ring of the on-call phone is asked of the agent the same way
(agent.messages.rings). Both are idempotent: providers retry, and the same MessageSid
is stored once.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, abort, current_app, request

from agent.config import Config
from agent.messages import inbound, rings
from agent.transports import receipts, telnyx, twilio
from web import csrf
from web.clock import now as clock_now
from web.db import get_session

log = logging.getLogger(__name__)

bp = Blueprint("hooks", __name__, url_prefix="/hooks")
csrf.exempt(bp)

MAX_BODY = 64 * 1024  # a text of ten parts with every field is a few kilobytes
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'


def _config() -> Config:
    config: Config | None = current_app.config.get("TEXTBACK_CONFIG")
    if config is None:
        abort(404)
    return config


@bp.before_request
def _small_bodies_only() -> None:
    length = request.content_length
    if length is None:
        abort(411)
    if length > MAX_BODY:
        abort(413)


def _twilio_key() -> str:
    """What signs the webhooks: Twilio's auth token, or SignalWire's signing key."""
    provider = _config().sms.twilio
    if provider is None:
        abort(404)
    return provider.signing_key or provider.auth_token


def _twilio_signed() -> dict[str, str]:
    """The form, once its signature is checked against the address the provider called
    (public_url + path + query: behind a TLS proxy, request.url is not that address)."""
    key, config = _twilio_key(), _config()
    url = config.web.public_url + request.full_path.rstrip("?")
    pairs = [(name, value) for name, values in request.form.lists() for value in values]
    given = (request.headers.get("X-Twilio-Signature")
             or request.headers.get("X-SignalWire-Signature"))
    if not twilio.signature_ok(key, url, pairs, given):
        log.warning("twilio webhook %s from %s refused: missing or wrong signature",
                    request.path, request.remote_addr)
        abort(403)
    return request.form.to_dict()


@bp.post("/twilio/status")
def twilio_status() -> Any:
    form = _twilio_signed()
    sid, state = form.get("MessageSid", ""), twilio.state_of(form.get("MessageStatus", ""))
    if sid and state is not None:
        code = form.get("ErrorCode") or None
        message_id = request.args.get("message", "")
        session = get_session()
        receipts.report(session, twilio.NAME, sid, state, clock_now(),
                        error=twilio.error_words(code) if state == receipts.FAILED else None,
                        permanent=(int(code) in twilio.UNDELIVERABLE) if code
                        and code.isdigit() else False,
                        message_id=int(message_id) if message_id.isdigit() else None)
        session.commit()
    return Response(status=204)


@bp.post("/twilio/sms")
def twilio_sms() -> Any:
    form = _twilio_signed()
    body = form.get("Body", "")
    media = int(form["NumMedia"]) if form.get("NumMedia", "").isdigit() else 0
    if media:
        body += f"\n[{media} picture(s) or file(s) sent with this text; see the provider's log]"
    sms = inbound.InboundSms(sender=form.get("From", ""), to=form.get("To") or None,
                             body=body, transport=twilio.NAME, received_at=clock_now(),
                             reference=form.get("MessageSid") or None)
    _take(sms)
    return Response(EMPTY_TWIML, mimetype="text/xml")


@bp.post("/telnyx")
def telnyx_event() -> Any:
    config = _config()
    provider = config.sms.telnyx
    if provider is None:
        abort(404)
    raw = request.get_data(cache=False)
    now = clock_now()
    if not telnyx.signature_ok(provider.public_key, request.headers.get("telnyx-timestamp"),
                               raw, request.headers.get("telnyx-signature-ed25519"), now):
        log.warning("telnyx webhook from %s refused: missing, wrong or old signature",
                    request.remote_addr)
        abort(403)
    try:
        event = telnyx.read_event(raw)
    except ValueError:
        abort(400)
    if event.kind == "message.received":
        body = event.text
        if event.media:
            body += (f"\n[{event.media} picture(s) or file(s) sent with this text; see the "
                     "provider's log]")
        _take(inbound.InboundSms(sender=event.sender, to=event.to or None, body=body,
                                 transport=telnyx.NAME, received_at=now,
                                 reference=event.message_id or None))
    elif event.kind in ("message.sent", "message.finalized") and event.message_id:
        state = telnyx.STATES.get(event.status)
        if state is not None:
            code, words = telnyx.error_words(event.errors)
            session = get_session()
            outcome = receipts.report(session, telnyx.NAME, event.message_id, state, now,
                                      error=words if state == receipts.FAILED else None,
                                      permanent=code in telnyx.NOT_TEXTABLE)
            session.commit()
            if outcome == "unknown":
                # come before the send's answer was recorded (or not ours): Telnyx tries
                # a webhook again when it is not answered with 2xx
                return Response(status=404)
    return Response(status=204)


def _take(sms: inbound.InboundSms) -> None:
    if not sms.sender:
        log.warning("%s webhook: a text without a sender, skipped", sms.transport)
        return
    session = get_session()
    region = _config().pbx.default_region
    # no worker: what the text sets off is queued, and the agent's dispatcher sends it;
    # an emergency's ring is asked of the agent too, in the same transaction
    taken = inbound.take(session, sms, region, worker=None)
    if taken is not None and taken.reaction.ring_oncall:
        rings.request(session, taken.reaction.ring_oncall, taken.message.number, "EMERGENCY",
                      sms.received_at)
    session.commit()
    if taken is not None:
        log.info("%s text from %s stored as message %d", sms.transport, taken.message.number,
                 taken.message.id)
