"""The deploy state machine: every transition as a table row, then whole deploys in a simulated world.

The simulated world (`World`) plays Swarm and the router: it applies the machine's plan the way
the daemon loop will (state first, then routes, then the other color, then notifications), keeps
the state only in service labels, and can kill the controller at any point of any phase. After a
kill, the controller restarts with nothing but what `load_state` reads back from the labels.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pytest

from bluegreen.apps import App, Color, Strategy
from bluegreen.labels import IDLE_LOCK, LOCK_LABEL, STATE_KEYS
from bluegreen.phases import (
    CheckResult,
    ColorStatus,
    Needs,
    Notify,
    Observation,
    Probe,
    ProbeOutcome,
    Progress,
    Refused,
    Route,
    Scale,
    SetImage,
    SetLock,
    Settings,
    Step,
    advance,
    needs,
    plan,
    start_abort,
    start_deploy,
    start_promote,
    start_rollback,
    start_switch,
)
from bluegreen.smoke import Answer, SmokeOutcome, SmokeRequest, SmokeRound, evaluate, judge
from bluegreen.state import AppState, Deploy, Operation, Phase, Result, Routing, load_state

T = 1_750_000_000.0
S = Settings(probe_interval=1, healthy_threshold=3, failure_threshold=2, wait_timeout=30, precheck_timeout=20,
             switch_timeout=10, verification_window=5, scale_down_delay=60, keep=False,
             rollback_on_alert="verification", on_restart="resume", progressive_steps=(10, 50, 100),
             smoke_tests=0, auto_promotion=True, auto_promotion_after=None)
OK, FAIL = Probe(ProbeOutcome.OK), Probe(ProbeOutcome.FAILED, "HTTP 500")
UNREACHABLE = Probe(ProbeOutcome.UNREACHABLE, "no route to 10.201.0.5")
D = Deploy(id="web-d1", kind=Operation.DEPLOY, source=Color.BLUE, image="web:2", previous_image="web:1",
           started_at=T - 100)
PROG = replace(D, steps=(10, 50, 100))
CART = SmokeRequest(path="/cart", body="Your cart")
SMOKE_OK = judge([evaluate(CART, "preview route", Answer(0.01, 200, "Your cart"))])
SMOKE_500 = judge([evaluate(CART, "preview route", Answer(0.012, 500, "<h1>boom</h1>"))])
SMOKE_LOST = SmokeRound(SmokeOutcome.UNREACHABLE, detail="the router at http://traefik:80 does not answer")
PAUSES = {"auto_promotion": False}
TIMER = {"auto_promotion": False, "auto_promotion_after": 60}


def status(color: Color, image: str = "web:1", replicas: int = 2, running: int | None = None, unhealthy: int = 0,
           lock: str | None = None) -> ColorStatus:
    return ColorStatus(service=f"web-{color}", image=image, replicas=replicas,
                       running=replicas if running is None else running, unhealthy=unhealthy, lock=lock)


def at_rest(**changes) -> AppState:
    return AppState(**{"active": Color.BLUE, "phase": Phase.STABLE, "since": T - 50, "generation": 5, **changes})


def in_deploy(phase: Phase, deploy: Deploy = D, **changes) -> AppState:
    return AppState(**{"active": Color.BLUE, "phase": phase, "since": T - 10, "generation": 5, "deploy": deploy,
                       **changes})


def observe(state: AppState, *, blue: dict | None = None, green: dict | None = None, routed: object = "auto",
            probe: Probe | None = None, checks: tuple[CheckResult, ...] = (), alert: str | None = None,
            smoke: SmokeRound | None = None, router_up: dict | None = None, now: float = T) -> Observation:
    """What the world looks like when everything the state calls for is in place, changed as told."""
    locks = state.locks()
    deploy = state.deploy
    target_image = deploy.image if deploy and state.phase.in_flight and state.phase is not Phase.PREPARING else "web:1"
    defaults = {
        Color.BLUE: {"image": "web:1", "lock": locks[Color.BLUE]},
        Color.GREEN: {"image": target_image, "lock": locks[Color.GREEN],
                      "replicas": 2 if state.phase.in_flight else 0},
    }
    colors = {c: status(c, **{**defaults[c], **((blue if c is Color.BLUE else green) or {})}) for c in Color}
    return Observation(now=now, colors=colors, routed=state.routing() if routed == "auto" else routed,
                       probe=probe, checks=checks, alert=alert, smoke=smoke, router_up=router_up or {})


@dataclass(frozen=True)
class Row:
    name: str
    state: AppState
    obs: dict = field(default_factory=dict)
    progress: Progress = Progress(started=T - 1)
    settings: dict = field(default_factory=dict)
    phase: Phase | None = None  # None: unchanged
    intents: tuple = ()  # each must be emitted
    absent: tuple = ()  # intent types that must not be
    reason: str = ""
    check: object = None  # extra assertions on the step


ROWS = [
    # -- at rest ---------------------------------------------------------------------------
    Row("stable: nothing to do", at_rest(), absent=(Route, SetLock, Scale, SetImage, Notify)),
    Row("stable: routing missing is restored", at_rest(), {"routed": None},
        intents=(Route(Routing.all_to(Color.BLUE)),)),
    Row("stable: routing drifted is restored", at_rest(), {"routed": Routing.all_to(Color.GREEN)},
        intents=(Route(Routing.all_to(Color.BLUE)),)),
    Row("stable: a preview-only change goes out though the idle color has no task", at_rest(),
        {"routed": Routing(blue=100, green=0, preview=Color.BLUE)}, intents=(Route(Routing.all_to(Color.BLUE)),),
        check=lambda s: "traffic waits" not in s.reason),
    Row("stable: idle color gets the autoscaler lock", at_rest(), {"green": {"lock": None}},
        intents=(SetLock(Color.GREEN, IDLE_LOCK),)),
    Row("stable: a leftover deploy lock leaves the active color", at_rest(), {"blue": {"lock": "web-d0"}},
        intents=(SetLock(Color.BLUE, None),)),
    Row("stable: scale-down delay over", at_rest(retire_at=T - 1, deploy=D, result=Result.SUCCEEDED),
        {"green": {"replicas": 2}}, intents=(Scale(Color.GREEN, 0),), reason="scaling web-green to 0",
        check=lambda s: s.state.retire_at is None and s.persisted),
    Row("stable: scale-down delay over, already at 0", at_rest(retire_at=T - 1), absent=(Scale,),
        check=lambda s: s.state.retire_at is None and s.persisted),
    Row("stable: scale-down delay not over", at_rest(retire_at=T + 1), {"green": {"replicas": 2}}, absent=(Scale,),
        check=lambda s: not s.persisted),
    Row("stable: alert with policy always rolls back to the previous release",
        at_rest(deploy=replace(D, source=Color.GREEN, image="web:1", previous_image="web:0"),
                result=Result.SUCCEEDED),
        {"alert": "HighErrorRate", "green": {"image": "web:0", "replicas": 2}},
        settings={"rollback_on_alert": "always"}, phase=Phase.SWITCHING,
        intents=(Route(Routing.all_to(Color.GREEN)),), reason="alert HighErrorRate fired: rolling back to green",
        check=lambda s: s.state.deploy.kind is Operation.ROLLBACK and s.state.deploy.target is Color.GREEN),
    Row("stable: alert with policy always but the previous color is gone",
        at_rest(deploy=D, result=Result.SUCCEEDED), {"alert": "HighErrorRate"},
        settings={"rollback_on_alert": "always"}, absent=(Route,), reason="no previous release is up"),
    Row("stable: alert with policy verification is ignored at rest",
        at_rest(deploy=replace(D, previous_image="web:0"), result=Result.SUCCEEDED),
        {"alert": "HighErrorRate", "green": {"image": "web:0", "replicas": 2}}, absent=(Route,)),
    Row("rolled back: an alert never rolls back to the failed color",
        at_rest(phase=Phase.ROLLED_BACK, deploy=D, result=Result.ROLLED_BACK),
        {"alert": "HighErrorRate", "green": {"image": "web:2", "replicas": 2}},
        settings={"rollback_on_alert": "always"}, absent=(Route,), reason="no previous release"),
    # -- preparing -------------------------------------------------------------------------
    Row("preparing: image and replicas are set on the idle color", in_deploy(Phase.PREPARING),
        {"green": {"image": "web:1", "replicas": 0}},
        intents=(SetImage(Color.GREEN, "web:2"), Scale(Color.GREEN, 2))),
    Row("preparing: the idle color gets the active color's replica count", in_deploy(Phase.PREPARING),
        {"blue": {"replicas": 5}, "green": {"image": "web:2", "replicas": 0}},
        intents=(Scale(Color.GREEN, 5),), absent=(SetImage,)),
    Row("preparing: waits for both locks", in_deploy(Phase.PREPARING), {"green": {"image": "web:2", "lock": IDLE_LOCK}},
        intents=(SetLock(Color.GREEN, "web-d1"),), absent=(SetImage, Scale)),
    Row("preparing: done", in_deploy(Phase.PREPARING), {"green": {"image": "web:2"}}, phase=Phase.WAITING,
        absent=(SetImage, Scale, SetLock, Route)),
    Row("preparing: digest-pinned image counts as set", in_deploy(Phase.PREPARING),
        {"green": {"image": "web:2@sha256:abc"}}, phase=Phase.WAITING),
    Row("preparing: timeout", in_deploy(Phase.PREPARING), {"green": {"image": "web:1"}},
        progress=Progress(started=T - 31), phase=Phase.FAILED, reason="could not be prepared within 30s"),
    # -- waiting ---------------------------------------------------------------------------
    Row("waiting: tasks still starting", in_deploy(Phase.WAITING), {"green": {"running": 1}},
        reason="web-green: 1/2 tasks running"),
    Row("waiting: an unhealthy task holds the deploy", in_deploy(Phase.WAITING), {"green": {"unhealthy": 1}},
        reason="1 unhealthy"),
    Row("waiting: all running and healthy", in_deploy(Phase.WAITING), phase=Phase.PRECHECKS),
    Row("waiting: changed outside the controller", in_deploy(Phase.WAITING), {"green": {"image": "web:9"}},
        phase=Phase.PREPARING, reason="changed outside the controller"),
    Row("waiting: timeout fails the deploy, traffic untouched", in_deploy(Phase.WAITING),
        {"green": {"running": 0}}, progress=Progress(started=T - 30), phase=Phase.FAILED,
        intents=(SetLock(Color.BLUE, None), SetLock(Color.GREEN, IDLE_LOCK)), absent=(Route,),
        reason="web-green: 0/2 tasks running after 30s; traffic stays on blue",
        check=lambda s: (s.state.active, s.state.result, s.state.retire_at) == (Color.BLUE, Result.FAILED, T + 60)),
    Row("waiting: timeout with keep leaves the new color up", in_deploy(Phase.WAITING), {"green": {"running": 0}},
        progress=Progress(started=T - 30), settings={"keep": True}, phase=Phase.FAILED,
        check=lambda s: s.state.retire_at is None),
    # -- pre-switch checks -----------------------------------------------------------------
    Row("prechecks: a probe passes", in_deploy(Phase.PRECHECKS), {"probe": OK}, reason="probe 1/3 passed",
        check=lambda s: s.progress.consecutive_ok == 1 and not s.persisted),
    Row("prechecks: the third in a row switches", in_deploy(Phase.PRECHECKS), {"probe": OK},
        progress=Progress(started=T - 5, consecutive_ok=2), phase=Phase.SWITCHING,
        intents=(Route(Routing(blue=0, green=100, preview=Color.BLUE)),)),
    Row("prechecks: a failed probe restarts the streak", in_deploy(Phase.PRECHECKS), {"probe": FAIL},
        progress=Progress(started=T - 5, consecutive_ok=2), reason="probe of web-green failed: HTTP 500",
        check=lambda s: s.progress.consecutive_ok == 0),
    Row("prechecks: unreachable is never healthy", in_deploy(Phase.PRECHECKS), {"probe": UNREACHABLE},
        progress=Progress(started=T - 5, consecutive_ok=2),
        reason="cannot probe web-green from the controller: no route to 10.201.0.5",
        check=lambda s: s.progress.consecutive_ok == 0),
    Row("prechecks: a failed PromQL check restarts the streak", in_deploy(Phase.PRECHECKS),
        {"probe": OK, "checks": (CheckResult("errors", False, "0.2 is not < 0.01"),)},
        progress=Progress(started=T - 5, consecutive_ok=2), reason="check errors failed: 0.2 is not < 0.01",
        check=lambda s: s.progress.consecutive_ok == 0),
    Row("prechecks: a task that died breaks the streak", in_deploy(Phase.PRECHECKS),
        {"probe": OK, "green": {"running": 1}}, progress=Progress(started=T - 5, consecutive_ok=2),
        check=lambda s: s.progress.consecutive_ok == 0),
    Row("prechecks: no probe this tick is no evidence", in_deploy(Phase.PRECHECKS),
        progress=Progress(started=T - 5, consecutive_ok=2), check=lambda s: s.progress.consecutive_ok == 2),
    Row("prechecks: timeout", in_deploy(Phase.PRECHECKS), {"probe": FAIL}, progress=Progress(started=T - 20),
        phase=Phase.FAILED, absent=(Route,), reason="did not pass 3 times in a row within 20s"),
    # -- smoke tests ------------------------------------------------------------------------
    Row("prechecks: the third in a row goes to the smoke tests when the app has some", in_deploy(Phase.PRECHECKS),
        {"probe": OK}, progress=Progress(started=T - 5, consecutive_ok=2), settings={"smoke_tests": 2},
        phase=Phase.SMOKE_TESTS, absent=(Route,), reason="sending 2 smoke request(s) to web-green before any traffic"),
    Row("smoke: all answered as expected, switch", in_deploy(Phase.SMOKE_TESTS), {"smoke": SMOKE_OK},
        settings={"smoke_tests": 1}, phase=Phase.SWITCHING,
        intents=(Route(Routing(blue=0, green=100, preview=Color.BLUE)),),
        reason="1 smoke request(s) to web-green answered as expected; switching 100% of the traffic to green"),
    Row("smoke: all answered as expected, auto_promotion false pauses", in_deploy(Phase.SMOKE_TESTS),
        {"smoke": SMOKE_OK}, settings={"smoke_tests": 1, **PAUSES}, phase=Phase.PAUSED, absent=(Route,)),
    Row("smoke: a wrong answer fails the deploy before any traffic, naming the request and the answer",
        in_deploy(Phase.SMOKE_TESTS), {"smoke": SMOKE_500}, settings={"smoke_tests": 1}, phase=Phase.FAILED,
        intents=(SetLock(Color.BLUE, None), SetLock(Color.GREEN, IDLE_LOCK)), absent=(Route,),
        reason="smoke test failed on web-green: GET /cart on preview route: HTTP 500 in 12 ms (expected status "
               "200-299; the body does not contain 'Your cart'); body: '<h1>boom</h1>'; traffic stays on blue",
        check=lambda s: (s.state.active, s.state.result, s.state.retire_at) == (Color.BLUE, Result.FAILED, T + 60)
        and "GET /cart" in s.state.deploy.reason),
    Row("smoke: unreachable is no verdict, sent again", in_deploy(Phase.SMOKE_TESTS), {"smoke": SMOKE_LOST},
        settings={"smoke_tests": 1}, absent=(Route,),
        reason="cannot send the smoke requests: the router at http://traefik:80 does not answer"),
    Row("smoke: unreachable until precheck_timeout fails", in_deploy(Phase.SMOKE_TESTS), {"smoke": SMOKE_LOST},
        settings={"smoke_tests": 1}, progress=Progress(started=T - 20), phase=Phase.FAILED, absent=(Route,),
        reason="the smoke requests could not reach web-green within 20s: the router at http://traefik:80"),
    Row("smoke: no round this tick is no evidence", in_deploy(Phase.SMOKE_TESTS), settings={"smoke_tests": 1},
        absent=(Route,), check=lambda s: not s.persisted),
    Row("smoke: passed, but the target lost its tasks: back to Waiting, no route", in_deploy(Phase.SMOKE_TESTS),
        {"smoke": SMOKE_OK, "green": {"running": 0}}, settings={"smoke_tests": 1}, phase=Phase.WAITING,
        absent=(Route,), reason="as expected, but web-green has no running task (0/2 tasks running): waiting for "
                                "its tasks, then the checks before the switch again",
        check=lambda s: s.progress == Progress(started=T) and s.state.routing() == Routing.all_to(Color.BLUE)),
    Row("smoke: passed with one task of two left, the switch goes on", in_deploy(Phase.SMOKE_TESTS),
        {"smoke": SMOKE_OK, "green": {"running": 1}}, settings={"smoke_tests": 1}, phase=Phase.SWITCHING,
        intents=(Route(Routing(blue=0, green=100, preview=Color.BLUE)),)),
    Row("smoke: the config lists none any more, on to the switch", in_deploy(Phase.SMOKE_TESTS),
        phase=Phase.SWITCHING, reason="no smoke requests are configured for the app any more"),
    Row("smoke: the target changed outside the controller", in_deploy(Phase.SMOKE_TESTS),
        {"smoke": SMOKE_OK, "green": {"image": "web:9"}}, settings={"smoke_tests": 1}, phase=Phase.PREPARING,
        reason="changed outside the controller"),
    # -- the promotion gate -----------------------------------------------------------------
    Row("prechecks: the third in a row pauses with auto_promotion false", in_deploy(Phase.PRECHECKS), {"probe": OK},
        progress=Progress(started=T - 5, consecutive_ok=2), settings=PAUSES, phase=Phase.PAUSED, absent=(Route,),
        reason="paused before the switch (auto_promotion: false); it waits for a person: "
               "`swarmshift bluegreen promote web` switches to green, `swarmshift bluegreen abort web` fails the deploy",
        check=lambda s: s.state.since == T and s.state.routing() == Routing.all_to(Color.BLUE)),
    Row("prechecks: a rollback redeploying the previous image does not pause", in_deploy(Phase.PRECHECKS,
        replace(D, kind=Operation.ROLLBACK)), {"probe": OK}, progress=Progress(started=T - 5, consecutive_ok=2),
        settings=PAUSES, phase=Phase.SWITCHING),
    Row("smoke: a rollback redeploying the previous image passes the smoke requests too",
        in_deploy(Phase.SMOKE_TESTS, replace(D, kind=Operation.ROLLBACK)), {"smoke": SMOKE_500},
        settings={"smoke_tests": 1, **PAUSES}, phase=Phase.FAILED),
    Row("prechecks: with a timer the pause says when it goes on", in_deploy(Phase.PRECHECKS), {"probe": OK},
        progress=Progress(started=T - 5, consecutive_ok=2), settings=TIMER, phase=Phase.PAUSED,
        reason="it promotes itself after 1m"),
    Row("paused: waits for a person, holding both locks", in_deploy(Phase.PAUSED), settings=PAUSES,
        progress=Progress(started=T - 86400), absent=(Route, Notify, SetLock, Scale, SetImage),
        check=lambda s: not s.persisted and s.state.locks() == {Color.BLUE: "web-d1", Color.GREEN: "web-d1"}),
    Row("paused: the preview serves the new color, users the old one", in_deploy(Phase.PAUSED), settings=PAUSES,
        check=lambda s: s.state.routing() == Routing(blue=100, green=0, preview=Color.GREEN)),
    Row("paused: the timer is not over", in_deploy(Phase.PAUSED, since=T - 59), settings=TIMER, absent=(Route,)),
    Row("paused: the timer is over, switch", in_deploy(Phase.PAUSED, since=T - 60), settings=TIMER,
        phase=Phase.SWITCHING, intents=(Route(Routing(blue=0, green=100, preview=Color.BLUE)),),
        reason="auto_promotion_after 1m is over; switching 100% of the traffic to green"),
    Row("paused: the timer counts from the stored pause start, not from a restart", in_deploy(Phase.PAUSED,
        since=T - 61), settings=TIMER, progress=Progress(), phase=Phase.SWITCHING),
    Row("paused: the timer is over but the new color is not ready", in_deploy(Phase.PAUSED, since=T - 60),
        {"green": {"running": 1}}, settings=TIMER, absent=(Route,),
        reason="auto_promotion_after 1m is over, but web-green: 1/2 tasks running"),
    Row("paused: the target changed outside the controller", in_deploy(Phase.PAUSED), {"green": {"image": "web:9"}},
        settings=PAUSES, phase=Phase.PREPARING),
    Row("paused: an alert moves nothing", in_deploy(Phase.PAUSED), {"alert": "HighErrorRate"},
        settings={**PAUSES, "rollback_on_alert": "always"}, absent=(Route,)),
    Row("paused: auto_promotion back on in the config still waits for a person", in_deploy(Phase.PAUSED,
        since=T - 3600), absent=(Route,)),
    # -- switching -------------------------------------------------------------------------
    Row("switching: the route is applied until confirmed", in_deploy(Phase.SWITCHING),
        {"routed": Routing.all_to(Color.BLUE)}, intents=(Route(Routing(blue=0, green=100, preview=Color.BLUE)),),
        reason="waiting for the router"),
    Row("switching: the target has no running task, the route waits", in_deploy(Phase.SWITCHING),
        {"routed": Routing.all_to(Color.BLUE), "green": {"running": 0}}, absent=(Route,),
        reason="waiting for the router to confirm blue=0 green=100 preview=blue; traffic waits: web-green has no "
               "running task (0/2 tasks running)", check=lambda s: not s.persisted),
    Row("switching: a task of the target runs again, the route goes out", in_deploy(Phase.SWITCHING),
        {"routed": Routing.all_to(Color.BLUE), "green": {"running": 1}},
        intents=(Route(Routing(blue=0, green=100, preview=Color.BLUE)),),
        check=lambda s: "traffic waits" not in s.reason),
    Row("switching: the next step toward a target without a task waits too", in_deploy(Phase.SWITCHING,
        replace(PROG, step=1)), {"routed": Routing.toward(Color.GREEN, 10), "green": {"running": 0}},
        absent=(Route,), reason="traffic waits: web-green has no running task"),
    Row("switching: still no running task at switch_timeout rolls back", in_deploy(Phase.SWITCHING),
        {"routed": Routing.all_to(Color.BLUE), "green": {"running": 0}}, progress=Progress(started=T - 10),
        phase=Phase.ROLLING_BACK, absent=(Route,), reason="did not confirm"),
    Row("switching: the router reporting the target's servers down holds nothing (rollbacks only)",
        in_deploy(Phase.SWITCHING), {"routed": Routing.all_to(Color.BLUE), "router_up": {Color.GREEN: False}},
        intents=(Route(Routing(blue=0, green=100, preview=Color.BLUE)),),
        check=lambda s: "traffic waits" not in s.reason),
    Row("switching: the router has nothing yet, the route goes out as before", in_deploy(Phase.SWITCHING),
        {"routed": None, "green": {"running": 0}}, intents=(Route(Routing(blue=0, green=100, preview=Color.BLUE)),),
        check=lambda s: "traffic waits" not in s.reason),
    Row("switching: confirmed, verify", in_deploy(Phase.SWITCHING), phase=Phase.VERIFYING, absent=(Route,),
        intents=(Notify,), check=lambda s: s.progress == Progress(started=T)),
    Row("switching: a partial step is confirmed, progress", in_deploy(Phase.SWITCHING, PROG),
        phase=Phase.PROGRESSING),
    Row("switching: a forced switch is not verified", in_deploy(Phase.SWITCHING, replace(D, force=True)),
        phase=Phase.STABLE, check=lambda s: (s.state.active, s.state.result) == (Color.GREEN, Result.SUCCEEDED)),
    Row("switching: the router never confirms", in_deploy(Phase.SWITCHING), {"routed": Routing.all_to(Color.BLUE)},
        progress=Progress(started=T - 10), phase=Phase.ROLLING_BACK, absent=(Route,), reason="did not confirm"),
    Row("switching: an alert rolls back", in_deploy(Phase.SWITCHING), {"alert": "HighErrorRate"},
        phase=Phase.ROLLING_BACK, intents=(Route(Routing.all_to(Color.BLUE)),)),
    Row("switching: an alert with policy never does not", in_deploy(Phase.SWITCHING), {"alert": "HighErrorRate"},
        settings={"rollback_on_alert": "never"}, phase=Phase.VERIFYING),
    # -- verifying -------------------------------------------------------------------------
    Row("verifying: a passing round", in_deploy(Phase.VERIFYING), {"probe": OK},
        progress=Progress(started=T - 2, rounds=2), check=lambda s: s.progress.rounds == 3 and not s.persisted),
    Row("verifying: window complete", in_deploy(Phase.VERIFYING), {"probe": OK},
        progress=Progress(started=T - 5, rounds=4), phase=Phase.STABLE,
        intents=(SetLock(Color.BLUE, IDLE_LOCK), SetLock(Color.GREEN, None)), absent=(Route, Scale),
        reason="green verified over 5 rounds with 0 failed",
        check=lambda s: (s.state.active, s.state.result, s.state.retire_at) == (Color.GREEN, Result.SUCCEEDED,
                                                                                 T + 60)),
    Row("verifying: window long enough but too few rounds", in_deploy(Phase.VERIFYING), {"probe": OK},
        progress=Progress(started=T - 50, rounds=2)),
    Row("verifying: a failure within the threshold is stored", in_deploy(Phase.VERIFYING), {"probe": FAIL},
        progress=Progress(started=T - 2, rounds=2), reason="check round failed (1 of 2 allowed)",
        check=lambda s: s.state.deploy.failures == 1 and s.persisted),
    Row("verifying: one failure too many rolls back in the same step",
        in_deploy(Phase.VERIFYING, replace(D, failures=2)), {"probe": FAIL},
        phase=Phase.ROLLING_BACK, intents=(Route(Routing.all_to(Color.BLUE)),),
        reason="3 failed checks, more than failure_threshold 2: probe of web-green failed: HTTP 500",
        check=lambda s: s.state.deploy.failures == 3),
    Row("verifying: rolling back to a color without a running task, the route waits",
        in_deploy(Phase.VERIFYING, replace(D, failures=2)), {"probe": FAIL, "blue": {"running": 0}},
        phase=Phase.ROLLING_BACK, absent=(Route,), reason="traffic waits: web-blue has no running task",
        check=lambda s: any(isinstance(i, Notify) and "traffic waits: web-blue" in i.text for i in s.intents)),
    Row("verifying: rolling back while the router reports no server of the color back up, the route waits",
        in_deploy(Phase.VERIFYING, replace(D, failures=2)), {"probe": FAIL, "router_up": {Color.BLUE: False}},
        phase=Phase.ROLLING_BACK, absent=(Route,),
        reason="traffic waits: the router reports no server of web-blue up yet"),
    Row("verifying: a failed PromQL check counts", in_deploy(Phase.VERIFYING, replace(D, failures=2)),
        {"probe": OK, "checks": (CheckResult("errors", False, "0.3 is not < 0.05"),)}, phase=Phase.ROLLING_BACK),
    Row("verifying: the image changed under us counts", in_deploy(Phase.VERIFYING), {"probe": OK,
        "green": {"image": "web:9"}}, reason="runs web:9, not web:2", check=lambda s: s.state.deploy.failures == 1),
    Row("verifying: an alert rolls back", in_deploy(Phase.VERIFYING), {"probe": OK, "alert": "HighErrorRate"},
        phase=Phase.ROLLING_BACK, intents=(Route(Routing.all_to(Color.BLUE)),),
        reason="alert HighErrorRate fired during verification"),
    Row("verifying: an alert with policy never is ignored", in_deploy(Phase.VERIFYING),
        {"probe": OK, "alert": "HighErrorRate"}, settings={"rollback_on_alert": "never"},
        progress=Progress(started=T - 1, rounds=1)),
    Row("verifying: after a restart the window starts again, failures kept",
        in_deploy(Phase.VERIFYING, replace(D, failures=1)), {"probe": OK}, progress=Progress(),
        reason="restarted mid-verification",
        check=lambda s: s.progress == Progress(started=T, rounds=1) and s.state.deploy.failures == 1),
    Row("verifying: after a restart, on_restart rollback rolls back", in_deploy(Phase.VERIFYING), {"probe": OK},
        progress=Progress(), settings={"on_restart": "rollback"}, phase=Phase.ROLLING_BACK,
        intents=(Route(Routing.all_to(Color.BLUE)),)),
    Row("progressing: a verified step moves to the next", in_deploy(Phase.PROGRESSING, PROG), {"probe": OK},
        progress=Progress(started=T - 5, rounds=4), phase=Phase.SWITCHING,
        intents=(Route(Routing.toward(Color.GREEN, 50)),), reason="10% on green verified",
        check=lambda s: s.state.deploy.step == 1),
    Row("progressing: the last partial step moves to 100%", in_deploy(Phase.PROGRESSING, replace(PROG, step=1)),
        {"probe": OK}, progress=Progress(started=T - 5, rounds=5), phase=Phase.SWITCHING,
        intents=(Route(Routing(blue=0, green=100, preview=Color.BLUE)),)),
    Row("progressing: failures roll back from a partial step", in_deploy(Phase.PROGRESSING, replace(PROG, failures=2)),
        {"probe": FAIL}, phase=Phase.ROLLING_BACK, intents=(Route(Routing.all_to(Color.BLUE)),)),
    # -- rolling back ----------------------------------------------------------------------
    Row("rolling back: the route back is applied until confirmed", in_deploy(Phase.ROLLING_BACK),
        {"routed": Routing.toward(Color.GREEN, 100)}, intents=(Route(Routing.all_to(Color.BLUE)),)),
    Row("rolling back: the color back has no running task, the route waits", in_deploy(Phase.ROLLING_BACK),
        {"routed": Routing.toward(Color.GREEN, 100), "blue": {"running": 0}}, absent=(Route,),
        reason="waiting for the router to confirm blue=100 green=0 preview=green; traffic waits: web-blue has no "
               "running task (0/2 tasks running)", check=lambda s: not s.persisted),
    Row("rolling back: a task of the color back runs again, the route goes out", in_deploy(Phase.ROLLING_BACK),
        {"routed": Routing.toward(Color.GREEN, 100), "blue": {"running": 1}},
        intents=(Route(Routing.all_to(Color.BLUE)),), check=lambda s: "traffic waits" not in s.reason),
    Row("rolling back: a route that only takes weight from a color without tasks goes out",
        in_deploy(Phase.ROLLING_BACK), {"routed": Routing.toward(Color.GREEN, 100), "green": {"running": 0}},
        intents=(Route(Routing.all_to(Color.BLUE)),), check=lambda s: "traffic waits" not in s.reason),
    Row("rolling back: the router reports no server of the color back up, the route waits",
        in_deploy(Phase.ROLLING_BACK), {"routed": Routing.toward(Color.GREEN, 100), "router_up": {Color.BLUE: False}},
        absent=(Route,), reason="waiting for the router to confirm blue=100 green=0 preview=green; traffic waits: "
                                "the router reports no server of web-blue up yet; blue=100 green=0 preview=green is "
                                "routed once one is", check=lambda s: not s.persisted),
    Row("rolling back: the router reports a server of the color back up, the route goes out",
        in_deploy(Phase.ROLLING_BACK), {"routed": Routing.toward(Color.GREEN, 100), "router_up": {Color.BLUE: True}},
        intents=(Route(Routing.all_to(Color.BLUE)),), check=lambda s: "traffic waits" not in s.reason),
    Row("rolling back: a router that cannot tell holds nothing", in_deploy(Phase.ROLLING_BACK),
        {"routed": Routing.toward(Color.GREEN, 100), "router_up": {Color.BLUE: None}},
        intents=(Route(Routing.all_to(Color.BLUE)),), check=lambda s: "traffic waits" not in s.reason),
    Row("rolling back: no running task holds though the router reports a server up", in_deploy(Phase.ROLLING_BACK),
        {"routed": Routing.toward(Color.GREEN, 100), "blue": {"running": 0}, "router_up": {Color.BLUE: True}},
        absent=(Route,), reason="traffic waits: web-blue has no running task (0/2 tasks running)"),
    Row("rolling back: no running task is the reason given when the router reports none up either",
        in_deploy(Phase.ROLLING_BACK),
        {"routed": Routing.toward(Color.GREEN, 100), "blue": {"running": 0}, "router_up": {Color.BLUE: False}},
        absent=(Route,), reason="traffic waits: web-blue has no running task",
        check=lambda s: "the router reports" not in s.reason),
    Row("rolling back: the router's word on the color losing traffic holds nothing", in_deploy(Phase.ROLLING_BACK),
        {"routed": Routing.toward(Color.GREEN, 100), "router_up": {Color.GREEN: False}},
        intents=(Route(Routing.all_to(Color.BLUE)),), check=lambda s: "traffic waits" not in s.reason),
    Row("rolling back: the router has no routing yet, the route goes out though it reports none up",
        in_deploy(Phase.ROLLING_BACK), {"routed": None, "router_up": {Color.BLUE: False}},
        intents=(Route(Routing.all_to(Color.BLUE)),)),
    Row("rolling back: the router has nothing, the route goes out as before", in_deploy(Phase.ROLLING_BACK),
        {"routed": None, "blue": {"running": 0}}, intents=(Route(Routing.all_to(Color.BLUE)),)),
    Row("rolling back: confirmed", in_deploy(Phase.ROLLING_BACK, replace(D, reason="3 failed checks")),
        phase=Phase.ROLLED_BACK, intents=(SetLock(Color.BLUE, None), SetLock(Color.GREEN, IDLE_LOCK), Notify),
        reason="traffic is back on blue: 3 failed checks",
        check=lambda s: (s.state.active, s.state.result, s.state.retire_at) == (Color.BLUE, Result.ROLLED_BACK,
                                                                                 T + 60)),
]


def _matches(want, got) -> bool:
    return isinstance(got, want) if isinstance(want, type) else got == want


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_transition(row: Row):
    settings = replace(S, **row.settings)
    step = advance("web", row.state, row.progress, observe(row.state, **row.obs), settings)
    assert step.state.phase is (row.phase or row.state.phase), step.reason
    for want in row.intents:
        assert any(_matches(want, got) for got in step.intents), f"{want} not in {step.intents}"
    for kind in row.absent:
        assert not any(isinstance(got, kind) for got in step.intents), f"{kind.__name__} in {step.intents}"
    assert row.reason in step.reason
    if step.transitioned:
        assert step.persisted and step.state.since == T
        assert sum(isinstance(i, Notify) for i in step.intents) == 1
    if row.check is not None:
        assert row.check(step), step
    # Whatever the step, traffic may lean toward the deploy's target only in the switching phases.
    routing = step.state.routing()
    if step.state.phase.in_flight and not step.state.phase.moves_traffic:
        assert routing.single is step.state.active


@pytest.mark.parametrize(("state", "needed"), [
    (at_rest(), Needs()),
    (in_deploy(Phase.WAITING), Needs()),
    (in_deploy(Phase.PRECHECKS), Needs(probe=Color.GREEN, checks=Color.GREEN)),
    (in_deploy(Phase.SMOKE_TESTS), Needs(smoke=Color.GREEN)),
    (in_deploy(Phase.PAUSED), Needs()),
    (in_deploy(Phase.SWITCHING), Needs()),
    (in_deploy(Phase.VERIFYING), Needs(probe=Color.GREEN, checks=Color.GREEN)),
    (in_deploy(Phase.PROGRESSING), Needs(probe=Color.GREEN, checks=Color.GREEN)),
    (in_deploy(Phase.ROLLING_BACK), Needs()),
])
def test_what_each_phase_measures(state, needed):
    assert needs(state) == needed


# --- operator requests -------------------------------------------------------------------------


def test_a_deploy_starts_by_preparing_the_idle_color():
    state = at_rest(retire_at=T + 30)
    step = start_deploy("web", state, observe(state, green={"replicas": 0}), image="web:2", deploy_id="web-d1",
                        settings=S)
    assert step.state.phase is Phase.PREPARING and step.persisted
    assert step.state.deploy == Deploy(id="web-d1", kind=Operation.DEPLOY, source=Color.BLUE, image="web:2",
                                       previous_image="web:1", started_at=T)
    assert step.state.retire_at is None  # the idle color is about to get the new release
    for intent in (SetImage(Color.GREEN, "web:2"), Scale(Color.GREEN, 2), SetLock(Color.BLUE, "web-d1"),
                   SetLock(Color.GREEN, "web-d1")):
        assert intent in step.intents
    assert not any(isinstance(i, Route) for i in step.intents)


def test_a_progressive_deploy_records_its_steps():
    step = start_deploy("web", at_rest(), observe(at_rest()), image="web:2", deploy_id="d", settings=S,
                        strategy=Strategy.PROGRESSIVE)
    assert step.state.deploy.steps == (10, 50, 100)


@pytest.mark.parametrize("phase", [p for p in Phase if p.in_flight])
def test_a_second_operation_is_refused_while_one_runs(phase):
    state = in_deploy(phase)
    obs = observe(state, probe=OK)
    for request in (lambda: start_deploy("web", state, obs, image="web:3", deploy_id="x", settings=S),
                    lambda: start_switch("web", state, obs, deploy_id="x", settings=S)):
        with pytest.raises(Refused) as err:
            request()
        assert err.value.code == "busy"
        assert err.value.message == f"web: deploy web-d1 is in phase {phase} (web:2 on green); wait for it or roll it back"


@pytest.mark.parametrize(("obs", "force", "message"), [
    ({"green": {"replicas": 2}}, False, "web-green was not probed"),
    ({"green": {"replicas": 2}, "probe": FAIL}, False, "probe of web-green: failed: HTTP 500"),
    ({"green": {"replicas": 2, "running": 1}, "probe": OK}, False, "web-green: 1/2 tasks running"),
    ({"green": {"replicas": 0}, "probe": UNREACHABLE}, False, "web-green: 0/0 tasks running"),
])
def test_a_switch_to_an_unhealthy_color_is_refused(obs, force, message):
    state = at_rest()
    with pytest.raises(Refused) as err:
        start_switch("web", state, observe(state, **obs), deploy_id="s1", settings=S, force=force)
    assert err.value.code == "unhealthy" and message in err.value.message and "force" in err.value.message


def test_a_switch_to_a_healthy_color_moves_traffic_and_verifies():
    state = at_rest()
    step = start_switch("web", state, observe(state, green={"replicas": 2, "image": "web:1b"}, probe=OK),
                        deploy_id="s1", settings=S)
    assert step.state.phase is Phase.SWITCHING
    assert step.state.deploy.kind is Operation.SWITCH and step.state.deploy.image == "web:1b"
    assert Route(Routing(blue=0, green=100, preview=Color.BLUE)) in step.intents


def test_a_forced_switch_skips_the_health_gate():
    state = at_rest()
    step = start_switch("web", state, observe(state, green={"replicas": 0}), deploy_id="s1", settings=S, force=True)
    assert step.state.phase is Phase.SWITCHING and step.state.deploy.force


def test_a_switch_to_the_active_color_is_a_noop():
    with pytest.raises(Refused) as err:
        start_switch("web", at_rest(), observe(at_rest(), probe=OK), deploy_id="s1", settings=S, to=Color.BLUE)
    assert err.value.code == "noop"


@pytest.mark.parametrize(("phase", "then"), [
    (Phase.PREPARING, Phase.FAILED), (Phase.WAITING, Phase.FAILED), (Phase.PRECHECKS, Phase.FAILED),
    (Phase.SMOKE_TESTS, Phase.FAILED), (Phase.PAUSED, Phase.FAILED),
    (Phase.SWITCHING, Phase.ROLLING_BACK), (Phase.PROGRESSING, Phase.ROLLING_BACK),
    (Phase.VERIFYING, Phase.ROLLING_BACK),
])
def test_a_rollback_request_aborts_a_deploy_in_flight(phase, then):
    state = in_deploy(phase)
    step = start_rollback("web", state, observe(state), deploy_id="r1", settings=S)
    assert step.state.phase is then and step.state.active is Color.BLUE
    assert step.state.routing() == Routing.all_to(Color.BLUE)


@pytest.mark.parametrize(("state", "code"), [
    (in_deploy(Phase.ROLLING_BACK), "noop"),
    (at_rest(), "nothing"),
    (at_rest(phase=Phase.ROLLED_BACK, deploy=D, result=Result.ROLLED_BACK), "nothing"),
    (at_rest(phase=Phase.FAILED, deploy=D, result=Result.FAILED), "nothing"),
])
def test_a_rollback_with_nowhere_to_go_is_refused(state, code):
    with pytest.raises(Refused) as err:
        start_rollback("web", state, observe(state, probe=OK), deploy_id="r1", settings=S)
    assert err.value.code == code


def test_a_rollback_to_a_previous_color_still_up_switches_back_after_a_health_check():
    state = at_rest(active=Color.GREEN, deploy=D, result=Result.SUCCEEDED)
    obs = observe(state, blue={"replicas": 2, "image": "web:1"}, green={"image": "web:2"}, probe=OK)
    step = start_rollback("web", state, obs, deploy_id="r1", settings=S)
    assert step.state.phase is Phase.SWITCHING and step.state.deploy.kind is Operation.ROLLBACK
    assert step.state.deploy.target is Color.BLUE


def test_a_rollback_to_a_scaled_down_color_redeploys_the_previous_release():
    state = at_rest(active=Color.GREEN, deploy=D, result=Result.SUCCEEDED)
    obs = observe(state, blue={"replicas": 0, "image": "web:1"}, green={"image": "web:2", "replicas": 2})
    step = start_rollback("web", state, obs, deploy_id="r1", settings=S)
    assert step.state.phase is Phase.PREPARING and step.state.deploy.kind is Operation.ROLLBACK
    assert step.state.deploy.image == "web:1" and Scale(Color.BLUE, 2) in step.intents


def test_promote_switches_a_paused_deploy():
    state = in_deploy(Phase.PAUSED)
    step = start_promote("web", state, observe(state), settings=replace(S, **PAUSES))
    assert step.state.phase is Phase.SWITCHING and step.reason == ("promoted by request; switching 100% of the "
                                                                   "traffic to green")
    assert Route(Routing(blue=0, green=100, preview=Color.BLUE)) in step.intents
    assert replace(step.state.deploy, phases=()) == D  # the same deploy goes on
    assert step.state.deploy.phases == (("Paused", 10.0),)  # with the time it spent paused


@pytest.mark.parametrize("phase", [p for p in Phase if p is not Phase.PAUSED])
def test_promote_is_refused_unless_paused_naming_the_phase(phase):
    state = in_deploy(phase) if phase.in_flight else at_rest(phase=phase)
    with pytest.raises(Refused) as err:
        start_promote("web", state, observe(state), settings=S)
    assert err.value.code == "phase"
    assert err.value.message.startswith(f"web: nothing to promote: the app is {phase}")


def test_promote_is_refused_while_the_new_color_is_not_ready():
    state = in_deploy(Phase.PAUSED)
    with pytest.raises(Refused) as err:
        start_promote("web", state, observe(state, green={"unhealthy": 1}), settings=S)
    assert err.value.code == "unhealthy" and "web-green: 2/2 tasks running, 1 unhealthy" in err.value.message


@pytest.mark.parametrize("phase", [Phase.PREPARING, Phase.WAITING, Phase.PRECHECKS, Phase.SMOKE_TESTS, Phase.PAUSED])
def test_abort_fails_a_deploy_before_its_switch_and_leaves_traffic_where_it_is(phase):
    state = in_deploy(phase)
    step = start_abort("web", state, observe(state), settings=S)
    assert step.state.phase is Phase.FAILED and step.state.result is Result.FAILED
    assert step.state.deploy.reason == f"aborted by request in {phase}; traffic stays on blue"
    assert step.state.routing() == Routing.all_to(Color.BLUE)
    assert not any(isinstance(i, Route) for i in step.intents)  # the router already serves blue alone
    assert step.state.retire_at == T + S.scale_down_delay  # the idle color is retired like any failed deploy's


@pytest.mark.parametrize(("state", "message"), [
    (in_deploy(Phase.SWITCHING), "web: cannot abort in Switching (deploy web-d1, web:2 on green): traffic has moved"),
    (in_deploy(Phase.VERIFYING), "web: cannot abort in Verifying"),
    (in_deploy(Phase.ROLLING_BACK), "web: cannot abort in RollingBack"),
    (at_rest(), "web: nothing to abort: the app is Stable, no deploy is in flight"),
    (at_rest(phase=Phase.FAILED, deploy=D, result=Result.FAILED), "web: nothing to abort: the app is Failed"),
])
def test_abort_is_refused_once_traffic_moved_or_with_nothing_in_flight(state, message):
    with pytest.raises(Refused) as err:
        start_abort("web", state, observe(state), settings=S)
    assert err.value.code == "phase" and err.value.message.startswith(message)


def test_a_paused_deploy_is_all_in_its_labels_and_a_restart_keeps_its_timer():
    paused = in_deploy(Phase.PAUSED, since=T - 30)
    labels = {k: v for k, v in paused.to_labels().items() if v is not None}
    loaded, problems = AppState.from_labels(labels, "web-blue")
    assert problems == [] and loaded == paused
    settings = replace(S, **TIMER)
    # A new process: empty progress; 30 s of the 60 s are gone already.
    assert advance("web", loaded, Progress(), observe(loaded), settings).state.phase is Phase.PAUSED
    later = advance("web", loaded, Progress(), observe(loaded, now=T + 30), settings)
    assert later.state.phase is Phase.SWITCHING


# --- plans -------------------------------------------------------------------------------------


def test_a_plan_writes_the_state_with_the_first_service_change_before_any_route():
    state = at_rest()
    step = start_deploy("web", state, observe(state, green={"replicas": 0}), image="web:2", deploy_id="web-d1",
                        settings=S)
    p = plan(step, {Color.BLUE: 5, Color.GREEN: 5})
    assert [w.color for w in p.first] == [Color.GREEN] and [w.color for w in p.then] == [Color.BLUE]
    first = p.first[0].changes()
    assert first["image"] == "web:2" and first["replicas"] == 2
    assert first["labels"][LOCK_LABEL] == "web-d1"
    assert first["labels"]["swarmshift.bluegreen.state.phase"] == "Preparing"
    assert first["labels"]["swarmshift.bluegreen.state.generation"] == "6"
    assert set(first["labels"]) == {LOCK_LABEL, *STATE_KEYS}
    assert p.then[0].changes()["labels"]["swarmshift.bluegreen.state.generation"] == "6"
    assert len(p.notifications) == 1 and p.routes == ()


def test_a_plan_rewrites_a_wiped_copy_without_a_phase_change():
    state = at_rest()
    step = advance("web", state, Progress(started=T), observe(state), S)
    assert not step.persisted
    p = plan(step, {Color.BLUE: None, Color.GREEN: 5})
    assert [w.color for w in p.first] == [Color.BLUE] and p.then == ()
    assert p.first[0].changes()["labels"]["swarmshift.bluegreen.state.generation"] == "5"


def test_a_plan_with_only_a_route_routes_at_once():
    state = at_rest()
    step = advance("web", state, Progress(started=T), observe(state, routed=None), S)
    p = plan(step, {Color.BLUE: 5, Color.GREEN: 5})
    assert p.first == () and p.then == () and p.routes == (Route(Routing.all_to(Color.BLUE)),)


# --- whole deploys in a simulated world, with kills --------------------------------------------

WEB = App("web", "web-blue", "web-green", 8000, "Host(`web.example.com`)")


class Killed(Exception):
    pass


@dataclass
class Service:
    image: str
    replicas: int
    labels: dict = field(default_factory=dict)
    ready_at: float = 0.0


@dataclass
class World:
    """Swarm, the router and the apps' behaviour, driven only through the machine's plans."""

    now: float = T
    services: dict = field(default_factory=dict)
    routing: Routing | None = Routing.all_to(Color.BLUE)
    startup: float = 2.0  # seconds before new tasks run
    alert_at: float | None = None
    redundant: list = field(default_factory=list)  # effects that changed nothing: must stay empty
    notified: list = field(default_factory=list)
    smoked: list = field(default_factory=list)  # when smoke rounds were sent
    log: list = field(default_factory=list)
    first_failure: float | None = None
    rolled_back_at: float | None = None
    # Once traffic has moved away from a deploy's target, it must never move back toward it.
    target_weights: list = field(default_factory=list)
    # A node dies when a step enters one of these phases, with the only tasks of the color named;
    # Swarm runs them again elsewhere `reschedule` seconds later.
    lose: dict = field(default_factory=dict)
    reschedule: float = 20.0
    lost_until: float | None = None
    # The router's own health check (Traefik's health_interval) sees a color's tasks this long after
    # they run; the controller asks it only in RollingBack, of the color traffic goes back to.
    health_lag: float = 0.0

    def __post_init__(self) -> None:
        if not self.services:
            state = AppState(active=Color.BLUE, since=T, generation=1)
            labels = {k: v for k, v in state.to_labels().items() if v is not None}
            self.services = {
                Color.BLUE: Service("web:1", 2, dict(labels)),
                Color.GREEN: Service("web:1", 0, {**labels, LOCK_LABEL: IDLE_LOCK}),
            }

    # -- how the apps behave ---------------------------------------------------------------

    def running(self, color: Color) -> tuple[int, int]:
        svc = self.services[color]
        if self.now < svc.ready_at:
            return 0, 0
        return svc.replicas, svc.replicas if "sick" in svc.image else 0

    def probe(self, color: Color) -> Probe:
        svc = self.services[color]
        running, unhealthy = self.running(color)
        if running == 0 or unhealthy:
            return Probe(ProbeOutcome.FAILED, "connection refused")
        if "5xx" in svc.image and self.routing is not None and self.routing.weight(color) > 0:
            if self.first_failure is None:
                self.first_failure = self.now
            return Probe(ProbeOutcome.FAILED, "HTTP 500")
        return Probe(ProbeOutcome.OK)

    # -- the controller's view -------------------------------------------------------------

    def labels(self) -> dict:
        return {c: dict(s.labels) for c, s in self.services.items()}

    def load(self) -> AppState:
        replicas = {c: s.replicas for c, s in self.services.items()}
        return load_state(WEB, self.labels(), replicas, self.routing, self.now).state

    def stored(self) -> dict:
        return load_state(WEB, self.labels(), {}, None, self.now).stored

    def observe(self, wants: Needs) -> Observation:
        colors = {}
        for color, svc in self.services.items():
            running, unhealthy = self.running(color)
            colors[color] = ColorStatus(service=WEB.service(color), image=svc.image, replicas=svc.replicas,
                                        running=running, unhealthy=unhealthy, lock=svc.labels.get(LOCK_LABEL))
        alert = None
        if self.alert_at is not None and self.now >= self.alert_at:
            alert, self.alert_at = "HighErrorRate", None
        return Observation(now=self.now, colors=colors, routed=self.routing,
                           probe=self.probe(wants.probe) if wants.probe else None, alert=alert,
                           smoke=self.smoke(wants.smoke) if wants.smoke else None, router_up=self.router_up())

    def router_up(self) -> dict:
        """What bluegreen.observe asks the router: only for a stored RollingBack, of its active color."""
        state = self.load()
        if state.phase is not Phase.ROLLING_BACK:
            return {}
        return {state.active: self.router_sees(state.active)}

    def router_sees(self, color: Color) -> bool:
        return self.running(color)[0] > 0 and self.now >= self.services[color].ready_at + self.health_lag

    def smoke(self, color: Color) -> SmokeRound:
        """A release whose image says `smokefail` passes its health checks and answers /cart with 500."""
        self.smoked.append(self.now)
        broken = "smokefail" in self.services[color].image
        return judge([evaluate(CART, "preview route", Answer(0.01, 500 if broken else 200, "Your cart"))])

    # -- executing a plan ------------------------------------------------------------------

    def write(self, write) -> None:
        svc = self.services[write.color]
        changes = write.changes()
        if "image" in changes:
            if changes["image"] == svc.image:
                self.redundant.append(("image", write.color))
            svc.image, svc.ready_at = changes["image"], self.now + self.startup
        if "replicas" in changes:
            if changes["replicas"] == svc.replicas:
                self.redundant.append(("replicas", write.color))
            if changes["replicas"] > svc.replicas:
                svc.ready_at = self.now + self.startup
            svc.replicas = changes["replicas"]
        for key, value in changes.get("labels", {}).items():
            if key == LOCK_LABEL and svc.labels.get(key) == value:
                self.redundant.append(("lock", write.color))
            if value is None:
                svc.labels.pop(key, None)
            else:
                svc.labels[key] = value

    def execute(self, step: Step, kill: str | None = None) -> None:
        p = plan(step, self.stored())
        for point, actions in (("first", p.first), ("routes", p.routes), ("then", p.then)):
            for action in actions:
                if isinstance(action, Route):
                    if action.routing == self.routing:
                        self.redundant.append(("route", action.routing))
                    for color in Color:
                        gains = self.routing is not None and action.routing.weight(color) > self.routing.weight(color)
                        assert not gains or self.running(color)[0] > 0, f"traffic moved onto {color} without a task"
                        back = step.state.phase is Phase.ROLLING_BACK and gains
                        assert not back or self.router_sees(color), f"traffic went back to {color} before the router"
                    self.routing = action.routing
                    self.target_weights.append(action.routing.weight(Color.GREEN))
                    if step.state.phase is Phase.ROLLING_BACK and self.rolled_back_at is None:
                        self.rolled_back_at = self.now
                else:
                    self.write(action)
            if kill == point:
                raise Killed(point)
        for notice in p.notifications:
            self.notified.append((notice.fields.get("deploy"), notice.fields.get("step"),
                                  notice.fields.get("previous_phase"), notice.fields.get("phase"), notice.event))
        if step.transitioned and step.state.phase in self.lose:
            self.lost_until = self.now + self.reschedule
            self.services[self.lose[step.state.phase]].ready_at = self.lost_until

    def safe(self) -> None:
        """Traffic only ever reaches the active color, or a deploy's target while the state says it may."""
        state = self.load()
        for color in Color:
            if self.routing is None or self.routing.weight(color) == 0 or color is state.active:
                continue
            assert state.deploy is not None and color is state.deploy.target, (self.routing, state)
            assert state.phase in (Phase.SWITCHING, Phase.PROGRESSING, Phase.VERIFYING, Phase.ROLLING_BACK), state


def run(world: World, start, settings: Settings = S, kill_in: Phase | None = None, kill_at: str = "before",
        ticks: int = 200) -> tuple[AppState, list]:
    """Drive a deploy to its end (a retired idle color), killing the controller once if told."""
    state, progress = world.load(), Progress()
    step = start(state, world.observe(Needs()))
    world.execute(step)
    state, progress = step.state, step.progress
    killed, visited, rounds = False, [state.phase], 0
    for _ in range(ticks):
        world.now += settings.probe_interval
        step = advance("web", state, progress, world.observe(needs(state)), settings)
        if state.phase is Phase.VERIFYING and step.state.phase is Phase.STABLE:
            # Whoever declares the color verified saw a whole window of rounds itself.
            assert rounds + 1 >= settings.window_rounds
        rounds = rounds + 1 if state.phase is Phase.VERIFYING and step.progress.rounds else 0
        kill_now = not killed and kill_in is state.phase
        if kill_now and kill_at == "before":
            # The step was computed, then the process died: nothing of it happened.
            killed = True
            state, progress, rounds = world.load(), Progress(), 0
            continue
        try:
            world.execute(step, kill=kill_at if kill_now else None)
        except Killed:
            killed = True
            world.safe()
            # A new process: nothing but the labels.
            state, progress, rounds = world.load(), Progress(), 0
            continue
        world.safe()
        state, progress = step.state, step.progress
        if state.phase is not visited[-1]:
            visited.append(state.phase)
        if not state.phase.in_flight and state.retire_at is None:
            break
    assert not state.phase.in_flight, f"still {state.phase} after {ticks} ticks"
    assert kill_in is None or killed, f"never reached {kill_in}"
    return state, visited


def deploy(image: str, strategy: Strategy = Strategy.BLUEGREEN):
    def start(state, obs):
        return start_deploy("web", state, obs, image=image, deploy_id="web-d1", settings=S, strategy=strategy)
    return start


def check_end(world: World, state: AppState, active: Color, result: Result) -> None:
    assert (state.active, state.result) == (active, result)
    assert world.routing == Routing.all_to(active)
    assert world.load() == state  # the labels hold exactly the final state
    assert {c: s.labels.get(LOCK_LABEL) for c, s in world.services.items()} == state.locks()
    assert world.services[active.other].replicas == 0  # retired after scale_down_delay
    assert world.redundant == []
    assert len(world.notified) == len(set(world.notified)), "a transition was notified twice"
    weights = world.target_weights
    peak = weights.index(max(weights)) if weights else 0
    assert weights[:peak + 1] == sorted(weights[:peak + 1]), f"traffic went back and forth: {weights}"
    assert weights[peak:] == sorted(weights[peak:], reverse=True), f"traffic returned to a failed color: {weights}"


def test_a_deploy_goes_through_every_phase_and_retires_the_old_color():
    world = World()
    state, visited = run(world, deploy("web:2"))
    assert visited == [Phase.PREPARING, Phase.WAITING, Phase.PRECHECKS, Phase.SWITCHING, Phase.VERIFYING,
                       Phase.STABLE]
    check_end(world, state, Color.GREEN, Result.SUCCEEDED)
    assert world.services[Color.GREEN].image == "web:2"


def test_a_progressive_deploy_verifies_every_step():
    world = World()
    state, visited = run(world, deploy("web:2", Strategy.PROGRESSIVE))
    assert visited == [Phase.PREPARING, Phase.WAITING, Phase.PRECHECKS, Phase.SWITCHING, Phase.PROGRESSING,
                       Phase.SWITCHING, Phase.PROGRESSING, Phase.SWITCHING, Phase.VERIFYING, Phase.STABLE]
    check_end(world, state, Color.GREEN, Result.SUCCEEDED)


def test_health_that_never_passes_fails_the_deploy_without_touching_traffic():
    world = World()
    state, visited = run(world, deploy("web:sick"))
    assert visited == [Phase.PREPARING, Phase.WAITING, Phase.FAILED]
    check_end(world, state, Color.BLUE, Result.FAILED)
    assert "web-green: 2/2 tasks running, 2 unhealthy after 30s" in state.deploy.reason


def test_failure_after_the_switch_rolls_back_within_the_deadline():
    world = World()
    state, visited = run(world, deploy("web:5xx"))
    assert visited[-3:] == [Phase.VERIFYING, Phase.ROLLING_BACK, Phase.ROLLED_BACK]
    check_end(world, state, Color.BLUE, Result.ROLLED_BACK)
    # probe_interval × failure_threshold from the first failed round; the router applies at once here.
    assert world.rolled_back_at - world.first_failure <= S.probe_interval * S.failure_threshold
    assert state.deploy.failures == S.failure_threshold + 1


def test_an_alert_during_verification_rolls_back():
    world = World(alert_at=T + 8)  # verification runs from T+6 to T+11
    state, visited = run(world, deploy("web:2"))
    assert Phase.ROLLING_BACK in visited
    check_end(world, state, Color.BLUE, Result.ROLLED_BACK)
    assert "alert HighErrorRate fired" in state.deploy.reason


def test_a_rollback_waits_for_a_task_of_the_old_color_and_routes_on_the_first_tick_it_runs():
    world = World(lose={Phase.VERIFYING: Color.BLUE})  # the old color's node dies once traffic left it
    state, visited = run(world, deploy("web:5xx"))
    assert visited[-3:] == [Phase.VERIFYING, Phase.ROLLING_BACK, Phase.ROLLED_BACK]
    check_end(world, state, Color.BLUE, Result.ROLLED_BACK)
    assert world.lost_until <= world.rolled_back_at < world.lost_until + S.probe_interval


def test_a_rollback_to_a_rescheduled_task_waits_for_the_routers_health_check_too():
    # Traefik's check sees the new task 3 s after it runs: routing before that answers 503 to every request.
    world = World(lose={Phase.VERIFYING: Color.BLUE}, health_lag=3.0)
    state, visited = run(world, deploy("web:5xx"))
    assert visited[-3:] == [Phase.VERIFYING, Phase.ROLLING_BACK, Phase.ROLLED_BACK]
    check_end(world, state, Color.BLUE, Result.ROLLED_BACK)
    seen = world.lost_until + world.health_lag
    assert seen <= world.rolled_back_at < seen + S.probe_interval


SMOKE = replace(S, smoke_tests=1)
TIMED = replace(S, smoke_tests=1, auto_promotion=False, auto_promotion_after=4)


def test_a_release_failing_a_smoke_request_never_gets_traffic():
    world = World()
    state, visited = run(world, deploy("web:smokefail"), SMOKE)
    assert visited == [Phase.PREPARING, Phase.WAITING, Phase.PRECHECKS, Phase.SMOKE_TESTS, Phase.FAILED]
    check_end(world, state, Color.BLUE, Result.FAILED)
    assert max(world.target_weights, default=0) == 0
    assert "smoke test failed on web-green: GET /cart on preview route: HTTP 500" in state.deploy.reason


def test_a_paused_deploy_goes_on_by_itself_after_auto_promotion_after():
    world = World()
    state, visited = run(world, deploy("web:2"), TIMED)
    assert visited == [Phase.PREPARING, Phase.WAITING, Phase.PRECHECKS, Phase.SMOKE_TESTS, Phase.PAUSED,
                       Phase.SWITCHING, Phase.VERIFYING, Phase.STABLE]
    check_end(world, state, Color.GREEN, Result.SUCCEEDED)
    assert len(world.smoked) == 1  # sent once, before the pause


FLOWS = {
    "deploy": ("web:2", Strategy.BLUEGREEN, Color.GREEN, Result.SUCCEEDED, S),
    "progressive": ("web:2", Strategy.PROGRESSIVE, Color.GREEN, Result.SUCCEEDED, S),
    "health never passes": ("web:sick", Strategy.BLUEGREEN, Color.BLUE, Result.FAILED, S),
    "fails after the switch": ("web:5xx", Strategy.BLUEGREEN, Color.BLUE, Result.ROLLED_BACK, S),
    "progressive fails": ("web:5xx", Strategy.PROGRESSIVE, Color.BLUE, Result.ROLLED_BACK, S),
    "fails a smoke request": ("web:smokefail", Strategy.BLUEGREEN, Color.BLUE, Result.FAILED, SMOKE),
    "smoke, pause, promoted by the timer": ("web:2", Strategy.BLUEGREEN, Color.GREEN, Result.SUCCEEDED, TIMED),
}


def _kill_cases():
    for flow, (image, strategy, _, _, settings) in FLOWS.items():
        _, visited = run(World(), deploy(image, strategy), settings)
        for phase in dict.fromkeys(visited):
            for point in ("before", "first", "routes", "then"):
                yield pytest.param(flow, phase, point, id=f"{flow}-{phase}-{point}")


@pytest.mark.parametrize(("flow", "phase", "point"), list(_kill_cases()))
def test_a_kill_in_any_phase_at_any_point_resumes_to_the_same_end(flow, phase, point):
    """Killed in `phase` at `point` of executing a step, a new process ends where an unkilled one does.

    On the way, `World.safe` checks after every step that traffic never rests on a color the state
    does not allow, and `check_end` that no effect ran twice and no transition was notified twice.
    """
    image, strategy, active, result, settings = FLOWS[flow]
    world = World()
    state, _ = run(world, deploy(image, strategy), settings, kill_in=phase, kill_at=point)
    check_end(world, state, active, result)
