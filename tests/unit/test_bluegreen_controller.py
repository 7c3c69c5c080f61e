"""The controller's execution of the deploy machine, over an in-memory Swarm, router and prober.

The Swarm fake keeps service versions and refuses a write at a stale one, as Docker does, so
the controller's read-advance-write cycle is exercised with conflicts; the lab tests run the
same flows against the real thing.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace

import pytest

from bluegreen.config import BlueGreenConfig
from bluegreen.controller import Busy, Controller, UnknownApp
from bluegreen.model import LOCK_LABEL, STATE_PREFIX, App, Color, Phase, Result, Routing
from bluegreen.phases import Probe, ProbeOutcome, Refused
from swarmshift.alerts import parse
from swarmshift.swarm import Resources, Service, Task, VersionConflict

APP_LABELS = {"swarmshift.bluegreen.app": "web", "swarmshift.bluegreen.port": "8000",
              "swarmshift.bluegreen.rule": "Host(`web.example.com`)",
              "swarmshift.bluegreen.preview.rule": "Host(`preview.example.com`)"}


@dataclass
class FakeService:
    name: str
    image: str
    replicas: int
    labels: dict
    version: int = 1


@dataclass
class FakeSwarm:
    """Services by name; tasks run (healthy) at once unless the image is 'sick'."""

    by_name: dict = field(default_factory=dict)
    writes: list = field(default_factory=list)
    conflict_next: int = 0  # refuse this many writes with VersionConflict (another writer got there first)
    gate: asyncio.Event | None = None  # while set and not yet open, reads wait

    def add(self, color: str, image: str, replicas: int) -> None:
        name = f"web-{color}"
        self.by_name[name] = FakeService(name, image, replicas,
                                          {**APP_LABELS, "swarmshift.bluegreen.color": color})

    def _service(self, svc: FakeService) -> Service:
        return Service(id=svc.name, name=svc.name, version=svc.version, labels=dict(svc.labels), image=svc.image,
                       replicas=svc.replicas, running=None, limits=Resources(), reservations=Resources(),
                       update_status=None, spec={})

    async def services(self, label: str | None = None) -> list[Service]:
        if self.gate is not None:
            await self.gate.wait()  # a slow Docker
        key, _, value = (label or "").partition("=")
        return [self._service(s) for s in self.by_name.values()
                if not key or (key in s.labels and (not value or s.labels[key] == value))]

    async def tasks_with_health(self, service: str) -> list[Task]:
        svc = self.by_name[service]
        health = "unhealthy" if "sick" in svc.image else "healthy"
        return [Task(id=f"{service}.{i}", service_id=service, slot=i, node_id="n", state="running",
                     desired_state="running", message="", error="", container_id=f"c{i}", health=health)
                for i in range(svc.replicas)]

    async def update(self, service: Service, *, replicas=None, image=None, labels=None, env=None) -> Service:
        svc = self.by_name[service.name]
        if self.conflict_next:
            self.conflict_next -= 1
            svc.version += 1  # someone else wrote
            raise VersionConflict(f"update {svc.name}: update out of sequence")
        if service.version != svc.version:
            raise VersionConflict(f"update {svc.name}: update out of sequence")
        if image is not None:
            svc.image = image
        if replicas is not None:
            svc.replicas = replicas
        for key, value in (labels or {}).items():
            if value is None:
                svc.labels.pop(key, None)
            else:
                svc.labels[key] = value
        svc.version += 1
        self.writes.append((svc.name, image, replicas))
        return self._service(svc)

    def state(self, color: str) -> dict:
        labels = self.by_name[f"web-{color}"].labels
        return {k.removeprefix(STATE_PREFIX): v for k, v in labels.items() if k.startswith(STATE_PREFIX)}


@dataclass
class FakeRouter:
    kind = "fake"
    routing: dict = field(default_factory=dict)
    applied: list = field(default_factory=list)

    async def apply(self, app: App, routing: Routing) -> None:
        self.applied.append(routing)
        self.routing[app.name] = routing

    async def read(self, app: App) -> Routing | None:
        return self.routing.get(app.name)

    async def confirm(self, app: App, routing: Routing) -> bool:
        return self.routing.get(app.name) == routing

    async def remove(self, app: str) -> None:
        self.routing.pop(app, None)

    async def close(self) -> None:
        pass


@dataclass
class FakeProber:
    """Probes pass unless the color's image is in `failing` (then failed) or the color in `unreachable`."""

    swarm: FakeSwarm
    failing: set = field(default_factory=set)
    unreachable: set = field(default_factory=set)
    rounds: list = field(default_factory=list)

    async def probe(self, app: App, color: Color, *, routed, verify: bool = False) -> Probe:
        self.rounds.append((color, verify))
        if color in self.unreachable:
            return Probe(ProbeOutcome.UNREACHABLE, "cannot resolve tasks.web-green")
        if self.swarm.by_name[app.service(color)].image in self.failing and verify:
            return Probe(ProbeOutcome.FAILED, "GET /: HTTP 500")
        return Probe(ProbeOutcome.OK)

    async def close(self) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


CONFIG = BlueGreenConfig.model_validate({
    "probe_interval": 1, "healthy_threshold": 2, "failure_threshold": 1, "verification_window": "3s",
    "scale_down_delay": "1m", "wait_timeout": "10s", "precheck_timeout": "10s"})


def world(**config) -> tuple[Controller, FakeSwarm, FakeRouter, FakeProber, Clock]:
    swarm = FakeSwarm()
    swarm.add("blue", "web:1", 2)
    swarm.add("green", "web:1", 0)
    router, prober, clock = FakeRouter(), FakeProber(swarm), Clock()
    cfg = CONFIG.model_copy(update=config) if config else CONFIG
    controller = Controller(swarm, router, cfg, prober=prober, clock=clock)  # type: ignore[arg-type]
    return controller, swarm, router, prober, clock


async def run_until(controller: Controller, clock: Clock, phases: set[Phase], ticks: int = 40) -> list[Phase]:
    """Tick every second of fake time until the app rests in one of `phases`; the phases it went through."""
    seen: list[Phase] = []
    for _ in range(ticks):
        clock.now += 1
        for step in await controller.reconcile("web"):
            if step.transitioned:
                seen.append(step.state.phase)
        rt = controller.apps["web"]
        if rt.state is not None and rt.state.phase in phases:
            return seen
    raise AssertionError(f"never reached {phases}; went through {seen}")


def test_start_up_adopts_the_state_and_regenerates_the_routing():
    async def scenario():
        controller, swarm, router, _, _ = world()
        names = await controller._discover()
        steps = await controller.reconcile("web")
        return names, steps, swarm, router

    names, steps, swarm, router = asyncio.run(scenario())
    assert names == ["web"]
    assert router.routing["web"] == Routing.all_to(Color.BLUE)  # only blue has replicas
    assert swarm.state("blue")["active"] == swarm.state("green")["active"] == "blue"
    assert swarm.by_name["web-green"].labels[LOCK_LABEL] == "idle"  # the autoscaler leaves the idle color alone


def test_a_deploy_goes_through_every_phase_and_a_confirmed_switch_opens_the_window_at_once():
    async def scenario():
        controller, swarm, router, prober, clock = world()
        await controller.reconcile("web")
        state = await controller.deploy("web", "web:2")
        assert state.phase is Phase.PREPARING
        seen = await run_until(controller, clock, {Phase.STABLE})
        return controller, swarm, router, prober, seen

    controller, swarm, router, prober, seen = asyncio.run(scenario())
    assert seen == [Phase.WAITING, Phase.PRECHECKS, Phase.SWITCHING, Phase.VERIFYING, Phase.STABLE]
    assert router.routing["web"] == Routing.all_to(Color.GREEN)
    assert swarm.by_name["web-green"].image == "web:2" and swarm.by_name["web-green"].replicas == 2
    assert swarm.state("green")["result"] == "succeeded"
    # The image and the replica count were each written once: no side effect ran twice.
    assert [w for w in swarm.writes if w[1] or w[2] is not None] == [("web-green", "web:2", 2)]
    assert controller.telemetry.deploys.labels("web", "succeeded")._value.get() == 1


def test_the_tick_that_switches_also_opens_the_window_and_takes_its_first_round():
    async def scenario():
        controller, _, _, prober, clock = world()
        await controller.reconcile("web")
        await controller.deploy("web", "web:2")
        await run_until(controller, clock, {Phase.PRECHECKS})
        while True:
            prober.rounds.clear()
            clock.now += 1
            steps = await controller.reconcile("web")
            if any(s.state.phase is Phase.SWITCHING for s in steps):
                return [s.state.phase for s in steps], steps[-1].progress.rounds, prober.rounds

    phases, rounds, probes = asyncio.run(scenario())
    assert phases == [Phase.SWITCHING, Phase.VERIFYING, Phase.VERIFYING]
    assert rounds == 1 and probes == [(Color.GREEN, False), (Color.GREEN, True)]


def test_a_release_that_fails_verification_is_rolled_back():
    async def scenario():
        controller, swarm, router, prober, clock = world()
        prober.failing.add("web:bad")
        await controller.reconcile("web")
        await controller.deploy("web", "web:bad")
        seen = await run_until(controller, clock, {Phase.ROLLED_BACK})
        return controller, swarm, router, seen

    controller, swarm, router, seen = asyncio.run(scenario())
    assert seen[-3:] == [Phase.VERIFYING, Phase.ROLLING_BACK, Phase.ROLLED_BACK]
    assert router.routing["web"] == Routing.all_to(Color.BLUE)
    assert swarm.state("blue")["result"] == "rolled-back"
    assert controller.telemetry.rollbacks.labels("web", "checks")._value.get() == 1


def test_unreachable_probes_never_pass_the_pre_switch_checks():
    async def scenario():
        controller, swarm, router, prober, clock = world()
        prober.unreachable.add(Color.GREEN)
        await controller.reconcile("web")
        await controller.deploy("web", "web:2")
        seen = await run_until(controller, clock, {Phase.FAILED})
        return swarm, router, seen, controller

    swarm, router, seen, controller = asyncio.run(scenario())
    assert seen == [Phase.WAITING, Phase.PRECHECKS, Phase.FAILED]
    assert "unreachable never counts as healthy" in swarm.state("blue")["deploy.reason"]
    assert router.routing["web"] == Routing.all_to(Color.BLUE)
    assert controller.apps["web"].unreachable == "cannot resolve tasks.web-green"


def test_a_version_conflict_reads_again_and_decides_again():
    async def scenario():
        controller, swarm, router, _, _ = world()
        await controller.reconcile("web")
        swarm.conflict_next = 1
        state = await controller.deploy("web", "web:2")
        return state, swarm

    state, swarm = asyncio.run(scenario())
    assert state.phase is Phase.PREPARING
    assert swarm.by_name["web-green"].image == "web:2"


def test_one_operation_at_a_time():
    async def scenario():
        controller, _, _, _, _ = world()
        await controller.reconcile("web")
        rt = controller.apps["web"]
        rt.request = "deploy web:3"  # a request holds the app
        with pytest.raises(Busy, match="deploy web:3 is running"):
            await controller.switch("web", force=True)
        rt.request = None
        await controller.deploy("web", "web:2")
        with pytest.raises(Refused) as refused:
            await controller.deploy("web", "web:4")
        with pytest.raises(UnknownApp):
            await controller.deploy("shop", "shop:1")
        return refused.value

    refused = asyncio.run(scenario())
    assert refused.code == "busy" and "web-" in refused.message and "Preparing" in refused.message


def test_a_switch_to_an_unhealthy_color_is_refused_unless_forced():
    async def scenario():
        controller, swarm, router, _, _ = world()
        swarm.by_name["web-green"].replicas = 2
        swarm.by_name["web-green"].image = "web:sick"
        await controller.reconcile("web")
        with pytest.raises(Refused) as refused:
            await controller.switch("web")
        forced = await controller.switch("web", force=True)
        return refused.value, forced, router

    refused, forced, router = asyncio.run(scenario())
    assert refused.code == "unhealthy" and "2 unhealthy" in refused.message
    assert forced.phase is Phase.SWITCHING and router.routing["web"] == Routing.all_to(Color.GREEN)


def _alert(app: str = "web", status: str = "firing") -> object:
    return parse({"version": "4", "status": status, "alerts": [{
        "status": status, "labels": {"alertname": "ErrorsHigh", "swarmshift_app": app},
        "startsAt": "2027-01-15T08:00:00Z", "fingerprint": "f1"}]})


def test_an_alert_rolls_back_during_verification_and_acts_once():
    async def scenario():
        controller, swarm, router, _, clock = world(verification_window=30)
        await controller.reconcile("web")
        early = await controller.on_alerts(_alert())  # at rest, with rollback_on_alert: verification
        await controller.deploy("web", "web:2")
        await run_until(controller, clock, {Phase.VERIFYING})
        acted = await controller.on_alerts(_alert())
        again = await controller.on_alerts(_alert())
        unknown = await controller.on_alerts(_alert("shop"))
        await run_until(controller, clock, {Phase.ROLLED_BACK})
        return early, acted, again, unknown, router, controller

    early, acted, again, unknown, router, controller = asyncio.run(scenario())
    assert early[0]["outcome"] == "no_action"
    assert acted[0]["outcome"] == "rolling_back" and "alert ErrorsHigh fired during verification" in acted[0]["detail"]
    assert again[0]["outcome"] == "repeat"
    assert unknown[0]["status"] == 404
    assert router.routing["web"] == Routing.all_to(Color.BLUE)
    assert controller.telemetry.rollbacks.labels("web", "alert")._value.get() == 1


def test_a_new_process_resumes_from_the_labels_alone():
    async def scenario():
        controller, swarm, router, prober, clock = world()
        await controller.reconcile("web")
        await controller.deploy("web", "web:2")
        await run_until(controller, clock, {Phase.VERIFYING})
        # The process dies; a new one has only Swarm and the router.
        fresh = Controller(swarm, router, CONFIG, prober=prober, clock=clock)  # type: ignore[arg-type]
        seen = await run_until(fresh, clock, {Phase.STABLE})
        return fresh, seen, swarm

    fresh, seen, swarm = asyncio.run(scenario())
    assert seen == [Phase.STABLE]
    assert swarm.state("green")["active"] == "green"
    assert fresh.apps["web"].state.result is Result.SUCCEEDED


def test_the_status_view_says_why_an_app_is_degraded():
    async def scenario():
        controller, swarm, router, prober, clock = world()
        await controller.reconcile("web")
        healthy = await controller.status("web")
        prober.failing.add("web:bad")
        await controller.deploy("web", "web:bad")
        await run_until(controller, clock, {Phase.ROLLED_BACK})
        return healthy, await controller.status("web")

    healthy, rolled = asyncio.run(scenario())
    assert (healthy["health"], healthy["degraded"], healthy["active"]) == ("healthy", [], "blue")
    assert healthy["colors"]["blue"] == {"service": "web-blue", "image": "web:1", "replicas": 2, "running": 2,
                                         "unhealthy": 0, "ready": True, "updating": False, "lock": None,
                                         "weight": 100}
    assert rolled["health"] == "degraded" and rolled["result"] == "rolled-back"
    assert rolled["degraded"][0].startswith("the last deploy (web-")


def test_the_selector_keeps_other_apps_out():
    async def scenario():
        controller, _, _, _, _ = world(selector="stack=shop")
        return await controller._discover()

    assert asyncio.run(scenario()) == []


def test_a_chained_step_needs_unchanged_images_and_replicas():
    controller, swarm, *_ = world()

    async def scenario():
        await controller.reconcile("web")
        reading = await controller._read(controller.apps["web"])
        services = {c: reading.services[c] for c in Color}
        same = controller._after_writes(reading, services, Routing.all_to(Color.BLUE))
        scaled = controller._after_writes(reading, {**services, Color.GREEN: replace(services[Color.GREEN], replicas=2)},
                                          Routing.all_to(Color.BLUE))
        return same, scaled

    same, scaled = asyncio.run(scenario())
    assert same is not None and same.loaded.state.active is Color.BLUE
    assert scaled is None


def test_the_daemon_starts_its_loops_and_stops_them_promptly():
    async def scenario():
        controller, swarm, router, _, _ = world()
        await controller.start()
        loops = [rt.task for rt in controller.apps.values()]
        await asyncio.sleep(0.05)
        await asyncio.wait_for(controller.stop(), 5)
        return loops, router

    loops, router = asyncio.run(scenario())
    assert len(loops) == 1 and loops[0].done()
    assert router.routing["web"] == Routing.all_to(Color.BLUE)


def test_a_round_that_settles_a_rollback_acts_before_the_reads_are_back():
    async def scenario():
        controller, swarm, router, prober, clock = world(verification_window=30)
        prober.failing.add("web:bad")
        await controller.reconcile("web")
        await controller.deploy("web", "web:bad")
        while controller.apps["web"].state.deploy.failures < CONFIG.failure_threshold:
            clock.now += 1
            await controller.reconcile("web")
        swarm.gate = asyncio.Event()  # Docker stops answering reads
        clock.now += 1
        steps = await asyncio.wait_for(controller.reconcile("web"), 2)
        return [s.state.phase for s in steps], router, swarm

    phases, router, swarm = asyncio.run(scenario())
    assert phases == [Phase.ROLLING_BACK, Phase.ROLLED_BACK]
    assert router.routing["web"] == Routing.all_to(Color.BLUE)
    assert swarm.state("blue")["phase"] == "RolledBack"
