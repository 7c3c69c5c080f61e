"""What both Traefik routers share besides the document: Traefik's API, trials of new shapes, confirmation, server health.

Confirmation is Traefik's own word (with `api_url`): a routing counts only once Traefik's API
shows the app's router and services enabled with the new weights. Before a document whose shape
(anything but the weights) Traefik has not yet accepted goes live, it is tried: the same document
under the names `<app>-trial…`, each rule narrowed by a header no request carries, so users never
reach it. If Traefik refuses any part of the trial, the live document is left as it was and the
apply fails with Traefik's errors. If Traefik still refuses the live document (another file
defines the same names, say), the previous document is put back and the confirmation fails.

Server health is Traefik's word too: `servers_up` reads a color's loadBalancer service, whose
`serverStatus` is what Traefik's own health checker last found. A task Swarm has just
rescheduled runs before that checker has seen it; until then the weighted service has no
healthy child in that color and answers 503 "no available server".
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from typing import Any

import aiohttp

from bluegreen.apps import App, Color
from bluegreen.routers.base import RouterError, poll_until
from bluegreen.routers.traefik_doc import (
    DEFAULT_PRIORITY,
    TRIAL_RAISE,
    check_document,
    color_service,
    document,
    idle_color,
    objects,
    preview_color,
    preview_router,
    shape,
    trial_app,
)
from bluegreen.state import Routing

# How long a servers_up question may take: it is asked in the tick of a rollback, whose deadline it adds to.
UP_TIMEOUT = 1.0


class TraefikAPI:
    """Reads what Traefik has loaded, from its API (`GET /api/http/services/<name>@<provider>`).

    Traefik answers with the service's configuration as loaded plus runtime fields: for a
    weighted service `{"weighted": {"services": [{"name", "weight"}, …]}, "status", "name",
    "provider", "type": "weighted", …}`; for a loadBalancer with health checks also
    `"serverStatus": {"http://web-blue:8000": "UP" | "DOWN"}`; a router answers with its
    `service`. The API should listen on an entrypoint only the stack can reach.
    """

    def __init__(self, url: str, *, provider: str = "file", timeout: float = 3.0, up_timeout: float = UP_TIMEOUT,
                 session: aiohttp.ClientSession | None = None) -> None:
        self.url = url.rstrip("/")
        self.provider = provider
        self.timeout = timeout
        self.up_timeout = up_timeout
        self._session = session
        self._own_session = session is None

    async def _get(self, path: str, *, total: float | None = None) -> dict[str, Any] | None:
        """Traefik's answer at `path`, None for 404; RouterError otherwise. `total`: this request's own timeout."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        # Passed only when set: aiohttp takes timeout=None as no timeout at all, not the session's.
        within: dict[str, Any] = {"timeout": aiohttp.ClientTimeout(total=total)} if total is not None else {}
        try:
            async with self._session.get(f"{self.url}{path}", **within) as resp:
                if resp.status == 404:
                    return None
                if resp.status != 200:
                    raise RouterError(f"Traefik API {path}: HTTP {resp.status}")
                return await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as err:
            raise RouterError(f"Traefik API {path}: {err or type(err).__name__}") from err

    async def loaded(self, app: App, fallback_preview: Color | None = None) -> Routing | None:
        """The routing Traefik has loaded for `app`, or None when it has not loaded the app (yet)."""
        service = await self._get(f"/api/http/services/{app.name}@{self.provider}")
        router = None
        if app.preview_rule:
            router = await self._get(f"/api/http/routers/{preview_router(app.name)}@{self.provider}")
        return loaded_routing(app.name, service, router, fallback_preview)

    async def servers_up(self, service: str) -> bool | None:
        """Whether Traefik reports a server of the loadBalancer `service` UP (`up_from_status`), asked within
        `up_timeout`; RouterError when Traefik does not answer."""
        path = f"/api/http/services/{service}@{self.provider}"
        return up_from_status(await self._get(path, total=self.up_timeout))

    async def refusals(self, routers: Iterable[str], services: Iterable[str]) -> list[str] | None:
        """What Traefik says is wrong with these routers and services; None while it has not loaded all of them.

        A router counts as refused unless its status is `enabled` (`warning` is an entrypoint
        that does not exist among others); a service when it is `disabled`.
        """
        problems: list[str] = []
        for kind, names, bad in (("routers", routers, {"disabled", "warning"}), ("services", services, {"disabled"})):
            for name in names:
                info = await self._get(f"/api/http/{kind}/{name}@{self.provider}")
                if info is None:
                    return None
                if info.get("status") in bad or (kind == "routers" and info.get("error")):
                    errors = "; ".join(info.get("error") or []) or f"status {info.get('status')}"
                    problems.append(f"{kind[:-1]} {name}: {errors}")
        return problems

    async def judge(self, doc: Mapping[str, Any], within: float) -> None:
        """Wait until Traefik has loaded every object of `doc`; RouterError with its words if it refuses one."""
        routers, services = objects(doc)
        deadline = time.monotonic() + within
        while True:
            problems = await self.refusals(routers, services)
            if problems:
                raise RouterError("Traefik refused it: " + "; ".join(problems))
            if problems is not None:
                return
            if time.monotonic() >= deadline:
                raise RouterError(f"Traefik did not load {', '.join(routers)} within {within:g}s")
            await asyncio.sleep(0.1)

    async def close(self) -> None:
        if self._session is not None and self._own_session:
            await self._session.close()
        self._session = None


class Trials:
    """Which document shapes Traefik has accepted per app, and the trial run for a new one."""

    def __init__(self, api: TraefikAPI | None, within: float) -> None:
        self.api = api
        self.within = within
        self.accepted: dict[str, str] = {}

    def needed(self, app: App, doc: Mapping[str, Any]) -> bool:
        return self.api is not None and self.accepted.get(app.name) != shape(doc)

    async def run(self, app: App, routing: Routing, make, publish, withdraw) -> None:
        """Publish the app's trial document, let Traefik judge it, withdraw it; RouterError if refused."""
        assert self.api is not None
        trial = make(trial_app(app), routing, trial=True)
        check_document(trial)
        try:
            # Inside the try: a publication cancelled halfway (its write still finishing) is
            # withdrawn too, and withdrawing what was never published is harmless.
            await publish(trial)
            await self.api.judge(trial, self.within)
        except RouterError as err:
            raise RouterError(f"{app.name}: the new Traefik configuration was tried first and {err}; "
                              "the routing in effect is unchanged") from None
        finally:
            await withdraw()

    def accept(self, app: App, doc: Mapping[str, Any]) -> None:
        self.accepted[app.name] = shape(doc)

    async def live_refusals(self, doc: Mapping[str, Any]) -> list[str] | None:
        assert self.api is not None
        return await self.api.refusals(*objects(doc))


def loaded_routing(app: str, service: Mapping[str, Any] | None, preview: Mapping[str, Any] | None,
                   fallback_preview: Color | None = None) -> Routing | None:
    """The routing in Traefik's API answers for the app's weighted service and preview router.

    None unless the service is a weighted one that Traefik runs (status enabled or warning) whose
    colors' weights add up to 100; a color left out has weight 0, and a child without a weight
    has Traefik's default weight, 1.
    """
    if not service or service.get("status") not in ("enabled", "warning"):
        return None
    try:
        children = service["weighted"]["services"]
        weights = {str(c["name"]).split("@", 1)[0]: c.get("weight", 1) for c in children}
        blue, green = weights.get(color_service(app, Color.BLUE), 0), weights.get(color_service(app, Color.GREEN), 0)
        if blue + green != 100:
            return None
        if preview is not None and preview.get("status") not in ("enabled", "warning"):
            return None
        color = preview_color(app, preview.get("service") if preview else None)
        return Routing(blue=int(blue), green=int(green),
                       preview=color or fallback_preview or idle_color(int(blue), int(green)))
    except (KeyError, TypeError, ValueError):
        return None


def up_from_status(answer: Mapping[str, Any] | None) -> bool | None:
    """What Traefik's answer for a loadBalancer service says of its servers: True when one is UP.

    False when it lists servers and none is UP. None when it cannot tell: no answer (404: the
    service is not loaded), or no `serverStatus` (Traefik builds, and checks, only a service some
    router uses), or anything unexpected in it.
    """
    if not isinstance(answer, Mapping):
        return None
    status = answer.get("serverStatus")
    if not isinstance(status, Mapping) or not status:
        return None
    return any(value == "UP" for value in status.values())


class TraefikRouter:
    """What the file and HTTP routers share: the document's settings, Traefik's API, trials and confirmation.

    A subclass says where its documents go (`_publish`) and what it wrote (`written`).
    """

    kind: str

    def __init__(self, *, entrypoints: Iterable[str] = ("web",), health_interval: float = 5.0,
                 health_timeout: float = 2.0, api: TraefikAPI | None = None, confirm_timeout: float = 10.0,
                 priority: int = DEFAULT_PRIORITY) -> None:
        self.entrypoints = tuple(entrypoints)
        self.priority = priority
        self.health_interval = health_interval
        self.health_timeout = health_timeout
        self.api = api
        self.confirm_timeout = confirm_timeout
        self.trials = Trials(api, confirm_timeout)

    def app_document(self, app: App, routing: Routing, *, trial: bool = False) -> dict[str, Any]:
        """The app's document; a trial's routers rank above the live ones (see traefik_doc)."""
        return document(app, routing, entrypoints=self.entrypoints, health_interval=self.health_interval,
                        health_timeout=self.health_timeout,
                        priority=self.priority + (TRIAL_RAISE if trial else 0))

    async def written(self, app: App) -> Routing | None:
        raise NotImplementedError

    async def read(self, app: App) -> Routing | None:
        written = await self.written(app)
        if self.api is None:
            return written
        try:
            return await self.api.loaded(app, fallback_preview=written.preview if written else None)
        except RouterError:
            return None  # Traefik unreachable: unknown, which the machine never takes as confirmed

    async def servers_up(self, app: App, color: Color) -> bool | None:
        """Whether Traefik's health checks have a server of the color's service up; None without the API or an answer."""
        if self.api is None:
            return None
        try:
            return await self.api.servers_up(color_service(app.name, color))
        except RouterError:
            return None  # Traefik unreachable or answering an error: unknown, which holds nothing

    async def _confirm_loaded(self, app: App, routing: Routing, doc: Mapping[str, Any] | None, put_back) -> bool:
        """Poll until Traefik runs `routing` for the app. If Traefik refuses the live document, put the
        previous one back and raise RouterError with its words; never report a routing it does not run."""
        if self.trials.api is None or doc is None:
            return await poll_until(lambda: self.read(app), routing, self.confirm_timeout)
        deadline = time.monotonic() + self.confirm_timeout
        while True:
            problems = await self.trials.live_refusals(doc)
            if problems:
                await put_back(app)
                raise RouterError(f"{app.name}: Traefik refused the new configuration: {'; '.join(problems)}; "
                                  "the previous one is put back")
            if problems is not None and await self.read(app) == routing:
                self.trials.accept(app, doc)
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.1)

    async def close(self) -> None:
        if self.api is not None:
            await self.api.close()
