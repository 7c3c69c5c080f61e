"""The scaling decision as tables: HPA's documented cases beside ours, inputs in, replicas and reason out."""

from __future__ import annotations

from dataclasses import replace

import pytest

from autoscaler.decide import (
    Decision,
    History,
    MetricSample,
    Observation,
    Reason,
    Recommendation,
    ScaleEvent,
    cap_to_capacity,
    decide,
    decide_alert,
)
from autoscaler.policy import DEFAULT_SCALE_DOWN, DEFAULT_SCALE_UP, Policy, RatePolicy, Rules, Step

NOW = 1_700_000_000.0

# No windows and limits wide open: the tables about the calculator see the calculator alone.
OPEN = Policy(
    max=1000,
    min=1,
    cpu=50,
    scale_up=Rules(0.0, (RatePolicy("percent", 100_000, 15.0),)),
    scale_down=Rules(0.0, (RatePolicy("percent", 100, 15.0),)),
)


def cpu(*values: float, target: float = 50, missing: int = 0) -> MetricSample:
    return MetricSample("cpu", target, tuple(values), tuple(f"task{i}" for i in range(missing)))


def raw(metric: str, *values: float, target: float, missing: int = 0) -> MetricSample:
    return MetricSample(metric, target, tuple(values), tuple(f"task{i}" for i in range(missing)))


def total(value: float | None, target: float) -> MetricSample:
    return MetricSample("query", target, total=value)


def obs(current: int, *samples: MetricSample, running: int | None = None) -> Observation:
    return Observation("web", current, samples, running)


def rules(stabilization: float = 0.0, *policies: str, select: str = "max") -> Rules:
    """Rules from compact policies like `pods=4/60`."""
    parsed = []
    for text in policies:
        kind, rest = text.split("=")
        value, period = rest.split("/")
        parsed.append(RatePolicy(kind, int(value), float(period)))  # type: ignore[arg-type]
    return Rules(stabilization, tuple(parsed), select)  # type: ignore[arg-type]


# --- The calculator: one or more metrics, proportional mode -----------------------------------

CALCULATOR = [
    # HPA docs, "Algorithm details": 200m observed against 100m desired doubles the replicas...
    pytest.param(obs(2, raw("query", 200, 200, target=100)), 4, Reason.SCALE_UP, id="hpa-doc-200m-vs-100m-doubles"),
    # ...and 50m halves them.
    pytest.param(obs(4, raw("query", 50, 50, 50, 50, target=100)), 2, Reason.SCALE_DOWN, id="hpa-doc-50m-vs-100m-halves"),
    # ...and a ratio close enough to 1.0 (default tolerance 0.1) skips scaling.
    pytest.param(obs(4, raw("query", 105, 105, 105, 105, target=100)), 4, Reason.WITHIN_TOLERANCE,
                 id="hpa-doc-ratio-near-1-skips"),
    pytest.param(obs(4, raw("query", 95, 95, 95, 95, target=100)), 4, Reason.WITHIN_TOLERANCE,
                 id="within-tolerance-below"),
    # The tolerance is inclusive: exactly 10 % off is still "close enough", not decided by float noise.
    pytest.param(obs(4, cpu(55, 55, 55, 55)), 4, Reason.WITHIN_TOLERANCE, id="tolerance-boundary-above-is-within"),
    pytest.param(obs(4, cpu(45, 45, 45, 45)), 4, Reason.WITHIN_TOLERANCE, id="tolerance-boundary-below-is-within"),
    pytest.param(obs(4, cpu(56, 56, 56, 56)), 5, Reason.SCALE_UP, id="just-past-tolerance-scales-up"),
    pytest.param(obs(4, cpu(44, 44, 44, 44)), 4, Reason.WITHIN_TOLERANCE,
                 id="just-past-tolerance-down-but-ceil-keeps-4"),
    pytest.param(obs(10, cpu(44, 44, 44, 44, 44, 44, 44, 44, 44, 44)), 9, Reason.SCALE_DOWN,
                 id="just-past-tolerance-down-on-10"),
    pytest.param(obs(3, cpu(90, 90, 90)), 6, Reason.SCALE_UP, id="ceil-5.4-is-6"),
    pytest.param(obs(3, cpu(100, 100, 100)), 6, Reason.SCALE_UP, id="exact-double-is-not-rounded-up"),
    pytest.param(obs(1, cpu(100)), 2, Reason.SCALE_UP, id="one-task-at-twice-target"),
    pytest.param(obs(5, cpu(10, 10, 10, 10, 10)), 1, Reason.SCALE_DOWN, id="low-load-to-one"),
    pytest.param(obs(5, cpu(0, 0, 0, 0, 0)), 1, Reason.AT_MIN, id="idle-clamped-to-min-1"),
    pytest.param(obs(3, cpu(30, 90, 60)), 4, Reason.SCALE_UP, id="uneven-tasks-use-the-average"),
    # The highest proposal over metrics wins, whichever direction the others point.
    pytest.param(obs(3, cpu(100, 100, 100), raw("memory", 10, 10, 10, target=80)), 6, Reason.SCALE_UP,
                 id="max-over-metrics-cpu-wins"),
    pytest.param(obs(3, cpu(10, 10, 10), raw("memory", 160, 160, 160, target=80)), 6, Reason.SCALE_UP,
                 id="max-over-metrics-memory-wins"),
    pytest.param(obs(4, cpu(10, 10, 10, 10), raw("memory", 80, 80, 80, 80, target=80)), 4, Reason.WITHIN_TOLERANCE,
                 id="one-metric-on-target-holds-a-scale-down"),
    # A query that returns one value per service: its per-replica average against the target.
    pytest.param(obs(2, total(500, 100)), 5, Reason.SCALE_UP, id="query-total-500-per-100-is-5"),
    pytest.param(obs(4, total(100, 100)), 1, Reason.SCALE_DOWN, id="query-total-down"),
    pytest.param(obs(2, total(210, 100)), 2, Reason.WITHIN_TOLERANCE, id="query-total-within-tolerance"),
    pytest.param(obs(3, total(0, 100)), 1, Reason.AT_MIN, id="query-total-zero-to-min"),
    # Tasks that should exist but do not run yet (HPA's unready pods).
    pytest.param(obs(4, cpu(100, 100), running=2), 4, Reason.TASKS_STARTING, id="scale-up-in-progress-is-not-repeated"),
    pytest.param(obs(4, cpu(150, 150), running=2), 6, Reason.SCALE_UP, id="starting-tasks-count-at-zero-on-scale-up"),
    pytest.param(obs(4, cpu(10, 10), running=2), 1, Reason.SCALE_DOWN, id="starting-tasks-ignored-on-scale-down"),
    pytest.param(obs(5, cpu(30, 30, 30), running=3), 2, Reason.SCALE_DOWN, id="spec-5-running-3-sums-running-only"),
    pytest.param(obs(6, cpu(60, 60), running=2), 6, Reason.TASKS_STARTING, id="starting-tasks-flip-up-to-down"),
]


@pytest.mark.parametrize(("observation", "desired", "reason"), CALCULATOR)
def test_calculator(observation, desired, reason):
    decision = decide(observation, OPEN, History(), NOW)
    assert (decision.desired, decision.reason) == (desired, reason), decision.detail


@pytest.mark.parametrize(
    ("tolerance", "values", "desired"),
    [
        pytest.param(0.0, (51,) * 10, 11, id="zero-tolerance-acts-on-2-percent"),
        pytest.param(0.0, (50,) * 10, 10, id="zero-tolerance-holds-on-target"),
        pytest.param(0.5, (74,) * 4, 4, id="wide-tolerance-holds-48-percent-off"),
        pytest.param(0.5, (76,) * 4, 7, id="wide-tolerance-acts-past-it"),
    ],
)
def test_tolerance_is_configurable(tolerance, values, desired):
    decision = decide(obs(len(values), cpu(*values)), replace(OPEN, tolerance=tolerance), History(), NOW)
    assert decision.desired == desired


# --- Missing data: HPA's conservative assumptions -----------------------------------------------

MISSING = [
    # Scale-up: tasks without series count at 0 %, then recompute: 450 / 50 -> 9 (not 12).
    pytest.param(obs(4, cpu(150, 150, 150, missing=1)), 9, Reason.SCALE_UP, id="up-missing-at-zero"),
    # The assumption flips the direction: 120 % on one task of three becomes 40 %. Hold.
    pytest.param(obs(3, cpu(120, missing=2, target=100)), 3, Reason.MISSING_DATA_FLIPS_DIRECTION,
                 id="up-flipped-by-missing"),
    # ...or lands within the tolerance: 60 + 0 over 2 tasks is exactly the target of 30.
    pytest.param(obs(2, cpu(60, missing=1, target=30)), 2, Reason.MISSING_DATA, id="up-lands-within-tolerance"),
    # Scale-down: tasks without series count at the target: (20+20+50+50) / 50 -> 3, not 2.
    pytest.param(obs(4, cpu(20, 20, missing=2)), 3, Reason.SCALE_DOWN, id="down-missing-at-target"),
    pytest.param(obs(2, cpu(40, missing=1)), 2, Reason.MISSING_DATA, id="down-lands-within-tolerance"),
    pytest.param(obs(2, cpu(48, missing=1)), 2, Reason.WITHIN_TOLERANCE, id="within-anyway"),
    # No series at all, for any task: never scale down on missing data, and do not guess up either.
    pytest.param(obs(3, cpu(missing=3)), 3, Reason.NO_DATA, id="all-tasks-missing"),
    pytest.param(obs(3), 3, Reason.NO_DATA, id="no-metrics-observed"),
    pytest.param(obs(3, total(None, 100)), 3, Reason.NO_DATA, id="query-without-value"),
    # HPA with several metrics: one unreadable metric blocks a scale-down, not a scale-up.
    pytest.param(obs(4, cpu(5, 5, 5, 5), total(None, 100)), 4, Reason.NO_DATA, id="partial-data-blocks-down"),
    pytest.param(obs(4, cpu(100, 100, 100, 100), total(None, 100)), 8, Reason.SCALE_UP, id="partial-data-allows-up"),
    pytest.param(obs(4, cpu(50, 50, 50, 50), total(None, 100)), 4, Reason.WITHIN_TOLERANCE,
                 id="partial-data-and-on-target-holds"),
    # More tasks summed than in the spec (missing series from a task on its way out) must not
    # turn a scale-down into a scale-up.
    pytest.param(obs(2, cpu(30, 30, missing=2)), 2, Reason.MISSING_DATA_FLIPS_DIRECTION,
                 id="down-would-become-up-by-task-count"),
]


@pytest.mark.parametrize(("observation", "desired", "reason"), MISSING)
def test_missing_data(observation, desired, reason):
    decision = decide(observation, OPEN, History(), NOW)
    assert (decision.desired, decision.reason) == (desired, reason), decision.detail


def test_missing_data_is_reported_per_metric():
    decision = decide(obs(4, cpu(150, 150, 150, missing=1)), OPEN, History(), NOW)
    (metric,) = decision.metrics
    assert (metric.metric, metric.value, metric.target, metric.proposed, metric.missing) == ("cpu", 150, 50, 9, 1)
    assert "1 task(s) without series" in decision.detail


def test_no_data_records_no_recommendation():
    # HPA keeps no recommendation from a loop without metrics: nothing was measured.
    decision = decide(obs(3), OPEN, History(), NOW)
    assert decision.recommendation is None
    assert History().record(decision, NOW, OPEN).recommendations == ()


# --- Bounds --------------------------------------------------------------------------------------

BOUNDS = [
    pytest.param(obs(0, cpu()), Policy(max=10, cpu=50), 0, Reason.SCALED_TO_ZERO, id="zero-is-left-alone"),
    pytest.param(obs(0, cpu()), Policy(max=10, min=0, cpu=50), 0, Reason.SCALED_TO_ZERO, id="zero-with-min-0"),
    pytest.param(obs(12, cpu(10)), Policy(max=10, cpu=50), 10, Reason.ABOVE_MAX, id="above-max-down-to-max"),
    pytest.param(obs(12), Policy(max=10, cpu=50), 10, Reason.ABOVE_MAX, id="above-max-even-without-data"),
    pytest.param(obs(1, cpu(1)), Policy(max=10, min=3, cpu=50), 3, Reason.BELOW_MIN, id="below-min-up-to-min"),
    pytest.param(obs(10, cpu(*[100] * 10)), Policy(max=10, cpu=50), 10, Reason.AT_MAX, id="at-max-holds"),
    pytest.param(obs(8, cpu(*[100] * 8)), replace(OPEN, max=10), 10, Reason.AT_MAX, id="clamped-to-max"),
    pytest.param(obs(3, cpu(1, 1, 1)), replace(OPEN, min=3), 3, Reason.AT_MIN, id="at-min-holds"),
    pytest.param(obs(6, cpu(*[1] * 6)), replace(OPEN, min=2), 2, Reason.AT_MIN, id="clamped-to-min"),
    pytest.param(obs(6, cpu(*[1] * 6)), replace(OPEN, min=0), 1, Reason.SCALE_DOWN, id="min-0-still-keeps-ceil"),
]


@pytest.mark.parametrize(("observation", "policy", "desired", "reason"), BOUNDS)
def test_bounds(observation, policy, desired, reason):
    decision = decide(observation, policy, History(), NOW)
    assert (decision.desired, decision.reason) == (desired, reason), decision.detail


def test_out_of_bounds_ignores_cooldown_and_windows():
    policy = Policy(max=10, cpu=50, cooldown=600)
    history = History((Recommendation(NOW - 10, 12),), (ScaleEvent(NOW - 5, 11, 12),), NOW - 5)
    assert decide(obs(12, cpu(*[100] * 12)), policy, history, NOW).desired == 10


# --- Stabilization windows -----------------------------------------------------------------------

DOWN_300 = replace(OPEN, scale_down=rules(300, "percent=100/15"))
UP_60 = replace(OPEN, scale_up=rules(60, "percent=100000/15"))
RECENT = (Recommendation(NOW - 290, 10), Recommendation(NOW - 200, 8), Recommendation(NOW - 100, 6))

STABILIZATION = [
    # HPA docs: on a scale-down, the highest recommendation of the last 5 minutes is used.
    pytest.param(DOWN_300, RECENT, NOW, 10, 10, Reason.STABILIZED, id="hpa-doc-down-highest-in-window-holds"),
    pytest.param(DOWN_300, RECENT, NOW + 20, 10, 8, Reason.STABILIZED, id="down-oldest-left-the-window"),
    pytest.param(DOWN_300, RECENT, NOW + 201, 10, 4, Reason.SCALE_DOWN, id="down-window-empty"),
    pytest.param(DOWN_300, (Recommendation(NOW - 300, 10),), NOW, 10, 4, Reason.SCALE_DOWN,
                 id="recommendation-at-the-cutoff-is-outside"),
    pytest.param(OPEN, RECENT, NOW, 10, 4, Reason.SCALE_DOWN, id="no-window-no-stabilization"),
    # A scale-down window never holds a scale-up back.
    pytest.param(DOWN_300, RECENT, NOW, 3, 4, Reason.SCALE_UP, id="down-window-ignores-up"),
    # On a scale-up, the lowest recommendation of the up window is used.
    pytest.param(UP_60, (Recommendation(NOW - 30, 3),), NOW, 2, 3, Reason.STABILIZED, id="up-lowest-in-window"),
    pytest.param(UP_60, (Recommendation(NOW - 30, 2),), NOW, 2, 2, Reason.STABILIZED, id="up-window-holds"),
    pytest.param(UP_60, (Recommendation(NOW - 60, 2),), NOW, 2, 4, Reason.SCALE_UP, id="up-window-expired"),
    pytest.param(UP_60, (Recommendation(NOW - 30, 9),), NOW, 2, 4, Reason.SCALE_UP, id="up-window-higher-is-no-limit"),
]


@pytest.mark.parametrize(("policy", "recommendations", "now", "current", "desired", "reason"), STABILIZATION)
def test_stabilization(policy, recommendations, now, current, desired, reason):
    # The metrics ask for 4 replicas (cpu 100 % on 2 tasks' worth of load, against 50 %).
    load = 200 / current
    decision = decide(obs(current, cpu(*[load] * current)), policy, History(recommendations), now)
    assert decision.recommendation == 4
    assert (decision.desired, decision.reason) == (desired, reason), decision.detail


# --- Rate limits: HPA's scaling policies ---------------------------------------------------------

HPA_DOC_DOWN = rules(0, "pods=4/60", "percent=10/60")
RATES = [
    # HPA docs: pods 4/60s and percent 10/60s, select max: from 80, the percent policy removes 8...
    pytest.param(HPA_DOC_DOWN, 80, 10, (), 72, Reason.RATE_LIMITED, id="hpa-doc-80-removes-8"),
    # ...and within the same minute nothing more...
    pytest.param(HPA_DOC_DOWN, 72, 10, (ScaleEvent(NOW - 30, 80, 72),), 72, Reason.RATE_LIMITED,
                 id="hpa-doc-same-period-holds"),
    # ...then from 72, 10 % is 7.2, rounded up to 8 replicas removed...
    pytest.param(HPA_DOC_DOWN, 72, 10, (ScaleEvent(NOW - 61, 80, 72),), 64, Reason.RATE_LIMITED,
                 id="hpa-doc-72-removes-8"),
    # ...and below 40 replicas the pods policy removes 4 at a time.
    pytest.param(HPA_DOC_DOWN, 30, 10, (), 26, Reason.RATE_LIMITED, id="hpa-doc-below-40-pods-wins"),
    pytest.param(HPA_DOC_DOWN, 12, 10, (), 10, Reason.SCALE_DOWN, id="within-the-allowance"),
    # select min picks the policy that changes the least.
    pytest.param(rules(0, "pods=4/60", "percent=10/60", select="min"), 80, 10, (), 76, Reason.RATE_LIMITED,
                 id="select-min-removes-4"),
    # HPA docs: 10 % per minute...
    pytest.param(rules(0, "percent=10/60"), 100, 10, (), 90, Reason.RATE_LIMITED, id="hpa-doc-percent-10-per-minute"),
    # ...plus "no more than 5 pods per minute" with select min.
    pytest.param(rules(0, "percent=10/60", "pods=5/60", select="min"), 100, 10, (), 95, Reason.RATE_LIMITED,
                 id="hpa-doc-at-most-5-per-minute"),
    pytest.param(rules(0, "percent=10/60", "pods=5/60", select="min"), 20, 10, (), 18, Reason.RATE_LIMITED,
                 id="at-most-5-but-10-percent-smaller"),
    # Events of the other direction count too: the period starts from where it started.
    pytest.param(rules(0, "percent=50/60"), 8, 2, (ScaleEvent(NOW - 5, 4, 8),), 2, Reason.SCALE_DOWN,
                 id="down-period-counts-the-scale-up"),
    pytest.param(rules(0, "pods=2/60"), 8, 2, (ScaleEvent(NOW - 20, 10, 9), ScaleEvent(NOW - 10, 9, 8)), 8,
                 Reason.RATE_LIMITED, id="two-events-use-the-allowance"),
    pytest.param(rules(0, "pods=2/60"), 8, 2, (ScaleEvent(NOW - 60, 10, 8),), 6, Reason.RATE_LIMITED,
                 id="event-at-the-period-edge-is-outside"),
    pytest.param(rules(0, "pods=1/15", select="disabled"), 8, 2, (), 8, Reason.SCALING_DISABLED,
                 id="hpa-doc-scale-down-disabled"),
]


@pytest.mark.parametrize(("down", "current", "wanted", "events", "desired", "reason"), RATES)
def test_scale_down_rate_limits(down, current, wanted, events, desired, reason):
    policy = replace(OPEN, scale_down=down, min=1)
    load = wanted * 50 / current
    decision = decide(obs(current, cpu(*[load] * current)), policy, History((), events), NOW)
    assert decision.recommendation == wanted
    assert (decision.desired, decision.reason) == (desired, reason), decision.detail


UP_RATES = [
    # HPA's default: add max(4 pods, 100 %) per 15 s.
    pytest.param(DEFAULT_SCALE_UP, 1, 50, (), 5, Reason.RATE_LIMITED, id="hpa-default-from-1-adds-4"),
    pytest.param(DEFAULT_SCALE_UP, 10, 50, (), 20, Reason.RATE_LIMITED, id="hpa-default-from-10-doubles"),
    pytest.param(DEFAULT_SCALE_UP, 5, 50, (ScaleEvent(NOW - 10, 1, 5),), 5, Reason.RATE_LIMITED,
                 id="hpa-default-allowance-used"),
    pytest.param(DEFAULT_SCALE_UP, 5, 50, (ScaleEvent(NOW - 15, 1, 5),), 10, Reason.RATE_LIMITED,
                 id="hpa-default-next-period"),
    pytest.param(DEFAULT_SCALE_UP, 3, 6, (), 6, Reason.SCALE_UP, id="within-the-allowance"),
    # HPA docs: 900 % lets 1 replica become 10 at once.
    pytest.param(rules(0, "percent=900/60"), 1, 50, (), 10, Reason.RATE_LIMITED, id="hpa-doc-900-percent"),
    # The percent allowance is rounded up, or 3 replicas could never grow by 10 %.
    pytest.param(rules(0, "percent=10/60"), 3, 50, (), 4, Reason.RATE_LIMITED, id="percent-rounds-up"),
    pytest.param(rules(0, "pods=1/60", "percent=50/60", select="min"), 4, 50, (), 5, Reason.RATE_LIMITED,
                 id="select-min-up"),
    # A scale-down inside the period gives its replicas back to the allowance.
    pytest.param(rules(0, "pods=2/60"), 4, 50, (ScaleEvent(NOW - 30, 6, 4),), 8, Reason.RATE_LIMITED,
                 id="up-period-counts-the-scale-down"),
    # An allowance already exceeded never turns into a scale-down.
    pytest.param(rules(0, "pods=1/60"), 10, 50, (ScaleEvent(NOW - 30, 2, 10),), 10, Reason.RATE_LIMITED,
                 id="exceeded-allowance-holds"),
    pytest.param(rules(0, "pods=4/15", select="disabled"), 2, 50, (), 2, Reason.SCALING_DISABLED,
                 id="scale-up-disabled"),
]


@pytest.mark.parametrize(("up", "current", "wanted", "events", "desired", "reason"), UP_RATES)
def test_scale_up_rate_limits(up, current, wanted, events, desired, reason):
    policy = replace(OPEN, scale_up=up, max=1000)
    load = wanted * 50 / current
    decision = decide(obs(current, cpu(*[load] * current)), policy, History((), events), NOW)
    assert decision.recommendation == wanted
    assert (decision.desired, decision.reason) == (desired, reason), decision.detail


def test_rate_limit_then_max_says_at_max():
    # Both limit a scale-up from 8: the rate allows 16, max allows 10, and max is the reason.
    policy = replace(OPEN, max=10, scale_up=DEFAULT_SCALE_UP)
    decision = decide(obs(8, cpu(*[200] * 8)), policy, History(), NOW)
    assert (decision.desired, decision.reason) == (10, Reason.AT_MAX)


def test_hpa_default_behaviour_end_to_end():
    """HPA's defaults over time: fast up within the rate, slow down after a 5-minute window."""
    policy = Policy(max=50, cpu=50)
    history, now, replicas, trail = History.after_restart(2, NOW), NOW, 2, []
    busy = 1000.0  # total CPU %: wants ceil(1000 / 50) = 20 replicas
    for _ in range(6):
        now += 15
        decision = decide(obs(replicas, cpu(*[busy / replicas] * replicas)), policy, history, now)
        history, replicas = history.record(decision, now, policy), decision.desired
        trail.append(replicas)
    assert trail == [6, 12, 20, 20, 20, 20]  # +4, then doubling, then on target

    quiet_since, idle = now, 100.0  # wants 2 replicas
    while replicas > 2:
        now += 15
        decision = decide(obs(replicas, cpu(*[idle / replicas] * replicas)), policy, history, now)
        history, replicas = history.record(decision, now, policy), decision.desired
        if now - quiet_since < 300:
            assert replicas == 20, f"scaled down {now - quiet_since}s after the load stopped"
    assert now - quiet_since == 300


# --- Cooldown ------------------------------------------------------------------------------------

COOL = replace(OPEN, cooldown=60.0)
COOLDOWN = [
    pytest.param(NOW - 30, obs(2, cpu(100, 100)), 2, Reason.COOLDOWN, id="up-held-in-cooldown"),
    pytest.param(NOW - 30, obs(4, cpu(5, 5, 5, 5)), 4, Reason.COOLDOWN, id="down-held-in-cooldown"),
    pytest.param(NOW - 60, obs(2, cpu(100, 100)), 4, Reason.SCALE_UP, id="cooldown-over"),
    pytest.param(None, obs(2, cpu(100, 100)), 4, Reason.SCALE_UP, id="never-scaled"),
    pytest.param(NOW - 30, obs(2, cpu(50, 50)), 2, Reason.WITHIN_TOLERANCE, id="hold-is-not-cooldown"),
    pytest.param(NOW - 30, obs(1000, cpu(*[100] * 1000)), 1000, Reason.AT_MAX, id="at-max-wins-over-cooldown"),
]


@pytest.mark.parametrize(("last", "observation", "desired", "reason"), COOLDOWN)
def test_cooldown(last, observation, desired, reason):
    decision = decide(observation, COOL, History(last_scale_at=last), NOW)
    assert (decision.desired, decision.reason) == (desired, reason), decision.detail


def test_cooldown_still_records_the_recommendation():
    decision = decide(obs(2, cpu(100, 100)), COOL, History(last_scale_at=NOW - 30), NOW)
    assert decision.recommendation == 4


# --- Step mode -----------------------------------------------------------------------------------

STEP = replace(OPEN, mode="step", step=Step(high=85, low=25, size=1))
STEPS = [
    pytest.param(STEP, obs(3, cpu(90, 90, 90)), 4, Reason.SCALE_UP, id="above-high-adds-size"),
    pytest.param(STEP, obs(3, cpu(20, 20, 20)), 2, Reason.SCALE_DOWN, id="below-low-removes-size"),
    pytest.param(STEP, obs(3, cpu(50, 50, 50)), 3, Reason.WITHIN_THRESHOLDS, id="between-holds"),
    pytest.param(STEP, obs(3, cpu(85, 85, 85)), 3, Reason.WITHIN_THRESHOLDS, id="at-high-holds"),
    pytest.param(STEP, obs(3, cpu(25, 25, 25)), 3, Reason.WITHIN_THRESHOLDS, id="at-low-holds"),
    pytest.param(STEP, obs(3, cpu(300, 300, 300)), 4, Reason.SCALE_UP, id="one-step-however-high"),
    pytest.param(replace(STEP, step=Step(85, 25, 3)), obs(3, cpu(90, 90, 90)), 6, Reason.SCALE_UP, id="size-3"),
    pytest.param(replace(STEP, step=Step(85, 25, 3), max=5), obs(3, cpu(90, 90, 90)), 5, Reason.AT_MAX,
                 id="size-clamped-to-max"),
    pytest.param(replace(STEP, step=Step(85, 25, 3), min=2), obs(3, cpu(5, 5, 5)), 2, Reason.AT_MIN,
                 id="size-clamped-to-min"),
    pytest.param(STEP, obs(1, cpu(5)), 1, Reason.AT_MIN, id="never-below-min"),
    # Any metric above high scales up; a scale-down needs every metric below low.
    pytest.param(STEP, obs(3, cpu(90, 90, 90), raw("memory", 10, 10, 10, target=80)), 4, Reason.SCALE_UP,
                 id="any-metric-above-high"),
    pytest.param(STEP, obs(3, cpu(10, 10, 10), raw("memory", 50, 50, 50, target=80)), 3,
                 Reason.WITHIN_THRESHOLDS, id="down-needs-all-metrics-low"),
    # Missing data, as in proportional mode.
    pytest.param(STEP, obs(3, cpu(90, 90, missing=1)), 3, Reason.MISSING_DATA, id="up-missing-counts-at-zero"),
    pytest.param(STEP, obs(3, cpu(200, 200, missing=1)), 4, Reason.SCALE_UP, id="up-despite-missing"),
    pytest.param(STEP, obs(4, cpu(90, missing=3)), 4, Reason.MISSING_DATA_FLIPS_DIRECTION,
                 id="up-missing-flips"),
    pytest.param(STEP, obs(3, cpu(10, 10, missing=1)), 3, Reason.MISSING_DATA, id="down-missing-counts-at-high"),
    pytest.param(STEP, obs(4, cpu(0, 0, 0, missing=1)), 3, Reason.SCALE_DOWN, id="down-despite-missing"),
    pytest.param(STEP, obs(3, cpu(missing=3)), 3, Reason.NO_DATA, id="no-data"),
    pytest.param(STEP, obs(4, cpu(90, 90), running=2), 4, Reason.TASKS_STARTING, id="up-with-tasks-starting"),
    # A query in step mode: its per-replica value against the thresholds.
    pytest.param(replace(STEP, step=Step(100, 20, 2)), obs(2, total(300, 1)), 4, Reason.SCALE_UP, id="query-up"),
    pytest.param(replace(STEP, step=Step(100, 20, 2)), obs(4, total(40, 1)), 2, Reason.SCALE_DOWN, id="query-down"),
]


@pytest.mark.parametrize(("policy", "observation", "desired", "reason"), STEPS)
def test_step_mode(policy, observation, desired, reason):
    decision = decide(observation, policy, History(), NOW)
    assert (decision.desired, decision.reason) == (desired, reason), decision.detail


def test_step_mode_uses_the_same_windows():
    # A threshold autoscaler flaps; the default scale-down window is what stops it.
    policy = replace(STEP, scale_down=DEFAULT_SCALE_DOWN)
    history = History((Recommendation(NOW - 100, 4),))
    assert decide(obs(3, cpu(10, 10, 10)), policy, history, NOW).reason == Reason.STABILIZED


def test_alert_mode_only_holds():
    policy = replace(OPEN, mode="alert")
    decision = decide(obs(3, cpu(100, 100, 100)), policy, History(), NOW)
    assert (decision.desired, decision.reason) == (3, Reason.ALERT_ONLY)
    assert decide(obs(30, cpu(1)), replace(policy, max=10), History(), NOW).desired == 10  # bounds still apply


# --- Restart and the stored state ----------------------------------------------------------------


def test_restart_never_scales_down_before_the_window():
    policy = Policy(max=10, cpu=50)  # default 300 s scale-down window
    history = History.after_restart(8, NOW)
    quiet = obs(8, cpu(*[5] * 8))
    assert decide(quiet, policy, history, NOW + 15).reason == Reason.STABILIZED
    assert decide(quiet, policy, history, NOW + 299).desired == 8
    assert decide(quiet, policy, history, NOW + 300).desired == 1


def test_restart_still_scales_up_at_once():
    history = History.after_restart(2, NOW)
    assert decide(obs(2, cpu(100, 100)), Policy(max=10, cpu=50), history, NOW + 15).desired == 4


def test_restart_keeps_cooldown_and_rate_limits_from_the_label():
    policy = Policy(max=20, cpu=50, cooldown=120, scale_up=rules(0, "pods=2/300"))
    before = History().record(
        Decision("web", 2, 3, Reason.SCALE_UP, "", recommendation=3), NOW, policy
    )
    label = before.encode()
    restored = History.after_restart(3, NOW + 60, History.decode(label))
    busy = obs(3, cpu(100, 100, 100))
    assert decide(busy, policy, restored, NOW + 60).reason == Reason.COOLDOWN
    # The scale from 2 to 3 still counts against the 2 pods per 300 s: 4, not 5.
    after_cooldown = decide(busy, policy, restored, NOW + 120)
    assert (after_cooldown.desired, after_cooldown.reason) == (4, Reason.RATE_LIMITED)
    assert decide(busy, policy, restored, NOW + 300).desired == 5


def test_record_appends_and_trims():
    policy = replace(OPEN, scale_down=rules(300, "pods=1/60"), scale_up=rules(0, "pods=1/30"))
    old = History(
        (Recommendation(NOW - 400, 9), Recommendation(NOW - 100, 7)),
        (ScaleEvent(NOW - 90, 9, 8), ScaleEvent(NOW - 30, 8, 7)),
        NOW - 30,
    )
    new = old.record(Decision("web", 7, 6, Reason.SCALE_DOWN, "", recommendation=5), NOW, policy)
    assert new.recommendations == (Recommendation(NOW - 100, 7), Recommendation(NOW, 5))
    assert new.events == (ScaleEvent(NOW - 30, 8, 7), ScaleEvent(NOW, 7, 6))
    assert new.last_scale_at == NOW
    held = old.record(Decision("web", 7, 7, Reason.STABILIZED, "", recommendation=5), NOW, policy)
    assert held.last_scale_at == NOW - 30
    assert held.events == (ScaleEvent(NOW - 30, 8, 7),)


@pytest.mark.parametrize(
    "history",
    [
        pytest.param(History(), id="empty"),
        pytest.param(History(last_scale_at=NOW), id="last-only"),
        pytest.param(History((), (ScaleEvent(NOW - 15.25, 2, 6), ScaleEvent(NOW, 6, 12)), NOW), id="events"),
        pytest.param(History((), (ScaleEvent(NOW + 0.001, 6, 3),), NOW + 0.001), id="milliseconds"),
    ],
)
def test_state_round_trip(history):
    assert History.decode(history.encode()) == history


def test_state_is_compact():
    history = History((Recommendation(NOW, 3),), (ScaleEvent(NOW - 15, 2, 6), ScaleEvent(NOW, 6, 12)), NOW)
    assert history.encode() == "v1;last=1700000000;events=1699999985:2>6,1700000000:6>12"


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("v2;last=1", id="unknown-version"),
        pytest.param("v1;last=soon", id="bad-time"),
        pytest.param("v1;events=1:2-3", id="bad-event"),
        pytest.param("v1;events=1:2>3,", id="trailing-comma"),
        pytest.param("v1;who=me", id="unknown-part"),
        pytest.param('{"last": 1}', id="json"),
    ],
)
def test_state_rejects_damage(text):
    with pytest.raises(ValueError, match="autoscaler state"):
        History.decode(text)


# --- Alerts --------------------------------------------------------------------------------------

ALERT_POLICY = Policy(max=10, min=2, cpu=50, cooldown=60)
ALERTS = [
    pytest.param("scale_up", 1, 3, History(), 4, Reason.ALERT_SCALE_UP, id="up-by-1"),
    pytest.param("scale_up", 3, 3, History(), 6, Reason.ALERT_SCALE_UP, id="up-by-step"),
    pytest.param("scale_up", 5, 8, History(), 10, Reason.ALERT_SCALE_UP, id="up-clamped-to-max"),
    pytest.param("scale_up", 1, 10, History(), 10, Reason.AT_MAX, id="up-at-max"),
    pytest.param("scale_down", 1, 3, History(), 2, Reason.ALERT_SCALE_DOWN, id="down-by-1"),
    pytest.param("scale_down", 5, 4, History(), 2, Reason.ALERT_SCALE_DOWN, id="down-clamped-to-min"),
    pytest.param("scale_down", 1, 2, History(), 2, Reason.AT_MIN, id="down-at-min"),
    pytest.param("scale_up", 1, 3, History(last_scale_at=NOW - 10), 3, Reason.COOLDOWN, id="cooldown"),
    pytest.param("scale_up", 1, 3, History(last_scale_at=NOW - 60), 4, Reason.ALERT_SCALE_UP, id="after-cooldown"),
    pytest.param("scale_up", 1, 0, History(), 0, Reason.SCALED_TO_ZERO, id="zero-left-alone"),
    pytest.param("scale_down", 1, 12, History(), 10, Reason.ABOVE_MAX, id="above-max-brought-to-max"),
]


@pytest.mark.parametrize(("action", "step", "current", "history", "desired", "reason"), ALERTS)
def test_alerts(action, step, current, history, desired, reason):
    decision = decide_alert(action, step, current, ALERT_POLICY, history, NOW, service="web")
    assert (decision.desired, decision.reason) == (desired, reason), decision.detail


def test_alert_respects_disabled_direction():
    policy = replace(ALERT_POLICY, scale_down=replace(DEFAULT_SCALE_DOWN, select="disabled"))
    assert decide_alert("scale_down", 1, 5, policy, History(), NOW).reason == Reason.SCALING_DISABLED
    assert decide_alert("scale_up", 1, 5, policy, History(), NOW).desired == 6


def test_alert_scale_up_is_not_undone_by_the_next_loop():
    policy = Policy(max=10, cpu=50)
    history = History.after_restart(3, NOW - 600)
    alert = decide_alert("scale_up", 3, 3, policy, history, NOW)
    history = history.record(alert, NOW, policy)
    quiet = decide(obs(6, cpu(*[25] * 6)), policy, history, NOW + 15)
    assert (quiet.desired, quiet.reason) == (6, Reason.STABILIZED)


@pytest.mark.parametrize(
    ("action", "step"),
    [pytest.param("scale_sideways", 1, id="bad-action"), pytest.param("scale_up", 0, id="step-0")],
)
def test_alert_rejects_bad_input(action, step):
    with pytest.raises(ValueError):
        decide_alert(action, step, 3, ALERT_POLICY, History(), NOW)


# --- Capacity ------------------------------------------------------------------------------------

UP = Decision("web", 4, 8, Reason.SCALE_UP, "cpu", recommendation=8)
DOWN = Decision("web", 4, 2, Reason.SCALE_DOWN, "cpu", recommendation=2)
HOLD = Decision("web", 4, 4, Reason.WITHIN_TOLERANCE, "cpu", recommendation=4)


@pytest.mark.parametrize(
    ("decision", "unschedulable", "desired", "reason"),
    [
        pytest.param(UP, 2, 4, Reason.CAPACITY, id="up-stops"),
        pytest.param(UP, 0, 8, Reason.SCALE_UP, id="up-fits"),
        pytest.param(DOWN, 2, 2, Reason.SCALE_DOWN, id="down-unaffected"),
        pytest.param(HOLD, 2, 4, Reason.WITHIN_TOLERANCE, id="hold-unaffected"),
    ],
)
def test_cap_to_capacity(decision, unschedulable, desired, reason):
    capped = cap_to_capacity(decision, unschedulable)
    assert (capped.desired, capped.reason, capped.recommendation) == (desired, reason, decision.recommendation)


# --- The decision's shape ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "desired", "direction"),
    [pytest.param(2, 4, "up", id="up"), pytest.param(4, 2, "down", id="down"), pytest.param(3, 3, "none", id="none")],
)
def test_direction(current, desired, direction):
    decision = Decision("web", current, desired, Reason.SCALE_UP, "")
    assert decision.direction == direction
    assert decision.changed == (direction != "none")


def test_log_fields():
    decision = decide(obs(2, cpu(100, 100)), OPEN, History(), NOW)
    assert decision.as_dict() == {
        "service": "web",
        "from": 2,
        "to": 4,
        "direction": "up",
        "reason": "scale_up",
        "detail": "cpu 100%/50% -> 4",
        "metrics": [{"metric": "cpu", "value": 100.0, "target": 50, "proposed": 4, "missing": 0}],
    }


def test_reasons_are_stable_strings():
    assert [str(r) for r in Reason][:6] == [
        "scale_up", "scale_down", "within_tolerance", "within_thresholds", "stabilized", "rate_limited",
    ]
    assert Reason("missing_data_flips_direction") is Reason.MISSING_DATA_FLIPS_DIRECTION
