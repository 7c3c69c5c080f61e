"""docker-stack.yml itself, deployed on the lab swarm with the lab's override, and every service of it runs.

    docker stack deploy --resolve-image never -c docker-stack.yml -c stack/lab/docker-stack.lab.yml NAME

The Docker CLI parses, interpolates and merges the files, and the engine creates every service,
network, volume, config and secret of them, so mistakes that only the engine sees (a bind source
missing on a node, a bad constraint, a config or secret reference, a volume its user cannot
write) show up here. Nothing is held back but Grafana, whose image cannot be had here (0
replicas): Traefik, cAdvisor, Prometheus, Alertmanager, both daemons and the demo app run with
production's commands, flags, mounts and placement, and a user reaches the app through Traefik.
"""

from __future__ import annotations

import os
import subprocess

import pytest
import yaml

from tests.support import lab
from tests.support.stack import NAMESPACE, OVERRIDE_FILE, ROOT, STACK_FILE, new_stack

PROD = yaml.safe_load(STACK_FILE.read_text())
SERVICES = set(PROD["services"])


@pytest.fixture
def stack(docker_client, demo_image, tmp_path):
    s = new_stack(docker_client, tmp_path, prefix="ssprod")
    try:
        yield s
    finally:
        problems = s.remove()
        assert not problems, problems


def test_the_stack_file_deploys_with_the_lab_override_and_every_service_runs(docker_client, stack):
    # Without DOCKER_GID the CLI refuses before creating anything, and says what to set.
    env = {**os.environ, **stack.env()}
    del env["DOCKER_GID"]
    argv = ["docker", "stack", "deploy", "--resolve-image", "never", "-c", str(STACK_FILE), "-c", str(OVERRIDE_FILE),
            stack.name]
    refused = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120, cwd=ROOT)
    assert refused.returncode != 0 and "set DOCKER_GID" in refused.stderr, refused.stderr
    assert not docker_client.api.services(filters={"label": f"{NAMESPACE}={stack.name}"})

    stack.deploy()
    took = stack.wait_ready(150)
    print(f"\nstack {stack.name}: every task running and the app served through Traefik {took:.1f}s after the deploy")
    selector = {"label": f"{NAMESPACE}={stack.name}"}
    services = {s["Spec"]["Name"].removeprefix(f"{stack.name}_"): s for s in docker_client.api.services(filters=selector)}
    assert set(services) == SERVICES
    configs = {c.name: c.attrs["Spec"]["Labels"] for c in docker_client.configs.list(filters=selector)}
    assert len(configs) == len(PROD["configs"]) and all(n.endswith(f"-{stack.config_version}") for n in configs)
    # Everything the stack made carries the suite's label, for the cleanup of a killed run.
    assert all(labels[lab.LABEL] == lab.OWNER for labels in configs.values())
    for net in docker_client.networks.list(filters=selector):
        assert net.attrs["Labels"][lab.LABEL] == lab.OWNER and net.attrs["Driver"] == "overlay"
    volumes = {v.name.removeprefix(f"{stack.name}_"): v for v in docker_client.volumes.list(filters=selector)}
    assert {"traefik-dynamic", "prometheus-data", "alertmanager-data"} <= set(volumes)
    assert all(v.attrs["Labels"][lab.LABEL] == lab.OWNER for v in volumes.values())

    def tasks(short: str) -> list[dict]:
        return docker_client.api.tasks(filters={"service": services[short]["ID"]})

    def healthy(short: str) -> bool:
        running = [t for t in tasks(short) if t["Status"]["State"] == "running"]
        if not running:
            return services[short]["Spec"]["Mode"].get("Replicated", {}).get("Replicas") == 0  # demo-green, grafana
        container = docker_client.api.inspect_container(running[0]["Status"]["ContainerStatus"]["ContainerID"])
        return container["State"].get("Health", {}).get("Status", "healthy") == "healthy"

    # Images and services with a health check (the daemons, the demo app, Traefik's `--ping`):
    # running is not enough, Docker must have seen them answer.
    lab.wait_for("every service to run healthy", lambda: all(map(healthy, services)), 90, interval=1)
    assert not tasks("grafana")  # left out: 0 replicas
    # Nothing went wrong anywhere: no task of any service failed or was rejected.
    for short in services:
        for task in tasks(short):
            assert not task["Status"].get("Err"), f"{short}: {task['Status']}"
            assert task["Status"]["State"] == "running", f"{short}: {task['Status']}"
    # Production's commands and flags, unchanged by the override.
    for short in ("prometheus", "alertmanager", "cadvisor", "autoscaler", "bluegreen"):
        spec = services[short]["Spec"]["TaskTemplate"]["ContainerSpec"]
        assert spec.get("Args") == PROD["services"][short]["command"], short
    daemon = services["autoscaler"]["Spec"]["TaskTemplate"]["ContainerSpec"]
    assert daemon["User"] == f"10001:{os.stat('/var/run/docker.sock').st_gid}"
    assert [s["SecretName"] for s in daemon["Secrets"]] == [stack.secret_names["TOKEN_SECRET"]]
    flags = stack.get_json("prometheus", "/api/v1/status/flags")["data"]
    assert (flags["storage.tsdb.path"], flags["storage.tsdb.retention.time"]) == ("/prometheus", "15d")

    # What a user sees: the demo app through Traefik on the web port, v1 from blue, with a 404 for
    # any other host; Traefik has loaded the controller's file from the shared volume.
    answer = stack.serves()
    assert (answer["version"], answer["color"]) == ("v1", "blue")
    assert stack.serves(host="elsewhere.localhost") is None
    router = stack.traefik_api(f"/api/http/routers/{stack.name}_demo@file")  # the app's key: <stack>_<app>
    assert router["rule"] == "Host(`127.0.0.1`)" and router["status"] == "enabled" and router["entryPoints"] == ["web"]
