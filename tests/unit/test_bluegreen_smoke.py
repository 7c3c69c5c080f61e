"""Smoke requests: the config's list (strict and bounded), the verdict on each answer, and the prober sending them.

The verdicts are a pure table (bluegreen/smoke.py); the prober's requests go to small servers on
127.0.0.1, directly to a color's tasks or through the router's preview route, as the controller
sends them before the switch.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from bluegreen.apps import App, Color
from bluegreen.config import BlueGreenConfig, ProbeSettings
from bluegreen.probe import Prober
from bluegreen.smoke import (
    EXCERPT,
    MAX_REQUESTS,
    Answer,
    SmokeOutcome,
    SmokeRequest,
    evaluate,
    excerpt,
    judge,
    parse_status,
)
from bluegreen.state import Routing
from swarmshift.config import ConfigError, load
from tests.support.fuzz import fuzz

# --- the expected status ----------------------------------------------------------------------


@pytest.mark.parametrize(("text", "statuses"), [
    ("200", (200, 200)), ("200-299", (200, 299)), ("2xx", (200, 299)), ("5xx", (500, 599)), (" 204 ", (204, 204)),
    ("301-308", (301, 308)),
])
def test_a_status_is_one_code_a_range_or_a_class(text, statuses):
    assert parse_status(text) == statuses


@pytest.mark.parametrize("text", ["", "2XX", "20", "600", "299-200", "200-", "２００", "2 00", "200,201", "0xx", "6xx"])
def test_anything_else_is_no_status(text):
    with pytest.raises(ValueError):
        parse_status(text)


# --- the requests, as the config declares them ------------------------------------------------


def test_a_request_has_defaults_and_takes_a_number_for_its_status():
    r = SmokeRequest(path="/checkout?item=1", status=201, method="post", max_latency="300ms")
    assert (r.method, r.status, r.statuses, r.max_latency, r.timeout) == ("POST", "201", (201, 201), 0.3, 5.0)
    assert SmokeRequest(path="/").statuses == (200, 299)
    assert r.expects() == "status 201, within 0.3s"


@pytest.mark.parametrize(("fields", "message"), [
    ({"path": "health"}, "expected an absolute path"),
    ({"path": "/a b"}, "expected an absolute path"),
    ({"path": "/" + "a" * 512}, "at most 512 characters"),
    ({"path": "/{{x}}"}, "expected an absolute path"),
    ({"path": "/é"}, "expected an absolute path"),
    ({"path": "/", "method": "TRACE"}, "expected one of GET"),
    ({"path": "/", "status": "ok"}, "expected a status"),
    ({"path": "/", "status": True}, "expected a status"),
    ({"path": "/", "body": ""}, "at least 1 character"),
    ({"path": "/", "body": "x" * 201}, "at most 200 characters"),
    ({"path": "/", "timeout": "31s"}, "at most 30s"),
    ({"path": "/", "timeout": 0}, "more than 0"),
    ({"path": "/", "max_latency": "5s"}, "less than timeout"),
    ({"path": "/", "method": "HEAD", "body": "ok"}, "no body"),
    ({"path": "/", "headers": {"X": "1"}}, "Extra inputs are not permitted"),
])
def test_a_bad_request_is_refused_naming_why(fields, message):
    with pytest.raises(ValueError, match=message):
        SmokeRequest(**fields)


def load_yaml(tmp_path, text: str) -> BlueGreenConfig:
    path = tmp_path / "bluegreen.yml"
    path.write_text(text)
    return load(BlueGreenConfig, path, {})


def test_the_config_declares_smoke_requests_and_gates_per_app_key_or_for_every_app(tmp_path):
    config = load_yaml(tmp_path, """
smoke:
  - {path: /, status: 2xx, body: Welcome}
  - {path: /api/cart, method: POST, status: 201, max_latency: 500ms}
auto_promotion: false
apps:
  shop_web: {auto_promotion_after: 30m}
  blog_web: {smoke: [], auto_promotion: true}
  legacy: {smoke: [{path: /ping}]}
""")
    shop, blog, legacy, other = (config.settings(key) for key in ("shop_web", "blog_web", "legacy", "other"))
    assert (shop.smoke_tests, shop.auto_promotion, shop.auto_promotion_after) == (2, False, 1800)
    assert (blog.smoke_tests, blog.auto_promotion, blog.auto_promotion_after) == (0, True, None)
    assert (legacy.smoke_tests, legacy.auto_promotion) == (1, False)
    assert (other.smoke_tests, other.auto_promotion, other.auto_promotion_after) == (2, False, None)
    assert [r.describe() for r in config.gates("legacy")[0]] == ["GET /ping"]
    # Without any of it, nothing changes: no smoke phase, no pause.
    plain = BlueGreenConfig().settings("web")
    assert (plain.smoke_tests, plain.auto_promotion, plain.auto_promotion_after) == (0, True, None)


@pytest.mark.parametrize(("text", "line"), [
    ("smoke: [{path: nope}]", "config: smoke[0].path: Value error, expected an absolute path"),
    ("smoke: [{path: /, status: 700}]", "config: smoke[0].status: Value error, expected a status"),
    ("smoke: [{path: /, verb: GET}]", "config: smoke[0].verb: unknown key"),
    ("auto_promotion_after: 10m", "config: auto_promotion_after: needs auto_promotion: false"),
    ("apps: {web: {auto_promotion_after: 10m}}", "config: apps: web: auto_promotion_after needs auto_promotion: false"),
    ("apps: {Web_Shop: {auto_promotion: false}}", "config: apps.Web_Shop: expected an app key"),
    ("apps: {web: {smoke: {path: /}}}", "config: apps.web.smoke: Input should be a valid list"),
])
def test_bad_gates_stop_the_start_one_line_each(tmp_path, text, line):
    with pytest.raises(ConfigError) as err:
        load_yaml(tmp_path, text + "\n")
    assert len(err.value.problems) == 1
    assert err.value.problems[0].split(": ", 1)[1].replace("Value error, ", "").startswith(
        line.split(": ", 1)[1].replace("Value error, ", "")), err.value.problems


def test_the_list_is_bounded(tmp_path):
    many = "\n".join(f"  - {{path: /p{i}}}" for i in range(MAX_REQUESTS + 1))
    with pytest.raises(ConfigError) as err:
        load_yaml(tmp_path, f"smoke:\n{many}\n")
    assert len(err.value.problems) == 1
    assert "smoke: List should have at most 20 items" in err.value.problems[0]


# --- verdicts -----------------------------------------------------------------------------------

CART = SmokeRequest(path="/cart", status="200-299", body="Your cart", max_latency=0.5)
VERDICTS = [
    # name: (answer, problems)
    ("all met", Answer(0.1, 200, "<h1>Your cart</h1>"), ()),
    ("wrong status", Answer(0.1, 500, "Your cart"), ("expected status 200-299",)),
    ("a redirect is not followed", Answer(0.1, 302, ""), ("expected status 200-299",
                                                          "the body does not contain 'Your cart'")),
    ("body missing", Answer(0.1, 200, "Your basket"), ("the body does not contain 'Your cart'",)),
    ("too slow", Answer(0.7, 200, "Your cart"), ("slower than max_latency 0.5s",)),
    ("no answer", Answer(5.0, error="no answer within 5s"), ("expected status 200-299, a body containing "
                                                             "'Your cart', within 0.5s",)),
]


@pytest.mark.parametrize(("name", "answer", "problems"), VERDICTS, ids=[v[0] for v in VERDICTS])
def test_the_verdict_names_every_expectation_an_answer_misses(name, answer, problems):
    verdict = evaluate(CART, "preview route (Host web.preview)", answer)
    assert verdict.problems == problems
    assert verdict.ok is not problems


def test_a_failing_line_names_the_request_the_answer_the_latency_and_a_bounded_body():
    body = "<html>\n<h1>Internal\tError</h1>\x00" + "x" * 5000
    line = evaluate(CART, "preview route (Host web.preview)", Answer(0.0123, 503, body)).line()
    assert line.startswith("GET /cart on preview route (Host web.preview): HTTP 503 in 12 ms "
                           "(expected status 200-299; the body does not contain 'Your cart'); body: '<html> <h1>Internal "
                           "Error</h1> xxx")
    assert len(excerpt(body)) == EXCERPT and excerpt(body).endswith("…")
    assert len(line) < 400  # the deploy's reason label keeps 400 characters
    assert "\n" not in line and "\x00" not in line
    assert evaluate(CART, "10.0.0.5", Answer(2.0, error="Connection refused")).line() == (
        "GET /cart on 10.0.0.5: Connection refused in 2000 ms (expected status 200-299, a body containing "
        "'Your cart', within 0.5s)")


def test_a_round_fails_at_the_first_wrong_answer_and_an_unreachable_one_is_no_verdict():
    ok = evaluate(CART, "t", Answer(0.1, 200, "Your cart"))
    bad = evaluate(CART, "t", Answer(0.1, 500, ""))
    lost = evaluate(CART, "t", Answer(0.1, error="the router at http://traefik does not answer", unreachable=True))
    assert judge([ok, ok]).outcome is SmokeOutcome.PASSED
    assert judge([ok, ok]).summary() == "2 smoke request(s) answered as expected"
    failed = judge([ok, bad])
    assert failed.outcome is SmokeOutcome.FAILED and failed.failing is bad and failed.summary() == bad.line()
    assert judge([lost]).outcome is SmokeOutcome.UNREACHABLE


# --- the prober sends them --------------------------------------------------------------------


class Server:
    """Answers each path as `pages` says (status, body); records method, path and Host."""

    def __init__(self, pages: dict[str, tuple[int, str]]) -> None:
        self.pages = pages
        self.seen: list[tuple[str, str, str]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                server.seen.append((self.command, self.path, self.headers.get("Host", "")))
                status, body = server.pages.get(self.path, (404, "not found"))
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_POST = do_HEAD = _answer  # noqa: N815 - http.server's names

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server({"/": (200, "<h1>Welcome</h1>"), "/api/cart": (201, "{}"), "/broken": (500, "Traceback: boom")})
    yield s
    s.close()


def app(port: int) -> App:
    return App("web", "web-blue", "web-green", port, "Host(`web.example.com`)",
               preview_rule="Host(`preview.example.com`)")


def smoke(prober: Prober, target: App, requests: list[SmokeRequest], routed: Routing | None):
    async def go():
        try:
            return await prober.smoke(target, Color.GREEN, requests, routed=routed)
        finally:
            await prober.close()
    return asyncio.run(go())


REQUESTS = [SmokeRequest(path="/", body="Welcome"), SmokeRequest(path="/api/cart", method="POST", status=201)]


def test_through_the_router_the_requests_go_to_the_preview_route_in_order(server):
    prober = Prober(ProbeSettings(via="router", active_url=f"http://127.0.0.1:{server.port}"), timeout=1.0)
    result = smoke(prober, app(8000), REQUESTS, Routing.all_to(Color.BLUE))
    assert result.outcome is SmokeOutcome.PASSED, result.summary()
    assert server.seen == [("GET", "/", "preview.example.com"), ("POST", "/api/cart", "preview.example.com")]


def test_with_direct_probes_and_a_router_url_the_requests_still_take_the_preview_route(server):
    async def no_dns(host: str, port: int) -> list[str]:
        raise AssertionError("smoke requests must not go to the tasks when the preview route is known")

    prober = Prober(ProbeSettings(preview_url=f"http://127.0.0.1:{server.port}"), timeout=1.0, resolver=no_dns)
    result = smoke(prober, app(8000), REQUESTS, Routing.all_to(Color.BLUE))
    assert result.outcome is SmokeOutcome.PASSED, result.summary()
    assert server.seen == [("GET", "/", "preview.example.com"), ("POST", "/api/cart", "preview.example.com")]
    # An app without a preview rule has no such route: its smoke requests go to every task.
    bare = App("web", "web-blue", "web-green", 8000, "Host(`web.example.com`)")
    assert not prober.smoke_via_router(bare) and prober.smoke_via_router(app(8000))


def test_directly_every_task_gets_every_request_and_the_first_failure_ends_the_round(server):
    async def two_tasks(host: str, port: int) -> list[str]:
        return ["127.0.0.1", "127.0.0.1"]

    prober = Prober(ProbeSettings(), timeout=1.0, resolver=two_tasks)
    result = smoke(prober, app(server.port), [REQUESTS[0], SmokeRequest(path="/broken"), REQUESTS[1]], None)
    assert result.outcome is SmokeOutcome.FAILED
    assert result.failing.line() == ("GET /broken on 127.0.0.1 (Host web-green): HTTP 500 in "
                                     f"{result.failing.answer.latency * 1000:.0f} ms (expected status 200-299); "
                                     "body: 'Traceback: boom'")
    # Each request goes to both tasks at once; nothing is sent after the first failure.
    assert [path for _, path, _ in server.seen] == ["/", "/", "/broken", "/broken"]


def test_no_path_to_the_idle_color_is_unreachable_not_failed(server):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    router_down = Prober(ProbeSettings(via="router", active_url=f"http://127.0.0.1:{closed}"), timeout=1.0)
    down = smoke(router_down, app(8000), REQUESTS, Routing.all_to(Color.BLUE))
    no_preview = smoke(Prober(ProbeSettings(via="router", active_url=f"http://127.0.0.1:{server.port}"), timeout=1.0),
                       App("web", "web-blue", "web-green", 8000, "Host(`web.example.com`)"), REQUESTS,
                       Routing.all_to(Color.BLUE))
    assert down.outcome is SmokeOutcome.UNREACHABLE and "does not answer" in down.summary()
    assert no_preview.outcome is SmokeOutcome.UNREACHABLE and "a preview rule" in no_preview.summary()
    assert server.seen == []


def test_a_request_slower_than_its_timeout_fails(server):
    slow = Server({})
    slow.httpd.RequestHandlerClass.do_GET = lambda handler: __import__("time").sleep(1.5)
    try:
        prober = Prober(ProbeSettings(via="router", active_url=f"http://127.0.0.1:{slow.port}"), timeout=1.0)
        result = smoke(prober, app(8000), [SmokeRequest(path="/", timeout=0.5)], Routing.all_to(Color.BLUE))
    finally:
        slow.close()
    assert result.outcome is SmokeOutcome.FAILED and "no answer within 0.5s" in result.summary()


def test_a_whole_round_is_bounded_whatever_the_number_of_requests(monkeypatch):
    monkeypatch.setattr("bluegreen.probe.ROUND_LIMIT", 0.5)
    slow = Server({})
    slow.httpd.RequestHandlerClass.do_GET = lambda handler: (__import__("time").sleep(0.3),
                                                             handler.send_response(200), handler.end_headers())
    try:
        prober = Prober(ProbeSettings(via="router", active_url=f"http://127.0.0.1:{slow.port}"), timeout=1.0)
        result = smoke(prober, app(8000), [SmokeRequest(path=f"/{i}") for i in range(5)], Routing.all_to(Color.BLUE))
    finally:
        slow.close()
    assert result.outcome is SmokeOutcome.FAILED
    assert result.summary().startswith("the smoke requests did not finish within 0.5s (1 answered in")


# --- fuzzing the parsers and the verdict --------------------------------------------------------

ANY_TEXT = st.text(max_size=80) | st.sampled_from(["/", "/a?b=1", "2xx", "200-299", "GET", "500ms", "5s"])


@fuzz
@given(fields=st.dictionaries(st.sampled_from(["path", "method", "status", "body", "max_latency", "timeout"]),
                              ANY_TEXT | st.integers(-10, 1000) | st.floats(allow_nan=True) | st.booleans()),
       status=st.integers(0, 999) | st.none(), body=st.text(max_size=300), latency=st.floats(0, 100))
def test_fuzz_a_smoke_request_parses_strictly_and_its_verdict_line_stays_bounded(fields, status, body, latency):
    try:
        request = SmokeRequest(path="/", **fields) if "path" not in fields else SmokeRequest(**fields)
    except (ValidationError, ValueError):
        return
    low, high = request.statuses
    assert 100 <= low <= high <= 599
    assert request.path.isascii() and request.path.startswith("/") and len(request.path) <= 512
    verdict = evaluate(request, "preview route", Answer(latency, status, body, None if status else "refused"))
    line = verdict.line()
    assert line.isprintable() and len(excerpt(body)) <= EXCERPT
    assert verdict.ok is (not verdict.problems)


def test_the_body_substring_is_looked_for_in_the_first_64_kib_however_the_answer_is_chunked():
    import time as clock

    def trickle(handler) -> None:
        """The body in 4 KiB pieces, a moment apart, as a slow page arrives."""
        body = ("a" * 60_000 + "Welcome" + "b" * 10_000) if handler.path == "/" else ("c" * 70_000 + "Welcome")
        data = body.encode()
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        for at in range(0, len(data), 4096):
            handler.wfile.write(data[at:at + 4096])
            handler.wfile.flush()
            clock.sleep(0.002)

    late = Server({})
    late.httpd.RequestHandlerClass.do_GET = trickle
    try:
        prober = Prober(ProbeSettings(via="router", active_url=f"http://127.0.0.1:{late.port}"), timeout=2.0)
        found = smoke(prober, app(8000), [SmokeRequest(path="/", body="Welcome")], Routing.all_to(Color.BLUE))
        prober = Prober(prober.settings, timeout=2.0)
        beyond = smoke(prober, app(8000), [SmokeRequest(path="/never", body="Welcome")], Routing.all_to(Color.BLUE))
    finally:
        late.close()
    assert found.outcome is SmokeOutcome.PASSED, found.summary()
    assert beyond.outcome is SmokeOutcome.FAILED and "the body does not contain 'Welcome'" in beyond.summary()
