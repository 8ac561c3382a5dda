"""SMS PDUs (3GPP TS 23.040): SMS-SUBMIT out, SMS-DELIVER and SMS-STATUS-REPORT in.

`gsmmodem.pdu` (python-gsmmodem-new) does the address fields and the decoding;
this module wraps it where it is wrong for us:

* it counts characters, not UTF-16 code units, and crashes on anything above
  U+FFFF, so emoji are encoded here as UTF-16-BE with surrogate pairs, and
  decoded UCS-2 text (which it hands back as lone surrogates) is re-joined;
* its splitter is not the project's: parts here follow `agent.rules.templates.segments`
  exactly (153 septets / 67 UTF-16 units per part, an escape pair or a surrogate
  pair never split), so the count a user sees in the UI is the count that goes out.

The SMS-DELIVER and status-report encoders exist for the modem emulator (tests,
`make demo MODEM=emulated`); the agent itself only encodes SMS-SUBMIT.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from typing import Literal

import gsm0338  # noqa: F401  (registers the "gsm03.38" codec)
from gsmmodem import pdu as gsmpdu
from gsmmodem.exceptions import EncodingError

Encoding = Literal["GSM-7", "UCS-2"]
SINGLE = {"GSM-7": 160, "UCS-2": 70}
PER_PART = {"GSM-7": 153, "UCS-2": 67}
_DCS = {"GSM-7": 0x00, "UCS-2": 0x08}


class PduError(ValueError):
    """A PDU that cannot be decoded (logged and kept on the SIM, never fatal)."""


@dataclass(frozen=True, slots=True)
class SubmitPart:
    """One SMS-SUBMIT ready for `AT+CMGS=<tpdu_length>`."""

    hex: str  # SMSC field + TPDU, upper-case hex, as the modem wants it
    tpdu_length: int  # octets after the SMSC field: the number AT+CMGS needs
    number: int  # 1-based part number
    total: int
    text: str


@dataclass(frozen=True, slots=True)
class Deliver:
    """An SMS-DELIVER (an incoming SMS, or one part of a longer one)."""

    sender: str
    text: str  # for UCS-2 parts: may end in half a surrogate pair, joined on reassembly
    sent_at: dt.datetime | None  # the SMSC's timestamp
    concat: tuple[int, int, int] | None  # (reference, total, part number)
    key: str  # a hash of the TPDU: the same PDU read twice has the same key


@dataclass(frozen=True, slots=True)
class StatusReport:
    """An SMS-STATUS-REPORT: what became of the message with this TP-MR."""

    tp_mr: int
    recipient: str
    status: int  # TP-ST

    @property
    def outcome(self) -> Literal["delivered", "pending", "failed"]:
        """TP-ST 0x00-0x1F: done (delivered); 0x20-0x3F: SMSC still trying; else failed."""
        if self.status < 0x20:
            return "delivered"
        if self.status < 0x40:
            return "pending"
        return "failed"


# ------------------------------------------------------------------ splitting


def _units(text: str) -> tuple[Encoding, list[bytes]]:
    """Per character: its GSM-7 septets, or (any non-GSM character) its UTF-16-BE units."""
    if "\x1b" not in text:
        try:
            return "GSM-7", [ch.encode("gsm03.38") for ch in text]
        except UnicodeEncodeError:
            pass
    return "UCS-2", [ch.encode("utf-16-be") for ch in text]


def split(text: str) -> tuple[Encoding, list[str]]:
    """The texts of the parts, as `agent.rules.templates.segments` counts them."""
    encoding, units = _units(text)
    width = [len(u) if encoding == "GSM-7" else len(u) // 2 for u in units]
    if sum(width) <= SINGLE[encoding]:
        return encoding, [text]
    parts: list[str] = []
    start, used = 0, 0
    for i, w in enumerate(width):
        if used + w > PER_PART[encoding]:  # a pair moves whole to the next part
            parts.append(text[start:i])
            start, used = i, 0
        used += w
    parts.append(text[start:])
    return encoding, parts


def pack_septets(septets: bytes, fill_bits: int = 0) -> bytes:
    """GSM 03.38 packing, after `fill_bits` zero bits that align the text past a UDH."""
    acc, nbits, out = 0, fill_bits, bytearray()
    for septet in septets:
        acc |= (septet & 0x7F) << nbits
        nbits += 7
        while nbits >= 8:
            out.append(acc & 0xFF)
            acc >>= 8
            nbits -= 8
    if nbits == 1:
        # 7 spare bits would read as one more "@": 3GPP TS 23.038 says pad with CR
        acc |= 0x0D << 1
    if nbits:
        out.append(acc & 0xFF)
    return bytes(out)


def _user_data(text: str, encoding: Encoding, udh: bytes) -> tuple[int, bytes]:
    """(TP-UDL, TP-UD): UDL counts septets for GSM-7 (header included), octets for UCS-2."""
    header = bytes([len(udh)]) + udh if udh else b""
    if encoding == "UCS-2":
        body = text.encode("utf-16-be")
        return len(header) + len(body), header + body
    septets = text.encode("gsm03.38")
    header_septets = -(-len(header) * 8 // 7)
    fill = header_septets * 7 - len(header) * 8
    return header_septets + len(septets), header + pack_septets(septets, fill)


def _concat_udh(reference: int, total: int, number: int) -> bytes:
    return bytes([0x00, 0x03, reference & 0xFF, total, number])


def encode_submit(number: str, text: str, *, reference: int = 0, smsc: str = "",
                  status_report: bool = True) -> list[SubmitPart]:
    """SMS-SUBMIT PDUs for `text` to `number` (E.164 or national digits).

    `reference` is the concatenation reference shared by the parts (resending the
    missing parts of a message must reuse it); the TP-MR is left 0 for the modem to
    assign and report in `+CMGS: <mr>`.
    """
    encoding, texts = split(text)
    total = len(texts)
    smsc_field = gsmpdu._encodeAddressField(smsc, smscField=True) if smsc else b"\x00"
    destination = gsmpdu._encodeAddressField(number)
    first = 0x01 | (0x20 if status_report else 0) | (0x40 if total > 1 else 0)
    parts = []
    for n, part_text in enumerate(texts, start=1):
        udh = _concat_udh(reference, total, n) if total > 1 else b""
        udl, ud = _user_data(part_text, encoding, udh)
        tpdu = bytes([first, 0x00]) + bytes(destination) + bytes([0x00, _DCS[encoding], udl]) + ud
        parts.append(SubmitPart(hex=(bytes(smsc_field) + tpdu).hex().upper(),
                                tpdu_length=len(tpdu), number=n, total=total, text=part_text))
    return parts


# ------------------------------------------------------------------ decoding


def join_utf16(text: str) -> str:
    """Re-join UTF-16 units that gsmmodem decodes one by one (emoji arrive as two halves)."""
    return text.encode("utf-16-be", "surrogatepass").decode("utf-16-be", "replace")


def decode(hex_pdu: str) -> Deliver | StatusReport:
    """An SMS-DELIVER or SMS-STATUS-REPORT as `AT+CMGR`/`+CMT`/`+CDS` give it (SMSC first)."""
    try:
        fields = gsmpdu.decodeSmsPdu(hex_pdu.strip())
    except (EncodingError, StopIteration, ValueError, IndexError, KeyError) as exc:
        raise PduError(f"undecodable PDU {hex_pdu[:40]}…: {exc!r}") from None
    kind = fields.get("type")
    if kind == "SMS-STATUS-REPORT":
        return StatusReport(tp_mr=fields["reference"], recipient=fields["number"] or "",
                            status=fields["status"])
    if kind != "SMS-DELIVER":
        raise PduError(f"unexpected {kind} PDU")
    concat = None
    for element in fields.get("udh", []):
        if isinstance(element, gsmpdu.Concatenation):
            concat = (element.reference, element.parts, element.number)
    text = _without_padding(bytes.fromhex(hex_pdu.strip()), fields.get("text", ""))
    # a single UCS-2 message is whole: join its surrogate pairs now; parts wait
    if concat is None and any("\ud800" <= ch <= "\udfff" for ch in text):
        text = join_utf16(text)
    sent_at = fields.get("time")
    tpdu = bytes.fromhex(hex_pdu.strip())[-fields["tpdu_length"]:]
    return Deliver(sender=fields["number"] or "", text=text,
                   sent_at=sent_at.astimezone(dt.UTC) if sent_at else None, concat=concat,
                   key=hashlib.sha256(tpdu).hexdigest()[:32])


def _without_padding(raw: bytes, text: str) -> str:
    """Make the text exactly TP-UDL long, as gsmmodem does not.

    gsmmodem reads the CR that pads 7 spare bits as one more character, and drops a
    final "@" (septet 0) that fills the last octet exactly.
    """
    at = 1 + raw[0]  # past the SMSC field
    first = raw[at]
    at += 1
    at += 2 + (raw[at] + 1) // 2  # TP-OA: digit count, type, semi-octets
    dcs = raw[at + 1]
    if gsmpdu._decodeDataCoding(dcs) != 0x00:
        return text
    at += 2 + 7  # PID, DCS, SCTS
    udl = raw[at]
    header_septets = -(-(raw[at + 1] + 1) * 8 // 7) if first & 0x40 else 0
    expected = udl - header_septets
    try:
        septets = len(text.encode("gsm03.38"))
    except UnicodeEncodeError:
        return text
    if septets > expected and text:
        return text[:-1]
    return text + "@" * max(0, expected - septets)


def reassemble(parts: list[Deliver]) -> str:
    """The text of a multipart SMS from its parts, in any order they arrived."""
    ordered = sorted(parts, key=lambda p: p.concat[2] if p.concat else 0)
    return join_utf16("".join(p.text for p in ordered))


# ------------------------------------------------------------------ the network's side


def _timestamp(when: dt.datetime) -> bytes:
    return bytes(gsmpdu._encodeTimestamp(when.astimezone(dt.UTC)))


def encode_deliver(sender: str, text: str, *, when: dt.datetime, reference: int = 0,
                   smsc: str = "+447785016005") -> list[str]:
    """SMS-DELIVER PDUs as a network hands them to a modem (one per part)."""
    encoding, texts = split(text)
    total = len(texts)
    out = []
    for n, part_text in enumerate(texts, start=1):
        udh = _concat_udh(reference, total, n) if total > 1 else b""
        udl, ud = _user_data(part_text, encoding, udh)
        first = 0x04 | (0x40 if udh else 0)  # SMS-DELIVER, no more messages to send
        tpdu = (bytes([first]) + bytes(gsmpdu._encodeAddressField(sender))
                + bytes([0x00, _DCS[encoding]]) + _timestamp(when) + bytes([udl]) + ud)
        out.append((bytes(gsmpdu._encodeAddressField(smsc, smscField=True)) + tpdu).hex().upper())
    return out


def encode_status_report(tp_mr: int, recipient: str, status: int, *,
                         when: dt.datetime) -> str:
    """An SMS-STATUS-REPORT for the message with this TP-MR (TP-ST `status`)."""
    tpdu = (bytes([0x06, tp_mr & 0xFF]) + bytes(gsmpdu._encodeAddressField(recipient))
            + _timestamp(when) + _timestamp(when) + bytes([status]))
    return "00" + tpdu.hex().upper()


def tpdu_length(hex_pdu: str) -> int:
    """Octets after the SMSC field: what `AT+CMGS=<n>` and `+CMGR: …,<n>` count."""
    raw = bytes.fromhex(hex_pdu)
    return len(raw) - 1 - raw[0]
