"""`textback doctor`: every check says what it found and, when it fails, the exact fix."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

from agent.config import Config

log = logging.getLogger(__name__)

# write privileges the agent uses, and the action that proves each one
NEEDED_ACTIONS = {"MessageSend": "message", "Originate": "originate", "Ping": "(none)"}


@dataclass
class Check:
    ok: bool | None  # None: could not be checked
    what: str
    fix: str = ""


def run_checks(cfg: Config, echo: Callable[[str], None] = print) -> bool:
    from agent.transports.modem.checks import modem_checks

    results = [*asyncio.run(_ami_checks(cfg)), _database_check(cfg), *_cdr_checks(cfg),
               *(Check(c.ok, c.what, c.fix) for c in modem_checks(cfg))]
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
        if not await link.wait_up(8):
            checks.append(Check(False, f"AMI login as {ami.username!r}: {link.last_error}",
                                f"make [{ami.username}] in manager.conf use the secret from "
                                f"{cfg.path}, with permit = {ami.host}/255.255.255.255; "
                                "then `asterisk -rx 'manager reload'`"))
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


def _cdr_checks(cfg: Config) -> list[Check]:
    """[pbx] cdr_csv: can this user read the file, and do its rows name their call?"""
    import getpass

    from agent.calls import cdr

    path = cfg.pbx.cdr_csv
    if path is None:
        return []
    user = getpass.getuser()
    try:
        tail = cdr.read(path, max_bytes=64 * 1024)
    except FileNotFoundError:
        return [Check(False, f"CDR file {path} does not exist",
                      "load cdr_csv.so in Asterisk's modules.conf and give cdr.conf a [csv] "
                      "section (see asterisk/README.md); Asterisk writes the file when the "
                      f"first call ends. Or set [pbx] cdr_csv = \"\" in {cfg.path}")]
    except OSError as exc:
        return [Check(False, f"CDR file {path} not readable by {user}: {exc.strerror}",
                      f"Asterisk's logs belong to group asterisk: usermod -aG asterisk {user} "
                      f"&& chmod g+r {path}, then systemctl restart textback-agent")]
    if tail.rows and not any(row.call_key for row in tail.rows):
        return [Check(False, f"CDR file {path}: rows have no uniqueid or linkedid column",
                      "in cdr.conf [csv] set loguniqueid = yes and newcdrcolumns = yes, then "
                      "asterisk -rx 'module reload cdr_csv.so'")]
    return [Check(True, f"CDR file {path} readable by {user}")]


def _database_check(cfg: Config) -> Check:
    from sqlalchemy import select

    from agent.store.db import DatabaseError, check_schema, make_engine, sessions
    from agent.store.models import Setting

    url = cfg.database.url
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
        return Check(False, f"database: {exc}", f"textback migrate --config {cfg.path}")
    except Exception as exc:
        return Check(False, f"database {url} not writable: {exc}",
                     "make the database file and its directory writable by the user "
                     "textback runs as (WAL needs to create -wal and -shm files beside it)")
    return Check(True, f"database writable ({engine.url.render_as_string(hide_password=True)})")
