"""Quorum loss and non-managers: Docker's answers mapped to NoQuorum and NotManager, and both daemons' loops through an outage.

The error texts are Docker's own (moby/moby#35109, moby/swarmkit#2129: "The swarm does not have
a leader..."; a worker's "This node is not a swarm manager..."), put into the docker SDK's real
APIError. The loops run over the Swarm interface held in memory (tests/support/memory.py), whose
`outage` makes every manager call raise NoQuorum as a leaderless manager does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import docker.errors
import pytest
import requests
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from autoscaler.api import make_app as autoscaler_app
from autoscaler.loop import Autoscaler
from autoscaler.sources import Target, Usage
from bluegreen.config import BlueGreenConfig
from bluegreen.controller import Controller
from bluegreen.labels import APP_LABEL, COLOR_LABEL, PORT_LABEL, RULE_LABEL
from bluegreen.observe import Checks
from swarmshift.availability import Availability
from swarmshift.swarm import (
    DockerUnavailable,
    NoQuorum,
    NotFound,
    NotManager,
    Resources,
    Swarm,
    SwarmError,
    VersionConflict,
    api_error,
    check_manager_info,
)
from tests.support.memory import Clock, MemoryProber, MemoryRouter, MemorySwarm

NO_LEADER = ("rpc error: code = Unknown desc = The swarm does not have a leader. It's possible that too few managers "
             "are online. Make sure more than half of the managers are online.")
WORKER = ("This node is not a swarm manager. Worker nodes can't be used to view or modify cluster state. Please run "
          "this command on a manager node or promote the current node to a manager.")
NO_SWARM = ('This node is not a swarm manager. Use "docker swarm init" or "docker swarm join" to connect this node '
            "to swarm and try again.")


def api_err(status: int, explanation: str, cls: type = docker.errors.APIError) -> docker.errors.APIError:
    response = requests.Response()
    response.status_code = status
    response.reason = {404: "Not Found", 500: "Internal Server Error", 503: "Service Unavailable"}.get(status, "")
    return cls(f"{status} Server Error", response=response, explanation=explanation)


MAPPING = {
    # name: (status, Docker's text, the error it maps to)
    "no leader (500)": (500, NO_LEADER, NoQuorum),
    "no leader (503, newer engines)": (503, NO_LEADER, NoQuorum),
    "old engines: lost leader status": (500, "rpc error: code = 2 desc = raft: failed to process the request: node "
                                             "lost leader status", NoQuorum),
    "a write that waited for a quorum": (500, "rpc error: code = DeadlineExceeded desc = context deadline exceeded",
                                         NoQuorum),
    "old engines: code 4": (500, "rpc error: code = 4 desc = context deadline exceeded", NoQuorum),
    "a worker": (503, WORKER, NotManager),
    "outside a swarm": (503, NO_SWARM, NotManager),
    "a stale version": (500, "rpc error: code = Unknown desc = update out of sequence", VersionConflict),
    "anything else": (500, "rpc error: code = InvalidArgument desc = bad spec", SwarmError),
}


@pytest.mark.parametrize("name", list(MAPPING))
def test_dockers_answers_map_to_the_error_the_daemons_act_on(name):
    status, text, expected = MAPPING[name]
    mapped = api_error("services", api_err(status, text))
    assert type(mapped) is expected
    assert text in str(mapped) and str(mapped).startswith("services: ")


def test_no_quorum_and_not_manager_hold_like_an_engine_that_does_not_answer():
    assert issubclass(NoQuorum, DockerUnavailable) and issubclass(NotManager, DockerUnavailable)
    assert type(api_error("inspect x", api_err(404, "service x not found", docker.errors.NotFound))) is NotFound


class _Api:
    def __init__(self, error: Exception) -> None:
        self.error, self.calls = error, 0

    def services(self, **_):
        self.calls += 1
        raise self.error


class _Client:
    def __init__(self, error: Exception) -> None:
        self.api = _Api(error)

    def close(self) -> None:
        pass


def test_no_quorum_is_retried_with_the_backoff_then_raised():
    client = _Client(api_err(500, NO_LEADER))
    swarm = Swarm(client, retries=3, backoff=0.001)  # type: ignore[arg-type]

    async def main() -> None:
        with pytest.raises(NoQuorum, match="quorum lost"):
            await swarm.services()
        await swarm.close()

    asyncio.run(main())
    assert client.api.calls == 3


def test_not_a_manager_is_not_retried():
    client = _Client(api_err(503, WORKER))
    swarm = Swarm(client, retries=3, backoff=0.001)  # type: ignore[arg-type]

    async def main() -> None:
        with pytest.raises(NotManager, match="not a swarm manager"):
            await swarm.services()
        await swarm.close()

    asyncio.run(main())
    assert client.api.calls == 1


INFOS = {
    "a manager": ({"LocalNodeState": "active", "ControlAvailable": True}, None),
    "a worker": ({"LocalNodeState": "active", "ControlAvailable": False}, "is a swarm worker, not a manager"),
    "no swarm": ({"LocalNodeState": "inactive", "ControlAvailable": False}, "not part of an active swarm"),
}


@pytest.mark.parametrize("name", list(INFOS))
def test_start_up_says_clearly_when_the_engine_is_not_a_manager(name):
    swarm, error = INFOS[name]
    if error is None:
        check_manager_info({"Swarm": swarm})
    else:
        with pytest.raises(NotManager, match=error):
            check_manager_info({"Swarm": swarm})


def test_an_outage_is_logged_once_when_it_starts_and_once_when_it_ends():
    clock = Clock()
    availability = Availability("holding", clock=clock)
    with capture_logs() as logs:
        availability.answered()
        for _ in range(5):
            availability.failed(NoQuorum("services: no leader"))
        assert availability.readiness()[0] is False and availability.view()["swarm"] == "no_quorum"
        clock.advance(30)
        availability.failed(DockerUnavailable("services: connection refused"))  # the engine itself went away
        availability.answered()
        availability.answered()
    assert [(e["event"], e.get("seconds")) for e in logs] == [
        ("swarm_no_quorum", None), ("swarm_quorum_restored", 30.0), ("docker_unavailable", None),
        ("docker_recovered", 0.0)]
    assert availability.readiness() == (True, {"swarm": "ok"})


# --- the autoscaler's loop -----------------------------------------------------------------------

LABELS = {"swarmshift.autoscale": "true", "swarmshift.autoscale.max": "8", "swarmshift.autoscale.cpu": "50"}


class Demand:
    """Two cores of work spread over the service's tasks: 2 tasks at 100 % (of 1 core) want 4 tasks at 50 %."""

    name = "memory"
    requests = 0

    async def collect(self, targets: Iterable[Target]) -> dict[str, Usage]:
        return {t.service: Usage(cpu=dict.fromkeys(t.tasks, 200 / max(1, len(t.tasks)))) for t in targets}


async def _until(condition, seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out")


def test_the_autoscaler_writes_nothing_without_quorum_and_scales_once_when_it_returns():
    swarm = MemorySwarm()
    swarm.add("web", image="web:1", replicas=2, labels=LABELS, limits=Resources(cpus=1.0))
    swarm.outage = NoQuorum(f"services: the swarm has no leader (quorum lost, or an election under way): {NO_LEADER}")
    scaler = Autoscaler(swarm, Demand(), clock=lambda: 1_750_000_000.0)
    seen: dict[str, object] = {}

    async def main() -> None:
        stop = asyncio.Event()
        client = TestClient(TestServer(autoscaler_app(scaler, None)))
        await client.start_server()
        loop = asyncio.create_task(scaler.run(0.01, stop))
        await _until(lambda: swarm.failed_calls >= 5)  # five loops or more without a leader
        answer = await client.get("/readyz")
        seen["readyz"] = (answer.status, (await answer.json())["swarm"])
        seen["writes during"] = list(swarm.writes)
        swarm.outage = None
        await _until(lambda: swarm.writes)
        await asyncio.sleep(0.1)  # several more loops: the state read back holds it at 4
        answer = await client.get("/readyz")
        seen["readyz after"] = (answer.status, await answer.json())
        stop.set()
        await loop
        await client.close()

    with capture_logs() as logs:
        asyncio.run(main())
    assert seen["readyz"] == (503, "no_quorum")
    assert seen["writes during"] == []
    assert [(name, changes["replicas"]) for name, changes in swarm.writes] == [("web", 4)]
    assert seen["readyz after"] == (200, {"status": "ready", "swarm": "ok"})
    names = [e["event"] for e in logs]
    assert names.count("swarm_no_quorum") == 1 and names.count("swarm_quorum_restored") == 1
    assert names.count("service_scaled") == 1 and "loop_failed" not in names
    [started] = [e for e in logs if e["event"] == "swarm_no_quorum"]
    assert "does not have a leader" in started["error"] and started["action"] == "holding every service, retrying"


# --- the controller's loops ----------------------------------------------------------------------

APP = {APP_LABEL: "web", PORT_LABEL: "8000", RULE_LABEL: "Host(`web.example.com`)"}


def test_the_controller_holds_a_deploy_without_quorum_and_finishes_it_once_when_it_returns():
    swarm = MemorySwarm()
    swarm.add("web-blue", image="web:1", replicas=2, labels={**APP, COLOR_LABEL: "blue"})
    swarm.add("web-green", image="web:1", replicas=0, labels={**APP, COLOR_LABEL: "green"})
    router, clock = MemoryRouter(), Clock()
    cfg = BlueGreenConfig(probe_interval=0.2, verification_window=2, healthy_threshold=2, failure_threshold=1,
                          precheck_timeout=30, wait_timeout=30, reconcile_interval=0.2)
    c = Controller(swarm, router, cfg, prober=MemoryProber(), checks=Checks(None, []), clock=clock)
    seen: dict[str, object] = {}

    def phase() -> str:
        return c.apps["web"].state.phase.value

    async def main() -> None:
        await c.start()
        await c.deploy("web", "web:2")
        swarm.outage = NoQuorum(f"services: the swarm has no leader: {NO_LEADER}")
        writes, applied, held = len(swarm.writes), len(router.applied), phase()
        await _until(lambda: swarm.failed_calls >= 4)
        seen["held"] = (len(swarm.writes) - writes, len(router.applied) - applied, phase() == held)
        seen["readiness"] = c.readiness()
        swarm.outage = None
        for _ in range(500):  # the loops go on by themselves; the clock moves the window along
            if phase() == "Stable":
                break
            clock.advance(0.5)
            await asyncio.sleep(0.02)
        seen["readiness after"] = c.readiness()
        await c.stop()

    with capture_logs() as logs:
        asyncio.run(main())
    assert seen["held"] == (0, 0, True)
    ready, fields = seen["readiness"]
    assert not ready and fields["swarm"] == "no_quorum" and "does not have a leader" in fields["error"]
    assert seen["readiness after"] == (True, {"swarm": "ok", "reconciled": True})
    assert phase() == "Stable" and c.apps["web"].state.active.value == "green"
    # The deploy's side effects, each once: the new image written once, traffic moved to green once.
    assert [name for name, changes in swarm.writes if changes.get("image") == "web:2"] == ["web-green"]
    assert [str(r) for _, r in router.applied].count(str(router.routes["web"])) == 1
    names = [e["event"] for e in logs]
    assert names.count("swarm_no_quorum") == 1 and names.count("swarm_quorum_restored") == 1
    assert "tick_failed" not in names and "docker_unavailable" not in names


def test_a_controller_with_no_app_reports_the_end_of_an_outage_too():
    # Its discovery loop is then the only thing that talks to Docker: it must say quorum is back.
    swarm, router = MemorySwarm(), MemoryRouter()
    cfg = BlueGreenConfig(probe_interval=0.2, reconcile_interval=0.2)
    c = Controller(swarm, router, cfg, prober=MemoryProber(), checks=Checks(None, []))
    seen: dict[str, object] = {}

    async def main() -> None:
        await c.start()
        swarm.outage = NoQuorum(f"services: the swarm has no leader: {NO_LEADER}")
        await _until(lambda: swarm.failed_calls >= 2)
        seen["during"] = c.readiness()[0]
        swarm.outage = None
        await _until(lambda: c.readiness()[0])
        await c.stop()

    with capture_logs() as logs:
        asyncio.run(main())
    names = [e["event"] for e in logs]
    assert seen["during"] is False
    assert names.count("swarm_no_quorum") == 1 and names.count("swarm_quorum_restored") == 1
