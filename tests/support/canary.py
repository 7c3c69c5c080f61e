"""One bad release deployed under load through Traefik, with a canary or straight to a full switch: what users lost.

Shared by the lab test of the canary and by bench/blast_radius.py, so the figure the docs quote
is the one the test checks. The controller runs on the host (Traefik's file provider) and reads
Traefik's metrics through a real Prometheus that scrapes Traefik's API port on 127.0.0.1.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from tests.support import lab
from tests.support.swarmshift_proc import BlueGreenDaemon
from tests.support.traefik import TraefikStack

# The canary the lab and the benchmark use: 5 % for at most 30 s, judged every second.
CANARY = {"weight": 5, "analysis": "30s", "interval": "1s", "min_requests": 10, "max_error_rate": 0.05,
          "grace": "10s"}


@dataclass
class Outcome:
    daemon: BlueGreenDaemon
    failed: int  # the responses users got with a 5xx
    sent: int
    seconds: float  # of load
    took: float  # from the deploy request to RolledBack
    errors: dict  # connection errors and timeouts (none expected)
    ended: str  # the CLI's output


def deploy_bad_release(stack: TraefikStack, start, prometheus_url: str, release: str, *, canary: dict | None,
                       rate: float = 100, name: str = "bluegreen") -> Outcome:
    """Start a controller (`start(config, name=)`), deploy `release` under `rate` req/s until it ends, stop it."""
    config = {"prometheus": {"url": prometheus_url}, "probe_interval": 1.0, "failure_threshold": 2,
              "verification_window": "20s", "probe": {"verify_paths": ["/"], "verify_requests": 3},
              **({"canary": canary} if canary else {})}
    daemon = start(stack.config(**config), name=name)
    daemon.wait_event("controller_reconciled", 60)
    lab.wait_for("Traefik to serve blue (v1)", lambda: stack.serves("v1"), 60)
    load = stack.load(rate=rate, seconds=90, timeout=2.0).start()
    try:
        time.sleep(2)  # Prometheus has seen the app's healthy traffic
        asked = time.monotonic()
        done = daemon.cli("deploy", stack.app, "--image", release, "--wait", "--timeout", "80")
        took = time.monotonic() - asked
        time.sleep(1)
    finally:
        result = load.stop()
    daemon.stop()
    return Outcome(daemon, sum(n for status, n in result.statuses.items() if status >= 500), result.sent,
                   result.bodies[-1][0] - result.bodies[0][0], took, dict(result.errors), done.stdout + done.stderr)
