"""Signing in and out, sessions (Flask-Login) and roles.

`admin` may do everything; `staff` (the front desk) works the call log, inbox and
contacts but cannot open settings, users or the audit log. Failed logins are
limited per username and address (agent.people.accounts) and every attempt is audited.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import logging
from collections.abc import Callable
from typing import Any, TypeVar, cast

from flask import Blueprint, Flask, abort, flash, redirect, render_template, request, url_for
from flask_login import LoginManager, UserMixin, current_user, login_user, logout_user
from flask_login import login_required as login_required
from flask_wtf import FlaskForm
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, Length

from agent.people import accounts
from agent.store import audit
from agent.store.models import User
from web.db import get_session

log = logging.getLogger(__name__)

bp = Blueprint("auth", __name__)
login_manager = LoginManager()
login_manager.login_view = "auth.login"
login_manager.login_message = "Please sign in to see this page."
login_manager.session_protection = "basic"

F = TypeVar("F", bound=Callable[..., Any])


class SignedIn(UserMixin):
    """The signed-in person as the session knows them.

    The session id carries a fingerprint of the password hash, so changing a
    password (or disabling the account) ends every other session at once.
    """

    def __init__(self, user: User) -> None:
        self.user_id = user.id
        self.username = user.username
        self.role = user.role
        self._fingerprint = _fingerprint(user)

    def get_id(self) -> str:
        return f"{self.user_id}:{self._fingerprint}"

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def _fingerprint(user: User) -> str:
    return hashlib.sha256(user.password_hash.encode()).hexdigest()[:16]


@login_manager.user_loader
def load_user(session_id: str) -> SignedIn | None:
    user_id, _, fingerprint = session_id.partition(":")
    if not user_id.isdigit():
        return None
    user = get_session().get(User, int(user_id))
    if user is None or not user.active or _fingerprint(user) != fingerprint:
        return None
    return SignedIn(user)


def init_app(app: Flask) -> None:
    login_manager.init_app(app)


def admin_required(view: F) -> F:
    """Only admins: staff get a 403 page, signed-out visitors the login page."""

    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if not current_user.is_authenticated:
            return login_manager.unauthorized()
        if not current_user.is_admin:
            abort(403)
        return view(*args, **kwargs)

    return cast(F, wrapped)


class LoginForm(FlaskForm):
    username = StringField("Username", validators=[DataRequired(), Length(max=200)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1024)])


def _safe_next(target: str | None) -> str:
    """Only a path on this site: a login link must not send people elsewhere."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return url_for("home.index")


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    if current_user.is_authenticated:
        return redirect(url_for("home.index"))
    form = LoginForm()
    status = 200
    if form.validate_on_submit():
        db = get_session()
        now = dt.datetime.now(dt.UTC)
        try:
            user = accounts.authenticate(db, now, form.username.data or "",
                                         form.password.data or "", request.remote_addr)
        except accounts.LoginLocked:
            db.commit()
            minutes = int(accounts.LOGIN_WINDOW.total_seconds() // 60)
            flash(f"Too many failed sign-ins for this username. It is locked for up to "
                  f"{minutes} minutes; try again later or ask an admin to reset the "
                  "password.", "error")
            return render_template("auth/login.html", form=form), 429
        db.commit()
        if user is not None:
            login_user(SignedIn(user))
            return redirect(_safe_next(request.args.get("next")))
        flash("Wrong username or password.", "error")
        status = 401
    return render_template("auth/login.html", form=form), status


@bp.post("/logout")
@login_required
def logout() -> Any:
    db = get_session()
    audit.audit(db, dt.datetime.now(dt.UTC), current_user.username, audit.LOGOUT,
                   current_user.username, request.remote_addr)
    db.commit()
    logout_user()
    flash("You are signed out.", "info")
    return redirect(url_for("auth.login"))
