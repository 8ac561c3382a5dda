"""SMS through the SIP trunk: AMI `MessageSend` to the trunk's PJSIP endpoint.

The body travels as `Base64Body` so newlines, commas and emoji arrive intact
(a plain `Body:` header cannot carry a newline). Asterisk's `Success` only means
the message was handed to PJSIP, not that the carrier took it, so the honest
status is "submitted".

A MessageSend written but not answered (Asterisk frozen or overloaded, the link then
dropped by the ping watchdog) is not simply sent again: Asterisk still reads it once
it runs again. The retry looks at which Asterisk answers now: the same process (its
start-up time) → taken as sent; a restarted one → sent again.
"""

from __future__ import annotations

import base64
import logging

from agent.config import SipTransportConfig
from agent.messages.outbox import OutboundSms
from agent.pbx.ami import AmiError, AmiLink, AmiNoAnswer, AmiUnavailable
from agent.transports import SendError, SendResult
from agent.transports.health import DOWN, UP, Health

log = logging.getLogger(__name__)

_NOT_WRITTEN = object()
MAX_UNANSWERED = 10_000  # unanswered MessageSends remembered (a Pi has little memory)


class SipTrunk:
    name = "sip"

    def __init__(self, config: SipTransportConfig, ami: AmiLink) -> None:
        self.config = config
        self.ami = ami
        self.max_per_minute = config.max_per_minute
        self.max_per_day = config.max_per_day
        # message id → the Asterisk instance a MessageSend was written to, unanswered
        self._unanswered: dict[int, str | None] = {}

    def available(self) -> bool:
        return self.ami.connected

    def health(self) -> Health:
        where = f"{self.ami.config.host}:{self.ami.config.port}"
        if self.ami.asterisk_leaving:
            return Health(self.name, DOWN, f"Asterisk is {self.ami.asterisk_leaving}; texts "
                          "wait until it is back")
        if self.ami.connected:
            return Health(self.name, UP, f"AMI connected at {where}; texts leave by the "
                          f"PJSIP endpoint {self.config.endpoint!r}")
        return Health(self.name, DOWN, self.ami.last_error or f"not connected to AMI at {where}")

    def action(self, sms: OutboundSms) -> dict[str, str]:
        fields = {
            "Action": "MessageSend",
            # PJSIP/<number>@<endpoint>: to the endpoint's contact (the carrier), with
            # the customer's number as the Request-URI user
            "Destination": f"pjsip:PJSIP/{sms.number}@{self.config.endpoint}",
            "Base64Body": base64.b64encode(sms.body.encode("utf-8")).decode("ascii"),
        }
        sender = self.config.from_number or sms.from_number
        if sender:
            fields["From"] = f"<sip:{sender}@{self.ami.config.host}>"
        return fields

    async def send(self, sms: OutboundSms) -> SendResult:
        written_to = self._unanswered.pop(sms.id, _NOT_WRITTEN)
        if written_to is not _NOT_WRITTEN:
            if not self.ami.connected:
                self._unanswered[sms.id] = written_to
                raise SendError("not connected to Asterisk, which did not answer the "
                                "MessageSend written to it", permanent=False)
            if written_to is not None and written_to == self.ami.instance:
                # the same Asterisk process: it was frozen or overloaded, not restarted,
                # and carried out (or will) the MessageSend it had read; a second one
                # would text the customer twice
                log.warning("message %d: Asterisk did not answer its MessageSend but is the "
                            "same process (started %s): taken as sent, not sent again",
                            sms.id, written_to)
                return SendResult(status="submitted")
            # a restarted Asterisk lost what the old one had not done: send it again
        try:
            await self.ami.action(self.action(sms), timeout=5.0)
        except AmiNoAnswer as exc:
            if len(self._unanswered) < MAX_UNANSWERED:
                self._unanswered[sms.id] = self.ami.instance
            raise SendError(str(exc), permanent=False) from None
        except AmiUnavailable as exc:
            raise SendError(str(exc), permanent=False) from None
        except AmiError as exc:
            # MessageSend never judges the number (the carrier does, later); a refusal
            # here is local (endpoint missing, PJSIP not ready), so it is temporary and
            # must not mark the customer's number undeliverable
            if self.ami.asterisk_leaving:
                raise SendError(f"Asterisk is {self.ami.asterisk_leaving} ({exc}); the text "
                                "is sent when it is back", permanent=False) from None
            raise SendError(f"Asterisk refused MessageSend ({exc}); is the PJSIP endpoint "
                            f"{self.config.endpoint!r} defined? run `textback doctor`",
                            permanent=False) from None
        return SendResult(status="submitted")
