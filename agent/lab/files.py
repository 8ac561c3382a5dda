"""Where the lab's files are: its configuration templates, SIPp scenarios and fetch
script (package data, beside this module), and textback's shipped Asterisk files, which
the lab runs exactly as shipped.

The shipped files are one copy in the repository's ``asterisk/`` folder; a wheel installs
them as data files under ``<prefix>/share/textback/asterisk`` (pyproject's
``[tool.setuptools.data-files]``), which is where a PBX admin finds them too.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import sys
import sysconfig
from pathlib import Path

from agent.lab.errors import LabError

LAB_DIR = Path(__file__).resolve().parent
CONF_TEMPLATE_DIR = LAB_DIR / "conf"
SIPP_TEMPLATE_DIR = LAB_DIR / "sipp"
FETCH_SCRIPT = LAB_DIR / "fetch-asterisk"

DIST_NAME = "textback"
# where a wheel installs asterisk/*.conf, under the install's data directory
INSTALLED_SHIPPED_DIR = Path("share", "textback", "asterisk")
# textback's shipped dialplan, included by the lab's extensions.conf exactly as shipped
DIALPLAN = "extensions_textback.conf"


def _checkout_dir() -> Path | None:
    """``asterisk/`` of the source checkout this module runs from, if it does."""
    root = LAB_DIR.parents[1]
    if (root / "pyproject.toml").is_file() and (root / "asterisk").is_dir():
        return root / "asterisk"
    return None


def _installed_dirs() -> list[Path]:
    """Where an installed wheel put its data files: the one its RECORD names first, then
    the data directories of this interpreter's install schemes."""
    dirs: list[Path] = []
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        for entry in importlib.metadata.distribution(DIST_NAME).files or ():
            if entry.match(f"share/textback/asterisk/{DIALPLAN}"):
                dirs.append(Path(entry.locate()).resolve().parent)
    data = [sysconfig.get_path("data"), sys.prefix]
    with contextlib.suppress(KeyError):
        data.append(sysconfig.get_path("data", sysconfig.get_preferred_scheme("user")))
    dirs += [Path(d) / INSTALLED_SHIPPED_DIR for d in data]
    return dirs


def shipped_asterisk_file(name: str = DIALPLAN) -> Path:
    """The shipped Asterisk file ``name`` (e.g. ``extensions_textback.conf``): from the
    checkout when the lab runs from one, else where the installed wheel put it."""
    checkout = _checkout_dir()
    candidates = ([checkout] if checkout else []) + _installed_dirs()
    for directory in candidates:
        if (directory / name).is_file():
            return directory / name
    looked = ", ".join(dict.fromkeys(str(d) for d in candidates))
    raise LabError(f"textback's shipped {name} was not found (looked in {looked}); "
                   "reinstall textback")
