"""The message experiments' counts from the database, weighed by agent.reports.experiments.

A text-back counts for its experiment's cell (Message.experiment_id, Message.variant)
once it left (submitted, sent or delivered); a reply is the customer's first text within
the reply window after it; a booking is the contact marked booked after it. Each
experiment's texts are read through ix_messages_experiment; experiments are a few
thousand texts, so the replies' intents are classified here, in Python, with the
business's own phrases (agent.rules.intents).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session, aliased

from agent.reports import experiments as stats
from agent.reports.queries import LEFT, REPLY_WINDOW_DAYS
from agent.rules import experiments, intents, settings
from agent.store.models import Contact, Experiment, Message, MessageEvent

log = logging.getLogger(__name__)

STATUS_LABELS = {experiments.RUNNING: "running", experiments.STOPPED: "stopped",
                 experiments.ADOPTED: "winner adopted"}


@dataclass(frozen=True)
class ExperimentReport:
    id: int
    name: str
    kind: str
    kind_label: str
    template: str | None
    status: str
    status_label: str
    started_at: dt.datetime
    stopped_at: dt.datetime | None
    adopted_cell: str | None
    cells: list[stats.CellCounts]
    texts: dict[str, str]  # cell → what it sends (text or delay)
    factors: list[stats.FactorResult]
    best: str | None  # the cell the results point to, while any factor has one

    @property
    def template_label(self) -> str:
        return experiments.TEMPLATES.get(self.template or "", "every text-back")

    @property
    def reached_result(self) -> bool:
        return any(factor.winner for factor in self.factors)


def _levels(row: Experiment) -> dict[str, list[str | None]]:
    return {factor: list(row.design.get(factor, [])) for factor in
            experiments.FACTORS[row.kind]}


def cell_counts(session: Session, row: Experiment,
                classifier: intents.Classifier) -> list[stats.CellCounts]:
    """Sent, replied, qualified and booked per cell of one experiment."""
    reply = aliased(Message)
    window = dt.timedelta(days=REPLY_WINDOW_DAYS)
    left = exists().where(MessageEvent.message_id == Message.id,
                          MessageEvent.status.in_(LEFT))
    # the first reply in the window, one index seek per text (ix_messages_number_created)
    first_reply = (select(reply.body).where(
        reply.number == Message.number, reply.direction == "in",
        reply.created_at >= Message.created_at)
        .order_by(reply.created_at).limit(1).correlate(Message).scalar_subquery())
    first_reply_at = (select(func.min(reply.created_at)).where(
        reply.number == Message.number, reply.direction == "in",
        reply.created_at >= Message.created_at).correlate(Message).scalar_subquery())
    texts = session.execute(
        select(Message.variant, Message.created_at, Contact.booked_at, first_reply_at,
               first_reply)
        .outerjoin(Contact, Contact.id == Message.contact_id)
        .where(Message.experiment_id == row.id, Message.direction == "out", left)
    ).all()
    tally = {cell: [0, 0, 0, 0] for cell in experiments.cells(row.kind)}
    for variant, created, booked_at, reply_at, body in texts:
        if variant not in tally:
            continue
        side = tally[variant]
        side[0] += 1
        if reply_at is not None and reply_at < created + window and body is not None:
            side[1] += 1
            side[2] += stats.qualified_reply(classifier.classify(body))
        side[3] += booked_at is not None and booked_at >= created
    return [stats.CellCounts(cell, experiments.describe_cell(row.kind, row.design, cell),
                             *counts) for cell, counts in tally.items()]


def report(session: Session, row: Experiment,
           values: dict[str, object] | None = None) -> ExperimentReport:
    values = values if values is not None else settings.all_values(session)
    cells = cell_counts(session, row, intents.PhraseRules.from_settings(values))
    factors = stats.factor_results(experiments.FACTORS[row.kind], _levels(row), cells)
    current = str(values.get(row.template, "")) if row.template else ""
    texts = {cell: experiments.cell_text(row.kind, row.design, cell, current)
             or experiments.describe_cell(row.kind, row.design, cell)
             for cell in experiments.cells(row.kind)}
    return ExperimentReport(
        row.id, row.name, row.kind, experiments.KINDS[row.kind], row.template, row.status,
        STATUS_LABELS.get(row.status, row.status), row.started_at, row.stopped_at,
        row.adopted_cell, cells, texts, factors, stats.best_cell(factors, cells))


def recent(session: Session, now: dt.datetime, *, days: int = 90,
           limit: int = 10) -> list[ExperimentReport]:
    """The running experiments and those ended in the last `days`, newest first."""
    since = now - dt.timedelta(days=days)
    rows: Sequence[Experiment] = session.scalars(
        select(Experiment).where((Experiment.status == experiments.RUNNING)
                                 | (Experiment.stopped_at >= since))
        .order_by(Experiment.id.desc()).limit(limit)).all()
    values = settings.all_values(session)
    return [report(session, row, values) for row in rows]


def count_running(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(Experiment)
                          .where(Experiment.status == experiments.RUNNING)) or 0
