"""FastAGI `textback-route` inside the agent: the routing AGI without a process per call.

Sites that prefer one long-running process point the dialplan at
`TEXTBACK_AGI=agi://127.0.0.1:4573/textback-route` and enable `[agi]` in the
config; the dialplan (asterisk/extensions_textback.conf) is the same as for the
`textback-route` command, and so is the decision (agent.rules.routing). If the agent
is down, Asterisk's AGI() fails to connect and the dialplan's fallback rings
the phones: calls never depend on the agent.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from panoramisk.fast_agi import Application, Request
from sqlalchemy import Engine, select

from agent.rules import routing
from agent.store.models import Setting

log = logging.getLogger(__name__)

ROUTE_SCRIPT = "textback-route"
# The caller hears silence while the decision is made: past this, fall back.
DEADLINE_SECONDS = routing.DEADLINE_SECONDS

SettingsLoader = Callable[[], Awaitable[Mapping[str, Any]]]


async def _get(request: Request, name: str) -> str:
    reply = await request.send_command(f'GET VARIABLE "{name}"')
    result = reply.get("result", ("", ""))
    return str(result[1]) if isinstance(result, tuple) and result[0] == "1" else ""


async def route_request(request: Request, load_settings: SettingsLoader) -> routing.Route:
    """Answer one FastAGI request: decide, set the TEXTBACK_* variables, log why.

    Every failure — a bad DID, an unreadable database, a slow one, an exception —
    becomes the fallback route, with the reason in the agent's log and Asterisk's.
    """
    started = time.monotonic()
    headers = request.headers
    raw_did = headers.get("agi_arg_1", "") or headers.get("agi_extension", "")
    did = routing.safe_text(raw_did, 40)
    caller = routing.safe_text(headers.get("agi_callerid", ""), 40)
    try:
        did = routing.parse_did(raw_did)
        defaults = routing.DialplanDefaults.from_channel(
            await _get(request, "TEXTBACK_FALLBACK_RING"),
            await _get(request, "TEXTBACK_FALLBACK_VOICEMAIL"),
        )
        values = await asyncio.wait_for(load_settings(), DEADLINE_SECONDS)
        route = routing.route_call(values, did, dt.datetime.now(dt.UTC), defaults)
    except Exception as error:  # whatever failed, the phones keep ringing
        route = routing.fallback_for(error)
    elapsed_ms = (time.monotonic() - started) * 1000
    summary = route.summary(did, caller, elapsed_ms)
    route.log(summary)
    for name, value in route.channel_variables().items():
        await request.send_command(f'SET VARIABLE "{name}" "{value}"')
    verbose = routing.safe_text(f"textback-route: {summary}", 400)
    await request.send_command(f'VERBOSE "{verbose}" 1')
    return route


def database_settings(engine: Engine) -> SettingsLoader:
    """Read the rows with the agent's engine on a worker thread (SQLite or PostgreSQL),
    never on the event loop that keeps AMI alive."""

    def read() -> dict[str, Any]:
        with engine.connect() as connection:
            rows = connection.execute(select(Setting.key, Setting.value)).tuples().all()
        return routing.settings_from_rows(rows)

    async def load() -> Mapping[str, Any]:
        return await asyncio.to_thread(read)

    return load


class RoutingServer:
    """The FastAGI listener; `load_settings` returns the settings rows (key → value)."""

    def __init__(self, host: str, port: int, load_settings: SettingsLoader) -> None:
        self.host, self.port = host, port
        self._load_settings = load_settings
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        app = Application(loop=asyncio.get_running_loop())
        app.add_route(ROUTE_SCRIPT, self._handle)
        self._server = await asyncio.start_server(app.handler, self.host, self.port)
        log.info("FastAGI routing on agi://%s:%d/%s", self.host, self.port, ROUTE_SCRIPT)

    async def _handle(self, request: Request) -> None:
        await route_request(request, self._load_settings)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
