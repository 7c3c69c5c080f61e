"""The deploy state machine: from the stored state and one tick's observations to the next state and its intents.

Everything here is plain data and functions; the daemon loop does the I/O. One tick:

1. Observe: both color services (`ColorStatus`), the routing the router reports in effect
   (`Router.read`), and, when `needs(state)` asks for them, one probe round of the color under
   test and the PromQL checks; plus any alert that fired for the app since the last tick.
2. `step = advance(app, state, progress, observation, settings)`.
3. Execute `plan(step, stored_generations)` in this order: `first` (the new state, with the
   intents for that color, in one `Swarm.update` at the version read), `routes` (apply, then
   confirm), `then` (the other color), `notifications`. Keep `step.progress` in memory.

Before any traffic moves, a deploy passes PreChecks and then the app's release gates: SmokeTests
(the config's smoke requests to the idle color; one wrong answer fails the deploy), PreRollout
(the pre-rollout webhooks), Paused (auto_promotion: false; left by promote, abort or
auto_promotion_after, timed from the stored `since`) and ConfirmPromotion (the confirm-promotion
webhooks, polled). Once Stable, a deploy calls its post-rollout webhooks. Each webhook that passed
is recorded in the deploy's state in the step that saw it pass, so it is never sent again for
that deploy; a webhook's hold is timed from the phase's stored `since`. With a canary policy,
the switch then goes first to the canary weight: Switching → Canary (the new color's Traefik
metrics analysed for canary.analysis, timed from the stored `since`) → Switching to 100 % →
Verifying; a breach rolls back at once. When the idle color ran with `preview_replicas`,
ScalingUp brings it to the active count before the switch.

Traffic never moves onto a color with no running task (a node died; Swarm reschedules its tasks):
a Route that gives such a color more weight than the router reports is held back until one runs,
and Switching and RollingBack wait for it as they wait for the router (switch_timeout still rolls
back); a switch whose target has none goes back to Waiting instead. RollingBack also holds the
Route back while the router reports no server of the color up (`Observation.router_up` False:
Traefik's health check has not yet seen the rescheduled task, and would answer 503 meanwhile);
a router that cannot tell (None) holds nothing.

A final transition appends the operation to the state's history in that same state, so the
entry is written with the phase it records. A color is retired only with weight 0 confirmed by
the router and `drain_grace` after it left the routing (`drain_problem`).

Why a restart can neither repeat a side effect nor leave traffic on an unverified color:

- Intents are declarative ("color green runs image X", "weights 0/100") and are emitted only
  while the observation shows they are not in place yet. Running one twice changes nothing;
  and once in place, it is not emitted again.
- The state is written before the intents run (and travels in the same service update as the
  intents for that service). A kill after the write resumes in the new phase, which emits the
  intents still missing; a kill before it repeats the tick. Notifications are sent once, after
  the write: at most once per transition.
- Traffic leans toward a deploy's target only in Switching, Progressing and Verifying, and the
  only ways out of those are a completed verification window or RollingBack. A restart in them
  starts a fresh window (failures already counted are stored and kept), or, with
  `on_restart: rollback`, rolls back.
- `Progress` (probe streaks, the window's rounds) is volatile: after a restart it starts empty,
  which only ever asks for more evidence, never less.

Rollback deadline: a verification round fails at most `probe_interval` after a failure starts;
the round that exceeds `failure_threshold` moves to RollingBack and emits the Route back in the
same step, so traffic is back within probe_interval × failure_threshold (counted from the first
failed round) plus the time the router takes to apply.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Literal

from bluegreen import canary as canary_analysis
from bluegreen.apps import Color, Strategy, same_image
from bluegreen.canary import CanaryPolicy, CanaryReading
from bluegreen.labels import LOCK_LABEL
from bluegreen.smoke import SmokeOutcome, SmokeRound
from bluegreen.state import (
    AppState,
    Deploy,
    Operation,
    Outcome,
    Phase,
    Release,
    Result,
    Routing,
    add_phase_time,
    format_time,
    new_deploy_id,
    record,
)
from bluegreen.webhook_gates import Gate, HookCall, HookRound, HookSpec
from swarmshift.config import format_duration

AlertPolicy = Literal["verification", "always", "never"]
RestartPolicy = Literal["resume", "rollback"]


@dataclass(frozen=True)
class Settings:
    """The controller config's knobs that the machine reads: `BlueGreenConfig.settings()` makes them.

    No defaults here: they are the validated config's (bluegreen.config), in one place; only
    `webhooks` has one (none), so that a machine built without webhook gates need not name them.
    """

    probe_interval: float
    healthy_threshold: int
    failure_threshold: int
    wait_timeout: float
    precheck_timeout: float
    switch_timeout: float
    verification_window: float
    scale_down_delay: float
    keep: bool
    rollback_on_alert: AlertPolicy
    on_restart: RestartPolicy
    progressive_steps: tuple[int, ...]
    # The app's release gates (per app key in the config, else its defaults).
    smoke_tests: int  # smoke requests sent to the idle color before the switch; 0: no SmokeTests phase
    auto_promotion: bool  # False: a deploy waits in Paused, after its checks, for promote or abort
    auto_promotion_after: float | None  # with auto_promotion False: Paused goes on by itself after this
    canary: CanaryPolicy | None = None  # a canary step before the full switch (Traefik routers only); None: none
    webhooks: tuple[HookSpec, ...] = ()  # the app's webhook gates (`webhooks`, `apps.<key>.webhooks`)
    # Cost and retirement (issue 11). Defaults keep the behaviour without them; the config's own
    # defaults are in bluegreen.config.
    preview_replicas: int | None = None  # the idle color runs with this many until ScalingUp; None: the active count
    abort_scale_down_delay: float | None = None  # a failed or rolled-back color's retirement; None: scale_down_delay
    drain_grace: float = 0.0  # a color is scaled down only this long after the router confirmed its weight 0

    @property
    def window_rounds(self) -> int:
        """Probe rounds a verification window must hold, so a slow tick can't shorten the evidence."""
        return max(1, math.floor(self.verification_window / self.probe_interval + 1e-9))


# --- Observations ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ColorStatus:
    """One color's service as read this tick."""

    service: str
    image: str
    replicas: int  # desired
    running: int  # tasks running
    # Running tasks whose container reports unhealthy or starting. Swarm reports a task with a
    # health check as running only once it first passed, so a health Docker cannot read (a task
    # on another node) is not counted here.
    unhealthy: int = 0
    updating: bool = False  # a Swarm rolling update is in progress
    lock: str | None = None  # the value of swarmshift.bluegreen.lock

    def ready(self) -> bool:
        return self.replicas > 0 and self.running >= self.replicas and self.unhealthy == 0 and not self.updating

    def describe(self) -> str:
        text = f"{self.running}/{self.replicas} tasks running"
        if self.unhealthy:
            text += f", {self.unhealthy} unhealthy"
        if self.updating:
            text += ", a rolling update is in progress"
        return text


class ProbeOutcome(StrEnum):
    OK = "ok"
    FAILED = "failed"  # the tasks answered, wrongly (status, timeout, refused)
    UNREACHABLE = "unreachable"  # the controller has no network path to the tasks: never healthy


@dataclass(frozen=True)
class Probe:
    """One round of HTTP probes of a color's tasks (all of them must pass for OK)."""

    outcome: ProbeOutcome
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome is ProbeOutcome.OK


@dataclass(frozen=True)
class CheckResult:
    """One PromQL check, already compared with its threshold (bluegreen.config.PromCheck.evaluate)."""

    name: str
    ok: bool
    detail: str = ""


@dataclass(frozen=True)
class Observation:
    now: float  # wall clock, seconds since the epoch: stored times must survive a restart
    colors: Mapping[Color, ColorStatus]
    routed: Routing | None = None  # what the router reports in effect; None when it has nothing
    probe: Probe | None = None  # of the color `needs` named, taken this tick
    checks: tuple[CheckResult, ...] = ()
    alert: str | None = None  # a firing alert for this app, received since the last tick
    smoke: SmokeRound | None = None  # the smoke requests sent to the color `needs` named, this tick
    canary: CanaryReading | None = None  # the canary analysis of the color `needs` named, when one was due this tick
    webhooks: HookRound | None = None  # the webhooks `needs` named, called this tick
    # Whether the router's own health checks have a server of a color up (Router.servers_up): read
    # only in RollingBack, for the color traffic goes back to; None, or no entry, when it cannot tell.
    router_up: Mapping[Color, bool | None] = field(default_factory=dict)


@dataclass(frozen=True)
class Needs:
    """What the loop should measure before the next `advance`."""

    probe: Color | None = None
    checks: Color | None = None
    smoke: Color | None = None
    canary: Color | None = None
    webhooks: HookCall | None = None


@dataclass(frozen=True)
class Progress:
    """What the machine remembers between ticks but does not store: it restarts empty."""

    started: float | None = None  # when this process began the current phase's wait or window
    consecutive_ok: int = 0  # pre-switch probe streak
    rounds: int = 0  # verification rounds seen in the current window


# --- Intents -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SetImage:
    color: Color
    image: str


@dataclass(frozen=True)
class Scale:
    color: Color
    replicas: int


@dataclass(frozen=True)
class SetLock:
    color: Color
    value: str | None  # None removes the lock


@dataclass(frozen=True)
class Route:
    routing: Routing


@dataclass(frozen=True)
class Notify:
    event: str  # phase, switch, rollback, retire
    text: str  # one line for people (Slack)
    fields: Mapping[str, object] = field(default_factory=dict)


Intent = SetImage | Scale | SetLock | Route | Notify


@dataclass(frozen=True)
class Step:
    previous: AppState
    state: AppState
    progress: Progress
    intents: tuple[Intent, ...] = ()
    reason: str = ""  # why: log it with the step

    @property
    def persisted(self) -> bool:
        """Whether the state changed, and so must be written before the intents run."""
        return self.state.generation != self.previous.generation

    @property
    def transitioned(self) -> bool:
        return self.state.phase is not self.previous.phase


class Refused(Exception):
    """An operator request the app cannot take now.

    `code`: busy or phase (HTTP 409: another operation runs, or the phase does not take this
    request), unhealthy, noop, nothing (422).
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# --- The machine -------------------------------------------------------------------------------


def needs(state: AppState, settings: Settings | None = None) -> Needs:
    """What to measure for `state`; the webhooks to call only with the app's `settings`."""
    target = state.deploy.target if state.deploy is not None else None
    if state.phase in (Phase.PRECHECKS, Phase.PROGRESSING, Phase.VERIFYING):
        return Needs(probe=target, checks=target)
    if state.phase is Phase.SMOKE_TESTS:
        return Needs(smoke=target)
    if state.phase is Phase.CANARY:
        return Needs(canary=target)
    gate = hook_gate(state)
    if gate is not None and settings is not None and state.deploy is not None:
        names = tuple(spec.name for spec in pending_hooks(settings, state.deploy, gate))
        if names:
            return Needs(webhooks=HookCall(gate, names))
    return Needs()


def hook_gate(state: AppState) -> Gate | None:
    """The webhook gate `state` stands at, if any: its phase's, or post-rollout for a deploy armed for it."""
    if state.phase is Phase.PRE_ROLLOUT:
        return Gate.PRE_ROLLOUT
    if state.phase is Phase.CONFIRM_PROMOTION:
        return Gate.CONFIRM_PROMOTION
    d = state.deploy
    if state.phase is Phase.STABLE and state.result is Result.SUCCEEDED and d is not None and d.post_rollout:
        return Gate.POST_ROLLOUT
    return None


def pending_hooks(settings: Settings, deploy: Deploy, gate: Gate) -> tuple[HookSpec, ...]:
    """The app's webhooks of `gate` that the deploy has not recorded as done."""
    return tuple(spec for spec in settings.webhooks if spec.gate is gate and not deploy.webhook_done(spec.name))


@dataclass(frozen=True)
class _Tick:
    app: str
    state: AppState
    progress: Progress
    obs: Observation
    settings: Settings

    @property
    def now(self) -> float:
        return self.obs.now

    @property
    def deploy(self) -> Deploy:
        assert self.state.deploy is not None, f"{self.state.phase} without a deploy"
        return self.state.deploy

    def color(self, color: Color) -> ColorStatus:
        return self.obs.colors[color]

    def elapsed(self) -> float:
        """Time in the current phase as this process saw it: a restart gives waits a fresh start."""
        return self.now - (self.progress.started if self.progress.started is not None else self.now)


@dataclass(frozen=True)
class _Outcome:
    state: AppState
    progress: Progress
    intents: tuple[Intent, ...] = ()
    reason: str = ""
    verdict: Outcome | None = None  # the history's outcome when it is not the result's (Aborted)


def advance(app: str, state: AppState, progress: Progress, obs: Observation, settings: Settings) -> Step:
    """The next step for `app`: its new state, volatile progress, intents and the reason."""
    tick = _Tick(app, state, progress if progress.started is not None else replace(progress, started=obs.now),
                 obs, settings)
    restarted = progress.started is None and state.phase.moves_traffic
    return _finish(tick, _HANDLERS[state.phase](tick, restarted))


def _finish(tick: _Tick, outcome: _Outcome) -> Step:
    """Add what every state requires: its locks and its routing, and a notification for a new phase."""
    new, obs = _bookkeeping(tick, outcome), tick.obs
    intents = list(outcome.intents)
    for color, want in new.locks().items():
        if obs.colors[color].lock != want:
            intents.append(SetLock(color, want))
    want_routing, reason = new.routing(), outcome.reason
    if obs.routed != want_routing:
        held = _route_held(new, obs, want_routing)
        if held is None:
            intents.append(Route(want_routing))
        else:
            reason = f"{reason}; {held}" if reason else held
    if new.phase is not tick.state.phase:
        intents.append(_notification(tick.app, tick.state, new, reason))
    return Step(previous=tick.state, state=new, progress=outcome.progress, intents=tuple(intents), reason=reason)


def _route_held(state: AppState, obs: Observation, want: Routing) -> str | None:
    """Why the Route to `want` waits this tick (`state` is the step's new one), or None when it goes out."""
    empty = _gains_without_task(obs, want)
    if empty is not None:
        return f"traffic waits: {empty.service} has no running task ({empty.describe()}); {want} is routed once one runs"
    down = _back_before_router_up(state, obs, want)
    if down is not None:
        return f"traffic waits: the router reports no server of {down.service} up yet; {want} is routed once one is"
    return None


def _gains_without_task(obs: Observation, want: Routing) -> ColorStatus | None:
    """A color that `want` gives more weight than the router reports while it has no running task; None if none.

    Traffic never moves onto such a color: on a multi-node swarm its only tasks die with their node
    (Swarm reschedules them in some 10 to 20 s), between the gates and the switch or before a
    rollback. The Route is left out until one runs; Switching and RollingBack wait for the
    router's confirmation anyway, and switch_timeout still bounds Switching. A route that only
    takes weight away, or one the router has nothing for yet (None), goes out as it is.
    """
    if obs.routed is None:
        return None
    for color in Color:
        status = obs.colors[color]
        if want.weight(color) > obs.routed.weight(color) and status.running == 0:
            return status
    return None


def _back_before_router_up(state: AppState, obs: Observation, want: Routing) -> ColorStatus | None:
    """In RollingBack, the color traffic goes back to while the router reports none of its servers up; else None.

    A task Swarm has just rescheduled is running before the router's own health check has seen
    it: Traefik checks every router.traefik.health_interval, and until then its weighted service
    has no healthy child and answers 503 "no available server" to every request. So the route back
    also waits for the router's word, as it waits for a running task. Only a report of no server up
    (False) holds: a router that cannot tell (None, or no entry: nginx, no Traefik API, Traefik
    unreachable) routes as before. Only RollingBack: a switch reaches its target through Waiting
    and PreChecks, which give the router's checks time, while a rollback goes back at once. And,
    as for a task, only a route that gives the color more weight than the router reports.
    """
    if state.phase is not Phase.ROLLING_BACK or obs.routed is None:
        return None
    color = state.active
    if want.weight(color) > obs.routed.weight(color) and obs.router_up.get(color) is False:
        return obs.colors[color]
    return None


_OUTCOMES = {Result.SUCCEEDED: Outcome.SUCCEEDED, Result.ROLLED_BACK: Outcome.ROLLED_BACK, Result.FAILED: Outcome.FAILED}


def _bookkeeping(tick: _Tick, outcome: _Outcome) -> AppState:
    """The new state with the time spent in the phase left, and a history entry when an operation ends.

    Both travel in the state of the transition itself, so the entry is written in the same
    versioned update as the final phase: a kill can neither lose it nor write it twice.
    """
    old, new = tick.state, outcome.state
    d = new.deploy
    if new.phase is old.phase or not old.phase.in_flight or d is None or old.deploy is None or old.deploy.id != d.id:
        return new
    d = replace(d, phases=add_phase_time(d.phases, old.phase, tick.now - old.since))
    new = replace(new, deploy=d)
    if not new.phase.in_flight and new.result is not None:
        verdict = outcome.verdict or _OUTCOMES[new.result]
        new = replace(new, history=record(new.history, d, verdict, tick.now))
    return new


def _notification(app: str, old: AppState, new: AppState, reason: str) -> Notify:
    event = "phase"
    if new.phase is Phase.ROLLING_BACK:
        event = "rollback"
    elif old.phase is Phase.SWITCHING:
        event = "switch"
    deploy = new.deploy
    fields = {
        "app": app,
        "phase": new.phase.value,
        "previous_phase": old.phase.value,
        "active": new.active.value,
        "reason": reason,
        "deploy": deploy.id if deploy else None,
        "operation": deploy.kind.value if deploy else None,
        "step": f"{deploy.step + 1}/{len(deploy.steps)}" if deploy else None,
        "percent": deploy.percent if deploy and new.phase.moves_traffic else None,
        "image": deploy.image if deploy else None,
        "result": new.result.value if new.result and not new.phase.in_flight else None,
    }
    return Notify(event, f"{app}: {old.phase} → {new.phase}: {reason}", fields)


def _stay(tick: _Tick, reason: str = "", intents: tuple[Intent, ...] = (), progress: Progress | None = None,
          **changes: object) -> _Outcome:
    state = tick.state.evolve(**changes) if changes else tick.state
    return _Outcome(state, progress or tick.progress, intents, reason)


def _goto(tick: _Tick, phase: Phase, reason: str, intents: tuple[Intent, ...] = (), **changes: object) -> _Outcome:
    state = tick.state.evolve(phase=phase, since=tick.now, **changes)
    return _Outcome(state, Progress(started=tick.now), intents, reason)


def retire_delay(settings: Settings, failed: bool) -> float:
    """How long the color without traffic stays up after an operation ends: the drain grace at least.

    `failed`: the deploy failed or was rolled back (the failed color's retirement), which Argo
    Rollouts' abortScaleDownDelaySeconds times apart from a success's scaleDownDelaySeconds.
    """
    delay = settings.scale_down_delay
    if failed and settings.abort_scale_down_delay is not None:
        delay = settings.abort_scale_down_delay
    return max(delay, settings.drain_grace)


def _retire_at(tick: _Tick, failed: bool = False) -> float | None:
    return None if tick.settings.keep else tick.now + retire_delay(tick.settings, failed)


def _fail(tick: _Tick, reason: str, aborted: bool = False) -> _Outcome:
    """Give up before traffic moved: the active color was never touched."""
    outcome = _goto(tick, Phase.FAILED, reason, deploy=replace(tick.deploy, reason=reason), result=Result.FAILED,
                    retire_at=_retire_at(tick, failed=True))
    return replace(outcome, verdict=Outcome.ABORTED) if aborted else outcome


def _rollback(tick: _Tick, reason: str, deploy: Deploy | None = None) -> _Outcome:
    """Send traffic back to the active color; `_finish` emits the Route in this very step."""
    return _goto(tick, Phase.ROLLING_BACK, reason, deploy=replace(deploy or tick.deploy, reason=reason))


def _succeed(tick: _Tick, reason: str, deploy: Deploy) -> _Outcome:
    if deploy.kind.gated and pending_hooks(tick.settings, deploy, Gate.POST_ROLLOUT):
        deploy = replace(deploy, post_rollout=True)
        reason += "; the post-rollout webhook(s) are called next"
    return _goto(tick, Phase.STABLE, reason, active=deploy.target, deploy=deploy, result=Result.SUCCEEDED,
                 retire_at=_retire_at(tick))


def _alert_rolls_back(tick: _Tick) -> bool:
    return tick.obs.alert is not None and tick.settings.rollback_on_alert != "never"


def _previous_available(tick: _Tick) -> bool:
    """Whether the color without traffic is the previous release, still up and healthy."""
    state = tick.state
    if state.result is not Result.SUCCEEDED or state.deploy is None:
        return False
    idle = tick.color(state.active.other)
    return idle.ready() and same_image(idle.image, state.deploy.previous_image)


def _at_rest(tick: _Tick, restarted: bool) -> _Outcome:
    state = tick.state
    alert_note = ""
    if tick.obs.alert is not None and tick.settings.rollback_on_alert == "always":
        if _previous_available(tick):
            to = state.active.other
            return _begin_switch(tick, Operation.ROLLBACK, to, gate=False, force=False,
                                 deploy_id=new_deploy_id(tick.app, tick.now, f"g{state.generation}"),
                                 reason=f"alert {tick.obs.alert} fired: rolling back to {to} "
                                        f"({tick.color(to).service}, {tick.color(to).image})",
                                 by=f"alert:{tick.obs.alert}")
        alert_note = f"alert {tick.obs.alert} fired, but no previous release is up to roll back to"
    post = _post_rollout(tick)
    if post is not None:
        return post
    if state.retire_at is not None and tick.now >= state.retire_at:
        idle = tick.color(state.active.other)
        if idle.replicas == 0:
            return _stay(tick, f"{idle.service} is already at 0 replicas", retire_at=None)
        drained = drain_problem(state, tick.obs.routed, tick.now, tick.settings.drain_grace)
        if drained:
            return _stay(tick, f"{idle.service} is due to retire, but {drained}")
        reason = f"scale_down_delay is over: scaling {idle.service} to 0"
        notice = Notify("retire", f"{tick.app}: {reason}", {"app": tick.app, "service": idle.service})
        return _stay(tick, reason, (Scale(state.active.other, 0), notice), retire_at=None)
    return _stay(tick, alert_note)


def drain_problem(state: AppState, routed: Routing | None, now: float, grace: float) -> str:
    """Why the color without traffic may not be scaled down yet; "" once it may.

    Its weight must be 0 as the router reports it, and it must have been out of the routing for
    `grace`: the at-rest phase began when the router confirmed the routing without it (Stable,
    RolledBack) or it never had weight (Failed), so `since` is when the drain began.
    """
    idle = state.active.other
    if routed is None:
        return "the router reports no routing: waiting until it confirms the color has weight 0"
    if routed.weight(idle) != 0:
        return f"the router still gives it weight {routed.weight(idle)} ({routed}): waiting for weight 0"
    if now < state.since + grace:
        return f"it is draining until {format_time(state.since + grace)} (drain_grace)"
    return ""


def _full_replicas(tick: _Tick) -> int:
    # The source is locked for the whole deploy, so its count cannot move under us.
    return max(tick.color(tick.deploy.source).replicas, 1)


def preview_count(active: int, preview: int | None) -> int:
    """The idle color's replicas before ScalingUp: preview_replicas, at most the active count, at least 1."""
    full = max(active, 1)
    return full if preview is None else max(1, min(preview, full))


def _want_replicas(tick: _Tick) -> int:
    """The target's replica count the phase calls for: the preview's before ScalingUp, the active count from it."""
    full = _full_replicas(tick)
    if tick.state.phase is Phase.SCALING_UP or tick.state.phase.moves_traffic:
        return full
    return preview_count(full, tick.settings.preview_replicas)


def _preparing(tick: _Tick, restarted: bool) -> _Outcome:
    deploy = tick.deploy
    target = tick.color(deploy.target)
    replicas = _want_replicas(tick)
    intents: list[Intent] = []
    if not same_image(target.image, deploy.image):
        intents.append(SetImage(deploy.target, deploy.image))
    if target.replicas != replicas:
        intents.append(Scale(deploy.target, replicas))
    locked = all(tick.color(c).lock == deploy.id for c in Color)
    if not intents and locked:
        return _goto(tick, Phase.WAITING,
                     f"{target.service} set to {deploy.image} × {replicas}, both colors locked; waiting for its tasks")
    if tick.elapsed() >= tick.settings.wait_timeout:
        return _fail(tick, f"{target.service} could not be prepared within "
                           f"{format_duration(tick.settings.wait_timeout)}")
    return _stay(tick, f"preparing {target.service}: {deploy.image} × {replicas}", tuple(intents))


def _waiting(tick: _Tick, restarted: bool) -> _Outcome:
    deploy = tick.deploy
    target = tick.color(deploy.target)
    replicas = _want_replicas(tick)
    if not same_image(target.image, deploy.image) or target.replicas != replicas:
        return _goto(tick, Phase.PREPARING, f"{target.service} was changed outside the controller "
                                            f"({target.image} × {target.replicas}); preparing it again")
    if target.ready():
        return _goto(tick, Phase.PRECHECKS, f"{target.service}: all {target.replicas} tasks running and healthy")
    if tick.elapsed() >= tick.settings.wait_timeout:
        return _fail(tick, f"{target.service}: {target.describe()} after "
                           f"{format_duration(tick.settings.wait_timeout)}; traffic stays on {deploy.source}")
    return _stay(tick, f"waiting for {target.service}: {target.describe()}")


def _round_problems(tick: _Tick, color: Color, image: str) -> list[str]:
    """Why this tick's evidence about `color` is not good; empty when every check passed."""
    status = tick.color(color)
    problems = []
    if not same_image(status.image, image):
        problems.append(f"{status.service} runs {status.image}, not {image}: changed outside the controller")
    if not status.ready():
        problems.append(f"{status.service}: {status.describe()}")
    probe = tick.obs.probe
    if probe is not None and probe.outcome is ProbeOutcome.UNREACHABLE:
        problems.append(f"cannot probe {status.service} from the controller: {probe.detail} "
                        "(unreachable never counts as healthy)")
    elif probe is not None and not probe.ok:
        problems.append(f"probe of {status.service} failed: {probe.detail}")
    problems.extend(f"check {check.name} failed: {check.detail}" for check in tick.obs.checks if not check.ok)
    return problems


def _prechecks(tick: _Tick, restarted: bool) -> _Outcome:
    deploy, settings = tick.deploy, tick.settings
    if tick.obs.probe is not None:
        problems = _round_problems(tick, deploy.target, deploy.image)
        if not problems:
            streak = tick.progress.consecutive_ok + 1
            if streak >= settings.healthy_threshold:
                return _checks_passed(tick, f"{streak} probes in a row passed")
            return _stay(tick, f"probe {streak}/{settings.healthy_threshold} passed",
                         progress=replace(tick.progress, consecutive_ok=streak))
        reason = "; ".join(problems)
        progress = replace(tick.progress, consecutive_ok=0)
    else:
        reason, progress = "", tick.progress
    if tick.elapsed() >= settings.precheck_timeout:
        return _fail(tick, f"pre-switch checks did not pass {settings.healthy_threshold} times in a row within "
                           f"{format_duration(settings.precheck_timeout)}" + (f": {reason}" if reason else ""))
    return _stay(tick, reason, progress=progress)


def _changed_outside(tick: _Tick) -> _Outcome | None:
    """Back to Preparing when someone changed the target's image or replica count after it was prepared."""
    target = tick.color(tick.deploy.target)
    if same_image(target.image, tick.deploy.image) and target.replicas == _want_replicas(tick):
        return None
    return _goto(tick, Phase.PREPARING, f"{target.service} was changed outside the controller "
                                        f"({target.image} × {target.replicas}); preparing it again")


def _checks_passed(tick: _Tick, why: str) -> _Outcome:
    """The pre-switch checks passed: the smoke tests next, if the app has any, else the pre-rollout webhooks."""
    if tick.settings.smoke_tests:
        target = tick.color(tick.deploy.target)
        return _goto(tick, Phase.SMOKE_TESTS, f"{why}; sending {tick.settings.smoke_tests} smoke request(s) to "
                                              f"{target.service} before any traffic")
    return _pre_rollout_gate(tick, why)


def _pre_rollout_gate(tick: _Tick, why: str) -> _Outcome:
    """The smoke tests passed (or there are none): the pre-rollout webhooks, if the app has any, else the pause."""
    pending = pending_hooks(tick.settings, tick.deploy, Gate.PRE_ROLLOUT)
    if pending:
        return _goto(tick, Phase.PRE_ROLLOUT, f"{why}; calling the pre-rollout webhook(s) "
                                              f"{', '.join(s.name for s in pending)} before any traffic")
    return _promotion_gate(tick, why)


def _promotion_gate(tick: _Tick, why: str) -> _Outcome:
    """Every check before the switch passed: pause for a person when the app asks for it, else switch."""
    settings, deploy = tick.settings, tick.deploy
    # A rollback that redeploys the previous image was asked for by a person already (or an
    # alert): it passes the smoke requests, but waiting for a second yes would only delay it.
    if not settings.auto_promotion and deploy.kind.gated:
        after = settings.auto_promotion_after
        by_itself = (f"; it promotes itself after {format_duration(after)}" if after is not None
                     else "; it waits for a person")
        return _goto(tick, Phase.PAUSED, f"{why}; paused before the switch (auto_promotion: false){by_itself}: "
                                         f"`swarmshift bluegreen promote {tick.app}` switches to {deploy.target}, "
                                         f"`swarmshift bluegreen abort {tick.app}` fails the deploy")
    return _confirm_gate(tick, why)


def _confirm_gate(tick: _Tick, why: str) -> _Outcome:
    """Past the pause (or without one): the confirm-promotion webhooks of a deploy, if the app has any, else the switch.

    As for the pause, a rollback that redeploys the previous image does not wait for them.
    """
    pending = pending_hooks(tick.settings, tick.deploy, Gate.CONFIRM_PROMOTION)
    if pending and tick.deploy.kind.gated:
        return _goto(tick, Phase.CONFIRM_PROMOTION, f"{why}; polling the confirm-promotion webhook(s) "
                                                    f"{', '.join(s.name for s in pending)} before the switch")
    return _switch(tick, why)


def _switch(tick: _Tick, why: str) -> _Outcome:
    """Every gate passed: switch, after ScalingUp when the target ran with fewer replicas (preview_replicas)."""
    deploy = tick.deploy
    target, full = tick.color(deploy.target), _full_replicas(tick)
    if target.replicas < full:
        return _goto(tick, Phase.SCALING_UP, f"{why}; scaling {target.service} from {target.replicas} to {full} "
                                             "replicas before the switch", (Scale(deploy.target, full),))
    if target.running == 0:
        # Its tasks died since they were checked (their node lost while ConfirmPromotion polled, say):
        # back to Waiting, then the health checks and the gates again. The webhooks that passed are
        # recorded in the deploy, so they are not sent again; a pause (auto_promotion: false) asks again.
        return _goto(tick, Phase.WAITING, f"{why}, but {target.service} has no running task ({target.describe()}): "
                                          "waiting for its tasks, then the checks before the switch again")
    return _goto(tick, Phase.SWITCHING, f"{why}; switching {deploy.percent}% of the traffic to {deploy.target}")


def _scaling_up(tick: _Tick, restarted: bool) -> _Outcome:
    """The target goes from its preview_replicas to the active count, and is waited for before the switch.

    Declarative like Preparing: the Scale is emitted while the count is not in place, so a count
    changed from outside is put back; only a changed image sends the deploy back to Preparing.
    """
    deploy = tick.deploy
    target, full = tick.color(deploy.target), _full_replicas(tick)
    if not same_image(target.image, deploy.image):
        return _goto(tick, Phase.PREPARING, f"{target.service} was changed outside the controller "
                                            f"({target.image} × {target.replicas}); preparing it again")
    if target.replicas == full and target.ready():
        return _goto(tick, Phase.SWITCHING, f"{target.service}: all {full} tasks running and healthy; switching "
                                            f"{deploy.percent}% of the traffic to {deploy.target}")
    if tick.elapsed() >= tick.settings.wait_timeout:
        return _fail(tick, f"{target.service} did not scale up to {full} ready tasks within "
                           f"{format_duration(tick.settings.wait_timeout)} ({target.describe()}); traffic stays on "
                           f"{deploy.source}")
    intents = (Scale(deploy.target, full),) if target.replicas != full else ()
    return _stay(tick, f"scaling {target.service} up to {full}: {target.describe()}", intents)


def _smoke_testing(tick: _Tick, restarted: bool) -> _Outcome:
    """The smoke requests: all answered as expected, on to the gate; one answered wrongly, the deploy fails.

    Unreachable (no route to the idle color, the router down) is no verdict on the release: the
    requests are sent again each tick until precheck_timeout, counted from entering the phase.
    """
    deploy, settings = tick.deploy, tick.settings
    changed = _changed_outside(tick)
    if changed is not None:
        return changed
    target = tick.color(deploy.target)
    smoke = tick.obs.smoke
    if smoke is None and not settings.smoke_tests:
        return _pre_rollout_gate(tick, "no smoke requests are configured for the app any more")
    if smoke is not None and smoke.outcome is SmokeOutcome.PASSED:
        return _pre_rollout_gate(tick, f"{len(smoke.verdicts)} smoke request(s) to {target.service} answered "
                                       "as expected")
    if smoke is not None and smoke.outcome is SmokeOutcome.FAILED:
        return _fail(tick, f"smoke test failed on {target.service}: {smoke.summary()}; traffic stays on "
                           f"{deploy.source}")
    reason = f"cannot send the smoke requests: {smoke.detail}" if smoke is not None else ""
    if tick.elapsed() >= settings.precheck_timeout:
        return _fail(tick, f"the smoke requests could not reach {target.service} within "
                           f"{format_duration(settings.precheck_timeout)}" + (f": {smoke.detail}" if smoke else ""))
    return _stay(tick, reason)


def _paused(tick: _Tick, restarted: bool) -> _Outcome:
    """Waiting for promote or abort; with auto_promotion_after, until that long after the pause began.

    The pause began at `state.since`, which is stored: a restart neither restarts the timer nor
    loses it. Nothing is probed here; promotion needs the target's tasks running and healthy.
    """
    changed = _changed_outside(tick)
    if changed is not None:
        return changed
    after = tick.settings.auto_promotion_after
    if tick.settings.auto_promotion or after is None or tick.now < tick.state.since + after:
        return _stay(tick)
    target = tick.color(tick.deploy.target)
    if not target.ready():
        return _stay(tick, f"auto_promotion_after {format_duration(after)} is over, but {target.service}: "
                           f"{target.describe()}; it promotes itself once the tasks are ready")
    return _confirm_gate(tick, f"auto_promotion_after {format_duration(after)} is over")


@dataclass(frozen=True)
class _HookVerdict:
    """A webhook gate weighed on this tick's round: the record with this round's passes, and what is left."""

    deploy: Deploy  # with this round's passes recorded
    pending: tuple[HookSpec, ...]  # still to pass
    failed: tuple[str, ...]  # why the gate fails now: a webhook with on_failure: fail answered wrongly
    expired: tuple[HookSpec, ...]  # held past their gate_timeout
    held: tuple[str, ...]  # why the others wait


def _weigh_hooks(tick: _Tick, gate: Gate) -> _HookVerdict:
    deploy, round_ = tick.deploy, tick.obs.webhooks
    results = {r.name: r for r in round_.results} if round_ is not None and round_.gate is gate else {}
    record = list(deploy.webhooks)
    pending, failed, expired, held = [], [], [], []
    for spec in pending_hooks(tick.settings, deploy, gate):
        result = results.get(spec.name)
        if result is not None and result.passed:
            record.append((spec.name, "passed"))
            continue
        pending.append(spec)
        if result is not None and spec.on_failure == "fail":
            failed.append(f"{gate} webhook {spec.name} failed: {result.detail} (on_failure: fail)")
        elif tick.now >= tick.state.since + spec.gate_timeout:
            expired.append(spec)
        elif result is not None:
            held.append(f"{gate} webhook {spec.name}: {result.detail}; held until it answers 2xx, at most "
                        f"gate_timeout {format_duration(spec.gate_timeout)}")
    updated = replace(deploy, webhooks=tuple(record)) if len(record) != len(deploy.webhooks) else deploy
    return _HookVerdict(updated, tuple(pending), tuple(failed), tuple(expired), tuple(held))


def _expired_reason(gate: Gate, expired: tuple[HookSpec, ...]) -> str:
    return "; ".join(f"{gate} webhook {s.name} did not answer 2xx within gate_timeout "
                     f"{format_duration(s.gate_timeout)}" for s in expired)


def _hook_phase(tick: _Tick, gate: Gate, done: Callable[[_Tick, str], _Outcome]) -> _Outcome:
    """PreRollout and ConfirmPromotion: every webhook of the gate answered 2xx, on to `done`; else hold or fail.

    A pass is recorded in the step that saw it, whether the phase ends or not: a restarted
    controller calls only the webhooks still pending.
    """
    changed = _changed_outside(tick)
    if changed is not None:
        return changed
    verdict = _weigh_hooks(tick, gate)
    source = tick.deploy.source
    if verdict.failed:
        return _fail(replace(tick, state=replace(tick.state, deploy=verdict.deploy)),
                     f"{'; '.join(verdict.failed)}; traffic stays on {source}")
    if verdict.expired:
        return _fail(replace(tick, state=replace(tick.state, deploy=verdict.deploy)),
                     f"{_expired_reason(gate, verdict.expired)}; traffic stays on {source}")
    if not verdict.pending:
        passed = [name for name, outcome in verdict.deploy.webhooks if outcome == "passed"]
        why = f"the {gate} webhook(s) answered 2xx" + (f" ({', '.join(passed)})" if passed else "")
        return done(replace(tick, state=replace(tick.state, deploy=verdict.deploy)), why)
    reason = "; ".join(verdict.held)
    if verdict.deploy is not tick.deploy:
        return _stay(tick, reason, deploy=verdict.deploy)
    return _stay(tick, reason)


def _pre_rollout(tick: _Tick, restarted: bool) -> _Outcome:
    return _hook_phase(tick, Gate.PRE_ROLLOUT, _promotion_gate)


def _confirm_promotion(tick: _Tick, restarted: bool) -> _Outcome:
    return _hook_phase(tick, Gate.CONFIRM_PROMOTION, _switch)


def _post_rollout(tick: _Tick) -> _Outcome | None:
    """A Stable deploy's post-rollout webhooks: None when none is due or this round records nothing.

    The release already has all the traffic. A webhook with on_failure: fail rolls back, as an
    operator's rollback would (a switch to the previous color while it is up, else a deploy of
    the previous image); one with hold is called each tick until it answers 2xx or its
    gate_timeout (from the Stable's `since`) passes, and then recorded as failed: the app stays.
    """
    if hook_gate(tick.state) is not Gate.POST_ROLLOUT:
        return None
    verdict = _weigh_hooks(tick, Gate.POST_ROLLOUT)
    state = tick.state
    if verdict.failed:
        reason = "; ".join(verdict.failed)
        previous = state.active.other
        deploy_id = new_deploy_id(tick.app, tick.now, f"g{state.generation}")
        if _previous_available(tick):
            return _begin_switch(tick, Operation.ROLLBACK, previous, gate=False, force=False, deploy_id=deploy_id,
                                 reason=f"{reason}: rolling back to {previous} ({tick.color(previous).service}, "
                                        f"{tick.color(previous).image})")
        return _redeploy(tick, state.deploy.previous_image if state.deploy else "", deploy_id,
                         f"{reason}: rolling back by deploying the previous image to {previous}")
    record = list(verdict.deploy.webhooks) + [(s.name, "failed") for s in verdict.expired]
    notes = list(verdict.held)
    if verdict.expired:
        notes.append(f"{_expired_reason(Gate.POST_ROLLOUT, verdict.expired)}; given up (on_failure: hold), "
                     f"{state.active} stays")
    if len(record) != len(tick.deploy.webhooks):
        return _stay(tick, "; ".join(notes), deploy=replace(verdict.deploy, webhooks=tuple(record)))
    # Nothing to record (a hold answered no again): the app at rest goes on, retiring its idle color included.
    return None


def _redeploy(tick: _Tick, image: str, deploy_id: str, reason: str) -> _Outcome:
    """A rollback as a deploy of `image` to the idle color (its previous release was scaled down)."""
    state, obs = tick.state, tick.obs
    source = state.active
    deploy = Deploy(id=deploy_id, kind=Operation.ROLLBACK, source=source, image=image,
                    previous_image=obs.colors[source].image, started_at=tick.now)
    preparing = state.evolve(phase=Phase.PREPARING, since=tick.now, deploy=deploy, retire_at=None)
    outcome = _preparing(replace(tick, state=preparing, progress=Progress(started=tick.now)), False)
    return replace(outcome, reason=f"{reason}; {outcome.reason}")


def _switching(tick: _Tick, restarted: bool) -> _Outcome:
    deploy, state = tick.deploy, tick.state
    if _alert_rolls_back(tick):
        return _rollback(tick, f"alert {tick.obs.alert} fired during the switch")
    want = state.routing()
    if tick.obs.routed == want:
        if deploy.force:
            return _succeed(tick, f"forced switch to {deploy.target} confirmed by the router; not verified",
                            deploy)
        if deploy.canary and deploy.step == 0:
            policy = tick.settings.canary
            window = format_duration(policy.analysis) if policy is not None else "its analysis window"
            return _goto(tick, Phase.CANARY, f"the router confirms {want}; analysing the canary "
                                             f"{tick.color(deploy.target).service} ({deploy.percent}%) for {window}")
        phase = Phase.PROGRESSING if deploy.percent < 100 else Phase.VERIFYING
        return _goto(tick, phase, f"the router confirms {want}; verifying for "
                                  f"{format_duration(tick.settings.verification_window)}")
    if tick.elapsed() >= tick.settings.switch_timeout:
        return _rollback(tick, f"the router did not confirm {want} within "
                               f"{format_duration(tick.settings.switch_timeout)}")
    return _stay(tick, f"waiting for the router to confirm {want}")


def _canary(tick: _Tick, restarted: bool) -> _Outcome:
    """canary.weight % on the new color, judged on its Traefik metrics; a breach rolls back at once.

    The window counts from `state.since` (stored when the router confirmed the canary weight), so a
    restart neither restarts nor loses it; the analysis itself is asked of Prometheus over the
    canary so far, and holds no evidence in memory. A reading with fewer than min_requests
    requests is no verdict. Prometheus unanswered is never a pass: past the window and the grace,
    the deploy rolls back.
    """
    deploy, state, policy = tick.deploy, tick.state, tick.settings.canary
    target = tick.color(deploy.target)
    if _alert_rolls_back(tick):
        return _canary_abort(tick, f"alert {tick.obs.alert} fired during the canary")
    if policy is None:
        return _canary_passed(tick, "no canary is configured for the app any more")
    if not same_image(target.image, deploy.image):
        return _canary_abort(tick, f"{target.service} runs {target.image}, not {deploy.image}: changed outside the "
                                   "controller")
    elapsed = tick.now - state.since
    window = format_duration(policy.analysis)
    reading = tick.obs.canary
    if reading is not None and reading.available:
        why = canary_analysis.breach(reading, policy)
        if why is not None:
            return _canary_abort(tick, f"canary analysis of {target.service} failed: {why}")
        whole = elapsed >= policy.analysis and reading.window >= policy.analysis - 1e-6
        if whole and (reading.requests or 0.0) >= policy.min_requests:
            return _canary_passed(tick, f"canary {target.service} passed its {window} analysis: "
                                        f"{reading.summary(policy)}")
        if whole and not policy.require_traffic:
            return _canary_passed(tick, f"canary {target.service} had too little traffic to judge "
                                        f"({reading.summary(policy)}, fewer than canary.min_requests "
                                        f"{policy.min_requests}); passed, as canary.require_traffic is false")
        if whole:
            return _canary_abort(tick, f"canary analysis of {target.service} failed: too little traffic to judge: "
                                       f"{reading.summary(policy)}, fewer than canary.min_requests "
                                       f"{policy.min_requests} (canary.require_traffic: true)")
    if elapsed >= policy.analysis + policy.grace:
        last = f": {reading.summary(policy)}" if reading is not None else ""
        return _canary_abort(tick, f"canary analysis of {target.service} had no verdict within {window} and "
                                   f"canary.grace {format_duration(policy.grace)}{last}")
    progress = f"canary {deploy.percent}% on {target.service}, {min(elapsed, policy.analysis):.0f}s of {window}"
    return _stay(tick, f"{progress}: {reading.summary(policy)}" if reading is not None else "")


def _canary_abort(tick: _Tick, reason: str) -> _Outcome:
    """A breach: the canary weight goes back to 0 (RollingBack's routing, in this very step) and the deploy rolls back."""
    return _rollback(tick, f"{reason}; weight back to 0, traffic returns to {tick.state.active}")


def _canary_passed(tick: _Tick, why: str) -> _Outcome:
    deploy = tick.deploy
    nxt = replace(deploy, step=deploy.step + 1)
    return _goto(tick, Phase.SWITCHING, f"{why}; switching {nxt.percent}% of the traffic to {deploy.target}",
                 deploy=nxt)


def _verifying(tick: _Tick, restarted: bool) -> _Outcome:
    deploy, settings, state = tick.deploy, tick.settings, tick.state
    if _alert_rolls_back(tick):
        return _rollback(tick, f"alert {tick.obs.alert} fired during verification")
    notes = []
    if restarted:
        if settings.on_restart == "rollback":
            return _rollback(tick, "the controller restarted during verification (on_restart: rollback)")
        notes.append("restarted mid-verification: the window starts again, failures so far are kept")
    progress, updated = tick.progress, deploy
    if tick.obs.probe is not None:
        progress = replace(progress, rounds=progress.rounds + 1)
        problems = _round_problems(tick, deploy.target, deploy.image)
        if problems:
            updated = replace(deploy, failures=deploy.failures + 1)
            if updated.failures > settings.failure_threshold:
                return _rollback(tick, f"{updated.failures} failed checks, more than failure_threshold "
                                       f"{settings.failure_threshold}: {'; '.join(problems)}", updated)
            notes.append(f"check round failed ({updated.failures} of {settings.failure_threshold} allowed): "
                         + "; ".join(problems))
    if tick.elapsed() >= settings.verification_window and progress.rounds >= settings.window_rounds:
        if updated.step + 1 < len(updated.steps):
            nxt = replace(updated, step=updated.step + 1)
            return _goto(tick, Phase.SWITCHING, f"{updated.percent}% on {updated.target} verified "
                                                f"({progress.rounds} rounds); moving to {nxt.percent}%", deploy=nxt)
        return _succeed(tick, f"{updated.target} verified over {progress.rounds} rounds "
                              f"with {updated.failures} failed", updated)
    if updated is not deploy:
        return _stay(tick, "; ".join(notes), progress=progress, deploy=updated)
    return _Outcome(state, progress, (), "; ".join(notes))


def _rolling_back(tick: _Tick, restarted: bool) -> _Outcome:
    want = tick.state.routing()
    if tick.obs.routed == want:
        return _goto(tick, Phase.ROLLED_BACK, f"traffic is back on {tick.state.active}: {tick.deploy.reason}",
                     result=Result.ROLLED_BACK, retire_at=_retire_at(tick, failed=True))
    return _stay(tick, f"waiting for the router to confirm {want}")


_HANDLERS = {
    Phase.STABLE: _at_rest,
    Phase.ROLLED_BACK: _at_rest,
    Phase.FAILED: _at_rest,
    Phase.PREPARING: _preparing,
    Phase.WAITING: _waiting,
    Phase.PRECHECKS: _prechecks,
    Phase.SMOKE_TESTS: _smoke_testing,
    Phase.PRE_ROLLOUT: _pre_rollout,
    Phase.PAUSED: _paused,
    Phase.CONFIRM_PROMOTION: _confirm_promotion,
    Phase.SCALING_UP: _scaling_up,
    Phase.SWITCHING: _switching,
    Phase.CANARY: _canary,
    Phase.PROGRESSING: _verifying,
    Phase.VERIFYING: _verifying,
    Phase.ROLLING_BACK: _rolling_back,
}
assert set(_HANDLERS) == set(Phase), "every phase needs a handler"


# --- Operator requests -------------------------------------------------------------------------


def _refuse_if_busy(app: str, state: AppState) -> None:
    if state.phase.in_flight and state.deploy is not None:
        d = state.deploy
        raise Refused("busy", f"{app}: {d.kind} {d.id} is in phase {state.phase} ({d.image} on {d.target}); "
                              "wait for it or roll it back")


def _tick_for(app: str, state: AppState, obs: Observation, settings: Settings) -> _Tick:
    return _Tick(app, state, Progress(started=obs.now), obs, settings)


def start_deploy(app: str, state: AppState, obs: Observation, *, image: str, deploy_id: str, settings: Settings,
                 strategy: Strategy = Strategy.BLUEGREEN, kind: Operation = Operation.DEPLOY, by: str = "") -> Step:
    """Begin deploying `image` to the idle color: Preparing, with its intents in this step."""
    _refuse_if_busy(app, state)
    if not image.strip():
        raise Refused("nothing", f"{app}: no image to deploy")
    source = state.active
    steps: tuple[int, ...] = settings.progressive_steps if strategy is Strategy.PROGRESSIVE else (100,)
    # A canary comes first, then the strategy's steps above its weight. A rollback that redeploys
    # the previous image has none: that image served users before, and someone asked for it back.
    canary = settings.canary is not None and kind.gated
    if canary:
        assert settings.canary is not None
        steps = (settings.canary.weight, *(s for s in steps if s > settings.canary.weight))
    deploy = Deploy(id=deploy_id, kind=kind, source=source, image=image,
                    previous_image=obs.colors[source].image, started_at=obs.now, steps=tuple(steps), canary=canary,
                    by=by)
    # A pending scale-down of the idle color is cancelled: it is about to receive the new release.
    preparing = state.evolve(phase=Phase.PREPARING, since=obs.now, deploy=deploy, retire_at=None)
    tick = _tick_for(app, preparing, obs, settings)
    outcome = _preparing(tick, False)
    reason = f"{kind} {image} to {deploy.target} ({obs.colors[deploy.target].service}); {outcome.reason}"
    return _finish(_tick_for(app, state, obs, settings), replace(outcome, reason=reason))


def start_switch(app: str, state: AppState, obs: Observation, *, deploy_id: str, settings: Settings,
                 to: Color | None = None, force: bool = False, by: str = "") -> Step:
    """Move all traffic to the other color as it is, after checking its health (unless forced).

    The target must have every task running and healthy and have passed the probe in `obs`;
    no probe counts as not healthy. A forced switch skips this gate and the verification.
    """
    _refuse_if_busy(app, state)
    to = to or state.active.other
    if to is state.active:
        raise Refused("noop", f"{app}: traffic is already on {to}")
    tick = _tick_for(app, state, obs, settings)
    return _finish(tick, _begin_switch(tick, Operation.SWITCH, to, gate=not force, force=force, deploy_id=deploy_id,
                                       reason=f"switch to {to} requested" + (" (forced)" if force else ""), by=by))


def _begin_switch(tick: _Tick, kind: Operation, to: Color, *, gate: bool, force: bool, deploy_id: str,
                  reason: str, by: str = "") -> _Outcome:
    state, obs = tick.state, tick.obs
    target = obs.colors[to]
    if gate:
        problems = []
        if not target.ready():
            problems.append(f"{target.service}: {target.describe()}")
        if obs.probe is None:
            problems.append(f"{target.service} was not probed")
        elif not obs.probe.ok:
            problems.append(f"probe of {target.service}: {obs.probe.outcome}: {obs.probe.detail}")
        if problems:
            raise Refused("unhealthy", f"{tick.app}: refusing to switch to {to}: {'; '.join(problems)}; "
                                       "force the switch to do it anyway")
    deploy = Deploy(id=deploy_id, kind=kind, source=state.active, image=target.image,
                    previous_image=obs.colors[state.active].image, started_at=tick.now, force=force, by=by)
    return _goto(tick, Phase.SWITCHING, reason, deploy=deploy, retire_at=None)


# The phases of a deploy before any user traffic reaches its target.
_BEFORE_TRAFFIC = (Phase.PREPARING, Phase.WAITING, Phase.PRECHECKS, Phase.SMOKE_TESTS, Phase.PRE_ROLLOUT, Phase.PAUSED,
                   Phase.CONFIRM_PROMOTION, Phase.SCALING_UP)


def start_promote(app: str, state: AppState, obs: Observation, *, settings: Settings) -> Step:
    """Go on with a Paused deploy: the switch, if the target's tasks are all running and healthy."""
    if state.phase is not Phase.PAUSED or state.deploy is None:
        raise Refused("phase", f"{app}: nothing to promote: the app is {state.phase}{_doing(state)}; promote goes on "
                               "with a deploy that is Paused")
    target = obs.colors[state.deploy.target]
    if not target.ready():
        raise Refused("unhealthy", f"{app}: refusing to promote: {target.service}: {target.describe()}; wait until "
                                   f"its tasks are ready, or abort the deploy")
    tick = _tick_for(app, state, obs, settings)
    return _finish(tick, _confirm_gate(tick, "promoted by request"))


def start_abort(app: str, state: AppState, obs: Observation, *, settings: Settings) -> Step:
    """Fail a deploy that has not moved traffic yet: traffic stays where it is, the idle color is retired later."""
    if state.phase in _BEFORE_TRAFFIC:
        tick = _tick_for(app, state, obs, settings)
        return _finish(tick, _fail(tick, f"aborted by request in {state.phase}; traffic stays on {state.active}",
                                   aborted=True))
    if state.phase.in_flight:
        raise Refused("phase", f"{app}: cannot abort in {state.phase}{_doing(state)}: traffic has moved already; "
                               f"`swarmshift bluegreen rollback {app}` sends it back")
    raise Refused("phase", f"{app}: nothing to abort: the app is {state.phase}, no deploy is in flight")


def _doing(state: AppState) -> str:
    d = state.deploy
    return f" ({d.kind} {d.id}, {d.image} on {d.target})" if d is not None and state.phase.in_flight else ""


def start_rollback(app: str, state: AppState, obs: Observation, *, deploy_id: str, settings: Settings,
                   by: str = "") -> Step:
    """Return to the previous color: abort a deploy in flight, or go back to the last release."""
    tick = _tick_for(app, state, obs, settings)
    phase = state.phase
    if phase in _BEFORE_TRAFFIC:
        return _finish(tick, _fail(tick, f"rolled back by request in {phase}, before any traffic moved",
                                   aborted=True))
    if phase in (Phase.SWITCHING, Phase.CANARY, Phase.PROGRESSING, Phase.VERIFYING):
        return _finish(tick, _rollback(tick, f"rollback requested in {phase}"))
    if phase is Phase.ROLLING_BACK:
        raise Refused("noop", f"{app}: already rolling back to {state.active}")
    if state.deploy is None or state.result is not Result.SUCCEEDED:
        last = f"the last {state.deploy.kind} {state.result}" if state.deploy and state.result else "no operation yet"
        raise Refused("nothing", f"{app}: no previous release to return to ({last}); traffic is on {state.active}")
    previous = state.active.other
    if obs.colors[previous].replicas > 0:
        return _finish(tick, _begin_switch(tick, Operation.ROLLBACK, previous, gate=True, force=False,
                                           deploy_id=deploy_id, reason=f"rollback to {previous} requested", by=by))
    # The previous color was scaled down: bring its release back the safe way, as a deploy.
    return start_deploy(app, state, obs, image=state.deploy.previous_image, deploy_id=deploy_id, settings=settings,
                        kind=Operation.ROLLBACK, by=by)


def undo_target(app: str, history: tuple[Release, ...], running: str, revision: int | None = None) -> tuple[str, str]:
    """The image an undo deploys, and which release it is: `revision`, else the newest successful one not running.

    Without such a release, the image the newest success replaced (its `previous`): an undo right
    after the first deploy goes back to what ran before it, as an operator expects.

    Refused (422) when the history has no such release, the revision is unknown, or its image is
    the one the active color runs already (nothing to undo).
    """
    if revision is not None:
        found = [r for r in history if r.revision == revision]
        if not found:
            known = (f"revisions {history[0].revision} to {history[-1].revision}" if history
                     else "the history is empty")
            raise Refused("unknown", f"{app}: no revision {revision} in the history ({known}); "
                                     f"`swarmshift bluegreen history {app}` lists them")
        if same_image(found[0].image, running):
            raise Refused("noop", f"{app}: revision {revision} is {found[0].image}, which the active color runs "
                                  "already: nothing to undo")
        return found[0].image, f"revision {revision}"
    for release in reversed(history):
        if release.outcome is Outcome.SUCCEEDED and not same_image(release.image, running):
            return release.image, f"revision {release.revision}"
    # No other success in the history (the first release through the controller, say): the image
    # that the newest success replaced, which served users before it.
    for release in reversed(history):
        if release.outcome is Outcome.SUCCEEDED and release.previous and not same_image(release.previous, running):
            return release.previous, f"the image revision {release.revision} replaced"
    raise Refused("nothing", f"{app}: no earlier successful release to go back to: the history has none whose image "
                             f"differs from {running}")


def start_undo(app: str, state: AppState, obs: Observation, *, deploy_id: str, settings: Settings,
               revision: int | None = None, by: str = "", strategy: Strategy = Strategy.BLUEGREEN) -> Step:
    """Deploy an earlier release's image through the same gates as a deploy (smoke requests, Paused)."""
    _refuse_if_busy(app, state)
    image, what = undo_target(app, state.history, obs.colors[state.active].image, revision)
    step = start_deploy(app, state, obs, image=image, deploy_id=deploy_id, settings=settings,
                        strategy=strategy, kind=Operation.UNDO, by=by)
    return replace(step, reason=f"undo to {what}: {step.reason}")


# --- Executing a step --------------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceWrite:
    """One `Swarm.update` of a color's service: the state labels with that color's intents."""

    color: Color
    image: str | None = None
    replicas: int | None = None
    labels: Mapping[str, str | None] = field(default_factory=dict)

    def changes(self) -> dict[str, object]:
        """Keyword arguments for `Swarm.update`."""
        out: dict[str, object] = {}
        if self.image is not None:
            out["image"] = self.image
        if self.replicas is not None:
            out["replicas"] = self.replicas
        if self.labels:
            out["labels"] = dict(self.labels)
        return out


@dataclass(frozen=True)
class Plan:
    """A step in execution order: the state is durable after `first`, before any routing moves."""

    first: tuple[ServiceWrite, ...]
    routes: tuple[Route, ...]
    then: tuple[ServiceWrite, ...]
    notifications: tuple[Notify, ...]


def plan(step: Step, stored: Mapping[Color, int | None]) -> Plan:
    """Group a step's intents into service writes; `stored` is the state generation on each color now.

    A color whose stored generation differs from the step's state gets the state labels, so a
    copy wiped by `docker stack deploy` is written back without any phase change.
    """
    writes: dict[Color, dict[str, object]] = {c: {"labels": {}} for c in Color}
    touched: list[Color] = []
    for intent in step.intents:
        if isinstance(intent, SetImage):
            writes[intent.color]["image"] = intent.image
        elif isinstance(intent, Scale):
            writes[intent.color]["replicas"] = intent.replicas
        elif isinstance(intent, SetLock):
            writes[intent.color]["labels"][LOCK_LABEL] = intent.value  # type: ignore[index]
        else:
            continue
        if intent.color not in touched:
            touched.append(intent.color)
    state_labels = step.state.to_labels()
    for color in Color:
        if stored.get(color) != step.state.generation:
            writes[color]["labels"].update(state_labels)  # type: ignore[union-attr]
            if color not in touched:
                touched.append(color)
    ordered = [ServiceWrite(color=c, **writes[c]) for c in touched]  # type: ignore[arg-type]
    durable = bool(step.persisted or any(stored.get(c) != step.state.generation for c in Color))
    # With a new state, the first write carries it; without one, nothing waits on the writes.
    first = tuple(ordered[:1]) if durable else ()
    then = tuple(ordered[1:]) if durable else tuple(ordered)
    return Plan(
        first=first,
        routes=tuple(i for i in step.intents if isinstance(i, Route)),
        then=then,
        notifications=tuple(i for i in step.intents if isinstance(i, Notify)),
    )
