"""`make demo` runs `textback demo`: a person must see the text that left, and the rows —
from the checkout, and from a wheel installed anywhere."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import pytest

from agent.lab import demo, phones

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.lab
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
    assert "[queued → claimed → sending → submitted]" in out
    assert "ms after the caller's leg hung up" in out
    # …and a conversation: the customer asks a price, the agent answers it
    assert "replies by SMS: 'Hi, how much for a new water heater?'" in out
    assert "automatic answer (a price question) to +12125550100" in out
    assert "estimates are free" in out
    # …and where to look at it all, with a login made for the demo
    assert "Admin UI: http://127.0.0.1:" in out and "(user demo, password " in out


def test_demo_without_sipp_says_so_in_one_sentence(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    real_which = shutil.which
    monkeypatch.setattr(phones.shutil, "which",
                        lambda name, *a, **k: None if name == "sipp" else real_which(name))
    assert demo.run_demo(once=True) == 1
    out, err = capsys.readouterr()
    assert out == ""  # nothing was started
    assert err == ("textback demo: sipp not found; install it with: "
                   "sudo apt-get install sip-tester\n")


def _run(argv: list[str], **kwargs: Any) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)
    assert done.returncode == 0, f"{argv}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.lab
def test_demo_from_a_wheel_installed_outside_the_checkout(tmp_path: Path) -> None:
    """The wheel carries the lab (templates, scenarios, fetch script) and the shipped
    dialplan; installed in a venv of its own, `textback demo` run from elsewhere texts
    the missed call back."""
    # build from a copy, so the checkout gets no build/ or egg-info of this test's own
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    for name in ("agent", "web", "asterisk"):
        shutil.copytree(REPO / name, src / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist),
          str(src)], timeout=180)
    (wheel,) = dist.glob("textback-*.whl")

    # a fresh venv: the wheel itself, the dependencies seen through a .pth file (no
    # download); the checkout's own editable install is not (its hook is not run)
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q",
          "--no-deps", "--no-index", str(wheel)], timeout=120)
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_path("
                      "'purelib'))"]).strip())
    (site / "textback_test_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["TEXTBACK_DEMO_PORT_BASE"] = os.environ.get("TEXTBACK_TEST_WHEEL_DEMO_PORT_BASE",
                                                    "31000")
    where = _run([str(python), "-c", "import agent, agent.lab.files as f; "
                  "print(agent.__file__); print(f.shipped_asterisk_file())"],
                 cwd=elsewhere, env=env).splitlines()
    assert Path(where[0]).is_relative_to(site), where  # the wheel's agent, not the checkout's
    assert where[1] == str(venv / "share/textback/asterisk/extensions_textback.conf")

    done = subprocess.run([str(venv / "bin" / "textback"), "demo", "--once"], cwd=elsewhere,
                          env=env, capture_output=True, text=True, timeout=90,
                          stdin=subprocess.DEVNULL)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "Traceback" not in out + done.stderr
    assert "SMS at the carrier's side of the trunk, to +12125550100" in out
    assert "thanks for calling Rapid Rooter Plumbing" in out
    assert "missed=True" in out and "decision=send" in out
    assert "[queued → claimed → sending → submitted]" in out
