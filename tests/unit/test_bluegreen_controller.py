"""Table tests of the controller's orchestration: phases chained, one operation at a time, conflicts, alerts.

They run the real Controller over the project's own Swarm interface held in memory
(tests/support/memory.py), with a router and a prober in memory too. The lab tests prove the
claims against Docker, Traefik and nginx; these pin down the wiring between the pieces.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from bluegreen.apps import Color
from bluegreen.config import BlueGreenConfig
from bluegreen.controller import Busy, Controller
from bluegreen.labels import APP_LABEL, COLOR_LABEL, LOCK_LABEL, PORT_LABEL, RULE_LABEL
from bluegreen.observe import Checks
from bluegreen.phases import Probe, ProbeOutcome, Refused
from bluegreen.state import Routing
from swarmshift import alerts
from swarmshift.swarm import SwarmError
from tests.support.memory import Clock, MemoryProber, MemoryRouter, MemorySwarm

LABELS = {APP_LABEL: "web", PORT_LABEL: "8000", RULE_LABEL: "Host(`web.example.com`)"}
FAILED = Probe(ProbeOutcome.FAILED, "HTTP 500")
BASE = dict(probe_interval=1, verification_window=2, healthy_threshold=2, failure_threshold=1, precheck_timeout=3,
            wait_timeout=3)


@dataclass
class World:
    swarm: MemorySwarm
    router: MemoryRouter
    prober: MemoryProber
    clock: Clock
    controller: Controller

    async def tick(self, alert: str | None = None) -> str:
        """One tick of the app, a probe interval after the last; the phase it ends in."""
        rt = await self.controller.runtime("web")
        async with rt.lock:
            await self.controller.ticker.run(rt, alert=alert)
        self.clock.advance(1)
        return self.phase()

    def phase(self) -> str:
        return self.controller.apps["web"].state.phase.value

    def active(self) -> str:
        return self.controller.apps["web"].state.active.value


def world(**config) -> World:
    swarm = MemorySwarm()
    swarm.add("web-blue", image="web:1", replicas=2, labels={**LABELS, COLOR_LABEL: "blue"})
    swarm.add("web-green", image="web:1", replicas=0, labels={**LABELS, COLOR_LABEL: "green"})
    router, prober, clock = MemoryRouter(), MemoryProber(), Clock()
    cfg = BlueGreenConfig(**{**BASE, **config})
    controller = Controller(swarm, router, cfg, prober=prober, checks=Checks(None, []), clock=clock)
    return World(swarm, router, prober, clock, controller)


def run(scenario: Callable[[World], object], **config) -> World:
    w = world(**config)

    async def main() -> None:
        await w.tick()  # adopts the state (blue active) and routes it
        await scenario(w)

    asyncio.run(main())
    return w


def fail_green_after_switch(w: World, phase: str) -> None:
    if phase == "Verifying":
        w.prober.outcomes[Color.GREEN] = FAILED


def fail_green(w: World, phase: str) -> None:
    w.prober.outcomes[Color.GREEN] = FAILED


def unhealthy_green(w: World, phase: str) -> None:
    w.swarm.health["web-green"] = "unhealthy"


# --- phases chained ----------------------------------------------------------------------------

DEPLOYS = {
    # name: (what happens before each tick, the phase after each tick, active at the end, routing at the end)
    "a healthy release goes live": (
        None, ["Waiting", "PreChecks", "PreChecks", "Verifying", "Verifying", "Stable"], "green",
        Routing.all_to(Color.GREEN)),
    "a release failing after the switch is rolled back": (
        # The window's first round passed; the next two fail, and two is more than failure_threshold 1.
        fail_green_after_switch, ["Waiting", "PreChecks", "PreChecks", "Verifying", "Verifying", "RolledBack"], "blue",
        Routing.all_to(Color.BLUE)),
    "a release failing its pre-checks never takes traffic": (
        fail_green, ["Waiting", "PreChecks", "PreChecks", "PreChecks", "Failed"], "blue", Routing.all_to(Color.BLUE)),
    "a release whose tasks stay unhealthy times out waiting": (
        unhealthy_green, ["Waiting", "Waiting", "Waiting", "Failed"], "blue", Routing.all_to(Color.BLUE)),
}


@pytest.mark.parametrize("name", list(DEPLOYS))
def test_a_deploy_chains_its_phases_tick_by_tick(name):
    before, phases, active, routing = DEPLOYS[name]
    seen: list[str] = []

    async def scenario(w: World) -> None:
        state = await w.controller.deploy("web", "web:2")
        assert state.phase.value == "Preparing"
        for _ in phases:
            if before is not None:
                before(w, w.phase())
            seen.append(await w.tick())

    w = run(scenario)
    assert seen == phases
    assert w.active() == active
    assert w.router.routes["web"] == routing
    assert w.swarm.get("web-green").image == "web:2"  # the idle color got the release in every case
    # At rest, the locks say which color the autoscaler may scale: the active one.
    locks = {c: w.swarm.get(f"web-{c}").labels.get(LOCK_LABEL) for c in ("blue", "green")}
    assert locks == {active: None, ("green" if active == "blue" else "blue"): "idle"}


def test_the_state_is_written_before_traffic_moves_and_on_both_colors():
    async def scenario(w: World) -> None:
        await w.controller.deploy("web", "web:2")
        while w.phase() != "Stable":
            routes_before = len(w.router.applied)
            writes_before = len(w.swarm.writes)
            await w.tick()
            if len(w.router.applied) > routes_before:  # a step that moved traffic wrote its state first
                assert len(w.swarm.writes) > writes_before

    w = run(scenario)
    generations = {w.swarm.get(f"web-{c}").labels["swarmshift.bluegreen.state.generation"] for c in ("blue", "green")}
    assert len(generations) == 1


# --- the router's word on the color a rollback goes back to --------------------------------------


def test_a_rollback_asks_the_router_whether_the_color_back_is_up_and_waits_while_it_is_not():
    steps = []

    async def tick(w: World) -> str:
        rt = await w.controller.runtime("web")
        async with rt.lock:
            steps.extend(await w.controller.ticker.run(rt))
        w.clock.advance(1)
        return w.phase()

    async def scenario(w: World) -> None:
        await _verifying(w)
        w.router.unconfirmed = True  # the route back is not confirmed at once: RollingBack is stored
        w.prober.outcomes[Color.GREEN] = FAILED
        while w.phase() != "RollingBack":
            await w.tick()
        assert w.router.asked_up == []  # nothing is asked outside RollingBack
        w.router.unconfirmed = False
        w.router.up[("web", Color.BLUE)] = False  # Traefik's health check has not seen blue's task yet
        applied = len(w.router.applied)
        assert await tick(w) == "RollingBack"
        assert len(w.router.applied) == applied, "the route back went out while the router had blue down"
        assert "traffic waits: the router reports no server of web-blue up yet" in steps[-1].reason
        assert w.router.asked_up == [("web", Color.BLUE)]
        w.router.up[("web", Color.BLUE)] = True
        assert await tick(w) == "RolledBack"
        asked = len(w.router.asked_up)
        await w.tick()  # at rest again: not asked any more
        assert len(w.router.asked_up) == asked

    w = run(scenario)
    assert w.router.routes["web"] == Routing.all_to(Color.BLUE)


# --- one operation at a time -------------------------------------------------------------------

IN_FLIGHT = {
    # a second request while a deploy is Preparing: the refusal code, or the phase it leads to
    "deploy": ("busy", None),
    "switch": ("busy", None),
    "rollback": (None, "Failed"),
}


@pytest.mark.parametrize("request_", list(IN_FLIGHT))
def test_a_deploy_in_flight_refuses_another_operation_but_not_a_rollback(request_):
    code, phase = IN_FLIGHT[request_]

    async def scenario(w: World) -> None:
        await w.controller.deploy("web", "web:2")
        second = {"deploy": lambda: w.controller.deploy("web", "web:3"),
                  "switch": lambda: w.controller.switch("web"),
                  "rollback": lambda: w.controller.rollback("web")}[request_]
        if code is not None:
            with pytest.raises(Refused) as err:
                await second()
            assert err.value.code == code
            assert w.phase() == "Preparing"
        else:
            assert (await second()).phase.value == phase

    run(scenario)


def test_a_request_that_finds_another_request_running_is_busy():
    async def scenario(w: World) -> None:
        w.swarm.gate = asyncio.Event()  # the first request's writes wait
        first = asyncio.create_task(w.controller.deploy("web", "web:2"))
        for _ in range(100):  # until the first request holds the app
            if w.controller.apps["web"].request is not None:
                break
            await asyncio.sleep(0)
        with pytest.raises(Busy, match="deploy web:2 is running"):
            await w.controller.switch("web")
        w.swarm.gate.set()
        assert (await first).phase.value == "Preparing"

    run(scenario)


# --- version conflicts ---------------------------------------------------------------------------

CONFLICTS = {
    # another writer's changes met by the request's first write: the outcome
    "one conflict: decided again and written": ([{}], "Preparing", 2),
    "the source scaled meanwhile: the target follows it": ([{"web-blue": {"replicas": 3}}], "Preparing", 3),
    "two conflicts: decided a third time": ([{}, {}], "Preparing", 2),
    "three conflicts: the request gives up, nothing moved": ([{}, {}, {}], "Stable", 0),
}


@pytest.mark.parametrize("name", list(CONFLICTS))
def test_a_version_conflict_is_re_decided_on_a_fresh_read(name):
    others, phase, green_replicas = CONFLICTS[name]

    async def scenario(w: World) -> None:
        w.swarm.conflicts["web-green"] = list(others)
        if phase == "Stable":
            with pytest.raises(SwarmError, match="kept changing"):
                await w.controller.deploy("web", "web:2")
        else:
            await w.controller.deploy("web", "web:2")
        state = (await w.controller.status("web"))
        assert state["phase"] == phase

    w = run(scenario)
    assert w.swarm.get("web-green").replicas == green_replicas


def test_a_tick_that_meets_a_conflict_reads_again_and_advances():
    async def scenario(w: World) -> None:
        await w.controller.deploy("web", "web:2")
        w.swarm.conflicts["web-green"] = [{}]  # Preparing -> Waiting writes green first
        assert await w.tick() == "Waiting"

    run(scenario)


# --- alerts --------------------------------------------------------------------------------------


def _alert(status: str = "firing", app: str | None = "web", fingerprint: str = "f1") -> alerts.Notification:
    labels = {"alertname": "HighErrors", **({"swarmshift_app": app} if app else {})}
    return alerts.parse({"version": "4", "status": status, "alerts": [
        {"status": status, "labels": labels, "startsAt": "2025-06-15T15:00:00Z", "fingerprint": fingerprint}]})


async def _verifying(w: World) -> None:
    await w.controller.deploy("web", "web:2")
    while w.phase() != "Verifying":
        await w.tick()


async def _deployed(w: World) -> None:
    await _verifying(w)
    while w.phase() != "Stable":
        await w.tick()


async def _at_rest(w: World) -> None:
    pass


ALERTS = {
    # name: (how the app got there, rollback_on_alert, the notification, outcome, status, phase after)
    "in verification: rolls back": (_verifying, "verification", _alert(), "rolling_back", 200, "RolledBack"),
    "in verification, policy never: no action": (_verifying, "never", _alert(), "no_action", 200, "Verifying"),
    "at rest after a deploy: no action": (_deployed, "verification", _alert(), "no_action", 200, "Stable"),
    # The rollback switches back to blue, which the router confirms at once: blue is then verified.
    "at rest, policy always, previous release up: rolls back": (
        _deployed, "always", _alert(), "rolling_back", 200, "Verifying"),
    "at rest, policy always, nothing to return to: no action": (_at_rest, "always", _alert(), "no_action", 200,
                                                               "Stable"),
    "resolved: logged only": (_verifying, "verification", _alert("resolved"), "resolved", 200, "Verifying"),
    "no app label: ignored": (_verifying, "verification", _alert(app=None), "ignored", 200, "Verifying"),
    "an unknown app: rejected": (_verifying, "verification", _alert(app="nope"), "rejected", 404, "Verifying"),
}


@pytest.mark.parametrize("name", list(ALERTS))
def test_an_alert_acts_as_the_policy_and_the_phase_say(name):
    setup, policy, notification, outcome, status, phase = ALERTS[name]
    results = []

    async def scenario(w: World) -> None:
        await setup(w)
        results.extend(await w.controller.on_alerts(notification))

    w = run(scenario, rollback_on_alert=policy)
    assert [(r["outcome"], r["status"]) for r in results] == [(outcome, status)]
    assert w.phase() == phase


def test_an_alert_acts_once_however_often_it_is_sent():
    results = []

    async def scenario(w: World) -> None:
        await _verifying(w)
        for _ in range(2):
            results.extend(await w.controller.on_alerts(_alert()))

    run(scenario)
    assert [r["outcome"] for r in results] == ["rolling_back", "repeat"]


def restarted(w: World, **config) -> World:
    """The same swarm, router and clock under a new controller process: nothing in memory survives."""
    cfg = BlueGreenConfig(**{**BASE, **config})
    controller = Controller(w.swarm, w.router, cfg, prober=w.prober, checks=Checks(None, []), clock=w.clock)
    return World(w.swarm, w.router, w.prober, w.clock, controller)


@pytest.mark.parametrize("restart", [False, True], ids=["same-process", "after-a-restart"])
def test_a_re_sent_alert_after_a_rollback_does_not_roll_back_a_later_deploy(restart):
    results = []

    async def scenario(w: World) -> None:
        await _verifying(w)
        results.extend(await w.controller.on_alerts(_alert()))  # rolls the first deploy back
        while w.phase() != "RolledBack":
            await w.tick()
        later = restarted(w) if restart else w
        await later.tick()
        await _verifying(later)
        results.extend(await later.controller.on_alerts(_alert()))  # Alertmanager's repeat_interval
        assert later.phase() == "Verifying"

    w = run(scenario)
    assert [r["outcome"] for r in results] == ["rolling_back", "repeat"]
    # Both colors remember the alert, in a label no state write removes.
    from bluegreen.labels import K_ALERTS
    from swarmshift.alerts import alert_key

    key = alert_key(_alert().alerts[0])
    assert all(key in w.swarm.get(name).labels.get(K_ALERTS, "") for name in ("web-blue", "web-green"))


def test_a_batch_answers_each_alert_and_a_bad_one_spoils_nothing():
    results = []

    async def scenario(w: World) -> None:
        await _verifying(w)
        batch = alerts.parse({"version": "4", "status": "firing", "alerts": [
            {"status": "firing", "labels": {"alertname": "X", "swarmshift_app": "nope"}, "fingerprint": "a"},
            {"status": "firing", "labels": {"alertname": "HighErrors", "swarmshift_app": "web"},
             "startsAt": "2025-06-15T15:00:00Z", "fingerprint": "f1"}]})
        results.extend(await w.controller.on_alerts(batch))
        results.extend(await w.controller.on_alerts(batch))  # retried whole: nothing acts twice

    run(scenario)
    assert [(r["outcome"], r["status"]) for r in results] == [
        ("rejected", 404), ("rolling_back", 200), ("rejected", 404), ("repeat", 200)]


def test_alerts_beyond_the_cap_are_answered_without_acting():
    results = []

    async def scenario(w: World) -> None:
        await _verifying(w)
        batch = alerts.parse({"version": "4", "status": "firing", "alerts": [
            {"status": "firing", "labels": {"alertname": f"A{i}", "swarmshift_app": "web"}, "fingerprint": f"f{i}"}
            for i in range(3)]})
        results.extend(await w.controller.on_alerts(batch))

    run(scenario, max_alerts_per_request=1)
    assert [(r["outcome"], r["status"]) for r in results] == [("rolling_back", 200), ("rejected", 429),
                                                              ("rejected", 429)]
    assert results[1]["detail"] == "over the cap of 1 alerts per notification: not looked at (alert 2 of 3)"


def test_an_app_whose_services_go_leaves_no_telemetry():
    async def scenario(w: World) -> None:
        await _verifying(w)
        await w.controller.on_alerts(_alert())  # counts a rollback
        while w.phase() != "RolledBack":
            await w.tick()
        for name in ("web-blue", "web-green"):
            del w.swarm._services[w.swarm.get(name).id]  # noqa: SLF001 - the services are removed
        await w.controller._discover()

    w = run(scenario)
    series = [s for m in w.controller.telemetry.registry.collect() for s in m.samples if s.labels.get("app") == "web"]
    assert series == [] and "web" not in w.controller.apps


def test_two_controllers_given_the_same_alert_roll_back_once():
    results = []

    async def scenario(w: World) -> None:
        await _verifying(w)
        other = restarted(w)  # a second controller by mistake, over the same services
        await other.tick()
        answers = await asyncio.gather(w.controller.on_alerts(_alert()), other.controller.on_alerts(_alert()))
        results.extend(r for answer in answers for r in answer)

    w = run(scenario)
    outcomes = sorted(r["outcome"] for r in results)
    assert outcomes.count("rolling_back") == 1, outcomes
    assert w.controller.telemetry.rollbacks.labels("web", "alert")._value.get() <= 1
