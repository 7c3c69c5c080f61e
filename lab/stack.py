"""The production stack on the lab: docker-stack.yml with the lab's override, deployed under its own name and removed whole.

`LabStack` deploys

    docker stack deploy --resolve-image never -c docker-stack.yml -c stack/lab/docker-stack.lab.yml NAME

with what docker-stack.yml needs from its operator: the node label that places Traefik and the
controller (`swarmshift.router=true` on this node), the two external secrets (named after the
stack, so stacks can run side by side), DOCKER_GID, a CONFIG_VERSION of its own (config names are
global) and host ports picked at run time. It waits until the stack works (the demo app answers
through Traefik on 127.0.0.1) and removes everything again.

Given `labels`, it also puts them on every object the stack creates (services, their
containers, networks, volumes, configs) through a third, generated file, so that the test suite's
leftover cleanup (`swarmshift.test=<pid>`) finds all of it; `make demo` passes none and deploys
exactly the two files above. Swarm labels every object of a stack with
`com.docker.stack.namespace=<name>` too, which is what `remove_stack` goes by; the secrets made
here carry that label as well, so `docker stack rm NAME` removes them with the stack.

`make demo` (lab/demo.py) and the end-to-end tests (tests/lab/test_stack_e2e.py,
tests/lab/test_stack_file_deploys.py) use it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import docker
import docker.errors
import yaml

from lab.common import DEMO_IMAGE, answers, free_port, json_lines, remove_network, wait_for

ROOT = Path(__file__).resolve().parents[1]
STACK_FILE = ROOT / "docker-stack.yml"
OVERRIDE_FILE = ROOT / "stack" / "lab" / "docker-stack.lab.yml"
NAMESPACE = "com.docker.stack.namespace"
DOCKER_SOCKET = "/var/run/docker.sock"
# docker-stack.yml places Traefik and the controller on the node carrying this label.
ROUTER_LABEL = "swarmshift.router"
# The images the override names; `make lab` builds them all.
IMAGES = ("swarmshift:lab", DEMO_IMAGE, "swarmshift-traefik:lab", "swarmshift-cadvisor:lab",
          "swarmshift-prometheus:lab", "swarmshift-alertmanager:lab")
# Host ports the override publishes (mode: host), by its variable.
PORTS = ("WEB_PORT", "TRAEFIK_API_PORT", "BLUEGREEN_PORT", "AUTOSCALER_PORT", "PROMETHEUS_PORT",
         "ALERTMANAGER_PORT")
# The demo app's host name on Traefik (docker-stack.yml's DEMO_HOST): plain requests to
# 127.0.0.1:<WEB_PORT> match its rule, Host(`127.0.0.1`).
DEMO_HOST = "127.0.0.1"
SWARMSHIFT = os.path.join(os.path.dirname(sys.executable), "swarmshift")
# Releases of the demo app for deploys: v2, and a v3 that passes its health check but answers 5xx.
RELEASES = {"v2": ("swarmshift-demo:v2", {"APP_VERSION": "v2"}),
            "v3-broken": ("swarmshift-demo:v3-broken", {"APP_VERSION": "v3", "ERROR_RATE": "1"})}


class StackError(RuntimeError):
    pass


def missing_images(client: docker.DockerClient) -> list[str]:
    missing = []
    for image in IMAGES:
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            missing.append(image)
    return missing


def derived_image(client: docker.DockerClient, tag: str, env: Mapping[str, str],
                  labels: Mapping[str, str] | None = None) -> str:
    """The demo image with other defaults baked in, so that a release changes only the image."""
    lines = ([f"FROM {DEMO_IMAGE}"] + [f"LABEL {k}={v}" for k, v in (labels or {}).items()]
             + [f"ENV {k}={v}" for k, v in env.items()])
    client.images.build(fileobj=io.BytesIO("\n".join(lines).encode()), tag=tag, rm=True)
    return tag


def image_version(client: docker.DockerClient, image: str, *args: str) -> str:
    """The first line of what `image` prints when run with `args` (e.g. Traefik's `version`)."""
    ctr = client.containers.create(image, list(args), network_mode="none")
    try:
        ctr.start()
        ctr.wait(timeout=60)
        out = ctr.logs(stdout=True, stderr=True)
    finally:
        ctr.remove(force=True, v=True)  # and the anonymous volumes of the images' VOLUMEs
    return out.decode(errors="replace").strip().splitlines()[0]


def stack_config(files: list[Path], env: Mapping[str, str]) -> dict[str, Any]:
    """`docker stack config -c FILE...`: the files merged and interpolated as `docker stack deploy` sees them."""
    argv = ["docker", "stack", "config"] + [arg for f in files for arg in ("-c", str(f))]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, env={**os.environ, **env})
    if done.returncode != 0:
        raise StackError(f"docker stack config failed ({done.returncode}): {done.stderr.strip()}")
    return yaml.safe_load(done.stdout)


def labels_override(merged: Mapping[str, Any], labels: Mapping[str, str]) -> dict[str, Any]:
    """A stack file that adds `labels` to every service, container, network, volume and config of `merged`.

    The compose merge merges a service key by key, but replaces a network, volume, config or
    secret whole: those are restated from the merged file with the labels added. The external
    secrets are not the stack's to label (LabStack labels them when it creates them).
    """
    doc: dict[str, Any] = {"services": {name: {"labels": dict(labels), "deploy": {"labels": dict(labels)}}
                                        for name in merged["services"]}}
    for section in ("networks", "volumes", "configs"):
        out = {}
        for name, spec in (merged.get(section) or {}).items():
            spec = dict(spec or {})
            spec["labels"] = {**(spec.get("labels") or {}), **labels}
            out[name] = spec
        if out:
            doc[section] = out
    return doc


def _http_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read() or b"null")


def this_node(client: docker.DockerClient):
    return client.nodes.get(client.info()["Swarm"]["NodeID"])


def add_router_label(client: docker.DockerClient) -> bool:
    """Put `swarmshift.router=true` on this node; True if it was not there before."""
    node = this_node(client)
    spec = node.attrs["Spec"]
    if (spec.get("Labels") or {}).get(ROUTER_LABEL) == "true":
        return False
    spec["Labels"] = {**(spec.get("Labels") or {}), ROUTER_LABEL: "true"}
    node.update(spec)
    return True


def router_label_in_use(client: docker.DockerClient) -> list[str]:
    """The services (of any stack) placed by the router label: taking it away would stop their tasks."""
    return [svc["Spec"]["Name"] for svc in client.api.services()
            if any(ROUTER_LABEL in c for c in
                   (svc["Spec"]["TaskTemplate"].get("Placement") or {}).get("Constraints") or [])]


def remove_router_label(client: docker.DockerClient) -> None:
    """Take `swarmshift.router` off this node again, unless a service still needs it."""
    if router_label_in_use(client):
        return
    node = this_node(client)
    spec = node.attrs["Spec"]
    if ROUTER_LABEL in (spec.get("Labels") or {}):
        spec["Labels"] = {k: v for k, v in spec["Labels"].items() if k != ROUTER_LABEL}
        node.update(spec)


class LabStack:
    """One deployment of docker-stack.yml with the lab's override, named `name`; `remove()` takes away everything it made."""

    def __init__(self, client: docker.DockerClient, name: str, labels: Mapping[str, str], workdir: Path) -> None:
        self.client = client
        self.name = name
        self.labels = dict(labels)
        self.workdir = workdir
        self.token = secrets.token_hex(16)
        self.ports: dict[str, int] = {}
        while len(set(self.ports.values())) < len(PORTS):
            self.ports = {var: free_port() for var in PORTS}
        # Config names are global and a config cannot change: one version per deployment.
        self.config_version = f"{name}-{int(time.time())}"
        self.secret_names = {"TOKEN_SECRET": f"{name}-token", "GRAFANA_PASSWORD_SECRET": f"{name}-grafana-password"}
        self.router_label_added = False
        self.deployed_at: float | None = None

    # -- names and addresses -----------------------------------------------------------------
    def service(self, short: str) -> str:
        """The Swarm name of the stack's service `short` (`<stack>_<short>`)."""
        return f"{self.name}_{short}"

    def network(self, short: str) -> str:
        return f"{self.name}_{short}"

    def url(self, var: str) -> str:
        return f"http://127.0.0.1:{self.ports[var]}"

    @property
    def bluegreen_url(self) -> str:
        return self.url("BLUEGREEN_PORT")

    @property
    def autoscaler_url(self) -> str:
        return self.url("AUTOSCALER_PORT")

    @property
    def web_url(self) -> str:
        """Traefik's web entrypoint: where users' requests come in."""
        return self.url("WEB_PORT")

    @property
    def traefik_api_url(self) -> str:
        """Traefik's :8080 entrypoint (API, ping, metrics)."""
        return self.url("TRAEFIK_API_PORT")

    @property
    def prometheus_url(self) -> str:
        return self.url("PROMETHEUS_PORT")

    @property
    def alertmanager_url(self) -> str:
        return self.url("ALERTMANAGER_PORT")

    # -- deploy ------------------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        """What the two stack files interpolate: the socket's group, the demo's host, names and host ports."""
        return {"DOCKER_GID": str(os.stat(DOCKER_SOCKET).st_gid), "DEMO_HOST": DEMO_HOST,
                "CONFIG_VERSION": self.config_version, **self.secret_names,
                **{var: str(port) for var, port in self.ports.items()}}

    @property
    def labels_file(self) -> Path:
        return self.workdir / "labels.yml"

    def files(self) -> list[Path]:
        return [STACK_FILE, OVERRIDE_FILE] + ([self.labels_file] if self.labels else [])

    def argv(self) -> list[str]:
        # The registry cannot be reached: never ask it for digests.
        argv = ["docker", "stack", "deploy", "--resolve-image", "never"]
        argv += [arg for f in self.files() for arg in ("-c", str(f))] + [self.name]
        if "--detach" in _stack_deploy_help():
            argv.insert(3, "--detach=true")
        return argv

    def command(self) -> str:
        """The deploy command as a user would type it in the repo (without --detach and the labels file)."""
        files = [STACK_FILE, OVERRIDE_FILE]
        return shlex.join(["docker", "stack", "deploy", "--resolve-image", "never",
                           *[arg for f in files for arg in ("-c", str(f.relative_to(ROOT)))], self.name])

    def prepare(self) -> None:
        """What docker-stack.yml expects to exist: the router label on this node and the two secrets."""
        self.router_label_added = add_router_label(self.client) or self.router_label_added
        for var, name in self.secret_names.items():
            with contextlib.suppress(docker.errors.NotFound):
                self.client.secrets.get(name).remove()  # a killed run's, of the same stack name
            data = self.token if var == "TOKEN_SECRET" else secrets.token_hex(16)
            self.client.secrets.create(name=name, data=data.encode(), labels={**self.labels, NAMESPACE: self.name})

    def deploy(self) -> None:
        """`docker stack deploy` of the two files; StackError with the CLI's words if it refuses."""
        missing = missing_images(self.client)
        if missing:
            raise StackError(f"missing images {', '.join(missing)}: run `make lab`")
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "token").write_text(self.token + "\n")
        self.prepare()
        if self.labels:
            merged = stack_config([STACK_FILE, OVERRIDE_FILE], self.env())
            self.labels_file.write_text(yaml.safe_dump(labels_override(merged, self.labels), sort_keys=False))
        done = subprocess.run(self.argv(), capture_output=True, text=True, timeout=120,
                              env={**os.environ, **self.env()})
        if done.returncode != 0:
            raise StackError(f"docker stack deploy failed ({done.returncode}): {done.stderr.strip() or done.stdout}")
        self.deployed_at = time.time()

    def wait_ready(self, timeout: float = 120) -> float:
        """Wait until every task runs, the daemons, Prometheus and Traefik answer, and the demo app
        answers through Traefik; returns seconds."""
        started = time.monotonic()
        deadline = started + timeout

        def left() -> float:
            return max(1.0, deadline - time.monotonic())

        wait_for(f"every service of stack {self.name} to run", self._all_running, left(), interval=1)
        for what, url in (("bluegreen", f"{self.bluegreen_url}/healthz"), ("autoscaler", f"{self.autoscaler_url}/healthz"),
                          ("prometheus", f"{self.prometheus_url}/-/ready"), ("traefik", f"{self.traefik_api_url}/ping")):
            wait_for(f"{what} to answer {url}", lambda u=url: answers(u), left(), interval=0.5)
        wait_for("Traefik to serve the demo app", lambda: self.serves() is not None, left(), interval=0.5)
        return time.monotonic() - started

    def _all_running(self) -> str | bool:
        services = self.client.api.services(filters={"label": f"{NAMESPACE}={self.name}"})
        if not services:
            return False
        for svc in services:
            mode = svc["Spec"]["Mode"]
            want = mode["Replicated"]["Replicas"] if "Replicated" in mode else len(self.client.nodes.list())
            tasks = self.client.api.tasks(filters={"service": svc["ID"], "desired-state": "running"})
            if sum(t["Status"]["State"] == "running" for t in tasks) != want:
                return False
        return True

    def serves(self, host: str | None = None) -> dict | None:
        """The demo app's answer to GET / through Traefik (version, color), or None."""
        req = urllib.request.Request(f"{self.web_url}/", headers={"Host": host} if host else {})
        try:
            with urllib.request.urlopen(req, timeout=3) as resp:
                return json.loads(resp.read())
        except (OSError, ValueError):
            return None

    # -- observation -------------------------------------------------------------------------
    def replicas(self, short: str) -> int:
        return self.client.api.inspect_service(self.service(short))["Spec"]["Mode"]["Replicated"]["Replicas"]

    def running(self, service: str) -> int:
        """Running tasks of the Swarm service `service` (a full name)."""
        return sum(t["Status"]["State"] == "running"
                   for t in self.client.api.tasks(filters={"service": service, "desired-state": "running"}))

    def logs(self, short: str) -> list[dict[str, Any]]:
        """The JSON log lines of the stack's service `short` (its tasks' containers on this node)."""
        return json_lines(self.client.containers.list(
            all=True, filters={"label": f"com.docker.swarm.service.name={self.service(short)}"}))

    def events(self, short: str, name: str, **match: Any) -> list[dict[str, Any]]:
        return [e for e in self.logs(short)
                if isinstance(e, dict) and e.get("event") == name and all(e.get(k) == v for k, v in match.items())]

    def query(self, promql: str) -> list[dict]:
        url = f"{self.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        return _http_json(url)["data"]["result"]

    def get_json(self, service: str, path: str) -> Any:
        """GET `path` from the stack's `service` (bluegreen, autoscaler, prometheus, alertmanager) on its host port."""
        return _http_json(self.url(f"{service.upper()}_PORT") + path)

    def traefik_api(self, path: str) -> Any:
        """GET `path` from Traefik's API (e.g. /api/http/services/<stack>_demo@file), or None if it answers no JSON."""
        try:
            return _http_json(self.traefik_api_url + path)
        except (OSError, ValueError):
            return None

    def prometheus_targets(self) -> dict[str, set[str]]:
        """Each scrape job's target health values, e.g. {"cadvisor": {"up"}}."""
        out: dict[str, set[str]] = {}
        for target in _http_json(f"{self.prometheus_url}/api/v1/targets")["data"]["activeTargets"]:
            out.setdefault(target["labels"]["job"], set()).add(target["health"])
        return out

    def cli(self, *args: str, timeout: float = 150) -> subprocess.CompletedProcess:
        """`swarmshift bluegreen <args>` from the host against the stack's controller, with its token."""
        env = {**os.environ, "SWARMSHIFT_TOKEN": self.token}
        return subprocess.run([SWARMSHIFT, "bluegreen", *args, "--controller", self.bluegreen_url],
                              capture_output=True, text=True, env=env, timeout=timeout)

    # -- teardown ----------------------------------------------------------------------------
    def remove(self) -> list[str]:
        """Remove the stack and its secrets, and the router label if this stack put it there."""
        problems = remove_stack(self.client, self.name)  # the secrets too: they carry the stack's label
        if self.router_label_added:
            remove_router_label(self.client)
            self.router_label_added = False
        return problems


_help_text: str | None = None


def _stack_deploy_help() -> str:
    global _help_text
    if _help_text is None:
        _help_text = subprocess.run(["docker", "stack", "deploy", "--help"], capture_output=True, text=True).stdout
    return _help_text


def remove_stack(client: docker.DockerClient, name: str, timeout: float = 60) -> list[str]:
    """Remove every object of stack `name`: services, then (once their containers are gone) networks,
    configs, secrets and volumes. Returns what could not be removed, if anything."""
    selector = {"label": f"{NAMESPACE}={name}"}
    problems: list[str] = []
    for svc in client.api.services(filters=selector):
        with contextlib.suppress(docker.errors.NotFound):
            client.api.remove_service(svc["ID"])
    deadline = time.monotonic() + timeout
    while client.containers.list(all=True, filters=selector) and time.monotonic() < deadline:
        for ctr in client.containers.list(all=True, filters={**selector, "status": "exited"}):
            with contextlib.suppress(docker.errors.APIError):
                ctr.remove(force=True)
        time.sleep(0.5)
    for ctr in client.containers.list(all=True, filters=selector):
        try:
            ctr.remove(force=True)
        except docker.errors.APIError as err:
            problems.append(f"container {ctr.name}: {err}")
    for net in client.networks.list(filters=selector):
        try:
            remove_network(client, net.name, timeout=max(5.0, deadline - time.monotonic()))
        except docker.errors.APIError as err:
            problems.append(f"network {net.name}: {err}")
    for kind in (client.configs, client.secrets):
        for obj in kind.list(filters=selector):
            try:
                obj.remove()
            except docker.errors.APIError as err:
                problems.append(f"{obj.name}: {err}")
    for vol in client.volumes.list(filters=selector):
        try:
            vol.remove(force=True)
        except docker.errors.APIError as err:
            problems.append(f"volume {vol.name}: {err}")
    return problems


def stacks_labelled(client: docker.DockerClient, label: str) -> set[str]:
    """The names of the stacks whose services carry `label` (KEY or KEY=VALUE)."""
    return {svc["Spec"]["Labels"][NAMESPACE] for svc in client.api.services(filters={"label": label})
            if NAMESPACE in (svc["Spec"].get("Labels") or {})}
