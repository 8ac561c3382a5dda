"""The `textback` command as IT staff use it: init, settings, classify, bad configs."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from agent.cli import main

pytestmark = pytest.mark.clock  # make test-clock runs it at awkward instants too

AMI = Path(__file__).parent / "fixtures" / "ami"
TRANSCRIPTS = sorted(p for p in AMI.glob("*.txt"))


def test_init_writes_config_private_secret_and_database(config: Path, tmp_path: Path) -> None:
    secret = config.with_name("ami.secret")
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert len(secret.read_text().strip()) >= 24  # random, never a default password
    assert (tmp_path / "var" / "textback.db").exists()
    before = secret.read_text(), config.read_text()
    again = CliRunner().invoke(main, ["init", "--config", str(config)])
    assert again.exit_code == 0 and "exists; leaving it" in again.output
    assert (secret.read_text(), config.read_text()) == before  # nothing regenerated


def test_two_inits_make_different_secrets(tmp_path: Path) -> None:
    secrets = []
    for name in ("a", "b"):
        path = tmp_path / name / "textback.toml"
        CliRunner().invoke(main, ["init", "--config", str(path), "--database-url",
                                  f"sqlite:///{tmp_path / name / 'db'}"])
        secrets.append(path.with_name("ami.secret").read_text())
    assert secrets[0] != secrets[1]


def test_settings_set_get_list(config: Path) -> None:
    run = CliRunner().invoke
    out = run(main, ["settings", "set", "--config", str(config), "business.name", "Acme HVAC"])
    assert out.exit_code == 0, out.output
    got = run(main, ["settings", "get", "--config", str(config), "business.name"])
    assert json.loads(got.output) == "Acme HVAC"
    # the change is in the audit log, with the old and the new value
    from sqlalchemy import select

    from agent import config as configuration
    from agent.store.db import make_engine, sessions
    from agent.store.models import AuditEntry

    with sessions(make_engine(configuration.load(config).database.url))() as s:
        entry = s.scalars(select(AuditEntry).where(AuditEntry.action == "setting_changed")).one()
        assert (entry.target, entry.details) == ("business.name", {"from": "us",
                                                                  "to": "Acme HVAC"})
    # JSON values are parsed as JSON
    run(main, ["settings", "set", "--config", str(config), "hours.holidays", '["2026-12-25"]'])
    got = run(main, ["settings", "get", "--config", str(config), "hours.holidays"])
    assert json.loads(got.output) == ["2026-12-25"]
    listing = run(main, ["settings", "list", "--config", str(config)]).output
    assert '* business.name = "Acme HVAC"' in listing
    assert '  textback.cooldown = "24h"' in listing  # untouched: shown with its default
    as_json = json.loads(run(main, ["settings", "list", "--config", str(config),
                                    "--json"]).output)
    assert {row["key"] for row in as_json} >= {"business.name", "hours.weekly",
                                               "templates.after_hours", "textback.delay"}


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("hours.weekly", "mon-fri 8:5-17:00", "hours.weekly"),
        ("textback.cooldown", "forever", "textback.cooldown"),
        ("busines.name", "x", "business.name"),  # a typo gets a suggestion
        ("templates.business_hours", "Hi {frist_name}", "first_name"),
    ],
)
def test_bad_setting_is_refused_with_the_key(config: Path, key: str, value: str,
                                             message: str) -> None:
    out = CliRunner().invoke(main, ["settings", "set", "--config", str(config), key, value])
    assert out.exit_code != 0
    assert message in out.output


def test_hours_as_owners_write_them_are_stored_in_the_canonical_form(config: Path) -> None:
    run = CliRunner().invoke
    set_ = run(main, ["settings", "set", "--config", str(config), "hours.weekly",
               "Mon–Fri 8am-5pm; sat 9-12; sun closed"])
    assert set_.exit_code == 0, set_.output
    got = run(main, ["settings", "get", "--config", str(config), "hours.weekly"])
    assert json.loads(got.output) == "mon-fri 08:00-17:00; sat 09:00-12:00"


def test_users_signout_ends_every_web_session(config: Path, tmp_path: Path) -> None:
    from agent import config as configuration
    from web import create_app

    password = tmp_path / "pw"
    password.write_text("a long enough password\n")
    run = CliRunner().invoke
    added = run(main, ["users", "add", "desk", "--role", "staff", "--password-file",
                       str(password), "--config", str(config)])
    assert added.exit_code == 0, added.output
    app = create_app(configuration.load(config), {"WTF_CSRF_ENABLED": False})
    browser = app.test_client()
    browser.post("/login", data={"username": "desk", "password": "a long enough password"})
    assert browser.get("/calls").status_code == 200
    out = run(main, ["users", "signout", "desk", "--config", str(config)])
    assert out.exit_code == 0, out.output
    assert "every session of desk has ended" in out.output
    assert browser.get("/calls").status_code == 302  # back to the sign-in page
    assert run(main, ["users", "signout", "nobody", "--config", str(config)]).exit_code != 0


def test_bad_config_exits_nonzero_naming_key_and_file(tmp_path: Path) -> None:
    path = tmp_path / "textback.toml"
    path.write_text('[ami]\nsecret = "x"\nusername = "textback"\nprot = 5038\n')
    out = CliRunner().invoke(main, ["agent", "--config", str(path)])
    assert out.exit_code != 0
    assert f"{path}: ami.prot is not a known key" in out.output


def test_agent_refuses_an_unmigrated_database(tmp_path: Path) -> None:
    path = tmp_path / "textback.toml"
    path.write_text(f'[ami]\nsecret = "x"\n[database]\nurl = "sqlite:///{tmp_path}/new.db"\n')
    out = CliRunner().invoke(main, ["agent", "--config", str(path)])
    assert out.exit_code != 0
    assert "textback migrate" in out.output


def oracle(path: Path) -> list[dict[str, object]]:
    lines = path.with_suffix(".expected.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


@pytest.mark.parametrize("path", TRANSCRIPTS, ids=lambda p: p.stem)
def test_classify_prints_the_oracle(path: Path) -> None:
    out = CliRunner().invoke(main, ["classify", str(path)])
    assert out.exit_code == 0, out.output
    got = [json.loads(line) for line in out.output.splitlines()]
    want = oracle(path)
    assert [list(row) for row in got] == [list(row) for row in want]  # keys, in order
    for g, w in zip(got, want, strict=True):
        assert abs(g.pop("ring_seconds") - w.pop("ring_seconds")) <= 0.5
        assert g == w


def test_classify_normalises_callers_to_e164(tmp_path: Path) -> None:
    text = (AMI / "trunk_busy.txt").read_text().replace("+15551230001", "(212) 555-0142")
    path = tmp_path / "national.txt"
    path.write_text(text)
    out = CliRunner().invoke(main, ["classify", str(path)])
    (row,) = [json.loads(line) for line in out.output.splitlines()]
    assert row["caller"] == "+12125550142"
    assert (row["missed"], row["reason"]) == (True, "busy")


def test_classify_inbound_by_context(tmp_path: Path) -> None:
    path = AMI / "busy.txt"  # an internal call, from context from-internal
    plain = json.loads(CliRunner().invoke(main, ["classify", str(path)]).output)
    assert plain["direction"] == "internal"
    by_context = CliRunner().invoke(main, ["classify", "--inbound-context", "from-internal",
                                           str(path)])
    assert json.loads(by_context.output)["direction"] == "inbound"


def test_secret_file_permissions_checked_at_load(config: Path) -> None:
    os.chmod(config.with_name("ami.secret"), 0o644)
    out = CliRunner().invoke(main, ["settings", "list", "--config", str(config)])
    assert out.exit_code != 0 and "chmod 600" in out.output


def test_marking_a_customer_contacted_stops_their_timers(config: Path) -> None:
    import datetime as dt

    from sqlalchemy import select

    from agent import config as configuration
    from agent.messages import timers
    from agent.store.db import make_engine, sessions
    from agent.store.models import Contact, Job

    engine = make_engine(configuration.load(config).database.url)
    now = dt.datetime.now(dt.UTC)
    with sessions(engine)() as s, s.begin():
        contact = Contact(number="+12125550142", created_at=now, tags=[])
        s.add(contact)
        s.flush()
        s.add(Job(kind=timers.FOLLOWUP, step=0, due_at=now, status="pending",
                  dedupe_key="followup:1:0", contact_id=contact.id, created_at=now))
    out = CliRunner().invoke(main, ["contacted", "--config", str(config), "(212) 555-0142"])
    assert out.exit_code == 0, out.output
    with sessions(engine)() as s:
        assert s.scalars(select(Job)).one().status == "cancelled"
        assert s.scalars(select(Contact)).one().contacted_at is not None
    unknown = CliRunner().invoke(main, ["contacted", "--config", str(config), "+13125550000"])
    assert unknown.exit_code != 0 and "no contact" in unknown.output


def test_readme_documents_every_setting() -> None:
    from agent.rules import settings

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    missing = [key for key in settings.SPECS if f"`{key}`" not in readme]
    assert missing == []
