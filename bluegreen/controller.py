"""The blue-green controller: reconciles every app from Swarm, runs the deploy machine, and executes its plans.

Each app has its own loop and its own lock. One tick (see `bluegreen.phases`): read both color
services and their tasks, the routing the router reports in effect, and the stored state
(`load_state`); probe and run the PromQL checks when `needs` asks; `advance`; execute the
plan in order (the first service write makes the state durable, then routes are applied and
confirmed, then the other color's write, then notifications). A version conflict means another
writer changed a service since the read: nothing of the step ran, so the tick reads again and
advances again.

Operator requests (deploy, switch, rollback) and alerts take the same lock, so only one thing
changes an app at a time; a request that finds another request running is refused with
`Busy`, naming it.

Restart safety comes from the machine's contract: the state on the services is all there is,
`Progress` starts empty in a new process, and the first tick of every app regenerates the
routing its recorded state calls for (before the Traefik HTTP provider's document is served).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from bluegreen.apps import App, Color, discover
from bluegreen.config import BlueGreenConfig, PromCheck, app_problems
from bluegreen.labels import APP_LABEL, LOCK_LABEL
from bluegreen.phases import (
    CheckResult,
    ColorStatus,
    Notify,
    Observation,
    Probe,
    ProbeOutcome,
    Progress,
    Route,
    Step,
    advance,
    needs,
    plan,
    start_deploy,
    start_rollback,
    start_switch,
)
from bluegreen.probe import Prober
from bluegreen.routers import Router, RouterError
from bluegreen.state import (
    AppState,
    Loaded,
    Operation,
    Phase,
    Result,
    Routing,
    format_time,
    load_state,
    new_deploy_id,
)
from bluegreen.telemetry import Telemetry
from swarmshift import logs
from swarmshift.alerts import Notification
from swarmshift.notify import Notifier
from swarmshift.prometheus import Prometheus, PrometheusUnavailable, QueryError
from swarmshift.swarm import DockerUnavailable, Service, Swarm, SwarmError, VersionConflict

log = logs.get("bluegreen")

_ATTEMPTS = 3  # reads and re-advances after version conflicts, before a tick gives up until the next
_HURRY_LIMIT = 5  # immediate re-ticks in a row, so that no phase can spin the loop
_CHAIN = 2  # advances within one tick after a step's own writes: switch confirmed -> Verifying -> round 1
_UNHEALTHY = ("unhealthy", "starting")


@dataclass(frozen=True)
class _EarlyProbe:
    key: tuple[Any, ...]  # the state generation, app, routing, color and kind it was started for
    task: asyncio.Task


class UnknownApp(Exception):
    """No service carries the app's label."""


class Busy(Exception):
    """Another operator request is running on the app."""


class BrokenApp(Exception):
    """The app's labels describe no usable app; the controller leaves it alone."""

    def __init__(self, app: str, problems: list[str]) -> None:
        super().__init__(f"{app}: the labels have problems: " + "; ".join(problems))
        self.problems = problems


@dataclass
class Reading:
    """One read of an app: its description, services, colors, routing in effect and stored state."""

    app: App
    services: dict[Color, Service]
    colors: dict[Color, ColorStatus]
    routed: Routing | None
    loaded: Loaded
    problems: list[str]  # labels the app has, but this config cannot work with


@dataclass
class Runtime:
    """What the controller keeps in memory per app; none of it is needed to resume after a restart."""

    name: str
    app: App | None = None  # as last read from the labels
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    next_at: float = 0.0  # monotonic time of the next tick
    progress: Progress = field(default_factory=Progress)
    state: AppState | None = None
    request: str | None = None  # the operator request running now
    reason: str = ""  # why the app entered its phase, as the last transition said
    problems: tuple[str, ...] = ()
    probe: dict[str, Any] | None = None  # the last probe round, for status
    unreachable: str | None = None  # the unreachable probe already logged
    alerts_acted: set[str] = field(default_factory=set)
    observed_at: float = 0.0  # monotonic time of the last observation: the next tick is an interval after it
    routed: Routing | None = None  # what the router last reported or confirmed
    route_error: str | None = None  # why the router refused the last routing, until one is confirmed
    reading: Reading | None = None  # the last reading, as this process's own writes left it
    task: asyncio.Task | None = None

    def schedule(self, at: float) -> None:
        if at < self.next_at:
            self.next_at = at
            self.changed.set()


class Controller:
    def __init__(
        self,
        swarm: Swarm,
        router: Router,
        config: BlueGreenConfig,
        *,
        prober: Prober | None = None,
        prometheus: Prometheus | None = None,
        notifier: Notifier | None = None,
        telemetry: Telemetry | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.swarm = swarm
        self.router = router
        self.config = config
        self.settings = config.settings()
        self.defaults = config.app_defaults()
        self.prober = prober or Prober(config.probe, timeout=config.probe_timeout_seconds)
        self.prometheus = prometheus
        if prometheus is None and config.prometheus.url:
            self.prometheus = Prometheus(config.prometheus.url, timeout=config.prometheus.timeout, retries=0)
        self.notifier = notifier or Notifier([])
        self.telemetry = telemetry or Telemetry()
        self.clock = clock
        self.apps: dict[str, Runtime] = {}
        self.docker_up: bool | None = None
        self._stop = asyncio.Event()
        self._started = False  # the apps' loops run only once start() has reconciled every app
        self._discovery: asyncio.Task | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Reconcile every app once (regenerating its routing), then run each app's loop.

        Until every app has been reconciled, the HTTP provider's document is refused: Traefik
        would drop the routes of any app missing from it. Docker being down holds the start.
        """
        pending: list[str] | None = None
        while pending is None or pending:
            try:
                names = await self._discover(remove=False)
            except DockerUnavailable as err:
                log.error("docker_unavailable", error=str(err), action="retrying the start-up reconciliation")
                await asyncio.sleep(self.settings.probe_interval)
                continue
            todo = names if pending is None else [n for n in pending if n in names]
            done = await asyncio.gather(*(self._first_tick(self.apps[name]) for name in todo))
            pending = [name for name, ok in zip(todo, done, strict=True) if not ok]
            if pending:
                await asyncio.sleep(self.settings.probe_interval)
        self.router.mark_ready()  # a document served for every app (Traefik's HTTP provider) is complete only now
        self._started = True
        for rt in self.apps.values():
            self._launch(rt)
        self._discovery = asyncio.create_task(self._discover_loop(), name="bluegreen-discovery")
        log.info("controller_reconciled", apps=sorted(self.apps))

    async def stop(self) -> None:
        self._stop.set()
        tasks = [t for t in [self._discovery, *(rt.task for rt in self.apps.values())] if t is not None]
        for rt in self.apps.values():
            rt.changed.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.prober.close()

    async def _first_tick(self, rt: Runtime) -> bool:
        try:
            async with rt.lock:
                steps = await self._tick(rt)
        except Exception as err:  # noqa: BLE001 - one app must not keep the others from starting
            log.error("app_reconcile_failed", app=rt.name, error=str(err) or type(err).__name__,
                      action="retrying before serving any routing document")
            return False
        if steps:
            state = steps[-1].state
            log.info("app_reconciled", app=rt.name, active=state.active.value, phase=state.phase.value,
                     generation=state.generation, routing=str(state.routing()),
                     deploy=state.deploy.id if state.deploy else None)
        return True

    def _launch(self, rt: Runtime) -> None:
        if rt.task is None and self._started and not self._stop.is_set():
            rt.task = asyncio.create_task(self._app_loop(rt), name=f"bluegreen-{rt.name}")

    async def _discover(self, remove: bool = True) -> list[str]:
        """Runtimes for every app a service is labelled with; apps whose services are all gone are dropped."""
        services = [s for s in await self.swarm.services(label=APP_LABEL) if self.config.selects(s.labels)]
        names = sorted({svc.labels[APP_LABEL] for svc in services if svc.labels.get(APP_LABEL)})
        for name in names:
            if name not in self.apps:
                self.apps[name] = Runtime(name)
                log.info("app_discovered", app=name)
        for name in [n for n in self.apps if n not in names and remove]:
            rt = self.apps.pop(name)
            if rt.task is not None:
                rt.task.cancel()
            self.telemetry.forget(name)
            with contextlib.suppress(RouterError):
                await self.router.remove(name)
            log.warning("app_removed", app=name, reason="no service carries the app label any more: routing removed")
        return names

    async def _discover_loop(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.config.reconcile_interval)
            if self._stop.is_set():
                return
            try:
                await self._discover()
            except Exception as err:  # noqa: BLE001 - discovery retries next interval
                log.warning("discovery_failed", error=str(err) or type(err).__name__)
                continue
            for rt in self.apps.values():
                self._launch(rt)  # a new app's loop ticks at once

    async def _app_loop(self, rt: Runtime) -> None:
        hurries = 0
        rt.next_at = time.monotonic()
        while not self._stop.is_set():
            rt.changed.clear()
            delay = rt.next_at - time.monotonic()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(rt.changed.wait(), delay)
                continue  # woken early: the schedule may have moved
            rt.observed_at = time.monotonic()
            rt.next_at = math.inf
            steps: list[Step] = []
            try:
                async with rt.lock:
                    steps = await self._tick(rt)
                if self.docker_up is False:
                    log.info("docker_recovered")
                self.docker_up = True
            except DockerUnavailable as err:
                if self.docker_up is not False:
                    log.error("docker_unavailable", error=str(err), action="holding every app, retrying")
                self.docker_up = False
            except Exception:  # noqa: BLE001 - the loop must survive anything one tick does
                log.exception("tick_failed", app=rt.name)
            if steps and _hurry(steps[-1]) and hurries < _HURRY_LIMIT:
                hurries += 1
                rt.schedule(time.monotonic())
                continue
            hurries = 0
            in_flight = rt.state is not None and rt.state.phase.in_flight
            interval = self.settings.probe_interval if in_flight else self.config.reconcile_interval
            rt.schedule(rt.observed_at + interval)

    # -- reading -----------------------------------------------------------------------------

    async def _read(self, rt: Runtime) -> Reading | None:
        """Read the app; None (problems logged once) when its labels describe no usable app."""
        services = [s for s in await self.swarm.services(label=f"{APP_LABEL}={rt.name}")
                    if self.config.selects(s.labels)]
        found = discover(services, self.defaults)
        app = found.apps.get(rt.name)
        extra = app_problems(app, self.config) if app is not None else []
        problems = [*found.problems, *extra]
        if app is None or extra:
            self._report(rt, problems)
            return None
        rt.app = app
        by_name = {svc.name: svc for svc in services}
        chosen = {color: by_name[app.service(color)] for color in Color}
        *tasks, routed = await asyncio.gather(*(self.swarm.tasks_with_health(chosen[c].id) for c in Color),
                                              self._routed(app))
        colors = {}
        for color, found_tasks in zip(Color, tasks, strict=True):
            svc = chosen[color]
            running = [t for t in found_tasks if t.running]
            colors[color] = ColorStatus(
                service=svc.name, image=svc.image, replicas=svc.replicas or 0, running=len(running),
                unhealthy=sum(1 for t in running if t.health in _UNHEALTHY), updating=svc.updating,
                lock=svc.labels.get(LOCK_LABEL),
            )
        rt.routed = routed
        loaded = load_state(app, {c: chosen[c].labels for c in Color}, {c: colors[c].replicas for c in Color},
                            routed, self.clock())
        self._report(rt, [*problems, *loaded.problems])
        if loaded.adopted:
            log.warning("state_adopted", app=app.name, active=loaded.state.active.value, why=loaded.adopted)
        return Reading(app, chosen, colors, routed, loaded, problems)

    async def _routed(self, app: App) -> Routing | None:
        try:
            return await self.router.read(app)
        except RouterError as err:
            log.warning("router_read_failed", app=app.name, error=str(err))
            return None

    def _after_writes(self, reading: Reading, services: dict[Color, Service], routed: Routing | None) -> Reading | None:
        """The reading as the step's own writes and confirmed routing left it, without asking Docker again.

        Only when the writes changed no image or replica count: the task counts read at the
        start of the tick still describe the services then (they are a few hundred ms old).
        """
        colors = {}
        for color in Color:
            before, svc = reading.colors[color], services[color]
            if svc.image != before.image or (svc.replicas or 0) != before.replicas:
                return None
            colors[color] = replace(before, lock=svc.labels.get(LOCK_LABEL), updating=svc.updating)
        loaded = load_state(reading.app, {c: services[c].labels for c in Color},
                            {c: colors[c].replicas for c in Color}, routed, self.clock())
        return replace(reading, services=dict(services), colors=colors, routed=routed, loaded=loaded)

    def _report(self, rt: Runtime, problems: list[str]) -> None:
        """Log an app's problems when they change, not every tick."""
        now = tuple(problems)
        if now == rt.problems:
            return
        if now:
            log.error("app_invalid", app=rt.name, problems=list(now),
                      action="the controller leaves the app's routing and services as they are")
        else:
            log.info("app_valid", app=rt.name)
        rt.problems = now

    def _early_probe(self, rt: Runtime) -> _EarlyProbe | None:
        """Start the probe the state in memory will ask for, while the tick reads Swarm.

        Verification rounds then fall exactly a probe_interval apart, however long the reads
        take; the result is used only if the read finds the same state, app and routing.
        """
        state, app = rt.state, rt.app
        color = needs(state).probe if state is not None else None
        if state is None or app is None or color is None:
            return None
        verify = state.phase in (Phase.PROGRESSING, Phase.VERIFYING)
        key = (state.generation, app, rt.routed, color, verify)
        return _EarlyProbe(key, asyncio.create_task(self.prober.probe(app, color, routed=rt.routed, verify=verify)))

    async def _probe(self, rt: Runtime, reading: Reading, color: Color | None, verify: bool,
                     early: _EarlyProbe | None = None) -> Probe | None:
        if color is None:
            return None
        key = (reading.loaded.state.generation, reading.app, reading.routed, color, verify)
        if early is not None and early.key == key:
            result = await early.task
        else:
            result = await self.prober.probe(reading.app, color, routed=reading.routed, verify=verify)
        rt.probe = {"color": color.value, "outcome": result.outcome.value, "detail": result.detail,
                    "at": format_time(self.clock())}
        if result.outcome is ProbeOutcome.UNREACHABLE:
            if rt.unreachable != result.detail:
                log.warning("probe_unreachable", app=rt.name, color=color.value, detail=result.detail,
                            meaning="the controller cannot reach the color; unreachable never counts as healthy")
            rt.unreachable = result.detail
        else:
            if rt.unreachable is not None:
                log.info("probe_reachable", app=rt.name, color=color.value)
            rt.unreachable = None
            if not result.ok:
                log.info("probe_failed", app=rt.name, color=color.value, detail=result.detail)
        return result

    async def _checks(self, app: App, color: Color | None) -> tuple[CheckResult, ...]:
        if color is None or not self.config.checks:
            return ()
        return tuple(await asyncio.gather(*(self._check(app, color, check) for check in self.config.checks)))

    async def _check(self, app: App, color: Color, check: PromCheck) -> CheckResult:
        assert self.prometheus is not None  # the config requires prometheus.url with checks
        query = check.render(app.name, color, app.service(color))
        try:
            samples = await self.prometheus.query(query)
        except QueryError as err:
            return check.evaluate(None, str(err))
        except PrometheusUnavailable as err:
            # Unknown is never a pass: an outage must not wave a deploy through.
            return CheckResult(check.name, False, f"Prometheus unavailable: {err}")
        if not samples:
            return check.evaluate(None)
        # Several series: judge the worst of them.
        values = [s.value for s in samples]
        return check.evaluate(max(values) if check.comparison in ("<", "<=") else min(values))

    # -- one tick ----------------------------------------------------------------------------

    async def _tick(self, rt: Runtime, alert: str | None = None) -> list[Step]:
        """Read, measure, advance and execute (hold the app's lock around it); the steps it executed."""
        done: list[Step] = []
        for attempt in range(1, _ATTEMPTS + 1):
            early = self._early_probe(rt)
            reads = asyncio.ensure_future(self._read(rt))
            try:
                if attempt == 1 and await self._settled_by_probe(rt, early, alert):
                    try:
                        assert rt.reading is not None
                        await self._advance(rt, rt.reading, alert, done, early, checks=False)
                        return done
                    except VersionConflict as err:  # another writer: decide again on a full read
                        log.info("version_conflict", app=rt.name, attempt=attempt, error=str(err))
                reading = await reads
                if reading is None:
                    return done
                await self._advance(rt, reading, alert if not done else None, done, early)
                return done
            except VersionConflict as err:
                log.info("version_conflict", app=rt.name, attempt=attempt, error=str(err))
            finally:
                for task in (early.task if early else None, reads):
                    if task is not None and not task.done():
                        task.cancel()
        log.warning("tick_abandoned", app=rt.name, reason=f"{_ATTEMPTS} version conflicts in a row")
        return done

    async def _settled_by_probe(self, rt: Runtime, early: _EarlyProbe | None, alert: str | None) -> bool:
        """Whether this tick's probe alone settles a rollback, so that it can act before the reads are back.

        In a verification window, a failed round that exceeds failure_threshold rolls back
        whatever else the tick finds; the services are then written at the versions this process
        last read and wrote, and a version conflict sends the tick back to a full read. This takes
        the time of the reads off the rollback deadline.
        """
        state, last = rt.state, rt.reading
        if early is None or alert is not None or state is None or last is None or state.deploy is None:
            return False
        if state.phase not in (Phase.VERIFYING, Phase.PROGRESSING):
            return False
        if last.loaded.state.generation != state.generation or early.key[0] != state.generation:
            return False
        probe = await early.task
        return not probe.ok and state.deploy.failures + 1 > self.settings.failure_threshold

    async def _advance(self, rt: Runtime, reading: Reading, alert: str | None, done: list[Step],
                       early: _EarlyProbe | None = None, checks: bool = True) -> None:
        """Advance and execute; then again at once, on what the writes returned, while a step asks for it.

        A confirmed switch opens the verification window, and the window's first round is taken,
        without reading Docker again in between: the time from traffic moving to the first
        verdict on it is the part of the rollback deadline the controller itself adds.
        """
        for _ in range(1 + _CHAIN):
            if early is None:  # an early probe began when the tick did, which the loop set as observed_at
                rt.observed_at = time.monotonic()
            state = reading.loaded.state
            want = needs(state)
            verify = state.phase in (Phase.PROGRESSING, Phase.VERIFYING)
            probe, results = await asyncio.gather(self._probe(rt, reading, want.probe, verify, early),
                                                  self._checks(reading.app, want.checks if checks else None))
            early, checks = None, True
            obs = Observation(now=self.clock(), colors=reading.colors, routed=reading.routed, probe=probe,
                              checks=results, alert=alert)
            restarted = rt.progress.started is None and self.settings.on_restart == "rollback"
            step = advance(rt.name, state, rt.progress, obs, self.settings)
            services, confirmed = await self._execute(rt, reading, step, cause=_cause(step, alert, restarted))
            done.append(step)
            alert = None  # it has acted, or been weighed, once
            following = None if confirmed is False else self._after_writes(reading, services,
                                                                         confirmed or reading.routed)
            rt.reading = following
            if following is not None:
                rt.routed = following.routed
            if following is None or not _hurry(step):
                return
            reading = following

    async def _execute(self, rt: Runtime, reading: Reading, step: Step, *,
                       cause: str) -> tuple[dict[Color, Service], Routing | None | bool]:
        """Carry out a step in the plan's order; VersionConflict only when nothing of it ran.

        Returns the services as the writes left them, and the routing the router confirmed (None
        when the step had no route, False when one was not confirmed).
        """
        app = reading.app
        p = plan(step, reading.loaded.stored)
        services = dict(reading.services)
        for write in p.first:
            services[write.color] = await self.swarm.update(services[write.color], **write.changes())
        # The state is durable from here: whatever fails below, the next tick carries on from it.
        rt.state, rt.progress = step.state, step.progress
        if step.transitioned:
            rt.reason = step.reason
        self.telemetry.show(app.name, step.state.active, step.state.phase)
        self._record(app, step, cause)
        confirmed: Routing | None | bool = None
        for route in p.routes:
            ok = await self._route(rt, app, route, step)
            confirmed = route.routing if ok and confirmed is not False else False
        for write in p.then:
            try:
                services[write.color] = await self.swarm.update(services[write.color], **write.changes())
            except SwarmError as err:
                # The state is already on the first color; the next tick writes what is missing here.
                log.warning("service_write_failed", app=app.name, service=services[write.color].name, error=str(err))
        for notice in p.notifications:
            self._notify(notice)
        return services, confirmed

    async def _route(self, rt: Runtime, app: App, route: Route, step: Step) -> bool:
        started = time.monotonic()
        try:
            await self.router.apply(app, route.routing)
            applied = time.monotonic()
            confirmed = await self.router.confirm(app, route.routing)
        except RouterError as err:
            rt.route_error = str(err)
            log.error("route_failed", app=app.name, routing=str(route.routing), phase=step.state.phase.value,
                      error=str(err), action="the previous routing stays in effect; retrying next tick")
            return False
        if confirmed:
            rt.route_error = None
        done = time.monotonic()
        # apply: handing the router the routing (nginx: write, nginx -t, reload); confirm: until it reports it.
        timing = {"seconds": round(done - started, 3), "apply_seconds": round(applied - started, 3),
                  "confirm_seconds": round(done - applied, 3)}
        if confirmed:
            self.telemetry.switch_duration.observe(done - started)
            log.info("route_applied", app=app.name, routing=str(route.routing), router=self.router.kind, **timing)
        else:
            log.warning("route_unconfirmed", app=app.name, routing=str(route.routing), router=self.router.kind,
                        **timing, action="the machine waits for the router to report it")
        return confirmed

    def _notify(self, notice: Notify) -> None:
        self.notifier.send({"type": notice.event, **notice.fields}, notice.text)

    def _record(self, app: App, step: Step, cause: str) -> None:
        """Log a step's transition with stable event names, and count it."""
        old, new, name = step.previous, step.state, app.name
        d = new.deploy
        for intent in step.intents:
            if isinstance(intent, Notify) and intent.event == "retire":
                log.info("color_retired", app=name, color=new.active.other.value, service=intent.fields.get("service"),
                         reason=step.reason)
        if not step.transitioned:
            if step.reason and new.phase.in_flight:
                log.debug("tick", app=name, phase=new.phase.value, reason=step.reason)
            return
        fields: dict[str, Any] = {"app": name, "from": old.phase.value, "to": new.phase.value, "reason": step.reason,
                                  "deploy": d.id if d else None, "operation": d.kind.value if d else None,
                                  "active": new.active.value, "generation": new.generation}
        log.info("phase_changed", **fields)
        if d is None:
            return
        if not old.phase.in_flight and new.phase.in_flight:
            log.info("deploy_started", app=name, deploy=d.id, operation=d.kind.value, image=d.image,
                     source=d.source.value, target=d.target.value, cause=cause)
            if d.kind is Operation.ROLLBACK:
                self.telemetry.rollbacks.labels(name, cause).inc()
        if old.phase is Phase.SWITCHING and new.phase in (Phase.VERIFYING, Phase.PROGRESSING, Phase.STABLE):
            log.info("switched", app=name, deploy=d.id, to=d.target.value, percent=d.percent, image=d.image,
                     verified=False)
        if new.phase is Phase.ROLLING_BACK:
            self.telemetry.rollbacks.labels(name, cause).inc()
            log.warning("rollback_started", app=name, deploy=d.id, to=new.active.value, reason=d.reason, cause=cause)
        elif new.phase is Phase.ROLLED_BACK:
            log.warning("rolled_back", app=name, deploy=d.id, active=new.active.value, reason=d.reason)
        elif new.phase is Phase.FAILED:
            log.error("deploy_failed", app=name, deploy=d.id, active=new.active.value, reason=d.reason)
        elif new.phase is Phase.STABLE and new.result is Result.SUCCEEDED:
            log.info("deploy_stable", app=name, deploy=d.id, operation=d.kind.value, active=new.active.value,
                     image=d.image, failed_checks=d.failures)
        if not new.phase.in_flight and d.kind is Operation.DEPLOY and new.result is not None:
            self.telemetry.deploys.labels(name, new.result.value).inc()

    async def reconcile(self, name: str) -> list[Step]:
        """One tick of the app now, under its lock: what its loop does every interval."""
        rt = await self.runtime(name)
        async with rt.lock:
            return await self._tick(rt)

    # -- operator requests -------------------------------------------------------------------

    async def runtime(self, name: str) -> Runtime:
        """The app's runtime, discovering once more for an app not seen yet; UnknownApp otherwise."""
        if name not in self.apps:
            await self._discover(remove=False)
            if name in self.apps:
                self._launch(self.apps[name])
        if name not in self.apps:
            raise UnknownApp(f"no service is labelled {APP_LABEL}={name}")
        return self.apps[name]

    @contextlib.asynccontextmanager
    async def _request(self, name: str, what: str) -> AsyncIterator[Runtime]:
        rt = await self.runtime(name)
        if rt.request is not None:
            raise Busy(f"{name}: {rt.request} is running; try again when it has finished")
        rt.request = what
        try:
            async with rt.lock:
                yield rt
        finally:
            rt.request = None

    async def _operate(self, rt: Runtime, begin: Callable[[AppState, Observation, App], Step],
                       probe_color: Callable[[AppState, Mapping[Color, ColorStatus]], Color | None]) -> Step:
        for attempt in range(1, _ATTEMPTS + 1):
            reading = await self._read(rt)
            if reading is None:
                raise BrokenApp(rt.name, list(rt.problems))
            state = reading.loaded.state
            probe = await self._probe(rt, reading, probe_color(state, reading.colors), verify=False)
            obs = Observation(now=self.clock(), colors=reading.colors, routed=reading.routed, probe=probe)
            step = begin(state, obs, reading.app)
            try:
                await self._execute(rt, reading, step, cause="request")
            except VersionConflict as err:
                log.info("version_conflict", app=rt.name, attempt=attempt, error=str(err))
                continue
            # The machine goes on in the app's loop, at the in-flight pace from now on: the next
            # tick comes one probe_interval after the request (at once after routing moved).
            rt.next_at = time.monotonic() + (0 if _hurry(step) else self.settings.probe_interval)
            rt.changed.set()
            return step
        raise SwarmError(f"{rt.name}: the services kept changing under the request ({_ATTEMPTS} version conflicts)")

    async def deploy(self, name: str, image: str) -> AppState:
        """Begin deploying `image` to the idle color. Refused (busy) while an operation is in flight."""
        async with self._request(name, f"deploy {image}") as rt:
            def begin(state: AppState, obs: Observation, app: App) -> Step:
                return start_deploy(name, state, obs, image=image, deploy_id=new_deploy_id(name, obs.now),
                                    settings=self.settings, strategy=app.strategy)

            step = await self._operate(rt, begin, lambda state, colors: None)
        return step.state

    async def switch(self, name: str, to: Color | None = None, force: bool = False) -> AppState:
        """Move all traffic to the other color; its health is probed first and must pass unless `force`."""
        async with self._request(name, f"switch to {to or 'the other color'}") as rt:
            def begin(state: AppState, obs: Observation, app: App) -> Step:
                return start_switch(name, state, obs, deploy_id=new_deploy_id(name, obs.now), settings=self.settings,
                                    to=to, force=force)

            def target(state: AppState, colors: Mapping[Color, ColorStatus]) -> Color | None:
                color = to or state.active.other
                return None if force or color is state.active or state.phase.in_flight else color

            step = await self._operate(rt, begin, target)
        return step.state

    async def rollback(self, name: str) -> AppState:
        """Return to the previous color: abort a deploy in flight, or go back to the last release."""
        async with self._request(name, "rollback") as rt:
            def begin(state: AppState, obs: Observation, app: App) -> Step:
                return start_rollback(name, state, obs, deploy_id=new_deploy_id(name, obs.now), settings=self.settings)

            def previous(state: AppState, colors: Mapping[Color, ColorStatus]) -> Color | None:
                # The machine switches back only to a previous color still up, after a health check.
                at_rest = not state.phase.in_flight and state.result is Result.SUCCEEDED
                return state.active.other if at_rest and colors[state.active.other].replicas > 0 else None

            step = await self._operate(rt, begin, previous)
        return step.state

    # -- alerts ------------------------------------------------------------------------------

    async def on_alerts(self, notification: Notification) -> list[dict[str, Any]]:
        return [await self._on_alert(alert) for alert in notification.alerts]

    async def _on_alert(self, alert) -> dict[str, Any]:
        name = alert.labels.get("alertname", alert.identity)
        app = alert.labels.get("swarmshift_app")
        result: dict[str, Any] = {"alert": name, "app": app, "status": 200}
        if not app:
            return {**result, "outcome": "ignored", "detail": "no swarmshift_app label"}
        try:
            rt = await self.runtime(app)
        except UnknownApp as err:
            return {**result, "status": 404, "outcome": "rejected", "detail": str(err)}
        key = f"{alert.identity}@{alert.startsAt}"
        if not alert.firing:
            rt.alerts_acted.discard(key)
            log.info("alert_resolved", app=app, alert=name)
            return {**result, "outcome": "resolved", "detail": "resolved alerts are logged, not acted on"}
        if key in rt.alerts_acted:
            return {**result, "outcome": "repeat", "detail": "this alert has already acted"}
        log.info("alert_received", app=app, alert=name, policy=self.settings.rollback_on_alert)
        async with rt.lock:
            steps = await self._tick(rt, alert=name)
        if not steps:
            return {**result, "status": 409, "outcome": "held", "detail": "; ".join(rt.problems) or "no tick ran"}
        step, state = steps[0], steps[0].state  # the step that weighed the alert
        rolled = step.transitioned and (state.phase is Phase.ROLLING_BACK or (
            state.deploy is not None and state.deploy.kind is Operation.ROLLBACK and not step.previous.phase.in_flight))
        if rolled:
            rt.alerts_acted.add(key)
            rt.schedule(time.monotonic())
            return {**result, "outcome": "rolling_back", "detail": step.reason}
        why = (f"{app} is {state.phase}: with rollback_on_alert {self.settings.rollback_on_alert}, an alert rolls "
               "back only during a verification window" + (" or when a previous release is up"
                                                            if self.settings.rollback_on_alert == "always" else ""))
        log.info("alert_ignored", app=app, alert=name, phase=state.phase.value, detail=step.reason or why)
        return {**result, "outcome": "no_action", "detail": step.reason or why}

    # -- views -------------------------------------------------------------------------------

    async def status(self, name: str) -> dict[str, Any]:
        """The app as it is now, read fresh from Swarm and the router (no probe, no change)."""
        rt = await self.runtime(name)
        reading = await self._read(rt)
        return self._view(rt, reading)

    async def statuses(self) -> list[dict[str, Any]]:
        await self._discover(remove=False)
        return [await self.status(name) for name in sorted(self.apps)]

    def _view(self, rt: Runtime, reading: Reading | None) -> dict[str, Any]:
        if reading is None:
            return {"app": rt.name, "health": "degraded", "degraded": list(rt.problems), "problems": list(rt.problems),
                    "request": rt.request}
        state, app = reading.loaded.state, reading.app
        wanted = state.routing()
        colors = {}
        for color in Color:
            c = reading.colors[color]
            colors[color.value] = {
                "service": c.service, "image": c.image, "replicas": c.replicas, "running": c.running,
                "unhealthy": c.unhealthy, "ready": c.ready(), "updating": c.updating, "lock": c.lock,
                "weight": reading.routed.weight(color) if reading.routed else None,
            }
        degraded = [*rt.problems]
        if rt.route_error:
            degraded.append(f"the router refused the last routing: {rt.route_error}")
        active = reading.colors[state.active]
        if not active.ready():
            degraded.append(f"{active.service} (active): {active.describe()}")
        if not state.phase.in_flight:
            if reading.routed != wanted:
                degraded.append(f"the router serves {reading.routed or 'nothing'}, not {wanted}")
            d = state.deploy
            if d is not None and d.kind is Operation.DEPLOY and state.result in (Result.ROLLED_BACK, Result.FAILED):
                degraded.append(f"the last deploy ({d.id}, {d.image}) {state.result}: {d.reason}")
        health = "degraded" if degraded else "progressing" if state.phase.in_flight else "healthy"
        d = state.deploy
        return {
            "app": app.name,
            "health": health,
            "degraded": degraded,
            "active": state.active.value,
            "phase": state.phase.value,
            "reason": rt.reason if rt.state is not None and rt.state.phase is state.phase else "",
            "since": format_time(state.since),
            "generation": state.generation,
            "result": state.result.value if state.result else None,
            "retire_at": format_time(state.retire_at) if state.retire_at else None,
            "colors": colors,
            "routing": {"wanted": str(wanted), "in_effect": str(reading.routed) if reading.routed else None},
            "deploy": None if d is None else {
                "id": d.id, "operation": d.kind.value, "source": d.source.value, "target": d.target.value,
                "image": d.image, "previous_image": d.previous_image, "started_at": format_time(d.started_at),
                "steps": list(d.steps), "step": d.step, "failures": d.failures, "reason": d.reason, "force": d.force,
            },
            "request": rt.request,
            "route_error": rt.route_error,
            "probe": rt.probe,
            "problems": [*reading.problems, *reading.loaded.problems],
            "app_config": {"port": app.port, "rule": str(app.rule),
                           "preview_rule": str(app.preview_rule) if app.preview_rule else None,
                           "health_path": app.health_path, "strategy": app.strategy.value},
        }

    def traefik_document(self) -> dict[str, Any]:
        """The Traefik dynamic configuration for every app, as the router routes it: what `GET /v1/traefik` serves."""
        routes = [(rt.app, rt.state.routing()) for rt in sorted(self.apps.values(), key=lambda r: r.name)
                  if rt.state is not None and rt.app]
        return self.router.traefik_document(routes)


def _hurry(step: Step) -> bool:
    """Whether the next tick should come at once: after routing moved, or on entering a verification window."""
    if any(isinstance(i, Route) for i in step.intents):
        return True
    return step.transitioned and step.state.phase in (Phase.VERIFYING, Phase.PROGRESSING)


def _cause(step: Step, alert: str | None, restarted: bool) -> str:
    """Why a tick changed where traffic goes: the `reason` label of the rollbacks metric."""
    if alert is not None:
        return "alert"
    if step.previous.phase is Phase.SWITCHING:
        return "router"
    if restarted and step.previous.phase.moves_traffic:
        return "restart"
    return "checks"
