"""Message experiments: which text (or delay) each caller gets while a test runs, and the
test's lifecycle (start, stop, adopt the winner), audited.

A text-back template may be composed of a *hook* (the opening line: "I'm on a job right
now—"), a *body* and a *CTA* (the call to action: "Reply and tell me what you need").
An experiment tests, on one template:

* ``hook``      two hooks, body and CTA fixed (cells A, B)
* ``cta``       two CTAs, hook and body fixed (cells A, B)
* ``hook_cta``  2×2: two hooks × two CTAs (cells AA, AB, BA, BB: hook level, CTA level)
* ``text``      two whole texts (the A/B tests of templates.*_b before; level A may be
                None: the template as it stands)

or, over every text-back template, the text-back delay (``delay``: cells A and B, e.g.
0 s and 30 s).

The cell is chosen by the caller's number alone (cell_for): factor i takes bit i of the
SHA-256 of the E.164 number (8 bytes per factor, odd → level B). Factor 0 is exactly the
A/B variant of before (agent.calls.policy.variant_for), so a caller keeps their side
when an old A/B test becomes an experiment; a restart or a replay decides the same, and
a second call from the same number gets the same text. It is a pure, cheap function:
one hash per text-back.

At most one experiment runs per template, and a delay test runs alone (a text-back is
a cell of one experiment: Message.experiment_id and Message.variant).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent.rules import settings, templates
from agent.store import audit

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from agent.store.models import Experiment

log = logging.getLogger(__name__)

KINDS = {"hook": "Two hooks", "cta": "Two calls to action", "hook_cta": "Hook × CTA (2×2)",
         "text": "Two whole texts", "delay": "Text-back delay"}
FACTORS = {"hook": ("hook",), "cta": ("cta",), "hook_cta": ("hook", "cta"),
           "text": ("text",), "delay": ("delay",)}
FACTOR_LABELS = {"hook": "Hook", "cta": "CTA", "text": "Text", "delay": "Delay"}
TEMPLATES = {"templates.business_hours": "Missed call while open",
             "templates.after_hours": "Missed call while closed",
             "templates.voicemail": "Missed call with a voicemail"}
RUNNING, STOPPED, ADOPTED = "running", "stopped", "adopted"
MAX_DELAY = dt.timedelta(minutes=10)  # a later "sorry we missed you" reads oddly


class ExperimentError(ValueError):
    """An experiment cannot start or be adopted; the message says what to change."""


@dataclass(frozen=True, slots=True)
class Plan:
    """A running experiment as policy needs it: per cell, the text or the delay."""

    experiment_id: int
    factors: int  # 1 or 2
    template: str | None  # None: a delay test, every text-back template
    texts: Mapping[str, str] | None  # cell → template text (None for a delay test)
    delays: Mapping[str, dt.timedelta] | None  # cell → delay (delay tests only)


def cell_for(number: str, factors: int) -> str:
    """The caller's cell: "A"/"B" for one factor, "AA".."BB" for two (see module doc)."""
    digest = hashlib.sha256(number.encode()).digest()
    return "".join("B" if int.from_bytes(digest[8 * i:8 * i + 8], "big") % 2 else "A"
                   for i in range(factors))


def cells(kind: str) -> tuple[str, ...]:
    """Every cell of an experiment kind, in table order."""
    if len(FACTORS[kind]) == 2:
        return ("AA", "AB", "BA", "BB")
    return ("A", "B")


def compose(hook: str, body: str, cta: str) -> str:
    """A template from its parts: hook, body and CTA, each a sentence or more."""
    return " ".join(part.strip() for part in (hook, body, cta) if part.strip())


def _level(values: Sequence[str | None], index: int) -> str | None:
    return values[index] if len(values) > 1 else values[0]


def cell_text(kind: str, design: Mapping[str, Any], cell: str, current: str) -> str | None:
    """The template text of `cell`; `current` is the template in force (text level None).
    None for a delay test."""
    if kind == "delay":
        return None
    if kind == "text":
        chosen = design["text"]["AB".index(cell)]
        return current if chosen is None else chosen
    hook_at = "AB".index(cell[0]) if "hook" in FACTORS[kind] else 0
    cta_at = "AB".index(cell[-1]) if "cta" in FACTORS[kind] else 0
    return compose(_level(design["hook"], hook_at) or "", design.get("body", ""),
                   _level(design["cta"], cta_at) or "")


def describe_cell(kind: str, design: Mapping[str, Any], cell: str) -> str:
    """What a cell sends, in a few words for the table: "Hook A × CTA B", "30s"."""
    if kind == "delay":
        return settings.format_duration(dt.timedelta(seconds=design["delay"]["AB".index(cell)]))
    names = [f"{FACTOR_LABELS[factor]} {level}" for factor, level in zip(FACTORS[kind], cell,
                                                                            strict=True)]
    return " × ".join(names)


def plan(row: Experiment, values: Mapping[str, Any]) -> Plan:
    """The policy's view of a running experiment; `values` are the settings in force."""
    return _plan(row.id, row.kind, row.template, row.design, values)


def _plan(experiment_id: int, kind: str, template: str | None, design: Mapping[str, Any],
          values: Mapping[str, Any]) -> Plan:
    if kind == "delay":
        seconds = design["delay"]
        return Plan(experiment_id, 1, None, None,
                    {cell: dt.timedelta(seconds=seconds[i]) for i, cell in enumerate("AB")})
    assert template is not None
    current = values[template]
    return Plan(experiment_id, len(FACTORS[kind]), template,
                {cell: cell_text(kind, design, cell, current) or current
                 for cell in cells(kind)}, None)


@functools.cache
def _running_query() -> Any:
    """The running experiments, four columns on the status index; built once."""
    from sqlalchemy import select

    from agent.store.models import Experiment
    from agent.store.prepared import Prepared

    table = Experiment.__table__
    return Prepared(select(table.c.id, table.c.kind, table.c.template, table.c.design)
                    .where(table.c.status == RUNNING).order_by(table.c.id))


def running_plans(session: Session, values: Mapping[str, Any]) -> tuple[Plan, ...]:
    """The running experiments: read for every call, so a Core statement built once
    (tens of microseconds; the ORM's entities cost ten times that)."""
    return tuple(_plan(*row, values) for row in _running_query().rows(session, {}))


def pick(plans: Sequence[Plan], template: str | None) -> Plan | None:
    """The running experiment for a template (a delay test when `template` is None)."""
    for candidate in plans:
        if candidate.template == template:
            return candidate
    return None


# ---------------------------------------------------------------- lifecycle


def design_from_form(kind: str, form: Mapping[str, str]) -> dict[str, Any]:
    """The design of a new experiment from what the owner typed, checked.

    Fields: hook_a, hook_b, body, cta_a, cta_b (hook/cta/hook_cta), text_a, text_b
    (text), delay_a, delay_b (delay, durations like 0s and 30s). Every cell's text is
    checked as a template, so an experiment never sends a text the settings would refuse.
    """
    if kind not in KINDS:
        raise ExperimentError(f"unknown experiment kind {kind!r} (known: {', '.join(KINDS)})")

    def field(name: str) -> str:
        return " ".join(str(form.get(name, "")).split())

    if kind == "delay":
        delays = []
        for name in ("delay_a", "delay_b"):
            try:
                value = settings.parse_duration(field(name) or "?")
            except ValueError as error:
                raise ExperimentError(f"{name}: {error}") from None
            if value > MAX_DELAY:
                raise ExperimentError(f"{name}: at most {settings.format_duration(MAX_DELAY)}")
            delays.append(int(value.total_seconds()))
        if delays[0] == delays[1]:
            raise ExperimentError("delay_a and delay_b are the same: nothing to compare")
        return {"delay": delays}
    if kind == "text":
        design: dict[str, Any] = {"text": [field("text_a"), field("text_b")]}
    else:
        hooks = [field("hook_a")] + ([field("hook_b")] if "hook" in FACTORS[kind] else [])
        ctas = [field("cta_a")] + ([field("cta_b")] if "cta" in FACTORS[kind] else [])
        design = {"hook": hooks, "body": field("body"), "cta": ctas}
        for name, levels in (("hook", hooks), ("cta", ctas)):
            if len(levels) == 2 and levels[0] == levels[1]:
                raise ExperimentError(f"{name}_a and {name}_b are the same: nothing to compare")
    for cell in cells(kind):
        text = cell_text(kind, design, cell, "")
        try:
            templates.validate(text or "")
        except templates.TemplateError as error:
            raise ExperimentError(f"cell {cell}: {error}") from None
    if kind == "text" and design["text"][0] == design["text"][1]:
        raise ExperimentError("text_a and text_b are the same: nothing to compare")
    return design


def start(session: Session, now: dt.datetime, *, name: str, kind: str,
          template: str | None, design: Mapping[str, Any], actor: str,
          ip: str | None = None) -> Experiment:
    """Start an experiment, audited; refused while another covers the same texts."""
    from sqlalchemy import select

    from agent.store.models import Experiment

    if kind == "delay":
        template = None
    elif template not in TEMPLATES:
        raise ExperimentError(f"template must be one of {', '.join(TEMPLATES)}")
    running = list(session.scalars(select(Experiment).where(Experiment.status == RUNNING)))
    for other in running:
        if kind == "delay" or other.kind == "delay" or other.template == template:
            raise ExperimentError(f"experiment {other.name!r} is running on these texts; "
                                  "stop it first (one test at a time keeps the cells clean)")
    title = " ".join(name.split())[:200] or KINDS[kind]
    row = Experiment(name=title, kind=kind, template=template, design=dict(design),
                     status=RUNNING, started_at=now, started_by=actor)
    session.add(row)
    session.flush()
    audit.audit(session, now, actor, audit.EXPERIMENT_STARTED, f"experiment #{row.id}", ip,
                {"name": title, "kind": kind, "template": template, "design": dict(design)})
    return row


def stop(session: Session, row: Experiment, now: dt.datetime, *, actor: str,
         ip: str | None = None) -> None:
    """End a running experiment without changing any template, audited."""
    if row.status != RUNNING:
        raise ExperimentError(f"experiment {row.name!r} is not running")
    row.status, row.stopped_at, row.stopped_by = STOPPED, now, actor
    audit.audit(session, now, actor, audit.EXPERIMENT_STOPPED, f"experiment #{row.id}", ip,
                {"name": row.name})


def adopt(session: Session, row: Experiment, cell: str, now: dt.datetime, *, actor: str,
          ip: str | None = None, region: str | None = None) -> None:
    """Make `cell` the text everyone gets: its text is written to the template (or its
    delay to textback.delay) as a settings change, and the experiment ends. Audited."""
    if row.status != RUNNING:
        raise ExperimentError(f"experiment {row.name!r} is not running")
    if cell not in cells(row.kind):
        raise ExperimentError(f"cell {cell!r} is not one of {', '.join(cells(row.kind))}")
    if row.kind == "delay":
        key = "textback.delay"
        value = settings.format_duration(
            dt.timedelta(seconds=row.design["delay"]["AB".index(cell)]))
    else:
        assert row.template is not None
        key = row.template
        value = cell_text(row.kind, row.design, cell, settings.get(session, key))
    settings.change(session, key, value, now, actor=actor, ip=ip, region=region)
    row.status, row.stopped_at, row.stopped_by, row.adopted_cell = ADOPTED, now, actor, cell
    audit.audit(session, now, actor, audit.EXPERIMENT_ADOPTED, f"experiment #{row.id}", ip,
                {"name": row.name, "cell": cell, "key": key})
