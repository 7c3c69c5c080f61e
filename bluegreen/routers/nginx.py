"""The nginx router: one server config per app, activated only once `nginx -t` accepts it, then a reload.

nginx switches all traffic at once (no weights): the app's server block proxies to the color
that holds the traffic, and a second block serves the preview color on the preview hosts.

    server {
        listen 80;
        server_name web.example.com;
        resolver 127.0.0.11 valid=5s ipv6=off;   # Docker's DNS: the dnsrr name resolves per request
        location / {
            set $swarmshift_upstream web-green:8000;
            proxy_pass http://$swarmshift_upstream;
            proxy_next_upstream error timeout http_502 http_503 http_504;   # another task, same color
            ...
        }
    }

Why it loses no request on a switch: a reload starts new workers with the new config while the
old ones finish the requests they hold; no request is ever cut. What a reload does cut is an
idle keep-alive connection, and a request a client sends on it at that instant is lost; hence
`keepalive_timeout 0` by default (see NginxSettings.keepalive_timeout). The proxy_pass target is
a variable so that nginx resolves the service name per request (through `resolver`), instead of
once at load: tasks come and go, and with `endpoint_mode: dnsrr` the name is their addresses.

How a config is activated: the live file is kept as a backup, the candidate replaces it (by
rename), `nginx -t` tests the whole configuration, and only then is nginx reloaded; when the test
or the reload fails, the backup is renamed back and nginx keeps running the old config, never
having read the new one. A controller killed between the swap and the restore leaves the
backup; the next `read` or `apply` of that app restores it first.

A cancelled activation (SIGTERM) ends the same way as a failed one, by `finally`-style cleanup
that cannot be cut short: each file step runs to its end (`finish_in_thread`), a cancellation
before the reload puts the backup back, and a reload already started runs to its end (it bounds
itself), after which the backup is put back only if it failed. So the live file is always what
nginx was last reloaded with, or what it will be once the reload in flight ends. Every file
name is built by `confined`: a name that would leave `conf_dir` is refused. The nginx.conf that includes
`<conf_dir>/*.conf` should define a `default_server` of its own: otherwise nginx hands requests
for unknown hosts to the first app.

With a status port, each app's file also answers `GET /swarmshift/routing` there (Host
`swarmshift-status-<app>`) with the routing it carries, so `confirm` hears from nginx itself
that the new workers run the new config.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp

from bluegreen.apps import App, Color, Strategy
from bluegreen.labels import PREVIEW_RULE_LABEL, RULE_LABEL, STRATEGY_LABEL
from bluegreen.routers.base import (
    HEADER,
    RouterError,
    confined,
    duration,
    finish,
    finish_in_thread,
    routing_comment,
    routing_in,
    write_atomic,
)
from bluegreen.routers.nginx_actions import Action, command, docker_exec, docker_signal, signal_pid_file
from bluegreen.rules import Rule
from bluegreen.state import Routing

if TYPE_CHECKING:
    from bluegreen.config import NginxSettings
    from swarmshift.swarm import Swarm

Upstream = Callable[[App, Color], str]
TraefikDocument = Callable[[Iterable[tuple[App, Routing]]], dict[str, Any]]

_NO_CONFIG = "# swarmshift: no config for this app yet\n"
_ADDRESS = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9_.-]*|\[[0-9A-Fa-f:.]+\]):[0-9]{1,5}$")
_LISTEN = re.compile(r"^(?:(?:[A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\]):)?[0-9]{1,5}$")
_HOST = re.compile(r"^(?:\*\.)?[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*$")
STATUS_PATH = "/swarmshift/routing"


def swarm_upstream(app: App, color: Color) -> str:
    """The color's Swarm service name and port, resolved by Docker's DNS on the overlay network."""
    return f"{app.service(color)}:{app.port}"


def status_host(app: str) -> str:
    return f"swarmshift-status-{app}"


def hosts(rule: Rule) -> tuple[str, ...]:
    """The server names of a Host(`…`) [|| Host(`…`)] rule; RouterError for any other rule."""
    found = rule.hosts
    if not found:
        raise RouterError(f"the nginx router needs a rule of Host(`…`) matchers joined by || (got {rule.text!r})")
    for host in found:
        if not _HOST.match(host):
            raise RouterError(f"not a host name nginx takes: {host!r}")
    return found


def app_problems(app: App) -> list[str]:
    """What keeps a well-labelled app from being routed by nginx: weights, and rules other than Host matchers."""
    where = f"app {app.name}"
    problems = []
    if app.strategy is Strategy.PROGRESSIVE:
        problems.append(f"{where}: {STRATEGY_LABEL}: progressive needs a Traefik router; nginx switches "
                        "all traffic at once (got 'progressive')")
    for label, rule in ((RULE_LABEL, app.rule), (PREVIEW_RULE_LABEL, app.preview_rule)):
        if rule is not None and rule.hosts is None:
            problems.append(f"{where}: {label}: the nginx router needs a rule of Host(`…`) matchers "
                            f"joined by || (got {rule.text!r})")
    return problems


# --- The router --------------------------------------------------------------------------------


class NginxRouter:
    kind = "nginx"

    def __init__(
        self,
        conf_dir: str | Path,
        *,
        test: Action,
        reload: Action,
        listen: str = "80",
        resolver: str = "127.0.0.11",
        resolver_valid: float = 5.0,
        keepalive_timeout: float = 0.0,
        upstream: Upstream = swarm_upstream,
        status_listen: str | None = None,
        status_url: str | None = None,
        server_snippet: str = "",
        confirm_timeout: float = 5.0,
        settle: float = 0.2,
        traefik_document: TraefikDocument | None = None,
    ) -> None:
        for value, what in ((listen, "listen"), (status_listen, "status_listen")):
            if value is not None and not _LISTEN.match(str(value)):
                raise ValueError(f"{what}: expected PORT or HOST:PORT (got {value!r})")
        if (status_listen is None) != (status_url is None):
            raise ValueError("status_listen and status_url go together")
        self.dir = Path(conf_dir)
        self.test = test
        self.reload = reload
        self.listen = str(listen)
        self.resolver = resolver
        self.resolver_valid = resolver_valid
        self.keepalive_timeout = keepalive_timeout
        self.upstream = upstream
        self.status_listen = status_listen
        self.status_url = status_url.rstrip("/") if status_url else None
        self.server_snippet = server_snippet.strip()
        self.confirm_timeout = confirm_timeout
        self.settle = settle
        self._traefik_document = traefik_document
        # nginx -t tests every app's file at once: one activation at a time, or one app's bad
        # candidate would fail another's test.
        self._lock = asyncio.Lock()

    @classmethod
    def from_settings(cls, settings: NginxSettings, *, swarm: Swarm | None = None,
                      traefik_document: TraefikDocument | None = None) -> NginxRouter:
        if settings.service:
            if swarm is None:
                raise ValueError("an nginx service needs the Swarm client")
            test = docker_exec(swarm, settings.service, settings.test_command, within=settings.command_timeout)
            reload = docker_signal(swarm, settings.service)
        else:
            test = command(settings.test_command, within=settings.command_timeout)
            if settings.pid_file:
                reload = signal_pid_file(settings.pid_file)
            else:
                reload = command(settings.reload_command or ["nginx", "-s", "reload"], within=settings.command_timeout)
        return cls(
            settings.conf_dir, test=test, reload=reload, listen=settings.listen, resolver=settings.resolver,
            resolver_valid=settings.resolver_valid, keepalive_timeout=settings.keepalive_timeout,
            status_listen=settings.status_listen, status_url=settings.status_url,
            server_snippet=settings.server_snippet, confirm_timeout=settings.confirm_timeout,
            traefik_document=traefik_document,
        )

    def path(self, app: str) -> Path:
        """The app's live file; RouterError for a name whose file would not be directly in `conf_dir`."""
        return confined(self.dir, app, suffix=".conf")

    def _backup(self, app: str) -> Path:
        # Hidden and not matched by the `*.conf` include: nginx never reads it.
        return confined(self.dir, app, prefix=".", suffix=".conf.bak")

    # -- rendering ---------------------------------------------------------------------------

    def _server(self, names: Sequence[str], address: str) -> list[str]:
        if not _ADDRESS.match(address):
            raise RouterError(f"not an upstream address nginx takes: {address!r} (expected HOST:PORT)")
        lines = [
            "server {",
            f"    listen {self.listen};",
            f"    server_name {' '.join(names)};",
            f"    resolver {self.resolver} valid={duration(self.resolver_valid)} ipv6=off;",
            "    resolver_timeout 2s;",
            "    # A reload closes idle keep-alive connections, losing a request sent on one just then."
            if self.keepalive_timeout == 0 else "    # Keep-alive: clients must retry the requests a reload cuts.",
            f"    keepalive_timeout {duration(self.keepalive_timeout)};",
            "    location / {",
            "        # A variable makes nginx resolve the name per request: the color's tasks come and go.",
            f"        set $swarmshift_upstream {address};",
            "        proxy_pass http://$swarmshift_upstream;",
            "        proxy_http_version 1.1;",
            "        proxy_set_header Host $host;",
            "        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
            "        proxy_set_header X-Forwarded-Proto $scheme;",
            "        proxy_set_header X-Forwarded-Host $host;",
            "        proxy_connect_timeout 2s;",
            "        # Another task of the same color, for idempotent requests only (nginx's default).",
            "        proxy_next_upstream error timeout http_502 http_503 http_504;",
            "        proxy_next_upstream_tries 3;",
            "        proxy_next_upstream_timeout 10s;",
            "    }",
        ]
        if self.server_snippet:
            lines += ["    " + line for line in self.server_snippet.splitlines()]
        return lines + ["}"]

    def render(self, app: App, routing: Routing) -> str:
        """The app's config file for `routing`; nginx takes only all-or-nothing weights."""
        active = routing.single
        if active is None:
            raise RouterError(f"nginx cannot split traffic ({routing}); use a Traefik router for progressive mode")
        out = [HEADER.rstrip("\n"), routing_comment(routing), f"# app {app.name}: traffic to {active}", ""]
        out += self._server(hosts(app.rule), self.upstream(app, active))
        if app.preview_rule:
            out += ["", f"# preview: {routing.preview}"]
            out += self._server(hosts(app.preview_rule), self.upstream(app, routing.preview))
        if self.status_listen:
            out += [
                "",
                "server {",
                f"    listen {self.status_listen};",
                f"    server_name {status_host(app.name)};",
                "    access_log off;",
                f"    location = {STATUS_PATH} {{",
                "        default_type text/plain;",
                f'        return 200 "app={app.name} {routing}\\n";',
                "    }",
                "}",
            ]
        return "\n".join(out) + "\n"

    # -- activation --------------------------------------------------------------------------

    def _swap_in(self, live: Path, backup: Path, data: bytes) -> bool:
        """Keep the live file as the backup and put the candidate in its place; False when it is live already."""
        self.dir.mkdir(parents=True, exist_ok=True)
        _recover(live, backup)
        try:
            old = live.read_bytes()
        except FileNotFoundError:
            old = None
        if old == data:
            return False
        write_atomic(backup, old if old is not None else _NO_CONFIG.encode())
        write_atomic(live, data)
        return True

    async def _activate(self, app: str, text: str) -> None:
        live, backup = self.path(app), self._backup(app)
        async with self._lock:
            step = "the swap"
            reloaded = False

            async def reload() -> None:
                nonlocal reloaded
                await self.reload()
                reloaded = True

            cancelled: asyncio.CancelledError | None = None
            try:
                if not await finish_in_thread(self._swap_in, live, backup, text.encode()):
                    return
                step = "nginx -t refused"
                await self.test()  # cancelled here, nginx has not read the candidate: it is put back below
                step = "the reload failed"
                # Once sent, a reload may already have nginx running the candidate: let it end, so
                # that the file put back (or kept) is what nginx runs.
                await finish(reload())
            except asyncio.CancelledError as err:
                if not reloaded:
                    await self._put_back(app, live, backup, step, err)
                    raise
                cancelled = err  # cancelled during a reload that went through: nginx runs the candidate
            except BaseException as err:  # anything else too: the live file must stay the one nginx runs
                await self._put_back(app, live, backup, step, err)
                if isinstance(err, RouterError):
                    raise RouterError(f"{app}: {step} the new config; the old one stays in effect: {err}") from err
                if isinstance(err, OSError):
                    raise RouterError(f"{live}: {err.strerror or err}; the old config stays in effect") from err
                raise
            try:
                await finish_in_thread(_commit, backup)
            except OSError as err:
                # nginx runs the new config; a backup left over is put back by the next read, so it must go.
                if cancelled is not None:
                    raise cancelled from err
                raise RouterError(f"{backup}: {err.strerror or err}") from err
            if cancelled is not None:
                raise cancelled

    @staticmethod
    async def _put_back(app: str, live: Path, backup: Path, step: str, cause: BaseException) -> None:
        try:
            await finish_in_thread(_recover, live, backup)
        except OSError as lost:
            raise RouterError(f"{app}: {step}, and the old config could not be put back from {backup}: "
                              f"{lost.strerror or lost}") from cause

    async def apply(self, app: App, routing: Routing) -> None:
        await self._activate(app.name, self.render(app, routing))

    async def remove(self, app: str) -> None:
        """Stop routing `app`: its file becomes a stub, tested and reloaded like any change."""
        self._backup(app)  # refused like the live file: the activation would use it
        if await asyncio.to_thread(self.path(app).exists):
            await self._activate(app, _NO_CONFIG)

    # -- reading back ------------------------------------------------------------------------

    async def written(self, app: App) -> Routing | None:
        """The routing in the app's live file: only a tested and reloaded config stays there."""
        live, backup = self.path(app.name), self._backup(app.name)

        def load() -> str | None:
            _recover(live, backup)
            try:
                return live.read_text()
            except OSError:
                return None

        # Between activations only: a running one owns the backup. And to the end even when
        # cancelled: a recovery still running after the lock is released would race the next swap.
        async with self._lock:
            text = await finish_in_thread(load)
        return routing_in(text) if text else None

    async def read(self, app: App) -> Routing | None:
        """What nginx serves, from its status port when there is one, else from the live file."""
        written = await self.written(app)
        return await self.loaded(app) if self.status_url else written

    async def loaded(self, app: App, session: aiohttp.ClientSession | None = None) -> Routing | None:
        """The routing nginx itself serves on the status port (None when it does not answer), else the file's."""
        if self.status_url is None:
            return await self.written(app)
        if session is None:
            async with _status_session() as own:
                return await self.loaded(app, own)
        try:
            async with session.get(self.status_url + STATUS_PATH, headers={"Host": status_host(app.name)}) as resp:
                body = await resp.text()
        except (aiohttp.ClientError, TimeoutError):
            return None
        if resp.status != 200 or not body.startswith(f"app={app.name} "):
            return None
        try:
            return Routing.parse(body.split(" ", 1)[1])
        except ValueError:
            return None

    async def confirm(self, app: App, routing: Routing) -> bool:
        """Whether nginx serves `routing` within `confirm_timeout`, and only it for `settle` seconds.

        On a reload nginx's master starts the new workers, waits 100 ms, and only then tells the
        old ones to stop accepting: for that long both generations take new connections. The
        old generation answers the status port with the old routing (or not at all), so a
        switch is confirmed once only the new routing has been heard for `settle` seconds.
        """
        if self.status_url is None:
            return await self.written(app) == routing
        deadline = time.monotonic() + self.confirm_timeout
        since: float | None = None
        async with _status_session() as session:
            while True:
                now = time.monotonic()
                if await self.loaded(app, session) == routing:
                    since = now if since is None else since
                    if now - since >= self.settle:
                        return True
                else:
                    since = None
                if now >= deadline:
                    return False
                await asyncio.sleep(0.01)

    async def servers_up(self, app: App, color: Color) -> bool | None:
        """Unknown, always: open-source nginx has no active health checks whose state it reports."""
        return None

    def mark_ready(self) -> None:
        """Nothing waits on start-up: nginx runs each app's file once it is tested and reloaded."""

    def traefik_document(self, routes: Iterable[tuple[App, Routing]]) -> dict[str, Any]:
        """The document a Traefik would need for the same routing (nginx itself reads none)."""
        if self._traefik_document is None:
            raise RouterError("this nginx router was built without Traefik settings")
        return self._traefik_document(routes)

    async def close(self) -> None:
        """Nothing to release: each confirmation opens and closes its own HTTP session."""


def _recover(live: Path, backup: Path) -> None:
    """Put back the backup an activation left (killed, cancelled, failed): nginx never ran the file beside it."""
    with contextlib.suppress(FileNotFoundError):
        os.replace(backup, live)


def _commit(backup: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(backup)


def _status_session() -> aiohttp.ClientSession:
    # A fresh connection per request: a kept one would stay with the worker that accepted it.
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2),
                                 connector=aiohttp.TCPConnector(force_close=True))
