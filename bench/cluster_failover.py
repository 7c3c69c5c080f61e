"""Benchmark: failover on the three-node cluster: a manager's death under each daemon, and the first scale-up of load spread over three nodes.

Run on the lab (as root, after `make cluster`):  .venv/bin/python -m bench.cluster_failover

One run of each scenario of tests/support/failover.py, the same functions the cluster tests
assert on:

- the controller (a Swarm service, Traefik's HTTP provider) loses its manager while a deploy is
  Verifying: the seconds until it answers on another manager, until it reports the deploy again
  (resumed from the labels), and until the deploy is Stable (a fresh verification window, 15 s);
- the autoscaler (a Swarm service) loses its manager during a 45 s cooldown: the seconds until
  it answers on another manager and until its first decision there;
- CPU load on a service with one task per node, read from the three cAdvisors through
  Prometheus by an autoscaler with a 5 s interval: the seconds from the load's start to the
  first scale-up.

Both failovers run twice: at Swarm's default dispatcher heartbeat (5 s), which sets how soon a
dead node's tasks are rescheduled, and at the lab cluster's own (2 s).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker

from bench.report import machine, update_section
from tests.support import cluster as lab_cluster
from tests.support import failover, lab
from tests.support.fixtures_prom import Prometheus
from tests.support.swarmshift_proc import start_autoscaler

DEFAULT_HEARTBEAT = 5.0  # Swarm's (`docker swarm init --dispatcher-heartbeat`)


def row(what: str, runs: dict[float, Any], seconds: Callable[[Any], float]) -> str:
    """A table row: `seconds` of each heartbeat's run, in the heartbeats' order."""
    return f"| {what} | " + " | ".join(f"{seconds(run):.1f}" for run in runs.values()) + " |"


def main() -> None:
    host = docker.from_env(timeout=30)
    cluster = lab_cluster.connect()
    lab.remove_leftovers(cluster.client(1))
    images = failover.releases(host)
    with tempfile.TemporaryDirectory(prefix="bench-failover-") as tmp:
        work = Path(tmp)
        work.chmod(0o755)

        def run(stem: str, scenario):
            swarm = lab.LabSwarm(cluster.client(1), prefix=f"bench{stem}")
            try:
                return scenario(swarm, work / stem)
            finally:
                cluster.heal()
                swarm.client = cluster.client(1)
                swarm.close()

        # Each failover twice: at Swarm's default heartbeat, as users get it, and at the lab's.
        lab_heartbeat = cluster.heartbeat()
        moved, scaler = {}, {}
        try:
            for beat in (DEFAULT_HEARTBEAT, lab_heartbeat):
                cluster.set_heartbeat(beat)
                moved[beat] = run(f"ctl{beat:g}", lambda swarm, path: failover.controller_failover(cluster, swarm, path, images))
                scaler[beat] = run(f"as{beat:g}", lambda swarm, path: failover.autoscaler_failover(cluster, swarm, path))
        finally:
            cluster.set_heartbeat(lab_heartbeat)
        started: list = []

        def spread(swarm, path):
            prometheus = Prometheus(path / "prometheus", lab.free_port())
            try:
                prometheus.start()
                return failover.scale_up_across_nodes(cluster, swarm, prometheus, lambda config: start_autoscaler(
                    path / "autoscaler", config, env={"DOCKER_HOST": lab_cluster.socket_url(1)}, started=started))
            finally:
                for daemon in started:
                    daemon.stop()
                prometheus.close()

        scale = run("cpu", spread)
    cluster.close()
    body = f"""## Lab: failover on three nodes

`.venv/bin/python -m bench.cluster_failover` ({machine()}; one run of each scenario in
tests/support/failover.py, on `make cluster`'s three managers; a node dies as a machine does,
its engine and every process of it killed at once).

| what | {" | ".join(f"heartbeat {b:g} s" for b in moved)} |
|---|{"---:|" * len(moved)}
{row("controller: its manager killed mid-verification → Swarm creates its new task on another manager",
     moved, lambda m: m.rescheduled)}
{row("controller: → it answers there", moved, lambda m: m.answered)}
{row("controller: → it reports the deploy again, resumed from the labels in Verifying", moved, lambda m: m.resumed_after)}
{row("controller: → the deploy is Stable (a fresh 15 s verification window)", moved, lambda m: m.done_after)}
{row("autoscaler: its manager killed in a 45 s cooldown → Swarm creates its new task on another manager",
     scaler, lambda a: a.rescheduled)}
{row("autoscaler: → it answers there", scaler, lambda a: a.answered)}
{row("autoscaler: → its first decision there (held: cooldown)", scaler, lambda a: a.looped)}
{row("autoscaler: the first scale → the next, after the cooldown", scaler, lambda a: a.again)}

| what | seconds |
|---|---:|
| CPU load on one task per node → the first scale-up ({scale.event['from']} → {scale.event['to']}, cpu {scale.cpu['value']:.0f} % of the limit) | {scale.seconds:.1f} |

Users' requests through Traefik during the controller's failovers:
{"; ".join(f"at heartbeat {b:g} s, {m.users.sent} sent and {m.users.failed} failed" for b, m in moved.items())}
(Traefik keeps the routing it polled last while no controller answers).
Most of a failover is Swarm's: a dead manager's tasks are rescheduled only once it is marked
down, after some three missed heartbeats (the first rows); the daemon's own start and first
reconcile take the rest. Swarm's default heartbeat is 5 s (`docker swarm init
--dispatcher-heartbeat`); the lab's cluster uses {lab_heartbeat:g} s to keep the cluster tests short.
"""
    update_section("cluster-failover", body)
    print(body)


if __name__ == "__main__":
    main()
