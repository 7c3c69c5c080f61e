"""The canary step (issue 11, item 2): its queries, its verdicts in the machine, its config, and whole deploys.

Queries and verdicts are pure (bluegreen.canary, bluegreen.phases); whole deploys run the real
Controller over the Swarm, router and prober held in memory (tests/support/memory.py), with the
canary analysis held in memory too (`MemoryAnalyst`, the project's own `Analyst` interface).
The lab tests prove the same through Traefik and Prometheus.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import replace

import pytest
from pydantic import ValidationError
from structlog.testing import capture_logs

from bluegreen.analysis import PrometheusAnalyst
from bluegreen.apps import App, Color, Strategy
from bluegreen.canary import CanaryPolicy, CanaryReading, breach, queries, traefik_service, window_for
from bluegreen.config import BlueGreenConfig
from bluegreen.controller import Controller
from bluegreen.observe import Checks
from bluegreen.phases import Needs, Observation, Progress, Route, advance, needs, start_deploy, start_rollback
from bluegreen.state import AppState, Operation, Phase, Result, Routing
from swarmshift.prometheus import PrometheusUnavailable, QueryError, Sample
from tests.support.memory import MemoryAnalyst
from tests.unit.test_bluegreen_controller import World, world
from tests.unit.test_bluegreen_phases import D, S, T, in_deploy, observe

POLICY = CanaryPolicy(weight=5, analysis=60, interval=10, max_error_rate=0.05, max_latency=0.5, min_requests=20,
                      require_traffic=True, grace=30)
SC = replace(S, canary=POLICY)
CD = replace(D, steps=(5, 100), canary=True)  # a canary deploy in its canary step
GOOD = CanaryReading(window=60, requests=300, errors=3, latency=0.12)


# --- the queries -------------------------------------------------------------------------------


def test_the_queries_select_exactly_one_colors_traefik_service():
    q = queries("web", Color.GREEN, "file", 60)
    assert q.requests == 'sum(increase(traefik_service_requests_total{service="web-green@file"}[60s]))'
    assert q.errors == ('sum(increase(traefik_service_requests_total{service="web-green@file",code=~"5.."}[60s])) '
                        "or vector(0)")
    assert q.latency == ('histogram_quantile(0.99, sum by (le) '
                         '(rate(traefik_service_request_duration_seconds_bucket{service="web-green@file"}[60s])))')


@pytest.mark.parametrize(("app", "color", "provider", "service"), [
    ("web", Color.BLUE, "file", "web-blue@file"),
    ("shop_web", Color.GREEN, "http", "shop_web-green@http"),  # an app of stack shop, the HTTP provider
])
def test_the_service_is_named_as_the_generated_document_names_it(app, color, provider, service):
    assert traefik_service(app, color, provider) == service
    assert all(f'service="{service}"' in text for text in queries(app, color, provider, 10, 0.95).all())
    assert "histogram_quantile(0.95," in queries(app, color, provider, 10, 0.95).latency


@pytest.mark.parametrize(("elapsed", "window"), [
    (0, 10), (3.2, 10), (37.2, 38), (60, 60), (600, 60),  # at least one interval, at most the analysis window
])
def test_the_window_is_the_canary_so_far(elapsed, window):
    assert window_for(elapsed, POLICY) == window
    assert f"[{window}s]" in queries("web", Color.GREEN, "file", window_for(elapsed, POLICY)).requests


@pytest.mark.parametrize(("reading", "why"), [
    (GOOD, None),
    (replace(GOOD, errors=30), "error rate 0.1 (30 of 300 requests answered 5xx over 60s) is above "
                               "canary.max_error_rate 0.05"),
    (replace(GOOD, latency=0.8), "p99 latency 800 ms over 60s is above canary.max_latency 500 ms"),
    (replace(GOOD, requests=10, errors=10), None),  # fewer than min_requests: no verdict
    (CanaryReading(window=60, error="Prometheus unavailable"), None),
    (replace(GOOD, latency=math.inf), "p99 latency"),  # beyond the last bucket is a breach, not no data
])
def test_a_breach_names_the_metric_its_value_and_the_threshold(reading, why):
    got = breach(reading, POLICY)
    assert (got is None) if why is None else (got is not None and got.startswith(why)), got


def test_without_max_latency_the_latency_is_shown_not_judged():
    assert breach(replace(GOOD, latency=9.0), replace(POLICY, max_latency=None)) is None


class Answers:
    """The project's Prometheus client interface (`query`), answering from a table: not Prometheus's HTTP API."""

    def __init__(self, answers: dict[str, object]) -> None:
        self.answers, self.asked = answers, []

    async def query(self, promql: str) -> list[Sample]:
        self.asked.append(promql)
        for start, answer in self.answers.items():
            if promql.startswith(start):
                if isinstance(answer, Exception):
                    raise answer
                return [Sample({}, v) for v in answer]  # type: ignore[union-attr]
        return []


def _reading(answers: dict[str, object]) -> CanaryReading:
    app = App("web", "web-blue", "web-green", 8000, "Host(`w`)")  # type: ignore[arg-type]
    analyst = PrometheusAnalyst(Answers(answers), "file")  # type: ignore[arg-type]
    return asyncio.run(analyst.analyse(app, Color.GREEN, 30, 0.99))


def test_the_prometheus_analyst_turns_answers_into_a_reading():
    r = _reading({"sum(increase(traefik_service_requests_total{service=\"web-green@file\"}[": [200.0],
                  "sum(increase(traefik_service_requests_total{service=\"web-green@file\",code": [4.0],
                  "histogram_quantile": [0.25]})
    assert (r.requests, r.errors, r.latency, r.window, r.error_rate) == (200.0, 4.0, 0.25, 30, 0.02)


def test_no_series_is_no_traffic_and_an_outage_or_a_refused_query_is_no_answer():
    assert _reading({}) == CanaryReading(window=30, requests=0.0, errors=0.0)
    down = _reading({"sum": PrometheusUnavailable("http://prometheus:9090: connection refused")})
    assert not down.available and "connection refused" in down.error
    refused = _reading({"histogram": QueryError("bad_data: parse error")})
    assert not refused.available and refused.error == "Prometheus refused the query (logged as canary_query_refused)"


def test_the_analyst_needs_prometheus_and_a_traefik_router():
    url = {"prometheus": {"url": "http://prometheus:9090"}}
    assert PrometheusAnalyst.from_config(BlueGreenConfig(**url, router={"kind": "traefik-http"})).provider == "http"
    assert PrometheusAnalyst.from_config(BlueGreenConfig(**url)).provider == "file"
    assert PrometheusAnalyst.from_config(BlueGreenConfig()) is None


# --- the machine -------------------------------------------------------------------------------


def _step(state: AppState, reading: CanaryReading | None = None, *, settings=SC, now: float = T,
          progress: Progress | None = None, **obs):
    observation: Observation = replace(observe(state, now=now, **obs), canary=reading)
    return advance("web", state, progress or Progress(started=T - 1), observation, settings)


def test_a_canary_deploy_starts_with_the_canary_weight_as_its_first_step():
    state = AppState(active=Color.BLUE, since=T - 50, generation=5)
    obs = observe(state)
    step = start_deploy("web", state, obs, image="web:2", deploy_id="web-d1", settings=SC)
    assert step.state.deploy.steps == (5, 100) and step.state.deploy.canary
    prog = start_deploy("web", state, obs, image="web:2", deploy_id="web-d1", settings=SC, strategy=Strategy.PROGRESSIVE)
    assert prog.state.deploy.steps == (5, 10, 50, 100)
    wide = replace(SC, canary=replace(POLICY, weight=10))
    assert start_deploy("web", state, obs, image="web:2", deploy_id="d", settings=wide,
                        strategy=Strategy.PROGRESSIVE).state.deploy.steps == (10, 50, 100)
    plain = start_deploy("web", state, obs, image="web:2", deploy_id="d", settings=S).state.deploy
    assert (plain.steps, plain.canary) == ((100,), False)
    back = start_deploy("web", state, obs, image="web:1", deploy_id="d", settings=SC, kind=Operation.ROLLBACK)
    assert (back.state.deploy.steps, back.state.deploy.canary) == ((100,), False)


def test_the_confirmed_canary_weight_opens_the_canary_window():
    step = _step(in_deploy(Phase.SWITCHING, CD))
    assert step.state.phase is Phase.CANARY and step.state.since == T
    assert step.state.routing() == Routing(blue=95, green=5, preview=Color.GREEN)
    assert "analysing the canary web-green (5%) for 1m" in step.reason
    assert needs(step.state) == Needs(canary=Color.GREEN)


def test_a_breach_sends_the_weight_back_to_0_and_rolls_back_at_once():
    step = _step(in_deploy(Phase.CANARY, CD, since=T - 10), replace(GOOD, window=10, errors=30))
    assert step.state.phase is Phase.ROLLING_BACK
    assert Route(Routing.all_to(Color.BLUE)) in step.intents
    assert step.state.deploy.reason.startswith("canary analysis of web-green failed: error rate 0.1 (30 of 300 "
                                               "requests answered 5xx over 10s) is above canary.max_error_rate 0.05")
    assert step.state.deploy.reason.endswith("weight back to 0, traffic returns to blue")


@pytest.mark.parametrize(("name", "since", "reading", "settings", "phase", "reason"), [
    ("mid-window, healthy: stays", T - 20, replace(GOOD, window=20), SC, Phase.CANARY, "canary 5% on web-green, 20s"),
    ("mid-window, too few requests to judge even with errors", T - 20,
     CanaryReading(window=20, requests=5, errors=5, latency=2.0), SC, Phase.CANARY, "5 requests, error rate 1"),
    ("no analysis this tick: stays", T - 20, None, SC, Phase.CANARY, ""),
    ("the whole window passed", T - 60, GOOD, SC, Phase.SWITCHING, "passed its 1m analysis: 300 requests"),
    ("the window is over but the reading covers less: waits for the whole one", T - 60, replace(GOOD, window=50),
     SC, Phase.CANARY, ""),
    ("too little traffic at the end fails with require_traffic", T - 60, replace(GOOD, requests=5, errors=0), SC,
     Phase.ROLLING_BACK, "too little traffic to judge: 5 requests"),
    ("too little traffic at the end passes without require_traffic", T - 60, replace(GOOD, requests=5, errors=0),
     replace(SC, canary=replace(POLICY, require_traffic=False)), Phase.SWITCHING, "canary.require_traffic is false"),
    ("no traffic at all at the end fails", T - 60, CanaryReading(window=60, requests=0, errors=0), SC,
     Phase.ROLLING_BACK, "too little traffic"),
    ("Prometheus unanswered within the grace: waits", T - 80, CanaryReading(window=60, error="down"), SC,
     Phase.CANARY, "no analysis: down"),
    ("Prometheus unanswered past the window and the grace: rolls back", T - 90,
     CanaryReading(window=60, error="Prometheus unavailable: connection refused"), SC, Phase.ROLLING_BACK,
     "had no verdict within 1m and canary.grace 30s: no analysis: Prometheus unavailable"),
    ("no reading at all past the window and the grace: rolls back", T - 90, None, SC, Phase.ROLLING_BACK,
     "had no verdict within 1m"),
    ("no canary configured any more: goes on to the switch", T - 5, None, S, Phase.SWITCHING,
     "no canary is configured for the app any more"),
])
def test_the_canary_verdict(name, since, reading, settings, phase, reason):
    step = _step(in_deploy(Phase.CANARY, CD, since=since), reading, settings=settings)
    assert step.state.phase is phase, step.reason
    assert reason in step.reason
    if phase is Phase.SWITCHING:
        assert step.state.deploy.step == 1 and step.state.routing() == Routing(blue=0, green=100, preview=Color.BLUE)
    if phase is Phase.ROLLING_BACK:
        assert step.state.routing() == Routing.all_to(Color.BLUE) and step.state.deploy.reason


def test_the_window_counts_from_the_stored_start_so_a_restart_does_not_restart_it():
    # A new process: no progress in memory, the phase began 60 s ago by the labels.
    step = _step(in_deploy(Phase.CANARY, CD, since=T - 60), GOOD, progress=Progress())
    assert step.state.phase is Phase.SWITCHING


def test_an_alert_or_a_rollback_request_ends_the_canary():
    state = in_deploy(Phase.CANARY, CD, since=T - 5)
    assert _step(state, GOOD, alert="HighErrorRate").state.phase is Phase.ROLLING_BACK
    obs = observe(state)
    assert start_rollback("web", state, obs, deploy_id="x", settings=SC).state.phase is Phase.ROLLING_BACK


def test_a_canary_deploy_is_all_in_its_labels():
    state = in_deploy(Phase.CANARY, CD, since=T - 5)
    labels = {k: v for k, v in state.to_labels().items() if v is not None}
    assert labels["swarmshift.bluegreen.state.deploy.canary"] == "true"
    again, problems = AppState.from_labels(labels, "web-blue")
    assert problems == [] and again == state
    plain = {k: v for k, v in in_deploy(Phase.VERIFYING).to_labels().items() if v is not None}
    assert "swarmshift.bluegreen.state.deploy.canary" not in plain
    assert AppState.from_labels(plain, "web-blue")[0].deploy.canary is False


# --- the config --------------------------------------------------------------------------------

PROM = {"prometheus": {"url": "http://prometheus:9090"}}


def test_the_canary_config_defaults_and_per_app_keys_override_key_by_key():
    cfg = BlueGreenConfig(**PROM, canary={"weight": 10, "max_latency": "300ms", "analysis": "2m"},
                          apps={"shop_web": {"canary": {"weight": 20}}, "blog_web": {"canary": False}})
    assert cfg.settings("other").canary == CanaryPolicy(weight=10, analysis=120, interval=10, max_error_rate=0.05,
                                                        max_latency=0.3, min_requests=20, require_traffic=True,
                                                        grace=30)
    assert cfg.settings("shop_web").canary == replace(cfg.settings("other").canary, weight=20)
    assert cfg.settings("blog_web").canary is None
    assert BlueGreenConfig(**PROM).settings("web").canary is None
    only = BlueGreenConfig(**PROM, apps={"web": {"canary": {}}})
    assert only.settings("web").canary.weight == 5 and only.settings("api").canary is None


@pytest.mark.parametrize(("config", "message"), [
    ({"canary": {}}, "canary: Value error, a canary needs prometheus.url"),
    ({**PROM, "router": {"kind": "nginx"}, "canary": {}}, "a canary needs a Traefik router (router.kind "
                                                          "traefik-file or traefik-http): router nginx"),
    ({**PROM, "router": {"kind": "nginx"}, "apps": {"shop_web": {"canary": {"weight": 5}}}},
     "apps.shop_web.canary: a canary needs a Traefik router"),
    ({"apps": {"web": {"canary": {}}}}, "apps.web.canary: a canary needs prometheus.url"),
    ({**PROM, "canary": {"weight": 0}}, "canary.weight"),
    ({**PROM, "canary": {"weight": 51}}, "canary.weight"),
    ({**PROM, "canary": {"max_error_rate": 1.5}}, "canary.max_error_rate"),
    ({**PROM, "canary": {"interval": "500ms"}}, "must be at least 1s"),
    ({**PROM, "canary": {"analysis": "5s", "interval": "10s"}}, "analysis must hold at least one interval"),
    ({**PROM, "canary": {"latency_quantile": 1}}, "canary.latency_quantile"),
    ({**PROM, "canary": {"steps": [5]}}, "canary.steps"),  # unknown keys are errors
])
def test_a_bad_canary_config_is_refused_clearly(config, message):
    with pytest.raises(ValidationError) as err:
        BlueGreenConfig(**config)
    assert message in str(err.value).replace("\n  ", ": ")


def test_nginx_without_a_canary_or_with_it_off_for_an_app_is_fine():
    BlueGreenConfig(**PROM, router={"kind": "nginx"}, apps={"web": {"canary": False}})


# --- whole deploys through the controller ------------------------------------------------------

CANARY = {**PROM, "canary": {"weight": 5, "analysis": "5s", "interval": "1s", "grace": "3s", "min_requests": 10,
                             "max_latency": "300ms"}}


def canary_world(analyst: MemoryAnalyst, **config) -> World:
    base = world(**{**CANARY, **config})
    controller = Controller(base.swarm, base.router, base.controller.config, prober=base.prober,
                            checks=Checks(None, []), clock=base.clock, analyst=analyst)
    return World(base.swarm, base.router, base.prober, base.clock, controller)


def run_canary(scenario, analyst: MemoryAnalyst | None = None, **config) -> World:
    w = canary_world(analyst or MemoryAnalyst(), **config)

    async def main() -> None:
        await w.tick()
        await scenario(w)

    asyncio.run(main())
    return w


async def until(w: World, phase: str, limit: int = 40) -> list[str]:
    seen = []
    for _ in range(limit):
        if w.phase() == phase:
            return seen
        seen.append(await w.tick())
    raise AssertionError(f"still {w.phase()} after {limit} ticks: {seen}")


def green_weights(w: World) -> list[int]:
    """The green weights the router was given after the start (whose routing is all on blue)."""
    return [routing.weight(Color.GREEN) for _, routing in w.router.applied[1:]]


def test_a_healthy_canary_goes_on_to_the_full_switch_and_verification():
    seen: list[str] = []
    views = []

    async def scenario(w: World) -> None:
        await w.controller.deploy("web", "web:2")
        with capture_logs() as logs:
            seen.extend(await until(w, "Canary"))
            await w.tick()
            views.append(await w.controller.status("web"))
            seen.extend(await until(w, "Stable"))
        views.append(logs)

    analyst = MemoryAnalyst()
    w = run_canary(scenario, analyst)
    view, logs = views
    assert w.active() == "green" and green_weights(w) == [5, 100]
    assert "Canary" in seen and seen.index("Canary") < seen.index("Verifying")
    canary = view["canary"]
    assert (canary["color"], canary["weight"], canary["analysis"]) == ("green", 5, 5.0)
    assert canary["elapsed"] + canary["remaining"] == 5.0 and canary["remaining"] < 5
    assert canary["last"]["error_rate"] == 0.0 and canary["last"]["latency"] == 0.05
    assert view["deploy"]["canary"] is True and view["deploy"]["steps"] == [5, 100]
    events = [e["event"] for e in logs]
    assert events.index("canary_started") < events.index("canary_passed") < events.index("deploy_stable")
    assert all(call[:2] == ("web", Color.GREEN) for call in analyst.calls)
    assert max(window for _, _, window in analyst.calls) == 5.0  # the last analysis covered the whole window


def test_an_error_rate_breach_aborts_the_canary_and_the_release_never_gets_more_than_its_weight():
    views = []

    async def scenario(w: World) -> None:
        await w.controller.deploy("web", "web:2")
        await until(w, "Canary")
        analyst.readings[Color.GREEN] = CanaryReading(window=1, requests=40, errors=12, latency=0.05)
        with capture_logs() as logs:
            await until(w, "RolledBack")
        views.append(await w.controller.status("web"))
        views.append(logs)

    analyst = MemoryAnalyst()
    w = run_canary(scenario, analyst)
    view, logs = views
    assert green_weights(w) == [5, 0] and w.active() == "blue"
    assert w.router.routes["web"] == Routing.all_to(Color.BLUE)
    assert view["result"] == "rolled-back"
    assert "error rate 0.3 (12 of 40 requests answered 5xx" in view["deploy"]["reason"]
    assert "above canary.max_error_rate 0.05" in view["deploy"]["reason"]
    [failed] = [e for e in logs if e["event"] == "canary_failed"]
    assert failed["log_level"] == "error" and "error rate 0.3" in failed["reason"]


def test_a_latency_breach_aborts_the_canary():
    async def scenario(w: World) -> None:
        await w.controller.deploy("web", "web:2")
        await until(w, "RolledBack")

    analyst = MemoryAnalyst({Color.GREEN: CanaryReading(window=1, requests=50, errors=0, latency=0.9)})
    w = run_canary(scenario, analyst)
    state = w.controller.apps["web"].state
    assert state.result is Result.ROLLED_BACK and green_weights(w) == [5, 0]
    assert "p99 latency 900 ms over" in state.deploy.reason and "canary.max_latency 300 ms" in state.deploy.reason


@pytest.mark.parametrize(("require", "end"), [(True, "RolledBack"), (False, "Stable")])
def test_too_little_traffic_fails_the_canary_unless_traffic_is_not_required(require, end):
    async def scenario(w: World) -> None:
        await w.controller.deploy("web", "web:2")
        await until(w, "Canary")
        while w.phase() not in ("RolledBack", "Stable"):
            await w.tick()

    analyst = MemoryAnalyst({Color.GREEN: CanaryReading(window=1, requests=3, errors=3, latency=2.0)})
    w = run_canary(scenario, analyst, canary={**CANARY["canary"], "require_traffic": require})
    assert w.phase() == end
    assert green_weights(w) == ([5, 0] if require else [5, 100])


def test_prometheus_down_is_never_a_pass_it_is_retried_with_backoff_then_rolled_back():
    ticks: list[str] = []

    async def scenario(w: World) -> None:
        await w.controller.deploy("web", "web:2")
        await until(w, "Canary")
        ticks.extend(await until(w, "RolledBack"))

    analyst = MemoryAnalyst(unavailable="Prometheus unavailable: http://prometheus:9090: connection refused")
    w = run_canary(scenario, analyst)
    state = w.controller.apps["web"].state
    assert green_weights(w) == [5, 0]
    assert "had no verdict within 5s and canary.grace 3s" in state.deploy.reason
    assert "connection refused" in state.deploy.reason
    assert 1 < len(analyst.calls) < len(ticks)  # backed off: not asked every tick
    canary_began = w.controller.apps["web"].canary.key[1]
    assert state.since - canary_began >= 5 + 3  # the window and the grace, then the rollback


def test_a_restart_in_canary_keeps_the_window_it_started():
    starts = []

    async def scenario(w: World) -> None:
        await w.controller.deploy("web", "web:2")
        await until(w, "Canary")
        starts.append(w.controller.apps["web"].state.since)
        await w.tick()
        await w.tick()
        controller = Controller(w.swarm, w.router, w.controller.config, prober=w.prober, checks=Checks(None, []),
                                clock=w.clock, analyst=MemoryAnalyst())
        later = World(w.swarm, w.router, w.prober, w.clock, controller)
        assert await later.tick() == "Canary"
        assert later.controller.apps["web"].state.since == starts[0]
        while later.phase() == "Canary":
            await later.tick()
        starts.append(later.clock.now)
        await until(later, "Stable")

    w = run_canary(scenario)
    began, left = starts
    assert 5 <= left - began <= 7  # the 5 s window from its first start, not from the restart
    assert green_weights(w) == [5, 5, 100] or green_weights(w) == [5, 100]


def test_an_app_with_the_canary_off_switches_directly():
    seen: list[str] = []

    async def scenario(w: World) -> None:
        await w.controller.deploy("web", "web:2")
        seen.extend(await until(w, "Stable"))

    w = run_canary(scenario, apps={"web": {"canary": False}})
    assert "Canary" not in seen and green_weights(w) == [100]
