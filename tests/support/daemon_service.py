"""A swarmshift daemon run as a Swarm service for the lab tests, as the stack runs it: its task, its logs, its API wherever Swarm placed it.

`ServiceDaemon` is mixed into the test's daemon classes (the controller's `ControllerService`
in tests/support/traefik.py, `AutoscalerService` here) in place of a host process. The config and token files
are bind-mounted from the test's workdir (every node of the lab's cluster sees the host's /tmp),
the node's Docker socket is mounted as in docker-stack.yml, and the API (:8080) is published
host-mode on a free port. `engines()` lists (address, client) of the engines its task may run
on: the lab's one engine on 127.0.0.1, or the cluster's nodes that answer; `follow()` points
`url` at the node that runs it now, which after a failover is another one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import docker
import docker.types
import yaml

from lab.common import answers, json_lines
from tests.support import lab
from tests.support.swarmshift_proc import SwarmshiftDaemon

SWARMSHIFT_IMAGE = "swarmshift:lab"
Engines = Callable[[], list[tuple[str, docker.DockerClient]]]


class ServiceDaemon:
    """The Swarm-service half of a test daemon; the host-process class it is mixed into gives `events`, `get`…"""

    port: int
    url: str
    started_at: list[float]

    def _as_service(self, swarm: lab.LabSwarm, name: str, workdir: Path, command: list[str],
                    config: dict[str, Any], *, networks: Iterable[str] = (), image: str = SWARMSHIFT_IMAGE,
                    constraints: Iterable[str] = (), engines: Engines | None = None,
                    token: str | None = None) -> None:
        """Set up the service `name` (created by `start`, removed with the test's `swarm`)."""
        client = swarm.client
        self.swarm, self.client, self.service_name, self.workdir = swarm, client, name, workdir
        self.command, self.networks, self.image = command, list(networks), image
        self.constraints = list(constraints)
        self.engines = engines or (lambda: [("127.0.0.1", client)])
        self._created = False
        workdir.mkdir(parents=True, exist_ok=True)
        files = {"config.yml": yaml.safe_dump({"listen": "0.0.0.0:8080", **config})}
        if token is not None:
            files["token"] = token + "\n"
        for file, text in files.items():
            (workdir / file).write_text(text)
            (workdir / file).chmod(0o644)
        workdir.chmod(0o755)  # the task runs as uid 10001

    def start(self) -> None:
        self.started_at.append(time.time())
        if not self._created:
            gid = Path("/var/run/docker.sock").stat().st_gid
            self.client.services.create(
                self.image, name=self.service_name,
                args=["--log-format", "json", "--log-level", "debug", *self.command,
                      "--config", "/etc/swarmshift/config.yml"],
                user=f"10001:{gid}",
                labels={lab.LABEL: lab.OWNER}, container_labels={lab.LABEL: lab.OWNER},
                networks=self.networks,
                mounts=[f"{self.workdir}:/etc/swarmshift:ro", "/var/run/docker.sock:/var/run/docker.sock"],
                endpoint_spec=docker.types.EndpointSpec(mode="dnsrr", ports=[
                    {"Protocol": "tcp", "TargetPort": 8080, "PublishedPort": self.port, "PublishMode": "host"}]),
                constraints=self.constraints or None,
                stop_grace_period=5_000_000_000,
            )
            self._created = True
            self.swarm._services.append(self.service_name)
        else:
            lab.scale_service(self.client, self.service_name, 1)
        self.follow(timeout=60)

    def follow(self, timeout: float = 60) -> str:
        """Wait for the running task's API, wherever Swarm placed it; `url` then points there. Its address."""
        def located() -> str | None:
            for address, client in self.engines():
                if self._containers(running=True, client=client):
                    url = f"http://{address}:{self.port}"
                    if answers(f"{url}/healthz"):
                        self.url = url
                        return address
            return None

        try:
            return lab.wait_for(f"the service {self.service_name} to answer /healthz", located, timeout, interval=0.3)
        except AssertionError as err:
            raise AssertionError(f"{err}\n{self.log_tail(40)}") from None

    @property
    def running(self) -> bool:
        return bool(self._containers(running=True))

    def stop(self, timeout: float = 10.0) -> None:
        if self._created:
            lab.scale_service(self.client, self.service_name, 0)

    def kill(self) -> None:
        for ctr in self._containers(running=True):
            ctr.kill()

    def _containers(self, running: bool = False, client: docker.DockerClient | None = None) -> list:
        clients = [client] if client is not None else [c for _, c in self.engines()]
        return [ctr for c in clients for ctr in c.containers.list(
            all=not running, filters={"label": f"com.docker.swarm.service.name={self.service_name}"})]

    def lines(self) -> list[dict[str, Any]]:
        """The JSON log lines of every task container on the engines that answer, oldest container first."""
        return json_lines(sorted(self._containers(), key=lambda c: c.attrs["Created"]))

    def newest_lines(self) -> list[dict[str, Any]]:
        """The JSON log lines of the newest task container: after a failover, the one Swarm started on another node."""
        return json_lines(sorted(self._containers(), key=lambda c: c.attrs["Created"])[-1:])

    def newest_created(self) -> float:
        """When Swarm created the newest task container, in seconds since the epoch."""
        created = max(c.attrs["Created"] for c in self._containers())  # RFC 3339 with nanoseconds
        return datetime.fromisoformat(created[:26].rstrip("Z") + "+00:00").timestamp()

    def log_tail(self, lines: int = 30) -> str:
        text = "\n".join(ctr.logs(tail=lines).decode(errors="replace") for ctr in self._containers())
        if text:
            return text
        tasks = self.client.api.tasks(filters={"service": self.service_name}) if self._created else []
        return "(no log) tasks: " + "; ".join(f"{t['Status']['State']} {t['Status'].get('Err', '')}" for t in tasks)



class AutoscalerService(ServiceDaemon, SwarmshiftDaemon):
    """`swarmshift autoscaler run` as a Swarm service (not started yet) scaling only this run's services."""

    def __init__(self, swarm: lab.LabSwarm, workdir: Path, config: dict[str, Any], **kwargs: Any) -> None:
        SwarmshiftDaemon.__init__(self, "autoscaler-service", [], workdir, lab.free_port())
        self.started_at = []
        self._as_service(swarm, swarm.name("autoscaler"), workdir, ["autoscaler", "run"],
                         {"selector": f"{lab.LABEL}={lab.OWNER}", **config}, **kwargs)
