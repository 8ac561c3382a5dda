"""`textback backup` and `textback restore`: a consistent copy of the database while
the agent runs, and putting one back with the agent stopped.

SQLite: SQLite's online backup API, which reads through the WAL (a `cp` of the
database file misses whatever the WAL still holds, such as a setting changed a
moment ago); the copy is a single file (no WAL beside it) and must pass
`PRAGMA integrity_check`. PostgreSQL: pg_dump's custom format, put back by
pg_restore. Backups hold customers' numbers and texts: they are written 0600, under a
temporary name first, so a half-written copy never looks like a backup.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import URL, make_url

from agent.store import lock
from agent.store.db import head_revision, known_revisions, make_engine, migrate

# textback-20261207-031500.db (SQLite) or .dump (pg_dump); -2, -3… for a second one
# in the same second
NAME = re.compile(r"^textback-(\d{8}-\d{6})(?:-(\d+))?\.(?:db|dump)$")
MODE = 0o600


class BackupError(Exception):
    """The backup or restore did not happen; the message says why and what to do."""


@dataclass
class Backup:
    path: Path
    pruned: list[Path] = field(default_factory=list)


@dataclass
class Restored:
    revision: str  # the backup's schema revision
    now: str | None  # the database's revision after migrating it
    kept: Path | None  # the replaced database, kept


def _sqlite_path(url: URL) -> Path | None:
    if url.get_backend_name() != "sqlite":
        return None
    if not url.database or url.database == ":memory:":
        raise BackupError("the database is in memory: there is nothing to back up")
    return Path(url.database)


def _stamp(now: dt.datetime) -> str:
    return now.astimezone(dt.UTC).strftime("%Y%m%d-%H%M%S")


def _new_file(directory: Path, stem: str, suffix: str) -> Path:
    """A new, empty 0600 file (-2, -3… when the name is taken), never one that exists."""
    for n in range(1, 1000):
        path = directory / f"{stem}{'' if n == 1 else f'-{n}'}{suffix}"
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, MODE))
            return path
        except FileExistsError:
            continue
        except OSError as exc:
            raise BackupError(f"cannot write in {directory}: {exc.strerror}") from None
    raise BackupError(f"too many backups named {stem} in {directory}")


def _publish(partial: Path, directory: Path, stem: str, suffix: str) -> Path:
    """Give the finished copy its name with the time, never replacing a backup made
    in the same second (that one gets -2)."""
    for n in range(1, 1000):
        final = directory / f"{stem}{'' if n == 1 else f'-{n}'}{suffix}"
        try:
            os.link(partial, final)  # fails, rather than replaces, if the name is taken
        except FileExistsError:
            continue
        except OSError:  # no hard links (a FAT-formatted stick): check, then rename
            if final.exists():
                continue
            os.replace(partial, final)
            return final
        partial.unlink()
        return final
    raise BackupError(f"too many backups named {stem} in {directory}")


def backup(url: str, out: str | Path, *, keep: int | None = None,
           now: dt.datetime | None = None) -> Backup:
    """Copy the database to `out`: a file, or a directory (one that exists, a path
    ending in /, or any path with `keep`) where it gets a name with the time (UTC).
    With `keep`, only the newest `keep` backups in that directory stay."""
    now = now or dt.datetime.now(dt.UTC)
    parsed = make_url(url)
    database = _sqlite_path(parsed)
    suffix = ".db" if database is not None else ".dump"
    if keep is not None and keep < 1:
        raise BackupError("--keep must be 1 or more")
    to_directory = os.fspath(out).endswith(os.sep) or keep is not None
    out = Path(out)
    to_directory = to_directory or out.is_dir()
    directory = out if to_directory else out.parent
    try:
        directory.mkdir(mode=0o750, parents=True, exist_ok=True)
    except OSError as exc:
        raise BackupError(f"cannot create the directory {directory}: {exc.strerror}") from None
    stem = f"textback-{_stamp(now)}"
    partial = _new_file(directory, f".{stem if to_directory else out.name}.partial", "")
    try:
        if database is not None:
            _sqlite_backup(database, partial)
        else:
            _pg_dump(parsed, partial)
        if to_directory:
            final = _publish(partial, directory, stem, suffix)
        else:
            os.replace(partial, out)
            final = out
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    made = Backup(final)
    if keep is not None:
        made.pruned = prune(out, keep)
    return made


def prune(directory: Path, keep: int) -> list[Path]:
    """Remove all but the newest `keep` textback-<time> backups in `directory`."""
    found = []
    for path in directory.iterdir():
        match = NAME.match(path.name)
        if match and path.is_file():
            found.append(((match.group(1), int(match.group(2) or 1)), path))
    found.sort(reverse=True)
    removed = []
    for _, path in found[keep:]:
        path.unlink()
        removed.append(path)
    return removed


# -- SQLite ---------------------------------------------------------------------------

def _connect(path: Path, *, read_only: bool = False) -> sqlite3.Connection:
    if read_only:
        return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=15)
    return sqlite3.connect(path, timeout=15)


def _sqlite_copy(source: Path, destination: Path, *, read_only: bool = False) -> None:
    """Source into destination with the online backup API: one consistent snapshot,
    the WAL's pages included, while others keep reading and writing the source."""
    src = _connect(source, read_only=read_only)
    try:
        dst = sqlite3.connect(destination, timeout=15)
        try:
            src.backup(dst)
        finally:
            dst.close()
    finally:
        src.close()


def _sqlite_backup(database: Path, partial: Path) -> None:
    if not database.is_file():
        raise BackupError(f"there is no database at {database}")
    try:
        _sqlite_copy(database, partial)
        copy = sqlite3.connect(partial)
        try:
            copy.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
            verdict = copy.execute("PRAGMA integrity_check").fetchall()
        finally:
            copy.close()
    except sqlite3.Error as exc:
        raise BackupError(f"cannot copy {database}: {exc}") from None
    if verdict != [("ok",)]:
        raise BackupError(f"the copy of {database} fails PRAGMA integrity_check: "
                          f"{'; '.join(str(row[0]) for row in verdict[:5])}")
    with partial.open("rb") as handle:
        os.fsync(handle.fileno())


def sqlite_revision(path: Path) -> str:
    """The schema revision of a SQLite file that passes integrity_check, or BackupError."""
    try:
        connection = _connect(path, read_only=True)
        try:
            verdict = connection.execute("PRAGMA integrity_check").fetchall()
            if verdict != [("ok",)]:
                raise BackupError(f"{path} is damaged (PRAGMA integrity_check: "
                                  f"{'; '.join(str(row[0]) for row in verdict[:5])})")
            tables = {row[0] for row in connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "alembic_version" not in tables:
                raise BackupError(f"{path} is not a textback database (no schema version)")
            rows = connection.execute("SELECT version_num FROM alembic_version").fetchall()
        finally:
            connection.close()
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{path} is not a textback database ({exc})") from None
    if len(rows) != 1:
        raise BackupError(f"{path} is not a textback database (no schema version)")
    return str(rows[0][0])


def _check_revision(path: Path, revision: str) -> None:
    if revision not in known_revisions():
        raise BackupError(f"{path} is at schema revision {revision}, which this textback "
                          f"does not know (it is at {head_revision()}): a newer textback "
                          "made it; upgrade textback before restoring it")


def restore(url: str, file: str | Path, *, now: dt.datetime | None = None) -> Restored:
    """Replace the database with the backup `file`, with the agent stopped: refused
    while an agent holds the database; the database replaced is kept beside it (SQLite)
    or beside the backup (PostgreSQL); then migrated if the backup is older."""
    now = now or dt.datetime.now(dt.UTC)
    parsed = make_url(url)
    file = Path(file)
    database = _sqlite_path(parsed)
    if database is not None and database.exists() and file.resolve() == database.resolve():
        raise BackupError(f"{file} is the database itself: give a backup of it")
    with lock.acquire(url, "restore"):
        if database is not None:
            revision = sqlite_revision(file)
            _check_revision(file, revision)
            kept = None
            if database.is_file():
                kept = _new_file(database.parent, f"{database.stem}-before-restore-"
                                 f"{_stamp(now)}", ".db")
                try:
                    _sqlite_backup(database, kept)
                except BaseException:
                    kept.unlink(missing_ok=True)
                    raise
            try:
                # into the database itself, page by page under SQLite's locks: a web UI
                # that has it open reads the restored data next, not a deleted file
                _sqlite_copy(file, database, read_only=True)
            except sqlite3.Error as exc:
                raise BackupError(f"cannot restore {file} into {database}: {exc}") from None
        else:
            revision = _pg_revision(file)
            _check_revision(file, revision)
            kept = _new_file(file.parent, f"textback-before-restore-{_stamp(now)}", ".dump")
            try:
                _pg_dump(parsed, kept)
            except BaseException:
                kept.unlink(missing_ok=True)
                raise
            _pg_restore(parsed, file)
        engine = make_engine(url)
        try:
            current = migrate(engine)
        finally:
            engine.dispose()
    return Restored(revision=revision, now=current, kept=kept)


# -- PostgreSQL -----------------------------------------------------------------------

def _libpq(url: URL) -> tuple[str, dict[str, str]]:
    """The URL pg_dump understands, and the environment carrying the password (never
    on the command line, where ps shows it)."""
    env = dict(os.environ)
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    plain = url.set(drivername="postgresql", password=None)
    return plain.render_as_string(hide_password=False), env


def _tool(name: str, url: URL, what: str) -> str:
    found = shutil.which(name)
    if found is None:
        dsn = url.set(drivername="postgresql").render_as_string(hide_password=True)
        raise BackupError(f"{name} is not on the PATH: install PostgreSQL's client tools "
                          "(Debian: sudo apt-get install postgresql-client) and run this "
                          f"again, or {what} by hand: {name} "
                          + ("--format=custom --file=OUT" if name == "pg_dump" else
                             "--clean --if-exists --no-owner --single-transaction "
                             "--dbname=URL FILE")
                          + f" ({dsn})")
    return found


def _run(command: list[str], env: dict[str, str] | None = None) -> str:
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BackupError(f"{Path(command[0]).name} failed: "
                          f"{done.stderr.strip() or f'exit status {done.returncode}'}")
    return done.stdout


def _pg_dump(url: URL, partial: Path) -> None:
    pg_dump = _tool("pg_dump", url, "make the backup")
    dsn, env = _libpq(url)
    _run([pg_dump, "--format=custom", f"--file={partial}", f"--dbname={dsn}"], env)
    pg_restore = shutil.which("pg_restore")
    if pg_restore is not None:  # the archive reads back
        _run([pg_restore, "--list", str(partial)])


def _pg_revision(file: Path) -> str:
    pg_restore = shutil.which("pg_restore")
    if pg_restore is None:
        raise BackupError("pg_restore is not on the PATH: install PostgreSQL's client "
                          "tools (Debian: sudo apt-get install postgresql-client)")
    try:
        listing = _run([pg_restore, "--list", str(file)])
    except BackupError as exc:
        raise BackupError(f"{file} is not a pg_dump archive ({exc})") from None
    if not re.search(r"TABLE DATA \S+ alembic_version ", listing):
        raise BackupError(f"{file} is not a textback database (no schema version)")
    data = _run([pg_restore, "--data-only", "--table=alembic_version", "--file=-",
                 str(file)])
    rows = re.search(r"^COPY \S*alembic_version .*? FROM stdin;\n(.*?)^\\\.$", data,
                     re.MULTILINE | re.DOTALL)
    versions = rows.group(1).split() if rows else []
    if len(versions) != 1:
        raise BackupError(f"{file} is not a textback database (no schema version)")
    return versions[0]


def _pg_restore(url: URL, file: Path) -> None:
    pg_restore = _tool("pg_restore", url, "restore it")
    dsn, env = _libpq(url)
    _run([pg_restore, "--clean", "--if-exists", "--no-owner", "--single-transaction",
          "--exit-on-error", f"--dbname={dsn}", str(file)], env)
