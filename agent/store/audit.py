"""The audit log: who changed what, when and from where, and every action it names.

The actions are declared here, once, so the log's vocabulary can be read in one
place and a page or a report filtering on an action cannot misspell it. An
entry names its target ("contact #12", a username, a settings key), never a
customer's number or name where avoidable: the log must not become a second copy
of the customers' data (an erasure scrubs what it finds there anyway).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the action names are read without SQLAlchemy (`textback settings`)
    from sqlalchemy.orm import Session

    from agent.store.models import AuditEntry

log = logging.getLogger(__name__)

# signing in and out
LOGIN, LOGIN_FAILED, LOGIN_LOCKED, LOGOUT = "login", "login_failed", "login_locked", "logout"
# an admin's "sign out everywhere" for an account
SESSIONS_ENDED = "sessions_ended"
# staff accounts
USER_ADDED, USER_CHANGED, PASSWORD_CHANGED, USER_DISABLED = (
    "user_added", "user_changed", "password_changed", "user_disabled")
USER_ENABLED = "user_enabled"
# settings
SETTING_CHANGED = "setting_changed"
# contacts: edited by staff, an opt-out asked for by phone, a GDPR erasure
CONTACT_EDITED, CONTACT_OPTED_OUT, CONTACT_ERASED = (
    "contact.edit", "contact.opt_out", "contact.erase")
# the inbox's "Booked a job" and its undo
BOOKED, BOOKING_CLEARED = "booked", "booking_cleared"
# message experiments (agent.rules.experiments): started, stopped, the winner adopted
EXPERIMENT_STARTED, EXPERIMENT_STOPPED, EXPERIMENT_ADOPTED = (
    "experiment.start", "experiment.stop", "experiment.adopt")
# the inbox's internal notes (never sent) and the admins' saved replies
NOTE_ADDED = "note_added"
SAVED_REPLY_CHANGED, SAVED_REPLY_DELETED = "saved_reply_changed", "saved_reply_deleted"
# the inbox's "Qualified" mark (a real lead, for the dashboard) and its undo
QUALIFIED, QUALIFIED_CLEARED = "qualified", "qualified_cleared"

# the actor of erasures made by the retention limit (privacy.retention), not by a person
RETENTION = "retention"


def audit(session: Session, now: dt.datetime, actor: str | None, action: str,
          target: str | None = None, ip: str | None = None,
          details: dict[str, Any] | None = None) -> AuditEntry:
    """Add one entry; the caller commits it with the change it records."""
    from agent.store.models import AuditEntry

    entry = AuditEntry(at=now, actor=actor, action=action, target=target, ip=ip,
                       details=details or {})
    session.add(entry)
    logged(actor, action, target, ip)
    return entry


def logged(actor: str | None, action: str, target: str | None, ip: str | None) -> None:
    """The log line of an entry (store/lite.py writes the row itself)."""
    log.info("audit: %s %s %s%s", actor or "-", action, target or "",
             f" from {ip}" if ip else "")
