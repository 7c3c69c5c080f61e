"""The scaling decision: given what was observed, the policy and the recent past, how many replicas, and why.

This is HPA's replica calculator and its behaviour normalisation as one pure function over plain
frozen data; the daemon fetches the inputs, logs the `Decision` and writes the result. Times
are Unix seconds (wall clock, not monotonic), because scale events are stored on the service and
read back by another process, or after a restart.

The pipeline, in order:
1. bounds: a service outside [min, max] is brought inside at once (as HPA does), and one that
   someone scaled to 0 is left alone (HPA's "autoscaling disabled" at 0 replicas);
2. per metric: proportional `ceil(tasks × value / target)`, or step thresholds; missing series
   are handled as HPA does; a metric with a non-finite or negative value has no data this time
   (it can hold a scale-down back, never cause one); the maximum over metrics is the recommendation;
3. stabilization: scale up to at most the lowest, and down to at least the highest, of the
   recommendations inside the up and down windows;
4. rate limits: HPA's pods/percent per period policies, counting the scale events in each period;
5. the min/max clamp, then the cooldown after the last scale.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Literal

from autoscaler.policy import Policy, Rules
from swarmshift.config import format_duration

# Ratios this close to the tolerance count as inside it, so that `55 %` against a 50 % target
# with a 0.1 tolerance is not decided by the last bit of a float.
_EPSILON = 1e-9


class Reason(StrEnum):
    """Why a decision came out as it did; stable codes for logs, metrics and `plan`."""

    SCALE_UP = "scale_up"
    SCALE_DOWN = "scale_down"
    WITHIN_TOLERANCE = "within_tolerance"  # every metric is within the tolerance of its target
    WITHIN_THRESHOLDS = "within_thresholds"  # step mode: between step.low and step.high
    STABILIZED = "stabilized"  # a stabilization window holds the recommendation back
    RATE_LIMITED = "rate_limited"  # the scale-up or scale-down policies allow no more in this period
    SCALING_DISABLED = "scaling_disabled"  # select: disabled for this direction
    COOLDOWN = "cooldown"  # the last scale was less than `cooldown` ago
    AT_MAX = "at_max"  # metrics want more, the policy's max does not allow it
    AT_MIN = "at_min"
    ABOVE_MAX = "above_max"  # replicas were above max: brought down to max, whatever the metrics say
    BELOW_MIN = "below_min"
    NO_DATA = "no_data"  # no usable metric, or a metric missing while the others say scale down
    MISSING_DATA = "missing_data"  # assuming values for tasks without series removes the reason to act
    MISSING_DATA_FLIPS_DIRECTION = "missing_data_flips_direction"
    TASKS_STARTING = "tasks_starting"  # counting not-yet-running tasks at 0 % removes the reason to scale up
    SCALED_TO_ZERO = "scaled_to_zero"  # 0 replicas: someone turned the service off; leave it off
    ALERT_ONLY = "alert_only"  # mode: alert; only webhooks scale this service
    ALERT_SCALE_UP = "alert_scale_up"
    ALERT_SCALE_DOWN = "alert_scale_down"
    CAPACITY = "capacity"  # tasks are pending for lack of a suitable node; more would not run


# The reasons that a metric's own proposal can carry, most informative first: when several
# metrics hold the service where it is, the decision names the one that explains the most.
_HOLD_PRIORITY = (
    Reason.MISSING_DATA_FLIPS_DIRECTION,
    Reason.MISSING_DATA,
    Reason.TASKS_STARTING,
    Reason.WITHIN_THRESHOLDS,
    Reason.WITHIN_TOLERANCE,
)


# --- Inputs --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricSample:
    """One metric of one service, as the metrics source saw it.

    Per-task metrics (`cpu`, `memory`: utilisation in % of the task's limit) set `values`, one
    per running task that has a series, and `missing`, the running tasks that have none. A
    service-level metric (`query`) sets `total` instead, which is compared per replica:
    `total / current` against `target`. No values and no total means no data at all.
    """

    metric: str
    target: float
    values: tuple[float, ...] = ()
    missing: tuple[str, ...] = ()
    total: float | None = None


@dataclass(frozen=True)
class Observation:
    """A service at one moment: its replicas (the spec), how many tasks run, and its metrics.

    `running` is the number of tasks in state running; None means all `current` are. Tasks
    that should exist but do not run yet are counted at 0 % when deciding a scale-up (HPA's
    treatment of unready pods), so that a scale-up in progress is not repeated.
    """

    service: str
    current: int
    metrics: tuple[MetricSample, ...] = ()
    running: int | None = None

    @property
    def not_running(self) -> int:
        return 0 if self.running is None else max(0, self.current - self.running)


@dataclass(frozen=True)
class Recommendation:
    at: float
    replicas: int


@dataclass(frozen=True)
class ScaleEvent:
    at: float
    before: int
    after: int


_STATE_VERSION = "v1"
_EVENT = re.compile(r"(\d+(?:\.\d+)?):(\d+)>(\d+)")


def _time(t: float) -> str:
    return f"{t:.3f}".rstrip("0").rstrip(".")


@dataclass(frozen=True)
class History:
    """What the decision needs to remember about a service.

    - `recommendations`: the unstabilized recommendations of recent loops, for the windows.
      They live in the daemon's memory only.
    - `events`: recent scale events, for the rate-limit periods, and `last_scale_at`, for the
      cooldown. These are stored on the service (`encode()`, in the label policy.STATE_LABEL)
      in the same update as the replica change, so a restarted daemon, or a second one, sees
      exactly the scales that happened.

    An empty history is not a safe start: use `after_restart`.
    """

    recommendations: tuple[Recommendation, ...] = ()
    events: tuple[ScaleEvent, ...] = ()
    last_scale_at: float | None = None

    @classmethod
    def after_restart(cls, current: int, now: float, saved: History | None = None) -> History:
        """The history of a service this process has not seen before.

        Like HPA, seed the windows with the current replica count as if it had been recommended
        just now: no scale-down can happen before the scale-down window has passed since the
        restart, because the daemon no longer knows what the metrics said before it. `saved` is
        the decoded state label; its events and last scale time carry the rate limits and the
        cooldown across the restart.
        """
        saved = saved or cls()
        return replace(saved, recommendations=(Recommendation(now, current),))

    def record(self, decision: Decision, now: float, policy: Policy) -> History:
        """This history after `decision` was carried out at `now`, trimmed to what `policy` still needs."""
        keep_recommendations = max(policy.scale_up.stabilization, policy.scale_down.stabilization)
        periods = [p.period for p in (*policy.scale_up.policies, *policy.scale_down.policies)]
        keep_events = max(periods, default=0.0)
        recommendations = tuple(r for r in self.recommendations if r.at > now - keep_recommendations)
        if decision.recommendation is not None:
            recommendations += (Recommendation(now, decision.recommendation),)
        events = tuple(e for e in self.events if e.at > now - keep_events)
        last = self.last_scale_at
        if decision.desired != decision.current:
            events += (ScaleEvent(now, decision.current, decision.desired),)
            last = now
        return History(recommendations, events, last)

    def encode(self) -> str:
        """The persistent part, compactly, for a label: `v1;last=1700000015;events=1700000000:2>4,...`."""
        parts = [_STATE_VERSION]
        if self.last_scale_at is not None:
            parts.append(f"last={_time(self.last_scale_at)}")
        if self.events:
            parts.append("events=" + ",".join(f"{_time(e.at)}:{e.before}>{e.after}" for e in self.events))
        return ";".join(parts)

    @classmethod
    def decode(cls, text: str) -> History:
        """The persistent part back from `encode()`; ValueError if the label is not ours or is damaged."""
        parts = text.strip().split(";")
        if parts[0] != _STATE_VERSION:
            raise ValueError(f"autoscaler state: unknown format (got {text!r})")
        last: float | None = None
        events: list[ScaleEvent] = []
        for part in parts[1:]:
            key, _, value = part.partition("=")
            if key == "last":
                try:
                    last = float(value)
                except ValueError:
                    raise ValueError(f"autoscaler state: bad last scale time (got {text!r})") from None
            elif key == "events":
                for item in value.split(",") if value else ():
                    match = _EVENT.fullmatch(item)
                    if not match:
                        raise ValueError(f"autoscaler state: bad event {item!r} (got {text!r})")
                    events.append(ScaleEvent(float(match.group(1)), int(match.group(2)), int(match.group(3))))
            else:
                raise ValueError(f"autoscaler state: unknown part {part!r} (got {text!r})")
        return cls((), tuple(events), last)


# --- Output --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricResult:
    """One metric's part in a decision: its value, its target and the replicas it alone asks for.

    `value` is the average utilisation over the tasks with series (cpu, memory) or the value per
    replica (query); None, like `proposed`, means there was no data.
    """

    metric: str
    value: float | None
    target: float
    proposed: int | None
    missing: int = 0
    reason: Reason | None = None
    invalid: int = 0  # non-finite or negative values the source gave, which void the metric


Direction = Literal["up", "down", "none"]


@dataclass(frozen=True)
class Decision:
    """The outcome for one service: replicas now and wanted, a reason code and a sentence for people.

    `recommendation` is what the metrics asked for before stabilization and limits; the daemon
    passes the decision to `History.record`, which keeps it for the windows.
    """

    service: str
    current: int
    desired: int
    reason: Reason
    detail: str
    metrics: tuple[MetricResult, ...] = ()
    recommendation: int | None = None

    @property
    def direction(self) -> Direction:
        if self.desired > self.current:
            return "up"
        if self.desired < self.current:
            return "down"
        return "none"

    @property
    def changed(self) -> bool:
        return self.desired != self.current

    def as_dict(self) -> dict:
        """Fields for one JSON log line."""
        return {
            "service": self.service,
            "from": self.current,
            "to": self.desired,
            "direction": self.direction,
            "reason": str(self.reason),
            "detail": self.detail,
            "metrics": [
                # JSON has no infinity: finite values that overflow in a sum are shown as none.
                {"metric": m.metric, "value": m.value if m.value is None or math.isfinite(m.value) else None,
                 "target": m.target, "proposed": m.proposed, "missing": m.missing}
                for m in self.metrics
            ],
        }


# --- Per metric ----------------------------------------------------------------------------------


# Far above any max: what a ratio that overflowed to infinity asks for, before the max clamps it.
_HUGE = 2**31


def _ceil(x: float) -> int:
    # Finite inputs can still overflow to inf in a sum; math.ceil(inf) would raise.
    return math.ceil(x - _EPSILON) if math.isfinite(x) else _HUGE


def _valid(value: float) -> bool:
    return math.isfinite(value) and value >= 0


def _void_invalid(sample: MetricSample) -> tuple[MetricSample, int]:
    """The sample with no data if any of its values is non-finite or negative, and how many were.

    +Inf, NaN or a negative utilisation is a broken exporter or query, not a load: counting it as
    no data lets it hold a scale-down back (the loop's rule for a metric without data), never
    cause a scale in either direction.
    """
    bad = sum(1 for v in sample.values if not _valid(v))
    if sample.total is not None and not _valid(sample.total):
        bad += 1
    if not bad:
        return sample, 0
    return replace(sample, values=(), total=None, missing=sample.missing + tuple("?" * len(sample.values))), bad


def _within(ratio: float, tolerance: float) -> bool:
    return abs(ratio - 1.0) <= tolerance + _EPSILON


def _proportional(sample: MetricSample, current: int, not_running: int, tolerance: float) -> MetricResult:
    """HPA's replica calculator for one metric."""
    target = sample.target
    if sample.total is not None:
        # A value for the whole service (HPA's external metric with an average-value target).
        per_replica = sample.total / current
        ratio = per_replica / target
        if _within(ratio, tolerance):
            return MetricResult(sample.metric, per_replica, target, current, reason=Reason.WITHIN_TOLERANCE)
        return MetricResult(sample.metric, per_replica, target, _ceil(sample.total / target))

    values, missing = sample.values, len(sample.missing)
    if not values:
        return MetricResult(sample.metric, None, target, None, missing=missing)
    average = sum(values) / len(values)
    ratio = average / target

    def result(proposed: int, reason: Reason | None = None) -> MetricResult:
        return MetricResult(sample.metric, average, target, proposed, missing=missing, reason=reason)

    scale_up_with_starting = not_running > 0 and ratio > 1
    if not missing and not scale_up_with_starting:
        if _within(ratio, tolerance):
            return result(current, Reason.WITHIN_TOLERANCE)
        # HPA multiplies by the tasks that report, not the spec: the load is carried by them.
        return result(_ceil(sum(values) / target))

    # Assume the least helpful value for the direction the known tasks point to: tasks without
    # series at the target when scaling down, at 0 when scaling up; tasks not running yet at 0.
    assumed = list(values)
    if ratio < 1:
        assumed += [target] * missing
    elif ratio > 1:
        assumed += [0.0] * missing
    if scale_up_with_starting:
        assumed += [0.0] * not_running
    new_ratio = sum(assumed) / len(assumed) / target
    why = Reason.MISSING_DATA if missing else Reason.TASKS_STARTING
    if (ratio < 1 < new_ratio) or (ratio > 1 > new_ratio):
        flipped = Reason.MISSING_DATA_FLIPS_DIRECTION if missing else Reason.TASKS_STARTING
        return result(current, flipped)
    if _within(new_ratio, tolerance):
        return result(current, Reason.WITHIN_TOLERANCE if _within(ratio, tolerance) else why)
    proposed = _ceil(sum(assumed) / target)
    if (new_ratio < 1 and proposed > current) or (new_ratio > 1 and proposed < current):
        # More tasks in the sum than in the spec can turn a scale-down into a scale-up; don't.
        return result(current, Reason.MISSING_DATA_FLIPS_DIRECTION if missing else why)
    return result(proposed)


def _step(sample: MetricSample, current: int, not_running: int, policy: Policy) -> MetricResult:
    """Step mode for one metric: its value against step.high and step.low, in the metric's unit."""
    high, low, size = policy.step.high, policy.step.low, policy.step.size
    assert high is not None and low is not None  # policy validation requires both in step mode
    target = sample.target
    if sample.total is not None:
        value = sample.total / current
        up_value = down_value = value
    elif sample.values:
        values, missing = sample.values, len(sample.missing)
        value = sum(values) / len(values)
        # As in proportional mode: tasks without series or not running yet count as 0 for a
        # scale-up; tasks without series count at the high threshold for a scale-down.
        up_value = sum(values) / (len(values) + missing + not_running)
        down_value = (sum(values) + high * missing) / (len(values) + missing)
    else:
        return MetricResult(sample.metric, None, target, None, missing=len(sample.missing))

    missing_count = len(sample.missing)
    why = Reason.MISSING_DATA if missing_count else Reason.TASKS_STARTING

    def result(proposed: int, reason: Reason | None = None) -> MetricResult:
        return MetricResult(sample.metric, value, target, proposed, missing=missing_count, reason=reason)

    if value > high:
        if up_value > high:
            return result(current + size)
        return result(current, Reason.MISSING_DATA_FLIPS_DIRECTION if up_value < low and missing_count else why)
    if value < low:
        if down_value < low:
            return result(max(current - size, 0))
        return result(current, Reason.MISSING_DATA_FLIPS_DIRECTION if down_value > high else Reason.MISSING_DATA)
    return result(current, Reason.WITHIN_THRESHOLDS)


def _metric(sample: MetricSample, current: int, not_running: int, policy: Policy) -> MetricResult:
    sample, invalid = _void_invalid(sample)
    if policy.mode == "step":
        result = _step(sample, current, not_running, policy)
    else:
        result = _proportional(sample, current, not_running, policy.tolerance)
    return replace(result, invalid=invalid) if invalid else result


# --- Behaviour: stabilization and rate limits ----------------------------------------------------


def _stabilize(raw: int, current: int, recommendations: Iterable[Recommendation], policy: Policy, now: float) -> int:
    """HPA's stabilization: never above the lowest recommendation in the up window, nor below the highest in the down window."""
    up_cutoff = now - policy.scale_up.stabilization
    down_cutoff = now - policy.scale_down.stabilization
    recent = list(recommendations)
    up = min([raw] + [r.replicas for r in recent if r.at > up_cutoff])
    down = max([raw] + [r.replicas for r in recent if r.at > down_cutoff])
    return min(max(current, up), down)


def _changes(events: Iterable[ScaleEvent], period: float, now: float) -> tuple[int, int]:
    """Replicas added and removed by the scale events inside the last `period` seconds."""
    added = removed = 0
    for e in events:
        if e.at > now - period:
            added += max(e.after - e.before, 0)
            removed += max(e.before - e.after, 0)
    return added, removed


def _up_limit(current: int, events: tuple[ScaleEvent, ...], rules: Rules, now: float) -> int:
    if rules.select == "disabled":
        return current
    proposals = []
    for p in rules.policies:
        added, removed = _changes(events, p.period, now)
        # The replicas at the start of the period: what each policy's allowance is measured from.
        start = current - added + removed
        if p.kind == "pods":
            proposals.append(start + p.value)
        else:
            # Rounded up, or a small service could never grow by a percentage (HPA does the same).
            proposals.append(-(-start * (100 + p.value) // 100))
    limit = max(proposals) if rules.select == "max" else min(proposals)
    # Once this period's allowance is used up, hold; never turn a scale-up into a scale-down.
    return max(limit, current)


def _down_limit(current: int, events: tuple[ScaleEvent, ...], rules: Rules, now: float) -> int:
    if rules.select == "disabled":
        return current
    proposals = []
    for p in rules.policies:
        added, removed = _changes(events, p.period, now)
        start = current - added + removed
        if p.kind == "pods":
            proposals.append(start - p.value)
        else:
            # Rounded down (HPA truncates): 10 % of 72 removes 8, as in HPA's documentation.
            proposals.append(start * (100 - p.value) // 100)
    # For a scale-down, the biggest change is the lowest count.
    limit = min(proposals) if rules.select == "max" else max(proposals)
    return min(limit, current)


def _describe(metric: MetricResult) -> str:
    unit = "%" if metric.metric in ("cpu", "memory") else ""
    if metric.invalid:
        return f"{metric.metric}: no data ({metric.invalid} non-finite or negative value(s) from the source)"
    if metric.value is None:
        return f"{metric.metric}: no data"
    text = f"{metric.metric} {metric.value:.4g}{unit}/{metric.target:g}{unit} -> {metric.proposed}"
    if metric.missing:
        text += f" ({metric.missing} task(s) without series)"
    if metric.reason:
        text += f" [{metric.reason}]"
    return text


def _bounds(service: str, current: int, policy: Policy) -> Decision | None:
    """HPA's checks before any metric: a service turned off, or outside [min, max]."""
    if current == 0:
        return Decision(service, 0, 0, Reason.SCALED_TO_ZERO,
                        "0 replicas: autoscaling is paused until the service is scaled up by hand")
    if current > policy.max:
        return Decision(service, current, policy.max, Reason.ABOVE_MAX, f"{current} replicas is above max {policy.max}")
    if current < policy.min:
        return Decision(service, current, policy.min, Reason.BELOW_MIN, f"{current} replicas is below min {policy.min}")
    return None


def _in_cooldown(history: History, policy: Policy, now: float) -> bool:
    return history.last_scale_at is not None and now - history.last_scale_at < policy.cooldown


# --- The decisions -------------------------------------------------------------------------------


def decide(observation: Observation, policy: Policy, history: History, now: float) -> Decision:
    """How many replicas `observation.service` should have now, and why."""
    service, current = observation.service, observation.current
    early = _bounds(service, current, policy)
    if early:
        return early
    if policy.mode == "alert":
        return Decision(service, current, current, Reason.ALERT_ONLY, "mode alert: only alerts scale this service")

    results = tuple(_metric(s, current, observation.not_running, policy) for s in observation.metrics)
    summary = "; ".join(_describe(m) for m in results)

    def hold(reason: Reason, detail: str, recommendation: int | None = None) -> Decision:
        return Decision(service, current, current, reason, detail, results, recommendation)

    usable = [m for m in results if m.proposed is not None]
    if not usable:
        return hold(Reason.NO_DATA, f"no data for any metric; holding ({summary or 'no metrics observed'})")
    raw = max(m.proposed for m in usable if m.proposed is not None)
    if len(usable) < len(results) and raw < current:
        # HPA: a metric that cannot be read might be the one that keeps the service up.
        return hold(Reason.NO_DATA, f"a metric has no data, and the others alone would scale down; holding ({summary})")

    if raw > current:
        reason = Reason.SCALE_UP
    elif raw < current:
        reason = Reason.SCALE_DOWN
    else:
        holding = {m.reason for m in usable if m.proposed == current}
        reason = next((r for r in _HOLD_PRIORITY if r in holding), Reason.WITHIN_TOLERANCE)
    details = [summary]

    desired = _stabilize(raw, current, history.recommendations, policy, now)
    if desired != raw:
        reason = Reason.STABILIZED
        window = policy.scale_down.stabilization if raw < current else policy.scale_up.stabilization
        details.append(f"stabilized {raw} -> {desired} over the last {format_duration(window)}")

    if desired > current:
        limited = min(desired, _up_limit(current, history.events, policy.scale_up, now))
        rules = policy.scale_up
    elif desired < current:
        limited = max(desired, _down_limit(current, history.events, policy.scale_down, now))
        rules = policy.scale_down
    else:
        limited, rules = desired, None
    if limited != desired and rules is not None:
        if rules.select == "disabled":
            reason = Reason.SCALING_DISABLED
            details.append(f"scaling {'up' if desired > current else 'down'} is disabled")
        else:
            reason = Reason.RATE_LIMITED
            allowed = ",".join(str(p) for p in rules.policies)
            details.append(f"rate limited {desired} -> {limited} by {allowed} (select {rules.select})")
        desired = limited

    # The clamp comes before the cooldown check so that a service pinned at a bound says so,
    # rather than "cooldown", which would suggest that it scales once the cooldown is over.
    clamped = min(max(desired, policy.min), policy.max)
    if clamped != desired:
        reason = Reason.AT_MAX if desired > policy.max else Reason.AT_MIN
        details.append(f"clamped {desired} -> {clamped} by {'max' if desired > policy.max else 'min'}")
        desired = clamped

    if desired != current and _in_cooldown(history, policy, now):
        assert history.last_scale_at is not None
        left = policy.cooldown - (now - history.last_scale_at)
        details.append(f"cooldown: last scale {now - history.last_scale_at:g}s ago, {left:g}s left")
        return hold(Reason.COOLDOWN, "; ".join(details), raw)

    return Decision(service, current, desired, reason, "; ".join(details), results, raw)


def decide_alert(
    action: Literal["scale_up", "scale_down"],
    step: int,
    current: int,
    policy: Policy,
    history: History,
    now: float,
    service: str = "",
) -> Decision:
    """Scaling asked for by an alert: `step` replicas in `action`'s direction, within min/max and the cooldown.

    Stabilization windows and rate limits do not apply: the alert rule is the operator's own
    judgement of when and how much. `select: disabled` does apply, since it means "never scale
    this way automatically". The result is recorded as a recommendation, so that the scale-down
    window keeps an alert's scale-up from being undone by the next loop.
    """
    if action not in ("scale_up", "scale_down"):
        raise ValueError(f"action must be scale_up or scale_down (got {action!r})")
    if step < 1:
        raise ValueError(f"step must be at least 1 (got {step})")
    early = _bounds(service, current, policy)
    if early:
        return early
    up = action == "scale_up"
    wanted = current + step if up else current - step
    desired = min(max(wanted, policy.min), policy.max)

    def hold(reason: Reason, detail: str) -> Decision:
        return Decision(service, current, current, reason, detail)

    if desired == current:
        return hold(Reason.AT_MAX if up else Reason.AT_MIN,
                    f"alert {action} by {step}: already at {'max' if up else 'min'} {current}")
    if (policy.scale_up if up else policy.scale_down).select == "disabled":
        return hold(Reason.SCALING_DISABLED, f"alert {action}: scaling {'up' if up else 'down'} is disabled")
    if _in_cooldown(history, policy, now):
        assert history.last_scale_at is not None
        return hold(Reason.COOLDOWN, f"alert {action}: last scale {now - history.last_scale_at:g}s ago, "
                                     f"cooldown {policy.cooldown:g}s")
    detail = f"alert {action} by {step}"
    if desired != wanted:
        detail += f", clamped to {'max' if up else 'min'} {desired}"
    return Decision(service, current, desired, Reason.ALERT_SCALE_UP if up else Reason.ALERT_SCALE_DOWN,
                    detail, (), desired)


def cap_to_capacity(decision: Decision, unschedulable: int) -> Decision:
    """Stop a scale-up while tasks of the service are pending with "no suitable node".

    More replicas would only queue more pending tasks. The replica count stays where it is
    rather than dropping to the tasks that run, so that pending tasks start as soon as a node
    frees up. The recommendation is kept, so the windows still see what the metrics wanted.
    """
    if unschedulable <= 0 or decision.direction != "up":
        return decision
    return replace(
        decision,
        desired=decision.current,
        reason=Reason.CAPACITY,
        detail=f"{decision.detail}; {unschedulable} task(s) pending with no suitable node: "
        f"not scaling beyond {decision.current}",
    )
