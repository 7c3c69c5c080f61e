"""The Swarm access layer: every Docker call of both daemons goes through `Swarm`.

Each call runs off the event loop with a timeout, on a few threads of its own (`Workers`): a
hung engine then fails Docker calls fast instead of starving the loop's default executor, and
connection errors are retried with bounded backoff. Writes carry the service version they were decided on (optimistic
concurrency): a conflict raises `VersionConflict`, and `Swarm.modify` re-reads and re-decides.
"""

from __future__ import annotations

import asyncio
import copy
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

import docker
import docker.errors
import requests.exceptions

from swarmshift import logs
from swarmshift.workers import Saturated, Workers

log = logs.get("swarmshift.swarm")
T = TypeVar("T")

# Docker answers an update whose version is stale with this text (HTTP 500, or 409 on newer engines).
_CONFLICT_MARKERS = ("update out of sequence", "version mismatch", "out of sequence")
# What a manager answers (HTTP 500, some engines 503) to every manager call while the managers have
# no quorum, or during the election after a leader dies: swarmkit's "The swarm does not have a
# leader. It's possible that too few managers are online. Make sure more than half of the managers
# are online." (rpc code Unknown); older engines, "raft: failed to process the request: node lost
# leader status" and "raft: no elected cluster leader"; a write that waited for a quorum that never
# came, "rpc error: code = DeadlineExceeded desc = context deadline exceeded" (code = 4 on old engines).
_NO_QUORUM_MARKERS = ("does not have a leader", "too few managers are online", "lost leader status",
                      "no elected cluster leader", "lost leadership", "code = deadlineexceeded",
                      "code = 4 desc = context deadline exceeded")
# What an engine that is not a manager answers (HTTP 503) to manager calls: a worker's "This node is
# not a swarm manager. Worker nodes can't be used to view or modify cluster state. ..." and, outside a
# swarm, "This node is not a swarm manager. Use "docker swarm init" or "docker swarm join" ...".
_NOT_MANAGER_MARKERS = ("this node is not a swarm manager", "this node is not part of a swarm")


class SwarmError(Exception):
    """A Docker call failed in a way the caller should see."""


class DockerUnavailable(SwarmError):
    """The engine did not answer, even after retries."""


class NoQuorum(DockerUnavailable):
    """The managers have no leader (quorum lost, or an election under way): nothing can be read or written.

    A DockerUnavailable, so that every path that holds and retries while the engine is away does
    the same here; the daemons report it as its own condition (`swarm_no_quorum`).
    """


class NotManager(DockerUnavailable):
    """The engine is not a Swarm manager (a worker, or outside a swarm): the daemons need a manager's API.

    At start-up it is a configuration error (`check_manager`); a node demoted later is held like
    an engine that does not answer, since it may be promoted again.
    """


class NotFound(SwarmError):
    """The service (or node) does not exist."""


class VersionConflict(SwarmError):
    """The service changed since it was read; re-read it and decide again."""


@dataclass(frozen=True)
class Edit(Generic[T]):
    """What a `Swarm.modify` callback decided: the changes to write (None: none), and what modify returns."""

    value: T
    changes: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Resources:
    """CPU in cores and memory in bytes; 0 means unset."""

    cpus: float = 0.0
    memory: int = 0


@dataclass(frozen=True)
class UpdateStatus:
    state: str  # updating, paused, completed, rollback_started, rollback_paused, rollback_completed
    message: str = ""
    started_at: str | None = None
    completed_at: str | None = None

    @property
    def in_progress(self) -> bool:
        return self.state in ("updating", "rollback_started")


@dataclass(frozen=True)
class Node:
    """One Swarm node as the node list shows it."""

    id: str
    hostname: str
    role: str  # manager or worker
    state: str  # ready, down, unknown, disconnected
    availability: str  # active, pause, drain
    leader: bool = False

    @property
    def name(self) -> str:
        """How logs and `plan` name the node: its hostname, else its id."""
        return self.hostname or self.id


def parse_node(raw: Mapping[str, Any]) -> Node:
    spec = raw.get("Spec") or {}
    return Node(
        id=raw.get("ID", ""),
        hostname=(raw.get("Description") or {}).get("Hostname", ""),
        role=spec.get("Role", ""),
        state=(raw.get("Status") or {}).get("State", ""),
        availability=spec.get("Availability", ""),
        leader=bool((raw.get("ManagerStatus") or {}).get("Leader")),
    )


@dataclass(frozen=True)
class Task:
    id: str
    service_id: str
    slot: int | None
    node_id: str
    state: str  # Swarm's task state: new, pending, assigned, ..., running, failed, ...
    desired_state: str
    message: str
    error: str
    container_id: str | None
    # Docker health of the container (healthy, unhealthy, starting), when it could be read:
    # only containers on the node this engine runs are visible. None means unknown.
    health: str | None = None

    @property
    def running(self) -> bool:
        return self.state == "running"


@dataclass(frozen=True)
class Service:
    id: str
    name: str
    version: int
    labels: Mapping[str, str]
    image: str
    replicas: int | None  # None for global services
    running: int | None  # running tasks, when read with status
    limits: Resources
    reservations: Resources
    update_status: UpdateStatus | None
    spec: Mapping[str, Any] = field(repr=False, compare=False)
    # When Docker created the service (seconds since the epoch), None when unknown: which of two
    # services claiming one blue-green color came first.
    created_at: float | None = None

    @property
    def mode(self) -> str:
        return "global" if self.replicas is None else "replicated"

    @property
    def updating(self) -> bool:
        return self.update_status is not None and self.update_status.in_progress


def parse_resources(block: Mapping[str, Any] | None) -> Resources:
    block = block or {}
    return Resources(cpus=(block.get("NanoCPUs") or 0) / 1e9, memory=int(block.get("MemoryBytes") or 0))


def parse_service(raw: Mapping[str, Any]) -> Service:
    spec = raw["Spec"]
    template = spec.get("TaskTemplate", {})
    resources = template.get("Resources", {})
    mode = spec.get("Mode", {})
    replicas = mode["Replicated"].get("Replicas", 1) if "Replicated" in mode else None
    status = raw.get("ServiceStatus") or {}
    update = raw.get("UpdateStatus")
    return Service(
        id=raw["ID"],
        name=spec["Name"],
        version=int(raw["Version"]["Index"]),
        labels=dict(spec.get("Labels") or {}),
        image=template.get("ContainerSpec", {}).get("Image", ""),
        replicas=replicas,
        running=status.get("RunningTasks"),
        limits=parse_resources(resources.get("Limits")),
        reservations=parse_resources(resources.get("Reservations")),
        update_status=UpdateStatus(
            state=update.get("State", ""),
            message=update.get("Message", ""),
            started_at=update.get("StartedAt"),
            completed_at=update.get("CompletedAt"),
        )
        if update
        else None,
        spec=spec,
        created_at=parse_created(raw.get("CreatedAt")),
    )


def parse_created(text: Any) -> float | None:
    """Docker's `CreatedAt` (RFC 3339 in UTC, nanoseconds) as seconds since the epoch; None if absent or unreadable."""
    if not isinstance(text, str) or len(text) > 40:
        return None
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def parse_task(raw: Mapping[str, Any], health: str | None = None) -> Task:
    status = raw.get("Status", {})
    container = status.get("ContainerStatus") or {}
    return Task(
        id=raw["ID"],
        service_id=raw.get("ServiceID", ""),
        slot=raw.get("Slot"),
        node_id=raw.get("NodeID", ""),
        state=status.get("State", ""),
        desired_state=raw.get("DesiredState", ""),
        message=status.get("Message", ""),
        error=status.get("Err", ""),
        container_id=container.get("ContainerID"),
        health=health,
    )


def _is_conflict(err: docker.errors.APIError) -> bool:
    text = str(err.explanation or err).lower()
    return any(marker in text for marker in _CONFLICT_MARKERS)


def api_error(what: str, err: docker.errors.APIError) -> SwarmError:
    """The SwarmError an APIError from Docker means, by its text (the status code varies by engine version)."""
    detail = str(err.explanation or err)
    text = detail.lower()
    if isinstance(err, docker.errors.NotFound):
        return NotFound(f"{what}: {detail}")
    if any(marker in text for marker in _NO_QUORUM_MARKERS):
        return NoQuorum(f"{what}: the swarm has no leader (quorum lost, or an election under way): {detail}")
    if any(marker in text for marker in _NOT_MANAGER_MARKERS):
        return NotManager(f"{what}: this engine is not a swarm manager, and swarmshift needs a manager's API "
                          f"(run it on a manager, or point DOCKER_HOST at one): {detail}")
    if _is_conflict(err):
        return VersionConflict(f"{what}: {detail}")
    return SwarmError(f"{what}: {detail}")


_TRANSIENT = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    docker.errors.DockerException,  # raised by the client factory when the socket is absent
    asyncio.TimeoutError,
)


class SwarmAccess(Protocol):
    """What the daemons ask of Swarm: `Swarm` is the real one; tests hold one in memory (tests/support/swarm.py)."""

    calls: int

    async def services(self, label: str | None = None) -> list[Service]: ...

    async def service(self, name_or_id: str) -> Service: ...

    async def tasks(self, service: str | None = None, *, desired: str | None = "running") -> list[Task]: ...

    async def tasks_with_health(self, service: str) -> list[Task]: ...

    async def update(self, service: Service, *, replicas: int | None = None, image: str | None = None,
                     labels: Mapping[str, str | None] | None = None,
                     env: Mapping[str, str | None] | None = None) -> Service: ...

    async def modify(self, name_or_id: str, decide: Callable[[Service], Awaitable[Edit[T]] | Edit[T]], *,
                     attempts: int = 5) -> T: ...

    async def containers(self, label: str) -> list[dict[str, Any]]: ...

    async def nodes(self) -> list[Node]: ...

    async def local_node_id(self) -> str: ...

    async def stats(self, container_id: str) -> dict[str, Any]: ...

    async def exec(self, container_id: str, argv: list[str], *, within: float | None = None) -> tuple[int, str]: ...

    async def signal(self, container_id: str, sig: str | int) -> None: ...

    async def close(self) -> None: ...


class Swarm:
    """Async access to one Docker engine that is a Swarm manager.

    `client` may be given (tests, benchmarks); otherwise one is made from the environment
    (DOCKER_HOST, or the local socket) on first use. `workers` is how many Docker calls may be
    in flight at once, each on a thread of this client's own; waiting for one to come free
    counts against the call's timeout.
    """

    def __init__(
        self,
        client: docker.DockerClient | None = None,
        *,
        base_url: str | None = None,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.5,
        workers: int = 4,
    ) -> None:
        self._client = client
        self._base_url = base_url
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.calls = 0  # Docker API requests made, for benchmarks and loop-cost logging
        self._local_node: str | None = None
        self._workers = Workers(workers, name="swarmshift-docker")

    # -- plumbing ----------------------------------------------------------------------------

    @property
    def api(self) -> docker.APIClient:
        if self._client is None:
            if self._base_url:
                self._client = docker.DockerClient(base_url=self._base_url, timeout=int(self.timeout))
            else:
                self._client = docker.from_env(timeout=int(self.timeout))
        return self._client.api

    async def _call(self, what: str, fn: Callable[[], T], *, within: float | None = None) -> T:
        """Run one blocking SDK call on this client's workers; retry connection errors with backoff.

        Each attempt has `within` (default the client's timeout) plus a second, the wait for a
        free worker included. When every worker is stuck in a call that has not returned, the
        call fails with DockerUnavailable without a retry: a retry would wait for the same threads.
        """
        delay = self.backoff
        limit = (within if within is not None else self.timeout) + 1
        for attempt in range(1, self.retries + 1):
            try:
                self.calls += 1
                return await self._workers.run(fn, limit)
            except Saturated as err:
                log.warning("docker_workers_busy", call=what, workers=self._workers.size, error=str(err))
                raise DockerUnavailable(f"{what}: {err}") from err
            except docker.errors.APIError as err:
                mapped = api_error(what, err)
                # An election takes a few seconds: retried like a connection error, and a write
                # retried is safe, since it carries the version read (applied once: a conflict).
                if not isinstance(mapped, NoQuorum) or attempt == self.retries:
                    raise mapped from err
                log.warning("docker_retry", call=what, attempt=attempt, error=str(mapped))
                await asyncio.sleep(delay + random.uniform(0, delay / 2))
                delay *= 2
            except _TRANSIENT as err:
                if attempt == self.retries:
                    raise DockerUnavailable(f"{what}: {err or type(err).__name__}") from err
                log.warning("docker_retry", call=what, attempt=attempt, error=str(err) or type(err).__name__)
                await asyncio.sleep(delay + random.uniform(0, delay / 2))
                delay *= 2
        raise AssertionError("unreachable")

    async def close(self) -> None:
        """Close the client and the workers; threads stuck in hung calls are left to end on their own."""
        self._workers.close()
        if self._client is not None:
            await asyncio.to_thread(self._client.close)

    # -- reads -------------------------------------------------------------------------------

    async def services(self, label: str | None = None) -> list[Service]:
        """All services (optionally only those carrying `label`, a key or key=value), with task counts."""
        filters = {"label": [label]} if label else None
        raws = await self._call("services", lambda: self.api.services(filters=filters, status=True))
        return [parse_service(raw) for raw in raws]

    async def service(self, name_or_id: str) -> Service:
        raw = await self._call(f"inspect {name_or_id}", lambda: self.api.inspect_service(name_or_id))
        return parse_service(raw)

    async def tasks(self, service: str | None = None, *, desired: str | None = "running") -> list[Task]:
        """Tasks of one service (or of all services in one call), without health."""
        filters: dict[str, Any] = {}
        if service:
            filters["service"] = service
        if desired:
            filters["desired-state"] = desired
        raws = await self._call("tasks", lambda: self.api.tasks(filters=filters))
        return [parse_task(raw) for raw in raws]

    async def tasks_with_health(self, service: str) -> list[Task]:
        """Tasks of one service, with the Docker health of each container on this node."""
        tasks = await self.tasks(service)
        local = await self.local_node_id()

        async def health(task: Task) -> Task:
            if not task.container_id or task.node_id != local:
                return task
            try:
                raw = await self._call(
                    f"inspect container {task.container_id[:12]}",
                    lambda: self.api.inspect_container(task.container_id),
                )
            except NotFound:
                return task
            state = raw.get("State", {})
            status = (state.get("Health") or {}).get("Status")
            if status is None and state.get("Running"):
                status = "none"  # no healthcheck defined: running is all Docker knows
            return Task(**{**task.__dict__, "health": status})

        return list(await asyncio.gather(*(health(t) for t in tasks)))

    async def containers(self, label: str) -> list[dict[str, Any]]:
        """Running containers on this engine's node that carry `label` (raw list entries)."""
        return await self._call("containers", lambda: self.api.containers(filters={"label": label}))

    async def stats(self, container_id: str) -> dict[str, Any]:
        """One stats sample of a container, without the engine's one-second wait for a second one."""
        return await self._call(
            f"stats {container_id[:12]}", lambda: self.api.stats(container_id, stream=False, one_shot=True)
        )

    async def nodes(self) -> list[Node]:
        """Every node of the swarm (a manager call: NoQuorum without a leader, NotManager on a worker)."""
        raws = await self._call("nodes", lambda: self.api.nodes())
        return [parse_node(raw) for raw in raws]

    async def local_node_id(self) -> str:
        if self._local_node is None:
            info = await self._call("info", self.api.info)
            self._local_node = info.get("Swarm", {}).get("NodeID", "")
        return self._local_node

    async def check_manager(self) -> None:
        """NotManager unless this engine is a swarm manager (`info`: an engine call, answered without a quorum)."""
        info = await self._call("info", self.api.info)
        check_manager_info(info)

    # -- containers on this node -----------------------------------------------------------

    async def exec(self, container_id: str, argv: list[str], *, within: float | None = None) -> tuple[int, str]:
        """Run `argv` in a running container on this node: (exit code, stdout and stderr together).

        Retried on connection errors like every call, so `argv` must be safe to run twice
        (`nginx -t` is). `within` bounds the command itself, default the client's timeout.
        """
        def run() -> tuple[int, str]:
            exec_id = self.api.exec_create(container_id, argv, stdout=True, stderr=True)["Id"]
            output = self.api.exec_start(exec_id)
            code = self.api.exec_inspect(exec_id).get("ExitCode")
            return (code if code is not None else -1), output.decode(errors="replace")

        what = f"exec {' '.join(argv)} in {container_id[:12]}"
        return await self._call(what, run, within=within)

    async def signal(self, container_id: str, sig: str | int) -> None:
        """Send `sig` (a name such as HUP, or a number) to a container's main process on this node."""
        await self._call(f"signal {sig} to {container_id[:12]}", lambda: self.api.kill(container_id, sig))

    # -- writes ------------------------------------------------------------------------------

    async def update(
        self,
        service: Service,
        *,
        replicas: int | None = None,
        image: str | None = None,
        labels: Mapping[str, str | None] | None = None,
        env: Mapping[str, str | None] | None = None,
    ) -> Service:
        """Write changes to `service` at the version it was read at, and return the new state.

        Labels and env entries whose value is None are removed. Raises VersionConflict when
        the service changed since `service` was read.
        """
        spec = _apply(service.spec, replicas=replicas, image=image, labels=labels, env=env)

        def write() -> None:
            self.api.update_service(
                service.id,
                service.version,
                task_template=spec["TaskTemplate"],
                name=spec["Name"],
                labels=spec.get("Labels") or {},
                mode=spec.get("Mode"),
                update_config=spec.get("UpdateConfig"),
                rollback_config=spec.get("RollbackConfig"),
                endpoint_spec=spec.get("EndpointSpec"),
            )

        await self._call(f"update {service.name}", write)
        return await self.service(service.id)

    async def modify(
        self,
        name_or_id: str,
        decide: Callable[[Service], Awaitable[Edit[T]] | Edit[T]],
        *,
        attempts: int = 5,
    ) -> T:
        """Read, decide, write; on a version conflict read again and decide again (see `modify`)."""
        return await modify(self, name_or_id, decide, attempts=attempts)


async def modify(swarm: SwarmAccess, name_or_id: str, decide: Callable[[Service], Awaitable[Edit[T]] | Edit[T]], *,
                 attempts: int = 5) -> T:
    """Read, decide, write on `swarm`; on a version conflict read again and decide again.

    `decide(service)` returns an `Edit`: the keyword changes for `update` (None leaves the
    service alone) and the value to return once they are written. Raises VersionConflict
    after `attempts` conflicts, and SwarmError when Docker refuses the write.
    """
    for attempt in range(1, attempts + 1):
        service = await swarm.service(name_or_id)
        edit = decide(service)
        if asyncio.iscoroutine(edit):
            edit = await edit
        if not edit.changes:
            return edit.value
        try:
            await swarm.update(service, **edit.changes)
        except VersionConflict:
            log.info("version_conflict", service=service.name, version=service.version, attempt=attempt)
            continue
        return edit.value
    raise VersionConflict(f"{name_or_id}: still conflicting after {attempts} attempts")


def check_manager_info(info: Mapping[str, Any]) -> None:
    """NotManager, saying which, unless Docker's `info` describes a swarm manager."""
    swarm = info.get("Swarm") or {}
    state = swarm.get("LocalNodeState", "")
    if state != "active":
        raise NotManager(f"this engine is not part of an active swarm (state {state or 'unknown'!r}): swarmshift "
                         "needs a swarm manager's API (`docker swarm init`, or point DOCKER_HOST at a manager)")
    if not swarm.get("ControlAvailable"):
        raise NotManager("this engine is a swarm worker, not a manager: swarmshift needs a manager's API (run "
                         "the daemons on a manager, `node.role == manager`, or point DOCKER_HOST at one)")


def _apply(
    spec: Mapping[str, Any],
    *,
    replicas: int | None,
    image: str | None,
    labels: Mapping[str, str | None] | None,
    env: Mapping[str, str | None] | None,
) -> dict[str, Any]:
    """A copy of `spec` with the changes applied; the input is left as it was."""
    new = copy.deepcopy(dict(spec))
    if replicas is not None:
        if "Replicated" not in new.get("Mode", {}):
            raise SwarmError(f"{new.get('Name')}: only replicated services can be scaled")
        new["Mode"]["Replicated"]["Replicas"] = int(replicas)
    container = new.setdefault("TaskTemplate", {}).setdefault("ContainerSpec", {})
    if image is not None:
        container["Image"] = image
    if labels:
        merged = dict(new.get("Labels") or {})
        _merge(merged, labels)
        new["Labels"] = merged
    if env:
        current = dict(item.split("=", 1) if "=" in item else (item, "") for item in container.get("Env") or [])
        _merge(current, env)
        container["Env"] = [f"{k}={v}" for k, v in current.items()]
    return new


def _merge(target: dict[str, str], changes: Mapping[str, str | None]) -> None:
    for key, value in changes.items():
        if value is None:
            target.pop(key, None)
        else:
            target[key] = str(value)

