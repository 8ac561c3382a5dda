"""Where the lab's files are: its configuration templates, SIPp scenarios and fetch
script, and textback's shipped Asterisk files that the lab runs exactly as shipped."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
LAB_DIR = REPO_ROOT / "asterisk" / "lab"
CONF_TEMPLATE_DIR = LAB_DIR / "conf"
SIPP_TEMPLATE_DIR = LAB_DIR / "sipp"
FETCH_SCRIPT = LAB_DIR / "fetch-asterisk"
# textback's shipped dialplan, included by the lab's extensions.conf exactly as shipped
SHIPPED_DIALPLAN = REPO_ROOT / "asterisk" / "extensions_textback.conf"
