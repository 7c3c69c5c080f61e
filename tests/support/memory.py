"""The project's own interfaces held in memory, for unit tests of the controller: Swarm, a router, a prober.

`MemorySwarm` implements `swarmshift.swarm.SwarmAccess` (services with versions, their tasks, the
nodes) rather than faking the Docker API: a write at a stale version is a `VersionConflict`, and
`conflicts` makes the next writes to a service meet another writer first, whose changes land. Every task of a
service runs as soon as the service is written, healthy unless `health` says otherwise, on the
node `placement` names for its slot (this node by default). `outage` makes every manager call
(services, tasks, nodes, updates) raise it, as Swarm without a quorum does.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from bluegreen.apps import App, Color
from bluegreen.phases import Probe, ProbeOutcome
from bluegreen.routers.traefik_doc import merged_document
from bluegreen.smoke import Answer, SmokeOutcome, SmokeRound, evaluate, judge
from bluegreen.state import Routing
from swarmshift import swarm as swarm_access
from swarmshift.swarm import Edit, Node, NotFound, Resources, Service, SwarmError, Task, VersionConflict

T = TypeVar("T")


def _matches(labels: Mapping[str, str], selector: str | None) -> bool:
    if not selector:
        return True
    key, sep, value = selector.partition("=")
    return key in labels and (not sep or labels[key] == value)


class MemorySwarm:
    """Services and their tasks in memory, behind the same interface the daemons use."""

    def __init__(self) -> None:
        self.calls = 0
        self._services: dict[str, Service] = {}  # by id
        self._ids = itertools.count(1)
        self.health: dict[str, str] = {}  # service name -> the health of its tasks (default healthy)
        # Service name -> another writer's changes ({service: {"replicas": 3}}), one per write to it
        # that meets that writer first: the write conflicts, and the other writer's changes land.
        self.conflicts: dict[str, list[dict[str, dict[str, Any]]]] = {}
        self.writes: list[tuple[str, dict[str, Any]]] = []  # (service, changes) in the order they landed
        self.gate: asyncio.Event | None = None  # when set to an unset event, updates wait for it
        self.local = "node"  # the node id of the engine the daemon talks to
        self.node_list: list[Node] = [Node(id="node", hostname="node", role="manager", state="ready",
                                           availability="active", leader=True)]
        self.placement: dict[str, list[str]] = {}  # service name -> node id of each slot, cycled
        self.outage: SwarmError | None = None  # raised by every manager call while set
        self.failed_calls = 0  # manager calls refused by `outage`

    def _manager_call(self) -> None:
        self.calls += 1
        if self.outage is not None:
            self.failed_calls += 1
            raise self.outage

    def add_node(self, node_id: str, hostname: str = "", role: str = "manager") -> Node:
        node = Node(id=node_id, hostname=hostname or node_id, role=role, state="ready", availability="active")
        self.node_list.append(node)
        return node

    # -- set-up ---------------------------------------------------------------------------------

    def add(self, name: str, *, image: str, replicas: int = 1, labels: Mapping[str, str] | None = None,
            limits: Resources | None = None, created_at: float | None = None) -> Service:
        number = next(self._ids)
        # Created one second apart in the order added, unless a test says when.
        created = created_at if created_at is not None else 1_700_000_000.0 + number
        service = Service(id=f"id{number}", name=name, version=1, labels=dict(labels or {}), image=image,
                          replicas=replicas, running=replicas, limits=limits or Resources(), reservations=Resources(),
                          update_status=None, spec={}, created_at=created)
        self._services[service.id] = service
        return service

    def get(self, name: str) -> Service:
        return next(s for s in self._services.values() if s.name == name)

    # -- reads ----------------------------------------------------------------------------------

    async def services(self, label: str | None = None) -> list[Service]:
        self._manager_call()
        await asyncio.sleep(0)
        return [s for s in self._services.values() if _matches(s.labels, label)]

    async def service(self, name_or_id: str) -> Service:
        self._manager_call()
        await asyncio.sleep(0)
        for s in self._services.values():
            if name_or_id in (s.id, s.name):
                return s
        raise NotFound(f"inspect {name_or_id}: no such service")

    async def tasks(self, service: str | None = None, *, desired: str | None = "running") -> list[Task]:
        if self.outage is not None:
            self._manager_call()
        return [t for s in self._services.values() if service in (None, s.id, s.name) for t in self._tasks(s)]

    async def tasks_with_health(self, service: str) -> list[Task]:
        return await self.tasks(service)

    def _tasks(self, s: Service) -> list[Task]:
        nodes = self.placement.get(s.name) or [self.local]
        return [Task(id=f"{s.id}.{slot}", service_id=s.id, slot=slot, node_id=nodes[(slot - 1) % len(nodes)],
                     state="running",
                     desired_state="running", message="", error="", container_id=None,
                     health=self.health.get(s.name, "healthy"))
                for slot in range(1, (s.replicas or 0) + 1)]

    # -- writes ---------------------------------------------------------------------------------

    async def update(self, service: Service, *, replicas: int | None = None, image: str | None = None,
                     labels: Mapping[str, str | None] | None = None,
                     env: Mapping[str, str | None] | None = None) -> Service:
        self._manager_call()
        if self.gate is not None:
            await self.gate.wait()
        await asyncio.sleep(0)
        if self.conflicts.get(service.name):
            other = self.conflicts[service.name].pop(0)
            self._write(self._services[service.id], {})  # another writer got there first
            for name, changes in other.items():
                self._write(self.get(name), changes)
        current = self._services[service.id]
        if current.version != service.version:
            raise VersionConflict(f"update {service.name}: update out of sequence")
        changes = {k: v for k, v in (("image", image), ("replicas", replicas), ("labels", labels)) if v is not None}
        self.writes.append((service.name, changes))
        return self._write(current, changes)

    def _write(self, current: Service, changes: Mapping[str, Any]) -> Service:
        labels = dict(current.labels)
        for key, value in (changes.get("labels") or {}).items():
            if value is None:
                labels.pop(key, None)
            else:
                labels[key] = value
        replicas = changes.get("replicas", current.replicas)
        new = replace(current, version=current.version + 1, labels=labels, image=changes.get("image", current.image),
                      replicas=replicas, running=replicas)
        self._services[new.id] = new
        return new

    async def modify(self, name_or_id: str, decide: Callable[[Service], Awaitable[Edit[T]] | Edit[T]], *,
                     attempts: int = 5) -> T:
        return await swarm_access.modify(self, name_or_id, decide, attempts=attempts)

    async def containers(self, label: str) -> list[dict[str, Any]]:
        raise SwarmError("containers: not held in memory")

    async def nodes(self) -> list[Node]:
        self._manager_call()
        return list(self.node_list)

    async def local_node_id(self) -> str:
        return self.local

    async def stats(self, container_id: str) -> dict[str, Any]:
        raise SwarmError("stats: not held in memory")

    async def exec(self, container_id: str, argv: list[str], *, within: float | None = None) -> tuple[int, str]:
        raise SwarmError("exec: not held in memory")

    async def signal(self, container_id: str, sig: str | int) -> None:
        raise SwarmError("signal: not held in memory")

    async def close(self) -> None:
        pass


@dataclass
class MemoryRouter:
    """A router that runs whatever it is given at once, unless told to refuse or to stay unconfirmed."""

    kind: str = "memory"
    routes: dict[str, Routing] = field(default_factory=dict)
    applied: list[tuple[str, Routing]] = field(default_factory=list)
    refuse: str | None = None  # RouterError text for every apply
    unconfirmed: bool = False
    ready: bool = False
    up: dict[tuple[str, Color], bool | None] = field(default_factory=dict)  # servers_up's answers; else None
    asked_up: list[tuple[str, Color]] = field(default_factory=list)  # every servers_up question, in order

    async def apply(self, app: App, routing: Routing) -> None:
        from bluegreen.routers import RouterError

        if self.refuse:
            raise RouterError(self.refuse)
        self.applied.append((app.name, routing))
        if not self.unconfirmed:
            self.routes[app.name] = routing

    async def read(self, app: App) -> Routing | None:
        return self.routes.get(app.name)

    async def confirm(self, app: App, routing: Routing) -> bool:
        return self.routes.get(app.name) == routing

    async def servers_up(self, app: App, color: Color) -> bool | None:
        self.asked_up.append((app.name, color))
        return self.up.get((app.name, color))

    def mark_ready(self) -> None:
        self.ready = True

    def traefik_document(self, routes: Iterable[tuple[App, Routing]]) -> dict[str, Any]:
        return merged_document(routes)

    async def remove(self, app: str) -> None:
        self.routes.pop(app, None)

    async def close(self) -> None:
        pass


@dataclass
class MemoryProber:
    """Probe rounds that answer as `outcomes` says per color (OK by default), recording each round."""

    outcomes: dict[Color, Probe] = field(default_factory=dict)
    rounds: list[tuple[str, Color, bool]] = field(default_factory=list)
    answers: dict[str, Answer] = field(default_factory=dict)  # smoke answers by path
    smoke_unreachable: str | None = None  # every smoke round finds no path, with this detail
    smoked: list[tuple[str, Color, tuple[str, ...]]] = field(default_factory=list)

    async def probe(self, app: App, color: Color, *, routed: Routing | None, verify: bool = False) -> Probe:
        self.rounds.append((app.name, color, verify))
        return self.outcomes.get(color, Probe(ProbeOutcome.OK, "in memory"))

    async def smoke(self, app: App, color: Color, requests, *, routed: Routing | None) -> SmokeRound:
        """Each request answered by `answers` (path -> Answer; 200 "ok" in 5 ms by default), judged for real."""
        self.smoked.append((app.name, color, tuple(r.describe() for r in requests)))
        if self.smoke_unreachable is not None:
            return SmokeRound(SmokeOutcome.UNREACHABLE, detail=self.smoke_unreachable)
        verdicts = []
        for request in requests:
            verdicts.append(evaluate(request, "preview route", self.answers.get(request.path, Answer(0.005, 200, "ok"))))
            if not verdicts[-1].ok:
                break
        return judge(verdicts)

    async def close(self) -> None:
        pass


@dataclass
class Clock:
    """Wall-clock time that moves only when a test says so."""

    now: float = 1_750_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class MemoryAnalyst:
    """The canary analysis (bluegreen.analysis.Analyst) held in memory: each color's readings as a test sets them.

    `readings[color]` is what every analysis of that color returns (its window set to the one
    asked for); `unavailable` makes every analysis an unanswered one. Each call is recorded.
    """

    readings: dict[Color, Any] = field(default_factory=dict)
    unavailable: str | None = None
    calls: list[tuple[str, Color, float]] = field(default_factory=list)

    async def analyse(self, app: App, color: Color, window: float, quantile: float) -> Any:
        from bluegreen.canary import CanaryReading

        self.calls.append((app.name, color, window))
        if self.unavailable is not None:
            return CanaryReading(window=window, error=self.unavailable)
        reading = self.readings.get(color, CanaryReading(window=window, requests=100.0, errors=0.0, latency=0.05))
        return replace(reading, window=window)
