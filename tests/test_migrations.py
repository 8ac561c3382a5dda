"""Upgrades migrate the database: the migrations must build exactly the models' schema."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine

from agent.store.db import current_revision, head_revision, make_engine, migrate
from agent.store.models import Base

DATABASES = ("sqlite", "postgresql")  # the scale-out path must behave the same


def test_migrations_build_the_models_schema(engine: Engine) -> None:
    assert current_revision(engine) == head_revision()
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []


def test_the_schema_check_reads_the_same_revisions_as_alembic(engine: Engine) -> None:
    # the agent and the web UI read the migration files without Alembic (memory on a Pi)
    from alembic.script import ScriptDirectory

    from agent.store import db

    scripts = ScriptDirectory.from_config(db._alembic_config(engine))
    assert db.head_revision() == scripts.get_current_head()
    assert db.known_revisions() == {s.revision for s in scripts.walk_revisions()}
    assert db.current_revision(engine) == db.head_revision()  # migrated by the fixture


def test_the_agent_does_not_load_alembic_to_check_the_schema(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'textback.db'}"
    migrated = make_engine(url)
    migrate(migrated)
    migrated.dispose()
    probe = ("import sys; from agent.store.db import make_engine, check_schema; "
             f"check_schema(make_engine({url!r})); "
             "print(sorted({m.split('.')[0] for m in sys.modules} & {'alembic', 'mako'}))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "[]"
