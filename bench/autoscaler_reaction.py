"""Benchmark: time from load onset to the scale command, with the real cAdvisor and the stack's intervals.

Run on the lab (as root, after `make lab`):  .venv/bin/python -m bench.autoscaler_reaction

The real cAdvisor (swarmshift-cadvisor:lab) runs as a global Swarm service with the flags
docker-stack.yml ships; the real Prometheus scrapes it at the stack's scrape interval
(stack/prometheus/prometheus.yml), and `swarmshift autoscaler run` uses the stack's loop interval
and rate window (stack/swarmshift/autoscaler.yml). A demo service limited to 0.5 CPU with
`cpu=50` gets about 0.8 cores of demand from a load container on its overlay network. Per run:

- reaction: from the first request of the load to the `service_scaled` log line;
- cAdvisor's share: from the first request until cAdvisor exports a sample of the loaded
  container (its /metrics polled every 0.2 s), which its housekeeping interval bounds.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime
from pathlib import Path

import yaml

from bench.report import machine, median, update_section
from tests.support import lab
from tests.support.fixtures_prom import ROOT, Prometheus
from tests.support.load import OverlayLoad

RUNS = 3


def seconds(text: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    number, unit = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text).groups()
    return float(number) * units[unit]


def stack_settings() -> tuple[float, float, float]:
    """(scrape interval, autoscaler interval, rate window) as the stack ships them, in seconds."""
    prom = yaml.safe_load((ROOT / "stack" / "prometheus" / "prometheus.yml").read_text())
    scaler = yaml.safe_load((ROOT / "stack" / "swarmshift" / "autoscaler.yml").read_text())
    return (seconds(prom["global"]["scrape_interval"]), seconds(scaler["interval"]),
            seconds(scaler["prometheus"]["rate_window"]))


def first_scale(log: Path) -> float | None:
    for line in log.read_text(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if event.get("event") == "service_scaled" and event.get("direction") == "up":
            return datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()
    return None


def cpu_sample(cadvisor_url: str, service: str) -> float | None:
    """The service's CPU counter as cAdvisor exports it now (one task), or None."""
    with urllib.request.urlopen(f"{cadvisor_url}/metrics", timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith("container_cpu_usage_seconds_total{") and f'service_name="{service}"' in line:
                return float(line.split("}", 1)[1].split()[0])
    return None


def one_run(swarm: lab.LabSwarm, prom_url: str, cadvisor_url: str, workdir: Path,
            interval: float, window: float) -> tuple[float, float]:
    net = swarm.network()
    svc = swarm.service("react", networks=[net], cpu_limit=0.5, labels={
        "swarmshift.autoscale": "true", "swarmshift.autoscale.max": "4", "swarmshift.autoscale.cpu": "50"})
    log = workdir / f"daemon-{svc.name}.log"
    config = workdir / f"{svc.name}.yml"
    config.write_text(json.dumps({"interval": f"{interval:g}s", "listen": f"127.0.0.1:{lab.free_port()}",
                                  "selector": f"{lab.LABEL}={lab.OWNER}",
                                  "prometheus": {"url": prom_url, "rate_window": f"{window:g}s"}}))
    exe = Path(sys.executable).with_name("swarmshift")
    with log.open("w") as out:
        daemon = subprocess.Popen([str(exe), "--log-format", "json", "autoscaler", "run", "--config", str(config)],
                                  stdout=out, stderr=subprocess.STDOUT)
    budget = 3 * interval + 2 * window + 60
    try:
        lab.wait_for("cAdvisor to export the idle task", lambda: cpu_sample(cadvisor_url, svc.name) is not None, 60)
        time.sleep(window + interval)  # Prometheus and the daemon have seen the idle service for a window
        idle = cpu_sample(cadvisor_url, svc.name)
        onset = time.time()
        with OverlayLoad(swarm.client, net, svc.name, "/burn?ms=100", rate=8, max_seconds=budget,
                         max_requests=int(8 * budget)):
            # The first sample cAdvisor exports with CPU spent by the load (0.1 s of the 0.5-core limit).
            lab.wait_for("cAdvisor to export a loaded sample",
                         lambda: (cpu_sample(cadvisor_url, svc.name) or 0) > idle + 0.1, 60, interval=0.2)
            housekeeping = time.time() - onset
            lab.wait_for("a scale-up", lambda: first_scale(log), budget, interval=0.5)
        return first_scale(log) - onset, housekeeping
    finally:
        daemon.terminate()
        daemon.wait(10)
        swarm.close()
        swarm._services.clear()
        swarm._networks.clear()


def main() -> None:
    client = lab.connect()
    lab.remove_leftovers(client)
    scrape, interval, window = stack_settings()
    workdir = Path(tempfile.mkdtemp(prefix="ssbench-react-"))
    address, cadvisor = lab.cadvisor_service(client, lab.stack_cadvisor_args(), stem="bench-cadvisor")
    prom = Prometheus(workdir / "prometheus", lab.free_port(), scrape_interval=f"{scrape:g}s")
    runs: list[tuple[float, float]] = []
    try:
        prom.add_target("cadvisor", address)
        prom.start()
        swarm = lab.LabSwarm(client, prefix="bench")
        for _ in range(RUNS):
            runs.append(one_run(swarm, prom.url, f"http://{address}", workdir, interval, window))
            print(f"reaction {runs[-1][0]:.1f}s, of which cAdvisor's first loaded sample {runs[-1][1]:.1f}s", flush=True)
    finally:
        prom.close()
        lab.remove_service(client, cadvisor)

    reactions, housekeeping = [r for r, _ in runs], [h for _, h in runs]
    args = " ".join(a for a in lab.stack_cadvisor_args() if "housekeeping" in a or "jitter" in a)
    update_section("autoscaler-reaction", f"""
## Autoscaler: reaction time

`.venv/bin/python -m bench.autoscaler_reaction` ({machine()}; {RUNS} runs).
From the first request of a load that takes a 0.5-CPU service to 100 % of its limit (target 50 %)
to the `service_scaled` log line, with the stack's settings throughout: the real cAdvisor
(`{args}`), Prometheus scraping it every {scrape:g} s, the autoscaler's loop every {interval:g} s
over a {window:g} s rate window.

| | median | each run |
|---|---:|---:|
| load onset to `service_scaled` | {median(reactions):.1f} s | {', '.join(f'{r:.1f}' for r in reactions)} s |
| … of which until cAdvisor exports a loaded sample (housekeeping) | {median(housekeeping):.1f} s | {', '.join(f'{h:.1f}' for h in housekeeping)} s |

The rest is the rate window filling: `rate()` over {window:g} s passes the target plus HPA's 10 %
tolerance (55 % of the limit) only once more than half of the window holds loaded samples,
plus up to one scrape ({scrape:g} s) and one loop ({interval:g} s). A shorter `rate_window`
reacts sooner and is noisier. For comparison, jcwimer/docker-swarm-autoscaler polls every 60 s
and moves ±1 replica per loop; HPA's default sync period is 15 s.
""")


if __name__ == "__main__":
    main()
