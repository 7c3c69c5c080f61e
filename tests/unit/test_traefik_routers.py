"""The Traefik routers' own parts: the file router's files and the HTTP router's document.

What Traefik does with them (loading, confirming through its API, refusing) is proven against
the real Traefik in tests/lab/test_traefik_lab.py, never against a stand-in of its API. Here only
which service a router asks Traefik about, and what it makes of the answer, are checked, with the
answers canned below the HTTP request.
"""

from __future__ import annotations

import asyncio
import os

import pytest

from bluegreen.apps import App, Color
from bluegreen.routers import RouterError
from bluegreen.routers.traefik_api import TraefikAPI, up_from_status
from bluegreen.routers.traefik_doc import go_duration, parse_file
from bluegreen.routers.traefik_file import TraefikFileRouter
from bluegreen.routers.traefik_http import TraefikHTTPRouter
from bluegreen.state import Routing

WEB = App("web", "web-blue", "web-green", 8000, "Host(`web.example.com`)",
          preview_rule="Host(`preview.web.example.com`)")
PLAIN = App("plain", "plain-blue", "plain-green", 8000, "Host(`plain.example.com`)")


def test_a_file_router_writes_one_file_per_app_and_reads_it_back(tmp_path):
    router = TraefikFileRouter(tmp_path)

    async def scenario():
        assert await router.read(WEB) is None
        await router.apply(WEB, Routing.all_to(Color.BLUE))
        await router.apply(PLAIN, Routing.toward(Color.GREEN, 50))
        first = os.stat(router.path("web"))
        await router.apply(WEB, Routing.all_to(Color.BLUE))  # unchanged: not rewritten
        again = os.stat(router.path("web"))
        assert (first.st_ino, first.st_mtime_ns) == (again.st_ino, again.st_mtime_ns)
        assert oct(again.st_mode & 0o777) == "0o644"  # readable by a Traefik running as another user
        results = {
            "web": await router.read(WEB),
            "plain": await router.read(PLAIN),
            "confirmed": await router.confirm(WEB, Routing.all_to(Color.BLUE)),
        }
        router.confirm_timeout = 0.2
        results["unconfirmed"] = await router.confirm(WEB, Routing.all_to(Color.GREEN))
        await router.remove("plain")
        results["removed"] = await router.read(PLAIN)
        return results

    results = asyncio.run(scenario())
    assert results == {
        "web": Routing.all_to(Color.BLUE),
        # Without a preview rule the preview color still reads back as written.
        "plain": Routing.toward(Color.GREEN, 50),
        "confirmed": True,
        "unconfirmed": False,
        "removed": None,
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == ["web.yml"]


def test_a_file_router_refuses_a_directory_it_cannot_write(tmp_path):
    router = TraefikFileRouter(tmp_path / "missing")
    with pytest.raises(RouterError, match="missing"):
        asyncio.run(router.apply(WEB, Routing.all_to(Color.BLUE)))


@pytest.mark.parametrize(("text", "want"), [
    ("not: [yaml", None),
    ("- a list\n", None),
    ("http: {services: {}}\n", None),
    ("# routing: blue=0 green=100 preview=blue\nhttp: {}\n", None),
])
def test_parse_file_answers_none_for_anything_but_our_document(text, want):
    assert parse_file(text, "web") == want


@pytest.mark.parametrize(("seconds", "text"), [(5, "5s"), (0.5, "500ms"), (2.25, "2250ms"), (60, "60s")])
def test_go_durations(seconds, text):
    assert go_duration(seconds) == text


def test_an_unreachable_traefik_is_never_taken_as_confirmation(tmp_path):
    async def unreachable():
        router = TraefikFileRouter(tmp_path, api=TraefikAPI("http://127.0.0.1:9", timeout=0.5), confirm_timeout=0.3)
        try:
            return await router.confirm(PLAIN, Routing.all_to(Color.GREEN)), await router.read(PLAIN)
        finally:
            await router.close()

    assert asyncio.run(unreachable()) == (False, None)


@pytest.mark.parametrize(("answer", "want"), [
    ({"loadBalancer": {}, "status": "enabled", "serverStatus": {"http://web-blue:8000": "UP"}}, True),
    ({"serverStatus": {"http://web-blue:8000": "DOWN"}}, False),
    ({"serverStatus": {"http://web-blue:8000": "DOWN", "http://web-blue-2:8000": "UP"}}, True),
    ({"serverStatus": {"http://web-blue:8000": "up"}}, False),  # Traefik writes UP; anything else is not up
    ({"loadBalancer": {}, "status": "enabled"}, None),  # built by no router: never checked
    ({"serverStatus": {}}, None),
    ({"serverStatus": ["UP"]}, None),
    (None, None),  # 404: not loaded
    (["not", "an", "object"], None),
])
def test_what_traefik_says_of_a_colors_servers(answer, want):
    assert up_from_status(answer) is want


class CannedAPI(TraefikAPI):
    """Traefik's API answering from a table, to see which service the router asks about; no HTTP."""

    def __init__(self, answers: dict, provider: str = "file") -> None:
        super().__init__("http://traefik:8080", provider=provider)
        self.answers = answers
        self.asked: list[tuple[str, float | None]] = []

    async def _get(self, path: str, *, total: float | None = None):
        self.asked.append((path, total))
        answer = self.answers.get(path)
        if isinstance(answer, Exception):
            raise answer
        return answer


@pytest.mark.parametrize(("make", "path"), [
    (lambda api: TraefikFileRouter("/nonexistent", api=api), "/api/http/services/web-blue@file"),
    (lambda api: TraefikHTTPRouter(api=api), "/api/http/services/web-blue@http"),
])
@pytest.mark.parametrize(("answer", "want"), [
    ({"serverStatus": {"http://web-blue:8000": "UP"}}, True),
    ({"serverStatus": {"http://web-blue:8000": "DOWN"}}, False),
    (None, None),
    (RouterError("Traefik API: HTTP 500"), None),  # never raised: unknown
])
def test_a_traefik_router_asks_for_the_colors_service_and_never_raises(make, path, answer, want):
    provider = path.rsplit("@", 1)[1]
    api = CannedAPI({path: answer}, provider=provider)
    assert asyncio.run(make(api).servers_up(WEB, Color.BLUE)) is want
    assert api.asked == [(path, api.up_timeout)]  # one question, with the short timeout


def test_a_traefik_router_without_an_api_or_reaching_none_cannot_tell(tmp_path):
    async def scenario():
        unreachable = TraefikFileRouter(tmp_path, api=TraefikAPI("http://127.0.0.1:9", timeout=0.5))
        try:
            return await TraefikHTTPRouter().servers_up(WEB, Color.BLUE), await unreachable.servers_up(WEB, Color.GREEN)
        finally:
            await unreachable.close()

    assert asyncio.run(scenario()) == (None, None)


def test_the_http_router_serves_the_same_bytes_for_an_unchanged_routing():
    router = TraefikHTTPRouter()

    async def scenario():
        await router.apply(WEB, Routing.all_to(Color.GREEN))
        revision = router.revision
        await router.apply(WEB, Routing.all_to(Color.GREEN))
        return revision, router.revision

    before, after = asyncio.run(scenario())
    assert before == after  # Traefik's next poll sees the same document


def test_the_http_router_forgets_a_removed_app():
    router = TraefikHTTPRouter()

    async def scenario():
        await router.apply(WEB, Routing.all_to(Color.BLUE))
        await router.apply(PLAIN, Routing.all_to(Color.BLUE))
        await router.remove("plain")
        router.mark_ready()
        return router.document(), await router.read(PLAIN)

    doc, read = asyncio.run(scenario())
    assert "plain" not in doc["http"]["routers"] and read is None
