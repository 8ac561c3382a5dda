"""SMS through a GSM modem (`[sms.gsm]`): the dispatcher's face of `agent.transports.modem.driver`.

Each part is recorded (`message_parts`, with its TP-MR) as soon as the modem took
it, so a retry after a failure half-way through a long text sends only the parts
still missing, with the same concatenation reference, and the phone joins them.

Failover: the transport says it is unavailable while the modem is down, and for
a cool-off period after `failures_before_failover` temporary failures in a row,
so `[sms] transports = ["gsm", "sip"]` moves to the trunk instead of waiting.
"""

from __future__ import annotations

import datetime as dt
import logging
import time

from agent.config import GsmTransportConfig
from agent.messages.outbox import OutboundSms
from agent.store.db import DbRunner
from agent.transports import SendError, SendResult
from agent.transports.health import DOWN, UP, Health
from agent.transports.modem import store
from agent.transports.modem.at import AtError, AtTimeout
from agent.transports.modem.driver import Modem, ModemUnavailable

log = logging.getLogger(__name__)

COOL_OFF = 60.0  # seconds the modem is skipped after repeated temporary failures

# +CMS ERROR codes (3GPP TS 24.011 / 27.005) that say the destination itself is bad:
# retrying, here or through another transport, cannot help
PERMANENT_CMS = {
    "1": "unassigned (unallocated) number",
    "8": "operator determined barring",
    "10": "call barred",
    "21": "short message transfer rejected",
    "28": "unidentified subscriber",
    "29": "facility rejected",
    "30": "unknown subscriber",
    "96": "invalid mandatory information",
}


def classify(exc: AtError) -> tuple[str, bool]:
    """(words for a person, permanent?) for a refused AT+CMGS."""
    code = exc.cms
    if code in PERMANENT_CMS:
        return f"the network refused the number: +CMS ERROR {code} ({PERMANENT_CMS[code]})", True
    return f"the modem could not send: {exc.final}", False


class GsmModemTransport:
    name = "gsm"

    def __init__(self, config: GsmTransportConfig, modem: Modem, db: DbRunner) -> None:
        self.config = config
        self.modem = modem
        self.db = db
        self.max_per_minute = config.max_per_minute
        self.max_per_day = config.max_per_day
        self._failures = 0
        self._cool_off_until = 0.0

    def available(self) -> bool:
        return self.modem.available and time.monotonic() >= self._cool_off_until

    def health(self) -> Health:
        info = self.modem.info
        signal, operator = info.signal_dbm, info.operator or None
        if not self.modem.available:
            why = self.modem.problem or f"no modem answering at {self.config.port}"
            return Health(self.name, DOWN, why, signal, operator)
        modem = " ".join(part for part in (info.manufacturer, info.model) if part) or "modem"
        detail = f"{modem} on {info.device or info.port or self.config.port}"
        if info.registration:
            detail += f", network: {info.registration}"
        if time.monotonic() < self._cool_off_until:
            return Health(self.name, DOWN, f"{detail}; skipped for a while after "
                          f"{self.config.failures_before_failover} failed sends in a row",
                          signal, operator)
        return Health(self.name, UP, detail, signal, operator)

    def _temporary(self, text: str) -> SendError:
        self._failures += 1
        if self._failures >= self.config.failures_before_failover:
            self._cool_off_until = time.monotonic() + COOL_OFF
            self._failures = 0
            log.warning("modem failed %d sends in a row; other transports get its messages "
                        "for %.0f s", self.config.failures_before_failover, COOL_OFF)
        return SendError(text, permanent=False)

    async def send(self, sms: OutboundSms) -> SendResult:
        parts = self.modem.encode(sms.number, sms.body, reference=sms.id & 0xFF)
        done = await self.db(lambda s: store.sent_parts(s, sms.id))
        references: list[str] = []
        unconfirmed = False
        for part in parts:
            if part.number in done:
                continue
            try:
                tp_mr: int | None = await self.modem.send_part(part)
            except ModemUnavailable as exc:
                raise self._temporary(f"modem unavailable: {exc}") from None
            except AtError as exc:
                text, permanent = classify(exc)
                if permanent:
                    raise SendError(text, permanent=True) from None
                raise self._temporary(text) from None
            except AtTimeout as exc:
                if not getattr(exc, "sent", False):
                    raise self._temporary(f"modem did not answer: {exc}") from None
                # the PDU went out and no answer came: it may have left; never resend it
                log.warning("message %d part %d: no answer after the PDU; counted as sent, "
                            "unconfirmed", sms.id, part.number)
                tp_mr, unconfirmed = None, True
            now = dt.datetime.now(dt.UTC)
            await self.db(lambda s, p=part, mr=tp_mr, at=now: store.record_part(s, sms.id, p, mr,
                                                                          at))
            references.append(str(tp_mr) if tp_mr is not None else "?")
        self._failures = 0
        return SendResult(status="submitted" if unconfirmed else "sent",
                          provider_ref=("TP-MR " + ",".join(references)) if references else None)
