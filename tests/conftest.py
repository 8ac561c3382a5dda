"""Shared fixtures: a migrated SQLite database per test (real SQLite, real migrations)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from agent.db import make_engine, migrate, sessions

FIXTURES = Path(__file__).parent / "fixtures"

# CI must be reproducible: there, hypothesis replays the same examples every run
# (`derandomize`); on a developer's machine it keeps exploring new ones. No deadline:
# a loaded 2-core machine must not turn slowness into failures.
settings.register_profile("ci", derandomize=True, deadline=None)
settings.register_profile("dev", deadline=None)
settings.register_profile("thorough", deadline=None, max_examples=3000)
_default_profile = "ci" if os.environ.get("CI") else "dev"
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or _default_profile)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'textback.db'}")
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    with sessions(engine)() as session:
        yield session
