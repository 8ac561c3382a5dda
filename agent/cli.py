"""The `textback` command: one entry point for IT staff, every subcommand takes --config."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import click

from agent import config as configuration
from agent.config import Config, ConfigError

log = logging.getLogger("textback")

config_option = click.option(
    "--config", "config_path", type=click.Path(dir_okay=False), default=None,
    help="The TOML file (default: $TEXTBACK_CONFIG, else /etc/textback/textback.toml).",
)


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO), stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
    )
    # Alembic narrates its plugin set-up at INFO on every schema check; keep the
    # agent's log to decisions
    logging.getLogger("alembic").setLevel(max(logging.WARNING, logging.root.level))


def _load(config_path: str | None) -> Config:
    try:
        return configuration.load(config_path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _engine(cfg: Config, *, migrated: bool = True) -> Any:
    from agent.store.db import DatabaseError, check_schema, make_engine

    engine = make_engine(cfg.database.url)
    if migrated:
        try:
            check_schema(engine)
        except DatabaseError as exc:
            raise click.ClickException(str(exc)) from None
    return engine


def _sqlite_file(cfg: Config) -> Path | None:
    """The SQLite file of the config's database (None: PostgreSQL), for the commands that
    skip SQLAlchemy's start-up (agent/store/lite.py)."""
    from agent.store.lite import sqlite_file

    return sqlite_file(cfg.database.url)


def _lite(database: Path, work: Any) -> Any:
    """`work()` on the SQLite file; an unusable database is the one line that says why."""
    import sqlite3

    from agent.store.lite import Unusable

    try:
        return work()
    except Unusable as exc:
        raise click.ClickException(str(exc)) from None
    except sqlite3.Error as exc:
        raise click.ClickException(f"the database {database}: {exc}") from None


@click.group()
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
def main(log_level: str) -> None:
    """textback: missed-call text-back for Asterisk."""
    _setup_logging(log_level)


@main.command()
@config_option
@click.option("--database-url", default=None,
              help="Default: sqlite:////var/lib/textback/textback.db")
@click.option("--ami-port", default=5038, show_default=True, type=int)
@click.option("--admin-user", default=None, help="Create this first web UI admin.")
@click.option("--admin-password-file", type=click.Path(dir_okay=False), default=None,
              help="Read the admin's password from this file ('-': standard input).")
def init(config_path: str | None, database_url: str | None, ami_port: int,
         admin_user: str | None, admin_password_file: str | None) -> None:
    """Create the config file (if absent), the AMI and web secrets, the database, and
    the first web UI admin (asked for on a terminal; there is never a default one)."""
    import secrets

    path = configuration.resolve_path(config_path)
    if path.exists():
        click.echo(f"{path} exists; leaving it as it is")
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        secret_file = path.with_name("ami.secret")
        if not secret_file.exists():
            fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(24) + "\n")
        url = database_url or configuration.DatabaseConfig.url
        path.write_text(configuration.render_default(
            ami_secret_file=str(secret_file), database_url=url, ami_port=ami_port))
        click.echo(f"wrote {path} and {secret_file} (mode 0600)")
        click.echo("Add the AMI user to Asterisk's manager.conf with that secret; see "
                   "asterisk/manager_textback.conf.")
    cfg = _load(str(path))
    from agent.store.db import migrate

    revision = migrate(_engine(cfg, migrated=False))
    click.echo(f"database ready at revision {revision}")
    key_file = cfg.web_secret_key_file
    if not key_file.exists():
        key_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48) + "\n")
        click.echo(f"wrote the web UI's session key to {key_file} (mode 0600)")
    _first_admin(cfg, admin_user, admin_password_file)


def _first_admin(cfg: Config, username: str | None, password_file: str | None) -> None:
    from agent.people import accounts
    from agent.store.db import sessions

    if password_file and not username:
        raise click.UsageError("--admin-password-file needs --admin-user NAME")
    with sessions(_engine(cfg))() as session:
        if username is None:
            if accounts.has_admin(session):
                return
            if not _interactive():
                click.echo("no web UI admin yet: run `textback users add NAME --role admin "
                           "--password-file FILE`")
                return
            username = click.prompt("web UI admin username")
        password = _password(password_file, f"password for {username}")
        with session.begin():
            try:
                accounts.add_user(session, dt.datetime.now(dt.UTC), username=username,
                                  password=password, role="admin", actor="cli",
                                  region=cfg.pbx.default_region)
            except accounts.AccountError as exc:
                raise click.ClickException(str(exc)) from None
    click.echo(f"web UI admin {username} created")


def _interactive() -> bool:
    return sys.stdin.isatty()


def _password(path: str | None, prompt: str) -> str:
    """From a file (first line) or, on a terminal, a hidden prompt; never from argv,
    where `ps` and the shell history would keep it."""
    if path:
        try:
            text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise click.ClickException(f"cannot read the password file {path}: "
                                       f"{exc.strerror}") from None
        lines = text.splitlines()
        return lines[0] if lines else ""
    if not _interactive():
        raise click.UsageError("give the password with --password-file FILE (or run this on "
                               "a terminal to be asked); it is never taken on the command line")
    return str(click.prompt(prompt, hide_input=True, confirmation_prompt=True))


@main.command()
@config_option
def migrate(config_path: str | None) -> None:
    """Apply database migrations (safe to run on every upgrade)."""
    from agent.ops.access import unwritable_database

    cfg = _load(config_path)
    problem = unwritable_database(cfg.database.url)
    if problem:
        raise click.ClickException(problem)
    from agent.store.db import driver_message
    from agent.store.db import migrate as run_migrations

    try:
        revision = run_migrations(_engine(cfg, migrated=False))
    except Exception as exc:  # one line for IT staff, not Alembic's traceback
        raise click.ClickException(f"cannot migrate the database {cfg.database.url}: "
                                   f"{driver_message(exc)}") from None
    click.echo(f"database at revision {revision}")
    _count_dashboard_days(cfg)


def _count_dashboard_days(cfg: Config) -> None:
    """The dashboard's past days counted now, once, rather than by the first page read
    after an upgrade (agent.reports.rollups); a failure here leaves them to that read."""
    from agent.reports import rollups
    from agent.store.db import sessions

    try:
        with sessions(_engine(cfg))() as session:
            counted = rollups.backfill(session, dt.datetime.now(dt.UTC))
    except Exception:
        log.exception("dashboard days not counted; the dashboard counts them when read")
        click.echo("dashboard days not counted now (see the log); the dashboard will")
        return
    if counted:
        click.echo(f"dashboard: {counted} past days counted")


@main.command()
@config_option
def agent(config_path: str | None) -> None:
    """Run the agent: watch AMI, decide, text back."""
    cfg = _load(config_path)
    from agent.daemon import run
    from agent.store.db import DatabaseError

    try:
        run(cfg)
    except DatabaseError as exc:
        raise click.ClickException(str(exc)) from None


@main.command()
@click.option("--trunk-endpoint", "trunks", multiple=True,
              help="A PJSIP endpoint that means 'from outside' (repeatable; default trunk).")
@click.option("--inbound-context", "contexts", multiple=True,
              help="A dialplan context that means 'from outside' (repeatable).")
@click.option("--region", default="US", show_default=True,
              help="Region for caller numbers without a country code.")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
def classify(trunks: tuple[str, ...], contexts: tuple[str, ...], region: str,
             files: tuple[str, ...]) -> None:
    """Replay AMI transcripts; print one JSON object per finished call."""
    from agent.calls.tracker import CallTracker
    from agent.pbx.transcript import read_events
    from agent.rules import numbers

    for name in files:
        tracker = CallTracker(trunks or ("trunk",), contexts)
        finished = []
        for received, event in read_events(Path(name)):
            finished.extend(tracker.feed(event, received))
        finished.extend(tracker.expire(float("inf")))
        for call in finished:
            caller = None
            if call.caller and not numbers.is_withheld(call.caller):
                caller = numbers.to_e164(call.caller, region) or call.caller
            click.echo(json.dumps({
                "linkedid": call.linkedid, "caller": caller, "caller_name": call.caller_name,
                "did": call.did, "direction": call.direction, "missed": call.missed,
                "reason": call.reason, "voicemail_left": call.voicemail_left,
                "answered_by": call.answered_by, "ring_seconds": round(call.ring_seconds, 2),
            }, ensure_ascii=False))


@main.command()
@config_option
def web(config_path: str | None) -> None:
    """Serve the admin and front-desk web UI (waitress) on [web] host and port."""
    cfg = _load(config_path)
    _engine(cfg)  # refuse an unmigrated database with the fix, before binding a port
    import waitress

    from web import create_app

    try:
        app = create_app(cfg)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    from web import live

    log.info("web UI on http://%s:%d/", cfg.web.host, cfg.web.port)
    # each open page holds a thread for its live stream; the others serve requests
    waitress.serve(app, host=cfg.web.host, port=cfg.web.port, threads=live.threads(app),
                   ident="textback")


@main.group("users")
def users_group() -> None:
    """Web UI accounts: add, list, change passwords, disable."""


@users_group.command("add")
@config_option
@click.argument("username")
@click.option("--role", type=click.Choice(["admin", "staff"]), required=True)
@click.option("--password-file", type=click.Path(dir_okay=False), default=None,
              help="Read the password from this file ('-': standard input); else asked.")
@click.option("--phone", default=None, help="Mobile for alerts, e.g. +15551234567.")
@click.option("--extension", default=None, help="Desk phone extension, for call back.")
def users_add(config_path: str | None, username: str, role: str, password_file: str | None,
              phone: str | None, extension: str | None) -> None:
    """Add a person who can sign in to the web UI."""
    from agent.people import accounts
    from agent.store.db import sessions

    cfg = _load(config_path)
    password = _password(password_file, f"password for {username}")
    with sessions(_engine(cfg))() as session, session.begin():
        try:
            accounts.add_user(session, dt.datetime.now(dt.UTC), username=username,
                              password=password, role=role, actor="cli", phone=phone,
                              extension=extension, region=cfg.pbx.default_region)
        except accounts.AccountError as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(f"added {role} {username}")


@users_group.command("list")
@config_option
def users_list(config_path: str | None) -> None:
    """Everyone who can (or could) sign in."""
    from sqlalchemy import select

    from agent.store.db import sessions
    from agent.store.models import User

    cfg = _load(config_path)
    with sessions(_engine(cfg))() as session:
        users = session.scalars(select(User).order_by(User.username)).all()
    if not users:
        click.echo("no users yet: textback users add NAME --role admin --password-file FILE")
    for user in users:
        last = user.last_login_at.strftime("%Y-%m-%d %H:%M UTC") if user.last_login_at \
            else "never"
        click.echo(f"{user.username:20} {user.role:6} {'active' if user.active else 'disabled':9}"
                   f" phone={user.phone or '-'} ext={user.extension or '-'} last-login={last}")


@users_group.command("passwd")
@config_option
@click.argument("username")
@click.option("--password-file", type=click.Path(dir_okay=False), default=None,
              help="Read the password from this file ('-': standard input); else asked.")
def users_passwd(config_path: str | None, username: str, password_file: str | None) -> None:
    """Set a new password (their other sessions end)."""
    from agent.people import accounts
    from agent.store.db import sessions

    cfg = _load(config_path)
    password = _password(password_file, f"new password for {username}")
    with sessions(_engine(cfg))() as session, session.begin():
        try:
            accounts.set_password(session, dt.datetime.now(dt.UTC), username, password,
                                  actor="cli")
        except accounts.AccountError as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(f"password of {username} changed")


@users_group.command("disable")
@config_option
@click.argument("username")
def users_disable(config_path: str | None, username: str) -> None:
    """Stop someone signing in (kept, not deleted, so the audit log still names them)."""
    from agent.people import accounts
    from agent.store.db import sessions

    cfg = _load(config_path)
    with sessions(_engine(cfg))() as session, session.begin():
        try:
            accounts.disable(session, dt.datetime.now(dt.UTC), username, actor="cli")
        except accounts.AccountError as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(f"{username} disabled")


@users_group.command("signout")
@config_option
@click.argument("username")
def users_signout(config_path: str | None, username: str) -> None:
    """End every web session of someone now (a lost phone, a shared password)."""
    from agent.people import accounts
    from agent.store.db import sessions

    cfg = _load(config_path)
    with sessions(_engine(cfg))() as session, session.begin():
        try:
            accounts.sign_out_everywhere(session, dt.datetime.now(dt.UTC), username,
                                         actor="cli")
        except accounts.AccountError as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(f"every session of {username} has ended")


@users_group.command("set")
@config_option
@click.argument("username")
@click.option("--role", type=click.Choice(["admin", "staff"]), default=None)
@click.option("--phone", default=None, help='Mobile for alerts; "" removes it.')
@click.option("--extension", default=None,
              help='Desk extension the inbox\'s Call back rings; "" removes it.')
def users_set(config_path: str | None, username: str, role: str | None, phone: str | None,
              extension: str | None) -> None:
    """Change someone's role, mobile or desk extension (what is not given stays)."""
    from agent.people import accounts
    from agent.store.db import sessions

    cfg = _load(config_path)
    changes = {name: value or None for name, value in
               (("phone", phone), ("extension", extension)) if value is not None}
    if role is not None:
        changes["role"] = role
    if not changes:
        raise click.UsageError("give --role, --phone or --extension")
    with sessions(_engine(cfg))() as session, session.begin():
        try:
            changed = accounts.update_user(session, dt.datetime.now(dt.UTC), username,
                                           actor="cli", region=cfg.pbx.default_region,
                                           **changes)
        except accounts.AccountError as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(f"{username}: {', '.join(changed)} changed" if changed
               else f"{username}: nothing changed")


@users_group.command("enable")
@config_option
@click.argument("username")
def users_enable(config_path: str | None, username: str) -> None:
    """Let a disabled user sign in again."""
    from agent.people import accounts
    from agent.store.db import sessions

    cfg = _load(config_path)
    with sessions(_engine(cfg))() as session, session.begin():
        try:
            changed = accounts.update_user(session, dt.datetime.now(dt.UTC), username,
                                           actor="cli", active=True)
        except accounts.AccountError as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(f"{username} enabled" if changed else f"{username} was enabled already")


@main.group("settings")
def settings_group() -> None:
    """Business rules kept in the database (hours, templates, cooldown…)."""


@settings_group.command("list")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def settings_list(config_path: str | None, as_json: bool) -> None:
    """Every setting with its value and default."""
    from agent.rules import settings

    cfg = _load(config_path)
    database = _sqlite_file(cfg)
    if database is not None:
        rows = _lite(database, lambda: settings.catalogue_in_file(database))
    else:
        from agent.store.db import sessions

        with sessions(_engine(cfg))() as session:
            rows = settings.catalogue(session)
    if as_json:
        click.echo(json.dumps([row._asdict() if hasattr(row, "_asdict") else vars(row)
                               for row in rows], ensure_ascii=False, default=str))
        return
    for row in rows:
        mark = " " if row.is_default else "*"
        click.echo(f"{mark} {row.key} = {json.dumps(row.value, ensure_ascii=False)}")
        click.echo(f"      {row.help}")
    click.echo("(* = changed from the default)")


@settings_group.command("get")
@config_option
@click.argument("key")
def settings_get(config_path: str | None, key: str) -> None:
    """Print one setting as JSON."""
    from agent.rules import settings

    cfg = _load(config_path)
    database = _sqlite_file(cfg)
    try:
        if database is not None:
            value = _lite(database, lambda: settings.get_in_file(database, key))
        else:
            from agent.store.db import sessions

            with sessions(_engine(cfg))() as session:
                value = settings.get(session, key)
    except settings.SettingError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(value, ensure_ascii=False))


@settings_group.command("set")
@config_option
@click.argument("key")
@click.argument("value")
def settings_set(config_path: str | None, key: str, value: str) -> None:
    """Change one setting; VALUE is JSON when it parses as JSON, else a string."""
    import datetime as dt
    import getpass

    from agent.rules import settings

    cfg = _load(config_path)
    now = dt.datetime.now(dt.UTC)
    actor, region = f"cli:{getpass.getuser()}", cfg.pbx.default_region
    database = _sqlite_file(cfg)
    try:
        if database is not None:
            stored, _changed = _lite(database, lambda: settings.change_in_file(
                database, key, settings.parse_cli_value(value), now, actor=actor,
                region=region))
        else:
            from agent.store.db import sessions

            with sessions(_engine(cfg))() as session, session.begin():
                stored, _changed = settings.change(
                    session, key, settings.parse_cli_value(value), now, actor=actor,
                    region=region)
    except settings.SettingError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{key} = {json.dumps(stored, ensure_ascii=False)}")


@main.command()
@config_option
@click.option("--user", default=None,
              help="Check files, the database and the modem as this user (as root, the "
                   "default is the User= of the installed agent unit, else textback).")
def doctor(config_path: str | None, user: str | None) -> None:
    """Check AMI, permissions, the trunk and the database; say how to fix each problem."""
    from agent.ops.doctor import run_checks

    cfg = _load(config_path)
    if not run_checks(cfg, user=user):
        sys.exit(1)


@main.command("send-test")
@config_option
@click.option("--to", "to", required=True, help="The phone number to text.")
@click.option("--text", required=True, help="The message.")
@click.option("--transport", type=click.Choice(["gsm", "sip", "twilio", "telnyx"]),
              default=None,
              help="Default: the first of [sms] transports.")
def send_test(config_path: str | None, to: str, text: str, transport: str | None) -> None:
    """Send one SMS now through one transport; print its id and status."""
    from agent.ops.sendtest import SendTestError
    from agent.ops.sendtest import send_test as run_send_test
    from agent.store.db import DatabaseError

    cfg = _load(config_path)
    try:
        message = run_send_test(cfg, to, text, transport or cfg.sms.transports[0])
    except (SendTestError, DatabaseError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"message {message.id}: {message.status} via {message.transport or '-'}"
               + (f" ({message.provider_ref})" if message.provider_ref else ""))
    if message.status in ("failed", "queued", "sending"):
        raise click.ClickException(f"message {message.id} {message.status}: {message.error}")


@main.command()
@config_option
@click.option("--preview", is_flag=True, help="Print last week's digest; send nothing.")
@click.option("--at", "at", default=None, metavar="ISO-TIME",
              help="Pretend it is this time (e.g. 2026-12-07T08:00-06:00), for --preview.")
def digest(config_path: str | None, preview: bool, at: str | None) -> None:
    """The owner's weekly digest: --preview prints the last full week's; the agent sends
    it on digest.day at digest.hour (settings), and shows when it last did."""
    from agent.reports import digest as weekly
    from agent.store.db import sessions

    cfg = _load(config_path)
    try:
        now = dt.datetime.fromisoformat(at) if at else dt.datetime.now(dt.UTC)
    except ValueError:
        raise click.ClickException(f"--at {at!r} is not an ISO time like "
                                   "2026-12-07T08:00-06:00") from None
    if now.tzinfo is None:
        raise click.ClickException("--at needs a UTC offset, e.g. 2026-12-07T08:00-06:00")
    engine = _engine(cfg)
    try:
        with sessions(engine)() as session:
            if preview:
                click.echo(weekly.preview(session, now), nl=False)
                return
            runs = weekly.last_runs(session)
            if not runs:
                click.echo("No digest sent yet (see digest.enabled; --preview shows one).")
            for run in runs:
                when = run.done_at or run.created_at
                detail = f" ({run.detail})" if run.detail else ""
                click.echo(f"{run.week}: {run.status} at {when:%Y-%m-%d %H:%M} UTC{detail}")
    finally:
        engine.dispose()


@main.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="One JSON array, for scripts.")
@click.option("--limit", default=20, show_default=True, help="How many, newest first.")
def messages(config_path: str | None, as_json: bool, limit: int) -> None:
    """Recent SMS in and out: number, text, status, transport, parts, times, error."""
    from agent.ops.sendtest import recent
    from agent.store.db import DatabaseError

    cfg = _load(config_path)
    try:
        rows = recent(cfg, limit)
    except DatabaseError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False))
        return
    for row in rows:
        arrow = "->" if row["direction"] == "out" else "<-"
        click.echo(f"#{row['id']} {row['created_at'][:19]} {arrow} {row['number']}  "
                   f"{row['status']} via {row['transport'] or '-'}, {row['parts'] or '?'} "
                   f"part(s)  {row['body'][:60]!r}")
        if row["error"]:
            click.echo(f"      error: {row['error']}")


@main.command()
@config_option
@click.option("--keep", type=click.IntRange(min=1), default=None,
              help="Keep only the newest N backups in the directory OUT.")
@click.argument("out", type=click.Path())
def backup(config_path: str | None, keep: int | None, out: str) -> None:
    """Copy the database to OUT while the agent runs (a file, or a directory where the
    copy is named textback-YYYYmmdd-HHMMSS.db; PostgreSQL: pg_dump, .dump)."""
    from agent.ops.backup import BackupError
    from agent.ops.backup import backup as run_backup

    cfg = _load(config_path)
    try:
        made = run_backup(cfg.database.url, out, keep=keep)
    except BackupError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"backed up the database to {made.path}")
    for path in made.pruned:
        click.echo(f"removed the older backup {path}")


@main.command()
@config_option
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
def restore(config_path: str | None, file: str) -> None:
    """Replace the database with the backup FILE; stop the agent first. The database
    replaced is kept beside it (PostgreSQL: beside FILE)."""
    from agent.ops.backup import BackupError
    from agent.ops.backup import restore as run_restore
    from agent.store.db import DatabaseError

    cfg = _load(config_path)
    try:
        restored = run_restore(cfg.database.url, file)
    except (BackupError, DatabaseError) as exc:
        raise click.ClickException(str(exc)) from None
    if restored.kept is not None:
        click.echo(f"kept the database it replaced as {restored.kept}")
    click.echo(f"restored {file} (schema revision {restored.revision}"
               + (f", migrated to {restored.now}" if restored.now != restored.revision
                  else "") + "); start the agent again")


@main.command()
@click.option("--calls", default=1, show_default=True, help="Sample missed calls to place.")
@click.option("--once", is_flag=True, help="Exit after the sample call instead of waiting.")
@click.option("--modem", type=click.Choice(["emulated"]), default=None,
              help="Send through the GSM modem path, on an emulated modem.")
def demo(calls: int, once: bool, modem: str | None) -> None:
    """Lab Asterisk + agent + a sample unanswered call, on embedded defaults."""
    from agent.lab.demo import run_demo

    sys.exit(run_demo(calls=calls, once=once, modem=modem))


@main.command("contacted")
@config_option
@click.argument("number")
def contacted(config_path: str | None, number: str) -> None:
    """Mark a customer as reached by staff: their follow-ups and reminders stop."""
    import datetime as dt

    from sqlalchemy import select

    from agent.messages import timers
    from agent.rules import numbers
    from agent.store.db import sessions
    from agent.store.models import Contact

    cfg = _load(config_path)
    e164 = numbers.to_e164(number, cfg.pbx.default_region) or number
    with sessions(_engine(cfg))() as session, session.begin():
        contact = session.scalar(select(Contact).where(Contact.number == e164))
        if contact is None:
            raise click.ClickException(f"no contact with the number {e164}")
        timers.contacted(session, contact, "marked by hand", dt.datetime.now(dt.UTC))
    click.echo(f"{e164} marked as contacted; follow-ups and reminders stopped")


@main.group("contacts")
def contacts_group() -> None:
    """Customers' contact records: one number's consent history; erase one person's
    data (GDPR)."""


@contacts_group.command("history")
@config_option
@click.argument("number")
def contacts_history(config_path: str | None, number: str) -> None:
    """Print a number's consent record: its calls, every automated text and why it was
    sent (or held back), and every opt-out and opt-in with its words and channel."""
    from agent.people import contacts
    from agent.privacy import consent
    from agent.rules import settings
    from agent.store.db import sessions

    cfg = _load(config_path)
    with sessions(_engine(cfg))() as session:
        contact = contacts.find(session, number, cfg.pbx.default_region)
        if contact is None or contacts.is_placeholder(contact.number):
            raise click.ClickException(f"no contact with the number {number}")
        zone = settings.business_zone(session)
        entries = consent.history(session, contact, zone)
        state = "opted out" if contact.opted_out else "may be texted"
        click.echo(f"{contact.number}" + (f" ({contact.name})" if contact.name else "")
                   + f": {state}; times in {zone.key}")
        for line in consent.lines(entries, zone) or ["nothing recorded"]:
            click.echo(f"  {line}")


@contacts_group.command("erase")
@config_option
@click.argument("number")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def contacts_erase(config_path: str | None, number: str, yes: bool) -> None:
    """Erase a person's data: number, name, tags and texts, everywhere; anonymous
    counts stay. A number that opted out is kept with the opt-out only."""
    import getpass

    from agent.people import contacts
    from agent.privacy import erasure as erasing
    from agent.store.db import sessions

    cfg = _load(config_path)
    region = cfg.pbx.default_region
    with sessions(_engine(cfg))() as session, session.begin():
        contact = contacts.find(session, number, region)
        if contact is None or contacts.is_placeholder(contact.number):
            raise click.ClickException(f"no contact with the number {number}")
        shown = contact.number
        if not yes:
            if not _interactive():
                raise click.UsageError("erasing cannot be undone: add --yes to confirm")
            click.confirm(f"Erase everything about {shown}"
                          + (f" ({contact.name})" if contact.name else "")
                          + "? This cannot be undone", abort=True)
        try:
            erasure = erasing.erase(session, contact, dt.datetime.now(dt.UTC),
                                    f"cli:{getpass.getuser()}", region=region)
        except contacts.ContactError as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(f"erased {shown} (now {contacts.target(erasure.contact_id)}):")
    for line in erasure.summary():
        click.echo(f"  {line}")


if __name__ == "__main__":
    main()
