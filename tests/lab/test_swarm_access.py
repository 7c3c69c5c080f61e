"""The Swarm access layer against the real lab swarm."""

from __future__ import annotations

import asyncio
import time

import pytest

from swarmshift.swarm import DockerUnavailable, NotFound, VersionConflict
from tests.support.lab import LABEL, wait_for
from tests.support.swarm import Swarm


def run(coro):
    return asyncio.run(coro)


def test_scale_up_and_down_with_task_states_and_health(swarm, demo_image):
    svc_ = swarm.service("scale", image=demo_image, replicas=1, labels={"swarmshift.autoscale": "true"})

    async def scenario():
        access = Swarm()
        svc = await access.service(svc_.name)
        assert (svc.replicas, svc.mode, svc.labels["swarmshift.autoscale"]) == (1, "replicated", "true")

        svc = await access.scale(svc, 3)
        assert svc.replicas == 3
        await wait_running(access, svc_.name, 3)
        tasks = await access.tasks_with_health(svc_.name)
        assert len(tasks) == 3
        assert {t.state for t in tasks} == {"running"}
        # The demo image has a HEALTHCHECK, and Swarm reports a task running only once healthy.
        assert {t.health for t in tasks} == {"healthy"}
        assert sorted(t.slot for t in tasks) == [1, 2, 3]

        listed = {s.name: s for s in await access.services(label="swarmshift.autoscale=true")}
        assert listed[svc_.name].replicas == 3
        assert listed[svc_.name].running == 3

        svc = await access.scale(await access.service(svc_.name), 1)
        assert svc.replicas == 1
        await wait_running(access, svc_.name, 1)
        assert await access.replicas(svc_.name) == (1, 1)
        await access.close()

    run(scenario())
    assert swarm.replicas(svc_.name) == 1


async def wait_running(access: Swarm, service: str, count: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if sum(t.running for t in await access.tasks(service)) == count:
            return
        await asyncio.sleep(0.25)
    raise AssertionError(f"{service} never reached {count} running tasks")


def test_unhealthy_tasks_are_never_reported_running(swarm, demo_image):
    svc = swarm.service("sick", image=demo_image, env={"FAIL_HEALTH": "1"}, wait=False)

    async def scenario():
        access = Swarm()
        seen = set()
        deadline = time.monotonic() + 12
        while time.monotonic() < deadline:
            for task in await access.tasks_with_health(svc.name):
                seen.add((task.state, task.health))
            await asyncio.sleep(0.5)
        return seen

    seen = run(scenario())
    assert seen, "no task was ever seen"
    assert not any(state == "running" for state, _ in seen), seen
    assert ("starting", "starting") in seen or any(h == "unhealthy" for _, h in seen), seen


def test_concurrent_write_is_a_version_conflict_and_modify_re_decides(swarm, demo_image):
    svc = swarm.service("race", image=demo_image, replicas=1)

    async def scenario():
        access = Swarm()
        first = await access.service(svc.name)
        second = await access.service(svc.name)
        assert first.version == second.version

        await access.scale(first, 2, labels={"swarmshift.autoscale.state": "one"})
        with pytest.raises(VersionConflict):
            await access.scale(second, 3)  # decided on a stale read: must not land
        after = await access.service(svc.name)
        assert after.replicas == 2 and after.labels["swarmshift.autoscale.state"] == "one"

        # modify() re-reads and decides again on a conflict. Simulate the race by writing
        # from "another daemon" between this daemon's read and its write, once.
        decisions = []

        async def decide(current):
            decisions.append(current.replicas)
            if len(decisions) == 1:
                await access.scale(await access.service(svc.name), current.replicas + 1)
            return {"replicas": current.replicas + 1, "labels": {"swarmshift.autoscale.state": None}}

        result = await access.modify(svc.name, decide)
        assert decisions == [2, 3], "the second decision must see the other writer's change"
        assert result is not None and result.replicas == 4
        assert "swarmshift.autoscale.state" not in result.labels
        assert await access.modify(svc.name, lambda s: None) is None
        return await access.service(svc.name)

    final = run(scenario())
    assert final.replicas == 4
    assert final.labels[LABEL]  # our other labels survive every write


def test_update_image_env_and_labels_keeps_the_rest_of_the_spec(swarm, demo_image, docker_client):
    net = swarm.network()
    svc = swarm.service(
        "upd", image=demo_image, networks=[net], cpu_limit=0.5, memory_limit=64 * 1024 * 1024,
        cpu_reservation=0.25, labels={"keep": "me"}, env={"APP_VERSION": "v1"},
    )

    async def scenario():
        access = Swarm()
        current = await access.service(svc.name)
        assert current.limits.cpus == pytest.approx(0.5)
        assert current.limits.memory == 64 * 1024 * 1024
        assert current.reservations.cpus == pytest.approx(0.25)
        updated = await access.update(
            current, image=f"{demo_image}", env={"APP_VERSION": "v2", "COLOR": "green"}, labels={"new": "x"}
        )
        assert updated.version > current.version
        return updated

    updated = run(scenario())
    spec = docker_client.api.inspect_service(svc.name)["Spec"]
    env = spec["TaskTemplate"]["ContainerSpec"]["Env"]
    assert "APP_VERSION=v2" in env and "COLOR=green" in env
    assert spec["Labels"]["keep"] == "me" and spec["Labels"]["new"] == "x"
    assert spec["EndpointSpec"]["Mode"] == "dnsrr"
    assert [n["Target"] for n in spec["TaskTemplate"]["Networks"]] == [docker_client.networks.get(net).id]
    assert updated.limits.cpus == pytest.approx(0.5)
    wait_for("the updated task to run v2", lambda: any(
        "APP_VERSION=v2" in t["Spec"]["ContainerSpec"].get("Env", [])
        for t in swarm.running_tasks(svc.name)), timeout=60)

    async def update_status():
        return (await Swarm().service(svc.name)).update_status

    # A spec change that restarts tasks is a rolling update: Swarm reports it, then completes it.
    status = wait_for("the rolling update to complete", lambda: (
        (u := run(update_status())) is not None and u.state == "completed" and u), timeout=60)
    assert status.started_at and status.completed_at and not status.in_progress


def test_nodes_and_missing_services():
    async def scenario():
        access = Swarm()
        nodes = await access.nodes()
        assert len(nodes) >= 1
        local = await access.local_node_id()
        me = next(n for n in nodes if n.id == local)
        assert me.role == "manager" and me.state == "ready"
        assert me.resources.cpus >= 1 and me.resources.memory > 512 * 1024 * 1024
        with pytest.raises(NotFound):
            await access.service("swarmshift-no-such-service")

    run(scenario())


def test_an_absent_engine_is_retried_with_backoff_then_reported(tmp_path):
    async def scenario():
        access = Swarm(base_url=f"unix://{tmp_path}/no-docker.sock", retries=3, backoff=0.05, timeout=2)
        started = time.monotonic()
        with pytest.raises(DockerUnavailable):
            await access.services()
        return time.monotonic() - started, access.calls

    elapsed, calls = run(scenario())
    assert calls == 3
    assert 0.15 <= elapsed < 5  # two backoff sleeps (0.05 s then 0.1 s, plus jitter), no hang
