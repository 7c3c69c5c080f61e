"""Bounded load for the lab (`make demo` and the tests): every loop stops by count and by time, and
targets only the lab.

`HostLoad` sends requests from the host to 127.0.0.1 (host-mode published ports). `OverlayLoad`
runs the same kind of loop in a container on a test overlay network, for traffic that must reach
every task of a service through Swarm DNS (the host cannot reach overlay addresses).
"""

from __future__ import annotations

import http.client
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from lab.common import DEMO_IMAGE


@dataclass
class LoadResult:
    sent: int = 0
    statuses: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    bodies: list[tuple[float, int, str]] = field(default_factory=list)  # (time, status, X-App-Version)
    colors: Counter = field(default_factory=Counter)  # X-App-Color of the 2xx answers
    slowest: float = 0.0  # seconds, the longest request that got an answer

    @property
    def failed(self) -> int:
        return sum(self.errors.values()) + sum(n for s, n in self.statuses.items() if s >= 500)


class HostLoad:
    """Open-loop load at `rate` requests/s from a few threads to 127.0.0.1:`port`."""

    def __init__(self, port: int, path: str, *, rate: float, max_seconds: float, max_requests: int,
                 workers: int = 4, timeout: float = 5.0, host: str | None = None, address: str = "127.0.0.1") -> None:
        # `address`: 127.0.0.1, or an address of one of the lab's own network namespaces (a cluster node).
        self.address, self.port, self.path, self.rate = address, port, path, rate
        self.headers = {"Host": host} if host else {}
        self.max_seconds, self.max_requests = max_seconds, max_requests
        self.workers, self.timeout = workers, timeout
        self.result = LoadResult()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._next = 0.0

    def _slot(self) -> float | None:
        """The time the next request may start, or None when the budget is spent."""
        with self._lock:
            if self.result.sent >= self.max_requests or time.monotonic() > self._deadline:
                return None
            self.result.sent += 1
            at = max(self._next, time.monotonic())
            self._next = at + 1.0 / self.rate
            return at

    def _worker(self) -> None:
        conn = http.client.HTTPConnection(self.address, self.port, timeout=self.timeout)
        while not self._stop.is_set():
            at = self._slot()
            if at is None:
                break
            delay = at - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                break
            try:
                started = time.monotonic()
                conn.request("GET", self.path, headers=self.headers)
                resp = conn.getresponse()
                resp.read()
                with self._lock:
                    self.result.slowest = max(self.result.slowest, time.monotonic() - started)
                    self.result.statuses[resp.status] += 1
                    if 200 <= resp.status < 300:
                        self.result.colors[resp.getheader("X-App-Color", "")] += 1
                    self.result.bodies.append((time.monotonic(), resp.status, resp.getheader("X-App-Version", "")))
            except (OSError, http.client.HTTPException) as err:
                with self._lock:
                    self.result.errors[type(err).__name__] += 1
                conn.close()
                conn = http.client.HTTPConnection(self.address, self.port, timeout=self.timeout)
        conn.close()

    def start(self) -> HostLoad:
        self._deadline = time.monotonic() + self.max_seconds
        self._threads = [threading.Thread(target=self._worker, daemon=True) for _ in range(self.workers)]
        for t in self._threads:
            t.start()
        return self

    def wait(self) -> LoadResult:
        """Wait until the budget is spent (or the time is up), then stop."""
        deadline = time.monotonic() + self.max_seconds + self.timeout + 1
        while time.monotonic() < deadline and any(t.is_alive() for t in self._threads):
            time.sleep(0.02)
        return self.stop()

    def stop(self) -> LoadResult:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=self.timeout + 1)
        return self.result

    def __enter__(self) -> HostLoad:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# Runs inside the load container: round-robins over the service's tasks by Swarm DNS
# (`tasks.<service>`), paced at RATE requests/s, stopping after MAX_REQUESTS or MAX_SECONDS.
_OVERLAY_SCRIPT = r"""
import socket, sys, threading, time, urllib.request
service, path, rate, max_s, max_n, workers = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
deadline = time.monotonic() + max_s
lock = threading.Lock()
state = {"sent": 0, "next": time.monotonic(), "ok": 0, "err": 0, "i": 0}
def addrs():
    try:
        return sorted({a[4][0] for a in socket.getaddrinfo("tasks." + service, 8000, proto=socket.IPPROTO_TCP)})
    except OSError:
        return []
cache = {"at": 0.0, "addrs": []}
def pick():
    with lock:
        if time.monotonic() - cache["at"] > 1:
            cache["addrs"], cache["at"] = addrs(), time.monotonic()
        if not cache["addrs"]:
            return None
        state["i"] += 1
        return cache["addrs"][state["i"] % len(cache["addrs"])]
def worker():
    while True:
        with lock:
            if state["sent"] >= max_n or time.monotonic() > deadline:
                return
            state["sent"] += 1
            at = max(state["next"], time.monotonic())
            state["next"] = at + 1.0 / rate
        time.sleep(max(0.0, at - time.monotonic()))
        ip = pick()
        try:
            urllib.request.urlopen("http://%s:8000%s" % (ip, path), timeout=10).read()
            ok = True
        except Exception:
            ok = False
        with lock:
            state["ok" if ok else "err"] += 1
threads = [threading.Thread(target=worker) for _ in range(workers)]
[t.start() for t in threads]
[t.join() for t in threads]
print("sent=%d ok=%d err=%d" % (state["sent"], state["ok"], state["err"]), flush=True)
"""


class OverlayLoad:
    """Paced load from a container on `network` to every task of `service`; bounded by count and time."""

    def __init__(self, client, network: str, service: str, path: str, *, rate: float, max_seconds: float,
                 max_requests: int, workers: int = 8, labels: dict[str, str] | None = None) -> None:
        self.client = client
        # The load container's labels, by which its owner's cleanup finds it (the tests' wrapper,
        # tests/support/load.py, passes the suite's label by default).
        self.labels = dict(labels or {})
        self.args = [service, path, str(rate), str(max_seconds), str(max_requests), str(workers)]
        self.network = network
        self.container = None

    def start(self) -> OverlayLoad:
        self.container = self.client.containers.run(
            DEMO_IMAGE, ["python3", "-c", _OVERLAY_SCRIPT, *self.args], network=self.network,
            labels=self.labels, detach=True, user="65534",
        )
        return self

    def stop(self) -> str:
        if self.container is None:
            return ""
        try:
            self.container.stop(timeout=1)
            return self.container.logs().decode(errors="replace")
        finally:
            self.container.remove(force=True)
            self.container = None

    def __enter__(self) -> OverlayLoad:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
