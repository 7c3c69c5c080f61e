"""HTTP probes and smoke requests of one color: every task directly by Swarm DNS, or through the router's routes.

A probe round passes only when every request of it passes. Its outcome keeps two failures
apart, because operators fix them differently: `failed` (the color answered wrongly, or a
connection to it was refused or timed out) and `unreachable` (the controller has no path to the
color at all: the task names do not resolve where it runs, or no route serves the color).
Neither is ever healthy.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import aiohttp

from bluegreen.apps import App, Color
from bluegreen.config import ProbeSettings
from bluegreen.phases import Probe, ProbeOutcome
from bluegreen.smoke import (
    READ_LIMIT,
    Answer,
    SmokeOutcome,
    SmokeRequest,
    SmokeRound,
    Verdict,
    evaluate,
    judge,
)
from bluegreen.state import Routing

Resolver = Callable[[str, int], Awaitable[list[str]]]

_NO_PATH = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL}
ROUND_LIMIT = 120.0  # seconds for a whole smoke round: it runs in a tick, which holds the app's lock


async def resolve(host: str, port: int) -> list[str]:
    """The addresses `host` resolves to here (Docker's DNS on an overlay network; the system's elsewhere)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({info[4][0] for info in infos})


@dataclass(frozen=True)
class _Target:
    """One place a round sends requests to: a base URL and the Host header it needs."""

    url: str
    host: str | None
    label: str  # for the detail line: the task address, or the route
    proxied: bool = False  # through the router: a refused connection means the router, not the color


class _Unreachable(Exception):
    pass


class Prober:
    def __init__(self, settings: ProbeSettings, *, timeout: float = 2.0, resolver: Resolver = resolve) -> None:
        self.settings = settings
        self.timeout = timeout
        self.resolver = resolver
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            # A fresh connection per request: a kept-alive one would hide a task that stopped
            # accepting, and through a proxy it would stay with the worker of an old config.
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                connector=aiohttp.TCPConnector(force_close=True, limit=64),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def probe(self, app: App, color: Color, *, routed: Routing | None, verify: bool = False) -> Probe:
        """One round: the health path on every task (or route) of `color`; with `verify`, the verify paths too."""
        try:
            targets = await (self._routes(app, color, routed) if self.settings.via == "router"
                             else self._tasks(app, color))
        except _Unreachable as err:
            return Probe(ProbeOutcome.UNREACHABLE, str(err))
        if not targets:
            return Probe(ProbeOutcome.FAILED, f"no task of {app.service(color)} answers DNS")
        checks = [(t, app.health_path, False) for t in targets]
        if verify:
            checks += [(t, path, True) for t in targets for path in self.settings.verify_paths
                       for _ in range(self.settings.verify_requests)]
        try:
            # Each request has its own timeout, which names it; this one only bounds the round.
            async with asyncio.timeout(self.timeout + 0.5):
                results = await asyncio.gather(*(self._get(t, path, page) for t, path, page in checks))
        except TimeoutError:
            return Probe(ProbeOutcome.FAILED, f"the round did not finish within {self.timeout:g}s")
        unreachable = [detail for outcome, detail in results if outcome is ProbeOutcome.UNREACHABLE]
        if unreachable:
            return Probe(ProbeOutcome.UNREACHABLE, unreachable[0])
        failed = [detail for outcome, detail in results if outcome is ProbeOutcome.FAILED]
        if failed:
            more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
            return Probe(ProbeOutcome.FAILED, failed[0] + more)
        return Probe(ProbeOutcome.OK, f"{len(results)} requests to {len(targets)} target(s) passed")

    async def smoke(self, app: App, color: Color, requests: Sequence[SmokeRequest], *,
                    routed: Routing | None) -> SmokeRound:
        """The smoke requests, in order, to `color` (the preview route, or every task), up to the first that fails.

        See `smoke_via_router` for which of the two.

        One after the other, as the config lists them: a request may depend on the one before
        (create, then read); each goes to all of the color's tasks at once. No redirect is
        followed: the answer judged is the release's own. The round holds the app's lock, so it is
        bounded as a whole (ROUND_LIMIT), whatever the number of tasks and requests.
        """
        try:
            targets = await (self._routes(app, color, routed) if self.smoke_via_router(app)
                             else self._tasks(app, color))
        except _Unreachable as err:
            return SmokeRound(SmokeOutcome.UNREACHABLE, detail=str(err))
        if not targets:
            return SmokeRound(SmokeOutcome.FAILED, detail=f"no task of {app.service(color)} answers DNS")
        verdicts: list[Verdict] = []
        started = time.monotonic()
        try:
            async with asyncio.timeout(ROUND_LIMIT):
                for request in requests:
                    answers = await asyncio.gather(*(self._send(t, request) for t in targets))
                    for target, answer in zip(targets, answers, strict=True):
                        where = target.label + (f" (Host {target.host})" if target.host else "")
                        verdicts.append(evaluate(request, where, answer))
                    if not all(v.ok for v in verdicts):
                        break
        except TimeoutError:
            return SmokeRound(SmokeOutcome.FAILED, tuple(verdicts),
                              f"the smoke requests did not finish within {ROUND_LIMIT:g}s "
                              f"({len(verdicts)} answered in {time.monotonic() - started:.1f}s)")
        return judge(verdicts)

    def smoke_via_router(self, app: App) -> bool:
        """Whether smoke requests take the router's preview route (as users' requests will take its main route).

        Always with `probe.via: router`; with `direct` probes too, when the app has a preview
        rule and the config names the router's URL (`probe.preview_url` or `active_url`): then
        the release is judged through the same proxy, headers and rule that users will get. Else
        they go to every task by Swarm DNS.
        """
        return self.settings.via == "router" or (
            app.preview_rule is not None and self.settings.route_url(app.name, preview=True) is not None)

    async def _send(self, target: _Target, request: SmokeRequest) -> Answer:
        headers = {"Host": target.host} if target.host else {}
        started = time.monotonic()
        try:
            async with asyncio.timeout(request.timeout):
                async with self._client().request(request.method, target.url + request.path, headers=headers,
                                                  allow_redirects=False,
                                                  timeout=aiohttp.ClientTimeout(total=request.timeout)) as resp:
                    raw = await _head(resp.content, READ_LIMIT)
                    status = resp.status
        except aiohttp.ClientConnectorError as err:
            spent = time.monotonic() - started
            no_path = err.os_error is not None and err.os_error.errno in _NO_PATH
            if no_path or target.proxied:
                what = "no network path" if no_path else f"the router at {target.url} does not answer"
                return Answer(spent, error=f"{what} ({err.os_error.strerror if err.os_error else err})",
                              unreachable=True)
            return Answer(spent, error=str(err.os_error.strerror if err.os_error else err))
        except TimeoutError:
            return Answer(time.monotonic() - started, error=f"no answer within {request.timeout:g}s")
        except aiohttp.ClientError as err:
            return Answer(time.monotonic() - started, error=str(err) or type(err).__name__)
        return Answer(time.monotonic() - started, status=status, body=raw.decode("utf-8", errors="replace"))

    async def _tasks(self, app: App, color: Color) -> list[_Target]:
        service = app.service(color)
        name = f"tasks.{service}"
        try:
            async with asyncio.timeout(self.timeout):
                addresses = await self.resolver(name, app.port)
        except (OSError, TimeoutError) as err:
            why = getattr(err, "strerror", None) or str(err) or type(err).__name__
            raise _Unreachable(
                f"cannot resolve {name} ({why}): the controller is not on the app's overlay network; "
                "run it there, or set probe.via: router") from err
        return [_Target(f"http://{_bracket(a)}:{app.port}", service, a) for a in addresses]

    async def _routes(self, app: App, color: Color, routed: Routing | None) -> list[_Target]:
        if routed is None:
            raise _Unreachable("the router reports no routing for the app, so no route reaches any color")
        if routed.weight(color) == 100:
            url, host, label = self.settings.route_url(app.name, preview=False), app.rule.first_host, "main route"
        elif routed.preview is color and app.preview_rule:
            url, host, label = (self.settings.route_url(app.name, preview=True), app.preview_rule.first_host,
                                "preview route")
        else:
            raise _Unreachable(f"no route serves {color} alone ({routed}); a preview rule lets the controller "
                               "reach the idle color through the router")
        assert url is not None  # the config requires active_url with via: router
        return [_Target(url, host, label, proxied=True)]

    async def _get(self, target: _Target, path: str, page: bool) -> tuple[ProbeOutcome, str]:
        """One request; a health path must answer 2xx or 3xx, a verify path anything but 5xx."""
        where = f"GET {path} on {target.label}" + (f" (Host {target.host})" if target.host else "")
        headers = {"Host": target.host} if target.host else {}
        try:
            async with self._client().get(target.url + path, headers=headers, allow_redirects=False) as resp:
                await resp.read()
                status = resp.status
        except aiohttp.ClientConnectorError as err:
            if err.os_error is not None and err.os_error.errno in _NO_PATH:
                return ProbeOutcome.UNREACHABLE, f"{where}: no network path ({err.os_error.strerror})"
            if target.proxied:
                return ProbeOutcome.UNREACHABLE, f"{where}: the router at {target.url} does not answer ({err})"
            return ProbeOutcome.FAILED, f"{where}: {err.os_error.strerror if err.os_error else err}"
        except TimeoutError:
            return ProbeOutcome.FAILED, f"{where}: no answer within {self.timeout:g}s"
        except aiohttp.ClientError as err:
            return ProbeOutcome.FAILED, f"{where}: {str(err) or type(err).__name__}"
        bad = status >= 500 if page else not 200 <= status < 400
        return (ProbeOutcome.FAILED, f"{where}: HTTP {status}") if bad else (ProbeOutcome.OK, "")


async def _head(stream: aiohttp.StreamReader, limit: int) -> bytes:
    """The first `limit` bytes of a body (all of a shorter one): `read(n)` alone returns what one chunk brought."""
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await stream.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _bracket(address: str) -> str:
    return f"[{address}]" if ":" in address else address
