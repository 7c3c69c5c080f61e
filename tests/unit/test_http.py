"""The shared HTTP helpers on a real aiohttp server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter

from swarmshift.http import MAX_BODY, TokenFile, authenticated, new_app, parse_listen, read_json, start


@authenticated
async def echo(request: web.Request) -> web.Response:
    return web.json_response({"got": await read_json(request)})


async def crash(request: web.Request) -> web.Response:
    raise RuntimeError("boom")


async def serve(token_path, scenario):
    registry = CollectorRegistry()
    Counter("swarmshift_test_total", "a test counter", registry=registry).inc()
    app = new_app(registry, TokenFile(token_path))
    app.router.add_post("/echo", echo)
    app.router.add_get("/crash", crash)
    runner = await start(app, "127.0.0.1", 0)
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
            return await scenario(http)
    finally:
        await runner.cleanup()


@pytest.fixture
def token(tmp_path):
    path = tmp_path / "token"
    path.write_text("right-token\n")
    return path


def test_token_body_and_errors(token):
    async def scenario(http):
        results = {}
        good = {"Authorization": "Bearer right-token"}
        for name, headers, body in [
            ("none", {}, b"{}"),
            ("wrong", {"Authorization": "Bearer wrong"}, b"{}"),
            ("basic", {"Authorization": "Basic right-token"}, b"{}"),
            ("good", good, b'{"a": 1}'),
            ("malformed", good, b"{nope"),
            ("huge", good, b'"' + b"x" * MAX_BODY + b'"'),
        ]:
            async with http.post("/echo", data=body, headers=headers) as resp:
                results[name] = (resp.status, await resp.json())
        async with http.get("/crash") as resp:
            results["crash"] = (resp.status, await resp.json())
        async with http.get("/metrics") as resp:
            results["metrics"] = (resp.status, await resp.text())
        async with http.get("/healthz") as resp:
            results["healthz"] = (resp.status, await resp.json())
        return results

    r = asyncio.run(serve(token, scenario))
    assert r["none"][0] == r["wrong"][0] == r["basic"][0] == 401
    assert r["good"] == (200, {"got": {"a": 1}})
    assert r["malformed"][0] == 400 and r["malformed"][1]["error"].startswith("malformed JSON")
    assert r["huge"][0] == 413
    assert r["crash"][0] == 500 and r["crash"][1] == {"error": "internal error", "request_id": r["crash"][1]["request_id"]}
    assert r["metrics"][0] == 200 and "swarmshift_test_total 1.0" in r["metrics"][1]
    assert r["healthz"] == (200, {"status": "ok"})


def test_token_rotation_and_a_broken_secret_keeps_the_last_good_token(token):
    checker = TokenFile(token)
    assert checker.matches("Bearer right-token") and not checker.matches("Bearer new")
    token.write_text("new")
    os.utime(token, (1, 1))  # a different mtime, whatever the clock's resolution
    assert checker.matches("Bearer new") and not checker.matches("Bearer right-token")
    token.write_text("")
    os.utime(token, (2, 2))
    assert checker.matches("Bearer new")
    assert not checker.matches(None) and not checker.matches("Bearer ")


@pytest.mark.parametrize(
    ("text", "expected"), [("0.0.0.0:8080", ("0.0.0.0", 8080)), (":9", ("0.0.0.0", 9)), ("[::1]:80", ("::1", 80))]
)
def test_parse_listen(text, expected):
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["8080", "host:", "host:99999", "host:x"])
def test_parse_listen_rejects(text):
    with pytest.raises(ValueError):
        parse_listen(text)
