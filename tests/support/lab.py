"""The lab's Docker side for tests: uniquely named, labelled services and networks, always removed.

Every resource a test makes carries the label `swarmshift.test=<pid of the pytest process>` (each
lane of tests/support/lanes.py has its own). Before a run starts, anything carrying that label
whose pytest run is gone is removed: Swarm state outlives the engine, and a killed session
leaves services that Swarm restarts, maybe still burning CPU.
"""

from __future__ import annotations

import contextlib
import os
import urllib.request
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import docker
import docker.errors
import docker.types
import yaml

# Shared with `make demo` (lab/common.py); re-exported here under the names the tests use.
from lab.common import DEMO_IMAGE, free_port, remove_network, wait_for

LABEL = "swarmshift.test"
OWNER = str(os.getpid())
CADVISOR_IMAGE = "swarmshift-cadvisor:lab"
TRAEFIK_IMAGE = "swarmshift-traefik:lab"
STACK_FILE = Path(__file__).resolve().parents[2] / "docker-stack.yml"
# The stack's cAdvisor samples each container every 5-6 s (docker-stack.yml): a rate window of
# 15 s always holds two samples, which rate() needs.
RATE_WINDOW_SECONDS = 15
RATE_WINDOW = f"{RATE_WINDOW_SECONDS}s"
BASE_IMAGE = os.environ.get("LAB_BASE_IMAGE", "swarmshift-lab/python:bookworm")
POOL = "10.201.0.0/16"
CLUSTER_POOL = "10.202.0.0/16"  # the overlay pool of `make cluster` (lab/cluster.sh), guarded the same way


class LabUnavailable(RuntimeError):
    pass


def connect() -> docker.DockerClient:
    """A client for the lab engine, or LabUnavailable with the reason."""
    try:
        client = docker.from_env(timeout=30)
        client.ping()
    except Exception as err:  # noqa: BLE001 - any failure here means the lab is not up
        raise LabUnavailable(f"no Docker engine answers ({err}); run `make lab` as root") from err
    info = client.info()
    if not info.get("Swarm", {}).get("ControlAvailable"):
        raise LabUnavailable("the engine is not a Swarm manager; run `make lab`")
    return client


def _owner_alive(value: str) -> bool:
    if value == OWNER:
        return True
    try:
        with open(f"/proc/{int(value)}/cmdline", "rb") as f:
            return b"pytest" in f.read()
    except (ValueError, OSError):
        return False


def remove_leftovers(client: docker.DockerClient) -> list[str]:
    """Remove labelled services, containers, networks, configs, secrets and volumes whose pytest run is gone."""
    # The two lanes of tests/support/lanes.py may clean up at the same time: what the other one
    # removed first is gone, not an error.
    removed = []
    for svc in client.services.list(filters={"label": LABEL}):
        if not _owner_alive(svc.attrs["Spec"].get("Labels", {}).get(LABEL, "")):
            with contextlib.suppress(docker.errors.NotFound):
                svc.remove()
            removed.append(f"service {svc.name}")
    for ctr in client.containers.list(all=True, filters={"label": LABEL}):
        if not _owner_alive(ctr.labels.get(LABEL, "")):
            with contextlib.suppress(docker.errors.NotFound):
                ctr.remove(force=True)
            removed.append(f"container {ctr.name}")
    for net in client.networks.list(filters={"label": LABEL}):
        if not _owner_alive((net.attrs.get("Labels") or {}).get(LABEL, "")):
            remove_network(client, net.name)
            removed.append(f"network {net.name}")
    # A deployed stack also leaves configs, secrets and volumes (lab/stack.py labels them).
    for kind, objects in (("config", client.configs), ("secret", client.secrets)):
        for obj in objects.list(filters={"label": LABEL}):
            if not _owner_alive((obj.attrs["Spec"].get("Labels") or {}).get(LABEL, "")):
                with contextlib.suppress(docker.errors.NotFound):
                    obj.remove()
                removed.append(f"{kind} {obj.name}")
    for vol in client.volumes.list(filters={"label": LABEL}):
        if not _owner_alive((vol.attrs.get("Labels") or {}).get(LABEL, "")):
            try:
                vol.remove(force=True)
                removed.append(f"volume {vol.name}")
            except docker.errors.APIError:
                pass  # still held by a container on its way out: the next run removes it
    return removed


def stack_service(name: str) -> dict[str, Any]:
    """One service's definition in docker-stack.yml, as users deploy it."""
    return yaml.safe_load(STACK_FILE.read_text())["services"][name]


def stack_cadvisor_args() -> list[str]:
    """The flags docker-stack.yml runs cAdvisor with."""
    return list(stack_service("cadvisor")["command"])


def cadvisor_service(client: docker.DockerClient, args: list[str], stem: str = "cadvisor",
                     timeout: float = 60, image: str = CADVISOR_IMAGE, host: str = "127.0.0.1") -> tuple[str, str]:
    """The real cAdvisor as a global service with the stack's mounts; (host:port, service name).

    Returns once its /metrics answers with container series on `host` (127.0.0.1, or a cluster
    node's address, where every node publishes the same port), so a test starts on real data.
    """
    port = free_port()
    name = f"ss-{stem}-{uuid.uuid4().hex[:6]}"
    mounts = [docker.types.Mount(m["target"], m["source"], type="bind", read_only=True)
              for m in stack_service("cadvisor")["volumes"]]
    client.services.create(
        image, name=name, args=args, mounts=mounts,
        labels={LABEL: OWNER}, container_labels={LABEL: OWNER},
        mode=docker.types.ServiceMode("global"),
        endpoint_spec=docker.types.EndpointSpec(mode="dnsrr", ports=[
            {"Protocol": "tcp", "TargetPort": 8080, "PublishedPort": port, "PublishMode": "host"}]),
        stop_grace_period=2_000_000_000,
    )
    address = f"{host}:{port}"

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as resp:
                return b"container_cpu_usage_seconds_total{" in resp.read()
        except OSError:
            return False

    try:
        wait_for(f"cAdvisor {name} to export container series on {address}", ready, timeout, interval=0.5)
    except AssertionError:
        tasks = client.api.tasks(filters={"service": name})
        remove_service(client, name)
        raise AssertionError(f"cAdvisor did not start: {[t['Status'] for t in tasks]}") from None
    return address, name


def scale_service(client: docker.DockerClient, name: str, replicas: int) -> None:
    client.services.get(name).scale(replicas)


def remove_service(client: docker.DockerClient, name: str) -> None:
    with contextlib.suppress(docker.errors.NotFound):
        client.api.remove_service(name)


class LabSwarm:
    """Creates test services and networks on the lab swarm and removes them all on `close`."""

    def __init__(self, client: docker.DockerClient, prefix: str = "t") -> None:
        self.client = client
        self.prefix = prefix
        self._services: list[str] = []
        self._networks: list[str] = []

    def name(self, stem: str) -> str:
        return f"ss{self.prefix}-{stem}-{uuid.uuid4().hex[:6]}"

    def network(self, stem: str = "net") -> str:
        name = self.name(stem)
        self.client.networks.create(name, driver="overlay", attachable=True, labels={LABEL: OWNER})
        self._networks.append(name)
        return name

    def service(
        self,
        stem: str = "svc",
        *,
        image: str = DEMO_IMAGE,
        replicas: int = 1,
        labels: dict[str, str] | None = None,
        env: dict[str, str] | None = None,
        networks: Iterable[str] = (),
        publish: dict[int, int] | None = None,
        cpu_limit: float | None = None,
        memory_limit: int | None = None,
        cpu_reservation: float | None = None,
        command: list[str] | None = None,
        healthcheck: dict[str, Any] | None = None,
        mounts: Iterable[str] = (),
        constraints: Iterable[str] = (),
        wait: bool = True,
    ) -> Any:
        """A replicated service with dnsrr endpoints (no IPVS here) and host-mode published ports."""
        name = self.name(stem)
        ports = [
            {"Protocol": "tcp", "TargetPort": target, "PublishedPort": published, "PublishMode": "host"}
            for published, target in (publish or {}).items()
        ]
        resources = docker.types.Resources(
            cpu_limit=int(cpu_limit * 1e9) if cpu_limit else None,
            mem_limit=memory_limit,
            cpu_reservation=int(cpu_reservation * 1e9) if cpu_reservation else None,
        )
        svc = self.client.services.create(
            image,
            name=name,
            command=command,
            labels={LABEL: OWNER, **(labels or {})},
            container_labels={LABEL: OWNER},
            env=[f"{k}={v}" for k, v in (env or {}).items()],
            networks=list(networks),
            endpoint_spec=docker.types.EndpointSpec(mode="dnsrr", ports=ports or None),
            mode=docker.types.ServiceMode("replicated", replicas=replicas),
            resources=resources,
            healthcheck=healthcheck,
            mounts=list(mounts),  # "source:target[:ro]"; a bind mount's source must exist on every node it may run on
            constraints=list(constraints) or None,  # placement, e.g. "node.hostname==ssc-node1" on the cluster
            stop_grace_period=2_000_000_000,
        )
        self._services.append(name)
        if wait and replicas:
            self.wait_running(name, replicas)
        return svc

    def running_tasks(self, name: str) -> list[dict]:
        return [t for t in self.client.api.tasks(filters={"service": name, "desired-state": "running"})
                if t["Status"]["State"] == "running"]

    def wait_running(self, name: str, count: int, timeout: float = 60) -> None:
        wait_for(f"{count} running tasks of {name}", lambda: len(self.running_tasks(name)) == count, timeout)

    def replicas(self, name: str) -> int:
        spec = self.client.api.inspect_service(name)["Spec"]
        return spec["Mode"]["Replicated"]["Replicas"]

    def close(self) -> None:
        errors = []
        for name in reversed(self._services):
            with contextlib.suppress(docker.errors.NotFound):
                try:
                    self.client.api.remove_service(name)
                except docker.errors.APIError as err:
                    errors.append(f"{name}: {err}")
        for name in reversed(self._networks):
            try:
                remove_network(self.client, name)
            except docker.errors.APIError as err:
                errors.append(f"{name}: {err}")
        if errors:
            raise RuntimeError("could not remove test resources: " + "; ".join(errors))
