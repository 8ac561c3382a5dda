"""Rendering the lab's configuration templates (``${LAB_*}`` placeholders) into a run
directory."""

from __future__ import annotations

import shutil
import string
import sys
from collections.abc import Mapping
from pathlib import Path

from agent.lab.errors import LabError
from agent.lab.files import CONF_TEMPLATE_DIR, shipped_asterisk_file


class _LabTemplate(string.Template):
    """``string.Template`` that only touches ``${LAB_NAME}`` placeholders.

    The dialplan and SIPp files are full of ``${EXTEN}`` and ``[keyword]`` syntax of their
    own; restricting substitution to the ``LAB_`` prefix leaves them alone while a missing
    lab value still raises ``KeyError`` instead of silently producing a broken config.
    """

    pattern = (
        r"\$(?:(?P<escaped>(?!))|(?P<named>(?!))"
        r"|\{(?P<braced>LAB_[A-Z0-9_]+)\}|(?P<invalid>(?!)))"
    )


def render_template(text: str, values: Mapping[str, object]) -> str:
    """Substitute ``${LAB_*}`` placeholders; raise :class:`LabError` for a missing one."""
    try:
        return _LabTemplate(text).substitute({k: str(v) for k, v in values.items()})
    except KeyError as exc:
        raise LabError(f"template placeholder {exc} has no value") from None


def render_config(etc_dir: Path, values: Mapping[str, object]) -> None:
    """Write every configuration template, rendered, into ``etc_dir`` (manager.conf
    0600: it holds the AMI secrets), and textback's shipped dialplan as shipped."""
    for template in sorted(CONF_TEMPLATE_DIR.glob("*.conf")):
        text = render_template(template.read_text(), values)
        target = etc_dir / template.name
        target.write_text(text)
        if template.name == "manager.conf":
            target.chmod(0o600)
    dialplan = shipped_asterisk_file()
    shutil.copyfile(dialplan, etc_dir / dialplan.name)


def routing_agi(run_dir: Path) -> Path:
    """The `textback-route` AGI the dialplan runs: the installed console script, or
    (before `pip install`) a wrapper with the same entry point in the run dir."""
    installed = Path(sys.executable).parent / "textback-route"
    if installed.exists():
        return installed
    wrapper = run_dir / "agi-bin" / "textback-route"
    wrapper.parent.mkdir(parents=True, exist_ok=True)
    wrapper.write_text(f"#!{sys.executable}\nimport sys\nfrom agent.pbx.agi import main\n"
                       "sys.exit(main())\n")
    wrapper.chmod(0o755)
    return wrapper
