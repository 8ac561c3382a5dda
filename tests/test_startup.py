"""Start-up: the routing AGI and `textback settings` start without the heavy libraries
they do not need (bench/startup measures the time; no timings are asserted here), and
the SQLite path `textback settings` takes without SQLAlchemy (agent/store/lite.py)
writes exactly what the ORM path writes."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select, text

from agent import config as configuration
from agent.cli import main
from agent.pbx import agi
from agent.rules import settings
from agent.store import db, lite
from agent.store.models import AuditEntry, Setting

HEAVY = ("sqlalchemy", "alembic", "flask", "werkzeug", "waitress", "panoramisk")


def modules_after(code: str) -> set[str]:
    """The top-level packages (and agent modules) a fresh interpreter holds after `code`."""
    probe = (f"import sys, json\n{code}\n"
             "print(json.dumps(sorted(m for m in sys.modules if '.' not in m or "
             "m.startswith('agent.'))), file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stderr.strip().splitlines()[-1]))


def test_the_agi_imports_no_framework_and_not_the_config_module() -> None:
    loaded = modules_after("import agent.pbx.agi")
    assert not loaded & {*HEAVY, "click", "phonenumbers", "asterisk", "agent.config"}


@pytest.mark.parametrize("command", [["get", "business.name"], ["list"],
                                     ["set", "business.name", "Acme"]])
def test_textback_settings_on_sqlite_imports_no_orm_or_web(config: Path,
                                                           command: list[str]) -> None:
    args = ["settings", command[0], "--config", str(config), *command[1:]]
    loaded = modules_after(f"from agent.cli import main\nmain({args!r}, standalone_mode=False)")
    assert not loaded & set(HEAVY)
    # nor phonenumbers while no phone number is read or checked (a region is a known one)
    assert "phonenumbers" not in loaded


def test_the_regions_taken_without_phonenumbers_are_its_own(tmp_path: Path) -> None:
    import phonenumbers

    assert configuration.KNOWN_REGIONS <= phonenumbers.SUPPORTED_REGIONS
    with pytest.raises(configuration.ConfigError, match="'QQ' is not a region code"):
        configuration.parse({"ami": {"secret": "x"}, "pbx": {"default_region": "qq"}},
                            tmp_path / "textback.toml")


def test_the_agi_defaults_are_the_config_defaults(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    assert agi.DEFAULT_CONFIG == configuration.DEFAULT_PATH
    assert configuration.DatabaseConfig.url == agi.DEFAULT_DATABASE_URL
    monkeypatch.delenv("TEXTBACK_CONFIG", raising=False)
    assert agi.configured_path() == configuration.resolve_path(None)
    monkeypatch.setenv("TEXTBACK_CONFIG", str(tmp_path / "x.toml"))
    assert agi.configured_path() == configuration.resolve_path(None) == tmp_path / "x.toml"


def test_agi_arguments_are_quoted_for_asterisk() -> None:
    assert agi._quote('say "hi" \\ now\nplease') == '"say \\"hi\\" \\\\ now please"'
    assert json.loads(agi._quote('a "b" \\c')) == 'a "b" \\c'


def test_the_head_revision_is_read_from_the_migration_files() -> None:
    assert lite.head_revision() == db.head_revision()


def test_the_sqlite_path_writes_what_the_orm_writes(config: Path) -> None:
    engine = db.make_engine(configuration.load(config).database.url)
    path = lite.sqlite_file(str(engine.url))
    assert path is not None
    now = dt.datetime(2026, 12, 7, 3, 4, 5, 678901, tzinfo=dt.UTC)
    assert settings.change_in_file(path, "textback.cooldown", "12h", now,
                                   actor="cli:root") == ("12h", True)
    assert settings.change_in_file(path, "hours.holidays", ["2026-12-25"], now,
                                   actor="cli:root") == (["2026-12-25"], True)
    assert settings.change_in_file(path, "routing.did.+15550000002.ring_group",
                                   ["PJSIP/201"], now, actor="cli:root")[1] is True
    # the value in force again: nothing written, nothing audited
    assert settings.change_in_file(path, "textback.cooldown", "12h", now,
                                   actor="cli:root") == ("12h", False)
    with db.sessions(engine)() as session:
        row = session.get(Setting, "hours.holidays")
        assert row is not None and (row.value, row.updated_at) == (["2026-12-25"], now)
        assert settings.get(session, "textback.cooldown") == "12h"
        entries = session.scalars(select(AuditEntry).order_by(AuditEntry.id)).all()
        assert [(e.at, e.actor, e.action, e.target, e.ip, e.details) for e in entries] == [
            (now, "cli:root", "setting_changed", "textback.cooldown", None,
             {"from": "24h", "to": "12h"}),
            (now, "cli:root", "setting_changed", "hours.holidays", None,
             {"from": [], "to": ["2026-12-25"]}),
            (now, "cli:root", "setting_changed", "routing.did.+15550000002.ring_group", None,
             {"from": [], "to": ["PJSIP/201"]}),
        ]
        # read back by both paths alike, per-DID keys included
        assert settings.catalogue(session) == settings.catalogue_in_file(path)
    # back to the default: the row goes ("follow the default"), as with the ORM
    assert settings.change_in_file(path, "textback.cooldown", "24h", now,
                                   actor="cli:root") == ("24h", True)
    with db.sessions(engine)() as session:
        assert session.get(Setting, "textback.cooldown") is None
    assert settings.get_in_file(path, "textback.cooldown") == "24h"
    engine.dispose()


def test_settings_on_an_unusable_database_say_the_fix(config: Path, tmp_path: Path) -> None:
    def get(cfg: Path) -> str:
        result = CliRunner().invoke(main, ["settings", "get", "--config", str(cfg),
                                           "business.name"])
        assert result.exit_code == 1
        return result.output.strip()

    database = tmp_path / "var" / "textback.db"
    url = f"sqlite:///{database}"
    engine = db.make_engine(url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '0001'"))
    engine.dispose()
    assert get(config) == ("Error: the database is at revision 0001, this textback needs "
                           f"{db.head_revision()}; run `textback migrate`")
    other = config.with_name("other.toml")
    other.write_text(config.read_text().replace(str(database), str(tmp_path / "none.db")))
    assert get(other) == (f"Error: the database sqlite:///{tmp_path / 'none.db'} has no "
                          "textback schema; run `textback migrate` (or `textback init`)")
    assert not (tmp_path / "none.db").exists()  # reading never creates an empty database
