"""The experiments page: start a message experiment (two hooks, two CTAs, 2×2, two texts
or two delays), stop one, or adopt its winner (written to the template, the test ended).
Every action is one call into agent.rules.experiments, which audits it; the figures come
from agent.reports.experiment_counts, as on the dashboard.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from flask import abort, flash, redirect, render_template, request, url_for
from flask_login import current_user

from agent.reports import experiment_counts
from agent.rules import experiments
from agent.store.models import Experiment
from web import clock
from web.auth import admin_required
from web.db import get_session
from web.settings.fields import MAX_FIELD, default_region, sections

log = logging.getLogger(__name__)

FORM_FIELDS = ("name", "kind", "template", "hook_a", "hook_b", "body", "cta_a", "cta_b",
               "text_a", "text_b", "delay_a", "delay_b")


def _render(form: Mapping[str, str] | None = None, error: str | None = None,
            status: int = 200) -> Any:
    session = get_session()
    return render_template(
        "settings/experiments.html", section=None, sections=sections(),
        experiments=experiment_counts.recent(session, clock.now(), days=365, limit=20),
        kinds=experiments.KINDS, templates=list(experiments.TEMPLATES.items()),
        form=form or {"kind": "hook_cta", "delay_a": "0s", "delay_b": "30s"},
        error=error), status


def _experiment(experiment_id: int) -> Experiment:
    row = get_session().get(Experiment, experiment_id)
    if row is None:
        abort(404)
    return row


# the page's views; their URLs are with the area's in web/settings/__init__.py
@admin_required
def experiments_page() -> Any:
    return _render()


@admin_required
def start_experiment() -> Any:
    form = {name: (request.form.get(name) or "")[:MAX_FIELD] for name in FORM_FIELDS}
    session = get_session()
    try:
        design = experiments.design_from_form(form["kind"], form)
        row = experiments.start(session, clock.now(), name=form["name"], kind=form["kind"],
                                template=form["template"] or None, design=design,
                                actor=current_user.username, ip=request.remote_addr)
    except experiments.ExperimentError as error:
        session.rollback()
        return _render(form, f"Not started: {error}", 400)
    session.commit()
    flash(f"Experiment “{row.name}” started: each new caller gets one of its cells.", "info")
    return redirect(url_for("settings.experiments"))


@admin_required
def stop_experiment(experiment_id: int) -> Any:
    row = _experiment(experiment_id)
    return _change(lambda: experiments.stop(get_session(), row, clock.now(),
                                            actor=current_user.username,
                                            ip=request.remote_addr),
                   done=f"Experiment “{row.name}” stopped; the template is unchanged.")


@admin_required
def adopt_winner(experiment_id: int) -> Any:
    row = _experiment(experiment_id)
    cell = request.form.get("cell") or ""
    return _change(lambda: experiments.adopt(get_session(), row, cell, clock.now(),
                                             actor=current_user.username,
                                             ip=request.remote_addr, region=default_region()),
                   done=f"Cell {cell} of “{row.name}” adopted: everyone gets it now, and "
                        "the test ended.",
                   refused="Not adopted: ", errors=(experiments.ExperimentError, ValueError))


def _change(change: Callable[[], object], done: str, refused: str = "",
            errors: tuple[type[Exception], ...] = (experiments.ExperimentError,)) -> Any:
    """One change to a running experiment: committed and `done` said, or undone and the
    reason said; back to the page either way."""
    session = get_session()
    try:
        change()
    except errors as error:
        session.rollback()
        flash(f"{refused}{error}", "error")
        return redirect(url_for("settings.experiments"))
    session.commit()
    flash(done, "info")
    return redirect(url_for("settings.experiments"))
