"""The whole stack, end to end: the lab variant of docker-stack.yml deployed with `docker stack deploy`.

One deployment (its own stack name, labelled for the suite's cleanup, removed at the end) serves
the tests below, which run in file order as a walk through the job: both daemons run as Swarm
services; the operator CLI on the host, pointed at the controller's published port, deploys a v2
that goes live through a blue→green switch, then a broken v3 that is rolled back on its own; the
autoscaler service scales the active color under load sent from a container on the stack's
overlay network (bounded in count and time); Alertmanager reaches both daemons with the token
from the Docker secret. nginx stands in for Traefik and the cAdvisor stand-in for cAdvisor
(stack/lab/docker-stack.lab.yml says why).
"""

from __future__ import annotations

import os
import time
import uuid

import pytest

from tests.support import lab
from tests.support.fixtures_prom import post_alert
from tests.support.load import OverlayLoad
from tests.support.stack import RELEASES, LabStack, derived_image


@pytest.fixture(scope="module")
def stack(docker_client, demo_image, tmp_path_factory):
    s = LabStack(docker_client, f"ssstack{uuid.uuid4().hex[:6]}", {lab.LABEL: lab.OWNER},
                 tmp_path_factory.mktemp("stack"))
    try:
        s.deploy()
        took = s.wait_ready(120)
        print(f"\nstack {s.name} deployed and serving in {took:.1f}s")
        yield s
    finally:
        problems = s.remove()
        assert not problems, f"could not remove stack {s.name}: {problems}"
        assert not docker_client.api.services(filters={"label": f"com.docker.stack.namespace={s.name}"})


@pytest.fixture(scope="module")
def releases(docker_client, demo_image) -> dict[str, str]:
    return {name: derived_image(docker_client, tag, env) for name, (tag, env) in RELEASES.items()}


def test_both_daemons_run_as_swarm_services_scraped_by_prometheus(stack, docker_client):
    gid = str(os.stat("/var/run/docker.sock").st_gid)
    for short in ("autoscaler", "bluegreen"):
        spec = docker_client.api.inspect_service(stack.service(short))["Spec"]
        container = spec["TaskTemplate"]["ContainerSpec"]
        assert container["Image"].startswith("swarmshift:lab")
        assert container["User"] == f"10001:{gid}"  # non-root, with the socket's group
        assert [s["SecretName"] for s in container["Secrets"]] == [f"{stack.name}_swarmshift_token"]
        assert spec["Mode"]["Replicated"]["Replicas"] == 1
        assert spec["UpdateConfig"]["Order"] == "stop-first"
        assert spec["Labels"][lab.LABEL] == lab.OWNER
        [task] = [t for t in docker_client.api.tasks(filters={"service": stack.service(short)})
                  if t["Status"]["State"] == "running"]
        assert task["Spec"]["ContainerSpec"]["Image"] == container["Image"]
    # Prometheus scrapes the stand-in and both daemons, loaded the stack's rules and sees Alertmanager.
    lab.wait_for("every scrape target up", lambda: stack.prometheus_targets() == {
        "cadvisor": {"up"}, "swarmshift-autoscaler": {"up"}, "swarmshift-bluegreen": {"up"}, "prometheus": {"up"}}, 30)
    rules = {r["name"] for g in stack.get_json("prometheus", "/api/v1/rules")["data"]["groups"] for r in g["rules"]}
    assert {"SwarmServiceCPUSaturated", "BlueGreenColorErrors"} <= rules
    assert stack.get_json("prometheus", "/api/v1/alertmanagers")["data"]["activeAlertmanagers"]
    # The autoscaler's own query finds the demo app's series by the labels cAdvisor keeps.
    label = "container_label_com_docker_swarm_service_name"
    lab.wait_for("cAdvisor series of demo-blue", lambda: stack.query(
        f'container_cpu_usage_seconds_total{{{label}="{stack.service("demo-blue")}"}}'), 20)


def test_the_cli_deploys_v2_live_through_a_blue_to_green_switch(stack, releases):
    assert (stack.serves() or {}).get("color") == "blue"
    started = time.monotonic()
    done = stack.cli("deploy", "demo", "--image", releases["v2"], "--wait", "--timeout", "120")
    took = time.monotonic() - started
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ended Stable" in done.stdout
    print(f"\ndeploy of v2: {took:.1f}s from the CLI's request to Stable")
    answer = stack.serves()
    assert (answer["version"], answer["color"]) == ("v2", "green")
    phases = [e["to"] for e in stack.events("bluegreen", "phase_changed", app="demo")]
    assert phases == ["Preparing", "Waiting", "PreChecks", "Switching", "Verifying", "Stable"]
    assert stack.events("bluegreen", "switched", app="demo")
    status = stack.cli("status", "demo")
    assert status.returncode == 0, status.stdout + status.stderr
    assert status.stdout.split("\n")[1].split()[:3] == ["demo", "green", "Stable"]


def test_a_broken_v3_is_rolled_back_automatically(stack, releases):
    started = time.monotonic()
    done = stack.cli("deploy", "demo", "--image", releases["v3-broken"], "--wait", "--timeout", "120")
    took = time.monotonic() - started
    assert done.returncode == 1, done.stdout + done.stderr
    assert "ended RolledBack" in done.stdout and "failure_threshold" in done.stdout
    print(f"\ndeploy of the broken v3: {took:.1f}s from the CLI's request to RolledBack")
    answer = stack.serves()
    assert (answer["version"], answer["color"]) == ("v2", "green")
    # It did go live on blue first: the rollback undid a switch, not a deploy that never switched.
    phases = [e["to"] for e in stack.events("bluegreen", "phase_changed", app="demo")]
    phases = phases[len(phases) - 1 - phases[::-1].index("Preparing"):]
    assert phases == ["Preparing", "Waiting", "PreChecks", "Switching", "Verifying", "RollingBack", "RolledBack"]
    status = stack.cli("status", "demo")
    assert status.returncode == 1 and "rolled-back" in status.stdout, status.stdout


def test_the_autoscaler_service_scales_the_active_color_under_load(stack, docker_client):
    service = stack.service("demo-green")
    before = stack.replicas("demo-green")
    onset = time.monotonic()
    # About 0.8 cores of demand on a 0.5-CPU task with a 50 % target.
    with OverlayLoad(docker_client, stack.network("edge"), service, "/burn?ms=100", rate=8, max_seconds=75,
                     max_requests=600):
        lab.wait_for(f"{service} to scale up", lambda: stack.replicas("demo-green") > before, 75, interval=0.5)
    took = time.monotonic() - onset
    print(f"\nscale-up: {took:.1f}s from the load's onset to the new replica count")
    scaled = stack.events("autoscaler", "service_scaled", service=service, direction="up")
    assert scaled, "the replica count changed, but not by the autoscaler"
    first = scaled[0]
    assert first["from"] == before and first["to"] > before and "alert" not in first
    [cpu] = [m for m in first["metrics"] if m["metric"] == "cpu"]
    assert cpu["value"] > cpu["target"] * 1.1, cpu


def test_alertmanager_reaches_both_daemons_with_the_token_from_the_secret(stack):
    service = stack.service("demo-green")
    post_alert(stack.alertmanager_url, {"alertname": "StackE2EScaleUp", "swarmshift_action": "scale_up",
                                        "service": service})
    post_alert(stack.alertmanager_url, {"alertname": "StackE2EAppAlert", "swarmshift_app": "demo"})

    def autoscaler_acted():  # scaled, or held at max after the load test: either way it was heard
        return (stack.events("autoscaler", "service_scaled", alert="StackE2EScaleUp")
                or stack.events("autoscaler", "alert_held", alert="StackE2EScaleUp"))

    lab.wait_for("the autoscaler to act on the alert", autoscaler_acted, 30, interval=1)
    # At rest, with rollback_on_alert: verification, the controller hears the alert and leaves the app be.
    lab.wait_for("the controller to receive the alert", lambda: stack.events(
        "bluegreen", "alert_received", app="demo", alert="StackE2EAppAlert"), 30, interval=1)
    assert not stack.events("autoscaler", "http_unauthorized") and not stack.events("bluegreen", "http_unauthorized")
    assert (stack.serves() or {}).get("version") == "v2"
