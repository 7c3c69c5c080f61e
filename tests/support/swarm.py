"""Swarm as the lab tests drive it: the daemons' `Swarm` plus the helpers only tests use."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from swarmshift import swarm
from swarmshift.swarm import Edit, Resources, Service, parse_resources


@dataclass(frozen=True)
class Node:
    id: str
    hostname: str
    role: str
    availability: str
    state: str
    resources: Resources


def parse_node(raw: Mapping[str, Any]) -> Node:
    desc = raw.get("Description", {})
    spec = raw.get("Spec", {})
    return Node(
        id=raw["ID"],
        hostname=desc.get("Hostname", ""),
        role=spec.get("Role", ""),
        availability=spec.get("Availability", ""),
        state=raw.get("Status", {}).get("State", ""),
        resources=parse_resources(desc.get("Resources")),
    )


Changes = dict[str, Any] | None


class Swarm(swarm.Swarm):
    """The daemons' Swarm access, with reads and writes that only the tests need."""

    async def replicas(self, service: str) -> tuple[int | None, int]:
        """(desired, running) for one service."""
        svc = await self.service(service)
        running = sum(1 for t in await self.tasks(svc.id) if t.running)
        return svc.replicas, running

    async def nodes(self) -> list[Node]:
        raws = await self._call("nodes", self.api.nodes)
        return [parse_node(raw) for raw in raws]

    async def scale(self, service: Service, replicas: int, labels: Mapping[str, str | None] | None = None) -> Service:
        return await self.update(service, replicas=replicas, labels=labels)

    async def modify(self, name_or_id: str,  # type: ignore[override]
                     decide: Callable[[Service], Awaitable[Changes] | Changes], *, attempts: int = 5) -> Service | None:
        """`Swarm.modify` with a callback that returns only the changes: the updated service, or None on hold."""
        async def edit(service: Service) -> Edit[bool]:
            changes = decide(service)
            if asyncio.iscoroutine(changes):
                changes = await changes
            return Edit(bool(changes), changes or None)

        wrote = await super().modify(name_or_id, edit, attempts=attempts)
        return await self.service(name_or_id) if wrote else None
