"""The lab variant of the stack (stack/lab/docker-stack.lab.yml), deployed under its own name and removed whole.

`LabStack` renders the stack file with extra labels on everything it creates (services, their
containers, networks, volumes, configs, secrets), so that the suite's leftover cleanup
(`swarmshift.test=<pid>`) or `make demo-down` (`swarmshift.demo`) finds all of it; deploys it with
`docker stack deploy` on host ports picked at run time; waits until it works; and removes it.
Swarm labels every object of a stack with `com.docker.stack.namespace=<name>` too, which is
what `remove_stack` goes by.

`make demo` and tests/lab/test_stack_e2e.py use it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
import subprocess
import sys
import tempfile
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

from tests.support import lab

ROOT = Path(__file__).resolve().parents[2]
STACK_FILE = ROOT / "stack" / "lab" / "docker-stack.lab.yml"
NAMESPACE = "com.docker.stack.namespace"
DOCKER_SOCKET = "/var/run/docker.sock"
# The images the lab variant runs; `make lab` builds them all.
IMAGES = ("swarmshift:lab", "swarmshift-nginx:lab", "swarmshift-prometheus:lab", "swarmshift-alertmanager:lab",
          "swarmshift-cadvisor:lab", lab.DEMO_IMAGE)
# Host ports the stack publishes (mode: host), by the stack file's variable.
PORTS = ("BLUEGREEN_PORT", "AUTOSCALER_PORT", "WEB_PORT", "PROMETHEUS_PORT", "ALERTMANAGER_PORT")
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


def render(source: Path, labels: Mapping[str, str]) -> dict[str, Any]:
    """The stack file with `labels` on every object it creates and its files as absolute paths."""
    doc = yaml.safe_load(source.read_text())  # merge keys (<<) are expanded here
    for key in [k for k in doc if k.startswith("x-")]:
        del doc[key]
    for svc in doc["services"].values():
        svc["labels"] = {**(svc.get("labels") or {}), **labels}  # the containers'
        deploy = svc.setdefault("deploy", {})
        deploy["labels"] = {**(deploy.get("labels") or {}), **labels}  # the service's
    for section in ("networks", "volumes", "configs", "secrets"):
        for name, spec in (doc.get(section) or {}).items():
            spec = doc[section][name] = dict(spec or {})
            spec["labels"] = {**(spec.get("labels") or {}), **labels}
            if "file" in spec and not str(spec["file"]).startswith(("/", "$")):
                spec["file"] = str((source.parent / spec["file"]).resolve())
    return doc


def derived_image(client: docker.DockerClient, tag: str, env: Mapping[str, str]) -> str:
    """The demo image with other defaults baked in, so that a release changes only the image."""
    lines = [f"FROM {lab.DEMO_IMAGE}"] + [f"ENV {k}={v}" for k, v in env.items()]
    client.images.build(fileobj=io.BytesIO("\n".join(lines).encode()), tag=tag, rm=True)
    return tag


def _http_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read() or b"null")


class LabStack:
    """One deployment of the lab variant, named `name`; `remove()` takes away everything it made."""

    def __init__(self, client: docker.DockerClient, name: str, labels: Mapping[str, str], workdir: Path) -> None:
        self.client = client
        self.name = name
        self.labels = dict(labels)
        self.workdir = workdir
        self.token = secrets.token_hex(16)
        self.ports = {var: lab.free_port() for var in PORTS}
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
        return self.url("WEB_PORT")

    @property
    def prometheus_url(self) -> str:
        return self.url("PROMETHEUS_PORT")

    @property
    def alertmanager_url(self) -> str:
        return self.url("ALERTMANAGER_PORT")

    # -- deploy ------------------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        """What the stack file interpolates: the socket's group, the token file, the host ports."""
        token_file = self.workdir / "token"
        return {"DOCKER_GID": str(os.stat(DOCKER_SOCKET).st_gid), "TOKEN_FILE": str(token_file),
                **{var: str(port) for var, port in self.ports.items()}}

    def deploy(self) -> None:
        """`docker stack deploy` of the rendered lab variant; StackError with the CLI's words if it refuses."""
        missing = missing_images(self.client)
        if missing:
            raise StackError(f"missing images {', '.join(missing)}: run `make lab`")
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "token").write_text(self.token + "\n")
        rendered = self.workdir / "docker-stack.lab.yml"
        rendered.write_text(yaml.safe_dump(render(STACK_FILE, self.labels), sort_keys=False))
        # The registry cannot be reached: never ask it for digests.
        argv = ["docker", "stack", "deploy", "--resolve-image", "never", "-c", str(rendered), self.name]
        if "--detach" in _stack_deploy_help():
            argv.insert(3, "--detach=true")
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, env={**os.environ, **self.env()})
        if done.returncode != 0:
            raise StackError(f"docker stack deploy failed ({done.returncode}): {done.stderr.strip() or done.stdout}")
        self.deployed_at = time.time()

    def wait_ready(self, timeout: float = 90) -> float:
        """Wait until every task runs, both daemons and Prometheus answer, and nginx serves the app; returns seconds."""
        started = time.monotonic()
        deadline = started + timeout

        def left() -> float:
            return max(1.0, deadline - time.monotonic())

        lab.wait_for(f"every service of stack {self.name} to run", self._all_running, left(), interval=1)
        for what, url in (("bluegreen", f"{self.bluegreen_url}/healthz"), ("autoscaler", f"{self.autoscaler_url}/healthz"),
                          ("prometheus", f"{self.prometheus_url}/-/ready")):
            lab.wait_for(f"{what} to answer {url}", lambda u=url: _answers(u), left(), interval=0.5)
        lab.wait_for("nginx to serve the demo app", lambda: self.serves() is not None, left(), interval=0.5)
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

    def serves(self, host: str = "127.0.0.1") -> dict | None:
        """The demo app's answer to GET / through nginx (version, color), or None."""
        req = urllib.request.Request(f"{self.web_url}/", headers={"Host": host})
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
        out = []
        for ctr in self.client.containers.list(all=True, filters={"label": f"com.docker.swarm.service.name={self.service(short)}"}):
            for line in ctr.logs().decode(errors="replace").splitlines():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return out

    def events(self, short: str, name: str, **match: Any) -> list[dict[str, Any]]:
        return [e for e in self.logs(short) if e.get("event") == name and all(e.get(k) == v for k, v in match.items())]

    def query(self, promql: str) -> list[dict]:
        url = f"{self.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        return _http_json(url)["data"]["result"]

    def get_json(self, service: str, path: str) -> Any:
        """GET `path` from the stack's `service` (bluegreen, autoscaler, prometheus, alertmanager) on its host port."""
        return _http_json(self.url(f"{service.upper()}_PORT") + path)

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
        return remove_stack(self.client, self.name)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            return resp.status == 200
    except (OSError, urllib.error.HTTPError):
        return False


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
            lab.remove_network(client, net.name, timeout=max(5.0, deadline - time.monotonic()))
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


def new_workdir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))
