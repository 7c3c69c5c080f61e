"""The whole stack, end to end: docker-stack.yml with the lab's override, deployed with `docker stack deploy`.

    docker stack deploy --resolve-image never -c docker-stack.yml -c stack/lab/docker-stack.lab.yml NAME

(plus a generated file that only adds the suite's label to everything; lab/stack.py). One
deployment, under its own stack name and removed at the end, serves the tests below, which run
in file order as a walk through the job, asserted where a user sees it: through Traefik on
127.0.0.1. Both daemons run as Swarm services next to the real Traefik, cAdvisor, Prometheus and
Alertmanager; the operator CLI on the host, pointed at the controller's published port, deploys
a v2 that goes live through a blue→green switch under client traffic without one failed
request, then a broken v3 that its smoke requests stop on Traefik's preview route before the switch; the autoscaler service scales the
active color under load sent through Traefik (bounded in count and time); Alertmanager reaches
both daemons with the token from the Docker secret.
"""

from __future__ import annotations

import os
import time

import pytest

from lab.load import HostLoad
from tests.support import lab
from tests.support.fixtures_prom import post_alert
from tests.support.stack import RELEASES, derived_image, new_stack

# The whole stack under load, its autoscaler scaling on real CPU: in the heavy lane (tests/support/lanes.py).
pytestmark = pytest.mark.heavy

SERVICES = {"autoscaler", "bluegreen", "traefik", "prometheus", "alertmanager", "cadvisor", "grafana",
            "demo-blue", "demo-green"}


@pytest.fixture(scope="module")
def stack(docker_client, demo_image, tmp_path_factory):
    s = new_stack(docker_client, tmp_path_factory.mktemp("stack"))
    try:
        s.deploy()
        took = s.wait_ready(150)
        print(f"\nstack {s.name} deployed and serving through Traefik in {took:.1f}s")
        yield s
    finally:
        problems = s.remove()
        assert not problems, f"could not remove stack {s.name}: {problems}"
        assert not docker_client.api.services(filters={"label": f"com.docker.stack.namespace={s.name}"})


@pytest.fixture(scope="module")
def releases(docker_client, demo_image) -> dict[str, str]:
    return {name: derived_image(docker_client, tag, env) for name, (tag, env) in RELEASES.items()}


def demo_key(stack) -> str:
    """The demo app's key in the controller: the stack scopes the app label (`<stack>_demo`, like Swarm's names)."""
    return f"{stack.name}_demo"


def traefik_weights(stack) -> dict[str, int]:
    """The demo app's weights as Traefik's API reports them loaded (children `<stack>_demo-blue`, `…-green`)."""
    answer = stack.traefik_api(f"/api/http/services/{demo_key(stack)}@file") or {}
    return {s["name"]: s.get("weight", 1) for s in (answer.get("weighted") or {}).get("services") or []}


def test_the_production_stack_runs_both_daemons_and_traefik_routes_the_demo_app(stack, docker_client):
    services = {s["Spec"]["Name"].removeprefix(f"{stack.name}_"): s["Spec"] for s in
                docker_client.api.services(filters={"label": f"com.docker.stack.namespace={stack.name}"})}
    assert set(services) == SERVICES
    assert all(spec["EndpointSpec"]["Mode"] == "dnsrr" for spec in services.values())
    assert services["grafana"]["Mode"]["Replicated"]["Replicas"] == 0  # its image cannot be had here
    assert "Global" in services["cadvisor"]["Mode"]
    gid = str(os.stat("/var/run/docker.sock").st_gid)
    for short in ("autoscaler", "bluegreen"):
        spec = services[short]
        container = spec["TaskTemplate"]["ContainerSpec"]
        assert container["Image"].startswith("swarmshift:lab")
        assert container["User"] == f"10001:{gid}"  # non-root, with the socket's group
        assert [s["SecretName"] for s in container["Secrets"]] == [f"{stack.name}-token"]
        assert spec["Mode"]["Replicated"]["Replicas"] == 1
        assert spec["UpdateConfig"]["Order"] == "stop-first"
        assert spec["Labels"][lab.LABEL] == lab.OWNER
    # Traefik and the controller share the router node (the label the setup put on this one).
    for short in ("traefik", "bluegreen"):
        assert "node.labels.swarmshift.router == true" in services[short]["TaskTemplate"]["Placement"]["Constraints"]
    # Traefik routes the demo app: the controller's file, loaded, all weight on blue.
    assert (stack.serves() or {}).get("color") == "blue"
    assert traefik_weights(stack) == {f"{demo_key(stack)}-blue": 100}


def test_the_cli_deploys_v2_live_through_a_blue_to_green_switch_without_a_failed_request(stack, releases):
    assert (stack.serves() or {}).get("color") == "blue"
    started = time.monotonic()
    load = HostLoad(stack.ports["WEB_PORT"], "/", rate=20, max_seconds=120, max_requests=2400, workers=4).start()
    try:
        done = stack.cli("deploy", "demo", "--image", releases["v2"], "--wait", "--timeout", "120")
    finally:
        result = load.stop()
    took = time.monotonic() - started
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ended Stable" in done.stdout
    print(f"\ndeploy of v2: {took:.1f}s from the CLI's request to Stable; clients: {dict(result.statuses)}, "
          f"{dict(result.colors)}, slowest {result.slowest:.2f}s")
    # What users saw through Traefik: v1 from blue, then v2 from green, and not one failure.
    assert result.failed == 0, (result.statuses, result.errors)
    assert result.colors["blue"] > 0 and result.colors["green"] > 0
    versions = [version for _, _, version in sorted(result.bodies)]
    assert (versions[0], versions[-1]) == ("v1", "v2") and set(versions) == {"v1", "v2"}
    answer = stack.serves()
    assert (answer["version"], answer["color"]) == ("v2", "green")
    assert traefik_weights(stack) == {f"{demo_key(stack)}-green": 100}
    phases = [e["to"] for e in stack.events("bluegreen", "phase_changed", app=demo_key(stack))]
    assert phases == ["Preparing", "Waiting", "PreChecks", "SmokeTests", "Switching", "Verifying", "Stable"]
    assert stack.events("bluegreen", "switched", app=demo_key(stack))
    status = stack.cli("status", "demo")  # the bare name: only this stack has an app `demo`
    assert status.returncode == 0, status.stdout + status.stderr
    assert status.stdout.split("\n")[1].split()[:3] == [demo_key(stack), "green", "Stable"]


def test_a_broken_v3_is_stopped_by_its_smoke_requests_before_any_user_sees_it(stack, releases):
    started = time.monotonic()
    load = HostLoad(stack.ports["WEB_PORT"], "/", rate=20, max_seconds=120, max_requests=2400, workers=4).start()
    try:
        done = stack.cli("deploy", "demo", "--image", releases["v3-broken"], "--wait", "--timeout", "120")
    finally:
        result = load.stop()
    took = time.monotonic() - started
    assert done.returncode == 1, done.stdout + done.stderr
    assert "ended Failed" in done.stdout and "smoke test failed" in done.stdout, done.stdout
    print(f"\ndeploy of the broken v3: {took:.1f}s from the CLI's request to Failed at SmokeTests; clients: "
          f"{dict(result.statuses)}")
    # The stack's smoke requests went to blue through Traefik's preview route: no user got its 5xx.
    [failed] = stack.events("bluegreen", "smoke_failed", app=demo_key(stack))
    assert (failed["path"], failed["status"]) == ("/", 500) and failed["target"].startswith("preview route"), failed
    assert set(result.statuses) == {200} and not result.errors, (result.statuses, result.errors)
    assert {version for _, _, version in result.bodies} == {"v2"}
    phases = [e["to"] for e in stack.events("bluegreen", "phase_changed", app=demo_key(stack))]
    phases = phases[len(phases) - 1 - phases[::-1].index("Preparing"):]
    assert phases == ["Preparing", "Waiting", "PreChecks", "SmokeTests", "Failed"]
    assert traefik_weights(stack) == {f"{demo_key(stack)}-green": 100}
    status = stack.cli("status", "demo")
    assert status.returncode == 1 and "smoke test failed" in status.stdout, status.stdout


def test_prometheus_scrapes_cadvisor_traefik_and_both_daemons_with_the_stack_rules(stack):
    # (After the deploys: by now Prometheus's DNS discovery has found every task.)
    lab.wait_for("every scrape target up", lambda: stack.prometheus_targets() == {
        "cadvisor": {"up"}, "traefik": {"up"}, "swarmshift-autoscaler": {"up"}, "swarmshift-bluegreen": {"up"},
        "prometheus": {"up"}}, 60, interval=1)
    rules = {r["name"] for g in stack.get_json("prometheus", "/api/v1/rules")["data"]["groups"] for r in g["rules"]}
    assert {"SwarmServiceCPUSaturated", "BlueGreenColorErrors"} <= rules
    assert stack.get_json("prometheus", "/api/v1/alertmanagers")["data"]["activeAlertmanagers"]
    # The autoscaler's own query finds the demo app's series by the labels cAdvisor keeps.
    label = "container_label_com_docker_swarm_service_name"
    lab.wait_for("cAdvisor series of demo-green", lambda: stack.query(
        f'container_cpu_usage_seconds_total{{{label}="{stack.service("demo-green")}"}}'), 30, interval=1)
    # Traefik's metrics, which the controller's error-ratio check and BlueGreenColorErrors read,
    # counted the broken v3's 5xx answers on blue (to the smoke requests, on the preview route).
    lab.wait_for("Traefik's 5xx count of demo-blue", lambda: stack.query(
        f'traefik_service_requests_total{{service="{demo_key(stack)}-blue@file",code="500"}} > 0'), 30, interval=1)


def test_the_autoscaler_service_scales_the_active_color_under_load_through_traefik(stack):
    service = stack.service("demo-green")
    before = stack.replicas("demo-green")
    onset = time.monotonic()
    # About 0.8 cores of demand on a 0.5-CPU task with a 60 % target, all of it on the active color.
    with HostLoad(stack.ports["WEB_PORT"], "/burn?ms=100", rate=8, max_seconds=150, max_requests=1200,
                  workers=8) as load:
        lab.wait_for(f"{service} to scale up", lambda: stack.replicas("demo-green") > before, 150, interval=0.5)
    took = time.monotonic() - onset
    print(f"\nscale-up: {took:.1f}s from the load's onset to the new replica count; clients: "
          f"{dict(load.result.statuses)}")
    assert set(load.result.colors) == {"green"}
    # The autoscaler logs its scale just after the write lands: its line may be a moment behind.
    try:
        scaled = lab.wait_for("the autoscaler's service_scaled line", lambda: stack.events(
            "autoscaler", "service_scaled", service=service, direction="up"), 10, interval=0.5)
    except AssertionError:
        pytest.fail("the replica count changed, but not by the autoscaler: "
                    f"{[e for e in stack.logs('autoscaler') if isinstance(e, dict) and e.get('service') == service]} "
                    f"{[e for e in stack.logs('bluegreen') if isinstance(e, dict) and e.get('app') == demo_key(stack)][-12:]}")
    first = scaled[0]
    assert first["from"] == before and first["to"] > before and "alert" not in first
    [cpu] = [m for m in first["metrics"] if m["metric"] == "cpu"]
    assert cpu["value"] > cpu["target"] * 1.1, cpu
    lab.wait_for("the new replicas to run", lambda: stack.running(service) >= first["to"], 60, interval=0.5)


def test_alertmanager_reaches_both_daemons_with_the_token_from_the_secret(stack):
    service = stack.service("demo-green")
    post_alert(stack.alertmanager_url, {"alertname": "StackE2EScaleUp", "swarmshift_action": "scale_up",
                                        "service": service})
    # The key, as the stack's Prometheus rules derive swarmshift_app from Traefik's `<key>-<color>@file`.
    post_alert(stack.alertmanager_url, {"alertname": "StackE2EAppAlert", "swarmshift_app": demo_key(stack)})

    def autoscaler_acted():  # scaled, or held at max after the load test: either way it was heard
        return (stack.events("autoscaler", "service_scaled", alert="StackE2EScaleUp")
                or stack.events("autoscaler", "alert_held", alert="StackE2EScaleUp"))

    lab.wait_for("the autoscaler to act on the alert", autoscaler_acted, 30, interval=1)
    # At rest, with rollback_on_alert: verification, the controller hears the alert and leaves the app be.
    lab.wait_for("the controller to receive the alert", lambda: stack.events(
        "bluegreen", "alert_received", app=demo_key(stack), alert="StackE2EAppAlert"), 30, interval=1)
    assert not stack.events("autoscaler", "http_unauthorized") and not stack.events("bluegreen", "http_unauthorized")
    assert (stack.serves() or {}).get("version") == "v2"
