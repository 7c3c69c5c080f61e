"""The slow Docker proxy (tests/support/slowdocker.py) in front of a small HTTP server of ours on a unix socket.

The lab tests put it in front of the real engine; here the upstream is an aiohttp app in
tmp_path that answers like no particular API, so only the proxy's own behaviour is checked:
bytes unchanged, the delay and when it applies, keep-alive, stopping.
"""

from __future__ import annotations

import asyncio
import re
import time

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from tests.support.fuzz import fuzz
from tests.support.slowdocker import SlowDocker, request_line


async def upstream(path) -> web.AppRunner:
    async def services(request: web.Request) -> web.Response:
        return web.json_response([{"ID": "abc", "query": request.query_string}])

    async def tasks(request: web.Request) -> web.Response:
        return web.json_response([])

    async def update(request: web.Request) -> web.Response:
        return web.Response(body=b"updated:" + await request.read())

    async def big(request: web.Request) -> web.Response:
        return web.Response(body=bytes(range(256)) * 4096)  # 1 MiB: many chunks, one delay

    app = web.Application()
    app.add_routes([web.get("/v1.45/services", services), web.get("/v1.45/tasks", tasks),
                    web.post("/v1.45/services/{id}/update", update), web.get("/v1.45/big", big)])
    runner = web.AppRunner(app)
    await runner.setup()
    await web.UnixSite(runner, str(path)).start()
    return runner


class Connection:
    """One kept-alive HTTP/1.1 connection: requests one at a time, as Docker's client sends them."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, path) -> Connection:
        return cls(*await asyncio.open_unix_connection(str(path)))

    async def exchange(self, method: str, target: str, body: bytes = b"") -> tuple[float, bytes]:
        started = time.monotonic()
        self.writer.write(f"{method} {target} HTTP/1.1\r\nHost: docker\r\nContent-Length: {len(body)}\r\n\r\n"
                          .encode() + body)
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))
        payload = await self.reader.readexactly(length)
        return time.monotonic() - started, payload

    def close(self) -> None:
        self.writer.close()


def test_bytes_go_through_unchanged(tmp_path):
    async def scenario():
        runner = await upstream(tmp_path / "docker.sock")
        try:
            with SlowDocker(tmp_path / "slow.sock", upstream=tmp_path / "docker.sock") as proxy:
                answers = []
                for path in (tmp_path / "docker.sock", proxy.path):
                    connector = aiohttp.UnixConnector(path=str(path))
                    async with aiohttp.ClientSession(connector=connector) as session:
                        async with session.get("http://docker/v1.45/services?status=1") as resp:
                            listed = await resp.json()
                        async with session.post("http://docker/v1.45/services/abc/update", data=b"spec") as resp:
                            updated = await resp.read()
                        async with session.get("http://docker/v1.45/big") as resp:
                            big = await resp.read()
                    answers.append((listed, updated, big))
                return answers, proxy.seen, proxy.url
        finally:
            await runner.cleanup()

    (direct, proxied), seen, url = asyncio.run(scenario())
    assert proxied == direct and direct[1] == b"updated:spec" and len(direct[2]) == 1 << 20
    assert seen == ["GET /services?status=1", "POST /services/abc/update", "GET /big"]
    assert url == f"unix://{tmp_path / 'slow.sock'}"


def test_the_delay_holds_each_response_back_and_changes_while_running(tmp_path):
    async def scenario():
        runner = await upstream(tmp_path / "docker.sock")
        try:
            with SlowDocker(tmp_path / "slow.sock", upstream=tmp_path / "docker.sock", delay=0.5) as proxy:
                conn = await Connection.open(proxy.path)
                took = [(await conn.exchange("GET", "/v1.45/services"))[0],
                        (await conn.exchange("GET", "/v1.45/big"))[0]]  # one delay for all its chunks
                proxy.delay = 0
                took.append((await conn.exchange("GET", "/v1.45/tasks"))[0])
                proxy.delay = 0.8
                took.append((await conn.exchange("POST", "/v1.45/services/abc/update", b"x"))[0])
                conn.close()
                return took, proxy.delayed
        finally:
            await runner.cleanup()

    (slow, big, fast, slower), delayed = asyncio.run(scenario())
    assert 0.5 <= slow < 1.5 and 0.5 <= big < 2.0 and fast < 0.3 and 0.8 <= slower < 2.0
    assert delayed == 3


def test_only_requests_matching_the_pattern_are_delayed(tmp_path):
    async def scenario():
        runner = await upstream(tmp_path / "docker.sock")
        try:
            with SlowDocker(tmp_path / "slow.sock", upstream=tmp_path / "docker.sock", delay=0.5,
                            only=r"^GET /services") as proxy:
                conn = await Connection.open(proxy.path)
                took = [(await conn.exchange(method, target))[0] for method, target in (
                    ("GET", "/v1.45/services?status=1"), ("GET", "/v1.45/tasks"), ("GET", "/v1.45/services"))]
                proxy.only = re.compile(r"^GET /tasks")
                took.append((await conn.exchange("GET", "/v1.45/tasks"))[0])
                took.append((await conn.exchange("GET", "/v1.45/services"))[0])
                conn.close()
                return took
        finally:
            await runner.cleanup()

    services, tasks, services_again, tasks_now, services_now = asyncio.run(scenario())
    assert services >= 0.5 and services_again >= 0.5 and tasks_now >= 0.5
    assert tasks < 0.3 and services_now < 0.3


def test_stop_closes_the_connections_and_removes_the_socket(tmp_path):
    async def scenario():
        runner = await upstream(tmp_path / "docker.sock")
        try:
            proxy = SlowDocker(tmp_path / "slow.sock", upstream=tmp_path / "docker.sock").start()
            conn = await Connection.open(proxy.path)
            await conn.exchange("GET", "/v1.45/tasks")
            await asyncio.to_thread(proxy.stop)
            assert await conn.reader.read() == b""  # closed by the proxy
            proxy.stop()  # twice: nothing happens
            with pytest.raises(OSError):
                await Connection.open(proxy.path)
            return proxy.path.exists()
        finally:
            await runner.cleanup()

    assert asyncio.run(scenario()) is False


def test_without_an_engine_behind_it_a_connection_is_closed(tmp_path):
    async def scenario():
        with SlowDocker(tmp_path / "slow.sock", upstream=tmp_path / "absent.sock") as proxy:
            reader, writer = await asyncio.open_unix_connection(str(proxy.path))
            try:
                writer.write(b"GET /v1.45/info HTTP/1.1\r\nHost: docker\r\n\r\n")
                await writer.drain()
                data = await asyncio.wait_for(reader.read(), 5)
            except (ConnectionResetError, BrokenPipeError):  # closed before or with the request unread
                data = b""
            writer.close()
            return data

    assert asyncio.run(scenario()) == b""


@pytest.mark.parametrize(("chunk", "line"), [
    (b"GET /v1.45/services?status=1 HTTP/1.1\r\nHost: docker\r\n\r\n", "GET /services?status=1"),
    (b"POST /v1.41/services/x/update?version=3 HTTP/1.1\r\n", "POST /services/x/update?version=3"),
    (b"GET /_ping HTTP/1.1\r\n", "GET /_ping"),
    (b"GET /v1.45 HTTP/1.1\r\n", "GET /"),
    (b"GET /version HTTP/1.0\n", "GET /version"),
    (b'{"Name": "web"}', None),
    (b"", None),
    (b"get /services HTTP/1.1\r\n", None),
])
def test_request_lines(chunk, line):
    assert request_line(chunk) == line


@fuzz
@given(chunk=st.one_of(
    st.binary(),
    st.builds(lambda m, t, rest: m + b" " + t + b" HTTP/1.1\r\n" + rest,
              st.sampled_from([b"GET", b"POST", b"DELETE", b"get", b""]), st.binary(max_size=40), st.binary()),
))
def test_fuzz_request_line_never_raises(chunk):
    line = request_line(chunk)
    if line is not None:
        method, target = line.split(" ", 1)
        assert method.isalpha() and method.isupper() and target and not any(c.isspace() for c in target)
        assert chunk.startswith(method.encode() + b" ")
