"""Web UI accounts and the audit log, shared by `textback users …` and the web UI.

Passwords are stored only as werkzeug hashes, reach the code from a file or a
terminal prompt (never the command line, where `ps` and shell history see them),
and have no default. Every change to an account, every login and every failed
login leaves an audit row: the owner can always see who did what.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import logging
import re
import secrets
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from agent.store.audit import (
    LOGIN,
    LOGIN_FAILED,
    LOGIN_LOCKED,
    LOGOUT,
    PASSWORD_CHANGED,
    SESSIONS_ENDED,
    USER_ADDED,
    USER_CHANGED,
    USER_DISABLED,
    USER_ENABLED,
    audit,
)
from agent.store.models import AuditEntry, User

log = logging.getLogger(__name__)

ROLES = ("admin", "staff")
MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 1024  # hashing megabytes of "password" is a denial of service
USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
EXTENSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.*#/@+-]{0,63}$")

# login rate limiting: this many failures for one username from one address…
MAX_LOGIN_FAILURES = 5
# …within this window lock that pair until the oldest failure ages out of it
LOGIN_WINDOW = dt.timedelta(minutes=15)



class AccountError(Exception):
    """An account cannot be created or changed; the message says why and what to do.

    `problems` maps each field at fault ("role", "phone", "extension", "active",
    "password", "current_password") to its own message, so a form can show every
    mistake next to its field at once; it is empty when no single field is to blame.
    """

    def __init__(self, message: str, field: str | None = None,
                 problems: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.problems: dict[str, str] = dict(problems) if problems else (
            {field: message} if field else {})


class _Keep(enum.Enum):
    KEEP = "keep"


# "leave this field as it is" for update_user: None already means "clear it"
KEEP = _Keep.KEEP


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"the password has {len(password)} characters; it needs at least "
                           f"{MIN_PASSWORD_LENGTH}", field="password")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise AccountError(f"the password is longer than {MAX_PASSWORD_LENGTH} characters",
                           field="password")
    if not password.strip():
        raise AccountError("the password must not be only spaces", field="password")


def _check_role(role: str) -> str:
    if role not in ROLES:
        raise AccountError(f"role must be one of {', '.join(ROLES)}, not {role!r}",
                           field="role")
    return role


def _check_phone(phone: str | None, region: str) -> str | None:
    if not phone:
        return None
    from agent.rules import numbers

    e164 = numbers.to_e164(phone, region)
    if e164 is None:
        raise AccountError(f"{phone!r} is not a phone number (give it like +15551234567)",
                           field="phone")
    return e164


def _check_extension(extension: str | None) -> str | None:
    if not extension:
        return None
    if not EXTENSION.match(extension):
        raise AccountError(f"{extension!r} is not a desk extension (like 101 or PJSIP/101)",
                           field="extension")
    return extension


def find(session: Session, username: str) -> User | None:
    return session.scalar(select(User).where(User.username == username))


def require(session: Session, username: str) -> User:
    user = find(session, username)
    if user is None:
        raise AccountError(f"there is no user {username!r} (see `textback users list`)")
    return user


def add_user(session: Session, now: dt.datetime, *, username: str, password: str, role: str,
             actor: str, phone: str | None = None, extension: str | None = None,
             region: str = "US") -> User:
    if not USERNAME.match(username):
        raise AccountError(f"{username!r} is not a username: use letters, digits and . _ @ -, "
                           "up to 64 characters, starting with a letter or digit")
    _check_role(role)
    check_password(password)
    if find(session, username) is not None:
        raise AccountError(f"the user {username!r} exists already")
    user = User(username=username, password_hash=generate_password_hash(password), role=role,
                phone=_check_phone(phone, region), extension=_check_extension(extension),
                active=True, created_at=now)
    session.add(user)
    audit(session, now, actor, USER_ADDED, username,
          details={"role": role, "phone": user.phone, "extension": user.extension})
    return user


def set_password(session: Session, now: dt.datetime, username: str, password: str, *,
                 actor: str) -> User:
    user = require(session, username)
    check_password(password)
    user.password_hash = generate_password_hash(password)
    end_sessions(user)
    audit(session, now, actor, PASSWORD_CHANGED, username)
    return user


def end_sessions(user: User) -> None:
    """Refuse every session of this account from now on (web.auth checks the generation
    on each request); the caller audits why and commits."""
    user.session_generation = (user.session_generation or 0) + 1


def sign_out(session: Session, now: dt.datetime, username: str, ip: str | None) -> None:
    """Someone signs out: their sessions end on the server, so a copy of the cookie
    taken before (a shared computer, a proxy's log) opens nothing afterwards."""
    end_sessions(require(session, username))
    audit(session, now, username, LOGOUT, username, ip)


def sign_out_everywhere(session: Session, now: dt.datetime, username: str, *,
                        actor: str, ip: str | None = None) -> User:
    """An admin ends every session of an account (a lost phone, a shared password)."""
    user = require(session, username)
    end_sessions(user)
    audit(session, now, actor, SESSIONS_ENDED, username, ip)
    return user


class WrongCurrentPassword(AccountError):
    """The current password given to change it was wrong: a guess, counted like a failed
    sign-in (the caller records it with `record_wrong_password` after rolling back)."""


def change_own_password(session: Session, now: dt.datetime, username: str, current: str,
                        new: str, ip: str | None = None) -> User:
    """Someone changing their own password: the current one is asked first, so a browser
    left signed in is not enough to take the account over, and guesses at it share the
    sign-in form's limit (MAX_LOGIN_FAILURES per username and address in LOGIN_WINDOW)."""
    user = require(session, username)
    if recent_failures(session, now, username, ip) >= MAX_LOGIN_FAILURES:
        minutes = int(LOGIN_WINDOW.total_seconds() // 60)
        raise AccountError(f"too many wrong passwords for this account from here; try again "
                           f"in up to {minutes} minutes", field="current_password")
    if not check_password_hash(user.password_hash, current):
        raise WrongCurrentPassword("that is not your current password",
                                   field="current_password")
    return set_password(session, now, username, new, actor=username)


def record_wrong_password(session: Session, now: dt.datetime, username: str,
                          ip: str | None) -> None:
    audit(session, now, username, LOGIN_FAILED, username, ip,
          {"why": "wrong current password when changing it"})


def check_keeps_an_admin(session: Session, user: User, *, role: str, active: bool) -> None:
    """Refuse to demote or disable the last active admin: nobody could manage textback."""
    if not (user.active and user.role == "admin") or (active and role == "admin"):
        return
    others = session.scalar(select(func.count()).select_from(User).where(
        User.role == "admin", User.active.is_(True), User.id != user.id))
    if others:
        return
    field, what = ("active", "disabled") if not active else ("role", "made staff")
    raise AccountError(f"{user.username!r} is the last active admin and cannot be {what}; "
                       "make another user an admin first, or nobody could manage textback "
                       "any more", field=field)


def check_changes(session: Session, user: User, *, role: str | _Keep = KEEP,
                  phone: str | _Keep | None = KEEP, extension: str | _Keep | None = KEEP,
                  active: bool | _Keep = KEEP, region: str = "US") -> dict[str, Any]:
    """The given fields as they would be stored (a phone in E.164), changing nothing.

    Raises one AccountError naming every field at fault, so a form can show them all.
    """
    given: dict[str, Any] = {"role": role, "phone": phone, "extension": extension,
                             "active": active}
    wanted: dict[str, Any] = {}
    problems: dict[str, str] = {}
    for field, value in given.items():
        if value is KEEP:
            continue
        try:
            if field == "role":
                wanted[field] = _check_role(value)
            elif field == "phone":
                wanted[field] = _check_phone(value, region)
            elif field == "extension":
                wanted[field] = _check_extension(value)
            else:
                wanted[field] = bool(value)
        except AccountError as exc:
            problems.update(exc.problems)
    if "role" not in problems:
        try:
            check_keeps_an_admin(session, user, role=wanted.get("role", user.role),
                                 active=wanted.get("active", user.active))
        except AccountError as exc:
            problems.update(exc.problems)
    if problems:
        raise AccountError("; ".join(problems.values()), problems=problems)
    return wanted


def update_user(session: Session, now: dt.datetime, username: str, *, actor: str,
                role: str | _Keep = KEEP, phone: str | _Keep | None = KEEP,
                extension: str | _Keep | None = KEEP, active: bool | _Keep = KEEP,
                region: str = "US") -> list[str]:
    """Change an account's role, mobile, desk extension or active flag: all or none.

    Every given field is checked before anything changes (check_changes). Each field
    that really changes gets an audit row with its old and new value. Returns the
    names of the changed fields (empty when nothing changed).
    """
    user = require(session, username)
    wanted = check_changes(session, user, role=role, phone=phone, extension=extension,
                           active=active, region=region)
    changed = [field for field, value in wanted.items() if getattr(user, field) != value]
    for field in changed:
        old = getattr(user, field)
        setattr(user, field, wanted[field])
        action = USER_CHANGED
        if field == "active":
            action = USER_ENABLED if wanted[field] else USER_DISABLED
            # disabling ends the sessions; enabling starts from a new generation too,
            # so a session from before the account was disabled never comes back
            end_sessions(user)
        audit(session, now, actor, action, username,
              details={"field": field, "from": old, "to": wanted[field]})
    return changed


def disable(session: Session, now: dt.datetime, username: str, *, actor: str) -> User:
    """Disabled, not deleted: the audit log keeps naming the person, sessions end at once."""
    user = require(session, username)
    check_keeps_an_admin(session, user, role=user.role, active=False)
    user.active = False
    end_sessions(user)
    audit(session, now, actor, USER_DISABLED, username)
    return user


def has_admin(session: Session) -> bool:
    return bool(session.scalar(select(func.count()).select_from(User).where(
        User.role == "admin", User.active.is_(True))))


def recent_failures(session: Session, now: dt.datetime, username: str, ip: str | None) -> int:
    """Failed logins for this username from this address inside the window.

    Counted from the audit log, so every waitress thread (and a restart) sees the
    same count; a successful login from the same place starts the count again.
    """
    since = now - LOGIN_WINDOW
    last_ok = session.scalar(select(func.max(AuditEntry.at)).where(
        AuditEntry.target == username, AuditEntry.action == LOGIN, AuditEntry.ip == ip,
        AuditEntry.at >= since))
    if last_ok is not None:
        since = max(since, last_ok)
    return session.scalar(select(func.count()).select_from(AuditEntry).where(
        AuditEntry.target == username, AuditEntry.action == LOGIN_FAILED,
        AuditEntry.ip == ip, AuditEntry.at >= since)) or 0


@functools.cache
def _unknown_user_hash() -> str:
    return generate_password_hash(secrets.token_urlsafe(16))


class LoginLocked(Exception):
    """Too many failed logins for this username from this address; try again later."""


def authenticate(session: Session, now: dt.datetime, username: str, password: str,
                 ip: str | None) -> User | None:
    """The active user with this username and password, or None; audited either way.

    Raises LoginLocked (without checking the password) once the failures in the
    window reach the limit, so guessing is capped at a few tries per quarter hour.
    """
    username = username.strip()[:200]
    if recent_failures(session, now, username, ip) >= MAX_LOGIN_FAILURES:
        audit(session, now, None, LOGIN_LOCKED, username, ip)
        raise LoginLocked(username)
    user = find(session, username)
    if user is not None and user.active and check_password_hash(user.password_hash, password):
        user.last_login_at = now
        audit(session, now, username, LOGIN, username, ip)
        return user
    # the same row whether the name is unknown, disabled or the password wrong: the
    # page must not tell an attacker which usernames exist
    if user is None:
        # the same hashing work as a real account, so timing does not tell either
        check_password_hash(_unknown_user_hash(), password)
    why = "unknown user" if user is None else ("disabled" if not user.active else "password")
    audit(session, now, None, LOGIN_FAILED, username, ip, {"why": why})
    return None
