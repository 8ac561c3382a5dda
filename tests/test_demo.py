"""`make demo` runs `textback demo`: a person must see the text that left, and the rows."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.lab


def test_demo_shows_the_text_and_the_rows() -> None:
    env = dict(os.environ, TEXTBACK_DEMO_PORT_BASE=os.environ.get(
        "TEXTBACK_TEST_DEMO_PORT_BASE", "26500"))
    done = subprocess.run([sys.executable, "-m", "agent.cli", "demo", "--once"],
                          capture_output=True, text=True, timeout=120, env=env)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "SMS at the carrier's side of the trunk, to +12125550100" in out
    assert "Rapid Rooter Plumbing" in out  # the business name set by the demo, in the text
    assert "missed=True" in out and "reason=noanswer" in out and "decision=send" in out
    assert "[queued → sending → submitted]" in out
    assert "ms after the caller's leg hung up" in out
    # …and a conversation: the customer asks a price, the agent answers it
    assert "replies by SMS: 'Hi, how much for a new water heater?'" in out
    assert "automatic answer (a price question) to +12125550100" in out
    assert "estimates are free" in out
    # …and where to look at it all, with a login made for the demo
    assert "Admin UI: http://127.0.0.1:" in out and "(user demo, password " in out
