"""Benchmark: the blast radius of a bad release, with a 5 % canary and with a direct switch, same release, same load.

Run on the lab (as root, after `make lab`):  .venv/bin/python -m bench.blast_radius

Traefik (file provider) in front of blue (v1 × 2); a real Prometheus on 127.0.0.1 scrapes
Traefik's metrics every second, and the controller's canary analysis reads them. A release that
passes its health checks and the probes' health path but answers 5xx to a share of users'
requests on `/` is deployed RUNS times each way under RATE req/s: with the canary of
tests/support/canary.py (5 % for at most 30 s, judged every second, max_error_rate 0.05), and
straight to 100 % (the probes' verify path `/` with 3 requests per round, probe_interval 1 s ×
failure_threshold 2). Counted: the 5xx answers users got, and the time from the request to
RolledBack. The same function backs the lab test, which asserts the canary's count is smaller.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import docker

from bench.report import machine, median, update_section
from tests.support import lab
from tests.support.bluegreen import derived_image, release_images
from tests.support.canary import CANARY, deploy_bad_release
from tests.support.fixtures_prom import Prometheus
from tests.support.swarmshift_proc import start_bluegreen
from tests.support.traefik import TraefikStack

RUNS = 3
RATE = 100
ERROR_RATES = (0.33, 1.0)


def main() -> None:
    client = docker.from_env(timeout=30)
    images = release_images(client)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-blast-") as tmp:
        work = Path(tmp)
        work.chmod(0o755)
        prometheus = Prometheus(work / "prometheus", lab.free_port())
        prometheus.start()
        try:
            for share in ERROR_RATES:
                release = derived_image(client, f"swarmshift-bluegreen-test:bench-{int(share * 100)}-5xx",
                                        {"APP_VERSION": f"v-{int(share * 100)}", "ERROR_RATE": f"{share:g}"})
                counts: dict[str, list[int]] = {"canary": [], "direct": []}
                took: dict[str, list[float]] = {"canary": [], "direct": []}
                for i in range(RUNS):
                    for mode, canary in (("canary", CANARY), ("direct", None)):
                        swarm = lab.LabSwarm(client, prefix="bench")
                        try:
                            stack = TraefikStack(swarm, work / f"{share}-{mode}-{i}", images)
                            prometheus.add_target("traefik", f"127.0.0.1:{stack.api_port}")

                            def start(config, name, d=work / f"{share}-{mode}-{i}-ctl"):
                                return start_bluegreen(d, config, name=name)

                            out = deploy_bad_release(stack, start, prometheus.url, release, canary=canary, rate=RATE,
                                                     name=mode)
                            assert "ended RolledBack" in out.ended, out.ended
                            counts[mode].append(out.failed)
                            took[mode].append(out.took)
                        finally:
                            swarm.close()
                c, d = median(counts["canary"]), median(counts["direct"])
                rows.append(f"| {share:.0%} of `/` | {c:g} ({', '.join(map(str, counts['canary']))}) | "
                            f"{d:g} ({', '.join(map(str, counts['direct']))}) | {c / d:.2f} | "
                            f"{median(took['canary']):.1f} s / {median(took['direct']):.1f} s |")
        finally:
            prometheus.close()
    table = "\n".join(rows)
    body = f"""## Blue-green: the blast radius of a canary

`.venv/bin/python -m bench.blast_radius` ({machine()}; one run, {RUNS} deploys each way).
Traefik v3 (file provider) in front of blue (v1 × 2), {RATE} req/s on 127.0.0.1; a release that
passes its health checks but answers 5xx to a share of `/` is deployed with the canary (5 % for at
most 30 s, Traefik's metrics through Prometheus every 1 s, max_error_rate 0.05, min_requests 10)
and with a direct switch (probes of `/` each 1 s, failure_threshold 2). Failed user requests are
the 5xx answers the load got; each cell is the median (each run).

| the release fails | failed user requests, canary | failed user requests, direct switch | ratio | request to RolledBack, canary / direct |
|---|---:|---:|---:|---:|
{table}

A canary's failures scale with its weight and with the time to a verdict: Prometheus's scrape
(1 s here) and the analysis interval, until `min_requests` answers of the new color are in. A
direct switch sends every user to the release until the probes' failure_threshold is reached.
"""
    update_section("blast-radius", body)
    print(body)


if __name__ == "__main__":
    main()
