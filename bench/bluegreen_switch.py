"""Benchmark: blue-green switch latency, requests failed across switches, and rollback time from the first failure.

Run on the lab (as root, after `make lab`):  .venv/bin/python -m bench.bluegreen_switch

- nginx: `swarmshift bluegreen run` drives a real nginx Swarm service (the lab's router image)
  in front of blue (v1 × 2) and green (v2 × 2). 20 forced switches back and forth, each once
  the previous one is Stable, under 100 req/s of load to nginx on 127.0.0.1. Per switch: the
  router's own time (write, `nginx -t` in the container, SIGHUP, nginx's status port reporting
  only the new routing), and the operator's view (POST /switch to the first response from the
  new color at the client).
- Traefik file router: 20 switches of one app's file in a temp directory: the write-to-rename
  time (temp file, fsync, rename, directory fsync) and the whole `apply` (render, check, write).
- Rollback: a release that passes its health checks and then answers 5xx on `/` is deployed
  3 times under load; the time from the first 5xx a client saw to the last response the failed
  color served, with probe_interval 1 s and failure_threshold 2.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

import docker

from bench.report import machine, median, p95, update_section
from bluegreen.model import App, Color, Routing
from bluegreen.routers.traefik_file import TraefikFileRouter, render, write_atomic
from tests.support import lab
from tests.support.bluegreen import FAILURE_THRESHOLD, PROBE_INTERVAL, Stack, nginx_image, release_images
from tests.support.swarmshift_proc import BlueGreenDaemon, start_bluegreen

SWITCHES = 20
ROLLBACKS = 3
RATE = 100


def _wait_stable(daemon: BlueGreenDaemon, app: str, active: str, timeout: float = 30) -> None:
    lab.wait_for(f"{app} Stable on {active}", lambda: (v := daemon.status(app))["phase"] == "Stable"
                 and v["active"] == active, timeout, interval=0.05)


def nginx_switches(swarm: lab.LabSwarm, workdir: Path, images: dict[str, str], nginx: str) -> dict:
    stack = Stack(swarm, workdir, images, nginx, green="v2", green_replicas=2)
    daemon = start_bluegreen(workdir / "controller", stack.config())
    try:
        daemon.wait_event("controller_reconciled", 30)
        lab.wait_for("nginx to serve blue", lambda: stack.serves("v1"), 30)
        offset = time.time() - time.monotonic()
        load = stack.load(rate=RATE, seconds=SWITCHES * 4 + 20).start()
        router_times, apply_times, operator_times = [], [], []
        try:
            time.sleep(1)
            for i in range(SWITCHES):
                to, version = ("green", "v2") if i % 2 == 0 else ("blue", "v1")
                seen = len(daemon.lines())
                asked = time.time()
                code, body = daemon.api("POST", f"/v1/apps/{stack.app}/switch", {"to": to, "force": True})
                assert code == 202, body
                _wait_stable(daemon, stack.app, to)
                applied = daemon.wait_event("route_applied", 5, since=seen, app=stack.app)
                router_times.append(applied["seconds"])
                apply_times.append(applied["apply_seconds"])
                time.sleep(0.5)
                first = min((t + offset for t, _, v in list(load.result.bodies) if t + offset > asked and v == version),
                            default=None)
                assert first is not None, f"no response from {version} after switch {i}"
                operator_times.append(first - asked)
        finally:
            result = load.stop()
        return {"router": router_times, "apply": apply_times, "operator": operator_times, "sent": result.sent,
                "answered": sum(result.statuses.values()), "failed": result.failed,
                "seconds": result.bodies[-1][0] - result.bodies[0][0]}
    finally:
        daemon.stop()


def traefik_file_switches(workdir: Path) -> dict:
    app = App("web", "web-blue", "web-green", 8000, "Host(`web.example.com`)",
              preview_rule="Host(`web.preview.example.com`)")
    router = TraefikFileRouter(workdir)
    writes, applies = [], []

    async def run() -> None:
        for i in range(SWITCHES):
            routing = Routing.all_to(Color.GREEN if i % 2 == 0 else Color.BLUE)
            data = render(router.document(app, routing), routing)
            started = time.perf_counter()
            write_atomic(workdir / "probe.yml.bench", data)  # the same write, timed alone
            writes.append(time.perf_counter() - started)
            started = time.perf_counter()
            await router.apply(app, routing)
            applies.append(time.perf_counter() - started)

    asyncio.run(run())
    return {"write": writes, "apply": applies}


def rollbacks(swarm: lab.LabSwarm, workdir: Path, images: dict[str, str], nginx: str) -> list[float]:
    stack = Stack(swarm, workdir, images, nginx)
    daemon = start_bluegreen(workdir / "controller", stack.config(verification_window="30s", scale_down_delay="1h"))
    took = []
    try:
        daemon.wait_event("controller_reconciled", 30)
        lab.wait_for("nginx to serve blue", lambda: stack.serves("v1"), 30)
        for _ in range(ROLLBACKS):
            load = stack.load(rate=RATE, seconds=90).start()
            try:
                seen = len(daemon.lines())
                code, body = daemon.api("POST", f"/v1/apps/{stack.app}/deploy", {"image": images["5xx"]})
                assert code == 202, body
                daemon.wait_event("rolled_back", 90, since=seen, app=stack.app)
                time.sleep(0.5)
            finally:
                result = load.stop()
            first = min(t for t, status, _ in result.bodies if status >= 500)
            last = max(t for t, _, v in result.bodies if v == "v-5xx")
            took.append(last - first)
    finally:
        daemon.stop()
    return took


def main() -> None:
    client = docker.from_env(timeout=30)
    images = release_images(client)
    nginx = nginx_image(client)
    with tempfile.TemporaryDirectory(prefix="bench-bluegreen-") as tmp:
        work = Path(tmp)
        work.chmod(0o755)
        swarm = lab.LabSwarm(client, prefix="bench")
        try:
            switched = nginx_switches(swarm, work / "switches", images, nginx)
        finally:
            swarm.close()
        (work / "traefik").mkdir()
        files = traefik_file_switches(work / "traefik")
        swarm = lab.LabSwarm(client, prefix="bench")
        try:
            rolled = rollbacks(swarm, work / "rollbacks", images, nginx)
        finally:
            swarm.close()
    deadline = PROBE_INTERVAL * FAILURE_THRESHOLD
    ms = lambda values: f"{median(values) * 1000:.0f} ms / {p95(values) * 1000:.0f} ms"  # noqa: E731
    body = f"""## Blue-green: switch latency, failed requests, rollback time

`.venv/bin/python -m bench.bluegreen_switch` ({machine()}).
`swarmshift bluegreen run` on the host drives a real nginx Swarm service (`swarmshift-nginx:lab`, Debian's
nginx-light) on the apps' overlay network: `nginx -t` runs in its container and the reload is a SIGHUP,
both through the Docker API; the switch counts once nginx's status port reports only the new routing.
Load: {RATE} req/s to nginx on 127.0.0.1, a new connection per request.

| measure | median / p95 over {SWITCHES} | target |
|---|---:|---:|
| nginx switch, router's time (write, `nginx -t`, SIGHUP, confirmed loaded) | {ms(switched['router'])} | under 1 s |
| … of which the apply (write, `nginx -t` in the container, SIGHUP) | {ms(switched['apply'])} | |
| nginx switch, operator's view (`POST /switch` to the first response from the new color) | {ms(switched['operator'])} | |
| Traefik file router, write-to-rename (temp file, fsync, rename, dir fsync) | {ms(files['write'])} | |
| Traefik file router, whole `apply` (render, schema-level check, write) | {ms(files['apply'])} | under 1 s, excluding Traefik's own reload |

- Requests failed across the {SWITCHES} nginx switches: **{switched['failed']}** of {switched['answered']}
  ({switched['sent'] / switched['seconds']:.0f} req/s over {switched['seconds']:.0f} s; target 0).
- Rollback from the first failure: a release that passes its health checks, then answers 5xx on `/`.
  From the first 5xx a client saw to the last response the failed color served:
  **{median(rolled):.2f} s** median ({', '.join(f'{t:.2f}' for t in rolled)} s over {ROLLBACKS} rollbacks), with
  probe_interval {PROBE_INTERVAL:g} s × failure_threshold {FAILURE_THRESHOLD} = {deadline:g} s (target: within
  {deadline + 1:g} s).

| | interval × threshold | time to roll back after the first failure |
|---|---|---:|
| swarmshift, as measured | {PROBE_INTERVAL:g} s × {FAILURE_THRESHOLD} | {median(rolled):.1f} s |
| swarmshift defaults (estimated: 4 s plus the overhead measured above) | 2 s × 2 | about {4 + median(rolled) - deadline:.1f} s |
| Flagger defaults (`analysis.interval` 1m, `threshold` 1: fluxcd/flagger `pkg/apis/flagger/v1beta1/canary.go`) | 1 m × 1 | about 1 min |

The overhead on top of interval × threshold is the switch's confirmation (nginx keeps its old
workers accepting for 100 ms after a reload; the switch counts once only the new routing has
answered for 200 ms more), the first round of checks, and the rollback's own `nginx -t` and reload.
"""
    update_section("bluegreen", body)
    print(body)


if __name__ == "__main__":
    main()
