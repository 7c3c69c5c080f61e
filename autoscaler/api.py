"""The autoscaler's HTTP API, wired in one place: health, metrics, events and alert webhooks."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from swarmshift import alerts
from swarmshift.http import TokenFile, authenticated, new_app, read_json

if TYPE_CHECKING:
    from autoscaler.loop import Autoscaler

AUTOSCALER = web.AppKey("autoscaler", "Autoscaler")


def make_app(autoscaler: Autoscaler, token: TokenFile | None) -> web.Application:
    app = new_app(autoscaler.telemetry.registry, token)
    app[AUTOSCALER] = autoscaler
    app.router.add_get("/v1/events", events)
    app.router.add_post("/v1/alerts", receive_alerts)
    return app


async def events(request: web.Request) -> web.Response:
    """The last scaling events, oldest first; `?service=` filters, `?limit=` keeps the newest N."""
    limit = request.query.get("limit", "")
    if limit and not limit.isdigit():
        return web.json_response({"error": f"limit must be a whole number (got {limit!r})"}, status=400)
    found = request.app[AUTOSCALER].events.recent(int(limit) if limit else None, request.query.get("service"))
    return web.json_response({"events": found})


@authenticated
async def receive_alerts(request: web.Request) -> web.Response:
    notification = alerts.parse(await read_json(request))
    results = await request.app[AUTOSCALER].on_alerts(notification)
    status = max((r.status for r in results), default=200)
    return web.json_response({"results": [r.as_dict() for r in results]}, status=status)
