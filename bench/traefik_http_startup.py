"""Benchmark: the first switch after the controller's start-up, with Traefik's HTTP provider.

Run on the lab (as root, after `make lab`):  .venv/bin/python -m bench.traefik_http_startup

Traefik polls the controller's `GET /v1/traefik` every `pollInterval` (1 s here, as in the lab
tests). While the controller is down, and while it answers 503 during its start-up
reconciliation, Traefik's poll fails, and Traefik backs off: exponentially, from 0.5 s by
1.5 times per failure (randomized by ±50 %) up to 60 s between tries, until a fetch succeeds.
So the first change after the controller comes back reaches Traefik only at Traefik's next try.

For each outage length, the controller service (Traefik HTTP provider) is scaled to 0 for that
long and back to 1; once it has reconciled, a switch is requested. Measured: from the switch
request until Traefik's API shows the new weights (the controller's confirmation), and until
every response comes from the new color.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import docker

from bench.report import machine, median, update_section
from tests.support import lab
from tests.support.bluegreen import release_images
from tests.support.traefik import ControllerService, TraefikStack

OUTAGES = (5, 30, 90)
RUNS = 2


def first_switch(stack: TraefikStack, daemon: ControllerService, outage: float, to: str, version: str,
                 answered: list[float]) -> float:
    lab.scale_service(stack.swarm.client, daemon.service_name, 0)
    lab.wait_for("the controller to stop", lambda: not daemon.running, 30)
    time.sleep(outage)
    seen = len(daemon.lines())
    daemon.start()
    daemon.wait_event("controller_reconciled", 60, since=seen)
    asked = time.monotonic()
    # The request returns once Traefik has confirmed the new routing, which may take a backed-off
    # poll: longer than the CLI's 30 s client timeout after a long outage (docs/benchmarks.md).
    code, body = daemon.api("POST", f"/v1/apps/{stack.app}/switch", {"to": to, "force": True}, timeout=150)
    assert code == 202, body
    answered.append(time.monotonic() - asked)
    lab.wait_for(f"Traefik to serve {version} only", lambda: stack.serves(version, count=10), 180, interval=0.2)
    return time.monotonic() - asked


def main() -> None:
    client = docker.from_env(timeout=30)
    images = release_images(client)
    results: dict[float, list[float]] = {}
    replies: dict[float, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-http-") as tmp:
        work = Path(tmp)
        work.chmod(0o755)
        swarm = lab.LabSwarm(client, prefix="bench")
        try:
            stack = TraefikStack(swarm, work, images, provider="http", green="v2", green_replicas=2)
            daemon = ControllerService(stack, stack.config())  # the defaults under test: confirm 90 s, switch 120 s
            daemon.start()
            daemon.wait_event("controller_reconciled", 60)
            lab.wait_for("Traefik to serve blue", lambda: stack.serves("v1"), 60)
            i = 0
            for outage in OUTAGES:
                for _ in range(RUNS):
                    to, version = ("green", "v2") if i % 2 == 0 else ("blue", "v1")
                    took = first_switch(stack, daemon, outage, to, version, replies.setdefault(outage, []))
                    print(f"outage {outage}s: switch answered in {replies[outage][-1]:.1f}s, served in {took:.1f}s",
                          flush=True)
                    results.setdefault(outage, []).append(took)
                    i += 1
        finally:
            swarm.close()
    rows = "\n".join(f"| {o} s | {median(replies[o]):.1f} s | {median(v):.1f} s | {', '.join(f'{t:.1f}' for t in v)} s |"
                     for o, v in results.items())
    body = f"""## Traefik HTTP provider: the first switch after the controller's start-up

`.venv/bin/python -m bench.traefik_http_startup` ({machine()}; {RUNS} runs per outage).
The controller (a Swarm service) is stopped for the outage, started again, and once it has
reconciled a switch is requested; measured until every response comes from the new color.
Traefik's `pollInterval` is 1 s; after failed polls it backs off exponentially (0.5 s × 1.5 per
failure, ±50 %, at most 60 s between tries) until a fetch succeeds.

| controller down for | `POST /switch` answered, median | first switch served, median | each |
|---:|---:|---:|---:|
{rows}

Hence `router.traefik.confirm_timeout` is 90 s by default with `traefik-http` (a Traefik that
backed off to its 60 s ceiling, plus its ±50 % randomization) and `switch_timeout` must exceed it;
in steady state a switch reaches Traefik within one `pollInterval` plus its throttle.
"""
    update_section("traefik-http-startup", body)
    print(body)


if __name__ == "__main__":
    main()
