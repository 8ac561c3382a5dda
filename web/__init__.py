"""The admin and front-desk web UI: a Flask app on the agent's own database.

`create_app` is the factory (`textback web` serves it with waitress; tests call it
with `test_config`). Each area is a blueprint (auth, calls, users, audit) with its
templates under templates/<area>/. There is no default secret and no default
account: the key comes from the 0600 file `textback init` writes, the first admin
from `textback init --admin-user`.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from flask import Flask, render_template
from flask_wtf.csrf import CSRFError, CSRFProtect

from agent.config import Config, read_web_secret_key
from agent.rules import numbers
from agent.store.db import check_schema, make_engine, sessions

log = logging.getLogger(__name__)

csrf = CSRFProtect()


def create_app(config: Config | None = None, test_config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.from_mapping(
        TEXTBACK_CONFIG=config,
        DATABASE_URL=config.database.url if config else None,
        SECRET_KEY=read_web_secret_key(config) if config else None,
        REGION=config.pbx.default_region if config else "US",
        # cookies: never readable by scripts, not sent on cross-site posts, and only
        # over https when the config says the UI is served that way
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=config.web.secure_cookies if config else False,
        REMEMBER_COOKIE_HTTPONLY=True,
        REMEMBER_COOKIE_SAMESITE="Lax",
        REMEMBER_COOKIE_SECURE=config.web.secure_cookies if config else False,
        PERMANENT_SESSION_LIFETIME=dt.timedelta(hours=12),  # one working day
        WTF_CSRF_TIME_LIMIT=None,  # tokens live as long as the session
    )
    if test_config:
        app.config.update(test_config)
    if not app.config["SECRET_KEY"]:
        raise RuntimeError("the web UI needs a secret key (web.secret_key_file); there is "
                           "no default")
    if not app.config["DATABASE_URL"]:
        raise RuntimeError("the web UI needs the agent's database (database.url)")

    engine = make_engine(app.config["DATABASE_URL"])
    check_schema(engine)
    app.extensions["textback.sessions"] = sessions(engine)

    from web import (
        audit,
        auth,
        calls,
        clock,
        contacts,
        dashboard,
        db,
        desk,
        home,
        hooks,
        inbox,
        live,
        settings,
        users,
    )

    region = app.config["REGION"]
    # numbers as the front desk writes them: "(212) 555-0142" at home, "+44 20 7946 0958"
    # abroad; anything that is not a valid number (an extension, "withheld") as stored
    app.jinja_env.filters["phone"] = lambda number: (
        numbers.format_national(number, region) or number) if number else number

    csrf.init_app(app)
    db.init_app(app)
    clock.init_app(app)
    auth.init_app(app)
    live.init_app(app, engine)
    for module in (home, auth, inbox, desk, live, contacts, calls, dashboard, users, audit,
                   settings, hooks):
        app.register_blueprint(module.bp)
    app.register_blueprint(users.account_bp)  # everyone's own account, beside the admins' pages

    @app.errorhandler(CSRFError)
    def csrf_refused(error: CSRFError) -> Any:
        log.warning("form refused: %s", error.description)
        return render_template("error.html", title="Form expired",
                               message="This form was not accepted (its security token was "
                               "missing or expired). Go back, reload the page and try "
                               "again."), 400

    @app.errorhandler(403)
    def forbidden(_error: Any) -> Any:
        return render_template("error.html", title="Not allowed",
                               message="Your account cannot open this page; ask an admin "
                               "if you need it."), 403

    @app.errorhandler(410)
    def gone(_error: Any) -> Any:
        return render_template("error.html", title="Erased",
                               message="This person's data was erased at their request; "
                               "only anonymous counts remain."), 410

    @app.errorhandler(404)
    def not_found(_error: Any) -> Any:
        return render_template("error.html", title="Not found",
                               message="There is no such page."), 404

    @app.after_request
    def security_headers(response: Any) -> Any:
        # no inline scripts or styles, no framing: an injected tag could not run
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
            "form-action 'self'; base-uri 'none'")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        return response

    return app
