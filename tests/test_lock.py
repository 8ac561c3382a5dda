"""One agent per database: a second `textback agent` on the same database (SQLite or
PostgreSQL) refuses within seconds, naming the first, before it touches AMI; the lock
dies with its holder, so a kill -9 leaves nothing that blocks the next start."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from agent_process import STARTED, agent_config, running
from sqlalchemy import Engine

from agent.store import lock

DATABASES = ("sqlite", "postgresql")


def test_a_second_agent_refuses_naming_the_first(engine: Engine, tmp_path: Path) -> None:
    config = agent_config(engine, tmp_path / "textback.toml")
    with running(config, tmp_path / "first.log") as first:
        assert first.proc is not None
        began = time.monotonic()
        second = subprocess.run(
            [sys.executable, "-m", "agent.cli", "agent", "--config", str(config)],
            capture_output=True, text=True, timeout=60)
        took = time.monotonic() - began
        said = second.stdout + second.stderr
        assert second.returncode == 1, said
        assert took < 20, took  # refused at once (on a loaded 2-core CI too)
        (line,) = [text for text in said.splitlines() if text.strip()]
        assert f"a textback agent (host {socket.gethostname()}, pid {first.proc.pid}, " \
            "since " in line, line
        assert " UTC) holds the database " in line and "stop that one first" in line
        assert "AMI" not in said  # refused before the AMI link was made, let alone used
        assert STARTED not in said
        assert first.proc.poll() is None  # the first one is not disturbed

        # kill -9 leaves the lock file (SQLite) behind: the lock, not the file, decides
        first.proc.kill()
        first.proc.wait(10)
    if engine.url.get_backend_name() == "sqlite":
        assert lock.lock_path(Path(str(engine.url.database))).exists()
    with running(config, tmp_path / "third.log") as third:
        assert third.stop() == 0, third.log()


def test_a_held_lock_names_its_holder_and_is_free_after_release(engine: Engine) -> None:
    url = engine.url.render_as_string(hide_password=False)
    with lock.acquire(url, "agent") as held:
        assert held.holder.pid == os.getpid()
        with pytest.raises(lock.LockHeld) as refused:
            lock.acquire(url, "restore")
        assert refused.value.holder == held.holder
        assert str(refused.value).startswith(
            f"a textback agent ({held.holder.describe()}) holds the database ")
        assert "stop it before the restore" in str(refused.value)
    with lock.acquire(url, "restore"):
        pass


def test_the_agent_takes_its_lock_again_when_postgresql_drops_the_connection(
        engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture, database: str) -> None:
    if database != "postgresql":
        pytest.skip("a flock lasts as long as the process that holds it")
    import asyncio
    import logging

    from sqlalchemy import text

    from agent import daemon
    from agent.config import parse

    monkeypatch.setattr(daemon, "LOCK_CHECK", 0.2)
    url = engine.url.render_as_string(hide_password=False)
    config = parse({"ami": {"secret": "x", "port": 9}, "database": {"url": url}},
                   tmp_path / "textback.toml")

    async def outage() -> str:
        with lock.acquire(url, "agent") as held:
            agent = daemon.Agent(config)
            running_agent = asyncio.create_task(agent.run(held))
            await asyncio.sleep(0.3)
            with engine.connect() as admin:  # the server ends the lock's session
                admin.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                   "WHERE application_name LIKE 'textback%'"))
                admin.commit()
            for _ in range(100):
                await asyncio.sleep(0.1)
                if "taken again" in caplog.text:
                    break
            try:  # the agent holds the database again: another agent is refused
                await asyncio.to_thread(lock.acquire, url, "agent")
            except lock.LockHeld as refused:
                outcome = str(refused)
            else:
                outcome = "not refused"
            assert agent.stop is not None
            agent.stop.set()
            await asyncio.wait_for(running_agent, 20)
            return outcome

    with caplog.at_level(logging.WARNING, "agent.daemon"):
        refused = asyncio.run(outage())
    assert "the database's lock was lost with its connection; taken again" in caplog.text
    assert f"pid {os.getpid()}" in refused
