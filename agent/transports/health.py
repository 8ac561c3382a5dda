"""The SMS transports' health, published for the web UI's transports panel.

The web process has no link to the agent, so the agent writes what it sees into
`transport_status` (one row per transport): whether the transport can send now,
why not, the modem's signal and operator, the last send error. A row is written
when something changes and at least every HEARTBEAT seconds, so a row older than
STALE_AFTER means the agent is not running (or cannot reach its database).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy.orm import Session

from agent.store.models import TransportStatus

log = logging.getLogger(__name__)

HEARTBEAT = 30.0  # seconds between rewrites of an unchanged status
STALE_AFTER = dt.timedelta(seconds=3 * HEARTBEAT)
UP, DOWN = "up", "down"


@dataclass(frozen=True, slots=True)
class Health:
    """What one transport reports about itself right now."""

    name: str
    state: str  # UP | DOWN
    detail: str  # what is up ("AMI at pbx:5038"), or why it is down
    signal_dbm: int | None = None
    operator: str | None = None


@dataclass(frozen=True, slots=True)
class SendFailure:
    """The last error a transport gave when asked to send (kept by the dispatcher)."""

    error: str
    at: dt.datetime


def publish(session: Session, health: Health, failure: SendFailure | None,
            now: dt.datetime) -> None:
    """Upsert the transport's row (the caller commits)."""
    row = session.get(TransportStatus, health.name)
    if row is None:
        row = TransportStatus(name=health.name)
        session.add(row)
    row.state, row.detail = health.state, health.detail
    row.signal_dbm, row.operator = health.signal_dbm, health.operator
    if failure is not None:
        row.last_error, row.last_error_at = failure.error, failure.at
    row.updated_at = now


def publish_all(session: Session, states: Iterable[tuple[Health, SendFailure | None]],
                now: dt.datetime) -> None:
    """Upsert several transports' rows at once (the caller commits)."""
    for health, failure in states:
        publish(session, health, failure, now)


def is_stale(row: TransportStatus, now: dt.datetime) -> bool:
    """True when the agent has not reported this transport for a while."""
    return now - row.updated_at > STALE_AFTER
