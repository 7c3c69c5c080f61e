"""Nodes and managers dying under swarmshift on the three-node cluster: during a deploy, under the controller, under the autoscaler.

Here both daemons run as Swarm services on the cluster, as in docker-stack.yml, pulled from its
registry by tag: the controller with the Traefik HTTP provider (Traefik polls it over the
overlay, so either may run on any node), the autoscaler reading a real Prometheus on the host's
bridge address. Traefik is pinned to node 1 and answers users there; nodes die by
`Cluster.stop`, which kills their engine and every process of it at once. What is asserted is
what an operator and the users see: the phase and the routing reached, the answers users got,
and the side effects (switches, scales, history entries) counted once.
"""

from __future__ import annotations

import time

import pytest

from lab.common import json_lines
from tests.support import lab
from tests.support.bluegreen import derived_image, wait_phase
from tests.support.cluster import image, node_ip, publish
from tests.support.daemon_service import autoscaler_service
from tests.support.fixtures_prom import Prometheus
from tests.support.knob import Knob
from tests.support.traefik import ControllerService, TraefikStack

ON_NODE1 = "node.hostname==ssc-node1"
OFF_NODE1 = "node.hostname!=ssc-node1"
ENTRY = node_ip(1)  # Traefik's published ports, where users' requests go
BRIDGE = "10.210.0.1"  # the host on the cluster's bridge: where tasks on the nodes reach its Prometheus


@pytest.fixture(scope="module")
def releases(docker_client, demo_image) -> dict[str, str]:
    """v1 (the demo image) and two later releases, in the cluster's registry."""
    out = {"v1": image("swarmshift-demo:lab")}
    for version in ("v2", "v3"):
        out[version] = publish(derived_image(docker_client, f"swarmshift-bluegreen-test:{version}",
                                             {"APP_VERSION": version}))
    return out


def traefik_stack(cswarm, tmp_path, releases, **kwargs) -> TraefikStack:
    """An app behind Traefik's HTTP provider, Traefik on node 1 (blue v1 × 1 unless told)."""
    return TraefikStack(cswarm, tmp_path, releases, provider="http", address=ENTRY, blue_replicas=1,
                        traefik_image=image("swarmshift-traefik:lab"), traefik_constraints=(ON_NODE1,), **kwargs)


def controller(cluster, stack: TraefikStack, constraint: str, **overrides) -> ControllerService:
    daemon = ControllerService(stack, stack.config(**overrides), image=image("swarmshift:lab"),
                               constraints=(constraint,), engines=cluster.engines)
    daemon.start()
    daemon.wait_event("controller_reconciled", 60)
    lab.wait_for("Traefik to serve blue (v1)", lambda: stack.serves("v1"), 60)
    return daemon


def host_of(cluster, service: str) -> str:
    """The one node running `service`'s task."""
    [host] = lab.wait_for(f"{service} running on one node", lambda: list(cluster.tasks_by_node(service)) or None, 60)
    return host


def deploy(daemon, app: str, image_ref: str) -> str:
    code, body = daemon.api("POST", f"/v1/apps/{app}/deploy", {"image": image_ref})
    assert code == 202, body
    return body["deploy"]["id"]


def test_a_node_lost_in_waiting_or_in_verifying_leaves_users_on_a_color_with_running_tasks(
        cluster, cswarm, tmp_path, releases):
    stack = traefik_stack(cswarm, tmp_path, releases, color_constraints=(OFF_NODE1,))
    # healthy_threshold 5: Waiting lasts five probe rounds at least, long enough to kill a node in it.
    daemon = controller(cluster, stack, ON_NODE1, healthy_threshold=5, verification_window="10s", wait_timeout="90s")
    app = stack.app
    blue_host = host_of(cluster, stack.services["blue"])
    load = stack.load(rate=20, seconds=240).start()
    try:
        # 1. Waiting: green's task is placed on the other node (blue's is paused: it keeps its
        # task, takes no new one), and that node dies before green is healthy.
        cluster.set_availability(blue_host, "pause")
        first = deploy(daemon, app, releases["v2"])
        wait_phase(daemon, app, {"Waiting"}, 60, operation=first, interval=0.1)
        green_host = host_of(cluster, stack.services["green"])
        assert green_host != blue_host, (green_host, blue_host)
        cluster.set_availability(blue_host, "active")
        killed = time.monotonic()
        cluster.stop(cluster.node_of(green_host))
        view = wait_phase(daemon, app, {"Stable", "Failed", "RolledBack"}, 150, operation=first)
        waiting_took = time.monotonic() - killed
        during_waiting = load.result.failed
        # Swarm rescheduled green on blue's node, and the deploy completed; users never left blue
        # until green had its running, healthy task there.
        assert (view["phase"], view["active"]) == ("Stable", "green"), view
        assert cluster.tasks_by_node(stack.services["green"]) == {blue_host: 1}
        assert during_waiting == 0, load.result
        lab.wait_for("Traefik to serve green (v2)", lambda: stack.serves("v2"), 30)
        cluster.heal()

        # 2. Verifying: blue gets v3 on the node that came back (green's node is paused), and
        # that node dies while users are on blue.
        cluster.set_availability(blue_host, "pause")
        second = deploy(daemon, app, releases["v3"])
        wait_phase(daemon, app, {"Verifying"}, 90, operation=second, interval=0.1)
        target_host = host_of(cluster, stack.services["blue"])
        assert target_host != blue_host, (target_host, blue_host)
        cluster.set_availability(blue_host, "active")
        before = load.result.failed
        killed = time.monotonic()
        cluster.stop(cluster.node_of(target_host))
        view = wait_phase(daemon, app, {"Stable", "RolledBack"}, 120, operation=second)
        verifying_took = time.monotonic() - killed
        active = stack.services[view["active"]]
        # Either way users end on a color with a running task, and get its answers.
        assert sum(cluster.tasks_by_node(active).values()) >= 1, view
        want = "v3" if view["phase"] == "Stable" else "v2"
        lab.wait_for(f"Traefik to serve {view['active']} ({want})", lambda: stack.serves(want, count=20), 60)
    finally:
        result = load.stop()
        cluster.heal()
    lost = result.failed - before
    print(f"\nnode loss in Waiting: deploy {first} Stable on the other node {waiting_took:.1f}s after the kill, "
          f"0 of {result.sent} requests failed; in Verifying: {view['phase']} {verifying_took:.1f}s after the kill, "
          f"{lost} requests failed (the dead node's in-flight and until the rollback)")
    # One switch per deploy, and one rollback if it rolled back: nothing repeated.
    assert [e["deploy"] for e in daemon.events("switched", app=app)] == [first, second]
    assert len(daemon.events("rollback_started", app=app)) == (view["phase"] == "RolledBack")


def test_the_controller_fails_over_to_another_manager_mid_verification_and_finishes_once(
        cluster, cswarm, tmp_path, releases):
    stack = traefik_stack(cswarm, tmp_path, releases, color_constraints=(ON_NODE1,))
    daemon = controller(cluster, stack, OFF_NODE1, verification_window="15s")
    app = stack.app
    load = stack.load(rate=20, seconds=180).start()
    try:
        deploy_id = deploy(daemon, app, releases["v2"])
        wait_phase(daemon, app, {"Verifying"}, 60, operation=deploy_id, interval=0.1)
        first_host = host_of(cluster, daemon.service_name)
        killed = time.monotonic()
        cluster.stop(cluster.node_of(first_host))
        moved_to = daemon.follow(timeout=120)
        answered = time.monotonic() - killed
        resumed = wait_phase(daemon, app, {"Verifying", "Stable", "RolledBack"}, 30, operation=deploy_id, interval=0.1)
        resumed_after = time.monotonic() - killed
        view = wait_phase(daemon, app, {"Stable", "RolledBack"}, 60, operation=deploy_id)
        done_after = time.monotonic() - killed
        lab.wait_for("Traefik to serve green (v2)", lambda: stack.serves("v2", count=20), 30)
    finally:
        result = load.stop()
        cluster.heal()
    assert moved_to != node_ip(cluster.node_of(first_host)), moved_to
    assert resumed["phase"] == "Verifying", resumed  # resumed from the labels, in the phase it was in
    assert (view["phase"], view["active"], view["result"]) == ("Stable", "green", "succeeded"), view
    # Traefik kept the routing it had polled while no controller answered: no user saw the move.
    assert result.failed == 0, result
    # The new controller switched nothing again, and the release is in the history once.
    newest = _after_restart(daemon)
    assert any(e.get("event") == "deploy_stable" and e.get("deploy") == deploy_id for e in newest), newest[-5:]
    assert not [e for e in newest if e.get("event") in ("switched", "deploy_started", "rollback_started")]
    code, history = daemon.api("GET", f"/v1/apps/{app}/history")
    assert code == 200 and [(r["image"], r["result"]) for r in history["releases"]] == [
        (releases["v2"], "Succeeded")], history
    print(f"\ncontroller failover: {first_host} killed in Verifying; the controller answered on {moved_to} "
          f"{answered:.1f}s later, reported the deploy Verifying at {resumed_after:.1f}s and Stable at "
          f"{done_after:.1f}s; {result.sent} user requests, 0 failed")


def _after_restart(daemon) -> list[dict]:
    """The log lines of the controller's newest task (the one Swarm started after the failover)."""
    containers = sorted(daemon._containers(), key=lambda c: c.attrs["Created"])
    return json_lines(containers[-1:])


def test_the_autoscaler_fails_over_with_its_cooldown_and_scales_once_after_it(cluster, cswarm, tmp_path):
    knob = Knob()
    prometheus = Prometheus(tmp_path / "prometheus", lab.free_port(), host=BRIDGE)
    try:
        prometheus.start()
        prometheus.add_target("knob", knob.address)
        cooldown = 45
        name = cswarm.service("cool", image=image("swarmshift-demo:lab"), constraints=[ON_NODE1], labels={
            "swarmshift.autoscale": "true", "swarmshift.autoscale.max": "5", "swarmshift.autoscale.query": "knob",
            "swarmshift.autoscale.query.target": "10", "swarmshift.autoscale.cooldown": f"{cooldown}s"}).name
        scaler = autoscaler_service(cswarm, tmp_path / "autoscaler", {
            "interval": 1, "prometheus": {"url": prometheus.url},
            "queries": {"knob": 'max(swarmshift_test_load{service="{{service}}"})'}},
            image=image("swarmshift:lab"), constraints=[OFF_NODE1], engines=cluster.engines)
        scaler.start()
        knob.set(name, 20)
        lab.wait_for("the first scale, 1 -> 2", lambda: cswarm.replicas(name) == 2, 60, interval=0.2)
        scaled_at = time.monotonic()
        first_host = host_of(cluster, scaler.service_name)
        knob.set(name, 40)  # asks for 4, but the cooldown holds it
        killed = time.monotonic()
        cluster.stop(cluster.node_of(first_host))
        moved_to = scaler.follow(timeout=120)
        answered = time.monotonic() - killed
        held = lab.wait_for("the new autoscaler to hold on the cooldown", lambda: [
            e for e in _after_restart(scaler) if e.get("event") == "service_held" and e.get("service") == name
            and e.get("reason") == "cooldown"], 60, interval=0.5)
        looped = time.monotonic() - killed
        assert cswarm.replicas(name) == 2, "scaled during the cooldown"
        lab.wait_for("the scale after the cooldown, 2 -> 4", lambda: cswarm.replicas(name) == 4, cooldown + 30,
                     interval=0.2)
        again = time.monotonic() - scaled_at
        time.sleep(3)
    finally:
        knob.close()
        prometheus.close()
        cluster.heal()
    assert moved_to != node_ip(cluster.node_of(first_host)), moved_to
    assert again >= cooldown - 1.5, again
    assert [(e["from"], e["to"]) for e in _after_restart(scaler) if e.get("event") == "service_scaled"
            and e.get("service") == name] == [(2, 4)]
    assert cswarm.replicas(name) == 4
    print(f"\nautoscaler failover: {first_host} killed; the autoscaler answered on {moved_to} {answered:.1f}s later, "
          f"held on the cooldown at {looped:.1f}s ({held[0].get('detail', '')}), scaled 2 -> 4 {again:.1f}s after "
          f"the first scale (cooldown {cooldown}s)")
