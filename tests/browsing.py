"""The web UI in a real browser, for the browser tests: the real app served by waitress
on a loopback port, Debian's Chromium driven by Playwright (never a downloaded browser;
the `chromium` fixture in conftest launches it once per module), screenshots of what a
person would see in tests/browser/screenshots/ (desktop and phone width). Also the
sites they open: `textback init` and its seeding, or the running lab's agent and its
front desk account, and a tab signed in through the form."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from agent import config as configuration
from agent.config import Config
from agent.lab.pbx import LabPbx
from agent.lab.trunk import TrunkMessage, TrunkPeer
from agent.people import accounts
from agent.store.db import make_engine, sessions
from agent.store.models import User

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
SHOTS = Path(__file__).parent / "browser" / "screenshots"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


@contextmanager
def serve(cfg: Config, port: int = 0) -> Iterator[str]:
    """The admin UI for `cfg`, as `textback web` serves it; yields its base URL."""
    from waitress import wasyncore
    from waitress.server import create_server

    from web import create_app, live

    app = create_app(cfg)
    server = create_server(app, host="127.0.0.1", port=port,
                           threads=live.threads(app))
    loop = threading.Thread(target=server.run, daemon=True)
    loop.start()
    try:
        yield f"http://127.0.0.1:{server.effective_port}"
    finally:
        watcher = live.watcher(app)
        watcher.stop()  # the open pages' streams end, as when the process stops
        deadline = time.monotonic() + 2
        while watcher.streams and time.monotonic() < deadline:
            time.sleep(0.05)
        # as when the process ends: the listening socket and every open connection close
        wasyncore.close_all(server._map)
        server.task_dispatcher.shutdown()
        # the loop leaves its poll (a second at most) and lets go of the port: the same
        # port can be served again at once (a restart of the web UI)
        loop.join(timeout=5)


@contextmanager
def site_session(url: str) -> Iterator[Session]:
    """A session on a site's database, to seed it (the caller commits); the engine is
    disposed after, so the served app and the agent are the only ones holding it."""
    engine = make_engine(url)
    try:
        with sessions(engine)() as session:
            yield session
    finally:
        engine.dispose()


def init_site(root: Path) -> Path:
    """`textback init` in `root`, its SQLite database there too: the config file."""
    config = root / "textback.toml"
    subprocess.run([sys.executable, "-m", "agent.cli", "init", "--config", str(config),
                    "--database-url", f"sqlite:///{root / 'textback.db'}"], check=True,
                   capture_output=True, timeout=60)
    return config


def add_owner_and_sam(session: Session, now: dt.datetime, password: str,
                      extensions: tuple[str | None, str | None] = (None, None)
                      ) -> dict[str, User]:
    """The sites' two accounts, both with `password`: "owner" (admin) and "sam" (staff),
    at these desk phone extensions; flushed, so they have their ids."""
    people = {name: accounts.add_user(session, now, username=name, password=password,
                                      role=role, actor="cli", extension=extension)
              for name, role, extension in (("owner", "admin", extensions[0]),
                                            ("sam", "staff", extensions[1]))}
    session.flush()
    return people


def lab_site_config(lab: LabPbx, work: Path, password: str) -> tuple[Path, Config]:
    """The agent's config for the lab in `work` with a web secret, the database migrated
    and one admin, "frontdesk" with `password`, at the lab's desk phone desk2: what the
    browser tests of a running agent serve and sign in as."""
    config = lab.write_agent_config(work)
    secret = work / "web.secret"
    secret.write_text("s" * 64)
    secret.chmod(0o600)
    with config.open("a") as handle:
        handle.write(f'[web]\nsecret_key_file = "{secret}"\n')
    subprocess.run([sys.executable, "-m", "agent.cli", "migrate", "--config", str(config)],
                   check=True, capture_output=True, timeout=60)
    cfg = configuration.load(config)
    with site_session(cfg.database.url) as session:
        accounts.add_user(session, dt.datetime.now(dt.UTC), username="frontdesk",
                          password=password, role="admin", actor="cli", extension="desk2")
        session.commit()
    return config, cfg


def texts_to(trunk: TrunkPeer, number: str) -> list[TrunkMessage]:
    """The texts the lab's trunk has carried to `number` so far."""
    return [m for m in list(trunk.messages) if m.to == number]


def sign_in(tab: Any, url: str, username: str, password: str, landing: str) -> None:
    """Open `url` signed out, get sent to the login form, fill it in like a person and
    land on `landing` (a glob such as "**/dashboard")."""
    tab.goto(url)
    assert "/login" in tab.url, tab.url
    tab.fill("input[name=username]", username)
    tab.fill("input[name=password]", password)
    tab.click("button[type=submit]")
    tab.wait_for_url(landing)


@contextmanager
def signed_in_tab(chromium: Any, url: str, username: str, password: str, landing: str,
                  viewport: dict[str, int] = DESKTOP) -> Iterator[Any]:
    """A new browser context's tab, signed in through the form (sign_in); closed after."""
    context = chromium.new_context(viewport=viewport)
    try:
        tab = context.new_page()
        sign_in(tab, url, username, password, landing)
        yield tab
    finally:
        context.close()


def shoot(tab: Any, name: str) -> None:
    """`name`.png at desktop width and `name`-phone.png at a phone's."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    tab.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
    tab.set_viewport_size(PHONE)
    tab.screenshot(path=str(SHOTS / f"{name}-phone.png"), full_page=True)
    tab.set_viewport_size(DESKTOP)
