"""HTTP server helpers shared by both daemons: bearer tokens, bounded JSON bodies, errors, /metrics."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import os
import signal
from collections.abc import Awaitable, Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import AfterValidator

from swarmshift import logs
from swarmshift.config import ConfigError

log = logs.get("swarmshift.http")

MAX_BODY = 1024 * 1024  # 1 MiB: an Alertmanager notification is a few KiB

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
TOKEN_KEY = web.AppKey("token", "TokenFile | None")
REGISTRY_KEY = web.AppKey("registry", CollectorRegistry)


class HTTPProblem(Exception):
    """A request we refuse: becomes a JSON error response with `status`."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra


def error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


class TokenFile:
    """A bearer token read from a file (a Docker secret), re-read when the file changes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._mtime: float | None = None
        self._token = ""
        self._load()

    def _load(self) -> None:
        stat = os.stat(self.path)
        if stat.st_mtime != self._mtime:
            token = self.path.read_text().strip()
            if not token:
                raise ValueError(f"{self.path}: the token file is empty")
            self._token, self._mtime = token, stat.st_mtime

    def matches(self, header: str | None) -> bool:
        # On a read error keep the last good token: a half-written secret must not open the door.
        with contextlib.suppress(OSError, ValueError):
            self._load()
        scheme, _, presented = (header or "").partition(" ")
        if scheme.lower() != "bearer" or not presented:
            return False
        return hmac.compare_digest(presented.strip().encode(), self._token.encode())


def load_token(path: str | None) -> TokenFile | None:
    """The daemon's bearer token from `token_file`, or ConfigError naming the key and the path."""
    if not path:
        return None
    try:
        return TokenFile(path)
    except (OSError, ValueError) as err:
        raise ConfigError([f"config: token_file: cannot read the token: {err} (got {path!r})"]) from err


def stop_event() -> asyncio.Event:
    """An event set by SIGTERM (how Swarm stops a task) or SIGINT; call it inside the running loop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


def authenticated(handler: Handler) -> Handler:
    """Refuse the request with 401 unless it carries the app's bearer token."""

    @wraps(handler)
    async def guarded(request: web.Request) -> web.StreamResponse:
        token = request.app.get(TOKEN_KEY)
        if token is None or not token.matches(request.headers.get("Authorization")):
            log.warning("http_unauthorized", path=request.path, remote=request.remote,
                        reason="no token configured" if token is None else "missing or wrong bearer token")
            return web.json_response(
                {"error": "missing or wrong bearer token"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="swarmshift"'},
            )
        return await handler(request)

    return guarded


async def read_json(request: web.Request, limit: int = MAX_BODY) -> Any:
    """The request body as JSON; HTTPProblem 413 when over `limit`, 400 when malformed."""
    if request.content_length is not None and request.content_length > limit:
        raise HTTPProblem(413, f"body is larger than {limit} bytes")
    body = bytearray()
    async for chunk in request.content.iter_chunked(64 * 1024):
        body.extend(chunk)
        if len(body) > limit:
            raise HTTPProblem(413, f"body is larger than {limit} bytes")
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise HTTPProblem(400, f"malformed JSON: {err}") from err


@web.middleware
async def problems(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn HTTPProblem into a JSON error, and any other failure into a logged 500."""
    try:
        return await handler(request)
    except HTTPProblem as err:
        return error(err.status, err.message, **err.extra)
    except web.HTTPException:
        raise  # aiohttp's own answers (404 for unknown routes, 405, 413) stand as they are
    except Exception as err:  # noqa: BLE001 - no request may take the daemon down
        log.exception("http_handler_failed", path=request.path, method=request.method)
        return error(500, f"internal error: {type(err).__name__}")


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[REGISTRY_KEY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def new_app(registry: CollectorRegistry, token: TokenFile | None) -> web.Application:
    """An app with the shared middleware, /healthz and /metrics; each daemon adds its routes."""
    app = web.Application(middlewares=[problems], client_max_size=MAX_BODY)
    app[REGISTRY_KEY] = registry
    app[TOKEN_KEY] = token
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    return app


def _listen_address(value: str) -> str:
    try:
        parse_listen(value)
    except ValueError:
        raise ValueError("expected HOST:PORT such as 0.0.0.0:8080") from None
    return value


# A config field holding a daemon's listen address, checked when the config is loaded.
ListenAddress = Annotated[str, AfterValidator(_listen_address)]


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT such as 0.0.0.0:8080 (got {value!r})")
    return host.strip("[]") or "0.0.0.0", int(port)


async def start(app: web.Application, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
