"""Numbers the autoscaler must not act on, failures that must stay with one service, and memory that must not grow."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Iterable

import pytest
import structlog

from autoscaler.decide import History, MetricSample, Observation, Reason, decide
from autoscaler.events import EventLog
from autoscaler.loop import Autoscaler
from autoscaler.policy import Policy, PolicyFile, Step
from autoscaler.sources import Target, Usage
from autoscaler.sources.dockerstats import DockerStatsSource
from swarmshift.swarm import Resources
from tests.support.memory import Clock, MemorySwarm

CPU = {"swarmshift.autoscale": "true", "swarmshift.autoscale.max": "8", "swarmshift.autoscale.cpu": "50"}
QUERY = {"swarmshift.autoscale": "true", "swarmshift.autoscale.max": "8", "swarmshift.autoscale.query": "rps",
         "swarmshift.autoscale.query.target": "10"}
INF, NAN = math.inf, math.nan
NOW = 1_750_000_000.0
OPEN = History.after_restart(4, NOW - 3600)  # no window holds anything back


# --- The decision --------------------------------------------------------------------------------

BAD = [INF, -INF, NAN, -1.0]


@pytest.mark.parametrize("bad", BAD, ids=["+inf", "-inf", "nan", "negative"])
@pytest.mark.parametrize("mode", ["proportional", "step"])
def test_a_non_finite_or_negative_task_value_is_no_data(bad, mode):
    policy = Policy(max=10, cpu=50, mode=mode, step=Step(80, 20))
    obs = Observation("web", 4, (MetricSample("cpu", 50, values=(5.0, 5.0, 5.0, bad)),))
    decision = decide(obs, policy, OPEN, NOW)
    assert (decision.desired, decision.reason) == (4, Reason.NO_DATA)
    assert "non-finite or negative" in decision.detail


@pytest.mark.parametrize("bad", BAD, ids=["+inf", "-inf", "nan", "negative"])
def test_a_non_finite_or_negative_query_total_is_no_data(bad):
    obs = Observation("web", 4, (MetricSample("query", 10, total=bad),))
    decision = decide(obs, Policy(max=10, query="q", query_target=10), OPEN, NOW)
    assert (decision.desired, decision.reason) == (4, Reason.NO_DATA)


def test_a_bad_metric_holds_a_scale_down_the_others_ask_for():
    obs = Observation("web", 4, (MetricSample("cpu", 50, values=(1.0,) * 4), MetricSample("memory", 50, values=(INF,) * 4)))
    decision = decide(obs, Policy(max=10, cpu=50, memory=50), OPEN, NOW)
    assert (decision.desired, decision.reason) == (4, Reason.NO_DATA)


def test_a_bad_metric_does_not_hold_a_scale_up_the_others_ask_for():
    obs = Observation("web", 4, (MetricSample("cpu", 50, values=(100.0,) * 4), MetricSample("memory", 50, values=(NAN,))))
    assert decide(obs, Policy(max=10, cpu=50, memory=50), OPEN, NOW).desired == 8


def test_finite_values_that_overflow_in_a_sum_are_clamped_to_max():
    obs = Observation("web", 2, (MetricSample("cpu", 50, values=(1e308, 1e308)),))
    decision = decide(obs, Policy(max=10, cpu=50), OPEN, NOW)
    assert (decision.desired, decision.reason) == (6, Reason.RATE_LIMITED)  # 2 + max(4 pods, 100 %)
    json.dumps(decision.as_dict(), allow_nan=False)  # what /v1/events and the events file serve


# --- The loop: one service's trouble stays with it ----------------------------------------------


class Values:
    """Each service's tasks at the CPU % given for it, and each custom query at the total given."""

    name = "memory"
    requests = 0

    def __init__(self, cpu: dict[str, float], query: dict[str, float] | None = None) -> None:
        self.cpu, self.query = cpu, query or {}

    async def collect(self, targets: Iterable[Target]) -> dict[str, Usage]:
        return {t.service: Usage(cpu=dict.fromkeys(t.tasks, self.cpu[t.service]) if t.service in self.cpu else {},
                                 query=self.query.get(t.service)) for t in targets}


def cpu_swarm(*names: str) -> MemorySwarm:
    swarm = MemorySwarm()
    for name in names:
        swarm.add(name, image=f"{name}:1", replicas=2, labels=CPU, limits=Resources(cpus=1.0))
    return swarm


def test_an_infinite_metric_holds_its_service_and_the_others_still_scale():
    swarm = cpu_swarm("a-inf", "b-busy")
    daemon = Autoscaler(swarm, Values({"a-inf": INF, "b-busy": 100.0}), clock=Clock())
    evaluations = {e.service: e for e in asyncio.run(daemon.evaluate())}
    assert evaluations["a-inf"].decision.reason == Reason.NO_DATA
    assert (swarm.get("a-inf").replicas, swarm.get("b-busy").replicas) == (2, 4)


def test_an_infinite_query_holds_its_service_and_the_others_still_scale():
    swarm = MemorySwarm()
    swarm.add("a-query", image="a:1", replicas=2, labels=QUERY)
    swarm.add("b-busy", image="b:1", replicas=2, labels=CPU, limits=Resources(cpus=1.0))
    daemon = Autoscaler(swarm, Values({"b-busy": 100.0}, {"a-query": INF}), PolicyFile(queries={"rps": "sum(x)"}),
                        clock=Clock())
    asyncio.run(daemon.evaluate())
    assert (swarm.get("a-query").replicas, swarm.get("b-busy").replicas) == (2, 4)


def test_a_failure_on_one_service_is_logged_once_and_the_others_go_on(monkeypatch):
    swarm, clock = cpu_swarm("a-broken", "b-busy"), Clock()
    daemon = Autoscaler(swarm, Values({"a-broken": 100.0, "b-busy": 100.0}), clock=clock)
    original = daemon._decide_and_act

    async def flaky(svc, *args):
        if svc.name == "a-broken":
            raise OverflowError("cannot convert float infinity to integer")
        return await original(svc, *args)

    monkeypatch.setattr(daemon, "_decide_and_act", flaky)
    with structlog.testing.capture_logs() as logged:
        for _ in range(3):
            evaluations = {e.service: e for e in asyncio.run(daemon.evaluate())}
            clock.advance(60)  # past the rate limits' periods
    failures = [e for e in logged if e["event"] == "service_evaluation_failed"]
    assert len(failures) == 1 and failures[0]["service"] == "a-broken"
    assert evaluations["a-broken"].skipped == "evaluation failed: holding"
    assert swarm.get("b-busy").replicas == 8  # scaled on every loop: 2 -> 4 -> 8


def test_a_service_that_goes_leaves_nothing_behind():
    swarm = cpu_swarm("web", "api")
    daemon = Autoscaler(swarm, Values({"web": 100.0, "api": 100.0}), clock=Clock())
    asyncio.run(daemon.evaluate())
    gone = swarm.get("api")
    assert gone.id in daemon._histories and gone.id in daemon._locks
    del swarm._services[gone.id]  # noqa: SLF001 - the service is removed from the swarm
    asyncio.run(daemon.evaluate())
    kept = [str(k) for k in (*daemon._histories, *daemon._locks, *daemon._recovered, *daemon._reported)]
    assert not [k for k in kept if gone.id == k or k.startswith("api#")]
    assert not [s for m in daemon.telemetry.registry.collect() for s in m.samples if s.labels.get("service") == "api"]
    assert daemon._in_scope == {"web"}


# --- Sources: each names its own cause of missing data -------------------------------------------


class OneNode:
    """A Docker engine with one container per task of service web, whose CPU counter grows 0.5 s per second."""

    def __init__(self) -> None:
        self.usage = 0

    async def containers(self, label: str):
        return [{"Id": "c1", "Labels": {"com.docker.swarm.service.name": "web", "com.docker.swarm.task.id": "t1"}}]

    async def stats(self, container_id: str):
        self.usage += 500_000_000
        return {"cpu_stats": {"cpu_usage": {"total_usage": self.usage}}, "memory_stats": {"usage": 1 << 20}}


def test_the_docker_source_says_its_first_cpu_sample_needs_a_second():
    source = DockerStatsSource(OneNode(), interval=15)  # type: ignore[arg-type] - the calls it makes
    targets = [Target("web", frozenset({"t1"}), cpu_basis=1.0, cpu=True), Target("api", frozenset({"t2"}), cpu=True)]
    usage = asyncio.run(source.collect(targets))
    assert usage["web"].missing == {"cpu": "service web: first CPU sample taken; CPU use is the increase between "
                                           "two samples, so it needs a second one, in 15s"}
    assert "cAdvisor" not in usage["api"].missing["cpu"] and "on this node" in usage["api"].missing["cpu"]
    assert asyncio.run(source.collect(targets))["web"].missing == {}


def test_the_loop_shows_the_sources_own_reason():
    swarm = cpu_swarm("web")

    class First:
        name, requests = "docker", 0

        async def collect(self, targets):
            return {t.service: Usage(missing={"cpu": "first CPU sample taken"}) for t in targets}

    [ev] = asyncio.run(Autoscaler(swarm, First(), clock=Clock()).evaluate())
    assert ev.problems == ["first CPU sample taken"]


# --- The events file -----------------------------------------------------------------------------


def test_the_events_file_is_rotated_by_size_and_keeps_the_order(tmp_path):
    path = tmp_path / "events.jsonl"
    log = EventLog(keep=1000, path=path, max_bytes=4096)
    for i in range(300):
        log.record({"n": i, "pad": "x" * 20})
    log.close()
    rotated = path.with_name("events.jsonl.1")
    assert path.stat().st_size <= 4096 and rotated.stat().st_size <= 4096
    numbers = [json.loads(line)["n"] for f in (rotated, path) for line in f.read_text().splitlines()]
    assert numbers == sorted(numbers) and numbers[-1] == 299
    assert [e["n"] for e in EventLog(keep=1000, path=path).recent()] == numbers  # read back across both files


def test_recording_an_event_does_not_wait_for_the_disk(tmp_path, monkeypatch):
    import os
    import threading

    release = threading.Event()
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (release.wait(5), real_fsync(fd)))
    log = EventLog(path=tmp_path / "events.jsonl")
    log.record({"n": 1})  # the writer thread is stuck in fsync; recording returns all the same
    assert log.recent() == [{"n": 1}]
    release.set()
    log.close()
    assert (tmp_path / "events.jsonl").read_text() == '{"n":1}\n'


def test_a_name_that_cannot_be_substituted_into_promql_is_reported_once():
    swarm = MemorySwarm()
    swarm.add('web"x', image="web:1", replicas=2, labels=QUERY)  # no Docker would take it; a fake might
    daemon = Autoscaler(swarm, Values({}), PolicyFile(queries={"rps": 'sum(x{s="{{service}}"})'}), clock=Clock())
    with structlog.testing.capture_logs() as logged:
        for _ in range(3):
            [ev] = asyncio.run(daemon.evaluate())
    assert ev.skipped == "invalid policy" and "not a Docker service name" in ev.problems[0]
    assert [e["event"] for e in logged if e["log_level"] == "error"] == ["service_query_invalid"]
