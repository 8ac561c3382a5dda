"""`textback agent` as a process of its own (the lab's AgentProcess) on a test's
database, with an AMI that never answers: it runs, retries AMI, and holds the
database's lock until stopped."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine

from agent.lab.agentproc import AgentProcess

STARTED = "textback agent starting"


def closed_port() -> int:
    """A loopback port nobody listens on: the agents' AMI stays unreachable."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def agent_config(engine: Engine, path: Path) -> Path:
    url = engine.url.render_as_string(hide_password=False)
    path.write_text(f'[ami]\nhost = "127.0.0.1"\nport = {closed_port()}\nsecret = "x"\n'
                    f'[database]\nurl = "{url}"\n')
    return path


@contextmanager
def running(config: Path, log_path: Path) -> Iterator[AgentProcess]:
    """A started agent, killed on the way out if the test did not stop it."""
    process = AgentProcess(config, log_path)
    try:
        process.start(wait_for=STARTED)
        yield process
    finally:
        if process.proc is not None and process.proc.poll() is None:
            process.proc.kill()
            process.proc.wait(10)
