"""The Traefik HTTP-provider router: every app's document merged into one, served at `GET /v1/traefik`.

Traefik polls the controller (`providers.http.endpoint`), so Traefik and the controller may run
on different nodes, which the file provider cannot do. The price is latency: a switch reaches
Traefik at its next poll (`pollInterval`, 5s by default) plus its throttle.

The routing lives in memory. After a restart it is empty until reconciliation has applied every
app; until `mark_ready()` the document is refused (serve 503), because Traefik replaces its
whole HTTP-provider configuration with what it fetches, and keeps the last one on an error.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from bluegreen.apps import App
from bluegreen.routers.base import RouterError
from bluegreen.routers.traefik_api import TraefikAPI, TraefikRouter
from bluegreen.routers.traefik_doc import DEFAULT_PRIORITY, TRIAL_SUFFIX, check_document, merge
from bluegreen.state import Routing


class TraefikHTTPRouter(TraefikRouter):
    kind = "traefik-http"

    def __init__(self, *, entrypoints: Iterable[str] = ("web",), health_interval: float = 5.0,
                 health_timeout: float = 2.0, api: TraefikAPI | None = None, confirm_timeout: float = 15.0,
                 priority: int = DEFAULT_PRIORITY) -> None:
        super().__init__(entrypoints=entrypoints, health_interval=health_interval, health_timeout=health_timeout,
                         api=api, confirm_timeout=confirm_timeout, priority=priority)
        self._routes: dict[str, tuple[App, Routing]] = {}
        self._documents: dict[str, dict[str, Any]] = {}
        self._previous: dict[str, tuple[tuple[App, Routing], dict[str, Any]] | None] = {}
        self.ready = False
        self.revision = 0  # grows with every change, for an ETag or a log line

    async def apply(self, app: App, routing: Routing) -> None:
        if self._routes.get(app.name) == (app, routing):
            return
        doc = self.app_document(app, routing)
        check_document(doc, rules=False)  # every rule served was parsed at discovery
        others = [d for name, d in self._documents.items() if name != app.name]
        merged = merge([*others, doc])  # a name clash with another app fails here, before serving it
        check_document(merged, rules=False)
        if self.trials.needed(app, doc) and self.ready:
            trial_name = f"{app.name}{TRIAL_SUFFIX}"
            await self.trials.run(app, routing, self.app_document,
                                  lambda trial: self._serve(trial_name, trial),
                                  lambda: self._serve(trial_name, None))
        old = self._routes.get(app.name)
        self._previous[app.name] = (old, self._documents[app.name]) if old else None
        self._routes[app.name] = (app, routing)
        self._documents[app.name] = doc
        self.revision += 1

    async def _serve(self, name: str, doc: dict[str, Any] | None) -> None:
        if doc is None:
            self._documents.pop(name, None)
        else:
            self._documents[name] = doc
        self.revision += 1

    def mark_ready(self) -> None:
        """Call once every app has been applied after start-up: only then is the document complete."""
        self.ready = True

    def document(self) -> dict[str, Any]:
        """The document for `GET /v1/traefik`; RouterError until `mark_ready()`."""
        if not self.ready:
            raise RouterError("the routing is not rebuilt yet after start-up")
        return merge(self._documents[name] for name in sorted(self._documents))

    def traefik_document(self, routes: Iterable[tuple[App, Routing]]) -> dict[str, Any]:
        """What this router serves Traefik's HTTP provider; RouterError until `mark_ready()`."""
        return self.document()

    async def written(self, app: App) -> Routing | None:
        served = self._routes.get(app.name)
        return served[1] if served else None

    async def confirm(self, app: App, routing: Routing) -> bool:
        if not self.ready:
            return False  # Traefik cannot have fetched it: the document is refused until mark_ready()
        return await self._confirm_loaded(app, routing, self._documents.get(app.name), self._put_back)

    async def _put_back(self, app: App) -> None:
        previous = self._previous.pop(app.name, None)
        if previous is None:
            self._routes.pop(app.name, None)
            self._documents.pop(app.name, None)
        else:
            self._routes[app.name], self._documents[app.name] = previous
        self.revision += 1

    async def remove(self, app: str) -> None:
        if self._routes.pop(app, None) is not None:
            self._documents.pop(app, None)
            self.revision += 1
