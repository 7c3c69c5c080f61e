"""Reading the world for a tick: an app's services and tasks, the routing in effect, probes and PromQL checks.

Nothing here changes anything: `Observer.read` turns what Swarm and the router report into a
`Reading` (the app, both colors' `ColorStatus`, the routing in effect, the stored state and, in
RollingBack only, whether the router has a server of the color back up), and the probe and
checks measure the color a step asks about.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from bluegreen.analysis import Analyst, NoAnalyst
from bluegreen.app_check import app_problems, claim
from bluegreen.apps import App, Color, Refusal, discover, split_key
from bluegreen.canary import CanaryReading, window_for
from bluegreen.claims import Board
from bluegreen.config import BlueGreenConfig, PromCheck
from bluegreen.labels import APP_LABEL, LOCK_LABEL
from bluegreen.phases import CheckResult, ColorStatus, Probe, ProbeOutcome, needs
from bluegreen.probe import Prober
from bluegreen.routers import Router, RouterError
from bluegreen.runtime import CanaryTrack, Runtime
from bluegreen.smoke import SmokeOutcome, SmokeRound, excerpt
from bluegreen.state import AppState, Loaded, Phase, Routing, choose_state, format_time, load_state
from bluegreen.webhook_gates import HookCall, HookRound
from bluegreen.webhooks import WebhookCaller
from swarmshift import logs
from swarmshift.prometheus import Prometheus, PrometheusUnavailable, QueryError
from swarmshift.swarm import Service, SwarmAccess

log = logs.get("bluegreen")

_UNHEALTHY = ("unhealthy", "starting")


@dataclass
class Reading:
    """One read of an app: its description, services, colors, routing in effect and stored state."""

    app: App
    services: dict[Color, Service]
    colors: dict[Color, ColorStatus]
    routed: Routing | None
    loaded: Loaded
    problems: list[str]  # labels the app has, but this config cannot work with
    # Router.servers_up of the color a stored RollingBack state routes back to; empty in any other phase.
    router_up: dict[Color, bool | None] = field(default_factory=dict)


@dataclass(frozen=True)
class EarlyProbe:
    """A probe started while the tick reads Swarm, for the state in memory."""

    key: tuple[Any, ...]  # the state generation, app, routing, color and kind it was started for
    task: asyncio.Task


class Checks:
    """The PromQL checks of the config, run against Prometheus: the controller's checks client."""

    def __init__(self, prometheus: Prometheus | None, checks: list[PromCheck]) -> None:
        self.prometheus = prometheus
        self.checks = checks

    @classmethod
    def from_config(cls, config: BlueGreenConfig) -> Checks:
        p = config.prometheus
        prometheus = Prometheus(p.url, timeout=p.timeout, retries=0) if p.url else None
        return cls(prometheus, config.checks)

    async def run(self, app: App, color: Color) -> tuple[CheckResult, ...]:
        if not self.checks:
            return ()
        return tuple(await asyncio.gather(*(self._check(app, color, check) for check in self.checks)))

    async def _check(self, app: App, color: Color, check: PromCheck) -> CheckResult:
        assert self.prometheus is not None  # the config requires prometheus.url with checks
        query = check.render(app.name, color, app.service(color))
        try:
            samples = await self.prometheus.query(query)
        except QueryError as err:
            # Prometheus's answer quotes pieces of the query; GET /v1/apps, which shows why a
            # deploy failed, needs no token, so the answer goes to the log only.
            log.error("check_query_refused", app=app.name, check=check.name, error=str(err))
            return check.evaluate(None, "Prometheus refused the query (logged as check_query_refused)")
        except PrometheusUnavailable as err:
            # Unknown is never a pass: an outage must not wave a deploy through.
            return CheckResult(check.name, False, f"Prometheus unavailable: {err}")
        if not samples:
            return check.evaluate(None)
        # Several series: judge the worst of them.
        values = [s.value for s in samples]
        return check.evaluate(max(values) if check.comparison in ("<", "<=") else min(values))


class Observer:
    """Reads an app for a tick, probes its colors and runs its checks."""

    def __init__(self, swarm: SwarmAccess, router: Router, prober: Prober, checker: Checks, config: BlueGreenConfig,
                 clock: Callable[[], float] = time.time, analyst: Analyst | None = None,
                 webhooks: WebhookCaller | None = None) -> None:
        self.swarm = swarm
        self.analyst = analyst or NoAnalyst()
        self.router = router
        self.prober = prober
        self.checker = checker
        self.config = config
        self.defaults = config.app_defaults()
        self.clock = clock
        self.webhooks = webhooks or WebhookCaller()
        self.board = Board()  # every app's claim as the controller's discovery last saw them

    def contests(self, rt: Runtime, app: App, services: list[Service], valid: bool = True) -> list[str]:
        """The app's problems as a newcomer whose rules overlap an established app's (bluegreen.claims).

        The app's own rules are read fresh, the others' from the board: the last discovery, with
        each app's entry refreshed by its own reads. A newcomer is left alone like any invalid app,
        so it never gets a routing that takes another's traffic.
        """
        mine = claim(app, services, last=rt.app)
        lost = self.board.contests(mine)
        # A valid app that lost nothing is routed by this very tick: the others see it so at once,
        # not at the next discovery. As board() counts apps, one that is not routed, and never
        # was, claims nothing.
        if valid and not lost:
            self.board = self.board.updated(replace(mine, routed=True), app.name)
        else:
            self.board = self.board.updated(mine if mine.routed else None, app.name)
        for c in lost:
            if c.problem() not in rt.problems:
                log.error("app_conflict", app=c.newcomer, established=c.established, rule=c.newcomer_rule.text,
                          established_rule=c.established_rule.text, overlap=str(c.overlap),
                          action=f"{c.established} keeps the route; {c.newcomer} is not routed")
        return [c.problem() for c in lost]

    async def read(self, rt: Runtime) -> Reading | None:
        """Read the app; None (problems logged once) when its labels describe no usable app.

        Only the services of the app's own scope count (`bluegreen.apps.app_key`): another
        stack's services with the same app label are another app, and their problems are theirs.
        """
        services = [s for s in await self.swarm.services(label=f"{APP_LABEL}={split_key(rt.name)[1]}")
                    if self.config.selects(s.labels)]
        try:
            found = discover(services, self.defaults)
        except Exception as err:  # noqa: BLE001 - a parser's bug must break only this app, never the loop
            self.report(rt, [f"app {rt.name}: the labels could not be read: {err!r}"])
            return None
        self.report_refused(rt, found.refused.get(rt.name, []))
        app = found.apps.get(rt.name)
        extra = app_problems(app, self.config) if app is not None else []
        if app is not None:
            own = [s for s in services if s.name in (app.blue_service, app.green_service)]
            extra += self.contests(rt, app, own, valid=not extra)
        problems = [*found.issues.get(rt.name, []), *extra]
        if app is None or extra:
            self.report(rt, problems or [f"app {rt.name}: no service carries its labels any more"])
            return None
        rt.app = app
        by_name = {svc.name: svc for svc in services}
        chosen = {color: by_name[app.service(color)] for color in Color}
        *tasks, routed, router_up = await asyncio.gather(
            *(self.swarm.tasks_with_health(chosen[c].id) for c in Color), self._routed(app),
            self._router_up(app, _rolling_back_to(app, chosen)))
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
        try:
            loaded = load_state(app, {c: chosen[c].labels for c in Color}, {c: colors[c].replicas for c in Color},
                                routed, self.clock())
        except Exception as err:  # noqa: BLE001 - as above: a state label must break only its own app
            self.report(rt, [f"app {rt.name}: the state labels could not be read: {err!r}"])
            return None
        self.report(rt, [*problems, *loaded.problems])
        if loaded.adopted:
            log.warning("state_adopted", app=app.name, active=loaded.state.active.value, why=loaded.adopted)
        if loaded.history_problem != rt.history_problem:
            # Once per damage, not per tick: the history is bookkeeping, the app goes on without it.
            if loaded.history_problem:
                log.warning("history_reset", app=app.name, problem=loaded.history_problem,
                            action="the history starts again empty; it is rewritten at the next state change")
            rt.history_problem = loaded.history_problem
        return Reading(app, chosen, colors, routed, loaded, problems, router_up)

    async def _routed(self, app: App) -> Routing | None:
        try:
            return await self.router.read(app)
        except RouterError as err:
            log.warning("router_read_failed", app=app.name, error=str(err))
            return None

    async def _router_up(self, app: App, color: Color | None) -> dict[Color, bool | None]:
        """Whether the router has a server of `color` up, when a rollback routes back to it; asked of no other app."""
        if color is None:
            return {}
        try:
            return {color: await self.router.servers_up(app, color)}
        except RouterError as err:  # the interface says it never raises; unknown holds nothing anyway
            log.warning("router_health_failed", app=app.name, color=color.value, error=str(err))
            return {color: None}

    def after_writes(self, reading: Reading, services: dict[Color, Service], routed: Routing | None) -> Reading | None:
        """The reading as the step's own writes and confirmed routing left it, without asking Docker again.

        Only when the writes changed no image or replica count: the task counts read at the
        start of the tick still describe the services then (they are a few hundred ms old), and
        so does the router's word on its servers (`router_up`), which writes do not change.
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

    def report(self, rt: Runtime, problems: list[str]) -> None:
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

    def report_refused(self, rt: Runtime, refusals: list[Refusal]) -> None:
        """Log each service refused a color once, when it first is: the app goes on without it."""
        now = {r.service: r.line(rt.name) for r in refusals}
        for refusal in refusals:
            if rt.refused.get(refusal.service) != now[refusal.service]:
                log.warning("service_refused", app=rt.name, service=refusal.service, color=refusal.color.value,
                            kept=refusal.kept, reason=refusal.reason,
                            action="the app goes on with the established service; remove or relabel the newcomer")
        rt.refused = now

    def early_probe(self, rt: Runtime) -> EarlyProbe | None:
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
        return EarlyProbe(key, asyncio.create_task(self.prober.probe(app, color, routed=rt.routed, verify=verify)))

    async def probe(self, rt: Runtime, reading: Reading, color: Color | None, verify: bool,
                     early: EarlyProbe | None = None) -> Probe | None:
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

    async def smoke(self, rt: Runtime, reading: Reading, color: Color | None) -> SmokeRound | None:
        """The app's smoke requests sent to `color`, when a step asks; None when the config lists none for it."""
        requests = self.config.gates(rt.name)[0]
        if color is None or not requests:
            return None
        result = await self.prober.smoke(reading.app, color, requests, routed=reading.routed)
        failing = result.failing
        rt.smoke = {"color": color.value, "outcome": result.outcome.value, "detail": result.summary(),
                    "at": format_time(self.clock())}
        service = reading.app.service(color)
        if result.outcome is SmokeOutcome.PASSED:
            log.info("smoke_passed", app=rt.name, color=color.value, service=service, requests=len(result.verdicts))
        elif result.outcome is SmokeOutcome.UNREACHABLE:
            log.warning("smoke_unreachable", app=rt.name, color=color.value, service=service, detail=result.detail,
                        action="sent again next tick, until precheck_timeout")
        elif failing is None:
            log.error("smoke_failed", app=rt.name, color=color.value, service=service, detail=result.detail,
                      action="the deploy fails; no user traffic reaches the release")
        else:
            a = failing.answer
            log.error("smoke_failed", app=rt.name, color=color.value, service=service, target=failing.target,
                      method=failing.request.method, path=failing.request.path, expected=failing.request.expects(),
                      status=a.status, error=a.error, latency_ms=round(a.latency * 1000, 1),
                      body=excerpt(a.body) if a.status is not None else None, problems=list(failing.problems),
                      action="the deploy fails; no user traffic reaches the release")
        return result

    async def canary(self, rt: Runtime, reading: Reading, color: Color | None) -> CanaryReading | None:
        """The canary analysis of `color` when one is due (every canary.interval; sooner once the window is over).

        None when none is due this tick (or the last unanswered one). Prometheus unanswered is retried with a growing delay, at
        most max(interval, grace / 2) apart, so the window's end and its grace still get answers.
        """
        state = reading.loaded.state
        policy = self.config.canary_policy(rt.name)
        if color is None or policy is None or state.deploy is None:
            return None
        key = (state.deploy.id, state.since)
        track = rt.canary if rt.canary is not None and rt.canary.key == key else CanaryTrack(key)
        rt.canary = track
        now = self.clock()
        elapsed = now - state.since
        last = track.last
        final = last is not None and last.available and last.window < policy.analysis <= elapsed
        if now < track.next_at and not final:
            # Not due. An unanswered analysis is given again so that the machine can say why it waits
            # (it is never a verdict); an answered one is not: each verdict is on a fresh answer.
            return last if last is not None and not last.available else None
        result = await self.analyst.analyse(reading.app, color, window_for(elapsed, policy), policy.latency_quantile)
        track.last, track.last_at = result, now
        service = reading.app.service(color)
        if result.available:
            track.failures = 0
            track.next_at = now + policy.interval
            log.info("canary_analysis", app=rt.name, color=color.value, service=service, window=result.window,
                     requests=result.requests, errors=result.errors, error_rate=result.error_rate,
                     latency=result.latency, elapsed=round(elapsed, 3))
        else:
            track.failures += 1
            cap = max(policy.interval, policy.grace / 2)
            track.next_at = now + min(max(1.0, policy.interval / 4) * 2 ** (track.failures - 1), cap)
            log.warning("canary_unavailable", app=rt.name, color=color.value, service=service, error=result.error,
                        failures=track.failures, action="analysed again with backoff; no answer is never a pass")
        return result

    async def call_webhooks(self, rt: Runtime, reading: Reading, call: HookCall | None) -> HookRound | None:
        """The webhooks of the gate a step stands at that are still pending, when it asks; None when none is."""
        if call is None:
            return None
        hooks = [hook for hook in self.config.webhooks_for(rt.name) if hook.name in call.names]
        if not hooks:
            return None
        result = await self.webhooks.round(rt.name, call.gate, hooks, reading.loaded.state)
        rt.webhooks = {"gate": str(call.gate), "at": format_time(self.clock()),
                       "results": [{"webhook": r.name, "passed": r.passed, "status": r.status, "detail": r.detail,
                                    "attempts": r.attempts} for r in result.results]}
        return result

    async def checks(self, app: App, color: Color | None) -> tuple[CheckResult, ...]:
        """The PromQL checks of `color`, when a step asks for them."""
        return await self.checker.run(app, color) if color is not None else ()


def _rolling_back_to(app: App, services: Mapping[Color, Service]) -> Color | None:
    """The color a stored RollingBack state sends traffic back to (its active one); None in any other phase.

    Read from the labels before the state is loaded, so that the router is asked beside its
    routing rather than after it; `load_state` then reads the same labels and reports their problems.
    """
    try:
        stored = choose_state({c: AppState.from_labels(services[c].labels, app.service(c))[0] for c in Color})
    except Exception:  # noqa: BLE001 - bad labels: load_state reports them, and no question is asked
        return None
    return stored.active if stored is not None and stored.phase is Phase.ROLLING_BACK else None
