"""Fuzzing every HTTP endpoint of both daemons: hostile methods, paths, queries, headers and bodies, 1,000 each.

Each app is the daemon's real `make_app` over its real object: an `Autoscaler`, and a blue-green
`Controller` with the Traefik file router writing into tmp_path, both over the in-memory Swarm
(tests/support/memory.py). One event loop and one test client serve all the examples of a test,
so that a thousand requests take seconds. Whatever is sent: no exception escapes, nothing
answers 5xx, no body carries a traceback, and an authenticated route without the right token
answers 401 (400 when the request carries several Authorization headers).
"""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given

from autoscaler.api import make_app as autoscaler_app
from autoscaler.events import EventLog
from autoscaler.loop import Autoscaler
from autoscaler.sources.dockerstats import DockerStatsSource
from bluegreen.api import make_app as bluegreen_app
from bluegreen.config import BlueGreenConfig
from bluegreen.controller import Controller
from bluegreen.labels import APP_LABEL, COLOR_LABEL, PORT_LABEL, RULE_LABEL
from bluegreen.observe import Checks
from bluegreen.routers import build
from swarmshift.http import TokenFile
from tests.support.fuzz import fuzz
from tests.support.http_fuzz import TOKEN, TRACEBACK_MARKS, Answer, Hostile, hostile, send
from tests.support.memory import MemoryProber, MemorySwarm

# hypothesis runs inside each test (one event loop and client per endpoint): marked by hand.
pytestmark = pytest.mark.fuzz

# (method, path, authenticated, the query parameters the route reads)
AUTOSCALER_ROUTES = [
    ("GET", "/healthz", False, ()),
    # /readyz is left out: before its first loop the daemon is rightly not ready (503), which this
    # harness counts as a failure; tests/unit/test_swarm_quorum.py asks it in both states.
    ("GET", "/metrics", False, ()),
    ("GET", "/v1/events", False, ("limit", "service")),
    ("POST", "/v1/alerts", True, ()),
]
BLUEGREEN_ROUTES = [
    ("GET", "/healthz", False, ()),
    ("GET", "/readyz", False, ()),
    ("GET", "/metrics", False, ()),
    ("GET", "/v1/apps", False, ()),
    ("GET", "/v1/apps/{app}", False, ()),
    ("POST", "/v1/apps/{app}/deploy", True, ()),
    ("POST", "/v1/apps/{app}/switch", True, ()),
    ("POST", "/v1/apps/{app}/rollback", True, ()),
    ("POST", "/v1/apps/{app}/promote", True, ()),
    ("POST", "/v1/apps/{app}/abort", True, ()),
    ("POST", "/v1/alerts", True, ()),
    ("GET", "/v1/traefik", False, ()),
]


class Daemon:
    """One app on a test server, driven from synchronous hypothesis examples inside one event loop."""

    def __init__(self, make) -> None:
        self.loop = asyncio.new_event_loop()
        self.client: TestClient = self.loop.run_until_complete(self._start(make))
        self.answers = 0

    async def _start(self, make) -> TestClient:
        app, self._stop = await make()
        # A fresh connection per request: a connection the server closed after refusing a request
        # outright must not be reused by the next example, which would then fail at random.
        client = TestClient(TestServer(app), connector=aiohttp.TCPConnector(force_close=True))
        await client.start_server()
        return client

    def send(self, req: Hostile) -> Answer:
        self.answers += 1
        return self.loop.run_until_complete(asyncio.wait_for(send(self.client, req), 30))

    def close(self) -> None:
        self.loop.run_until_complete(self.client.close())
        self.loop.run_until_complete(self._stop())
        self.loop.close()


def _token(tmp_path) -> TokenFile:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    return TokenFile(path)


@pytest.fixture
def autoscaler(tmp_path):
    async def make():
        swarm = MemorySwarm()
        swarm.add("api", image="api:1", replicas=2, labels={
            "swarmshift.autoscale": "true", "swarmshift.autoscale.max": "6", "swarmshift.autoscale.cpu": "60"})
        swarm.add("plain", image="plain:1")
        events = EventLog(50)
        for n in range(5):
            events.record({"service": "api", "from": n, "to": n + 1})
        scaler = Autoscaler(swarm, DockerStatsSource(swarm), events=events)

        async def stop() -> None:
            pass

        return autoscaler_app(scaler, _token(tmp_path)), stop

    daemon = Daemon(make)
    yield daemon
    daemon.close()


@pytest.fixture
def bluegreen(tmp_path):
    async def make():
        swarm = MemorySwarm()
        labels = {APP_LABEL: "web", PORT_LABEL: "8000", RULE_LABEL: "Host(`web.example.com`)"}
        swarm.add("web-blue", image="web:1", replicas=2, labels={**labels, COLOR_LABEL: "blue"})
        swarm.add("web-green", image="web:1", replicas=0, labels={**labels, COLOR_LABEL: "green"})
        swarm.add("shop-1-blue", image="shop:1", labels={APP_LABEL: "shop-1", COLOR_LABEL: "blue"})  # no port: broken
        dynamic = tmp_path / "dynamic"
        dynamic.mkdir()
        cfg = BlueGreenConfig(probe_interval=0.2, verification_window=0.2, healthy_threshold=1,
                              router={"kind": "traefik-file", "traefik": {"dynamic_dir": str(dynamic)}})
        controller = Controller(swarm, build(cfg.router), cfg, prober=MemoryProber(), checks=Checks(None, []))
        await controller.start()
        return bluegreen_app(controller, _token(tmp_path)), controller.stop

    daemon = Daemon(make)
    yield daemon
    daemon.close()


def check(route: tuple[str, str, bool, tuple[str, ...]], req: Hostile, answer: Answer) -> None:
    """What every answer must be, whatever was asked."""
    method, _, authenticated, _ = route
    assert answer.status < 500, (answer.status, answer.body[:500])
    assert not any(mark in answer.body for mark in TRACEBACK_MARKS), answer.body[:500]
    if answer.headers.get("Content-Type", "").startswith("application/json") and req.method != "HEAD":
        json.loads(answer.body)
    if answer.status == 400 and answer.headers.get("Content-Type", "").startswith("text/plain"):
        return  # aiohttp's parser refused the request itself (a control character in a header): no route ran
    if authenticated and req.canonical and not req.right_token:
        expected = 400 if len(req.authorizations) > 1 else 401
        assert answer.status == expected, (answer.status, answer.body[:500])
    if answer.status == 500:
        assert json.loads(answer.body) == {"error": "internal error", "request_id": answer.headers["X-Request-Id"]}


def _fuzz_route(daemon: Daemon, route) -> None:
    method, path, _, query = route

    @fuzz
    @given(req=hostile(method, path, query))
    def example(req: Hostile) -> None:
        check(route, req, daemon.send(req))

    example()
    assert daemon.answers >= 1000


@pytest.mark.parametrize("route", AUTOSCALER_ROUTES, ids=lambda r: f"{r[0]} {r[1]}")
def test_fuzz_autoscaler_endpoint(autoscaler, route):
    _fuzz_route(autoscaler, route)


@pytest.mark.parametrize("route", BLUEGREEN_ROUTES, ids=lambda r: f"{r[0]} {r[1]}")
def test_fuzz_bluegreen_endpoint(bluegreen, route):
    _fuzz_route(bluegreen, route)
