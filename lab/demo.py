"""`make demo`: the autoscaler's whole job on the lab swarm, ending with a short report.

It starts a real Prometheus on 127.0.0.1 scraping the cAdvisor stand-in (no cAdvisor image can
be had here: the stand-in exports cAdvisor's metric names from the real cgroup counters), deploys
the demo app with autoscaling labels, runs `swarmshift autoscaler run`, drives CPU load from a
container on the app's overlay network until it scales up, stops the load and watches it scale
back down after the stabilization window. `make demo-down` removes everything it made.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import docker
import docker.errors

from tests.support import lab
from tests.support.fixtures_prom import ROOT, Daemon, Prometheus
from tests.support.load import OverlayLoad

DEMO = "swarmshift.demo"
INTERVAL = 5
WINDOW = 10
DOWN_WINDOW = 20


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def down(client: docker.DockerClient) -> None:
    """Remove every service, container and network the demo made (and a killed demo's load container)."""
    lab.remove_leftovers(client)
    for svc in client.services.list(filters={"label": DEMO}):
        svc.remove()
    for ctr in client.containers.list(all=True, filters={"label": DEMO}):
        ctr.remove(force=True)
    for net in client.networks.list(filters={"label": DEMO}):
        lab.remove_network(client, net.name)


def scaled_events(log: Path) -> list[dict]:
    out = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if event.get("event") == "service_scaled":
            out.append(event)
    return out


def main() -> int:
    client = lab.connect()
    down(client)
    started = time.time()
    work = Path(tempfile.mkdtemp(prefix="swarmshift-demo-"))
    say("the lab has no cAdvisor image and no Traefik: the cAdvisor stand-in feeds a real Prometheus")
    cadvisor_addr = f"127.0.0.1:{lab.free_port()}"
    cadvisor = Daemon("cadvisor stand-in", [sys.executable, "-m", "tests.support.cadvisor", "--listen", cadvisor_addr],
                      work / "cadvisor.log", cwd=ROOT)
    prom = Prometheus(work / "prometheus", lab.free_port())
    daemon = None
    try:
        cadvisor.start()
        cadvisor.wait_http(f"http://{cadvisor_addr}/metrics")
        prom.add_target("cadvisor", cadvisor_addr)
        prom.start()
        say(f"Prometheus {prom.url} scrapes the stand-in every second")

        client.networks.create("swarmshift-demo", driver="overlay", attachable=True, labels={DEMO: "1"})
        name = "demo-web"
        client.services.create(
            lab.DEMO_IMAGE, name=name, networks=["swarmshift-demo"],
            labels={DEMO: "1", "swarmshift.autoscale": "true", "swarmshift.autoscale.max": "4",
                    "swarmshift.autoscale.cpu": "50",
                    "swarmshift.autoscale.scale_down.stabilization": f"{DOWN_WINDOW}s",
                    "swarmshift.autoscale.scale_down.policies": "pods=1/10s"},
            resources=docker.types.Resources(cpu_limit=500_000_000),
            endpoint_spec=docker.types.EndpointSpec(mode="dnsrr"),
            env=["APP_VERSION=v1"],
        )
        lab.wait_for("demo-web to run", lambda: len(lab.LabSwarm(client).running_tasks(name)) == 1, 60)
        say(f"deployed {name}: 1 replica, CPU limit 0.5, target 50 % of it, max 4")

        log = work / "autoscaler.log"
        config = work / "autoscaler.yml"
        config.write_text(json.dumps({"interval": INTERVAL, "listen": f"127.0.0.1:{lab.free_port()}",
                                      "prometheus": {"url": prom.url, "rate_window": f"{WINDOW}s"}}))
        exe = Path(sys.executable).with_name("swarmshift")
        with log.open("w") as out:
            daemon = subprocess.Popen([str(exe), "--log-format", "json", "autoscaler", "run", "--config", str(config)],
                                      stdout=out, stderr=subprocess.STDOUT)
        say(f"swarmshift autoscaler run: every {INTERVAL}s, rate window {WINDOW}s")
        time.sleep(INTERVAL)

        onset = time.time()
        say("load: /burn from a container on the overlay, about 0.8 cores of demand")
        with OverlayLoad(client, "swarmshift-demo", name, "/burn?ms=100", rate=8, max_seconds=90,
                         max_requests=720):
            lab.wait_for("a scale-up to 3", lambda: any(e["to"] >= 3 for e in scaled_events(log)), 90, interval=0.5)
        stop = time.time()
        say("load stopped; the scale-down waits out its window, then steps down one replica per 10 s")
        lab.wait_for("the scale-down to 1", lambda: any(e["to"] == 1 and e["direction"] == "down"
                                                        for e in scaled_events(log)), DOWN_WINDOW + 60, interval=1)

        print("\nswarmshift demo report")
        print("=" * 60)
        for e in scaled_events(log):
            at = datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00")).timestamp()
            cpu = next((m for m in e["metrics"] if m["metric"] == "cpu"), {})
            value = cpu.get("value")
            anchor = "after load onset" if at < stop else "after load stop"
            since = at - (onset if at < stop else stop)
            print(f"  {since:5.1f}s {anchor:16}  {e['service']} {e['from']} -> {e['to']}  "
                  f"({e['reason']}, cpu {value if value is None else round(value)}% vs {cpu.get('target')}%)")
        print(f"  total demo time: {time.time() - started:.0f}s")
        print("  not shown yet: blue-green deploys and rollbacks (issue 4) and the full stack (issue 5)")
        return 0
    finally:
        if daemon is not None:
            daemon.terminate()
            daemon.wait(10)
        prom.close()
        cadvisor.stop()
        if not os.environ.get("SWARMSHIFT_DEMO_KEEP"):
            down(client)


if __name__ == "__main__":
    if sys.argv[1:] == ["--down"]:
        down(lab.connect())
        sys.exit(0)
    sys.exit(main())
