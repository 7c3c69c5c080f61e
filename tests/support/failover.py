"""The cluster's timed scenarios, run once each by the cluster tests (which assert on what they saw) and by bench/cluster_failover.py (which reports the times).

- `scale_up_across_nodes`: CPU load on a service spread over the three nodes, scaled by an
  autoscaler reading three cAdvisors through Prometheus; the time to the first scale-up.
- `controller_failover`: the controller, a Swarm service with Traefik's HTTP provider, loses its
  manager while a deploy is Verifying; the times until it answers on another manager, reports
  the deploy again (resumed from the labels) and ends it.
- `autoscaler_failover`: the autoscaler, a Swarm service, loses its manager during a cooldown;
  the time until it answers and runs its loop again on another manager, and when it scales.

Traefik and the apps run on node 1, which no scenario kills; the daemons run off it, so that
the node that dies is theirs. Users' requests go to Traefik on node 1, bounded in count and time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.load import HostLoad, LoadResult
from tests.support import lab
from tests.support.bluegreen import derived_image, wait_phase
from tests.support.cluster import NODES, Cluster, image, node_ip, publish
from tests.support.daemon_service import AutoscalerService
from tests.support.fixtures_prom import Prometheus
from tests.support.knob import Knob
from tests.support.traefik import ControllerService, TraefikStack

ON_NODE1 = "node.hostname==ssc-node1"
OFF_NODE1 = "node.hostname!=ssc-node1"
ENTRY = node_ip(1)  # Traefik's published ports, where users' requests go
BRIDGE = "10.210.0.1"  # the host on the cluster's bridge: where tasks on the nodes reach its Prometheus
KNOB_QUERY = 'max(swarmshift_test_load{service="{{service}}"})'


def releases(host_client) -> dict[str, str]:
    """v1 (the demo image) and two later releases, built on the host engine and pushed to the cluster's registry."""
    out = {"v1": image("swarmshift-demo:lab")}
    for version in ("v2", "v3"):
        out[version] = publish(derived_image(host_client, f"swarmshift-bluegreen-test:{version}",
                                             {"APP_VERSION": version}))
    return out


def traefik_stack(swarm: lab.LabSwarm, workdir: Path, images: dict[str, str], **kwargs: Any) -> TraefikStack:
    """An app behind Traefik's HTTP provider, Traefik on node 1 (blue v1 × 1 unless told)."""
    return TraefikStack(swarm, workdir, images, provider="http", address=ENTRY, blue_replicas=1,
                        traefik_image=image("swarmshift-traefik:lab"), traefik_constraints=(ON_NODE1,), **kwargs)


def controller(cluster: Cluster, stack: TraefikStack, constraint: str, **overrides: Any) -> ControllerService:
    """The controller as a Swarm service placed by `constraint`, once it has reconciled and Traefik serves blue."""
    daemon = ControllerService(stack, stack.config(**overrides), image=image("swarmshift:lab"),
                               constraints=(constraint,), engines=cluster.engines)
    daemon.start()
    daemon.wait_event("controller_reconciled", 60)
    lab.wait_for("Traefik to serve blue (v1)", lambda: stack.serves("v1"), 60)
    return daemon


def host_of(cluster: Cluster, service: str) -> str:
    """The one node running `service`'s task."""
    [host] = lab.wait_for(f"{service} running on one node", lambda: list(cluster.tasks_by_node(service)) or None, 60)
    return host


def deploy(daemon: ControllerService, app: str, image_ref: str) -> str:
    code, body = daemon.api("POST", f"/v1/apps/{app}/deploy", {"image": image_ref})
    assert code == 202, body
    return body["deploy"]["id"]


def deploy_away_from(cluster: Cluster, daemon: ControllerService, stack: TraefikStack, image_ref: str, color: str,
                     avoid: str, phase: str) -> tuple[str, str]:
    """Deploy `image_ref` with node `avoid` paused (it keeps its tasks, takes no new one), until `phase`.

    The deploy's color `color` is thereby placed on another node, whose hostname is returned with the deploy's id;
    `avoid` is active again when this returns.
    """
    cluster.set_availability(avoid, "pause")
    try:
        deploy_id = deploy(daemon, stack.app, image_ref)
        wait_phase(daemon, stack.app, {phase}, 90, operation=deploy_id, interval=0.1)
        host = host_of(cluster, stack.services[color])
    finally:
        cluster.set_availability(avoid, "active")
    assert host != avoid, (color, host, avoid)
    return deploy_id, host


@dataclass
class ScaleUp:
    event: dict[str, Any]  # the autoscaler's service_scaled
    cpu: dict[str, Any]  # its CPU metric: value and target, in % of the limit
    seconds: float  # from the load's start to the scale
    loads: list[LoadResult]  # per node


def scale_up_across_nodes(cluster: Cluster, swarm: lab.LabSwarm, prometheus: Prometheus,
                          start_autoscaler: Callable[[dict[str, Any]], Any]) -> ScaleUp:
    """A 3-task service, one per node, under CPU load on every node; the autoscaler's first scale-up."""
    address, cadvisor = lab.cadvisor_service(cluster.client(1), lab.stack_cadvisor_args(),
                                             image=image("swarmshift-cadvisor:lab"), host=node_ip(1))
    swarm._services.append(cadvisor)
    port = address.rsplit(":", 1)[1]
    for n in NODES:
        prometheus.add_target("cadvisor", f"{node_ip(n)}:{port}")
    web = lab.free_port()
    name = swarm.service("cpu", image=image("swarmshift-demo:lab"), replicas=3, cpu_limit=0.2, publish={web: 8000},
                         labels={"swarmshift.autoscale": "true", "swarmshift.autoscale.max": "6",
                                 "swarmshift.autoscale.cpu": "50"}).name
    label = "container_label_com_docker_swarm_service_name"
    lab.wait_for("the service's CPU series from the three cAdvisors", lambda: len(prometheus.query(
        f'count by (instance) (container_cpu_usage_seconds_total{{{label}="{name}"}})')) == 3, 60, interval=1)
    daemon = start_autoscaler({"interval": 5, "prometheus": {"url": prometheus.url, "rate_window": lab.RATE_WINDOW}})
    # 8 requests/s of 100 ms burns per node: each task busy 80 % of the time at its 0.2-CPU limit.
    started = time.monotonic()
    loads = [HostLoad(web, "/burn?ms=100", rate=8, max_seconds=90, max_requests=720, workers=2,
                      address=node_ip(n)).start() for n in NODES]
    try:
        event = lab.wait_for("a scale-up", lambda: daemon.events("service_scaled", service=name), 80, interval=0.5)[0]
        took = time.monotonic() - started
    finally:
        results = [load.stop() for load in loads]
    cpu = next(m for m in event["metrics"] if m["metric"] == "cpu")
    return ScaleUp(event, cpu, took, results)


@dataclass
class ControllerFailover:
    deploy_id: str
    killed_host: str  # the manager that died, which ran the controller
    moved_to: str  # the address of the node that runs it now
    answered: float  # seconds from the kill until it answered /healthz there
    rescheduled: float  # seconds from the kill until Swarm created its new task's container
    resumed: dict[str, Any]  # the first status it gave of the deploy
    resumed_after: float
    final: dict[str, Any]  # the deploy's end (Stable or RolledBack)
    done_after: float
    users: LoadResult  # requests through Traefik from before the deploy until after it ended
    newest: list[dict[str, Any]]  # the new task's log lines
    history: dict[str, Any]  # GET /v1/apps/{app}/history at the end
    v2: str  # the image deployed


def controller_failover(cluster: Cluster, swarm: lab.LabSwarm, workdir: Path, images: dict[str, str],
                        window: str = "15s") -> ControllerFailover:
    """Deploy v2; once it is Verifying (for `window`), kill the manager running the controller; follow it to its end."""
    stack = traefik_stack(swarm, workdir, images, color_constraints=(ON_NODE1,))
    daemon = controller(cluster, stack, OFF_NODE1, verification_window=window)
    app = stack.app
    load = stack.load(rate=20, seconds=180).start()
    try:
        deploy_id = deploy(daemon, app, images["v2"])
        wait_phase(daemon, app, {"Verifying"}, 60, operation=deploy_id, interval=0.1)
        first_host = host_of(cluster, daemon.service_name)
        killed, killed_wall = time.monotonic(), time.time()
        cluster.stop(cluster.node_of(first_host))
        moved_to = daemon.follow(timeout=120)
        answered = time.monotonic() - killed
        rescheduled = daemon.newest_created() - killed_wall
        resumed = wait_phase(daemon, app, {"Verifying", "Stable", "RolledBack"}, 30, operation=deploy_id,
                             interval=0.1)
        resumed_after = time.monotonic() - killed
        final = wait_phase(daemon, app, {"Stable", "RolledBack"}, 60, operation=deploy_id)
        done_after = time.monotonic() - killed
        lab.wait_for("Traefik to serve green (v2)", lambda: stack.serves("v2", count=20), 30)
    finally:
        users = load.stop()
        cluster.heal()
    code, history = daemon.api("GET", f"/v1/apps/{app}/history")
    assert code == 200, history
    return ControllerFailover(deploy_id, first_host, moved_to, answered, rescheduled, resumed, resumed_after, final, done_after,
                              users, daemon.newest_lines(), history, images["v2"])


@dataclass
class AutoscalerFailover:
    cooldown: float
    killed_host: str
    moved_to: str
    answered: float  # seconds from the kill until it answered /healthz on another manager
    rescheduled: float  # seconds from the kill until Swarm created its new task's container
    held: dict[str, Any]  # its first service_held (cooldown) there
    looped: float  # seconds from the kill until that first decision
    held_replicas: int  # the replicas when it held
    again: float  # seconds from the first scale to the next
    newest: list[dict[str, Any]]  # the new task's log lines
    service: str
    replicas: int  # at the end


def autoscaler_failover(cluster: Cluster, swarm: lab.LabSwarm, workdir: Path, cooldown: float = 45) -> AutoscalerFailover:
    """Scale 1 -> 2 on a hand-turned gauge, ask for 4 in the cooldown, kill the autoscaler's manager; when does 4 come?"""
    knob = Knob()
    prometheus = Prometheus(workdir / "prometheus", lab.free_port(), host=BRIDGE)
    try:
        prometheus.start()
        prometheus.add_target("knob", knob.address)
        name = swarm.service("cool", image=image("swarmshift-demo:lab"), constraints=[ON_NODE1], labels={
            "swarmshift.autoscale": "true", "swarmshift.autoscale.max": "5", "swarmshift.autoscale.query": "knob",
            "swarmshift.autoscale.query.target": "10", "swarmshift.autoscale.cooldown": f"{cooldown:g}s"}).name
        scaler = AutoscalerService(swarm, workdir / "autoscaler", {
            "interval": 1, "prometheus": {"url": prometheus.url}, "queries": {"knob": KNOB_QUERY}},
            image=image("swarmshift:lab"), constraints=[OFF_NODE1], engines=cluster.engines)
        scaler.start()
        knob.set(name, 20)
        lab.wait_for("the first scale, 1 -> 2", lambda: swarm.replicas(name) == 2, 60, interval=0.2)
        scaled_at = time.monotonic()
        first_host = host_of(cluster, scaler.service_name)
        knob.set(name, 40)  # asks for 4, but the cooldown holds it
        killed, killed_wall = time.monotonic(), time.time()
        cluster.stop(cluster.node_of(first_host))
        moved_to = scaler.follow(timeout=120)
        answered = time.monotonic() - killed
        rescheduled = scaler.newest_created() - killed_wall
        [held] = lab.wait_for("the new autoscaler to hold on the cooldown", lambda: [
            e for e in scaler.newest_lines() if e.get("event") == "service_held" and e.get("service") == name
            and e.get("reason") == "cooldown"][:1], 60, interval=0.5)
        looped = time.monotonic() - killed
        held_replicas = swarm.replicas(name)
        lab.wait_for("the scale after the cooldown, 2 -> 4", lambda: swarm.replicas(name) == 4, cooldown + 30,
                     interval=0.2)
        again = time.monotonic() - scaled_at
        time.sleep(3)  # time for a second scale, which must not come
    finally:
        knob.close()
        prometheus.close()
        cluster.heal()
    return AutoscalerFailover(cooldown, first_host, moved_to, answered, rescheduled, held, looped, held_replicas, again,
                              scaler.newest_lines(), name, swarm.replicas(name))
