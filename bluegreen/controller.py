"""The blue-green controller: per-app loops, operator requests and alerts, wired to its reader, executor and router.

Each app has its own loop and its own lock. One tick (see `bluegreen.phases`): read the app
(`observe`), probe and run the PromQL checks when `needs` asks, `advance`, and carry out the
step (`execute`). A version conflict means another writer changed a service since the read:
nothing of the step ran, so the tick reads again and advances again.

Operator requests (deploy, switch, rollback, promote, abort) and alerts take the same lock, so only one thing
changes an app at a time; a request that finds another request running is refused with
`Busy`, naming it.

Restart safety comes from the machine's contract: the state on the services is all there is,
`Progress` starts empty in a new process, and the first tick of every app regenerates the
routing its recorded state calls for (before the router's `mark_ready`).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from bluegreen.analysis import Analyst
from bluegreen.app_check import board_of, unmatched_gates
from bluegreen.apps import App, Color, discover, split_key
from bluegreen.config import BlueGreenConfig
from bluegreen.execute import AlertRepeat, Executor, rolls_back
from bluegreen.labels import APP_LABEL
from bluegreen.observe import Checks, Observer
from bluegreen.phases import (
    ColorStatus,
    Observation,
    Settings,
    Step,
    start_abort,
    start_deploy,
    start_promote,
    start_rollback,
    start_switch,
    start_undo,
)
from bluegreen.probe import Prober
from bluegreen.routers import Router, RouterError
from bluegreen.runtime import Runtime
from bluegreen.state import AppState, Result, alerts_seen, new_deploy_id
from bluegreen.telemetry import Telemetry
from bluegreen.tick import ATTEMPTS, Ticker, hurry
from bluegreen.views import app_view, history_view
from bluegreen.webhooks import WebhookCaller
from swarmshift import logs
from swarmshift.alerts import Alert, Notification, alert_key, answer_each
from swarmshift.availability import Availability
from swarmshift.notify import Notifier
from swarmshift.swarm import DockerUnavailable, SwarmAccess, SwarmError, VersionConflict

log = logs.get("bluegreen")

_HURRY_LIMIT = 5  # immediate re-ticks in a row, so that no phase can spin the loop
_START_ROUNDS = 3  # start-up rounds an app's failing first tick may hold every other app's routing for


class UnknownApp(Exception):
    """No service carries the app's label."""


class AmbiguousApp(UnknownApp):
    """A bare app name that more than one stack uses: the request must name the app's key."""

    def __init__(self, name: str, candidates: list[str]) -> None:
        super().__init__(f"{name}: more than one stack has an app of this name; name one of {', '.join(candidates)}")
        self.candidates = candidates


class Busy(Exception):
    """Another operator request is running on the app."""


class BrokenApp(Exception):
    """The app's labels describe no usable app; the controller leaves it alone."""

    def __init__(self, app: str, problems: list[str]) -> None:
        super().__init__(f"{app}: the labels have problems: " + "; ".join(problems))
        self.problems = problems


class Controller:
    def __init__(
        self,
        swarm: SwarmAccess,
        router: Router,
        config: BlueGreenConfig,
        *,
        prober: Prober,
        checks: Checks,
        notifier: Notifier | None = None,
        telemetry: Telemetry | None = None,
        clock: Callable[[], float] = time.time,
        analyst: Analyst | None = None,
        webhooks: WebhookCaller | None = None,
    ) -> None:
        self.swarm = swarm
        self.router = router
        self.config = config
        self.settings = config.settings()
        self.prober = prober
        self.notifier = notifier or Notifier([])
        self.telemetry = telemetry or Telemetry()
        self.clock = clock
        self.observer = Observer(swarm, router, prober, checks, config, clock, analyst=analyst, webhooks=webhooks)
        self.executor = Executor(swarm, router, self.notifier, self.telemetry)
        self.ticker = Ticker(self.observer, self.executor, self.settings, clock, settings_for=self.settings_for)
        self.apps: dict[str, Runtime] = {}
        # Docker away or no quorum: every app holds (nothing is written), each outage logged once.
        self.availability = Availability("holding every app, retrying")
        self._stop = asyncio.Event()
        self._started = False  # the apps' loops run only once start() has reconciled every app
        self._discovery: asyncio.Task | None = None
        self._unattached: tuple[str, ...] = ()  # problems of services that name no app, as last logged

    @property
    def docker_up(self) -> bool | None:
        return self.availability.up

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """`/readyz`: every app reconciled once, and Swarm answering."""
        ready, fields = self.availability.readiness()
        return ready and self._started, {**fields, "reconciled": self._started}

    def settings_for(self, name: str) -> Settings:
        """The machine's settings for the app with key `name`: the config's, with that app's release gates."""
        return self.config.settings(name)

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Reconcile every app once (regenerating its routing), then run each app's loop.

        Until every app has been reconciled, the HTTP provider's document is refused: Traefik
        would drop the routes of any app missing from it. Docker being down holds the start; an
        app whose labels are broken does not (there is nothing of it to reconcile), and one whose
        first tick keeps failing holds it for `_START_ROUNDS` rounds only, then its own loop
        retries: one app must not keep every other from being served.
        """
        pending: list[str] | None = None
        rounds = 0
        while pending is None or pending:
            try:
                names = await self._discover(remove=False)
                self.availability.answered()
            except DockerUnavailable as err:  # no quorum included: logged once, retried each probe_interval
                self.availability.failed(err)
                await asyncio.sleep(self.settings.probe_interval)
                continue
            todo = names if pending is None else [n for n in pending if n in names]
            done = await asyncio.gather(*(self._first_tick(self.apps[name]) for name in todo))
            pending = [name for name, outcome in zip(todo, done, strict=True) if outcome != "done"]
            if "docker" not in done and pending:
                rounds += 1
                if rounds >= _START_ROUNDS:
                    log.error("start_without", apps=pending, rounds=rounds,
                              action="serving the other apps; these apps' loops keep retrying")
                    break
            if pending:
                await asyncio.sleep(self.settings.probe_interval)
        self.router.mark_ready()  # a document served for every app (Traefik's HTTP provider) is complete only now
        self._started = True
        for rt in self.apps.values():
            self._launch(rt)
        self._discovery = asyncio.create_task(self._discover_loop(), name="bluegreen-discovery")
        log.info("controller_reconciled", apps=sorted(self.apps),
                 broken=sorted(name for name, rt in self.apps.items() if rt.problems and rt.state is None))
        unmatched = unmatched_gates(self.config, self.apps)
        if unmatched:
            log.warning("gates_unmatched", problems=unmatched,
                        action="those gates apply to nothing; check the app keys under apps in the config")

    async def stop(self) -> None:
        self._stop.set()
        tasks = [t for t in [self._discovery, *(rt.task for rt in self.apps.values())] if t is not None]
        for rt in self.apps.values():
            rt.changed.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.prober.close()
        await self.observer.webhooks.close()

    async def _first_tick(self, rt: Runtime) -> str:
        """Reconcile one app: "done" (or broken: nothing to reconcile), "docker" (Docker is down) or "failed"."""
        try:
            async with rt.lock:
                steps = await self.ticker.run(rt)
        except DockerUnavailable as err:
            self.availability.failed(err, app=rt.name)
            return "docker"
        except Exception as err:  # noqa: BLE001 - one app must not keep the others from starting
            log.error("app_reconcile_failed", app=rt.name, error=str(err) or type(err).__name__,
                      action="retrying before serving any routing document")
            return "failed"
        if steps:
            state = steps[-1].state
            log.info("app_reconciled", app=rt.name, active=state.active.value, phase=state.phase.value,
                     generation=state.generation, routing=str(state.routing()),
                     deploy=state.deploy.id if state.deploy else None)
        return "done"

    def _launch(self, rt: Runtime) -> None:
        if rt.task is None and self._started and not self._stop.is_set():
            rt.task = asyncio.create_task(self._app_loop(rt), name=f"bluegreen-{rt.name}")

    async def _discover(self, remove: bool = True) -> list[str]:
        """Runtimes for every app key the labels name (working or broken); apps whose services are all gone are dropped.

        Keys come from `discover`, which checks every name first: a service with a bad app or
        stack name gets no runtime (no key, no router file, no metric), only a logged problem.
        """
        services = [s for s in await self.swarm.services(label=APP_LABEL) if self.config.selects(s.labels)]
        found = discover(services, self.observer.defaults)
        # What each app's rules are checked against; rt.app is each app as last routed.
        self.observer.board = board_of(found, services, self.config,
                                       last={n: rt.app for n, rt in self.apps.items() if rt.app})
        names = sorted({*found.apps, *found.broken})
        if tuple(found.unattached) != self._unattached:
            self._unattached = tuple(found.unattached)
            if found.unattached:
                log.error("labels_invalid", problems=found.unattached,
                          action="these services belong to no app; the controller leaves them alone")
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
                self.availability.answered()  # the end of an outage, even for a controller with no app
            except DockerUnavailable as err:
                self.availability.failed(err)
                continue
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
                    steps = await self.ticker.run(rt)
                self.availability.answered()
            except DockerUnavailable as err:  # no quorum included: nothing of the step was written
                self.availability.failed(err)
            except Exception:  # noqa: BLE001 - the loop must survive anything one tick does
                log.exception("tick_failed", app=rt.name)
            if steps and hurry(steps[-1]) and hurries < _HURRY_LIMIT:
                hurries += 1
                rt.schedule(time.monotonic())
                continue
            hurries = 0
            in_flight = rt.state is not None and rt.state.phase.in_flight
            interval = self.settings.probe_interval if in_flight else self.config.reconcile_interval
            rt.schedule(rt.observed_at + interval)

    # -- operator requests -------------------------------------------------------------------

    async def runtime(self, name: str) -> Runtime:
        """The app's runtime by key, or by bare name when one scope alone uses it; discovering once more if unseen.

        UnknownApp when no service carries the name, AmbiguousApp when several stacks do.
        """
        key = self._resolve(name)
        if key is None:
            await self._discover(remove=False)
            key = self._resolve(name)
            if key is not None:
                self._launch(self.apps[key])
        if key is None:
            raise UnknownApp(f"no service is labelled {APP_LABEL}={name}")
        return self.apps[key]

    def _resolve(self, name: str) -> str | None:
        """The key `name` means: itself when it is a key, else the one key whose app is named `name`."""
        if name in self.apps:
            return name
        candidates = sorted(key for key in self.apps if split_key(key)[1] == name)
        if len(candidates) > 1:
            raise AmbiguousApp(name, candidates)
        return candidates[0] if candidates else None

    @contextlib.asynccontextmanager
    async def _request(self, name: str, what: str) -> AsyncIterator[Runtime]:
        rt = await self.runtime(name)
        if rt.request is not None:
            raise Busy(f"{rt.name}: {rt.request} is running; try again when it has finished")
        rt.request = what
        try:
            async with rt.lock:
                yield rt
        finally:
            rt.request = None

    async def _operate(self, rt: Runtime, begin: Callable[[AppState, Observation, App], Step],
                       probe_color: Callable[[AppState, Mapping[Color, ColorStatus]], Color | None]) -> Step:
        for attempt in range(1, ATTEMPTS + 1):
            reading = await self.observer.read(rt)
            if reading is None:
                raise BrokenApp(rt.name, list(rt.problems))
            state = reading.loaded.state
            probe = await self.observer.probe(rt, reading, probe_color(state, reading.colors), verify=False)
            obs = Observation(now=self.clock(), colors=reading.colors, routed=reading.routed, probe=probe,
                              router_up=reading.router_up)
            step = begin(state, obs, reading.app)
            try:
                await self.executor.execute(rt, reading, step, cause="request")
            except VersionConflict as err:
                log.info("version_conflict", app=rt.name, attempt=attempt, error=str(err))
                continue
            # The machine goes on in the app's loop, at the in-flight pace from now on: the next
            # tick comes one probe_interval after the request (at once after routing moved).
            rt.next_at = time.monotonic() + (0 if hurry(step) else self.settings.probe_interval)
            rt.changed.set()
            return step
        raise SwarmError(f"{rt.name}: the services kept changing under the request ({ATTEMPTS} version conflicts)")

    async def deploy(self, name: str, image: str, by: str = "") -> AppState:
        """Begin deploying `image` to the idle color. Refused (busy) while an operation is in flight."""
        async with self._request(name, f"deploy {image}") as rt:
            def begin(state: AppState, obs: Observation, app: App) -> Step:
                return start_deploy(rt.name, state, obs, image=image, deploy_id=new_deploy_id(rt.name, obs.now),
                                    settings=self.settings_for(rt.name), strategy=app.strategy, by=by)

            step = await self._operate(rt, begin, lambda state, colors: None)
        return step.state

    async def switch(self, name: str, to: Color | None = None, force: bool = False, by: str = "") -> AppState:
        """Move all traffic to the other color; its health is probed first and must pass unless `force`."""
        async with self._request(name, f"switch to {to or 'the other color'}") as rt:
            def begin(state: AppState, obs: Observation, app: App) -> Step:
                return start_switch(rt.name, state, obs, deploy_id=new_deploy_id(rt.name, obs.now), settings=self.settings,
                                    to=to, force=force, by=by)

            def target(state: AppState, colors: Mapping[Color, ColorStatus]) -> Color | None:
                color = to or state.active.other
                return None if force or color is state.active or state.phase.in_flight else color

            step = await self._operate(rt, begin, target)
        return step.state

    async def rollback(self, name: str, by: str = "") -> AppState:
        """Return to the previous color: abort a deploy in flight, or go back to the last release."""
        async with self._request(name, "rollback") as rt:
            def begin(state: AppState, obs: Observation, app: App) -> Step:
                return start_rollback(rt.name, state, obs, deploy_id=new_deploy_id(rt.name, obs.now),
                                      settings=self.settings_for(rt.name), by=by)

            def previous(state: AppState, colors: Mapping[Color, ColorStatus]) -> Color | None:
                # The machine switches back only to a previous color still up, after a health check.
                at_rest = not state.phase.in_flight and state.result is Result.SUCCEEDED
                return state.active.other if at_rest and colors[state.active.other].replicas > 0 else None

            step = await self._operate(rt, begin, previous)
        return step.state

    async def undo(self, name: str, revision: int | None = None, by: str = "") -> AppState:
        """Deploy an earlier release's image (the last successful one, or `revision`) through every gate."""
        async with self._request(name, "undo" + (f" to revision {revision}" if revision is not None else "")) as rt:
            def begin(state: AppState, obs: Observation, app: App) -> Step:
                return start_undo(rt.name, state, obs, deploy_id=new_deploy_id(rt.name, obs.now),
                                  settings=self.settings_for(rt.name), revision=revision, by=by,
                                  strategy=app.strategy)

            step = await self._operate(rt, begin, lambda state, colors: None)
        return step.state

    async def history(self, name: str) -> dict[str, Any]:
        """The app's history as stored on its services, newest first (read fresh, no change)."""
        rt = await self.runtime(name)
        reading = await self.observer.read(rt)
        if reading is None:
            raise BrokenApp(rt.name, list(rt.problems))
        loaded = reading.loaded
        return {"app": rt.name, "releases": [history_view(r) for r in reversed(loaded.state.history)],
                "problem": loaded.history_problem}

    async def promote(self, name: str) -> AppState:
        """Go on with a Paused deploy: switch to its color. Refused (phase) unless the app is Paused."""
        return await self._gate(name, "promote", start_promote, "deploy_promoted")

    async def abort(self, name: str) -> AppState:
        """Fail a deploy that has not moved traffic: traffic stays where it is. Refused (phase) once it has."""
        return await self._gate(name, "abort", start_abort, "deploy_aborted")

    async def _gate(self, name: str, request: str, start: Callable[..., Step], event: str) -> AppState:
        """An operator's answer to a deploy held before the switch: `start` makes its step, `event` logs it."""
        async with self._request(name, request) as rt:
            def begin(state: AppState, obs: Observation, app: App) -> Step:
                return start(rt.name, state, obs, settings=self.settings_for(rt.name))

            step = await self._operate(rt, begin, lambda state, colors: None)
        log.info(event, app=rt.name, deploy=step.state.deploy.id if step.state.deploy else None)
        return step.state

    # -- alerts ------------------------------------------------------------------------------

    async def on_alerts(self, notification: Notification) -> list[dict[str, Any]]:
        """One result per alert, in order: a bad alert gets its own error, and the good ones still act.

        At most `max_alerts_per_request` are looked at; the rest are answered 429 untouched.
        """
        def subject(alert: Alert) -> dict[str, Any]:
            return {"alert": alert.labels.get("alertname", alert.identity), "app": alert.labels.get("swarmshift_app")}

        def refuse(alert: Alert, status: int, outcome: str, detail: str) -> dict[str, Any]:
            return {**subject(alert), "status": status, "outcome": outcome, "detail": detail}

        return await answer_each(notification.alerts, self.config.max_alerts_per_request, self._on_alert, refuse,
                                 subject, log)

    async def _on_alert(self, alert: Alert) -> dict[str, Any]:
        name = alert.labels.get("alertname", alert.identity)
        app = alert.labels.get("swarmshift_app")
        result: dict[str, Any] = {"alert": name, "app": app, "status": 200}
        if not app:
            return {**result, "outcome": "ignored", "detail": "no swarmshift_app label"}
        try:
            rt = await self.runtime(app)
        except UnknownApp as err:
            return {**result, "status": 404, "outcome": "rejected", "detail": str(err)}
        key = alert_key(alert)
        repeat = {**result, "outcome": "repeat", "detail": "this alert (same fingerprint and startsAt) has already "
                                                           "rolled the app back"}
        if not alert.firing:
            log.info("alert_resolved", app=app, alert=name)
            return {**result, "outcome": "resolved", "detail": "resolved alerts are logged, not acted on"}
        # The cheap check, on the labels as this process last read or wrote them; the one that
        # counts is made on the services read for the step itself (AlertRepeat).
        if rt.reading is not None and key in alerts_seen({c: s.labels for c, s in rt.reading.services.items()}):
            return repeat
        log.info("alert_received", app=app, alert=name, policy=self.settings.rollback_on_alert)
        async with rt.lock:
            rt.alert_key = key
            try:
                steps = await self.ticker.run(rt, alert=name)
            except AlertRepeat:
                return repeat
            finally:
                rt.alert_key = None
        if not steps:
            return {**result, "status": 409, "outcome": "held", "detail": "; ".join(rt.problems) or "no tick ran"}
        step, state = steps[0], steps[0].state  # the step that weighed the alert
        if rolls_back(step):
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
        reading = await self.observer.read(rt)
        return app_view(rt, reading, settings=self.settings_for(rt.name), now=self.clock())

    async def statuses(self) -> list[dict[str, Any]]:
        """Every app's view; one app that cannot be read is shown with the error, the others as they are."""
        await self._discover(remove=False)
        views = []
        for name in sorted(self.apps):
            try:
                views.append(await self.status(name))
            except DockerUnavailable:
                raise
            except Exception as err:  # noqa: BLE001 - one app must not hide the others
                log.warning("status_failed", app=name, error=str(err) or type(err).__name__)
                views.append(app_view(self.apps[name], None, error=str(err) or type(err).__name__))
        return views

    @property
    def unattached(self) -> list[str]:
        """The problems of labelled services that name no app (a bad app or stack name), as the last discovery found them."""
        return list(self._unattached)

    def traefik_document(self) -> dict[str, Any]:
        """The Traefik dynamic configuration for every app, as the router routes it: what `GET /v1/traefik` serves."""
        routes = [(rt.app, rt.state.routing()) for rt in sorted(self.apps.values(), key=lambda r: r.name)
                  if rt.state is not None and rt.app]
        return self.router.traefik_document(routes)
