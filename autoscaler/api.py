"""The autoscaler's HTTP API, wired in one place: health, readiness, metrics, events and alert webhooks."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from swarmshift import alerts
from swarmshift.http import (
    QUERY,
    TokenFile,
    accepts,
    authenticated,
    matching,
    new_app,
    read_json,
    whole_number,
)

if TYPE_CHECKING:
    from autoscaler.loop import Autoscaler

AUTOSCALER = web.AppKey("autoscaler", "Autoscaler")
# Docker's rule for service names (a stack's service is <stack>_<name>): nothing else can match one.
SERVICE_NAME = matching(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}", "a Swarm service name")
EVENTS_KEPT_MAX = 100_000  # AutoscalerConfig.events_kept's bound: no limit above it means more


def make_app(autoscaler: Autoscaler, token: TokenFile | None) -> web.Application:
    app = new_app(autoscaler.telemetry.registry, token, readiness=autoscaler.readiness)
    app[AUTOSCALER] = autoscaler
    app.router.add_get("/v1/events", events)
    app.router.add_post("/v1/alerts", receive_alerts)
    return app


@accepts(limit=whole_number(1, EVENTS_KEPT_MAX), service=SERVICE_NAME)
async def events(request: web.Request) -> web.Response:
    """The last scaling events, oldest first; `?service=` filters, `?limit=` keeps the newest N."""
    query = request[QUERY]
    found = request.app[AUTOSCALER].events.recent(query.get("limit"), query.get("service"))
    return web.json_response({"events": found})


@authenticated
async def receive_alerts(request: web.Request) -> web.Response:
    notification = alerts.parse(await read_json(request))
    results = await request.app[AUTOSCALER].on_alerts(notification)
    status = max((r.status for r in results), default=200)
    return web.json_response({"results": [r.as_dict() for r in results]}, status=status)
