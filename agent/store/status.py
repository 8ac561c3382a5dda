"""The agent's word on its own state when the database cannot take it.

While the database is locked or away the agent keeps finished calls in memory;
it says so in a small JSON file beside the SQLite database, which the web UI's
/healthz reads (the web UI can usually still read a locked SQLite database, but
the agent cannot write its state into it). With PostgreSQL there is no such file:
the agent's log says it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

SUFFIX = ".agent.json"


def path_for(url: str) -> Path | None:
    """The status file of the database at `url`; None when it is not a SQLite file."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(str(parsed.database) + SUFFIX)


def write(path: Path, state: dict[str, Any]) -> None:
    """Replace the file at once (a reader never sees half of it); not world-readable."""
    temporary = path.with_name(path.name + ".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    with os.fdopen(descriptor, "w") as out:
        json.dump(state, out)
    os.replace(temporary, path)


def read(path: Path) -> dict[str, Any] | None:
    """The last state the agent wrote, or None (no file, or not one the agent wrote)."""
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None
