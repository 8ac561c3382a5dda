"""Accounts: admins add, edit and disable people; everyone edits their own account.

The same rules as `textback users` (agent.people.accounts), and every change is audited
under the name of whoever made it. A password change keeps the session that made it
and ends every other session of that account; an admin may end them all ("sign out
everywhere"). web.auth ties each session to the account's session generation.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_user
from flask_wtf import FlaskForm
from sqlalchemy import select
from sqlalchemy.orm import Session
from wtforms import BooleanField, PasswordField, SelectField, StringField
from wtforms.validators import DataRequired, EqualTo, Length, Optional

from agent.people import accounts
from agent.store.models import User
from web.auth import SignedIn, admin_required, login_required
from web.db import get_session

log = logging.getLogger(__name__)

bp = Blueprint("users", __name__, url_prefix="/users")
account_bp = Blueprint("account", __name__)


class AddUserForm(FlaskForm):
    username = StringField("Username", validators=[DataRequired(), Length(max=64)])
    role = SelectField("Role", choices=["staff", "admin"])
    password = PasswordField("Password (at least 10 characters)",
                             validators=[DataRequired(), Length(max=1024)])
    phone = StringField("Mobile for alerts", validators=[Optional(), Length(max=64)])
    extension = StringField("Desk extension", validators=[Optional(), Length(max=64)])


class DisableForm(FlaskForm):
    """No fields: the CSRF token is what makes the button safe."""


class EditUserForm(FlaskForm):
    """What an admin may change about someone; the username stays (the audit log names it)."""

    role = SelectField("Role", choices=["staff", "admin"])
    phone = StringField("Mobile for alerts", validators=[Optional(), Length(max=64)])
    extension = StringField("Desk extension", validators=[Optional(), Length(max=64)])
    active = BooleanField("Active: can sign in")
    password = PasswordField("New password (at least 10 characters; empty keeps the current "
                             "one)", validators=[Optional(), Length(max=1024)])
    password_again = PasswordField("New password again",
                                   validators=[EqualTo("password", "the two passwords differ")])


class MyDetailsForm(FlaskForm):
    """Only what anyone may change about themselves: never their role or active flag."""

    phone = StringField("Mobile for alerts", validators=[Optional(), Length(max=64)])
    extension = StringField("Desk extension", validators=[Optional(), Length(max=64)])


class MyPasswordForm(FlaskForm):
    current_password = PasswordField("Current password",
                                     validators=[DataRequired(), Length(max=1024)])
    password = PasswordField("New password (at least 10 characters)",
                             validators=[DataRequired(), Length(max=1024)])
    password_again = PasswordField("New password again",
                                   validators=[DataRequired(),
                                               EqualTo("password", "the two passwords differ")])


def _refused(form: FlaskForm, exc: accounts.AccountError) -> None:
    """Put each problem next to its field; one without a field goes to the top."""
    log.info("account change not saved: %s", exc)
    for field, message in exc.problems.items():
        if field in form:
            form[field].errors.append(message)
        else:
            flash(f"{message}.", "error")
    if not exc.problems:
        flash(f"{exc}.", "error")
    flash("Nothing was saved; correct the fields marked below.", "error")


def _also_show(form: FlaskForm, check: Callable[[], object]) -> None:
    """When the form's own checks failed, still show what the account rules say about
    the other fields, so one round trip shows every mistake."""
    try:
        check()
    except accounts.AccountError as exc:
        for field, message in exc.problems.items():
            if field in form and not form[field].errors:
                form[field].errors.append(message)


def _keep_this_session(session: Session, username: str) -> None:
    """After someone's own new password: sign this browser in again under the new
    session generation, so only their other sessions end."""
    if username == current_user.username:
        login_user(SignedIn(accounts.require(session, username)))


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


@bp.post("/<username>/sign-out")
@admin_required
def sign_out_everywhere(username: str) -> Any:
    """End every session of this account now (a lost phone, a shared password)."""
    session = get_session()
    if not DisableForm().validate_on_submit():
        abort(400)
    try:
        accounts.sign_out_everywhere(session, dt.datetime.now(dt.UTC), username,
                                     actor=current_user.username, ip=request.remote_addr)
    except accounts.AccountError:
        abort(404)
    session.commit()
    flash(f"Every session of {username} has ended; they sign in again to continue.", "info")
    return redirect(url_for("users.edit", username=username))


@bp.route("/<username>", methods=["GET", "POST"])
@admin_required
def edit(username: str) -> Any:
    session = get_session()
    user = accounts.find(session, username)
    if user is None:
        abort(404)
    form = EditUserForm(obj=user)
    changes: dict[str, Any] = {
        "role": form.role.data or "", "phone": form.phone.data or None,
        "extension": form.extension.data or None, "active": bool(form.active.data),
        "region": current_app.config["REGION"]}
    status = 200
    if form.validate_on_submit():
        now = dt.datetime.now(dt.UTC)
        try:
            changed = accounts.update_user(session, now, username,
                                           actor=current_user.username, **changes)
            if form.password.data:
                accounts.set_password(session, now, username, form.password.data,
                                      actor=current_user.username)
                changed.append("password")
        except accounts.AccountError as exc:
            session.rollback()
            _refused(form, exc)
            status = 400
        else:
            session.commit()
            if "password" in changed:
                _keep_this_session(session, username)
            flash(f"Saved {username}: {', '.join(changed)} changed." if changed
                  else "Nothing changed.", "info")
            if username == current_user.username and user.role != "admin":
                # an admin who just made themselves staff can no longer open this page
                return redirect(url_for("account.index"))
            return redirect(url_for("users.edit", username=username))
    elif request.method == "POST":
        status = 400
        flash("Nothing was saved; correct the fields marked below.", "error")
        _also_show(form, lambda: accounts.check_changes(session, user, **changes))
        if form.password.data:
            _also_show(form, lambda: accounts.check_password(form.password.data or ""))
    return render_template("users/edit.html", user=user, form=form,
                           sign_out_form=DisableForm()), status


@account_bp.route("/account", methods=["GET", "POST"], endpoint="index")
@login_required
def my_account() -> Any:
    """Everyone's own mobile and desk extension."""
    session = get_session()
    me = accounts.require(session, current_user.username)
    details = MyDetailsForm(obj=me)
    status = 200
    if details.validate_on_submit():
        try:
            changed = accounts.update_user(
                session, dt.datetime.now(dt.UTC), me.username, actor=me.username,
                phone=details.phone.data or None, extension=details.extension.data or None,
                region=current_app.config["REGION"])
        except accounts.AccountError as exc:
            session.rollback()
            _refused(details, exc)
            status = 400
        else:
            session.commit()
            flash(f"Saved: {', '.join(changed)} changed." if changed else "Nothing changed.",
                  "info")
            return redirect(url_for("account.index"))
    elif request.method == "POST":
        status = 400
        flash("Nothing was saved; correct the fields marked below.", "error")
    return render_template("account/index.html", me=me, details=details,
                           password_form=MyPasswordForm(formdata=None)), status


@account_bp.post("/account/password")
@login_required
def change_password() -> Any:
    session = get_session()
    me = accounts.require(session, current_user.username)
    password_form = MyPasswordForm()
    if password_form.validate_on_submit():
        now = dt.datetime.now(dt.UTC)
        try:
            accounts.change_own_password(session, now, me.username,
                                         password_form.current_password.data or "",
                                         password_form.password.data or "",
                                         request.remote_addr)
        except accounts.AccountError as exc:
            session.rollback()
            if isinstance(exc, accounts.WrongCurrentPassword):
                accounts.record_wrong_password(session, now, me.username, request.remote_addr)
                session.commit()
            _refused(password_form, exc)
        else:
            session.commit()
            _keep_this_session(session, me.username)
            flash("Your password is changed; your other sessions are signed out.", "info")
            return redirect(url_for("account.index"))
    else:
        flash("Nothing was saved; correct the fields marked below.", "error")
    return render_template("account/index.html", me=me,
                           details=MyDetailsForm(formdata=None, obj=me),
                           password_form=password_form), 400
