"""Benchmark: the autoscaler loop's cost at 10, 100 and 500 opted-in services, and the daemon's peak RSS.

Run on the lab (as root, after `make lab`):  .venv/bin/python -m bench.autoscaler_loop
The services run at 0 replicas; Prometheus serves synthetic cAdvisor-named series for all of them,
so every loop parses a result with one series per service, as it would in production. These are
not the real cAdvisor's series (the lab runs the real cAdvisor everywhere else): 500 running
containers do not fit on this 2-core machine, and the loop's cost depends only on the number
and shape of the series, which the synthetic exporter copies from cAdvisor.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import docker
import docker.types

from autoscaler.loop import Autoscaler
from autoscaler.policy import load_policy_file
from autoscaler.sources.prometheus import PrometheusSource
from bench.report import machine, median, update_section
from swarmshift import logs
from swarmshift.prometheus import Prometheus as PrometheusClient
from swarmshift.swarm import Swarm
from tests.support import lab
from tests.support.fixtures_prom import Prometheus

SIZES = (10, 100, 500)
LOOPS = 9
BENCH_LABEL = {lab.LABEL: lab.OWNER}
S, T = "container_label_com_docker_swarm_service_name", "container_label_com_docker_swarm_task_name"


class SyntheticCadvisor:
    """cAdvisor-named series for `names` (one task each), values moving a little per scrape."""

    def __init__(self) -> None:
        self.names: list[str] = []
        bench = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                now = time.time()
                lines = []
                for i, name in enumerate(bench.names):
                    labels = f'{S}="{name}",{T}="{name}.1.synthetic{i}",name="{name}.1",id="/docker/{i:064x}"'
                    lines += [
                        f"container_cpu_usage_seconds_total{{cpu=\"total\",{labels}}} {now * 0.25:.3f}",
                        f"container_spec_cpu_quota{{{labels}}} 50000",
                        f"container_spec_cpu_period{{{labels}}} 100000",
                        f"container_memory_working_set_bytes{{{labels}}} {50 * 2**20}",
                        f"container_spec_memory_limit_bytes{{{labels}}} {128 * 2**20}",
                    ]
                data = ("\n".join(lines) + "\n").encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def create_services(client: docker.DockerClient, count: int, start: int) -> list[str]:
    names = []
    for i in range(start, count):
        name = f"ssbench-{os.getpid()}-{i:03d}"
        client.services.create(
            lab.DEMO_IMAGE, name=name, labels={**BENCH_LABEL, "swarmshift.autoscale": "true",
                                               "swarmshift.autoscale.max": "5", "swarmshift.autoscale.cpu": "50",
                                               "swarmshift.autoscale.memory": "70"},
            mode=docker.types.ServiceMode("replicated", replicas=0),
            resources=docker.types.Resources(cpu_limit=500_000_000, mem_limit=128 * 2**20),
            endpoint_spec=docker.types.EndpointSpec(mode="dnsrr"),
        )
        names.append(name)
    return names


async def measure(prom_url: str, loops: int) -> dict[str, float]:
    client = PrometheusClient(prom_url)
    spent = [0.0]
    original = client._query

    def timed(promql: str, keep_nan: bool = False):
        started = time.perf_counter()
        try:
            return original(promql, keep_nan)
        finally:
            spent[0] += time.perf_counter() - started

    client._query = timed  # Prometheus's own time is excluded from the loop's cost
    swarm = Swarm()
    scaler = Autoscaler(swarm, PrometheusSource(client, window="10s"), load_policy_file({}, "bench"))
    walls, own, docker_calls, prom_calls = [], [], [], []
    await scaler.evaluate(act=True)  # warm-up: imports, connection pools
    for _ in range(loops):
        d0, p0, spent[0] = swarm.calls, client.requests, 0.0
        started = time.perf_counter()
        evaluations = await scaler.evaluate(act=True)
        wall = time.perf_counter() - started
        walls.append(wall)
        own.append(wall - spent[0])
        docker_calls.append(swarm.calls - d0)
        prom_calls.append(client.requests - p0)
    await swarm.close()
    return {"services": len(evaluations), "wall": median(walls), "own": median(own),
            "docker": median(docker_calls), "prom": median(prom_calls)}


def daemon_rss(prom_url: str, seconds: float = 30) -> float:
    """Peak RSS (VmHWM, MiB) of `swarmshift autoscaler run` evaluating every second for `seconds`."""
    exe = Path(sys.executable).with_name("swarmshift")
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "daemon.log"
        with log.open("w") as out:
            proc = subprocess.Popen([str(exe), "--log-format", "json", "autoscaler", "run", "--prometheus", prom_url,
                                     "--interval", "1", "--listen", f"127.0.0.1:{lab.free_port()}"],
                                    stdout=out, stderr=subprocess.STDOUT)
        try:
            time.sleep(seconds)
            status = Path(f"/proc/{proc.pid}/status").read_text()
            return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM"))) / 1024
        finally:
            proc.terminate()
            proc.wait(10)


def main() -> None:
    logs.configure("json", "warning")
    client = lab.connect()
    lab.remove_leftovers(client)
    exporter = SyntheticCadvisor()
    workdir = Path(tempfile.mkdtemp(prefix="ssbench-"))
    prom = Prometheus(workdir, lab.free_port())
    rows, names = [], []
    try:
        prom.add_target("cadvisor", exporter.address)
        prom.start()
        for size in SIZES:
            names += create_services(client, size, len(names))
            exporter.names = list(names)
            time.sleep(3)  # a few scrapes with every series present
            result = asyncio.run(measure(prom.url, LOOPS))
            print(f"{size} services: {result}", flush=True)
            rows.append(result)
        rss = daemon_rss(prom.url)
        print(f"peak RSS at {len(names)} services: {rss:.1f} MiB", flush=True)
    finally:
        prom.close()
        for name in names:
            with contextlib.suppress(docker.errors.APIError):
                client.api.remove_service(name)

    table = ["| services | loop wall time (median) | loop time excluding Prometheus's query time | Docker requests per loop | Prometheus requests per loop |",
             "|---:|---:|---:|---:|---:|"]
    for r in rows:
        table.append(f"| {r['services']} | {r['wall'] * 1000:.0f} ms | {r['own'] * 1000:.0f} ms | {r['docker']:.0f} | {r['prom']:.0f} |")
    ratio = rows[-1]["own"] / rows[0]["own"] if rows[0]["own"] else float("nan")
    update_section("autoscaler-loop", f"""
## Autoscaler: loop cost and memory

`.venv/bin/python -m bench.autoscaler_loop` ({machine()}; {LOOPS} loops per size, medians).
Services opted in with CPU and memory targets, at 0 replicas; Prometheus serves one synthetic
cAdvisor-named series per service and metric, so each loop parses a result as large as the fleet.

{chr(10).join(table)}

- Requests per loop stay constant: one service list and one task list from Docker, one query per
  metric from Prometheus, whatever the number of services.
- Loop time excluding Prometheus's own query time grows {ratio:.1f}× from {rows[0]['services']} to
  {rows[-1]['services']} services (target: under 200 ms at 500).
- Peak RSS of `swarmshift autoscaler run` evaluating {len(names)} services every second for 30 s:
  **{rss:.1f} MiB** (target: under 80 MB).
""")


if __name__ == "__main__":
    main()
