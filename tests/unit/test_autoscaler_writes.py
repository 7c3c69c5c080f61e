"""The autoscaler's write path over the Swarm interface held in memory: written, re-decided, held."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import pytest

from autoscaler.loop import Autoscaler
from autoscaler.policy import STATE_LABEL
from autoscaler.sources import Target, Usage
from swarmshift.labels import BLUEGREEN_LOCK_LABEL
from swarmshift.swarm import Resources
from tests.support.memory import MemorySwarm

LABELS = {"swarmshift.autoscale": "true", "swarmshift.autoscale.max": "8", "swarmshift.autoscale.cpu": "50"}


class BusyCPU:
    """Every task at `percent` of its CPU limit."""

    name = "memory"
    requests = 0

    def __init__(self, percent: float) -> None:
        self.percent = percent

    async def collect(self, targets: Iterable[Target]) -> dict[str, Usage]:
        return {t.service: Usage(cpu=dict.fromkeys(t.tasks, self.percent)) for t in targets}


def evaluate(swarm: MemorySwarm, percent: float = 100.0):
    scaler = Autoscaler(swarm, BusyCPU(percent), clock=lambda: 1_750_000_000.0)
    return asyncio.run(scaler.evaluate(act=True))


def web(swarm: MemorySwarm, **labels: str) -> None:
    swarm.add("web", image="web:1", replicas=2, labels={**LABELS, **labels}, limits=Resources(cpus=1.0))


CASES = {
    # name: (another writer's changes met by the write, the labels, (replicas after, scaled from), scaled, skipped)
    "twice the target: doubled": ([], {}, (4, 2), True, None),
    # The two running tasks still ask for four replicas, decided again from the three now set.
    "another writer scaled meanwhile: decided again on its count": ([{"web": {"replicas": 3}}], {}, (4, 3), True,
                                                                    None),
    "locked by a deploy: held": ([], {BLUEGREEN_LOCK_LABEL: "web-20250615-ab12"}, (2, None), False,
                                 "locked by the blue-green controller (web-20250615-ab12)"),
    "locked meanwhile: nothing written": ([{"web": {"labels": {BLUEGREEN_LOCK_LABEL: "idle"}}}], {}, (2, 2), False,
                                          "locked or updating since it was read"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_a_decision_is_written_at_the_version_it_was_made_on(name):
    others, labels, replicas, scaled, skipped = CASES[name]
    swarm = MemorySwarm()
    web(swarm, **labels)
    swarm.conflicts["web"] = list(others)
    [ev] = evaluate(swarm)
    current = ev.decision.current if ev.decision else None
    assert ((swarm.get("web").replicas, current), ev.scaled, ev.skipped) == (replicas, scaled, skipped)
    # The scale and the state label that remembers it travel in one write.
    assert (STATE_LABEL in swarm.get("web").labels) == scaled


def test_a_write_that_keeps_conflicting_is_abandoned_and_held():
    swarm = MemorySwarm()
    web(swarm)
    swarm.conflicts["web"] = [{}] * 5
    [ev] = evaluate(swarm)
    assert (swarm.get("web").replicas, ev.scaled) == (2, False)
    assert ev.decision is not None and ev.decision.desired == 4  # what it wanted, held
