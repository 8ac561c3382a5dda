"""The settings pages (admins only): every business rule of agent.rules.settings, by area.

One page per section, each one form. Saving validates every field of the section with
the catalogue's own validators and stores all of them or none, in one transaction;
each change is audited like `textback settings set` (old and new value). A value saved
equal to its default forgets the stored row, so the key follows the default again,
including a better default shipped by a later version.

The weekly hours are a grid (a day, an "open" box, its shifts) composed into the
`hours.weekly` string; what is stored reads back into the same grid. Templates get a
live preview: a JSON endpoint renders the typed text with sample values through the
agent's own functions (policy.merge_fields, templates.render, templates.segments), so
the preview and the real text never disagree.

The transports page shows what the running agent last published (agent.transports.health), the
outbox queue, and queues test texts pinned to one transport; the agent sends them.

This module holds the blueprint, the section pages and every URL of the area; each
other page lives in its own module: fields (which key goes where, labels, how a field
is edited), forms (fields, saving, drawing a section), hours, preview, transports and
experiments (start, stop and adopt the winner of a message experiment).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, flash, redirect, request, url_for

from agent.rules import settings
from web.auth import admin_required
from web.db import get_session
from web.settings import experiments, hours, preview, transports
from web.settings.fields import SECTIONS, find_section, label, section_keys, sent, submitted
from web.settings.forms import build_fields, render_section, save, saved_message, too_long

bp = Blueprint("settings", __name__, url_prefix="/settings")


@bp.get("")
@admin_required
def index() -> Any:
    return redirect(url_for("settings.section", slug=SECTIONS[0].slug))


@bp.route("/<slug>", methods=["GET", "POST"])
@admin_required
def section(slug: str) -> Any:
    page = find_section(slug)
    if slug == "hours":
        return hours.page(page)
    session = get_session()
    keys = section_keys(slug)
    values = settings.all_values(session)
    if request.method == "GET":
        return render_section(page, build_fields(session, keys, values))
    form = request.form
    if too_long(form):
        abort(413)
    reset = form.get("reset")
    if reset in keys:
        flash(f"{label(reset)} shows its default again. Save to keep it.", "info")
        return render_section(page, build_fields(session, keys, values, form, reset=reset))
    errors, changed = save(session, {key: submitted(key, form) for key in keys
                                     if sent(key, form)})
    if errors:
        return render_section(page, build_fields(session, keys, values, form, errors),
                              400, failed=True)
    flash(saved_message(changed), "info")
    return redirect(url_for("settings.section", slug=slug))


# the other pages' views live with their page; their URLs and endpoint names are here,
# so the whole area reads in one place (the templates' url_for names these endpoints)
bp.add_url_rule("/preview", "preview", preview.preview, methods=["POST"])
bp.add_url_rule("/transports", "transports_page", transports.transports_page, methods=["GET"])
bp.add_url_rule("/transports/panel", "transports_panel", transports.transports_panel,
                methods=["GET"])
bp.add_url_rule("/transports/test", "send_test", transports.send_test, methods=["POST"])
bp.add_url_rule("/experiments", "experiments", experiments.experiments_page, methods=["GET"])
bp.add_url_rule("/experiments/start", "start_experiment", experiments.start_experiment,
                methods=["POST"])
bp.add_url_rule("/experiments/<int:experiment_id>/stop", "stop_experiment",
                experiments.stop_experiment, methods=["POST"])
bp.add_url_rule("/experiments/<int:experiment_id>/adopt", "adopt_winner",
                experiments.adopt_winner, methods=["POST"])
