"""The nginx router driving Debian's real nginx, as a process on 127.0.0.1, in front of two tiny color servers.

In the stack, nginx resolves the colors' Swarm service names; here the router's upstream is
pointed at the two servers' 127.0.0.1 ports instead. Everything stays on 127.0.0.1, and the
load is bounded by count and by time.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bluegreen.apps import App, Color
from bluegreen.routers import RouterError
from bluegreen.routers.nginx import NginxRouter, command, signal_pid_file
from bluegreen.state import Routing
from tests.support.load import HostLoad

NGINX = "/usr/sbin/nginx"
# The app answers on 127.0.0.1 (what the load client sends as Host); its preview on another name.
APP = App("web", "web-blue", "web-green", 8000, "Host(`127.0.0.1`)", preview_rule="Host(`preview.test`)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ColorServer:
    """A tiny HTTP server that answers every request with its color."""

    def __init__(self, color: Color) -> None:
        body = f"{color}\n".encode()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("X-App-Version", str(color))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Nginx:
    """Debian's nginx as a process with its own config, pid file and logs in a temp directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.conf = root / "nginx.conf"
        self.conf_dir = root / "conf.d"
        self.pid_file = root / "nginx.pid"
        self.error_log = root / "error.log"
        self.port, self.status_port = free_port(), free_port()
        self.conf_dir.mkdir()
        temp = root / "temp"
        temp.mkdir()
        # Workers may run as an unprivileged user: let them through to their temp directories.
        for path in (root, temp):
            path.chmod(0o755)
        self.conf.write_text(f"""
worker_processes 2;
pid {self.pid_file};
error_log {self.error_log} warn;
events {{ worker_connections 512; }}
http {{
    access_log off;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    # Requests for hosts no app claims get a 404, not the first app.
    server {{ listen 127.0.0.1:{self.port} default_server; return 404; }}
    include {self.conf_dir}/*.conf;
}}
""")
        self.process: subprocess.Popen | None = None

    def argv(self, *extra: str) -> list[str]:
        # -e: nginx opens its compiled-in error log before reading the config; keep it in the temp dir.
        return [NGINX, "-e", str(self.error_log), "-c", str(self.conf), *extra]

    def start(self) -> None:
        self.process = subprocess.Popen(self.argv("-g", "daemon off;"), stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"nginx exited: {self.process.stderr.read().decode(errors='replace')}", pytrace=False)
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                if self.pid_file.exists():
                    return
            except OSError:
                pass
            time.sleep(0.05)
        pytest.fail("nginx did not start listening within 10s", pytrace=False)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGQUIT)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


@pytest.fixture
def colors() -> Iterator[dict[Color, ColorServer]]:
    servers = {color: ColorServer(color) for color in Color}
    yield servers
    for server in servers.values():
        server.close()


@pytest.fixture
def nginx(tmp_path) -> Iterator[Nginx]:
    if not os.access(NGINX, os.X_OK):
        pytest.fail(f"{NGINX} is missing: run `make lab` (it installs Debian's nginx)", pytrace=False)
    proc = Nginx(tmp_path)
    proc.start()
    yield proc
    proc.stop()


def make_router(nginx: Nginx, colors: dict[Color, ColorServer], **options) -> NginxRouter:
    return NginxRouter(
        nginx.conf_dir,
        test=command(nginx.argv("-t", "-q")),
        reload=signal_pid_file(nginx.pid_file),
        listen=f"127.0.0.1:{nginx.port}",
        upstream=lambda app, color: f"127.0.0.1:{colors[color].port}",
        status_listen=f"127.0.0.1:{nginx.status_port}",
        status_url=f"http://127.0.0.1:{nginx.status_port}",
        **options,
    )


def get(port: int, host: str = "127.0.0.1") -> tuple[int, str]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode().strip()


def test_apply_switch_and_a_rejected_config(nginx, colors):
    router = make_router(nginx, colors)

    async def scenario():
        try:
            await router.apply(APP, Routing.all_to(Color.BLUE))
            assert await router.confirm(APP, Routing.all_to(Color.BLUE))
            first = [get(nginx.port) for _ in range(5)], get(nginx.port, "preview.test"), get(nginx.port, "other")

            await router.apply(APP, Routing.all_to(Color.GREEN))
            assert await router.confirm(APP, Routing.all_to(Color.GREEN))
            switched = [get(nginx.port) for _ in range(5)], get(nginx.port, "preview.test")

            live = router.path("web").read_bytes()
            broken = make_router(nginx, colors, server_snippet="this_is_not_a_directive on;")
            with pytest.raises(RouterError) as err:
                await broken.apply(APP, Routing.all_to(Color.BLUE))
            rejected = (str(err.value), router.path("web").read_bytes() == live, await router.written(APP),
                        await router.read(APP), [get(nginx.port) for _ in range(5)])
            await broken.close()
            return first, switched, rejected
        finally:
            await router.close()

    first, switched, rejected = asyncio.run(scenario())
    assert first == ([(200, "blue")] * 5, (200, "green"), (404, first[2][1]))
    assert switched == ([(200, "green")] * 5, (200, "blue"))
    message, live_kept, written, read, after = rejected
    assert "nginx -t refused the new config; the old one stays in effect" in message
    assert 'unknown directive "this_is_not_a_directive"' in message
    assert live_kept and written == read == Routing.all_to(Color.GREEN)
    assert after == [(200, "green")] * 5  # traffic kept flowing to the old color
    assert sorted(p.name for p in nginx.conf_dir.iterdir()) == ["web.conf"]


@pytest.mark.heavy
def test_twenty_switches_under_load_fail_no_request(nginx, colors):
    router = make_router(nginx, colors)

    async def start() -> None:
        await router.apply(APP, Routing.all_to(Color.BLUE))
        assert await router.confirm(APP, Routing.all_to(Color.BLUE))

    asyncio.run(start())
    load = HostLoad(nginx.port, "/", rate=200, max_seconds=40, max_requests=8000, workers=4, timeout=5)
    durations: list[float] = []  # from the start of apply to the confirmation
    applied: list[float] = []  # write, nginx -t and the signal
    confirmed_at = 0.0

    async def switches() -> None:
        nonlocal confirmed_at
        await asyncio.sleep(0.5)
        for i in range(20):
            routing = Routing.all_to(Color.GREEN if i % 2 == 0 else Color.BLUE)
            started = time.monotonic()
            await router.apply(APP, routing)
            applied.append(time.monotonic() - started)
            assert await router.confirm(APP, routing), f"switch {i} to {routing} was not confirmed"
            confirmed_at = time.monotonic()
            durations.append(confirmed_at - started)
            await asyncio.sleep(0.25)

    with load:
        asyncio.run(switches())
        time.sleep(0.5)
    result = load.result
    durations.sort()
    applied.sort()
    print(f"\nnginx switch: apply (write, nginx -t, SIGHUP) median {statistics.median(applied) * 1000:.0f} ms, "
          f"p95 {applied[18] * 1000:.0f} ms; until only the new routing answers for {router.settle * 1000:.0f} ms: "
          f"median {statistics.median(durations) * 1000:.0f} ms, p95 {durations[18] * 1000:.0f} ms, "
          f"max {durations[-1] * 1000:.0f} ms; {sum(result.statuses.values())} responses, {result.failed} failed")
    assert result.failed == 0, f"failed requests: {dict(result.errors)} {dict(result.statuses)}"
    assert set(result.statuses) == {200} and result.statuses[200] > 2000
    assert max(durations) < 1.0  # the target: a switch under a second
    # The last switch went to blue: once it is confirmed, every response comes from blue.
    late = [version for at, _, version in result.bodies if at > confirmed_at]
    assert late and set(late) == {"blue"}
