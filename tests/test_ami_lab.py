"""The agent's AMI link against the lab Asterisk: what it knows when Asterisk leaves."""

from __future__ import annotations

import asyncio
import os

import pytest

from agent.config import parse
from agent.lab.pbx import LabPbx
from agent.pbx.ami import AmiLink
from agent.transports.health import DOWN, UP
from agent.transports.sip import SipTrunk

pytestmark = pytest.mark.lab

PORT_BASE = int(os.environ.get("TEXTBACK_TEST_AMI_PORT_BASE", "31000"))


def test_an_asterisk_shutdown_is_told_apart_from_a_broken_trunk(lab: LabPbx) -> None:
    config = parse({"ami": {"host": lab.ami_host, "port": lab.ami_port,
                            "username": lab.ami_user, "secret": lab.ami_secret}},
                   lab.etc_dir / "textback.toml")
    events: list[dict[str, str]] = []

    async def restart() -> tuple[str, str | None, str, str | None]:
        ami = AmiLink(config.ami, events.append)
        trunk = SipTrunk(config.sms.sip, ami)
        link = asyncio.create_task(ami.run())
        try:
            assert await ami.wait_up(10)
            assert trunk.health().state == UP
            await asyncio.to_thread(lab.cli, "core stop gracefully")
            for _ in range(200):
                if ami.asterisk_leaving:
                    break
                await asyncio.sleep(0.05)
            during = trunk.health()
            leaving = ami.asterisk_leaving
            await asyncio.to_thread(lab.stop)
            await asyncio.to_thread(lab.start)
            for _ in range(400):  # back: the link logs in again and forgets it
                await asyncio.sleep(0.05)
                if ami.connected and ami.asterisk_leaving is None:
                    break
            return during.state, leaving, trunk.health().state, during.detail
        finally:
            ami.close()
            link.cancel()
            await asyncio.gather(link, return_exceptions=True)

    during, leaving, after, detail = asyncio.run(restart())
    assert (during, leaving) == (DOWN, "shutting down"), detail
    assert "Asterisk is shutting down" in (detail or "")
    assert after == UP
