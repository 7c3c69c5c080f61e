"""docker-stack.yml itself, deployed on the lab swarm with `docker stack deploy`.

The Docker CLI parses and interpolates the file, and the engine creates every service, network,
volume, config and secret of it, so mistakes that only the engine sees (a bind source missing on
a node, a bad constraint, a config or secret reference) show up here. What can run on the lab
runs: both daemons and the demo app, with SWARMSHIFT_IMAGE and DEMO_IMAGE pointed at the lab's
builds. Everything else must be held back for one of two stated reasons only: its image cannot
be pulled here (Traefik, Prometheus, Alertmanager, cAdvisor, Grafana), or it waits for the node
label that keeps Traefik and the controller on one node (the lab node does not carry it).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import uuid

import pytest
import yaml

from tests.support import lab
from tests.support.stack import NAMESPACE, ROOT, remove_stack, render

STACK_FILE = ROOT / "docker-stack.yml"
RUNS_HERE = {"autoscaler", "demo-blue"}
NEEDS_THE_ROUTER_LABEL = {"bluegreen", "traefik"}
UNPULLABLE = {"prometheus", "alertmanager", "cadvisor", "grafana"}


@pytest.fixture
def deployed(docker_client, tmp_path):
    name = f"ssprod{uuid.uuid4().hex[:6]}"
    labels = {lab.LABEL: lab.OWNER}
    made = [docker_client.secrets.create(name=f"{name}-{what}", data=secrets.token_hex(8).encode(), labels=labels)
            for what in ("token", "grafana")]
    rendered = tmp_path / "docker-stack.yml"
    rendered.write_text(yaml.safe_dump(render(STACK_FILE, labels), sort_keys=False))
    env = {**os.environ, "DOCKER_GID": str(os.stat("/var/run/docker.sock").st_gid),
           "SWARMSHIFT_IMAGE": "swarmshift:lab", "DEMO_IMAGE": lab.DEMO_IMAGE, "CONFIG_VERSION": name,
           "TOKEN_SECRET": f"{name}-token", "GRAFANA_PASSWORD_SECRET": f"{name}-grafana"}
    try:
        yield name, rendered, env
    finally:
        problems = remove_stack(docker_client, name)
        for secret in made:
            secret.remove()
        assert not problems, problems


def deploy(rendered, name, env) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", "stack", "deploy", "--resolve-image", "never", "-c", str(rendered), name],
                          capture_output=True, text=True, env=env, timeout=120)


def test_the_stack_file_deploys_and_everything_that_can_run_here_runs(docker_client, deployed, demo_image):
    name, rendered, env = deployed
    # Without DOCKER_GID the CLI refuses before creating anything, and says what to set.
    refused = deploy(rendered, name, {k: v for k, v in env.items() if k != "DOCKER_GID"})
    assert refused.returncode != 0 and "set DOCKER_GID" in refused.stderr, refused.stderr
    assert not docker_client.api.services(filters={"label": f"{NAMESPACE}={name}"})

    done = deploy(rendered, name, env)
    assert done.returncode == 0, done.stderr
    services = {s["Spec"]["Name"].removeprefix(f"{name}_"): s
                for s in docker_client.api.services(filters={"label": f"{NAMESPACE}={name}"})}
    assert set(services) == RUNS_HERE | NEEDS_THE_ROUTER_LABEL | UNPULLABLE | {"demo-green"}
    configs = {c.name for c in docker_client.configs.list(filters={"label": f"{NAMESPACE}={name}"})}
    assert len(configs) == 9 and all(c.endswith(f"-{name}") for c in configs)

    def tasks(short: str) -> list[dict]:
        return docker_client.api.tasks(filters={"service": services[short]["ID"]})

    def healthy(short: str) -> bool:
        running = [t for t in tasks(short) if t["Status"]["State"] == "running"]
        if not running:
            return False
        container = docker_client.api.inspect_container(running[0]["Status"]["ContainerStatus"]["ContainerID"])
        return container["State"].get("Health", {}).get("Status", "healthy") == "healthy"

    # The images have a HEALTHCHECK: running is not enough, Docker must have seen /healthz answer.
    lab.wait_for("the autoscaler and the demo app to run healthy", lambda: all(map(healthy, RUNS_HERE)), 60)

    lab.wait_for("a task of each unpullable service to be rejected", lambda: all(
        any(t["Status"].get("Err") for t in tasks(s)) for s in UNPULLABLE), 30)
    for short in NEEDS_THE_ROUTER_LABEL:
        [task] = tasks(short)
        assert task["Status"]["State"] == "pending", task["Status"]
        assert "no suitable node" in task["Status"]["Err"], task["Status"]
    # Nothing else went wrong anywhere: no task failed for a reason other than those two.
    for short in services:
        for task in tasks(short):
            err = task["Status"].get("Err", "")
            assert not err or "No such image" in err or "no suitable node" in err, f"{short}: {err}"
            assert "No such image" not in err or short in UNPULLABLE, f"{short}: {err}"
    spec = services["autoscaler"]["Spec"]["TaskTemplate"]["ContainerSpec"]
    assert spec["User"] == f"10001:{env['DOCKER_GID']}"
    assert [s["SecretName"] for s in spec["Secrets"]] == [f"{name}-token"]
