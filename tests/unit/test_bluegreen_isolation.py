"""One bad service never blocks another (issue 10): the controller and its API over Swarm held in memory.

A broken app is left alone, shown with its reasons and logged once; every other app starts,
ticks and is served. Apps are scoped by stack, and an operator names an app by its key or by
its bare name when one stack alone uses it. These run the real Controller over
tests/support/memory.py and the real API through aiohttp's test client.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from bluegreen.api import make_app
from bluegreen.apps import App, Color
from bluegreen.cli import render_status
from bluegreen.config import BlueGreenConfig
from bluegreen.controller import AmbiguousApp, Controller
from bluegreen.labels import (
    APP_LABEL,
    COLOR_LABEL,
    K_ACTIVE,
    K_GENERATION,
    K_PHASE,
    K_SINCE,
    PORT_LABEL,
    RULE_LABEL,
    STACK_LABEL,
)
from bluegreen.observe import Checks
from bluegreen.state import Routing
from swarmshift import alerts
from tests.support.memory import Clock, MemoryProber, MemoryRouter, MemorySwarm

BASE = dict(probe_interval=0.2, reconcile_interval=0.2, verification_window=2, healthy_threshold=2,
            failure_threshold=1, precheck_timeout=3, wait_timeout=3)


class PickyRouter(MemoryRouter):
    """A router whose apply fails, with an error no router promises, for the apps in `failing`."""

    failing: set[str] = set()

    async def apply(self, app: App, routing: Routing) -> None:
        if app.name in self.failing:
            raise RuntimeError(f"{app.name}: something no one expected")
        await super().apply(app, routing)


def add_app(swarm: MemorySwarm, app: str, stack: str | None = None, *, blue: dict | None = None,
            green: dict | None = None) -> None:
    labels = {APP_LABEL: app, PORT_LABEL: "8000", RULE_LABEL: f"Host(`{app}.{stack or 'x'}.example.com`)"}
    if stack is not None:
        labels[STACK_LABEL] = stack
    prefix = f"{stack}_{app}" if stack else app
    swarm.add(f"{prefix}-blue", image=f"{app}:1", replicas=1, labels={**labels, COLOR_LABEL: "blue", **(blue or {})})
    swarm.add(f"{prefix}-green", image=f"{app}:1", replicas=0, labels={**labels, COLOR_LABEL: "green", **(green or {})})


def controller(swarm: MemorySwarm, router: MemoryRouter | None = None) -> Controller:
    return Controller(swarm, router or MemoryRouter(), BlueGreenConfig(**BASE), prober=MemoryProber(),
                      checks=Checks(None, []), clock=Clock())


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 20))


def events(logs: list[dict], name: str, **match: object) -> list[dict]:
    return [e for e in logs if e["event"] == name and all(e.get(k) == v for k, v in match.items())]


UNICODE_STATE = {K_GENERATION: "²", K_ACTIVE: "blue", K_PHASE: "Stable", K_SINCE: "2025-01-31T12:00:00.000Z"}


def hostile_world() -> tuple[MemorySwarm, PickyRouter]:
    swarm = MemorySwarm()
    add_app(swarm, "web")
    add_app(swarm, "api", blue={PORT_LABEL: "٨٠٠٠"})  # broken: the port is in Arabic-Indic digits
    add_app(swarm, "db", blue=UNICODE_STATE, green=UNICODE_STATE)  # `int("²")` raised here before
    add_app(swarm, "odd")  # its router apply raises what no router promises
    swarm.add("weird", image="x", labels={APP_LABEL: "web\n", COLOR_LABEL: "blue"})  # names no app
    router = PickyRouter()
    router.failing = {"odd"}
    return swarm, router


def test_start_up_carries_on_past_broken_apps_and_logs_each_once():
    swarm, router = hostile_world()
    c = controller(swarm, router)

    async def scenario() -> None:
        with capture_logs() as logs:
            await c.start()
            assert router.ready and router.routes["web"] == Routing.all_to(Color.BLUE)
            for _ in range(3):  # the apps' own loops go on ticking
                c.apps["web"].schedule(0)
                c.apps["api"].schedule(0)
                await asyncio.sleep(0.3)
            await c.stop()
        assert sorted(c.apps) == ["api", "db", "odd", "web"]  # `web\n` has no runtime, so no file or route
        assert len(events(logs, "app_invalid", app="api")) == 1
        assert events(logs, "app_invalid", app="api")[0]["problems"] == [
            "api-blue: swarmshift.bluegreen.port: expected a port number from 1 to 65535 (got '٨٠٠٠')"]
        assert len(events(logs, "app_invalid", app="db")) == 1  # both state copies bad: a problem, then adopted
        assert events(logs, "start_without", apps=["odd"])
        assert len(events(logs, "labels_invalid")) == 1

    run(scenario)


def test_docker_being_down_still_holds_start_up():
    from swarmshift.swarm import DockerUnavailable

    swarm = MemorySwarm()
    add_app(swarm, "web")
    c = controller(swarm)
    real, calls = swarm.services, []

    async def flaky(label=None):
        calls.append(label)
        if len(calls) <= 2:
            raise DockerUnavailable("no socket")
        return await real(label)

    swarm.services = flaky  # type: ignore[method-assign]

    async def scenario() -> None:
        await c.start()
        assert c.router.ready and len(calls) >= 3
        await c.stop()

    run(scenario)


async def _client(c: Controller) -> TestClient:
    client = TestClient(TestServer(make_app(c, None)))
    await client.start_server()
    return client


def test_the_api_lists_a_broken_app_with_its_reasons_and_shows_it_alone():
    swarm, router = hostile_world()
    c = controller(swarm, router)

    async def scenario() -> None:
        await c.start()
        client = await _client(c)
        try:
            answer = await client.get("/v1/apps")
            assert answer.status == 200
            views = {v["app"]: v for v in (await answer.json())["apps"]}
            assert views["web"]["broken"] is False and views["web"]["health"] == "healthy"
            assert views["api"]["broken"] is True and views["api"]["health"] == "degraded"
            assert views["api"]["problems"] == [
                "api-blue: swarmshift.bluegreen.port: expected a port number from 1 to 65535 (got '٨٠٠٠')"]
            one = await client.get("/v1/apps/api")
            assert one.status == 200 and await one.json() == views["api"]
            table = render_status(list(views.values()))
            assert "api  " in table and "Broken" in table and "api: api-blue: swarmshift.bluegreen.port" in table
        finally:
            await client.close()
            await c.stop()

    run(scenario)


def test_one_app_that_cannot_be_read_does_not_hide_the_others():
    swarm = MemorySwarm()
    add_app(swarm, "web")
    add_app(swarm, "api")
    c = controller(swarm)
    real = swarm.tasks_with_health

    async def tasks(service: str):
        if service == swarm.get("api-blue").id:
            raise ValueError("a reply no one expected")
        return await real(service)

    swarm.tasks_with_health = tasks  # type: ignore[method-assign]

    async def scenario() -> None:
        views = {v["app"]: v for v in await c.statuses()}
        assert views["web"]["broken"] is False
        assert views["api"]["broken"] is True and views["api"]["problems"] == [
            "the app could not be read: a reply no one expected"]

    run(scenario)


# --- apps are scoped by their stack ---------------------------------------------------------------

def test_two_stacks_with_an_app_named_web_are_two_apps():
    swarm = MemorySwarm()
    add_app(swarm, "web", "shop")
    add_app(swarm, "web", "blog")
    router = MemoryRouter()
    c = controller(swarm, router)

    async def scenario() -> None:
        await c.start()
        assert sorted(router.routes) == ["blog_web", "shop_web"]
        with pytest.raises(AmbiguousApp, match="name one of blog_web, shop_web"):
            await c.runtime("web")
        state = await c.deploy("shop_web", "web:2")
        assert state.deploy.id.startswith("shop_web-")
        assert swarm.get("shop_web-green").image == "web:2" and swarm.get("blog_web-green").image == "web:1"
        client = await _client(c)
        try:
            answer = await client.get("/v1/apps/web")
            assert answer.status == 400
            body = await answer.json()
            assert body["code"] == "ambiguous" and body["candidates"] == ["blog_web", "shop_web"]
            shown = await (await client.get("/v1/apps/blog_web")).json()
            assert shown["app"] == "blog_web" and shown["app_config"]["name"] == "web"
            assert shown["app_config"]["stack"] == "blog"
        finally:
            await client.close()
            await c.stop()

    run(scenario)


def test_a_bare_name_means_the_one_stack_that_uses_it():
    swarm = MemorySwarm()
    add_app(swarm, "demo", "swarmshift-demo")
    c = controller(swarm)

    async def scenario() -> None:
        await c.start()
        assert (await c.runtime("demo")).name == "swarmshift-demo_demo"
        assert (await c.status("demo"))["app"] == "swarmshift-demo_demo"
        state = await c.switch("demo", Color.GREEN, force=True)
        assert state.deploy.id.startswith("swarmshift-demo_demo-")
        for name in ("swarmshift-demo_demo", "demo"):  # the alert's swarmshift_app label: key or bare name
            notification = alerts.parse({"version": "4", "status": "firing", "alerts": [{
                "status": "firing", "labels": {"alertname": "Down", "swarmshift_app": name},
                "startsAt": "2025-06-15T15:00:00Z", "fingerprint": name}]})
            [result] = await c.on_alerts(notification)
            assert result["status"] != 404, result
        await c.stop()

    run(scenario)


# --- an extra service claiming a color is refused -------------------------------------------------

def test_a_newcomer_claiming_blue_is_refused_logged_once_and_the_app_keeps_working():
    swarm = MemorySwarm()
    add_app(swarm, "web")
    c = controller(swarm)

    async def scenario() -> None:
        rt = await c.runtime("web")
        async with rt.lock:
            await c.ticker.run(rt)
        labels = dict(swarm.get("web-blue").labels)  # every label, the state's included
        swarm.add("web-evil", image="evil:1", labels=labels)
        with capture_logs() as logs:
            for _ in range(3):
                async with rt.lock:
                    await c.ticker.run(rt)
        [refused] = events(logs, "service_refused", app="web")
        assert refused["service"] == "web-evil" and refused["kept"] == "web-blue"
        assert not events(logs, "app_invalid")
        view = await c.status("web")
        assert view["broken"] is False and view["colors"]["blue"]["service"] == "web-blue"
        assert view["refused"] == [{"service": "web-evil", "reason": "app web: web-evil: refused: "
                                    "swarmshift.bluegreen.color=blue is already web-blue's (it carries the app's "
                                    "state, as the other color does)"}]
        assert "web: app web: web-evil: refused" in render_status([view])
        await c.deploy("web", "web:2")
        assert swarm.get("web-evil").image == "evil:1"  # the controller never writes the newcomer

    run(scenario)
