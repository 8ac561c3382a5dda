"""Shared fixtures: a migrated database per test (real SQLite, real PostgreSQL, real
migrations).

SQLite is the default everywhere. A test module that sets
`DATABASES = ("sqlite", "postgresql")` (or a test marked
`@pytest.mark.databases("sqlite", "postgresql")`) runs its database tests on both: the
PostgreSQL server is a throwaway cluster started once per test run (the Makefile
installs Debian's postgresql; without it those cases are skipped with the reason).
"""

from __future__ import annotations

import functools
import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from hypothesis import settings
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from agent.store.db import make_engine, migrate, sessions

FIXTURES = Path(__file__).parent / "fixtures"

# CI must be reproducible: there, hypothesis replays the same examples every run
# (`derandomize`); on a developer's machine it keeps exploring new ones. No deadline:
# a loaded 2-core machine must not turn slowness into failures.
settings.register_profile("ci", derandomize=True, deadline=None)
settings.register_profile("dev", deadline=None)
settings.register_profile("thorough", deadline=None, max_examples=3000)
_default_profile = "ci" if os.environ.get("CI") else "dev"
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or _default_profile)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "database" in metafunc.fixturenames:
        # a module's DATABASES, or a test's own @pytest.mark.databases(...)
        marker = metafunc.definition.get_closest_marker("databases")
        names = marker.args if marker else getattr(metafunc.module, "DATABASES", ("sqlite",))
        metafunc.parametrize("database", names, indirect=True)


@pytest.fixture
def database(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _pg_binary(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A private PostgreSQL cluster on a free loopback port; yields its base URL."""
    initdb, pg_ctl = _pg_binary("initdb"), _pg_binary("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("PostgreSQL server binaries not installed (make test installs them)")
    # not under pytest's root-only tmp: the postgres user must be able to reach it
    data = Path(tempfile.mkdtemp(prefix="textback-pg-"))
    # PostgreSQL refuses to run as root; the Debian package brings a postgres user
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(data, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    subprocess.run([*as_user, initdb, "-D", str(data / "db"), "-A", "trust", "-U", "textback",
                    "--no-sync"], check=True, capture_output=True)
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {data} -c fsync=off"
    subprocess.run([*as_user, pg_ctl, "-D", str(data / "db"), "-o", options, "-l",
                    str(data / "log"), "-w", "start"], check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg://textback@127.0.0.1:{port}"
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(data / "db"), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(data, ignore_errors=True)


_databases = itertools.count(1)


@pytest.fixture
def engine(database: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Engine]:
    if database == "sqlite":
        url = f"sqlite:///{tmp_path / 'textback.db'}"
    else:
        server = request.getfixturevalue("postgres_server")
        name = f"t{os.getpid()}_{next(_databases)}"
        admin = create_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        url = f"{server}/{name}"
    engine = make_engine(url)
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    with sessions(engine)() as session:
        yield session


# --- the web UI (tests/test_web_*.py): the app on the migrated database, a client that
# --- signs in through the real login form (CSRF on), and accounts to sign in with

WEB_PASSWORD = "correct horse battery"


@pytest.fixture
def app(engine: Engine) -> Flask:
    from web import create_app

    return create_app(test_config={
        "TESTING": True, "SECRET_KEY": "test-" + "k" * 40,
        "DATABASE_URL": engine.url.render_as_string(hide_password=False)})


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def runner(app: Flask) -> FlaskCliRunner:
    return app.test_cli_runner()


@pytest.fixture
def web_users(session: Session) -> dict[str, str]:
    """An admin and a front-desk account, both with WEB_PASSWORD."""
    import datetime as dt

    from agent.people import accounts

    now = dt.datetime.now(dt.UTC)
    for name, role in (("owner", "admin"), ("desk", "staff")):
        accounts.add_user(session, now, username=name, password=WEB_PASSWORD, role=role,
                          actor="cli")
    session.commit()
    return {"admin": "owner", "staff": "desk"}


@pytest.fixture
def owner(client: FlaskClient, web_users: dict[str, str]) -> FlaskClient:
    """Signed in as the admin."""
    assert login(client, "owner").status_code == 302
    return client


@pytest.fixture
def staff(client: FlaskClient, web_users: dict[str, str]) -> FlaskClient:
    """Signed in as the front desk (role staff)."""
    assert login(client, "desk").status_code == 302
    return client


def csrf_token(client: FlaskClient, path: str = "/login") -> str:
    import re

    page = client.get(path).get_data(as_text=True)
    found = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page) or \
        re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, f"no CSRF token on {path}"
    return found.group(1)


def login(client: FlaskClient, username: str, password: str = WEB_PASSWORD) -> TestResponse:
    return client.post("/login", data={"username": username, "password": password,
                                       "csrf_token": csrf_token(client)})


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """Debian's Chromium under Playwright, one per test module (skipped without it).

    Not one per run: Playwright's sync API keeps an event loop running in this thread
    while it is open, and later modules' asyncio.run() would find it."""
    from browsing import CHROMIUM, CHROMIUM_ARGS

    sync_api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (make chromium)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A fresh install: `textback init` with its config, secrets and SQLite database."""
    from click.testing import CliRunner

    from agent.cli import main

    path = tmp_path / "etc" / "textback.toml"
    result = CliRunner().invoke(main, ["init", "--config", str(path), "--database-url",
                                       f"sqlite:///{tmp_path / 'var' / 'textback.db'}"])
    assert result.exit_code == 0, result.output
    return path


@pytest.fixture(scope="module")
def lab(request: pytest.FixtureRequest,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The lab Asterisk 22 for a test module, on the module's own PORT_BASE, so modules
    never share a PBX and a failed one leaves nothing behind for the next."""
    from agent.lab.pbx import LabPbx

    with LabPbx(tmp_path_factory.mktemp("lab"), request.module.PORT_BASE,
                ring_seconds=2) as pbx:
        yield pbx


@pytest.fixture(scope="module")
def trunk(lab: Any) -> Iterator[Any]:
    """The carrier's side of the lab trunk: it records the SIP MESSAGEs the agent sends."""
    with lab.trunk_peer() as peer:
        yield peer


@pytest.fixture
def agent(engine: Engine, tmp_path: Path) -> Any:
    """The agent on the test's database, not started: tests call its decision steps."""
    from agent.config import parse
    from agent.daemon import Agent

    config = parse({"ami": {"secret": "x"},
                    "database": {"url": engine.url.render_as_string(hide_password=False)}},
                   tmp_path / "textback.toml")
    return Agent(config)


Record = Callable[..., tuple[Any, str]]


@pytest.fixture
def record(agent: Any) -> Record:
    """The decision step for a finished call (agent.calls.missed.record) as the agent
    runs it: its region, its dispatcher claiming a text due now."""
    from agent.calls import missed

    return functools.partial(missed.record, region=agent.config.pbx.default_region,
                             worker=agent.dispatcher.worker)
