"""`textback agent` as its own process against a lab, the way systemd runs it."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from agent.lab.children import die_with_parent


def wait_until(what: str, check: Callable[[], object], timeout: float = 15.0) -> object:
    """Poll `check` until it returns something truthy (returned), or fail naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# `textback ARGS...` with agent.store.db.BUSY_TIMEOUT set to argv[1] first
_WITH_BUSY_TIMEOUT = ("import sys\n"
                      "import agent.store.db\n"
                      "agent.store.db.BUSY_TIMEOUT = float(sys.argv[1])\n"
                      "from agent.cli import main\n"
                      "main(sys.argv[2:], prog_name='textback')\n")


class AgentProcess:
    """`textback agent` in its own process, with its log captured."""

    def __init__(self, config: Path, log_path: Path, *,
                 busy_timeout: float | None = None) -> None:
        """``busy_timeout`` replaces SQLite's busy timeout (agent.store.db.BUSY_TIMEOUT)
        in this agent only, so a test can hold the database's lock just past it quickly."""
        self.config, self.log_path = config, log_path
        self.busy_timeout = busy_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.offset = 0

    def start(self, wait_for: str = "AMI connected") -> None:
        """Start it and wait for `wait_for` in its log. It dies with this process, so a
        failed test never leaves an agent texting from a stale lab."""
        self.offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        argv = ["agent", "--config", str(self.config)]
        if self.busy_timeout is None:
            command = [sys.executable, "-m", "agent.cli", *argv]
        else:
            command = [sys.executable, "-c", _WITH_BUSY_TIMEOUT, str(self.busy_timeout), *argv]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                command,
                stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent,
            )
        self.wait_log(wait_for)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[self.offset:]

    def wait_log(self, text: str, timeout: float = 20.0, after: int = 0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log()[after:]:
                return
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"agent exited ({self.proc.returncode}):\n{self.log()}")
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not in the agent's log within {timeout} s:\n"
                             f"{self.log()[-3000:]}")

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.terminate()
        try:
            return self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

