"""Rings the web app asks of the agent: an emergency text that came through a messaging
API's webhook (web/hooks.py) rings the on-call phone as one that came by SIP or the
modem does (agent.daemon `ring`), though the web process has no link to the PBX.

The web app writes a `ring_requests` row; the agent's timers loop claims it once — a
conditional UPDATE, so two agents never ring twice — and places the call: the on-call
target first, then the customer. A request the agent picks up more than STALE late is
failed rather than rung (the alert texts went out meanwhile).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from agent.pbx import originate
from agent.store.models import CallbackRequest, RingRequest
from agent.store.prepared import Prepared

log = logging.getLogger(__name__)

PENDING, CALLING, RINGING, FAILED = "pending", "calling", "ringing", "failed"
STALE = dt.timedelta(minutes=2)


@dataclass(frozen=True, slots=True)
class Claimed:
    id: int
    target: str
    number: str
    label: str


def request(session: Session, target: str, number: str, label: str,
            now: dt.datetime) -> RingRequest:
    """Ask the agent to ring `target`, then connect it to `number` (the caller commits)."""
    ring = RingRequest(target=target, number=number, label=label, status=PENDING,
                       created_at=now)
    session.add(ring)
    return ring


# a web request the agent acts on once: the desk's call back or an emergency ring
Request = TypeVar("Request", RingRequest, CallbackRequest)
# asked every second, and nearly always answered "none": a look that costs a few
# microseconds before the ORM's query, which costs a hundred
_ANY_PENDING = {model: Prepared(select(model.__table__.c.id)
                                .where(model.__table__.c.status == PENDING).limit(1))
                for model in (RingRequest, CallbackRequest)}


def claim_once(session: Session, model: type[Request], now: dt.datetime, worker: str,
               stale: dt.timedelta, too_late: str) -> list[Request]:
    """Claim this worker's share of the pending requests, oldest first: a conditional
    UPDATE, so each is claimed by exactly one agent. One picked up more than `stale`
    after it was asked is failed with `too_late` instead of returned."""
    claimed: list[Request] = []
    if _ANY_PENDING[model].first(session, {}) is None:
        return claimed
    for row in session.scalars(select(model).where(model.status == PENDING)
                               .order_by(model.id).limit(10)):
        won = session.execute(
            update(model).where(model.id == row.id, model.status == PENDING)
            .values(status=CALLING, claimed_by=worker)
            .execution_options(synchronize_session=False)).rowcount == 1
        if not won:
            continue
        session.refresh(row)
        if now - row.created_at > stale:
            finish_request(session, model, row.id, FAILED, too_late, now)
            continue
        claimed.append(row)
    return claimed


def finish_request(session: Session, model: type[Request], request_id: int, status: str,
                   detail: str, now: dt.datetime) -> None:
    row = session.get(model, request_id)
    if row is not None:
        row.status, row.detail, row.done_at = status, detail, now


def claim_pending(session: Session, now: dt.datetime, worker: str) -> list[Claimed]:
    late = (f"not placed: the agent picked it up more than "
            f"{int(STALE.total_seconds() // 60)} minutes late")
    return [Claimed(ring.id, ring.target, ring.number, ring.label)
            for ring in claim_once(session, RingRequest, now, worker, STALE, late)]


def finish(session: Session, ring_id: int, status: str, detail: str,
           now: dt.datetime) -> None:
    finish_request(session, RingRequest, ring_id, status, detail, now)


async def place(db: Callable[[Callable[[Session], Any]], Awaitable[Any]],
                ami_action: Callable[..., Awaitable[Mapping[str, str]]], trunk: str,
                claimed: list[Claimed]) -> None:
    """Place the rings claimed already (claim_pending), recording how each went."""
    for ring in claimed:
        try:
            action = originate.connect_action(ring.target, ring.number, trunk=trunk,
                                              label=ring.label)
            await ami_action(action, timeout=5)
        except Exception as exc:  # AmiError, a bad target: recorded, never retried
            status, detail = FAILED, f"not placed: {exc}"
            log.error("could not ring %s for %s (%s): %s; the alert texts still went out",
                      ring.target, ring.number, ring.label, exc)
        else:
            status, detail = RINGING, f"ringing {ring.target}, then the customer"
            log.info("ringing %s to connect %s (%s)", ring.target, ring.number, ring.label)
        await db(lambda s, r=ring.id, st=status, d=detail:
                 finish(s, r, st, d, dt.datetime.now(dt.UTC)))
