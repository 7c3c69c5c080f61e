"""The demo app: a tiny HTTP service whose CPU, memory, health and error rate can be steered."""

import contextlib
import json
import os
import random
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

VERSION = os.environ.get("APP_VERSION", "v1")
COLOR = os.environ.get("COLOR", "")
FAIL_HEALTH = os.environ.get("FAIL_HEALTH", "0") == "1"
# /health fails while this file exists: lets a test turn a task's health off and on at once.
FAIL_HEALTH_FILE = os.environ.get("FAIL_HEALTH_FILE", "")
ERROR_RATE = float(os.environ.get("ERROR_RATE", "0") or 0)
SLOW_MS = int(os.environ.get("SLOW_MS", "0") or 0)
HEALTH_SLOW_MS = int(os.environ.get("HEALTH_SLOW_MS", "0") or 0)  # a /health slower than a router's check allows
HEALTH_SLOW_AFTER = float(os.environ.get("HEALTH_SLOW_AFTER", "0") or 0)  # ... from this many seconds after start
STARTED = time.monotonic()
PORT = int(os.environ.get("PORT", "8000"))
HOSTNAME = os.environ.get("HOSTNAME", "")

# Memory handed out by /alloc stays referenced here until /free.
_held: list[bytearray] = []
_lock = threading.Lock()

MAX_BURN_MS = 10_000
MAX_SLEEP_MS = 10_000
STOPPING = threading.Event()  # set on SIGTERM: answer what is in flight, take nothing new
_connections: set = set()  # open client connections, so a stop can end the idle keep-alive ones
MAX_ALLOC_MB = 1024


def _int_arg(query: dict, name: str, default: int, upper: int) -> int:
    try:
        value = int(query.get(name, [default])[0])
    except ValueError:
        value = default
    return max(0, min(value, upper))


def burn(ms: int) -> int:
    """Spin the CPU for ms milliseconds of wall time; returns the loop count."""
    deadline = time.perf_counter() + ms / 1000
    n = 0
    while time.perf_counter() < deadline:
        n += 1
    return n


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        with _lock:
            _connections.add(self.connection)

    def finish(self) -> None:
        with _lock:
            _connections.discard(self.connection)
        super().finish()
    server_version = "swarmshift-demo"

    def log_message(self, fmt, *args):  # access logs would drown the load tests
        pass

    def _send(self, status: int, body: dict) -> None:
        data = (json.dumps(body) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-App-Version", VERSION)
        self.send_header("X-App-Color", COLOR)
        if STOPPING.is_set():
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802 (http.server's naming)
        url = urlparse(self.path)
        query = parse_qs(url.query)
        identity = {"version": VERSION, "color": COLOR, "host": HOSTNAME}
        if url.path == "/health":
            if HEALTH_SLOW_MS and time.monotonic() - STARTED >= HEALTH_SLOW_AFTER:
                time.sleep(HEALTH_SLOW_MS / 1000)
            if FAIL_HEALTH or (FAIL_HEALTH_FILE and os.path.exists(FAIL_HEALTH_FILE)):
                self._send(503, {"status": "failing", **identity})
            else:
                self._send(200, {"status": "ok", **identity})
            return
        if url.path == "/version":
            self._send(200, identity)
            return
        if url.path == "/burn":
            ms = _int_arg(query, "ms", 100, MAX_BURN_MS)
            self._send(200, {"burned_ms": ms, "loops": burn(ms), **identity})
            return
        if url.path == "/alloc":
            mb = _int_arg(query, "mb", 10, MAX_ALLOC_MB)
            block = bytearray(mb * 1024 * 1024)
            # Touch every page so the memory is really resident, not just reserved.
            for i in range(0, len(block), 4096):
                block[i] = 1
            with _lock:
                _held.append(block)
                total = sum(len(b) for b in _held) // (1024 * 1024)
            self._send(200, {"allocated_mb": mb, "held_mb": total, **identity})
            return
        if url.path == "/free":
            with _lock:
                _held.clear()
            self._send(200, {"held_mb": 0, **identity})
            return
        if url.path == "/":
            # ?ms=N: a slow request (at most MAX_SLEEP_MS), as long-running ones in flight at a retirement.
            slow = _int_arg(query, "ms", SLOW_MS, MAX_SLEEP_MS)
            if slow:
                time.sleep(slow / 1000)
            if ERROR_RATE and random.random() < ERROR_RATE:
                self._send(500, {"error": "injected failure", **identity})
            else:
                self._send(200, {"hello": "swarmshift", **identity})
            return
        self._send(404, {"error": "not found", "path": url.path})


def main() -> None:
    server = ThreadingHTTPServer(("0.0.0.0", PORT), Handler)
    # Swarm stops a task with SIGTERM, then SIGKILL after its stop_grace_period (10s by default).
    # A graceful stop: accept nothing new, answer every request already in flight (with
    # `Connection: close`), then exit; server_close() waits for the request threads. Shutting
    # the read side of every connection ends the idle keep-alive ones at once, and leaves a
    # request that was read free to send its answer.
    server.daemon_threads = False
    server.block_on_close = True

    def stop(*_) -> None:
        STOPPING.set()
        threading.Thread(target=server.shutdown, daemon=True).start()
        with _lock:
            for conn in list(_connections):
                with contextlib.suppress(OSError):  # already closed by the client
                    conn.shutdown(socket.SHUT_RD)

    signal.signal(signal.SIGTERM, stop)
    print(f"demo app {VERSION} color={COLOR or '-'} listening on :{PORT}", flush=True)
    server.serve_forever()
    server.server_close()
    print(f"demo app {VERSION} stopped: every request in flight was answered", flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
