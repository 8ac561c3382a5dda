"""`textback backup` while the agent runs and `textback restore` with it stopped, on
real SQLite (WAL mode, as the agent runs it) and real PostgreSQL (pg_dump)."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import sqlite3
import stat
import subprocess
from pathlib import Path

import pytest
from agent_process import agent_config, running
from click.testing import CliRunner, Result
from sqlalchemy import Engine

from agent.cli import main
from agent.ops import backup as backups

DATABASES = ("sqlite", "postgresql")


def textback(config: Path, *args: str) -> Result:
    command, rest = args[0].split(), args[1:]
    return CliRunner().invoke(main, [*command, "--config", str(config), *rest])


def setting(config: Path, key: str) -> object:
    got = textback(config, "settings get", key)
    assert got.exit_code == 0, got.output
    return json.loads(got.output)


def backup_holds(path: Path, value: str) -> bool:
    """Whether the business name in the backup at `path` is `value`."""
    if path.suffix == ".db":
        copy = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
        try:
            assert copy.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            row = copy.execute("SELECT value FROM settings WHERE key = 'business.name'")
            found = row.fetchone()
        finally:
            copy.close()
        return found is not None and json.loads(found[0]) == value
    data = subprocess.run(["pg_restore", "--data-only", "--table=settings", "--file=-",
                           str(path)], capture_output=True, text=True, check=True).stdout
    return f'"{value}"' in data


def private(path: Path) -> bool:
    return stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.fixture
def config(engine: Engine, tmp_path: Path) -> Path:
    if engine.url.get_backend_name() != "sqlite" and not shutil.which("pg_dump"):
        pytest.skip("pg_dump is not installed (make postgres installs it)")
    return agent_config(engine, tmp_path / "textback.toml")


def test_backup_while_the_agent_runs_has_a_setting_changed_a_moment_before(
        config: Path, engine: Engine, tmp_path: Path) -> None:
    with running(config, tmp_path / "agent.log") as agent:
        changed = textback(config, "settings set", "business.name", "Changed just now")
        assert changed.exit_code == 0, changed.output
        if engine.url.get_backend_name() == "sqlite":
            # the change is still in the WAL: a plain copy of the database file lacks it
            database = Path(str(engine.url.database))
            assert database.with_name(database.name + "-wal").stat().st_size > 0
            shutil.copy(database, tmp_path / "plain.db")
            # (or not even the tables: everything since they were made is in the WAL)
            with contextlib.suppress(sqlite3.OperationalError):
                assert not backup_holds(tmp_path / "plain.db", "Changed just now")
        made = textback(config, "backup", str(tmp_path / "backups") + "/")
        assert made.exit_code == 0, made.output
        assert agent.proc.poll() is None  # the agent ran on, undisturbed
    (copy,) = (tmp_path / "backups").iterdir()
    assert backups.NAME.match(copy.name), copy.name
    assert f"backed up the database to {copy}" in made.output
    assert backup_holds(copy, "Changed just now")  # SQLite: integrity_check passes too
    assert private(copy)  # customers' data: never group- or world-readable
    assert not copy.with_name(copy.name + "-wal").exists()  # one self-contained file


def test_restore_with_the_agent_stopped_brings_a_setting_back(config: Path,
                                                              tmp_path: Path) -> None:
    textback(config, "settings set", "business.name", "Before")
    assert textback(config, "backup", str(tmp_path / "backups") + "/").exit_code == 0
    (copy,) = (tmp_path / "backups").iterdir()
    textback(config, "settings set", "business.name", "After")

    restored = textback(config, "restore", str(copy))
    assert restored.exit_code == 0, restored.output
    assert setting(config, "business.name") == "Before"
    kept = Path(restored.output.split("kept the database it replaced as ")[1].split()[0])
    assert "before-restore" in kept.name and private(kept)
    assert backup_holds(kept, "After")  # the replaced database, if the restore was a mistake


def test_restore_refuses_while_the_agent_runs(config: Path, tmp_path: Path) -> None:
    textback(config, "settings set", "business.name", "Before")
    assert textback(config, "backup", str(tmp_path / "b.bak")).exit_code == 0
    textback(config, "settings set", "business.name", "After")
    with running(config, tmp_path / "agent.log") as agent:
        refused = textback(config, "restore", str(tmp_path / "b.bak"))
        assert refused.exit_code == 1
        assert "a textback agent (host " in refused.output
        assert agent.proc is not None
        assert f", pid {agent.proc.pid}, since " in refused.output
        assert "stop it before the restore" in refused.output
        assert agent.proc.poll() is None
    assert setting(config, "business.name") == "After"
    assert [p for p in tmp_path.rglob("*before-restore*")] == []  # nothing was touched


# --- SQLite only: what a backup file is, where it goes, and what restore refuses

@pytest.fixture
def sqlite_config(tmp_path: Path) -> Path:
    path = tmp_path / "textback.toml"
    path.write_text(f'[ami]\nsecret = "x"\n[database]\nurl = "sqlite:///{tmp_path}/t.db"\n')
    assert textback(path, "migrate").exit_code == 0
    return path


def test_backup_to_a_file_replaces_it_privately(sqlite_config: Path, tmp_path: Path) -> None:
    out = tmp_path / "copies" / "nightly.db"
    for name in ("First", "Second"):
        textback(sqlite_config, "settings set", "business.name", name)
        made = textback(sqlite_config, "backup", str(out))
        assert made.exit_code == 0, made.output
    assert backup_holds(out, "Second") and private(out)
    assert sorted(p.name for p in out.parent.iterdir()) == ["nightly.db"]  # no leftovers


def test_keep_prunes_the_oldest_backups_of_the_directory(sqlite_config: Path,
                                                         tmp_path: Path) -> None:
    folder = tmp_path / "backups"
    folder.mkdir()
    old = ["textback-20200101-000000.db", "textback-20200102-000000.db",
           "textback-20200102-000000-2.db"]
    for name in [*old, "notes.txt", "textback.db"]:
        (folder / name).write_text("")
    made = textback(sqlite_config, "backup", "--keep", "2", str(folder))
    assert made.exit_code == 0, made.output
    left = sorted(p.name for p in folder.iterdir())
    assert len(left) == 4 and "textback-20200102-000000-2.db" in left  # newest old one
    assert {"notes.txt", "textback.db"} <= set(left)  # not backups: never touched
    assert made.output.count("removed the older backup") == 2
    # a second backup in the same second gets its own name, and the newest stay
    again = textback(sqlite_config, "backup", "--keep", "2", str(folder))
    assert again.exit_code == 0, again.output
    names = [p.name for p in folder.iterdir() if backups.NAME.match(p.name)]
    assert len(names) == 2 and not any(name.startswith("textback-2020") for name in names)


def test_restore_refuses_what_is_not_a_textback_database(sqlite_config: Path,
                                                         tmp_path: Path) -> None:
    textback(sqlite_config, "settings set", "business.name", "Kept")
    text = tmp_path / "notes.db"
    text.write_text("not a database\n" * 100)
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    future = tmp_path / "future.db"
    assert textback(sqlite_config, "backup", str(future)).exit_code == 0
    with sqlite3.connect(future) as connection:
        connection.execute("UPDATE alembic_version SET version_num = '9999'")
    connection.close()
    for path, why in ((text, "is not a textback database"),
                      (other, "is not a textback database (no schema version)"),
                      (future, "at schema revision 9999, which this textback does not know"),
                      (tmp_path / "t.db", "is the database itself")):
        refused = textback(sqlite_config, "restore", str(path))
        assert refused.exit_code == 1 and why in refused.output, refused.output
    assert setting(sqlite_config, "business.name") == "Kept"
    assert list(tmp_path.glob("*before-restore*")) == []


def test_postgresql_without_pg_dump_says_how(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backups.shutil, "which", lambda name: None)
    with pytest.raises(backups.BackupError) as refused:
        backups.backup("postgresql+psycopg://textback:secret@db.example:5432/textback",
                       tmp_path / "out.dump")
    said = str(refused.value)
    assert "pg_dump is not on the PATH" in said and "apt-get install postgresql-client" in said
    assert "pg_dump --format=custom" in said and "secret" not in said
    assert list(tmp_path.iterdir()) == []


def test_the_nightly_timer_runs_a_hardened_backup_as_textback() -> None:
    units = Path(__file__).parent.parent / "systemd"
    service = (units / "textback-backup.service").read_text()
    assert re.search(r"^ExecStart=\S+/textback backup --keep 14 /var/lib/textback/backups$",
                     service, re.MULTILINE)
    assert "\nUser=textback\n" in service and "\nType=oneshot\n" in service
    timer = (units / "textback-backup.timer").read_text()
    assert "\nOnCalendar=" in timer and "\nPersistent=true\n" in timer
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    done = subprocess.run([analyze, "security", "--offline=true", "--no-pager",
                           str(units / "textback-backup.service")],
                          capture_output=True, text=True, timeout=60)
    found = re.search(r"Overall exposure level for \S+: ([\d.]+)", done.stdout)
    if found is None:
        pytest.skip(f"this systemd-analyze cannot score a unit offline: {done.stderr.strip()}")
    assert float(found.group(1)) <= 1.5, done.stdout
