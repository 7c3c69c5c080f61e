"""HTTP server helpers shared by both daemons: bearer tokens, bounded JSON bodies, checked queries, errors, /metrics.

What a client sends is refused with a 4xx that names the part and the value; a handler's own
failure is a 500 that says only "internal error" and a request id, which the log line carries
with the traceback. docs/security.md explains the choices.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import re
import signal
import uuid
from collections.abc import Awaitable, Callable, Mapping
from functools import wraps
from pathlib import Path
from typing import Annotated, Any

from aiohttp import http_exceptions, web, web_protocol, web_urldispatcher
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import AfterValidator

from swarmshift import logs
from swarmshift.config import ConfigError

log = logs.get("swarmshift.http")

MAX_BODY = 1024 * 1024  # 1 MiB: an Alertmanager notification is a few KiB
# Our payloads nest four levels at most (an Alertmanager alert's labels); 32 leaves room for any
# future one and keeps every walk over a body far from Python's recursion limit.
MAX_DEPTH = 32
MAX_NUMBER = 64  # characters of one JSON number: no field takes more, and Python refuses ints over 4,300 digits
SHOWN = 120  # characters of a client's value quoted back in an error

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
TOKEN_KEY = web.AppKey("token", "TokenFile | None")
REGISTRY_KEY = web.AppKey("registry", CollectorRegistry)
# What /readyz answers: (ready, the body's fields), from the daemon (its view of Swarm).
READINESS_KEY = web.AppKey("readiness", Callable)
# Request storage: typed keys where aiohttp has them (it warns about plain strings), else strings.
_KEY = getattr(web, "RequestKey", None)
QUERY: Any = _KEY("query", dict) if _KEY else "swarmshift.query"  # the query parameters the route accepts, parsed
_AUTHENTICATED: Any = _KEY("authenticated", bool) if _KEY else "swarmshift.authenticated"  # checked by `guard`


class HTTPProblem(Exception):
    """A request we refuse: becomes a JSON error response with `status`."""

    def __init__(self, status: int, message: str, *, headers: Mapping[str, str] | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})
        self.extra = extra


def error(status: int, message: str, headers: Mapping[str, str] | None = None, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status, headers=headers)


def shown(value: Any) -> str:
    """A client's value as an error quotes it: its repr, cut to SHOWN characters."""
    text = repr(value)
    return text if len(text) <= SHOWN else text[:SHOWN] + f"... ({len(text)} characters)"


def loggable(text: str) -> str:
    """Request text (a path, a header) safe for any log stream: undecodable bytes as escapes, bounded."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")[:300]


class TokenFile:
    """A bearer token read from a file (a Docker secret), re-read when the file changes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._mtime: float | None = None
        self._digest = b""
        self._load()

    def _load(self) -> None:
        stat = os.stat(self.path)
        if stat.st_mtime != self._mtime:
            token = self.path.read_bytes().strip()
            if not token:
                raise ValueError(f"{self.path}: the token file is empty")
            # Kept as a digest: matches() compares digests, so the time taken tells nothing about
            # the token's length either.
            self._digest, self._mtime = hashlib.sha256(token).digest(), stat.st_mtime

    def matches(self, header: str | None) -> bool:
        # On a read error keep the last good token: a half-written secret must not open the door.
        with contextlib.suppress(OSError, ValueError):
            self._load()
        presented = bearer(header)
        if presented is None:
            return False
        return hmac.compare_digest(hashlib.sha256(presented).digest(), self._digest)


def bearer(header: str | None) -> bytes | None:
    """The token of an `Authorization: Bearer <token>` header as the bytes sent, or None.

    aiohttp hands header values over decoded as UTF-8 with undecodable bytes kept as surrogates
    (latin-1, invalid UTF-8); encoding back the same way gives the bytes on the wire, which are
    what is compared, so no header can fail to encode.
    """
    if not header:
        return None
    try:
        raw = header.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate no wire byte gives: not from a client
        return None
    scheme, _, presented = raw.partition(b" ")
    presented = presented.strip(b" \t")
    if scheme.lower() != b"bearer" or not presented:
        return None
    return presented


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


def check_token(request: web.Request) -> None:
    """HTTPProblem 401 unless the request carries the app's bearer token; 400 for several Authorization headers.

    Several headers are refused rather than one picked: a proxy that adds its own would
    otherwise decide which one counts.
    """
    if request.get(_AUTHENTICATED):
        return
    values = request.headers.getall("Authorization", [])
    if len(values) > 1:
        log.warning("http_unauthorized", path=loggable(request.path), remote=request.remote,
                    reason=f"{len(values)} Authorization headers")
        raise HTTPProblem(400, f"Authorization: send one header, not {len(values)}")
    token = request.app.get(TOKEN_KEY)
    if token is None or not token.matches(values[0] if values else None):
        log.warning("http_unauthorized", path=loggable(request.path), remote=request.remote,
                    reason="no token configured" if token is None else "missing or wrong bearer token")
        raise HTTPProblem(401, "missing or wrong bearer token", headers={"WWW-Authenticate": 'Bearer realm="swarmshift"'})
    request[_AUTHENTICATED] = True


def authenticated(handler: Handler) -> Handler:
    """Refuse the request with 401 unless it carries the app's bearer token.

    `guard` checks the token before the query, so that a client without it learns nothing of the
    route; the handler checks again in an app built without `guard`.
    """

    @wraps(handler)
    async def guarded(request: web.Request) -> web.StreamResponse:
        check_token(request)
        return await handler(request)

    guarded.needs_token = True  # type: ignore[attr-defined]
    return guarded


Parse = Callable[[str], Any]


def accepts(**params: Parse) -> Callable[[Handler], Handler]:
    """Declare the query parameters a handler reads, each with its parser (ValueError: refused).

    `guard` parses them into `request[QUERY]` before the handler runs; a parameter the handler
    does not declare, or one given twice, is refused with 400, so a typo (`?servce=`) never
    silently means "everything". A handler without `accepts` takes no parameters.
    """

    def mark(handler: Handler) -> Handler:
        handler.query_params = params  # type: ignore[attr-defined]
        return handler

    return mark


def whole_number(low: int, high: int) -> Parse:
    """A parser for ASCII digits from `low` to `high` (`str.isdigit` also takes "²" and "٣")."""

    def parse(text: str) -> int:
        if not re.fullmatch(r"[0-9]{1,9}", text) or not low <= int(text) <= high:
            raise ValueError(f"expected a whole number from {low} to {high}")
        return int(text)

    return parse


def matching(pattern: str, what: str) -> Parse:
    """A parser for values that match `pattern` in full, described as `what` when they don't."""
    compiled = re.compile(pattern)

    def parse(text: str) -> str:
        if not compiled.fullmatch(text):
            raise ValueError(f"expected {what}")
        return text

    return parse


def parse_query(request: web.Request, params: Mapping[str, Parse]) -> dict[str, Any]:
    """The query's parameters parsed by `params`, or HTTPProblem 400 naming each bad one and its value."""
    problems, parsed = [], {}
    for key in dict.fromkeys(request.query):
        values = request.query.getall(key)
        if key not in params:
            problems.append(f"query.{key}: unknown parameter (got {shown(values[0])})")
        elif len(values) > 1:
            problems.append(f"query.{key}: given {len(values)} times (got {shown(values)})")
        else:
            try:
                parsed[key] = params[key](values[0])
            except ValueError as err:
                problems.append(f"query.{key}: {err} (got {shown(values[0])})")
    if problems:
        raise HTTPProblem(400, "bad query string", problems=problems,
                          accepted=sorted(params))
    return parsed


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Before a route's handler: its bearer token when it needs one, then its query parameters."""
    match = request.match_info
    if match.http_exception is None:  # unmatched paths and methods get aiohttp's 404 and 405
        route = match.handler
        if getattr(route, "needs_token", False):
            check_token(request)
        request[QUERY] = parse_query(request, getattr(route, "query_params", {}))
    return await handler(request)


class _NotOurJSON(ValueError):
    """JSON that Python reads but we refuse: NaN and Infinity, numbers too long to be a value."""


def _constant(name: str) -> Any:
    raise _NotOurJSON(f"{name} is not JSON")


def _number(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        if len(text) > MAX_NUMBER:
            raise _NotOurJSON(f"a number of {len(text)} characters (at most {MAX_NUMBER})")
        return kind(text)

    return parse


def depth(value: Any) -> int:
    """How deep `value` nests (a scalar is 0, `[1]` is 1), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None:
            continue
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children)
    return deepest


async def read_json(request: web.Request, limit: int = MAX_BODY, max_depth: int = MAX_DEPTH) -> Any:
    """The request body as JSON; HTTPProblem 413 when over `limit`, 400 when malformed or nested over `max_depth`."""
    if request.content_length is not None and request.content_length > limit:
        raise HTTPProblem(413, f"body is larger than {limit} bytes")
    body = bytearray()
    try:
        async for chunk in request.content.iter_chunked(64 * 1024):
            body.extend(chunk)
            if len(body) > limit:
                raise HTTPProblem(413, f"body is larger than {limit} bytes")
    except web.HTTPException:
        raise
    except (web_protocol.RequestPayloadError, http_exceptions.HttpProcessingError) as err:
        # aiohttp's text here is its parser's; ours says which header the body failed.
        encoding = request.headers.get("Content-Encoding")
        raise HTTPProblem(400, f"unreadable body: it does not decode as Content-Encoding {loggable(encoding)!r}"
                          if encoding else "unreadable body: it ended early or is malformed") from err
    nested = HTTPProblem(400, f"malformed JSON: nested deeper than {max_depth} levels")
    try:
        value = json.loads(body, parse_constant=_constant, parse_int=_number(int), parse_float=_number(float))
    except RecursionError as err:  # json's C decoder meets Python's limit first on very deep input
        raise nested from err
    except UnicodeDecodeError as err:
        raise HTTPProblem(400, f"malformed JSON: not UTF-8 ({err.reason} at byte {err.start})") from err
    except ValueError as err:  # JSONDecodeError and _NotOurJSON
        raise HTTPProblem(400, f"malformed JSON: {err}") from err
    if depth(value) > max_depth:
        raise nested
    return value


@web.middleware
async def problems(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn HTTPProblem into a JSON error, and any other failure into a 500 whose details only the log has.

    The client gets "internal error" and a request id; the log line with the same id has the
    traceback. Exception text from inside (paths, Docker's words, a library's) never goes out.
    """
    try:
        return await handler(request)
    except HTTPProblem as err:
        return error(err.status, err.message, headers=err.headers, **err.extra)
    except web.HTTPException:
        raise  # aiohttp's own answers (404 for unknown routes, 405, 413) stand as they are
    except Exception:  # noqa: BLE001 - no request may take the daemon down
        request_id = uuid.uuid4().hex
        log.exception("http_handler_failed", request_id=request_id, path=loggable(request.path),
                      method=loggable(request.method))
        return error(500, "internal error", headers={"X-Request-Id": request_id}, request_id=request_id)


async def healthz(request: web.Request) -> web.Response:
    # Liveness only, and Docker's HEALTHCHECK: the daemon answers. Swarm being away (no quorum) is
    # /readyz's business; an unhealthy task would be restarted, losing nothing but gaining nothing.
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """200 while the daemon can act (Swarm answers), else 503 with why: `swarm` is ok, no_quorum, docker_unavailable..."""
    ready, fields = request.app[READINESS_KEY]()
    return web.json_response({"status": "ready" if ready else "not_ready", **fields}, status=200 if ready else 503)


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[REGISTRY_KEY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def expect_continue(request: web.Request) -> web.StreamResponse | None:
    """`Expect: 100-continue` as aiohttp answers it, once the token is checked; other expectations get a 417.

    A route that needs the token refuses a client without it here, before inviting the body.
    """
    match = request.match_info
    if match.http_exception is None and getattr(match.handler, "needs_token", False):
        try:
            check_token(request)
        except HTTPProblem as err:  # outside the middlewares: no `problems` to render it
            return error(err.status, err.message, headers=err.headers)
    if request.version >= (1, 1):
        if request.headers.get("Expect", "").lower() == "100-continue":
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            request.writer.output_size = 0  # as aiohttp does: the 100 is not part of the answer
            return None
        return error(417, "the only expectation understood is 100-continue")
    return None


def new_app(registry: CollectorRegistry, token: TokenFile | None,
            readiness: Callable[[], tuple[bool, dict[str, Any]]] | None = None) -> web.Application:
    """An app with the shared middleware, /healthz, /metrics (and /readyz with `readiness`); each daemon adds its routes."""
    # aiohttp's default Expect handler puts the header's text into its 417, and a header of
    # undecodable bytes (held as surrogates) makes building it fail: a 500 on any path, found
    # by tests/unit/test_api_fuzz.py. The default is read when a route is made, unmatched
    # paths' routes included, so replacing it covers every route.
    web_urldispatcher._default_expect_handler = expect_continue
    app = web.Application(middlewares=[problems, guard], client_max_size=MAX_BODY)
    app[REGISTRY_KEY] = registry
    app[TOKEN_KEY] = token
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    if readiness is not None:
        app[READINESS_KEY] = readiness
        app.router.add_get("/readyz", readyz)
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
