"""The Traefik routers' own parts: the file router's files and the HTTP router's document.

What Traefik does with them (loading, confirming through its API, refusing) is proven against
the real Traefik in tests/lab/test_traefik_lab.py, never against a stand-in of its API.
"""

from __future__ import annotations

import asyncio
import os

import pytest

from bluegreen.apps import App, Color
from bluegreen.routers import RouterError
from bluegreen.routers.traefik_api import TraefikAPI
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
