#!/usr/bin/env python3
"""The least a missed-call text-back can do, as the yardstick for bench/burst.

Logs into AMI with the agent's account and event subscription, and texts the caller
through the SIP trunk the moment the inbound leg (Uniqueid == Linkedid) hangs up after
a DialEnd BUSY or NOANSWER. It stores nothing: no database, no rules, no retries, no
cooldown, no opt-out list; a call it has not seen from its first DialEnd is not texted.
Standard library only, one asyncio task; it reads the AMI host, port, user and secret
from a textback config ([ami], [sms.sip] endpoint).

usage: python bench/reference_agent.py --config textback.toml
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import itertools
import sys
import tomllib
from pathlib import Path

EVENTS = "call,dialplan,user,cdr,agent"  # what `textback agent` subscribes to
MISSED = {"BUSY", "NOANSWER"}
BODY = ("Hi, thanks for calling us. Sorry we missed you! "
        "We'll call you back soon, or just reply here.")


def parse(block: bytes) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in block.decode("utf-8", errors="replace").split("\r\n"):
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key, value.strip())
    return fields


def action(fields: dict[str, str]) -> bytes:
    return "".join(f"{key}: {value}\r\n" for key, value in fields.items()).encode() + b"\r\n"


async def run(host: str, port: int, user: str, secret: str, endpoint: str) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    await reader.readline()  # banner
    writer.write(action({"Action": "Login", "Username": user, "Secret": secret,
                         "Events": EVENTS}))
    ids = itertools.count(1)
    body = base64.b64encode(BODY.encode()).decode()
    did: dict[str, str] = {}  # inbound Linkedid -> DID, while the call lasts
    missed: set[str] = set()  # inbound Linkedids whose dial ended busy / unanswered
    while True:
        try:
            block = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            raise SystemExit("AMI connection closed") from None
        event = parse(block)
        name = event.get("Event")
        if name is None:
            if event.get("Response") == "Error":
                print("AMI:", event.get("Message"), file=sys.stderr)
            continue
        linkedid = event.get("Linkedid", "")
        inbound = linkedid != "" and event.get("Uniqueid") == linkedid
        if name == "Newchannel" and inbound:
            did[linkedid] = event.get("Exten", "")
        elif name == "DialEnd" and inbound and event.get("DialStatus") in MISSED:
            missed.add(linkedid)
        elif name == "Hangup" and inbound:
            called = did.pop(linkedid, "")
            number = event.get("CallerIDNum", "")
            if linkedid in missed and number.lstrip("+").isdigit():
                missed.discard(linkedid)
                fields = {"Action": "MessageSend", "ActionID": str(next(ids)),
                          "Destination": f"pjsip:PJSIP/{number}@{endpoint}",
                          "Base64Body": body}
                if called:
                    fields["From"] = f"<sip:{called}@{host}>"
                writer.write(action(fields))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    args = parser.parse_args()
    config = tomllib.loads(args.config.read_text())
    ami = config["ami"]
    secret = ami.get("secret") or Path(ami["secret_file"]).read_text().strip()
    endpoint = config.get("sms", {}).get("sip", {}).get("endpoint", "trunk")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(ami.get("host", "127.0.0.1"), int(ami.get("port", 5038)),
                        ami["username"], secret, endpoint))
    return 0


if __name__ == "__main__":
    sys.exit(main())
