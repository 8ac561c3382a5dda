"""The Flask admin and log UI.

A placeholder factory until the web issue lands: it shows that the UI and the
agent share one database, and gives IT staff a health URL.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, jsonify


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.from_mapping(TEXTBACK_CONFIG=None)
    if test_config:
        app.config.update(test_config)

    @app.get("/healthz")
    def healthz() -> Any:
        return jsonify(status="ok")

    return app
