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

from tests.support import failover as scenario
from tests.support import lab
from tests.support.bluegreen import wait_phase
from tests.support.cluster import node_ip
from tests.support.failover import OFF_NODE1, ON_NODE1, controller, deploy_away_from, host_of, traefik_stack


@pytest.fixture(scope="module")
def releases(docker_client, demo_image) -> dict[str, str]:
    return scenario.releases(docker_client)


@pytest.mark.heavy  # users' load through Traefik
def test_a_node_lost_in_waiting_or_in_verifying_leaves_users_on_a_color_with_running_tasks(
        cluster, cswarm, tmp_path, releases):
    stack = traefik_stack(cswarm, tmp_path, releases, color_constraints=(OFF_NODE1,))
    # healthy_threshold 5: Waiting lasts five probe rounds at least, long enough to kill a node in it.
    daemon = controller(cluster, stack, ON_NODE1, healthy_threshold=5, verification_window="6s", wait_timeout="90s")
    app = stack.app
    blue_host = host_of(cluster, stack.services["blue"])
    load = stack.load(rate=20, seconds=240).start()
    try:
        # 1. Waiting: green's task is placed on the other node (blue's is paused: it keeps its
        # task, takes no new one), and that node dies before green is healthy.
        first, green_host = deploy_away_from(cluster, daemon, stack, releases["v2"], "green", blue_host, "Waiting")
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
        second, target_host = deploy_away_from(cluster, daemon, stack, releases["v3"], "blue", blue_host, "Verifying")
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


@pytest.mark.heavy  # users' load through Traefik
def test_a_rollback_to_a_color_that_lost_its_node_waits_for_its_task_and_users_never_see_it(
        cluster, cswarm, tmp_path, releases):
    stack = traefik_stack(cswarm, tmp_path, releases, color_constraints=(OFF_NODE1,))
    daemon = controller(cluster, stack, ON_NODE1, verification_window="2m")
    app, blue = stack.app, stack.services["blue"]
    blue_host = host_of(cluster, blue)
    load = stack.load(rate=20, seconds=180).start()
    try:
        deploy_id, green_host = deploy_away_from(cluster, daemon, stack, releases["v2"], "green", blue_host, "Verifying")
        # Users are on green; blue's node dies, and green's takes no new task: blue has none anywhere.
        cluster.set_availability(green_host, "pause")
        cluster.stop(cluster.node_of(blue_host))
        lab.wait_for("Swarm to see blue's task gone", lambda: not cluster.tasks_by_node(blue), 60, interval=0.5)
        code, body = daemon.api("POST", f"/v1/apps/{app}/rollback")
        assert code == 202, body
        wait_phase(daemon, app, {"RollingBack"}, 20, operation=deploy_id, interval=0.1)
        time.sleep(3)
        # The rollback waits for a task of blue, and users stay on green, which answers.
        assert daemon.status(app)["phase"] == "RollingBack" and stack.serves("v2", count=20)
        assert any("traffic waits" in (e.get("reason") or "") for e in daemon.events("tick", app=app))
        cluster.set_availability(green_host, "active")  # Swarm puts blue's task there
        view = wait_phase(daemon, app, {"RolledBack"}, 60, operation=deploy_id)
        assert view["active"] == "blue", view
        lab.wait_for("Traefik to serve blue (v1)", lambda: stack.serves("v1", count=20), 30)
    finally:
        result = load.stop()
        cluster.heal()
    # No request failed: the rollback waited for blue's task, then for Traefik's own health check
    # to report it up (the route before that would have met Traefik's 503 "no available server").
    assert result.failed == 0, result
    print(f"\nrollback to a color whose node died: held until its task ran and Traefik saw it up; "
          f"{result.sent} user requests, 0 failed")


@pytest.mark.heavy  # users' load through Traefik
def test_the_controller_fails_over_to_another_manager_mid_verification_and_finishes_once(
        cluster, cswarm, tmp_path, releases):
    seen = scenario.controller_failover(cluster, cswarm, tmp_path, releases, window="8s")
    assert seen.moved_to != node_ip(cluster.node_of(seen.killed_host)), seen.moved_to
    assert seen.resumed["phase"] == "Verifying", seen.resumed  # resumed from the labels, in the phase it was in
    assert (seen.final["phase"], seen.final["active"], seen.final["result"]) == ("Stable", "green", "succeeded")
    # Traefik kept the routing it had polled while no controller answered: no user saw the move.
    assert seen.users.failed == 0, seen.users
    # The new controller switched nothing again, and the release is in the history once.
    assert any(e.get("event") == "deploy_stable" and e.get("deploy") == seen.deploy_id for e in seen.newest)
    assert not [e for e in seen.newest if e.get("event") in ("switched", "deploy_started", "rollback_started")]
    assert [(r["image"], r["result"]) for r in seen.history["releases"]] == [(seen.v2, "Succeeded")], seen.history
    print(f"\ncontroller failover: {seen.killed_host} killed in Verifying; the controller answered on "
          f"{seen.moved_to} {seen.answered:.1f}s later, reported the deploy Verifying at {seen.resumed_after:.1f}s "
          f"and Stable at {seen.done_after:.1f}s; {seen.users.sent} user requests, 0 failed")


def test_the_autoscaler_fails_over_with_its_cooldown_and_scales_once_after_it(cluster, cswarm, tmp_path):
    seen = scenario.autoscaler_failover(cluster, cswarm, tmp_path, cooldown=30)
    assert seen.moved_to != node_ip(cluster.node_of(seen.killed_host)), seen.moved_to
    assert seen.held_replicas == 2, "scaled during the cooldown"
    assert seen.again >= seen.cooldown - 1.5, seen.again
    assert [(e["from"], e["to"]) for e in seen.newest if e.get("event") == "service_scaled"
            and e.get("service") == seen.service] == [(2, 4)]
    assert seen.replicas == 4
    print(f"\nautoscaler failover: {seen.killed_host} killed; the autoscaler answered on {seen.moved_to} "
          f"{seen.answered:.1f}s later, held on the cooldown at {seen.looped:.1f}s ({seen.held.get('detail', '')}), "
          f"scaled 2 -> 4 {seen.again:.1f}s after the first scale (cooldown {seen.cooldown:g}s)")
