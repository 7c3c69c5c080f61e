"""Benchmark: time from load onset to the scale command, at `interval` 5 s and 15 s.

Run on the lab (as root, after `make lab`):  .venv/bin/python -m bench.autoscaler_reaction
A demo service limited to 0.5 CPU with `cpu=50` gets about 0.8 cores of demand from a load
container on its overlay network; the real Prometheus scrapes the cAdvisor stand-in every second
with a 15 s rate window. The reaction is measured from the first request to the `service_scaled`
log line of `swarmshift autoscaler run`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from bench.report import machine, median, update_section
from tests.support import lab
from tests.support.fixtures_prom import ROOT, Daemon, Prometheus
from tests.support.load import OverlayLoad

INTERVALS = (5, 15)
RUNS = 3
WINDOW = 15


def first_scale(log: Path) -> float | None:
    for line in log.read_text(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if event.get("event") == "service_scaled" and event.get("direction") == "up":
            return datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()
    return None


def one_run(swarm: lab.LabSwarm, prom_url: str, interval: int, workdir: Path) -> float:
    net = swarm.network()
    svc = swarm.service("react", networks=[net], cpu_limit=0.5, labels={
        "swarmshift.autoscale": "true", "swarmshift.autoscale.max": "4", "swarmshift.autoscale.cpu": "50"})
    log = workdir / f"daemon-{svc.name}.log"
    config = workdir / f"{svc.name}.yml"
    config.write_text(json.dumps({"interval": interval, "listen": f"127.0.0.1:{lab.free_port()}",
                                  "prometheus": {"url": prom_url, "rate_window": f"{WINDOW}s"}}))
    exe = Path(sys.executable).with_name("swarmshift")
    with log.open("w") as out:
        daemon = subprocess.Popen([str(exe), "--log-format", "json", "autoscaler", "run", "--config", str(config)],
                                  stdout=out, stderr=subprocess.STDOUT)
    try:
        time.sleep(interval + 2)  # the daemon is up and has evaluated the idle service
        onset = time.time()
        with OverlayLoad(swarm.client, net, svc.name, "/burn?ms=100", rate=8,
                         max_seconds=3 * interval + WINDOW + 30, max_requests=2000):
            lab.wait_for("a scale-up", lambda: first_scale(log), 3 * interval + WINDOW + 30, interval=0.5)
        return first_scale(log) - onset
    finally:
        daemon.terminate()
        daemon.wait(10)
        swarm.close()
        swarm._services.clear()
        swarm._networks.clear()


def main() -> None:
    client = lab.connect()
    lab.remove_leftovers(client)
    workdir = Path(tempfile.mkdtemp(prefix="ssbench-react-"))
    address = f"127.0.0.1:{lab.free_port()}"
    cadvisor = Daemon("cadvisor", [sys.executable, "-m", "tests.support.cadvisor", "--listen", address],
                      workdir / "cadvisor.log", cwd=ROOT)
    prom = Prometheus(workdir / "prometheus", lab.free_port())
    results: dict[int, list[float]] = {}
    try:
        cadvisor.start()
        cadvisor.wait_http(f"http://{address}/metrics")
        prom.add_target("cadvisor", address)
        prom.start()
        swarm = lab.LabSwarm(client, prefix="bench")
        for interval in INTERVALS:
            for _ in range(RUNS):
                seconds = one_run(swarm, prom.url, interval, workdir)
                print(f"interval {interval}s: reaction {seconds:.1f}s", flush=True)
                results.setdefault(interval, []).append(seconds)
    finally:
        prom.close()
        cadvisor.stop()

    rows = "\n".join(
        f"| {i} s | {WINDOW} s | {median(v):.1f} s | {min(v):.1f}–{max(v):.1f} s | {i + WINDOW} s |"
        for i, v in results.items()
    )
    update_section("autoscaler-reaction", f"""
## Autoscaler: reaction time

`.venv/bin/python -m bench.autoscaler_reaction` ({machine()}; {RUNS} runs per interval).
From the first request of a load that takes a 0.5-CPU service to 100 % of its limit (target 50 %)
to the `service_scaled` log line, through the real Prometheus (1 s scrapes of the cAdvisor
stand-in) and the `prometheus` source.

| interval | rate window | median reaction | range | target (interval + rate window) |
|---:|---:|---:|---:|---:|
{rows}

For comparison, jcwimer/docker-swarm-autoscaler polls every 60 s and moves ±1 replica per
loop; HPA's default sync period is 15 s.
""")


if __name__ == "__main__":
    main()
