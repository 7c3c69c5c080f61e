"""The blue-green controller's HTTP API, wired in one place: apps, operations, alerts and the Traefik document."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from aiohttp import web

from bluegreen.apps import Color, valid_key
from bluegreen.controller import AmbiguousApp, BrokenApp, Busy, UnknownApp
from bluegreen.phases import Refused
from bluegreen.routers import RouterError
from bluegreen.state import HISTORY_MAX
from swarmshift import alerts, logs
from swarmshift.http import (
    QUERY,
    HTTPProblem,
    TokenFile,
    accepts,
    authenticated,
    new_app,
    read_json,
    shown,
    whole_number,
)
from swarmshift.swarm import DockerUnavailable, NoQuorum, SwarmError

if TYPE_CHECKING:
    from bluegreen.controller import Controller

log = logs.get("bluegreen.api")
CONTROLLER = web.AppKey("controller", "Controller")

# The characters of Docker's image reference grammar (registry[:port]/name[:tag][@digest]): what
# else it refuses, Docker says when the service is written.
_IMAGE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@+-]{0,511}")

# Refused.code -> HTTP status: another operation is running, or the phase does not take this request
# (409: a promote when not Paused), or the app cannot take it in its present state (422: an
# unhealthy target, nothing to roll back to, a no-op).
_REFUSED_STATUS = {"busy": 409, "phase": 409}
# Who asked for an operation, as the history records it: the CLI sends $USER (or --by).
_BY = re.compile(r"[A-Za-z0-9._@:+/=-][A-Za-z0-9._@:+/= -]{0,63}")


def make_app(controller: Controller, token: TokenFile | None) -> web.Application:
    app = new_app(controller.telemetry.registry, token, readiness=controller.readiness)  # /healthz, /readyz, /metrics
    app[CONTROLLER] = controller
    app.middlewares.append(_domain_errors)
    app.router.add_routes([
        web.get("/v1/apps", list_apps),
        web.get("/v1/apps/{app}", show_app),
        web.post("/v1/apps/{app}/deploy", deploy),
        web.post("/v1/apps/{app}/switch", switch),
        web.post("/v1/apps/{app}/rollback", rollback),
        web.post("/v1/apps/{app}/promote", promote),
        web.post("/v1/apps/{app}/abort", abort),
        web.post("/v1/apps/{app}/undo", undo),
        web.get("/v1/apps/{app}/history", history),
        web.post("/v1/alerts", receive_alerts),
        web.get("/v1/traefik", traefik),
    ])
    return app


@web.middleware
async def _domain_errors(request: web.Request, handler) -> web.StreamResponse:
    """The controller's refusals as HTTP answers; each names what is in the way."""
    try:
        return await handler(request)
    except AmbiguousApp as err:
        raise HTTPProblem(400, str(err), code="ambiguous", candidates=err.candidates) from err
    except UnknownApp as err:
        raise HTTPProblem(404, str(err)) from err
    except Busy as err:
        raise HTTPProblem(409, str(err), code="busy") from err
    except Refused as err:
        raise HTTPProblem(_REFUSED_STATUS.get(err.code, 422), err.message, code=err.code) from err
    except BrokenApp as err:
        raise HTTPProblem(422, str(err), code="invalid", problems=err.problems) from err
    except NoQuorum as err:
        raise HTTPProblem(503, f"Swarm has no quorum: the controller writes nothing and holds every app until its "
                               f"managers elect a leader: {err}", code="no_quorum") from err
    except DockerUnavailable as err:
        raise HTTPProblem(503, f"Docker does not answer: {err}") from err
    except SwarmError as err:
        raise HTTPProblem(502, f"Docker refused: {err}") from err


def _app(request: web.Request) -> str:
    """The `{app}` of the path: HTTPProblem 400 unless it could be an app's key or bare name (the labels' rules)."""
    name = request.match_info["app"]
    if not valid_key(name):
        raise HTTPProblem(400, f"path.app: expected an app name (a lowercase DNS label) or <stack>_<app> "
                               f"(got {shown(name)})")
    return name


def _body(raw: Any, allowed: dict[str, type | tuple[type, ...]], required: tuple[str, ...] = ()) -> dict[str, Any]:
    """A JSON object with only `allowed` keys of the given types; HTTPProblem 400 naming each problem."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise HTTPProblem(400, f"expected a JSON object (got {type(raw).__name__})")
    problems = [f"body.{key}: unknown key (got {shown(raw[key])})" for key in raw if key not in allowed]
    problems += [f"body.{key}: missing" for key in required if key not in raw]
    for key, kind in allowed.items():
        if key in raw and raw[key] is not None and not isinstance(raw[key], kind):
            problems.append(f"body.{key}: wrong type (got {shown(raw[key])})")
    if problems:
        raise HTTPProblem(400, "bad request body", problems=problems)
    return raw


def _by(body: dict[str, Any]) -> str:
    """The body's `by` (who asked), checked: up to 64 characters of a user or tool name; "" when absent."""
    by = body.get("by")
    if by is None:
        return ""
    if not _BY.fullmatch(by):
        raise HTTPProblem(400, "bad request body", problems=[
            f"body.by: expected who asks, 1 to 64 letters, digits, spaces or ._@:+/=- (got {shown(by)})"])
    return by.strip()


async def _optional_json(request: web.Request) -> Any:
    if not request.can_read_body:
        return None
    return await read_json(request)


def _accepted(state) -> web.Response:
    d = state.deploy
    return web.json_response({
        "phase": state.phase.value, "active": state.active.value, "generation": state.generation,
        "deploy": None if d is None else {"id": d.id, "operation": d.kind.value, "image": d.image,
                                          "target": d.target.value, "reason": d.reason},
    }, status=202)


async def list_apps(request: web.Request) -> web.Response:
    controller = request.app[CONTROLLER]
    apps = await controller.statuses()
    # Services that name no app cannot be shown as one; they are listed on their own, with why.
    return web.json_response({"apps": apps, "unattached": controller.unattached})


async def show_app(request: web.Request) -> web.Response:
    return web.json_response(await request.app[CONTROLLER].status(_app(request)))


@authenticated
async def deploy(request: web.Request) -> web.Response:
    name = _app(request)
    body = _body(await read_json(request), {"image": str, "by": str}, required=("image",))
    image = body["image"].strip()
    if not _IMAGE.fullmatch(image):
        raise HTTPProblem(400, "bad request body", problems=[f"body.image: expected an image reference (got {shown(image)})"])
    state = await request.app[CONTROLLER].deploy(name, image, by=_by(body))
    return _accepted(state)


@authenticated
async def switch(request: web.Request) -> web.Response:
    name = _app(request)
    body = _body(await _optional_json(request), {"to": str, "force": bool, "by": str})
    to = body.get("to")
    color = Color.named(to)
    if to is not None and color is None:
        raise HTTPProblem(400, "bad request body", problems=[f"body.to: expected blue or green (got {shown(to)})"])
    state = await request.app[CONTROLLER].switch(name, color, force=bool(body.get("force")), by=_by(body))
    return _accepted(state)


@authenticated
async def rollback(request: web.Request) -> web.Response:
    name = _app(request)
    body = _body(await _optional_json(request), {"by": str})
    state = await request.app[CONTROLLER].rollback(name, by=_by(body))
    return _accepted(state)


@authenticated
async def undo(request: web.Request) -> web.Response:
    """Deploy an earlier release (the last successful one, or `revision`) through the gates; 422 when there is none."""
    name = _app(request)
    body = _body(await _optional_json(request), {"revision": int, "by": str})
    revision = body.get("revision")
    if revision is not None and (isinstance(revision, bool) or not 1 <= revision <= 10**9):
        raise HTTPProblem(400, "bad request body", problems=[f"body.revision: expected a revision number from 1 "
                                                             f"(got {shown(revision)})"])
    return _accepted(await request.app[CONTROLLER].undo(name, revision, by=_by(body)))


@accepts(limit=whole_number(1, HISTORY_MAX))
async def history(request: web.Request) -> web.Response:
    """The app's last releases, newest first (`?limit=` keeps the newest N); `problem` when the label was damaged."""
    found = await request.app[CONTROLLER].history(_app(request))
    limit = request[QUERY].get("limit")
    if limit is not None:
        found["releases"] = found["releases"][:limit]
    return web.json_response(found)


@authenticated
async def promote(request: web.Request) -> web.Response:
    """Go on with a Paused deploy; 409 naming the phase when the app is not Paused."""
    name = _app(request)
    _body(await _optional_json(request), {})
    return _accepted(await request.app[CONTROLLER].promote(name))


@authenticated
async def abort(request: web.Request) -> web.Response:
    """Fail a deploy before its switch, traffic left where it is; 409 naming the phase once traffic moved."""
    name = _app(request)
    _body(await _optional_json(request), {})
    return _accepted(await request.app[CONTROLLER].abort(name))


@authenticated
async def receive_alerts(request: web.Request) -> web.Response:
    notification = alerts.parse(await read_json(request))
    results = await request.app[CONTROLLER].on_alerts(notification)
    status = max((r["status"] for r in results), default=200)
    return web.json_response({"results": results}, status=status)


async def traefik(request: web.Request) -> web.Response:
    """The dynamic configuration for Traefik's HTTP provider (`providers.http.endpoint`)."""
    try:
        doc = request.app[CONTROLLER].traefik_document()
    except RouterError as err:
        # Traefik keeps its last configuration when the endpoint fails: better than a partial one.
        raise HTTPProblem(503, str(err)) from err
    return web.json_response(doc)
