"""The systemd units as shipped: systemd's own exposure score, and the serial ports the
agent may open (a USB modem, or a Raspberry Pi HAT on /dev/serial0)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

UNITS = Path(__file__).parent.parent / "systemd"


@pytest.mark.parametrize("unit", ["textback-agent.service", "textback-web.service"])
def test_units_score_at_most_1_5_in_systemd_analyze_security(unit: str) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    done = subprocess.run([analyze, "security", "--offline=true", "--no-pager",
                           str(UNITS / unit)], capture_output=True, text=True, timeout=60)
    found = re.search(r"Overall exposure level for \S+: ([\d.]+)", done.stdout)
    if found is None:
        pytest.skip(f"this systemd-analyze cannot score a unit offline: {done.stderr.strip()}")
    assert float(found.group(1)) <= 1.5, done.stdout


def test_agent_may_open_usb_and_raspberry_pi_serial_ports() -> None:
    text = (UNITS / "textback-agent.service").read_text()
    allowed = set(re.findall(r"^DeviceAllow=(\S+) rw$", text, re.MULTILINE))
    assert allowed == {"char-ttyUSB", "char-ttyACM", "char-ttyAMA", "char-ttyS"}
    assert "DevicePolicy=closed" in text and "SupplementaryGroups=dialout" in text
