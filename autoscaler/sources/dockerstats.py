"""The `docker` metrics source: the Docker stats API of the engine the daemon talks to.

It sees only the containers on that engine's node, so it suits single-node swarms with no
Prometheus; on a multi-node swarm the loop holds each service with tasks on other nodes
(`autoscaler.sources.reach`). CPU is the counter's increase between two loops, so the first loop
has no CPU data.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any

from autoscaler.sources import SourceDown, Target, Usage, percent
from swarmshift.swarm import DockerUnavailable, NotFound, Swarm, SwarmError

SERVICE = "com.docker.swarm.service.name"
TASK = "com.docker.swarm.task.id"


def working_set(memory_stats: dict[str, Any]) -> int | None:
    """Usage less inactive page cache, as `docker stats` and cAdvisor count it."""
    usage = memory_stats.get("usage")
    if usage is None:
        return None
    stats = memory_stats.get("stats") or {}
    inactive = stats.get("total_inactive_file", stats.get("inactive_file", 0))
    return max(0, usage - inactive)


class DockerStatsSource:
    name = "docker"
    local_only = True  # sees one node's containers: the loop checks what it cannot see (sources.reach)

    def __init__(self, swarm: Swarm, *, max_parallel: int = 16, interval: float | None = None) -> None:
        self.swarm = swarm
        self.interval = interval  # the loop's, to say when the second CPU sample comes
        self._parallel = asyncio.Semaphore(max_parallel)
        self._last_cpu: dict[str, tuple[float, int]] = {}  # container -> (monotonic s, usage ns)
        self.requests = 0

    async def _sample(self, container_id: str) -> tuple[str, dict[str, Any] | None, float]:
        async with self._parallel:
            try:
                stats = await self.swarm.stats(container_id)
            except (NotFound, SwarmError):
                return container_id, None, time.monotonic()  # gone between the list and the stats
            finally:
                self.requests += 1
            return container_id, stats, time.monotonic()

    def _cpu_cores(self, container_id: str, stats: dict[str, Any], at: float) -> float | None:
        total = (stats.get("cpu_stats") or {}).get("cpu_usage", {}).get("total_usage")
        if total is None:
            return None
        previous = self._last_cpu.get(container_id)
        self._last_cpu[container_id] = (at, total)
        if previous is None or at <= previous[0] or total < previous[1]:
            return None
        return (total - previous[1]) / 1e9 / (at - previous[0])

    async def collect(self, targets: Iterable[Target]) -> dict[str, Usage]:
        by_name = {t.service: t for t in targets}
        try:
            containers = await self.swarm.containers(SERVICE)
        except DockerUnavailable as err:
            raise SourceDown(str(err)) from err
        finally:
            self.requests += 1
        wanted = {}
        for c in containers:
            labels = c.get("Labels") or {}
            target = by_name.get(labels.get(SERVICE, ""))
            if target and labels.get(TASK) in target.tasks:
                wanted[c["Id"]] = (target, labels[TASK])
        samples = await asyncio.gather(*(self._sample(cid) for cid in wanted))
        self._last_cpu = {cid: v for cid, v in self._last_cpu.items() if cid in wanted}

        cpu: dict[str, dict[str, float]] = {}
        memory: dict[str, dict[str, float]] = {}
        first: set[str] = set()  # services with a container sampled for the first time
        for cid, stats, at in samples:
            if stats is None:
                continue
            target, task = wanted[cid]
            try:
                if target.cpu:
                    known = cid in self._last_cpu
                    cores = self._cpu_cores(cid, stats, at)
                    if cores is None and not known:
                        first.add(target.service)
                    value = percent(cores, target.cpu_basis) if cores is not None else None
                    if value is not None:
                        cpu.setdefault(target.service, {})[task] = value
                if target.memory:
                    used = working_set(stats.get("memory_stats") or {})
                    value = percent(used, target.memory_basis) if used is not None else None
                    if value is not None:
                        memory.setdefault(target.service, {})[task] = value
            except (TypeError, ValueError, AttributeError, ArithmeticError):
                continue  # a stats document not shaped as the engine documents it: no sample from it
        seen = {target.service for target, _ in wanted.values()}
        return {
            name: Usage(
                cpu=cpu.get(name, {}),
                memory=memory.get(name, {}),
                query_error="the docker source cannot run PromQL" if t.query else None,
                missing=self._missing(name, name in seen, name in first),
            )
            for name, t in by_name.items()
        }

    def _missing(self, service: str, on_this_node: bool, first_sample: bool) -> dict[str, str]:
        """Why a metric of `service` may have no value, as this source alone can know."""
        if not on_this_node:
            why = (f"no running container of service {service} on this node: the docker source reads only the "
                   "engine it talks to (use the prometheus source for a multi-node swarm)")
            return {"cpu": why, "memory": why}
        if first_sample:
            when = f"in {self.interval:g}s" if self.interval else "at the next loop"
            return {"cpu": f"service {service}: first CPU sample taken; CPU use is the increase between two "
                           f"samples, so it needs a second one, {when}"}
        return {}
