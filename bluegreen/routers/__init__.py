"""The router interface the deploy machine drives, and the factory that picks a proxy by name.

Like Flagger's routers, each proxy lives in one module and implements the same small interface;
the controller never knows which proxy it drives:

- `apply(app, routing)` makes the proxy send `routing` (weights and the preview color). It is
  idempotent, and it never leaves the proxy with a configuration it would refuse.
- `read(app)` is the routing the proxy has in effect, as well as the router can tell (Traefik's
  API when configured, else what the router wrote), or None when it has nothing for the app.
- `confirm(app, routing)` waits a bounded time until `read` reports `routing`.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Protocol

from bluegreen.apps import App
from bluegreen.state import Routing

if TYPE_CHECKING:
    from bluegreen.config import RouterSettings
    from swarmshift.swarm import Swarm


class RouterError(Exception):
    """The proxy could not be given the routing; its previous routing is still in effect."""


class Router(Protocol):
    kind: str

    async def apply(self, app: App, routing: Routing) -> None: ...

    async def read(self, app: App) -> Routing | None: ...

    async def confirm(self, app: App, routing: Routing) -> bool: ...

    async def remove(self, app: str) -> None: ...

    async def close(self) -> None: ...


async def poll_until(read, want: Routing, within: float, interval: float = 0.1) -> bool:
    """Call `read()` until it returns `want` or `within` seconds pass; at least once."""
    deadline = time.monotonic() + within
    while True:
        if await read() == want:
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(min(interval, max(0.0, deadline - time.monotonic())))


def build(settings: RouterSettings, *, swarm: Swarm | None = None) -> Router:
    """The router `settings.kind` names. The nginx router needs `swarm` when it drives an nginx service."""
    if settings.kind in ("traefik-file", "traefik-http"):
        from bluegreen.routers.traefik_file import TraefikAPI, TraefikFileRouter
        from bluegreen.routers.traefik_http import TraefikHTTPRouter

        t = settings.traefik
        provider = "file" if settings.kind == "traefik-file" else "http"
        api = TraefikAPI(t.api_url, provider=provider) if t.api_url else None
        common = dict(entrypoints=tuple(t.entrypoints), health_interval=t.health_interval,
                      health_timeout=t.health_timeout, api=api, confirm_timeout=t.confirm_seconds(settings.kind))
        if settings.kind == "traefik-file":
            return TraefikFileRouter(t.dynamic_dir, **common)  # type: ignore[arg-type]
        return TraefikHTTPRouter(**common)  # type: ignore[arg-type]
    if settings.kind == "nginx":
        from bluegreen.routers.nginx import NginxRouter

        return NginxRouter.from_settings(settings.nginx, swarm=swarm)
    raise ValueError(f"unknown router kind {settings.kind!r}")
