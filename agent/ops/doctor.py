"""`textback doctor`: every check says what it found and, when it fails, the exact fix."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agent.config import Config
from agent.ops import access

log = logging.getLogger(__name__)

# write privileges the agent uses, and the action that proves each one
NEEDED_ACTIONS = {"MessageSend": "message", "Originate": "originate", "Ping": "(none)"}


@dataclass
class Check:
    ok: bool | None  # None: could not be checked
    what: str
    fix: str = ""


def run_checks(cfg: Config, echo: Callable[[str], None] = print,
               user: str | None = None) -> bool:
    """Run every check and print it; False when one failed. Files, the database and the
    modem's port are checked as `user`, by default (when run as root) the user the
    installed agent unit runs as, else as whoever runs this."""
    from agent.transports.modem.checks import modem_checks

    account, about_user = _account(user)
    results = [*asyncio.run(_ami_checks(cfg)), *about_user, *_file_checks(cfg, account),
               _database_check(cfg, account), *_cdr_checks(cfg, account),
               *(Check(c.ok, c.what, c.fix) for c in modem_checks(cfg)),
               *_port_checks(cfg, account), *asyncio.run(provider_checks(cfg))]
    for check in results:
        mark = {True: "ok  ", False: "FAIL", None: "??  "}[check.ok]
        echo(f"{mark} {check.what}")
        if check.fix and check.ok is not True:
            echo(f"     fix: {check.fix}")
    failed = sum(1 for c in results if c.ok is False)
    echo("all checks passed" if not failed else f"{failed} check(s) failed")
    return failed == 0


async def _ami_checks(cfg: Config) -> list[Check]:
    from panoramisk.actions import Action

    from agent.pbx.ami import AmiError, AmiLink

    ami = cfg.ami
    where = f"{ami.host}:{ami.port}"
    checks: list[Check] = []
    try:
        _r, writer = await asyncio.wait_for(asyncio.open_connection(ami.host, ami.port), 5)
        writer.close()
    except (OSError, TimeoutError) as exc:
        return [Check(False, f"AMI reachable at {where}: {exc}",
                      "start Asterisk, and in manager.conf set enabled = yes, "
                      f"bindaddr = {ami.host}, port = {ami.port}; then "
                      "`asterisk -rx 'manager reload'`")]
    checks.append(Check(True, f"AMI reachable at {where}"))

    link = AmiLink(ami, lambda _event: None, config_path=str(cfg.path), events="off")
    runner = asyncio.create_task(link.run())
    try:
        # the first attempt's answer, not the retries: a refused login is retried with
        # backoff, which would keep doctor waiting for nothing
        deadline = asyncio.get_running_loop().time() + 12
        while not link.connected and link.last_error is None \
                and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        if not link.connected:
            checks.append(Check(False, f"AMI login as {ami.username!r}: "
                                f"{link.last_error or 'no answer'}", _secret_fix(cfg)))
            return checks
        checks.append(Check(True, f"AMI login as {ami.username!r}"))
        response = await link.action(Action({"Action": "ListCommands"}))
        allowed = {key.lower() for key in response}
        missing = [f"{name} (write = {priv})" for name, priv in NEEDED_ACTIONS.items()
                   if name.lower() not in allowed]
        if missing:
            checks.append(Check(False, "AMI permissions: cannot use " + ", ".join(missing),
                                f"in manager.conf give [{ami.username}] write = "
                                "message,reporting,originate (see "
                                "asterisk/manager_textback.conf)"))
        else:
            checks.append(Check(True, "AMI permissions: MessageSend and Originate allowed"))
        checks.append(await _trunk_check(cfg, link, allowed))
    except AmiError as exc:
        checks.append(Check(False, f"AMI action failed: {exc}", "see Asterisk's log"))
    finally:
        link.close()
        runner.cancel()
    return checks


def _secret_fix(cfg: Config) -> str:
    ami = cfg.ami
    if ami.secret_file is not None:
        source = f"{ami.secret_file} (ami.secret_file in {cfg.path})"
    else:
        source = f"ami.secret in {cfg.path}"
    return (f"textback logs in with the secret in {source}: make `secret =` of the "
            f"[{ami.username}] user in Asterisk's manager.conf (FreePBX: "
            f"manager_custom.conf) the same, with permit = {ami.host}/255.255.255.255; "
            "then `asterisk -rx 'manager reload'`")


async def _trunk_check(cfg: Config, link: object, allowed: set[str]) -> Check:
    from agent.pbx.ami import AmiError, AmiLink

    endpoint = cfg.sms.sip.endpoint
    if "sip" not in cfg.sms.transports:
        return Check(True, "SIP trunk transport not in use")
    assert isinstance(link, AmiLink)
    fix = (f"define the PJSIP endpoint {endpoint!r} in pjsip.conf, or set [sms.sip] endpoint "
           f"in {cfg.path} to the name `asterisk -rx 'pjsip show endpoints'` lists")
    if "pjsipshowendpoint" in allowed:
        try:
            await link.action({"Action": "PJSIPShowEndpoint", "Endpoint": endpoint})
        except AmiError as exc:
            return Check(False, f"SIP trunk endpoint {endpoint!r}: {exc}", fix)
        return Check(True, f"SIP trunk endpoint {endpoint!r} exists")
    # the least-privileged AMI user cannot list endpoints; ask the local CLI if we may
    binary = shutil.which("asterisk")
    if binary:
        try:
            out = subprocess.run([binary, "-rx", f"pjsip show endpoint {endpoint}"],
                                 capture_output=True, text=True, timeout=5).stdout
        except (OSError, subprocess.SubprocessError):
            out = ""
        if "Unable to find object" in out:
            return Check(False, f"SIP trunk endpoint {endpoint!r} not found", fix)
        if f"Endpoint:  {endpoint}" in out or f"Endpoint: {endpoint}" in out:
            return Check(True, f"SIP trunk endpoint {endpoint!r} exists")
    return Check(None, f"SIP trunk endpoint {endpoint!r} not verified (the AMI user may not "
                 "list endpoints, by design)",
                 f"run `asterisk -rx 'pjsip show endpoint {endpoint}'` as root to confirm")


async def provider_checks(cfg: Config) -> list[Check]:
    """The messaging APIs in [sms] transports: the credentials work (one authenticated
    GET), the webhook signature secret is set, and public_url reaches this web app."""
    import httpx

    from agent.transports import SendError, telnyx, twilio

    checks: list[Check] = []
    async with httpx.AsyncClient(timeout=10) as client:
        for name in (n for n in cfg.sms.transports if n in ("twilio", "telnyx")):
            try:
                if name == "twilio" and cfg.sms.twilio is not None:
                    what = await twilio.check_account(cfg.sms.twilio, client)
                    source = cfg.sms.twilio.signing_key_file or cfg.sms.twilio.auth_token_file
                    kind = "signing key" if cfg.sms.twilio.signing_key_file else "auth token"
                    secret = (f"webhook signatures (X-Twilio-Signature) checked with the "
                              f"{kind} in {source}")
                elif cfg.sms.telnyx is not None:
                    what = await telnyx.check_account(cfg.sms.telnyx, client)
                    secret = ("webhook signatures (Ed25519) checked with "
                              "[sms.telnyx] public_key")
                else:
                    continue
            except (SendError, httpx.HTTPError) as exc:
                key = ("account_sid and auth_token_file" if name == "twilio"
                       else "api_key_file")
                checks.append(Check(False, f"{name} credentials: {exc or type(exc).__name__}",
                                    f"check [sms.{name}] {key} and api_base in {cfg.path} "
                                    "against the provider's console"))
            else:
                checks.append(Check(True, f"{name} credentials accepted ({what})"))
                checks.append(Check(True, secret))
            checks.append(await _webhook_check(cfg, client, name))
    return checks


async def _webhook_check(cfg: Config, client: object, name: str) -> Check:
    """public_url reaches this web app: /healthz answers as it does, and the provider's
    hook refuses an unsigned post (so the route is there and checks signatures)."""
    import httpx

    assert isinstance(client, httpx.AsyncClient)
    base = cfg.web.public_url
    hook = f"{base}/hooks/twilio/status" if name == "twilio" else f"{base}/hooks/telnyx"
    fix = (f"make {base} (web.public_url in {cfg.path}) reach `textback web` through "
           "your TLS proxy, from the internet; then paste the webhook addresses of the "
           "README's \"US texting\" into the provider's console")
    try:
        health = await client.get(f"{base}/healthz")
        status = health.json().get("status") if health.headers.get(
            "content-type", "").startswith("application/json") else None
        unsigned = await client.post(hook, data={"doctor": "unsigned"})
    except (httpx.HTTPError, ValueError) as exc:
        return Check(False, f"{base} not reachable: {exc or type(exc).__name__}", fix)
    if status is None:
        return Check(False, f"{base}/healthz is not textback's (HTTP {health.status_code})",
                     fix)
    if unsigned.status_code != 403:
        return Check(False, f"{hook} answered an unsigned post with HTTP "
                     f"{unsigned.status_code}, not 403", fix + f"; is [sms.{name}] in the "
                     "config `textback web` reads?")
    return Check(True, f"{base} reaches the web app; {hook} refuses unsigned posts")


def _account(name: str | None) -> tuple[access.Account, list[Check]]:
    """Whom files are checked for, and what doctor has to say about that user."""
    me = access.current()
    unit = access.installed_unit()
    if name is None and me.uid != 0:
        return me, []
    wanted = name or unit.user
    found = access.account(wanted, unit.supplementary_groups if wanted == unit.user else ())
    if found is not None:
        if found.uid == me.uid:
            return me, []
        why = "as asked" if name else "the user the agent runs as"
        return found, [Check(True, f"files checked as {wanted}, {why} (doctor runs as "
                             f"{me.name})")]
    where = f"{unit.path} runs as" if unit.path and wanted == unit.user else \
        "the textback units run as"
    fix = (f"useradd --system --home /var/lib/textback --groups dialout {wanted}; then "
           f"chown root:{wanted} the secrets (chmod 640) and {wanted}:{wanted} the "
           "database directory, as the checks below say once it exists")
    # no unit installed (a lab, a test run): the user may never be needed
    ok = False if name or unit.path else None
    return me, [Check(ok, f"user {wanted} does not exist ({where} {wanted}); files "
                      f"checked as {me.name} instead", fix)]


def _file_checks(cfg: Config, user: access.Account) -> list[Check]:
    """The config file and the secrets the services read at start-up."""
    paths = [cfg.path, cfg.ami.secret_file,
             cfg.sms.twilio.auth_token_file if cfg.sms.twilio else None,
             cfg.sms.twilio.signing_key_file if cfg.sms.twilio else None,
             cfg.sms.telnyx.api_key_file if cfg.sms.telnyx else None]
    if cfg.web_secret_key_file.exists():
        paths.append(cfg.web_secret_key_file)
    checks = []
    for path in (p for p in paths if p is not None):
        problem = access.as_user(user, lambda path=path: access.read_problem(path))
        if problem is None:
            checks.append(Check(True, f"{path} readable by {user.name}"))
        else:
            checks.append(Check(False, f"{path} not readable by {user.name}: {problem}",
                                access.secret_fix(path, user)))
    return checks


def _port_checks(cfg: Config, user: access.Account) -> list[Check]:
    """The modem's port as the service's user (the modem checks ran as this process)."""
    import grp
    import os

    from agent.transports.modem.driver import find_port

    found = find_port(cfg.sms.gsm.port) if "gsm" in cfg.sms.transports else None
    if found is None or user.uid == os.geteuid():
        return []
    device = os.path.realpath(found)
    if access.as_user(user, lambda: access.device_problem(Path(device))) is None:
        return [Check(True, f"{device} readable and writable by {user.name}")]
    try:
        group = grp.getgrgid(os.stat(device).st_gid).gr_name
    except (KeyError, OSError):
        group = "dialout"
    unit = access.installed_unit()
    also = f" (or add it to SupplementaryGroups= in {unit.path})" if unit.path else ""
    return [Check(False, f"{device} is not readable and writable by {user.name}",
                  f"usermod -aG {group} {user.name}{also}, then "
                  "systemctl restart textback-agent")]


def _cdr_checks(cfg: Config, account: access.Account) -> list[Check]:
    """[pbx] cdr_csv: can the service's user read the file, and do its rows name their
    call?"""
    from agent.calls import cdr

    path = cfg.pbx.cdr_csv
    if path is None:
        return []
    user = account.name
    denied = (f"Asterisk's logs belong to group asterisk: usermod -aG asterisk {user} "
              f"&& chmod g+r {path}, then systemctl restart textback-agent")
    problem = access.as_user(account, lambda: access.read_problem(path)) \
        if path.exists() else None
    if problem is not None:
        return [Check(False, f"CDR file {path} not readable by {user}: {problem}", denied)]
    try:
        tail = cdr.read(path, max_bytes=64 * 1024)
    except FileNotFoundError:
        return [Check(False, f"CDR file {path} does not exist",
                      "load cdr_csv.so in Asterisk's modules.conf and give cdr.conf a [csv] "
                      "section (see asterisk/README.md); Asterisk writes the file when the "
                      f"first call ends. Or set [pbx] cdr_csv = \"\" in {cfg.path}")]
    except OSError as exc:
        return [Check(False, f"CDR file {path} not readable by {user}: {exc.strerror}",
                      denied)]
    if tail.rows and not any(row.call_key for row in tail.rows):
        return [Check(False, f"CDR file {path}: rows have no uniqueid or linkedid column",
                      "in cdr.conf [csv] set loguniqueid = yes and newcdrcolumns = yes, then "
                      "asterisk -rx 'module reload cdr_csv.so'")]
    return [Check(True, f"CDR file {path} readable by {user}")]


def _database_check(cfg: Config, user: access.Account) -> Check:
    """Writable by the service's user (as that user, for SQLite), migrated, usable."""
    import os

    from sqlalchemy import select

    from agent.store.db import DatabaseError, check_schema, make_engine, sessions
    from agent.store.models import Setting

    url = cfg.database.url
    migrate = f"textback migrate --config {cfg.path}"
    if user.uid != os.geteuid():  # as root: the files must be the service user's
        migrate = f"runuser -u {user.name} -- {migrate}"
    path = access.sqlite_file(url)
    if path is not None:
        problem = access.as_user(user, lambda: access.database_problem(path))
        if problem and (problem["paths"] or problem.get("missing")):
            where = ", ".join(problem["paths"]) or problem["missing"]
            return Check(False, f"database {path} not writable by {user.name} ({where}: "
                         f"{problem['error']})", access.database_fix(path, user, problem))
        if problem:
            return Check(False, f"database {path}: {problem['error']}",
                         f"see what holds it: fuser -v {path}")
        if not path.exists():  # not created here: as root it would belong to root
            return Check(False, f"database {path} does not exist", migrate)
    try:
        engine = make_engine(url)
        check_schema(engine)
        with sessions(engine)() as session:
            probe = Setting(key="doctor.probe", value=True, updated_at=dt.datetime.now(dt.UTC))
            session.add(probe)
            session.flush()
            session.scalar(select(Setting).where(Setting.key == "doctor.probe"))
            session.rollback()
    except DatabaseError as exc:
        return Check(False, f"database: {exc}", migrate)
    except Exception as exc:
        return Check(False, f"database {url} not usable: {exc}",
                     "see the error above; PostgreSQL: can the URL's user connect and "
                     "create tables?")
    shown = engine.url.render_as_string(hide_password=True)
    return Check(True, f"database writable by {user.name} ({shown})")
