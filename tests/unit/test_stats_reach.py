"""The docker stats source on a multi-node swarm: what it cannot see, held as missing data or scaled on the visible tasks.

The decision is pure (autoscaler.sources.reach, node and task lists as plain data); the loop runs
over the Swarm interface held in memory with nodes and task placement (tests/support/memory.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import pytest
from structlog.testing import capture_logs

from autoscaler.cli import partial_warning, render_plan
from autoscaler.config import AutoscalerConfig
from autoscaler.loop import Autoscaler
from autoscaler.sources import Target, Usage
from autoscaler.sources.reach import coverage, reach
from swarmshift.swarm import Resources
from tests.support.memory import MemorySwarm

NAMES = {"n1": "node1", "n2": "node2", "n3": "node3"}

REACH = {
    # name: (nodes as (id, name), the local node, the names it cannot see)
    "one node": ([("n1", "node1")], "n1", ()),
    "three nodes": ([("n1", "node1"), ("n3", "node3"), ("n2", "node2")], "n1", ("node2", "node3")),
    "a node without a hostname": ([("n1", "node1"), ("n2", "")], "n1", ("n2",)),
}


@pytest.mark.parametrize("name", list(REACH))
def test_what_the_source_cannot_see(name):
    nodes, local, unseen = REACH[name]
    found = reach(nodes, local)
    assert (found.unseen, found.partial) == (unseen, bool(unseen))


COVERAGE = {
    # name: (task id -> node id, visible tasks, the other nodes by name)
    "all here": ({"t1": "n1", "t2": "n1"}, {"t1", "t2"}, ()),
    "spread": ({"t1": "n1", "t2": "n2", "t3": "n3", "t4": "n2"}, {"t1"}, ("node2", "node3")),
    "none here": ({"t1": "n2"}, set(), ("node2",)),
    "no tasks": ({}, set(), ()),
}


@pytest.mark.parametrize("name", list(COVERAGE))
def test_a_services_tasks_as_the_local_source_sees_them(name):
    tasks, visible, elsewhere = COVERAGE[name]
    cover = coverage(tasks, "n1", NAMES)
    assert (set(cover.visible), cover.elsewhere, cover.partial) == (visible, elsewhere, bool(elsewhere))


LABELS = {"swarmshift.autoscale": "true", "swarmshift.autoscale.max": "8", "swarmshift.autoscale.cpu": "50"}


class LocalStats:
    """A node-local source, as the docker source is: every task it is asked about at `percent`."""

    name = "docker"
    requests = 0
    local_only = True

    def __init__(self, percent: float) -> None:
        self.percent = percent
        self.asked: list[frozenset[str]] = []

    async def collect(self, targets: Iterable[Target]) -> dict[str, Usage]:
        targets = list(targets)
        self.asked += [t.tasks for t in targets]
        return {t.service: Usage(cpu=dict.fromkeys(t.tasks, self.percent)) for t in targets}


def three_nodes(placement: list[str] | None) -> MemorySwarm:
    swarm = MemorySwarm()
    swarm.local = "n1"
    swarm.node_list = []
    for node_id, name in NAMES.items():
        swarm.add_node(node_id, name)
    swarm.add("web", image="web:1", replicas=3, labels=LABELS, limits=Resources(cpus=1.0))
    if placement:
        swarm.placement["web"] = placement
    return swarm


CASES = {
    # name: (placement of web's 3 tasks, allow_partial, % on each visible task, replicas after, skipped, unseen)
    "spread, busy: held, no scale-up on a partial sum": (["n1", "n2", "n3"], False, 100.0, 3,
                                                         "missing data: tasks on node2, node3: holding",
                                                         ["node2", "node3"]),
    "spread, idle: held, never a scale-down": (["n1", "n2", "n3"], False, 1.0, 3,
                                               "missing data: tasks on node2, node3: holding", ["node2", "node3"]),
    "all on this node: scaled as on one node": (["n1"], False, 100.0, 6, None, []),
    "spread, allow_partial: scaled on the visible task": (["n1", "n2", "n3"], True, 100.0, 6, None,
                                                          ["node2", "node3"]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_a_service_with_tasks_on_unseen_nodes_is_held_unless_partial_is_allowed(name):
    placement, allow, percent, replicas, skipped, unseen = CASES[name]
    swarm = three_nodes(placement)
    source = LocalStats(percent)
    scaler = Autoscaler(swarm, source, clock=lambda: 1_750_000_000.0, allow_partial=allow)
    with capture_logs() as logs:
        [ev] = asyncio.run(scaler.evaluate(act=True))
        asyncio.run(scaler.evaluate(act=False))  # a second loop logs nothing new
    assert (swarm.get("web").replicas, ev.skipped, ev.unseen_nodes) == (replicas, skipped, unseen)
    assert ev.as_dict()["unseen_nodes"] == unseen
    partial = [e for e in logs if e["event"] == "stats_partial"]
    assert [(e["local_node"], e["unseen_nodes"], e["allow_partial"]) for e in partial] == [
        ("node1", ["node2", "node3"], allow)]
    flagged = [e for e in logs if e["event"] == "service_stats_partial"]
    # Once per change: scaled to 6, the note of the second loop is "2 of 6".
    assert len(flagged) == (0 if not unseen else 2 if allow else 1)
    if unseen and not allow:
        assert source.asked == []  # not even measured: there is nothing to decide on
        assert "1 of 3" not in ev.problems[0] and "2 of 3 task(s) run on node(s) the docker source cannot see " \
                                                  "(node2, node3)" in ev.problems[0]
        assert "unseen nodes: node2, node3" in render_plan([ev])
    if allow:
        # Asked about every task, it measures the one on its node; the two others count at its value.
        assert ev.decision is not None and [m.value for m in ev.decision.metrics] == [100.0]
        assert "measured on 1 of 3 task(s) only" in ev.problems[0]


def test_a_source_that_sees_every_node_is_not_checked():
    swarm = three_nodes(["n1", "n2", "n3"])
    source = LocalStats(100.0)
    source.local_only = False  # type: ignore[misc] - as the prometheus source: cAdvisor on every node
    scaler = Autoscaler(swarm, source, clock=lambda: 1_750_000_000.0)
    with capture_logs() as logs:
        [ev] = asyncio.run(scaler.evaluate(act=True))
    assert (swarm.get("web").replicas, ev.unseen_nodes, scaler.reach) == (6, [], None)
    assert not [e for e in logs if e["event"] == "stats_partial"]


def test_readyz_and_plan_name_the_unseen_nodes_and_the_key_is_in_the_config():
    swarm = three_nodes(["n1", "n2", "n3"])
    scaler = Autoscaler(swarm, LocalStats(50.0), clock=lambda: 1_750_000_000.0)
    asyncio.run(scaler.evaluate(act=False))
    assert scaler.readiness() == (True, {"swarm": "ok", "unseen_nodes": ["node2", "node3"]}) or \
        scaler.readiness()[1]["unseen_nodes"] == ["node2", "node3"]
    assert "cannot see node(s) node2, node3: services with tasks there are held as missing data" in \
        partial_warning(["node2", "node3"], False)
    assert AutoscalerConfig(docker_stats={"allow_partial": True}).docker_stats.allow_partial is True
    assert AutoscalerConfig().docker_stats.allow_partial is False
