"""Fetching the lab Asterisk: Debian's packages unpacked once into a cache outside the
repository (``fetch-asterisk``), found again instantly afterwards."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

from agent.lab.errors import LabError
from agent.lab.files import FETCH_SCRIPT


def find_asterisk(*, env: Mapping[str, str] | None = None) -> Path:
    """Locate the unpacked Asterisk tree.

    ``TEXTBACK_LAB_ASTERISK`` wins (CI can point at a prepared tree); otherwise
    ``agent/lab/fetch-asterisk`` is run, which is instant when the cache is warm and
    downloads Debian's packages once otherwise.  Its last stdout line is the tree.
    """
    env = os.environ if env is None else env
    override = env.get("TEXTBACK_LAB_ASTERISK")
    if override:
        fs = Path(override)
    else:
        if not FETCH_SCRIPT.exists():
            raise LabError(f"{FETCH_SCRIPT} is missing")
        # through bash: an installed copy need not have kept its executable bit
        proc = subprocess.run(
            ["bash", str(FETCH_SCRIPT)], capture_output=True, text=True, timeout=900,
            check=False,
        )
        if proc.returncode != 0:
            raise LabError(
                f"{FETCH_SCRIPT.name} failed (exit {proc.returncode}):\n{proc.stderr.strip()}"
            )
        lines = proc.stdout.strip().splitlines()
        if not lines:
            raise LabError(f"{FETCH_SCRIPT.name} printed no path")
        fs = Path(lines[-1])
    if not (fs / "usr/sbin/asterisk").exists():
        raise LabError(f"{fs} is not an unpacked Asterisk tree (no usr/sbin/asterisk)")
    return fs


def asterisk_argv(fs: Path, config: Path, *args: str) -> list[str]:
    """The command line that runs the unpacked Asterisk with ``config``: through sid's
    own dynamic loader and libraries, since the host's libc is older."""
    libs = f"{fs}/usr/lib/x86_64-linux-gnu:{fs}/usr/lib/x86_64-linux-gnu/pulseaudio"
    return [
        str(fs / "usr/lib64/ld-linux-x86-64.so.2"),
        "--library-path",
        libs,
        str(fs / "usr/sbin/asterisk"),
        "-C",
        str(config),
        *args,
    ]
