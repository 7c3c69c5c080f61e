"""The `prometheus` metrics source: cAdvisor series through PromQL, one query per metric per loop.

Values are passed on as Prometheus gives them, NaN and infinities included: a task whose value
is NaN is not a task without a series, and the decision counts such a metric as no data (held,
never scaled down), where a dropped series would let the others scale the service down.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable

from autoscaler.sources import SourceDown, Target, Usage, percent
from swarmshift.prometheus import Prometheus, PrometheusUnavailable, QueryError

# Each default query returns one series per task. Where the container has a limit, the value
# is already the fraction of it (`basis="limit"`, from cAdvisor's quota/period or memory limit);
# otherwise it is absolute (cores or bytes) and the loop divides by the service's reservation.
CPU_QUERY = """
label_replace(
  sum by ({service_label}, {task_label}) (rate(container_cpu_usage_seconds_total{{{service_label}!=""}}[{window}]))
  / sum by ({service_label}, {task_label}) (
      container_spec_cpu_quota{{{service_label}!=""}} / container_spec_cpu_period{{{service_label}!=""}}),
  "basis", "limit", "", "")
or on ({service_label}, {task_label})
label_replace(
  sum by ({service_label}, {task_label}) (rate(container_cpu_usage_seconds_total{{{service_label}!=""}}[{window}])),
  "basis", "absolute", "", "")
"""

MEMORY_QUERY = """
label_replace(
  sum by ({service_label}, {task_label}) (container_memory_working_set_bytes{{{service_label}!=""}})
  / sum by ({service_label}, {task_label}) (container_spec_memory_limit_bytes{{{service_label}!=""}} > 0),
  "basis", "limit", "", "")
or on ({service_label}, {task_label})
label_replace(
  sum by ({service_label}, {task_label}) (container_memory_working_set_bytes{{{service_label}!=""}}),
  "basis", "absolute", "", "")
"""

SERVICE_LABEL = "container_label_com_docker_swarm_service_name"
TASK_LABEL = "container_label_com_docker_swarm_task_name"


def task_id(task_name: str) -> str:
    """Swarm names a task's container `<service>.<slot>.<task id>`; the id is what we match on."""
    return task_name.rsplit(".", 1)[-1]


class PrometheusSource:
    name = "prometheus"

    def __init__(
        self,
        client: Prometheus,
        *,
        window: str = "1m",
        service_label: str = SERVICE_LABEL,
        task_label: str = TASK_LABEL,
        cpu_query: str = CPU_QUERY,
        memory_query: str = MEMORY_QUERY,
        max_parallel_custom: int = 8,
    ) -> None:
        self.client = client
        self.service_label = service_label
        self.task_label = task_label
        fields = {"service_label": service_label, "task_label": task_label, "window": window}
        self.cpu_query = cpu_query.format(**fields).strip()
        self.memory_query = memory_query.format(**fields).strip()
        self._custom = asyncio.Semaphore(max_parallel_custom)

    @property
    def requests(self) -> int:
        return self.client.requests

    async def _per_task(self, promql: str, targets: dict[str, Target], basis_of) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for sample in await self.client.query(promql, keep_nan=True):
            service = sample.labels.get(self.service_label, "")
            target = targets.get(service)
            if target is None:
                continue
            task = task_id(sample.labels.get(self.task_label, ""))
            if task not in target.tasks:
                continue  # a task that stopped: its series lingers until Prometheus marks it stale
            if sample.labels.get("basis") == "limit":
                value = sample.value * 100
            else:
                value = percent(sample.value, basis_of(target))
                if value is None:
                    continue
            out.setdefault(service, {})[task] = value
        return out

    async def _custom_query(self, target: Target) -> tuple[float | None, str | None]:
        async with self._custom:
            try:
                samples = await self.client.query(target.query or "", keep_nan=True)
            except QueryError as err:
                return None, f"Prometheus refused the query: {err}"
        if len(samples) != 1:
            return None, f"the query returned {len(samples)} series, expected exactly 1"
        value = samples[0].value
        if not math.isfinite(value) or value < 0:
            # A rate over a counter reset, a division by zero: no load to act on. Held as no data.
            return None, f"the query returned {value}: not a load (counted as no data, holding)"
        return value, None

    async def collect(self, targets: Iterable[Target]) -> dict[str, Usage]:
        by_name = {t.service: t for t in targets}
        cpu_targets = {n: t for n, t in by_name.items() if t.cpu}
        mem_targets = {n: t for n, t in by_name.items() if t.memory}
        custom = [t for t in by_name.values() if t.query]
        try:
            cpu, memory, *answers = await asyncio.gather(
                self._per_task(self.cpu_query, cpu_targets, lambda t: t.cpu_basis) if cpu_targets else _empty(),
                self._per_task(self.memory_query, mem_targets, lambda t: t.memory_basis) if mem_targets else _empty(),
                *(self._custom_query(t) for t in custom),
            )
        except PrometheusUnavailable as err:
            raise SourceDown(str(err)) from err
        queried = {t.service: answer for t, answer in zip(custom, answers, strict=True)}
        return {
            name: Usage(
                cpu=cpu.get(name, {}),
                memory=memory.get(name, {}),
                query=queried.get(name, (None, None))[0],
                query_error=queried.get(name, (None, None))[1],
            )
            for name in by_name
        }


async def _empty() -> dict:
    return {}
