"""Accounts (admins only): who can sign in, with which role; add and disable people.

The same rules as `textback users` (agent.accounts), and every change is audited
under the admin's name.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import PasswordField, SelectField, StringField
from wtforms.validators import DataRequired, Length, Optional

from agent import accounts
from agent.models import User
from web.auth import admin_required
from web.db import get_session

bp = Blueprint("users", __name__, url_prefix="/users")


class AddUserForm(FlaskForm):
    username = StringField("Username", validators=[DataRequired(), Length(max=64)])
    role = SelectField("Role", choices=["staff", "admin"])
    password = PasswordField("Password (at least 10 characters)",
                             validators=[DataRequired(), Length(max=1024)])
    phone = StringField("Mobile for alerts", validators=[Optional(), Length(max=64)])
    extension = StringField("Desk extension", validators=[Optional(), Length(max=64)])


class DisableForm(FlaskForm):
    """No fields: the CSRF token is what makes the button safe."""


@bp.route("", methods=["GET", "POST"])
@admin_required
def index() -> Any:
    session = get_session()
    form = AddUserForm()
    status = 200
    if form.validate_on_submit():
        try:
            accounts.add_user(session, dt.datetime.now(dt.UTC), username=form.username.data or "",
                              password=form.password.data or "", role=form.role.data or "",
                              actor=current_user.username, phone=form.phone.data or None,
                              extension=form.extension.data or None,
                              region=current_app.config["REGION"])
        except accounts.AccountError as exc:
            session.rollback()
            flash(f"Not added: {exc}.", "error")
            status = 400
        else:
            session.commit()
            flash(f"Added {form.username.data}.", "info")
            return redirect(url_for("users.index"))
    elif request.method == "POST":
        status = 400
    users = session.scalars(select(User).order_by(User.username)).all()
    return render_template("users/index.html", users=users, form=form,
                           disable_form=DisableForm()), status


@bp.post("/<username>/disable")
@admin_required
def disable(username: str) -> Any:
    session = get_session()
    if DisableForm().validate_on_submit():
        try:
            accounts.disable(session, dt.datetime.now(dt.UTC), username,
                             actor=current_user.username)
        except accounts.AccountError as exc:
            session.rollback()
            flash(f"Not disabled: {exc}.", "error")
        else:
            session.commit()
            flash(f"Disabled {username}; their sessions have ended.", "info")
    return redirect(url_for("users.index"))
