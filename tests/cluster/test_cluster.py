"""swarmshift on a real three-node Swarm: images by tag, egress, metrics from every node, the docker source's limit, quorum loss.

The cluster is `make cluster` (lab/cluster.sh): three Docker Engines, each in network namespaces
of its own at 10.210.0.1N, all managers. The daemons under test run on the host against node 1's
engine; what they see and do is asserted as an operator would see it: replicas, events, /readyz.
Load goes only to the nodes' own addresses (host-mode ports), bounded in count and time.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from tests.support import lab
from tests.support.cluster import NODES, REGISTRY, image, socket_url
from tests.support.failover import scale_up_across_nodes
from tests.support.fixtures_prom import Prometheus
from tests.support.swarmshift_proc import SWARMSHIFT

DEMO = image("swarmshift-demo:lab")
ON_NODE1 = {"DOCKER_HOST": socket_url(1)}


def _event(daemon, name: str, timeout: float) -> dict:
    """The first `name` event of a daemon's JSON log, waited for."""
    return lab.wait_for(f"{daemon.name}: {name}", lambda: (daemon.events(name) or [None])[0], timeout, interval=0.2)


def spread(cswarm, stem: str, replicas: int = 3, **kwargs):
    """A demo service of `replicas` tasks, pulled by tag from the cluster's registry, one per node."""
    svc = cswarm.service(stem, image=DEMO, replicas=replicas, **kwargs)
    return svc.name


def test_three_managers_pull_by_tag_and_overlay_addresses_never_leave_the_machine(cluster, cswarm):
    states = cluster.managers()
    assert sorted(states) == ["ssc-node1", "ssc-node2", "ssc-node3"], states
    assert all(s.startswith("ready reachable") for s in states.values()), states
    assert sum(s.endswith("leader") for s in states.values()) == 1, states

    net = cswarm.network("ov")
    name = spread(cswarm, "tag", networks=[net])
    assert cluster.tasks_by_node(name) == {"ssc-node1": 1, "ssc-node2": 1, "ssc-node3": 1}
    for n in NODES:  # each engine pulled the image from the registry, by its tag
        pulled = cluster.client(n).images.get(DEMO)
        assert any(d.startswith(f"{REGISTRY}/swarmshift-demo@sha256:") for d in pulled.attrs["RepoDigests"]), n

    # From node 1, every task answers over the overlay; an overlay-pool address outside it is
    # REJECTed at the node's edge at once instead of leaving by the default route.
    probe = """
import socket, time, urllib.request
ips = sorted({a[4][0] for a in socket.getaddrinfo("tasks.NAME", 8000)})
print(len(ips), all(b"version" in urllib.request.urlopen(f"http://{ip}:8000/version", timeout=3).read() for ip in ips))
t = time.monotonic()
try:
    socket.create_connection(("10.202.255.254", 80), timeout=5); print("connected")
except OSError as err:
    print(type(err).__name__, round(time.monotonic() - t, 2))
""".replace("NAME", name)
    out = cluster.client(1).containers.run(DEMO, ["python3", "-c", probe], network=net, remove=True,
                                           labels={lab.LABEL: lab.OWNER}).decode().split()
    assert out[:2] == ["3", "True"], out
    assert out[2] == "ConnectionRefusedError" and float(out[3]) < 2, out
    for n in NODES:
        for chain in ("OUTPUT", "DOCKER-USER"):
            rules = subprocess.run(["ip", "netns", "exec", f"ssc-node{n}", "iptables", "-S", chain],
                                   capture_output=True, text=True, check=True).stdout
            assert f"-A {chain} -d {lab.CLUSTER_POOL} -o eth0 -j REJECT" in rules, (n, chain, rules)


def test_the_docker_stats_source_holds_a_service_whose_tasks_it_cannot_all_see(cluster, cswarm, tmp_path):
    name = spread(cswarm, "stats", cpu_limit=0.2, labels={
        "swarmshift.autoscale": "true", "swarmshift.autoscale.max": "6", "swarmshift.autoscale.cpu": "50"})
    config = tmp_path / "autoscaler.yml"
    config.write_text(f"selector: {lab.LABEL}={lab.OWNER}\nsource: docker\n")
    done = subprocess.run([SWARMSHIFT, "autoscaler", "plan", "--config", str(config), "--json"],
                          capture_output=True, text=True, timeout=120, env={**os.environ, **ON_NODE1})
    assert done.returncode == 0, done.stdout + done.stderr
    [row] = [r for r in json.loads(done.stdout) if r["service"] == name]
    assert sorted(row["unseen_nodes"]) == ["ssc-node2", "ssc-node3"], row
    assert row["skipped"].startswith("missing data: tasks on"), row
    assert "ssc-node2" in done.stderr and "ssc-node3" in done.stderr, done.stderr


@pytest.fixture
def cluster_prometheus(tmp_path):
    prom = Prometheus(tmp_path / "prometheus", lab.free_port())
    try:
        prom.start()
        yield prom
    finally:
        prom.close()


@pytest.mark.heavy  # burns CPU on every node
def test_cpu_from_three_cadvisors_scales_a_spread_service_on_the_sum_over_its_tasks(
        cluster, cswarm, cluster_prometheus, autoscaler_proc):
    seen = scale_up_across_nodes(cluster, cswarm, cluster_prometheus, lambda config: autoscaler_proc(config, env=ON_NODE1))
    event, cpu = seen.event, seen.cpu
    print(f"\ncluster: {event['service']} scaled {event['from']} -> {event['to']} on cpu {cpu['value']:.0f}% of the "
          f"limit (target {cpu['target']:.0f}%) {seen.seconds:.1f}s after the load began, load "
          f"{[r.sent for r in seen.loads]} requests per node")
    assert (event["from"], event["direction"]) == (3, "up"), event
    # The sum over three tasks on three nodes: about 80 % of each limit, not a third of it.
    assert 55 < cpu["value"] <= 110, cpu
    assert all(r.statuses.get(200, 0) > 0 for r in seen.loads), [r.statuses for r in seen.loads]


def test_quorum_loss_is_reported_writes_nothing_and_both_daemons_resume(cluster, cswarm, autoscaler_proc,
                                                                      bluegreen_proc, tmp_path):
    token = tmp_path / "token"
    token.write_text("t0ken")
    name = spread(cswarm, "quorum", replicas=2, labels={
        "swarmshift.autoscale": "true", "swarmshift.autoscale.max": "5", "swarmshift.autoscale.mode": "alert"})
    scaler = autoscaler_proc({"interval": 1, "token_file": str(token), "source": "docker"}, env=ON_NODE1)
    (tmp_path / "dynamic").mkdir()
    controller = bluegreen_proc({"selector": f"{lab.LABEL}={lab.OWNER}", "reconcile_interval": 1,
                                 "router": {"kind": "traefik-file", "traefik": {"dynamic_dir": str(tmp_path / "dynamic")}}},
                                env=ON_NODE1)
    controller.wait_event("controller_reconciled", 60)
    lab.wait_for("the autoscaler ready", lambda: scaler.get("/readyz")[0] == 200, 30)
    auth = {"Authorization": "Bearer t0ken", "Content-Type": "application/json"}

    def alert(starts_at: str) -> bytes:
        return json.dumps({"version": "4", "status": "firing", "receiver": "swarmshift", "alerts": [{
            "status": "firing", "startsAt": starts_at, "fingerprint": "9f8e7d6c",
            "labels": {"alertname": "NeedsMore", "swarmshift_action": "scale_up", "service": name}}]}).encode()

    version = cluster.client(1).api.inspect_service(name)["Version"]["Index"]
    lost = time.monotonic()
    cluster.stop(2)
    cluster.stop(3)
    try:
        for daemon in (scaler, controller):
            _event(daemon, "swarm_no_quorum", 60)
        for daemon in (scaler, controller):
            code, body = daemon.get("/readyz")
            assert code == 503 and json.loads(body)["swarm"] == "no_quorum", (code, body)
            assert daemon.get("/healthz")[0] == 200
        # An alert asking for a scale meanwhile: refused for now (503, so Alertmanager retries), nothing written.
        status, reply = scaler.request("POST", "/v1/alerts", alert("2026-12-01T12:00:00.000Z"), auth)
        assert status == 503, reply
        time.sleep(3)
        assert len(scaler.events("swarm_no_quorum")) == 1 and len(controller.events("swarm_no_quorum")) == 1
    finally:
        cluster.start(2, 3)
    for daemon in (scaler, controller):
        restored = _event(daemon, "swarm_quorum_restored", 90)
    back = time.monotonic() - lost
    assert cluster.client(1).api.inspect_service(name)["Version"]["Index"] == version, "written without quorum"
    lab.wait_for("the autoscaler ready again", lambda: scaler.get("/readyz")[0] == 200, 30)
    # The alert re-sent once quorum is back acts, exactly once.
    status, reply = scaler.request("POST", "/v1/alerts", alert("2026-12-01T12:00:00.000Z"), auth)
    assert status == 200 and json.loads(reply)["results"][0]["outcome"] == "scaled", reply
    status, reply = scaler.request("POST", "/v1/alerts", alert("2026-12-01T12:00:00.000Z"), auth)
    assert status == 200 and json.loads(reply)["results"][0]["outcome"] != "scaled", reply
    assert cswarm.replicas(name) == 3
    print(f"\nquorum: lost and back in {back:.1f}s (restored after {restored.get('seconds')}s of no quorum)")


def _alert(service: str, starts_at: str, step: int = 1) -> bytes:
    return json.dumps({"version": "4", "status": "firing", "receiver": "swarmshift", "alerts": [{
        "status": "firing", "startsAt": starts_at, "fingerprint": f"fp-{service}",
        "labels": {"alertname": "NeedsMore", "swarmshift_action": "scale_up", "service": service,
                   "step": str(step)}}]}).encode()


def test_a_node_lost_during_a_scale_up_leaves_the_count_reached_on_the_others_once_and_steady(
        cluster, cswarm, autoscaler_proc, tmp_path):
    token = tmp_path / "token"
    token.write_text("t0ken")
    auth = {"Authorization": "Bearer t0ken", "Content-Type": "application/json"}
    name = spread(cswarm, "grow", labels={"swarmshift.autoscale": "true", "swarmshift.autoscale.max": "6",
                                          "swarmshift.autoscale.mode": "alert"})
    scaler = autoscaler_proc({"interval": 2, "token_file": str(token), "source": "docker"}, env=ON_NODE1)
    lab.wait_for("the autoscaler ready", lambda: scaler.get("/readyz")[0] == 200, 30)
    started = time.monotonic()
    status, reply = scaler.request("POST", "/v1/alerts", _alert(name, "2026-12-01T13:00:00.000Z", step=2), auth)
    assert status == 200 and json.loads(reply)["results"][0]["outcome"] == "scaled", reply
    cluster.stop(3)  # node 3 held one of the three tasks, and was given one of the two new ones
    try:
        lab.wait_for("5 tasks running on node1 and node2", lambda: sum(
            n for host, n in cluster.tasks_by_node(name).items() if host != "ssc-node3") == 5, 90, interval=1)
        reached = time.monotonic() - started
        # The alert re-sent (Alertmanager's repeat) changes nothing: one scale, to 5.
        status, reply = scaler.request("POST", "/v1/alerts", _alert(name, "2026-12-01T13:00:00.000Z", step=2), auth)
        assert status == 200 and json.loads(reply)["results"][0]["outcome"] != "scaled", reply
    finally:
        cluster.start(3)
    lab.wait_for("node3 back and Ready", cluster.healthy, 90, interval=1)
    time.sleep(6)  # the node is back: three autoscaler loops, and nothing moves
    assert cswarm.replicas(name) == 5
    assert [(e["from"], e["to"]) for e in scaler.events("service_scaled", service=name)] == [(3, 5)]
    assert sum(cluster.tasks_by_node(name).values()) == 5
    print(f"\nnode loss during a scale-up: 5 tasks running on the two nodes left {reached:.1f}s after the alert")
