"""An HTTP endpoint on 127.0.0.1 that records the webhooks it receives (Alertmanager's, swarmshift's)."""

from __future__ import annotations

import json
import queue
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    body: dict
    raw: bytes = b""  # the body as sent, for a signature check
    status: int = 200  # what the receiver answered


class WebhookReceiver:
    """An HTTP endpoint on 127.0.0.1 that records each POST it gets, and answers it with the status set for its path.

    `answers[path]` (default 200) is read at each request, so a test turns a gate's answer
    from hold to pass while the controller polls; `calls(path)` lists every delivery kept.
    """

    def __init__(self) -> None:
        self.deliveries: queue.Queue[Delivery] = queue.Queue()
        self.answers: dict[str, int] = {}
        self.kept: list[Delivery] = []
        deliveries, answers, kept, lock = self.deliveries, self.answers, self.kept, threading.Lock()
        self._lock = lock

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, fmt, *args):
                pass

            def do_POST(self):  # noqa: N802 (http.server's naming)
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status = answers.get(self.path, 200)
                delivery = Delivery(self.path, dict(self.headers), json.loads(raw or b"{}"), raw, status)
                with lock:
                    kept.append(delivery)
                deliveries.put(delivery)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="webhook", daemon=True)
        self._thread.start()

    def next(self, timeout: float) -> Delivery:
        try:
            return self.deliveries.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no webhook delivery within {timeout:.0f}s") from None

    def calls(self, path: str) -> list[Delivery]:
        with self._lock:
            return [d for d in self.kept if d.path == path]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
