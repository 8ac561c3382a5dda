"""Upgrades migrate the database: the migrations must build exactly the models' schema."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine

from agent.store.db import current_revision, head_revision
from agent.store.models import Base

DATABASES = ("sqlite", "postgresql")  # the scale-out path must behave the same


def test_migrations_build_the_models_schema(engine: Engine) -> None:
    assert current_revision(engine) == head_revision()
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []
