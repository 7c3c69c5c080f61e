"""Benchmark: what `make cluster` costs: the time to build the three-node cluster from nothing and warm, and its memory.

Run on the lab (as root, after `make lab`):  .venv/bin/python -m bench.cluster_cost

It tears the cluster down, builds it from nothing (`sh lab/cluster.sh`: namespaces, three
engines, the swarm, the registry and the images pushed), runs it again warm (a healthy cluster
only gets its images pushed again), and sums the resident memory of every process of each node
(engine, containerd, shims) and of the registry, idle and with a three-task service spread over
the nodes. The cluster is left up.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from bench.report import machine, update_section
from tests.support import cluster as lab_cluster
from tests.support import lab

SCRIPT = Path(__file__).resolve().parents[1] / "lab" / "cluster.sh"


def _timed(*args: str) -> float:
    started = time.monotonic()
    subprocess.run(["sh", str(SCRIPT), *args], check=True, capture_output=True)
    return time.monotonic() - started


def _rss_mib(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def _node_pids(n: int) -> list[int]:
    """Every process of node N: its engine (the init of the node's PID namespace) and all it started, tasks included."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    out = subprocess.run(["ip", "netns", "pids", f"ssc-node{n}"], capture_output=True, text=True).stdout
    found = {int(p) for p in out.split()}
    grew = True
    while grew:
        more = {pid for pid, parent in parents.items() if parent in found} - found
        grew = bool(more)
        found |= more
    return sorted(found)


def _memory() -> dict[str, float]:
    out = {f"node{n}": _rss_mib(_node_pids(n)) for n in lab_cluster.NODES}
    registry = Path("/run/swarmshift-cluster/registry.pid")
    out["registry"] = _rss_mib([int(registry.read_text())]) if registry.exists() else 0.0
    return out


def main() -> None:
    _timed("down")
    cold = _timed()
    warm = _timed()
    time.sleep(5)
    idle = _memory()
    cluster = lab_cluster.connect()
    swarm = lab.LabSwarm(cluster.client(1), prefix="bench")
    try:
        swarm.service("spread", image=lab_cluster.image("swarmshift-demo:lab"), replicas=3)
        time.sleep(3)
        busy = _memory()
    finally:
        swarm.close()
        cluster.close()
    rows = "\n".join(f"| {name} | {idle[name]:.0f} MiB | {busy[name]:.0f} MiB |" for name in idle)
    body = f"""## Lab: the cost of `make cluster`

`.venv/bin/python -m bench.cluster_cost` ({machine()}; one run).
From nothing (namespaces, three engines, the swarm of three managers, the registry, the lab's
images pushed): **{cold:.1f} s**; again on a healthy cluster (the images pushed again): **{warm:.1f} s**.
Resident memory of each node's processes (engine, containerd, shims, its tasks) and of the registry:

| part | idle | with one demo task per node |
|---|---:|---:|
{rows}
| total | {sum(idle.values()):.0f} MiB | {sum(busy.values()):.0f} MiB |
"""
    update_section("cluster-cost", body)
    print(body)


if __name__ == "__main__":
    main()
