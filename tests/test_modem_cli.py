"""`textback send-test --transport gsm` and `textback messages` against the emulated modem."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from agent.cli import main
from agent.lab.modem_emulator import ModemEmulator
from agent.store.db import make_engine, migrate


def write_config(tmp: Path) -> Path:
    db = tmp / "textback.db"
    migrate(make_engine(f"sqlite:///{db}"))
    path = tmp / "textback.toml"
    path.write_text(f"""
[ami]
secret = "unused"
[database]
url = "sqlite:///{db}"
[sms]
transports = ["gsm"]
[sms.gsm]
port = "{tmp}/by-id/usb-*-if00-port0"
""")
    return path


def test_send_test_through_the_modem_then_list_it(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    with ModemEmulator(tmp_path / "by-id" / "usb-Quectel_EC25-if00-port0") as modem:
        sent = CliRunner().invoke(main, ["send-test", "--config", str(config), "--to",
                                         "+12125550143", "--text", "Test from textback 👋",
                                         "--transport", "gsm"])
        assert sent.exit_code == 0, sent.output
        assert "message 1: sent via gsm (TP-MR 1)" in sent.output
        assert [s.destination for s in modem.sent] == ["+12125550143"]
    listed = CliRunner().invoke(main, ["messages", "--config", str(config), "--json"])
    assert listed.exit_code == 0, listed.output
    [row] = json.loads(listed.output)
    assert (row["direction"], row["number"], row["body"], row["transport"], row["parts"]) == (
        "out", "+12125550143", "Test from textback 👋", "gsm", 1)


def test_send_test_without_a_modem_says_what_to_do(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    result = CliRunner().invoke(main, ["send-test", "--config", str(config), "--to",
                                       "+12125550143", "--text", "hi", "--transport", "gsm"],
                                catch_exceptions=False)
    assert result.exit_code == 1
    assert "no modem at" in result.output and "textback doctor" in result.output


def test_doctor_reports_the_modem(tmp_path: Path) -> None:
    from agent import config as configuration
    from agent.transports.modem.checks import modem_checks

    cfg = configuration.load(write_config(tmp_path))
    missing = modem_checks(cfg)
    assert missing[0].ok is False and "/dev/serial/by-id" in missing[0].fix
    with ModemEmulator(tmp_path / "by-id" / "usb-SIMCOM_SIM7600-if00-port0", csq=25):
        checks = {c.what: c.ok for c in modem_checks(cfg)}
    assert checks["signal: -63 dBm"] is True
    assert checks["network registration: home (Emulated Telecom)"] is True
    assert checks["SMS storage SM: 0/30 used"] is True
    assert all(ok for ok in checks.values()), checks
