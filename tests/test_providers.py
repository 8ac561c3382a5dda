"""Texts through the messaging APIs (Twilio and SignalWire's compatible one, Telnyx),
against faithful fakes of those APIs (tests/fake_providers.py, with the shapes of the
providers' references): the real agent's dispatcher sends through the real transport
over HTTP, and the provider's signed webhooks reach the real web app, which shares the
agent's database. Every behaviour is tested for both providers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import itertools
import os
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from flask.testing import FlaskClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from agent.calls.tracker import FinishedCall
from agent.config import Config, ConfigError, parse
from agent.daemon import Agent
from agent.messages import kinds, outbox
from agent.store import audit
from agent.store.db import sessions
from agent.store.models import AuditEntry, Call, Contact, Message
from agent.transports import dispatcher

from fake_providers import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    OUR_NUMBER,
    PUBLIC_URL,
    TELNYX_KEY,
    FakeTelnyx,
    FakeTwilio,
    Provider,
    running_fakes,
    twilio_signature,
)

T = TypeVar("T")
# the paths where the web app's hooks and the agent share the database (and the
# dashboard's SQL) run on PostgreSQL too; the rest on SQLite, to keep the suite quick
BOTH_DATABASES = pytest.mark.databases("sqlite", "postgresql")
_customers = itertools.count(101)


def new_customer() -> str:
    return f"+1212555{next(_customers):04d}"


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, Provider]]:
    with running_fakes() as apis:
        yield apis


@pytest.fixture(params=["twilio", "telnyx"])
def api(request: pytest.FixtureRequest, fakes: dict[str, Provider]) -> Provider:
    fake = fakes[request.param]
    fake.reset()
    return fake


def secret_file(path: Path, text: str, mode: int = 0o600) -> Path:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(descriptor, "w") as out:
        out.write(text + "\n")
    os.chmod(path, mode)
    return path


def provider_config(api: Provider, tmp_path: Path, url: str, **section: Any) -> dict[str, Any]:
    """The TOML of an install that texts through `api`, the SIP trunk as failover."""
    if isinstance(api, FakeTwilio):
        table = {"account_sid": ACCOUNT_SID, "from_number": OUR_NUMBER, "api_base": api.base,
                 "auth_token_file": str(secret_file(tmp_path / "twilio.token", AUTH_TOKEN))}
    else:
        table = {"public_key": api.public_key, "from_number": OUR_NUMBER, "api_base": api.base,
                 "api_key_file": str(secret_file(tmp_path / "telnyx.key", TELNYX_KEY))}
    table.update(section)
    return {"ami": {"secret": "x"}, "database": {"url": url},
            "sms": {"transports": [api.name, "sip"], api.name: table},
            "web": {"public_url": PUBLIC_URL}}


@pytest.fixture
def cfg(api: Provider, engine: Engine, tmp_path: Path) -> Config:
    url = engine.url.render_as_string(hide_password=False)
    config = parse(provider_config(api, tmp_path, url), tmp_path / "textback.toml")
    # a provider that takes a text and never answers is given up on quickly
    section = dataclasses.replace(getattr(config.sms, api.name), timeout=0.5)
    return dataclasses.replace(config, sms=dataclasses.replace(config.sms,
                                                               **{api.name: section}))


@pytest.fixture
def hooks(cfg: Config) -> FlaskClient:
    """The web app as the provider reaches it (CSRF on, as in production)."""
    from web import create_app

    app = create_app(test_config={"TESTING": True, "SECRET_KEY": "test-" + "k" * 40,
                                  "DATABASE_URL": cfg.database.url, "TEXTBACK_CONFIG": cfg})
    return app.test_client()


@pytest.fixture
def agent(cfg: Config) -> Agent:
    return Agent(cfg)


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dispatcher, "RETRY_FIRST", 0.05)


def missed_call(linkedid: str, caller: str) -> FinishedCall:
    end = dt.datetime.now(dt.UTC).timestamp()
    return FinishedCall(linkedid, caller, "Dana Fischer", OUR_NUMBER, "inbound", True,
                        "noanswer", False, None, 4.0, end - 5, end, "trunk")


def run(agent: Agent, steps: Callable[[], Awaitable[T]]) -> T:
    """The agent's dispatcher running while `steps` do their part, then stopped as the
    agent stops it."""

    async def main() -> T:
        task = asyncio.create_task(agent.dispatcher.run())
        try:
            return await steps()
        finally:
            await agent.dispatcher.drain(timeout=2)
            task.cancel()
            for transport in agent.dispatcher.transports:
                close = getattr(transport, "close", None)
                if close is not None:
                    await close()

    try:
        return asyncio.run(main())
    finally:
        agent.db.close()


async def until(agent: Agent, look: Callable[[Session], T | None], timeout: float = 10) -> T:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = await agent.db(look)
        if found:
            return found
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("timed out waiting")
        await asyncio.sleep(0.02)


def out_to(number: str, *statuses: str) -> Callable[[Session], list[int] | None]:
    def look(session: Session) -> list[int] | None:
        query = select(Message.id).where(Message.number == number, Message.direction == "out")
        if statuses:
            query = query.where(Message.status.in_(statuses))
        return list(session.scalars(query)) or None
    return look


def row(engine: Engine, message_id: int) -> Message:
    with sessions(engine)() as session:
        message = session.get_one(Message, message_id)
        _ = message.history
        session.expunge_all()
        return message


def text_back(agent: Agent, customer: str, *settled: str) -> int:
    """A missed call from `customer`; its text-back's id once it is `settled`."""

    async def steps() -> int:
        await agent.handle(missed_call(f"{customer}.1", customer))
        return (await until(agent, out_to(customer, *settled)))[0]

    return run(agent, steps)


def sent_to(api: Provider, number: str) -> list[dict[str, Any]]:
    def to(message: dict[str, Any]) -> str:
        return message["to"] if isinstance(message["to"], str) else message["to"][0][
            "phone_number"]
    return [m for m in api.messages if to(m) == number]


def body(message: dict[str, Any]) -> str:
    return str(message.get("body") or message.get("text"))


# --------------------------------------------------------------------------- sending

@BOTH_DATABASES
def test_a_text_back_leaves_through_the_provider_and_is_delivered_on_a_signed_report(
        api: Provider, agent: Agent, hooks: FlaskClient, engine: Engine) -> None:
    customer = new_customer()
    message_id = text_back(agent, customer, "submitted")
    [taken] = sent_to(api, customer)
    assert "thanks for calling" in body(taken)
    sent = row(engine, message_id)
    assert (sent.status, sent.transport, sent.provider_id) == ("submitted", api.name,
                                                               taken["sid" if api.name ==
                                                                     "twilio" else "id"])
    if isinstance(api, FakeTwilio):  # where the reports are to come, with the row's id
        assert taken["_status_callback"] == (f"{PUBLIC_URL}/hooks/twilio/status"
                                             f"?message={message_id}")
    else:
        assert taken["webhook_url"] == f"{PUBLIC_URL}/hooks/telnyx"

    assert api.report(hooks, taken, "sent").status_code == 204
    assert row(engine, message_id).status == "sent"
    assert api.report(hooks, taken, "delivered").status_code == 204
    # late news (a retried "sent" after "delivered") never moves it back
    assert api.report(hooks, taken, "sent").status_code == 204
    assert api.report(hooks, taken, "delivered").status_code == 204
    delivered = row(engine, message_id)
    assert delivered.status == "delivered"
    assert [e.status for e in delivered.history][-3:] == ["submitted", "sent", "delivered"]


def test_a_report_that_comes_before_the_send_is_recorded_still_counts(
        api: Provider, agent: Agent, hooks: FlaskClient, engine: Engine) -> None:
    """The provider may call back before the dispatcher has written down the send's
    answer: Twilio's callback names our row, so "delivered" holds and "submitted" never
    comes after it; Telnyx's cannot, so the report is refused for the provider to retry."""
    customer = new_customer()
    api.plans.append("slow")

    async def steps() -> tuple[int, int]:
        await agent.handle(missed_call(f"{customer}.1", customer))
        while not sent_to(api, customer):  # taken, not answered yet
            await asyncio.sleep(0.005)
        early = api.report(hooks, sent_to(api, customer)[0], "delivered").status_code
        [message_id] = await until(agent, out_to(customer, "submitted", "delivered"))
        return early, message_id

    early, message_id = run(agent, steps)
    if isinstance(api, FakeTwilio):
        assert early == 204
        expected = ["sending", "delivered"]
    else:
        assert early == 404
        assert row(engine, message_id).status == "submitted"
        assert api.report(hooks, sent_to(api, customer)[0], "delivered").status_code == 204
        expected = ["sending", "submitted", "delivered"]
    statuses = [e.status for e in row(engine, message_id).history]
    assert statuses[statuses.index("sending"):] == expected


@BOTH_DATABASES
def test_with_a_provider_the_delivery_rate_is_real_and_the_thread_says_why_one_failed(
        api: Provider, agent: Agent, hooks: FlaskClient, owner: FlaskClient,
        engine: Engine) -> None:
    from agent.reports import dashboard

    reached, unreached = new_customer(), new_customer()

    async def steps() -> None:
        for customer in (reached, unreached):
            await agent.handle(missed_call(f"{customer}.1", customer))
        for customer in (reached, unreached):
            await until(agent, out_to(customer, "submitted"))

    run(agent, steps)
    api.report(hooks, sent_to(api, reached)[0], "sent")
    api.report(hooks, sent_to(api, reached)[0], "delivered")
    if isinstance(api, FakeTwilio):
        api.report(hooks, sent_to(api, unreached)[0], "undelivered", error_code="30003")
        reason = "Twilio error 30003"
    else:
        api.report(hooks, sent_to(api, unreached)[0], "delivery_failed", error_code="40001")
        reason = "Telnyx error 40001: Not routable"
    with sessions(engine)() as session:
        figures = dashboard.report(session, {"days": "7"}, dt.datetime.now(dt.UTC))
        delivery = next(k for k in figures.kpis if k.slug == "delivery")
        assert delivery.value == "50%", delivery
        contact_id = session.scalar(select(Contact.id).where(Contact.number == unreached))
    page = owner.get(f"/inbox/{contact_id}").get_data(as_text=True)
    assert "status-failed" in page and reason in page
    updates = owner.get(f"/inbox/{contact_id}/updates.json").get_json()
    assert [item["why"] for item in updates["items"] if item["status"] == "failed"] == [
        next(item["why"] for item in updates["items"] if reason in item["why"])]


def test_a_callback_with_a_wrong_or_missing_signature_is_refused_and_changes_nothing(
        api: Provider, agent: Agent, hooks: FlaskClient, engine: Engine) -> None:
    customer = new_customer()
    message_id = text_back(agent, customer, "submitted")
    [taken] = sent_to(api, customer)
    before = row(engine, message_id)
    forged = "c2lnbmVkIGJ5IHNvbWVvbmUgZWxzZQ=="
    refused = [api.report(hooks, taken, "delivered", signature=forged),
               api.report(hooks, taken, "delivered", signature=None),
               api.text_in(hooks, customer, "STOP", signature=forged),
               api.text_in(hooks, customer, "STOP", signature=None)]
    if isinstance(api, FakeTelnyx):  # signed right, but six minutes old: a replay
        refused += [api.report(hooks, taken, "delivered", age=360),
                    api.text_in(hooks, customer, "STOP", age=360)]
    else:  # signed for another row's address than the one it is posted to
        other = dict(taken, _status_callback=taken["_status_callback"] + "0")
        response = hooks.post(taken["_status_callback"].removeprefix(PUBLIC_URL), data={
            "MessageSid": taken["sid"], "MessageStatus": "delivered"}, headers={
            "X-Twilio-Signature": api.signature(other["_status_callback"], {
                "MessageSid": taken["sid"], "MessageStatus": "delivered"})})
        refused.append(response)
    assert [r.status_code for r in refused] == [403] * len(refused)
    after = row(engine, message_id)
    assert (after.status, len(after.history)) == (before.status, len(before.history))
    with sessions(engine)() as session:
        assert session.scalars(select(Message).where(Message.direction == "in")).all() == []
        assert session.scalar(select(Contact.opted_out).where(
            Contact.number == customer)) is False


@BOTH_DATABASES
def test_a_signed_stop_opts_out_and_exactly_one_confirmation_goes_out(
        api: Provider, agent: Agent, hooks: FlaskClient, engine: Engine) -> None:
    customer = new_customer()
    first = api.text_in(hooks, customer, "STOP", sid="SMfixed" if api.name == "twilio"
                        else "b6a1c8f2-0000-4000-8000-000000000001")
    # the provider retries the same text (it did not see our answer): stored once
    again = api.text_in(hooks, customer, "STOP", sid="SMfixed" if api.name == "twilio"
                        else "b6a1c8f2-0000-4000-8000-000000000001")
    for response in (first, again):
        if isinstance(api, FakeTwilio):
            assert response.status_code == 200 and response.mimetype == "text/xml"
            assert response.get_data(as_text=True).endswith("<Response></Response>")
        else:
            assert response.status_code == 204
        assert "Set-Cookie" not in response.headers  # no session for a provider
    # a second STOP while opted out changes nothing and gets no second confirmation
    api.text_in(hooks, customer, "stop")

    async def steps() -> list[int]:
        return await until(agent, out_to(customer, "submitted"))

    confirmations = run(agent, steps)
    assert len(confirmations) == 1
    [confirmation] = sent_to(api, customer)
    assert "unsubscribed" in body(confirmation)
    with sessions(engine)() as session:
        assert session.scalar(select(Contact.opted_out).where(Contact.number == customer))
        texts = session.scalars(select(Message).where(Message.number == customer)).all()
        assert sorted((m.direction, m.kind) for m in texts) == [
            ("in", kinds.SMS), ("in", kinds.SMS), ("out", kinds.OPT_OUT_CONFIRMATION)]
        assert {m.transport for m in texts} == {api.name}


def test_an_invalid_number_fails_for_good_without_a_retry(
        api: Provider, agent: Agent, engine: Engine) -> None:
    customer = new_customer()
    api.plans.append(21211)  # Telnyx: 40310
    message_id = text_back(agent, customer, "failed")
    failed = row(engine, message_id)
    assert (failed.error_kind, failed.attempts) == ("permanent", 1)
    assert ("21211" if api.name == "twilio" else "40310") in (failed.error or "")
    assert api.posts() == 1 and api.messages == []  # asked once, nothing sent
    statuses = [e.status for e in failed.history]
    assert statuses[statuses.index("sending"):] == ["sending", "failed"]  # never retried


def test_a_number_that_opted_out_at_the_carrier_is_recorded_as_opted_out(
        api: Provider, agent: Agent, engine: Engine) -> None:
    customer = new_customer()
    api.plans.append(21610)  # Telnyx: 40300 "Blocked due to STOP message"
    text_back(agent, customer, "failed")
    with sessions(engine)() as session:
        contact = session.scalars(select(Contact).where(Contact.number == customer)).one()
        assert contact.opted_out
        entry = session.scalars(select(AuditEntry).where(
            AuditEntry.action == audit.CONTACT_OPTED_OUT)).one()
        assert entry.actor == api.name and "STOP" in entry.details["reason"]


def test_a_number_that_cannot_take_texts_is_not_texted_again(
        fakes: dict[str, Provider], engine: Engine, tmp_path: Path) -> None:
    api = fakes["twilio"]
    api.reset()
    config = parse(provider_config(api, tmp_path, engine.url.render_as_string(
        hide_password=False)), tmp_path / "textback.toml")
    customer = new_customer()
    api.plans.append(21614)  # not a mobile number
    text_back(Agent(config), customer, "failed")
    later = Agent(config)
    run(later, lambda: later.handle(missed_call(f"{customer}.2", customer)))
    with sessions(engine)() as session:
        second = session.scalars(select(Call).where(Call.linkedid == f"{customer}.2")).one()
        assert (second.decision, second.skip_reason) == ("skip", "known_undeliverable")
    assert api.posts() == 1


def test_a_503_then_success_sends_exactly_once(
        api: Provider, agent: Agent, engine: Engine, quick_retries: None) -> None:
    customer = new_customer()
    api.plans.append(503)
    message_id = text_back(agent, customer, "submitted")
    assert api.posts() == 2 and len(sent_to(api, customer)) == 1
    sent = row(engine, message_id)
    assert sent.attempts == 2 and sent.provider_id == sent_to(api, customer)[0][
        "sid" if api.name == "twilio" else "id"]
    assert any("503" in (e.detail or "") for e in sent.history if e.status == "queued")


def test_a_send_the_provider_took_but_never_answered_is_not_sent_again(
        api: Provider, agent: Agent, engine: Engine, quick_retries: None) -> None:
    customer = new_customer()
    api.plans.append("hang")  # taken, then no answer before the client's timeout
    message_id = text_back(agent, customer, "submitted")
    [taken] = sent_to(api, customer)
    sent = row(engine, message_id)
    assert sent.provider_id == taken["sid" if api.name == "twilio" else "id"]
    assert sent.transport == api.name  # never failed over to the trunk meanwhile
    assert len(api.messages) == 1


def test_a_request_lost_on_the_way_is_sent_again_and_an_earlier_same_text_is_not_it(
        fakes: dict[str, Provider], engine: Engine, tmp_path: Path,
        quick_retries: None) -> None:
    """Twilio honours no idempotency key: after a send without an answer the transport
    asks the message list. An earlier text with the same words to the same number is
    there, but it is another row's: this one is sent again, once."""
    api = fakes["twilio"]
    api.reset()
    data = provider_config(api, tmp_path, engine.url.render_as_string(hide_password=False))
    config = parse(data, tmp_path / "textback.toml")
    section = dataclasses.replace(config.sms.twilio, timeout=0.5)
    agent = Agent(dataclasses.replace(config, sms=dataclasses.replace(config.sms,
                                                                      twilio=section)))
    customer = new_customer()
    api.plans.extend([None, "lost"])
    with sessions(engine)() as session:
        for key in ("first", "second"):
            outbox.enqueue(session, now=dt.datetime.now(dt.UTC), kind=kinds.STAFF_REPLY,
                           number=customer, body="We are on our way.", idempotency_key=key)
        session.commit()
    ids = run(agent, lambda: until(agent, lambda s: (lambda rows: rows if len(rows) == 2
                                                     else None)(out_to(customer,
                                                                       "submitted")(s) or [])))
    first, second = (row(engine, message_id) for message_id in sorted(ids))
    assert [m["sid"] for m in api.messages] == [first.provider_id, second.provider_id]
    assert first.provider_id != second.provider_id and api.posts() == 3


def test_while_twilio_cannot_say_whether_it_took_a_text_it_is_not_sent_again(
        fakes: dict[str, Provider], engine: Engine, tmp_path: Path,
        quick_retries: None) -> None:
    api = fakes["twilio"]
    assert isinstance(api, FakeTwilio)
    api.reset()
    config = parse(provider_config(api, tmp_path, engine.url.render_as_string(
        hide_password=False)), tmp_path / "textback.toml")
    section = dataclasses.replace(config.sms.twilio, timeout=0.5)
    agent = Agent(dataclasses.replace(config, sms=dataclasses.replace(config.sms,
                                                                      twilio=section)))
    customer = new_customer()
    api.plans.append("hang")  # taken, unanswered…
    api.list_down = 2  # …and the message list unreadable for two looks
    message_id = text_back(agent, customer, "submitted")
    sent = row(engine, message_id)
    assert api.posts() == 1 and len(api.messages) == 1
    assert sent.provider_id == api.messages[0]["sid"] and sent.attempts == 3


# --------------------------------------------------------------------------- the hooks

def test_signalwire_webhooks_are_checked_with_the_projects_signing_key(
        fakes: dict[str, Provider], engine: Engine, tmp_path: Path) -> None:
    from web import create_app

    api = fakes["twilio"]
    assert isinstance(api, FakeTwilio)
    data = provider_config(api, tmp_path, engine.url.render_as_string(hide_password=False))
    data["sms"]["twilio"]["signing_key_file"] = str(secret_file(tmp_path / "signing.key",
                                                                "PSK_" + "7" * 28))
    config = parse(data, tmp_path / "textback.toml")
    hooks = create_app(test_config={"TESTING": True, "SECRET_KEY": "test-" + "k" * 40,
                                    "DATABASE_URL": config.database.url,
                                    "TEXTBACK_CONFIG": config}).test_client()
    url, form = f"{PUBLIC_URL}/hooks/twilio/sms", {
        "MessageSid": "SMsw1", "From": new_customer(), "To": OUR_NUMBER, "Body": "Hello"}
    with_token = api.post(hooks, url, form)  # the API token does not sign them
    with_key = hooks.post("/hooks/twilio/sms", data=form, headers={
        "X-SignalWire-Signature": twilio_signature("PSK_" + "7" * 28, url, form)})
    assert (with_token.status_code, with_key.status_code) == (403, 200)


def test_the_hooks_refuse_big_bodies_and_other_methods(api: Provider,
                                                       hooks: FlaskClient) -> None:
    path = "/hooks/twilio/sms" if api.name == "twilio" else "/hooks/telnyx"
    assert hooks.post(path, data=b"x" * 70_000,
                      content_type="application/octet-stream").status_code == 413
    assert hooks.get(path).status_code == 405
    if isinstance(api, FakeTelnyx):  # signed, but not an event
        raw, now = b'{"data": {"event_type": "message.received"}}', int(time.time())
        assert hooks.post(path, data=raw, headers={
            "telnyx-timestamp": str(now), "telnyx-signature-ed25519": api.sign(raw, now),
            "Content-Type": "application/json"}).status_code == 400


def test_the_hooks_are_absent_without_the_provider(client: FlaskClient) -> None:
    # the app fixture has no config: an install without providers has no hooks
    assert client.post("/hooks/twilio/status", data={"MessageSid": "SM1"}).status_code == 404
    assert client.post("/hooks/telnyx", data=b"{}").status_code == 404


def test_twilio_signatures_match_the_published_examples() -> None:
    from agent.transports.twilio import signature

    # twilio-python's tests/unit/test_request_validator.py
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    params = {"CallSid": "CA1234567890ABCDE", "Digits": "1234", "From": "+14158675309",
              "To": "+18005551212", "Caller": "+14158675309"}
    assert signature("12345", url, params.items()) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    assert signature("12345", url, [("Sid", "CA123"), ("SidAccount", "AC123"),
                                    ("Digits", "5678"), ("Digits", "1234")]) \
        == "IK+Dwps556ElfBT0I3Rgjkr1wJU="


# --------------------------------------------------------------------------- the config

@pytest.mark.parametrize(("change", "words"), [
    (lambda c: c["web"].clear(), "web.public_url is required with the"),
    (lambda c: c["web"].update(public_url="textback.example.com"), "web.public_url must be"),
    (lambda c: c["sms"][c["sms"]["transports"][0]].update(from_number="555-0100"),
     "from_number must be E.164"),
    (lambda c: c["sms"][c["sms"]["transports"][0]].update(surprise=1),
     "surprise is not a known key"),
])
def test_provider_config_errors_name_the_key_and_the_file(
        api: Provider, tmp_path: Path, change: Callable[[dict[str, Any]], None],
        words: str) -> None:
    data = provider_config(api, tmp_path, "sqlite:///x.db")
    change(data)
    with pytest.raises(ConfigError, match=words) as error:
        parse(data, tmp_path / "textback.toml")
    assert str(tmp_path / "textback.toml") in str(error.value)


def test_provider_secrets_must_be_private_files(api: Provider, tmp_path: Path) -> None:
    data = provider_config(api, tmp_path, "sqlite:///x.db")
    key = "auth_token_file" if api.name == "twilio" else "api_key_file"
    os.chmod(data["sms"][api.name][key], 0o644)
    with pytest.raises(ConfigError, match=f"sms.{api.name}.{key} .* readable by others"):
        parse(data, tmp_path / "textback.toml")
    data["sms"][api.name][key] = str(tmp_path / "missing")
    with pytest.raises(ConfigError, match=f"sms.{api.name}.{key} cannot read"):
        parse(data, tmp_path / "textback.toml")


# --------------------------------------------------------------------------- doctor

def test_doctor_checks_the_credentials_the_signature_secret_and_the_public_url(
        api: Provider, cfg: Config) -> None:
    from werkzeug.serving import make_server

    from agent.ops import doctor
    from web import create_app

    app = create_app(test_config={"TESTING": True, "SECRET_KEY": "test-" + "k" * 40,
                                  "DATABASE_URL": cfg.database.url})
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        public = f"http://127.0.0.1:{server.server_port}"
        config = dataclasses.replace(cfg, web=dataclasses.replace(cfg.web, public_url=public))
        app.config["TEXTBACK_CONFIG"] = config
        checks = asyncio.run(doctor.provider_checks(config))
        assert [c.ok for c in checks] == [True, True, True], checks
        assert "credentials accepted" in checks[0].what and "signatures" in checks[1].what
        assert "refuses unsigned posts" in checks[2].what
        assert ("GET", f"/2010-04-01/Accounts/{ACCOUNT_SID}.json" if api.name == "twilio"
                else "/v2/balance") in api.requests

        section = getattr(config.sms, api.name)
        wrong = dataclasses.replace(section, **{
            "auth_token" if api.name == "twilio" else "api_key": "not-the-key"})
        nowhere = f"http://127.0.0.1:{closed_port()}"
        broken = dataclasses.replace(config, sms=dataclasses.replace(
            config.sms, **{api.name: wrong}), web=dataclasses.replace(config.web,
                                                                      public_url=nowhere))
        failed = asyncio.run(doctor.provider_checks(broken))
        assert [c.ok for c in failed] == [False, False]
        assert "401" in failed[0].what and f"[sms.{api.name}]" in failed[0].fix
        assert "not reachable" in failed[1].what and "web.public_url" in failed[1].fix
    finally:
        server.shutdown()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_send_test_sends_one_text_through_the_provider(api: Provider, engine: Engine,
                                                       tmp_path: Path) -> None:
    from click.testing import CliRunner

    from agent.cli import main

    data = provider_config(api, tmp_path, engine.url.render_as_string(hide_password=False))
    lines = [f'[ami]\nsecret = "x"\n[database]\nurl = "{data["database"]["url"]}"\n',
             f'[web]\npublic_url = "{PUBLIC_URL}"\n',
             f'[sms]\ntransports = ["{api.name}", "sip"]\n[sms.{api.name}]\n']
    lines += [f'{key} = "{value}"\n' for key, value in data["sms"][api.name].items()]
    path = tmp_path / "textback.toml"
    path.write_text("".join(lines))
    customer = new_customer()
    result = CliRunner().invoke(main, ["send-test", "--config", str(path), "--to", customer,
                                       "--text", "Test from textback", "--transport",
                                       api.name])
    assert result.exit_code == 0, result.output
    assert f"submitted via {api.name}" in result.output
    assert [body(m) for m in sent_to(api, customer)] == ["Test from textback"]
