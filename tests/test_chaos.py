"""The chaos suite, reduced: each scenario of `make chaos` (bench/chaos) with a smaller
burst and, where the point survives, a shorter fault. Each runs on a fresh lab Asterisk
with `textback agent` as its own process, and must end with every caller Asterisk saw
texted exactly once.

The scenarios are agent/lab/chaos.py; a failure prints the counts, the callers lost or
texted twice and the agent's log file.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.lab import chaos

pytestmark = pytest.mark.lab

PORT_BASE = int(os.environ.get("TEXTBACK_TEST_CHAOS_PORT_BASE", "33000"))
CALLS, RATE = 25, 5.0  # a 5 s burst: the fault lands in its middle


def check(outcome: chaos.Outcome) -> None:
    print(outcome.report())
    assert outcome.ok, outcome.report()
    assert outcome.calls >= outcome.placed * 0.8, outcome.report()  # the burst did reach Asterisk


def test_agent_killed_mid_burst_and_restarted(tmp_path: Path) -> None:
    check(chaos.kill_agent(tmp_path, PORT_BASE, CALLS, RATE))


def test_asterisk_restarted_mid_burst(tmp_path: Path) -> None:
    check(chaos.restart_asterisk(tmp_path, PORT_BASE, CALLS, RATE, down=3.0))


def test_asterisk_frozen_mid_burst(tmp_path: Path) -> None:
    # the MessageSend a frozen Asterisk read is carried out when it resumes: the retry
    # on the new link must not send it a second time
    # frozen 5 s past a 2 + 1 s ping watchdog (the full run: 20 s past 10 + 5 s), while
    # texts drain behind a 30/min limit (30 at once, then one every 2 s), the moment one
    # of them is on its way
    check(chaos.freeze_asterisk(tmp_path, PORT_BASE, 36, 17.0, 5.0, ping=(2, 1),
                                per_minute=30, after_texts=31, while_sending=True))


def test_database_locked_past_the_busy_timeout(tmp_path: Path) -> None:
    # the agent's busy timeout is 2 s here (15 s in production): a 5 s lock is past it
    # twice, as a 45 s lock is past 15 s three times; it begins while a text is on its
    # way, so the dispatcher's own writes meet it too
    check(chaos.lock_database(tmp_path, PORT_BASE, 40, 17.0, 5.0, busy_timeout=2.0))


def test_sigterm_with_a_rate_limited_backlog(tmp_path: Path) -> None:
    # 12/min: 12 texts at once, then one every 5 s; SIGTERM after the 13th
    check(chaos.sigterm_backlog(tmp_path, PORT_BASE, 16, RATE, 12))


def test_hostile_caller_ids_and_texts(tmp_path: Path) -> None:
    outcome = chaos.hostile_input(tmp_path, PORT_BASE, 20, RATE)
    check(outcome)
    assert outcome.calls == 20 + len(chaos.HOSTILE_NAMES), outcome.report()
