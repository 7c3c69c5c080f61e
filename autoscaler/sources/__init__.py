"""The metrics-source interface: per-service, per-task CPU and memory use, whatever the backend."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol


class SourceDown(Exception):
    """The source could not be read at all this loop: hold every service."""


@dataclass(frozen=True)
class Target:
    """What the loop wants measured for one service."""

    service: str
    tasks: frozenset[str]  # ids of the running tasks
    cpu_basis: float = 0.0  # cores per task that 100 % means: the limit, else the reservation
    memory_basis: int = 0  # bytes per task that 100 % means
    cpu: bool = False
    memory: bool = False
    query: str | None = None  # PromQL with {{service}} already substituted


@dataclass(frozen=True)
class Usage:
    """Measured use of one service. Tasks with no sample are simply absent from the maps."""

    cpu: Mapping[str, float] = field(default_factory=dict)  # task id -> % of cpu_basis
    memory: Mapping[str, float] = field(default_factory=dict)  # task id -> % of memory_basis
    query: float | None = None  # the custom query's value for the whole service
    query_error: str | None = None
    # Why a metric (cpu, memory) has no value for any task, in the source's own words.
    missing: Mapping[str, str] = field(default_factory=dict)


class MetricsSource(Protocol):
    name: str
    requests: int  # requests made so far, for loop-cost logging and benchmarks

    async def collect(self, targets: Iterable[Target]) -> dict[str, Usage]: ...


def percent(value: float, basis: float) -> float | None:
    return value / basis * 100 if basis > 0 else None
