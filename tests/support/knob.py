"""A gauge the test turns by hand, served to the real Prometheus: a deterministic scaling signal."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Knob:
    """Serves `swarmshift_test_load{service="..."} <value>` on 127.0.0.1 for Prometheus to scrape."""

    def __init__(self) -> None:
        self.values: dict[str, float] = {}
        knob = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                body = "# TYPE swarmshift_test_load gauge\n" + "".join(
                    f'swarmshift_test_load{{service="{s}"}} {v}\n' for s, v in sorted(knob.values.items())
                )
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def set(self, service: str, value: float) -> None:
        self.values[service] = value

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
