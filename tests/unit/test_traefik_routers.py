"""The Traefik routers: the file router's files, the HTTP router's document, and read-back from Traefik's API.

There is no Traefik binary in the lab, so Traefik's API is played by an aiohttp server on
127.0.0.1 that answers with the JSON shape Traefik's API documents for weighted services
(`GET /api/http/services/<name>@<provider>`) and routers.
"""

from __future__ import annotations

import asyncio
import os

import pytest
from aiohttp import web

from bluegreen.model import App, Color, Routing
from bluegreen.routers import RouterError
from bluegreen.routers.traefik_file import (
    TraefikAPI,
    TraefikFileRouter,
    go_duration,
    loaded_routing,
    parse_file,
)
from bluegreen.routers.traefik_http import TraefikHTTPRouter

WEB = App("web", "web-blue", "web-green", 8000, "Host(`web.example.com`)",
          preview_rule="Host(`preview.web.example.com`)")
PLAIN = App("plain", "plain-blue", "plain-green", 8000, "Host(`plain.example.com`)")


def traefik_service(app: str, blue: int | None, green: int | None, status: str = "enabled",
                    provider: str = "file") -> dict:
    """Traefik's API answer for a weighted service (runtime.ServiceInfo plus name, provider, type)."""
    children = []
    for color, weight in (("blue", blue), ("green", green)):
        child = {"name": f"{app}-{color}"}
        if weight is not None:
            child["weight"] = weight
        children.append(child)
    return {
        "weighted": {"services": children, "healthCheck": {}},
        "status": status,
        "usedBy": [f"{app}@{provider}"],
        "name": f"{app}@{provider}",
        "provider": provider,
        "type": "weighted",
    }


def traefik_router(name: str, service: str, status: str = "enabled", provider: str = "file") -> dict:
    return {"entryPoints": ["web"], "service": service, "rule": "Host(`preview.web.example.com`)",
            "status": status, "using": ["web"], "name": f"{name}@{provider}", "provider": provider}


@pytest.mark.parametrize(("service", "router", "want"), [
    (traefik_service("web", 100, 0), traefik_router("web-preview", "web-green"), Routing.all_to(Color.BLUE)),
    (traefik_service("web", 0, 100), traefik_router("web-preview", "web-blue"), Routing.all_to(Color.GREEN)),
    (traefik_service("web", 90, 10), traefik_router("web-preview", "web-green@file"), Routing.toward(Color.GREEN, 10)),
    # A child listed without a weight has Traefik's default weight 1: not a routing we wrote.
    (traefik_service("web", 100, None), traefik_router("web-preview", "web-green"), None),
    (traefik_service("web", 100, 0, status="disabled"), traefik_router("web-preview", "web-green"), None),
    (traefik_service("web", 100, 0), traefik_router("web-preview", "web-green", status="disabled"), None),
    (None, None, None),
    ({"loadBalancer": {"servers": []}, "status": "enabled"}, None, None),
], ids=["blue", "green", "progressive-10", "default-weight", "service-disabled", "router-disabled", "absent",
        "not-weighted"])
def test_loaded_routing_reads_traefiks_api_shape(service, router, want):
    assert loaded_routing("web", service, router) == want


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


async def _with_fake_traefik(answers: dict[str, list[dict | None]], scenario):
    """Serve `answers[path]` in turn (the last one repeats) on 127.0.0.1, like Traefik's API."""
    calls: dict[str, int] = {}

    async def handler(request: web.Request) -> web.Response:
        path = request.path
        queue = answers.get(path)
        if not queue:
            return web.json_response({"message": "not found"}, status=404)
        i = calls.get(path, 0)
        calls[path] = i + 1
        body = queue[min(i, len(queue) - 1)]
        return web.json_response(body) if body is not None else web.json_response({}, status=404)

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        return await scenario(f"http://127.0.0.1:{port}"), calls
    finally:
        await runner.cleanup()


def test_the_file_router_confirms_a_switch_only_when_traefik_has_loaded_it(tmp_path):
    answers = {
        "/api/http/services/web@file": [traefik_service("web", 100, 0), traefik_service("web", 100, 0),
                                        traefik_service("web", 0, 100)],
        "/api/http/routers/web-preview@file": [traefik_router("web-preview", "web-blue")],
    }

    async def scenario(url):
        router = TraefikFileRouter(tmp_path, api=TraefikAPI(url), confirm_timeout=5)
        try:
            await router.apply(WEB, Routing.all_to(Color.GREEN))
            return await router.confirm(WEB, Routing.all_to(Color.GREEN)), await router.read(WEB)
        finally:
            await router.close()

    (confirmed, read), calls = asyncio.run(_with_fake_traefik(answers, scenario))
    assert confirmed is True and read == Routing.all_to(Color.GREEN)
    assert calls["/api/http/services/web@file"] >= 3  # it kept asking until the new weights showed


def test_an_unreachable_or_lagging_traefik_is_never_taken_as_confirmation(tmp_path):
    async def lagging(url):
        router = TraefikFileRouter(tmp_path, api=TraefikAPI(url), confirm_timeout=0.3)
        try:
            await router.apply(PLAIN, Routing.all_to(Color.GREEN))
            return await router.confirm(PLAIN, Routing.all_to(Color.GREEN)), await router.read(PLAIN)
        finally:
            await router.close()

    answers = {"/api/http/services/plain@file": [traefik_service("plain", 100, 0)]}
    (confirmed, read), _ = asyncio.run(_with_fake_traefik(answers, lagging))
    # Traefik still has the old weights; with no preview router the preview is what was written.
    assert confirmed is False and read == Routing(blue=100, green=0, preview=Color.BLUE)

    async def unreachable():
        router = TraefikFileRouter(tmp_path, api=TraefikAPI("http://127.0.0.1:9", timeout=0.5), confirm_timeout=0.3)
        try:
            return await router.confirm(PLAIN, Routing.all_to(Color.GREEN)), await router.read(PLAIN)
        finally:
            await router.close()

    assert asyncio.run(unreachable()) == (False, None)


def test_the_http_router_reads_back_through_the_http_provider():
    answers = {
        "/api/http/services/web@http": [traefik_service("web", 0, 100, provider="http")],
        "/api/http/routers/web-preview@http": [traefik_router("web-preview", "web-blue", provider="http")],
    }

    async def scenario(url):
        router = TraefikHTTPRouter(api=TraefikAPI(url, provider="http"), confirm_timeout=2)
        try:
            await router.apply(WEB, Routing.all_to(Color.GREEN))
            revision = router.revision
            await router.apply(WEB, Routing.all_to(Color.GREEN))
            assert router.revision == revision  # unchanged routing: Traefik's next poll sees the same bytes
            return await router.confirm(WEB, Routing.all_to(Color.GREEN))
        finally:
            await router.close()

    confirmed, calls = asyncio.run(_with_fake_traefik(answers, scenario))
    assert confirmed is True and calls["/api/http/services/web@http"] >= 1


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
