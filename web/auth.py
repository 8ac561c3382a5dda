"""Signing in and out, sessions (Flask-Login) and roles.

`admin` may do everything; `staff` (the front desk) works the call log, inbox and
contacts but cannot open settings, users or the audit log. Failed logins are
limited per username and address (agent.people.accounts) and every attempt is audited.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import re
from collections.abc import Callable
from typing import Any, TypeVar, cast
from urllib.parse import unquote, urlsplit

from flask import Blueprint, Flask, abort, flash, redirect, render_template, request, url_for
from flask_login import LoginManager, UserMixin, current_user, login_user, logout_user
from flask_login import login_required as login_required
from flask_wtf import FlaskForm
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, Length

from agent.people import accounts
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

    The session id carries the account's session generation (agent.people.accounts):
    signing out, a new password, disabling the account or an admin's "sign out
    everywhere" raise it, and from then on every cookie signed in under the old one
    (the session's and any remember-me cookie) is refused on the server.
    """

    def __init__(self, user: User) -> None:
        self.user_id = user.id
        self.username = user.username
        self.role = user.role
        self.generation = user.session_generation or 0

    def get_id(self) -> str:
        return f"{self.user_id}:{self.generation}"

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


@login_manager.user_loader
def load_user(session_id: str) -> SignedIn | None:
    user_id, _, generation = session_id.partition(":")
    if not (user_id.isdigit() and generation.isdigit()):
        return None
    user = get_session().get(User, int(user_id))
    if user is None or not user.active or (user.session_generation or 0) != int(generation):
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


# what browsers drop from a URL before reading it (WHATWG URL: tabs and newlines
# anywhere, other controls and spaces at either end)
_CONTROLS = re.compile(r"[\x00-\x1f\x7f]")


def safe_next(target: str | None) -> str | None:
    """`target` when it is a path on this site, else None.

    Judged as a browser would read it, after undoing every layer of %-encoding, dropping
    tabs and newlines and reading backslashes as slashes: "/%09/evil.example",
    "/\\evil.example" and "/%2F%2Fevil.example" all become "//evil.example", a link
    to another site, and are refused.
    """
    if not target or len(target) > 2000:
        return None
    seen = target
    for _ in range(5):  # a few layers of encoding; more than that is no honest link
        decoded = unquote(seen)
        if decoded == seen:
            break
        seen = decoded
    else:
        return None
    seen = _CONTROLS.sub("", seen).strip(" ").replace("\\", "/")
    if not seen.startswith("/") or seen.startswith("//"):
        return None
    parts = urlsplit(seen)
    if parts.scheme or parts.netloc:
        return None
    if _CONTROLS.search(target) or "\\" in target or target != target.strip():
        return None  # safe once cleaned, but a link nobody would write: go home instead
    return target


def _next_page() -> str:
    return safe_next(request.args.get("next")) or url_for("home.index")


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
            return redirect(_next_page())
        flash("Wrong username or password.", "error")
        status = 401
    return render_template("auth/login.html", form=form), status


@bp.post("/logout")
@login_required
def logout() -> Any:
    db = get_session()
    accounts.sign_out(db, dt.datetime.now(dt.UTC), current_user.username, request.remote_addr)
    db.commit()
    logout_user()
    flash("You are signed out.", "info")
    return redirect(url_for("auth.login"))
