"""Failover from a messaging API to the SIP trunk, on the real lab Asterisk: with the
provider down (refusing connections, or answering 503), the agent's text-back leaves
through the trunk as a SIP MESSAGE, once."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select
from test_providers import (
    closed_port,
    missed_call,
    new_customer,
    out_to,
    provider_config,
    row,
    run,
    until,
)

from agent.config import parse
from agent.daemon import Agent
from agent.lab.pbx import LabPbx
from agent.lab.trunk import TrunkPeer
from agent.store.db import sessions
from agent.store.models import Message

from fake_providers import Provider, running_fakes

pytestmark = pytest.mark.lab

PORT_BASE = int(os.environ.get("TEXTBACK_TEST_PROVIDERS_PORT_BASE", "40000"))


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, Provider]]:
    with running_fakes() as apis:
        yield apis


@pytest.mark.parametrize("down", ["refused", "503"])
@pytest.mark.parametrize("provider", ["twilio", "telnyx"])
def test_a_text_back_fails_over_to_the_trunk_when_the_provider_is_down(
        provider: str, down: str, fakes: dict[str, Provider], lab: LabPbx,
        trunk: TrunkPeer, engine: Engine, tmp_path: Path) -> None:
    api = fakes[provider]
    api.reset()
    data: dict[str, Any] = provider_config(api, tmp_path, engine.url.render_as_string(
        hide_password=False))
    if down == "refused":
        data["sms"][provider]["api_base"] = f"http://127.0.0.1:{closed_port()}"
    else:
        api.plans.extend([503] * 5)
    data["ami"] = {"host": lab.ami_host, "port": lab.ami_port, "username": lab.ami_user,
                   "secret": lab.ami_secret}
    data["sms"]["sip"] = {"endpoint": "trunk"}
    agent = Agent(parse(data, tmp_path / "textback.toml"))
    customer = new_customer()

    async def steps() -> int:
        link = asyncio.create_task(agent.ami.run())
        try:
            while not agent.ami.connected:
                await asyncio.sleep(0.05)
            await agent.handle(missed_call(f"{customer}.1", customer))
            [message_id] = await until(agent, out_to(customer, "submitted"), timeout=15)
            return message_id
        finally:
            agent.ami.close()
            link.cancel()

    message_id = run(agent, steps)
    sent = row(engine, message_id)
    assert sent.transport == "sip"
    assert provider in " ".join(e.detail or "" for e in sent.history)  # tried first
    messages = _wait_for_trunk(trunk, customer)
    assert len(messages) == 1 and "thanks for calling" in messages[0].body
    assert api.messages == []  # the provider took nothing
    if down == "503":
        assert api.posts() == 1
    with sessions(engine)() as session:
        assert len(session.scalars(select(Message).where(Message.number == customer)).all()) == 1


def _wait_for_trunk(trunk: TrunkPeer, number: str) -> list[Any]:
    from agent.lab.agentproc import wait_until

    wait_until("the SIP MESSAGE at the trunk",
               lambda: [m for m in list(trunk.messages) if m.to == number])
    return [m for m in list(trunk.messages) if m.to == number]


def test_an_emergency_texted_through_a_webhook_rings_the_on_call_phone(
        fakes: dict[str, Provider], lab: LabPbx, trunk: TrunkPeer, engine: Engine,
        tmp_path: Path) -> None:
    """The web app has no PBX link: it asks the agent, which rings desk2 within seconds."""
    from agent.messages import rings
    from agent.rules import settings
    from agent.store.models import RingRequest
    from web import create_app

    from fake_providers import PUBLIC_URL

    api = fakes["twilio"]
    api.reset()
    data = provider_config(api, tmp_path, engine.url.render_as_string(hide_password=False))
    data["ami"] = {"host": lab.ami_host, "port": lab.ami_port, "username": lab.ami_user,
                   "secret": lab.ami_secret}
    config = parse(data, tmp_path / "textback.toml")
    with sessions(engine)() as session:
        settings.set(session, "oncall.target", "desk2", dt.datetime.now(dt.UTC), region="US")
        session.commit()
    hooks = create_app(test_config={"TESTING": True, "SECRET_KEY": "test-" + "k" * 40,
                                    "DATABASE_URL": config.database.url,
                                    "TEXTBACK_CONFIG": config}).test_client()
    assert config.web.public_url == PUBLIC_URL
    agent = Agent(config)
    customer = new_customer()
    phone = lab.phone("desk2", "ring", timeout=15)

    async def steps() -> str:
        link = asyncio.create_task(agent.ami.run())
        timers = asyncio.create_task(agent.run_timers())
        try:
            while not agent.ami.connected:
                await asyncio.sleep(0.05)
            response = api.text_in(hooks, customer, "Water everywhere in the kitchen!!")
            assert response.status_code == 200
            sent = asyncio.get_running_loop().time()
            channel = await asyncio.to_thread(lab.wait_channel, "PJSIP/desk2", 5)
            assert asyncio.get_running_loop().time() - sent < 5
            return str(channel)
        finally:
            timers.cancel()
            agent.ami.close()
            link.cancel()

    try:
        assert run(agent, steps).startswith("PJSIP/desk2")
    finally:
        phone.stop()
    with sessions(engine)() as session:
        ring = session.scalars(select(RingRequest)).one()
        assert (ring.target, ring.number, ring.label, ring.status) == (
            "desk2", customer, "EMERGENCY", rings.RINGING)
