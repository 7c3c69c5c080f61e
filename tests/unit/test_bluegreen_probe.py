"""HTTP probes of a color: directly to its tasks, or through the router, against small servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bluegreen.apps import App, Color
from bluegreen.config import ProbeSettings
from bluegreen.phases import ProbeOutcome
from bluegreen.probe import Prober
from bluegreen.state import Routing


class Server:
    """Answers /health with `health` and / with `page`; records each request's path and Host."""

    def __init__(self, health: int = 200, page: int = 200) -> None:
        self.health, self.page = health, page
        self.seen: list[tuple[str, str]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                server.seen.append((self.path, self.headers.get("Host", "")))
                status = server.health if self.path == "/health" else server.page
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def app(port: int, preview: bool = True) -> App:
    return App("web", "web-blue", "web-green", port, "Host(`web.example.com`)",
               preview_rule="Host(`preview.example.com`)" if preview else None)


def resolver(addresses: list[str] | Exception):
    async def resolve(host: str, port: int) -> list[str]:
        if isinstance(addresses, Exception):
            raise addresses
        return addresses
    return resolve


def direct(resolve, **settings) -> Prober:
    return Prober(ProbeSettings(**settings), timeout=1.0, resolver=resolve)


def run(prober: Prober, *args, **kwargs):
    async def go():
        try:
            return await prober.probe(*args, **kwargs)
        finally:
            await prober.close()
    return asyncio.run(go())


def test_direct_probes_every_task_on_the_health_path(server):
    prober = direct(resolver(["127.0.0.1", "127.0.0.1"]))
    probe = run(prober, app(server.port), Color.GREEN, routed=None)
    assert probe.outcome is ProbeOutcome.OK
    assert server.seen == [("/health", "web-green"), ("/health", "web-green")]


def test_a_failing_health_check_fails_the_round(server):
    server.health = 503
    probe = run(direct(resolver(["127.0.0.1"])), app(server.port), Color.GREEN, routed=None)
    assert probe.outcome is ProbeOutcome.FAILED and "GET /health on 127.0.0.1 (Host web-green): HTTP 503" in probe.detail


def test_verify_paths_are_probed_after_the_switch_and_a_5xx_fails_them(server):
    server.page = 500
    settings = {"verify_paths": ["/"], "verify_requests": 2}
    before = run(direct(resolver(["127.0.0.1"]), **settings), app(server.port), Color.GREEN, routed=None)
    after = run(direct(resolver(["127.0.0.1"]), **settings), app(server.port), Color.GREEN, routed=None, verify=True)
    assert before.ok  # the pre-switch checks probe the health path only
    assert after.outcome is ProbeOutcome.FAILED and after.detail.endswith("HTTP 500 (and 1 more)")


def test_names_that_do_not_resolve_are_unreachable_never_healthy(server):
    probe = run(direct(resolver(socket.gaierror(-2, "Name or service not known"))), app(server.port), Color.GREEN,
                routed=None)
    assert probe.outcome is ProbeOutcome.UNREACHABLE
    assert probe.detail == ("cannot resolve tasks.web-green (Name or service not known): the controller is not on "
                            "the app's overlay network; run it there, or set probe.via: router")


def test_no_task_in_dns_or_a_refused_connection_fails_the_round():
    assert run(direct(resolver([])), app(closed_port()), Color.GREEN, routed=None).outcome is ProbeOutcome.FAILED
    refused = run(direct(resolver(["127.0.0.1"])), app(closed_port()), Color.GREEN, routed=None)
    assert refused.outcome is ProbeOutcome.FAILED and "Connect call failed" in refused.detail


def via_router(port: int, **settings) -> Prober:
    return Prober(ProbeSettings(via="router", active_url=f"http://127.0.0.1:{port}", **settings), timeout=1.0)


def test_through_the_router_the_active_color_is_probed_on_the_main_route_and_the_idle_one_on_the_preview(server):
    routed = Routing.all_to(Color.BLUE)
    assert run(via_router(server.port), app(8000), Color.BLUE, routed=routed).ok
    assert run(via_router(server.port), app(8000), Color.GREEN, routed=routed).ok
    assert server.seen == [("/health", "web.example.com"), ("/health", "preview.example.com")]


def test_through_the_router_a_color_no_route_serves_is_unreachable(server):
    without_preview = run(via_router(server.port), app(8000, preview=False), Color.GREEN,
                          routed=Routing.all_to(Color.BLUE))
    nothing = run(via_router(server.port), app(8000), Color.GREEN, routed=None)
    router_down = run(via_router(closed_port()), app(8000), Color.BLUE, routed=Routing.all_to(Color.BLUE))
    assert without_preview.outcome is ProbeOutcome.UNREACHABLE and "a preview rule" in without_preview.detail
    assert nothing.outcome is ProbeOutcome.UNREACHABLE
    assert router_down.outcome is ProbeOutcome.UNREACHABLE and "does not answer" in router_down.detail
    assert server.seen == []


def test_a_preview_url_of_its_own_and_the_app_in_the_url(server):
    other = Server()
    try:
        prober = Prober(ProbeSettings(via="router", active_url=f"http://127.0.0.1:{other.port}/{{app}}",
                                      preview_url=f"http://127.0.0.1:{server.port}"), timeout=1.0)
        assert run(prober, app(8000), Color.GREEN, routed=Routing.all_to(Color.BLUE)).ok
        prober = Prober(prober.settings, timeout=1.0)
        assert run(prober, app(8000), Color.BLUE, routed=Routing.all_to(Color.BLUE)).ok
    finally:
        other.close()
    assert server.seen == [("/health", "preview.example.com")]
    assert other.seen == [("/web/health", "web.example.com")]
