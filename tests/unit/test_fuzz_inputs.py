"""Hostile input, generated: alert payloads, policy labels, the decision's numbers and the seen-list codec.

Each property runs at least 1,000 examples (tests/support/fuzz.py); hypothesis shrinks a failure
to the smallest input that shows it.
"""

from __future__ import annotations

import json
import math
import string

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from autoscaler.decide import (
    History,
    MetricSample,
    Observation,
    Recommendation,
    ScaleEvent,
    decide,
    decide_alert,
)
from autoscaler.policy import (
    LABEL_KEYS,
    LABEL_PREFIX,
    STATE_LABEL,
    Policy,
    PolicyFile,
    RatePolicy,
    Rules,
    Step,
    resolve,
)
from swarmshift import alerts
from swarmshift.http import HTTPProblem
from tests.support.fuzz import fuzz

# --- Alert payloads ------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=15,
)
# Near-valid payloads reach the checks behind the first few keys.
anything = json_values | st.sampled_from(["firing", "resolved", "4", 4, ""])
alert_dicts = st.fixed_dictionaries(
    {"status": anything, "labels": st.dictionaries(st.text(max_size=10), anything, max_size=4) | anything},
    optional={"annotations": anything, "startsAt": anything, "endsAt": anything, "fingerprint": anything},
)
payloads = json_values | st.fixed_dictionaries(
    {"version": anything, "status": anything, "alerts": st.lists(alert_dicts, max_size=4) | anything},
    optional={"receiver": anything, "groupKey": anything, "extra": anything},
)


@fuzz
@given(payloads)
def test_alert_parsing_refuses_with_a_4xx_and_nothing_else(body):
    try:
        notification = alerts.parse(body)
    except HTTPProblem as err:
        assert 400 <= err.status < 500 and err.extra["problems"]
        return
    for alert in notification.alerts:
        key = alerts.alert_key(alert)
        assert alerts.decode_seen(key) == (key,)


# --- Policy labels -------------------------------------------------------------------------------

label_values = st.text(max_size=12) | st.sampled_from(
    ["0", "1", "-1", "inf", "-inf", "nan", "1e999", "none", "true", "5m", "pods=4/15s", " 50 ", "0.5", "rps", ""])
label_names = st.sampled_from([f"{LABEL_PREFIX}.{k}" for k in LABEL_KEYS] + [
    LABEL_PREFIX, STATE_LABEL, f"{STATE_LABEL}.alerts", f"{LABEL_PREFIX}.nope", f"{LABEL_PREFIX}.", "other"])
label_dicts = st.dictionaries(label_names | st.text(max_size=30), label_values, max_size=12)
service_names = st.text(alphabet=string.ascii_letters + string.digits + "_.-\"'\\{} ", min_size=0, max_size=20)
policy_files = st.sampled_from([PolicyFile(), PolicyFile(queries={"rps": 'sum(x{s="{{service}}"})'}),
                                PolicyFile(allow_label_queries=True)])


@fuzz
@given(service_names, label_dicts, policy_files)
def test_policy_labels_give_problems_never_an_exception(service, labels, policy_file):
    resolved = resolve(service, labels, policy_file)
    if resolved is None or not resolved.ok:
        return
    policy = resolved.policy
    assert policy is not None
    assert 1 <= policy.min <= policy.max
    assert all(math.isfinite(t) and t > 0 for t in policy.targets().values())
    try:
        query = policy.query_for(service)
    except ValueError as err:
        assert "not a Docker service name" in str(err)
    else:
        # Only a name Docker accepts is substituted, and it cannot leave its string.
        assert query is None or not set(service) & set("\"'\\{} ")


# --- The decision --------------------------------------------------------------------------------

anything_float = st.floats(allow_nan=True, allow_infinity=True)
sane_float = st.floats(min_value=0, max_value=1e6)
values = st.lists(st.one_of(sane_float, anything_float, st.just(1e308)), max_size=6)  # 1e308: sums overflow
samples = st.builds(
    MetricSample,
    metric=st.sampled_from(["cpu", "memory", "query"]),
    target=st.floats(min_value=0.1, max_value=100),
    values=values.map(tuple),
    missing=st.lists(st.text(max_size=3), max_size=3).map(tuple),
    total=st.none() | sane_float | anything_float,
)
rate_policies = st.builds(RatePolicy, kind=st.sampled_from(["pods", "percent"]), value=st.integers(1, 200),
                          period=st.floats(1, 1800))
rules = st.builds(Rules, stabilization=st.floats(0, 3600), policies=st.lists(rate_policies, min_size=1, max_size=3)
                  .map(tuple), select=st.sampled_from(["max", "min", "disabled"]))


@st.composite
def policies(draw) -> Policy:
    top = draw(st.integers(1, 50))
    low = draw(st.floats(0.1, 1000))
    return Policy(max=top, min=draw(st.integers(1, top)), cpu=50, tolerance=draw(st.floats(0, 0.99)),
                  mode=draw(st.sampled_from(["proportional", "step", "alert"])),
                  step=Step(high=low + draw(st.floats(0.1, 1000)), low=low, size=draw(st.integers(1, 5))),
                  scale_up=draw(rules), scale_down=draw(rules), cooldown=draw(st.floats(0, 600)))


NOW = 1_750_000_000.0
histories = st.builds(
    History,
    recommendations=st.lists(st.builds(Recommendation, at=st.floats(NOW - 4000, NOW), replicas=st.integers(0, 60)),
                             max_size=4).map(tuple),
    events=st.lists(st.builds(ScaleEvent, at=st.floats(NOW - 2000, NOW), before=st.integers(0, 60),
                              after=st.integers(0, 60)), max_size=4).map(tuple),
    last_scale_at=st.none() | st.floats(NOW - 2000, NOW),
)


def _bad(sample: MetricSample) -> bool:
    numbers = [*sample.values, *([sample.total] if sample.total is not None else [])]
    return any(not math.isfinite(v) or v < 0 for v in numbers)


@fuzz
@given(st.integers(0, 60), st.lists(samples, max_size=3), st.none() | st.integers(0, 60), policies(), histories)
def test_the_decision_never_raises_and_never_scales_down_on_bad_numbers(current, metrics, running, policy, history):
    obs = Observation("web", current, tuple(metrics), running=running)
    decision = decide(obs, policy, history, NOW)
    assert isinstance(decision.desired, int)
    if current == 0:
        assert decision.desired == 0
    else:
        assert policy.min <= decision.desired <= policy.max
    if policy.min <= current <= policy.max and any(_bad(m) for m in metrics):
        assert decision.desired >= current, decision
    assert all(m.value is None or not math.isnan(m.value) for m in decision.metrics)
    json.dumps(decision.as_dict(), allow_nan=False)  # strict JSON, as /v1/events serves it


@st.composite
def alert_policies(draw) -> Policy:
    """What decide_alert reads of a policy: the bounds, the select of each direction, the cooldown."""
    top = draw(st.integers(1, 50))
    up, down = (Rules(0, (RatePolicy("pods", 1, 15),), draw(st.sampled_from(["max", "min", "disabled"])))
                for _ in range(2))
    return Policy(max=top, min=draw(st.integers(1, top)), mode="alert", scale_up=up, scale_down=down,
                  cooldown=draw(st.sampled_from([0.0, 30.0, 600.0])))


last_scales = st.builds(History, last_scale_at=st.none() | st.floats(NOW - 2000, NOW))


@fuzz
@given(st.sampled_from(["scale_up", "scale_down"]), st.integers(1, 10**6), st.integers(0, 60), alert_policies(),
       last_scales)
def test_an_alert_decision_never_raises(action, step, current, policy, history):
    decision = decide_alert(action, step, current, policy, history, NOW, service="web")
    assert current == 0 or policy.min <= decision.desired <= policy.max


@fuzz
@given(st.text(max_size=80) | st.sampled_from(["v1", "v1;last=inf", "v1;events=1:2>3", "v1;last=nan;events="]))
def test_the_state_label_decodes_or_says_why(text):
    try:
        History.decode(text)
    except ValueError as err:
        assert "autoscaler state" in str(err)


# --- The seen-list codec -------------------------------------------------------------------------

keys = st.text(alphabet="0123456789abcdef", min_size=12, max_size=12)
seen_texts = st.none() | st.text(max_size=60) | st.lists(keys | st.text(max_size=14), max_size=40).map(",".join)


@fuzz
@given(seen_texts, keys, st.integers(1, 40))
def test_the_seen_list_keeps_the_newest_keys_bounded(text, key, keep):
    decoded = alerts.decode_seen(text)
    assert all(len(k) == 12 for k in decoded)
    label = alerts.append_seen(text, key, keep)
    after = alerts.decode_seen(label)
    assert after[-1] == key and alerts.seen(label, key)
    assert len(after) <= keep and len(set(after)) == len(after)
    assert len(label) <= keep * 13
    assert alerts.decode_seen(alerts.encode_seen(after)) == after
    # What was there before and is kept keeps its order.
    older = [k for k in decoded if k != key]
    assert list(after[:-1]) == older[len(older) - (len(after) - 1):] if len(after) > 1 else True


@fuzz
@given(st.text(max_size=20))
def test_a_malformed_key_is_refused_by_name(key):
    assume(not (len(key) == 12 and set(key) <= set("0123456789abcdef")))
    with pytest.raises(ValueError, match="alert key"):
        alerts.append_seen("", key)


# --- Alerts through the autoscaler ---------------------------------------------------------------

alert_labels = st.fixed_dictionaries({}, optional={
    "alertname": st.text(max_size=8), "service": st.sampled_from(["web", "nope", ""]) | st.text(max_size=8),
    "swarmshift_action": st.sampled_from(["scale_up", "scale_down", "explode", ""]),
    "step": st.sampled_from(["1", "3", "0", "-1", "x", "99999999999999999999", "٣"]) | st.text(max_size=4)})


@fuzz
@given(st.lists(st.tuples(st.sampled_from(["firing", "resolved"]), alert_labels, st.text(max_size=6)),
                min_size=1, max_size=6))
def test_every_alert_gets_an_answer_and_scales_at_most_once(items):
    import asyncio

    from autoscaler.loop import Autoscaler
    from tests.support.memory import Clock, MemorySwarm

    swarm = MemorySwarm()
    swarm.add("web", image="web:1", replicas=2, labels={"swarmshift.autoscale": "true", "swarmshift.autoscale.max": "9",
                                                        "swarmshift.autoscale.mode": "alert"})
    body = {"version": "4", "status": "firing", "alerts": [
        {"status": status, "labels": labels, "fingerprint": fp} for status, labels, fp in items]}
    daemon = Autoscaler(swarm, source=None, clock=Clock(), max_alerts=4)  # type: ignore[arg-type] - alerts only
    notification = alerts.parse(body)
    first = asyncio.run(daemon.on_alerts(notification))
    again = asyncio.run(daemon.on_alerts(notification))
    assert len(first) == len(again) == len(items)
    assert {r.status for r in first + again} <= {200, 404, 409, 422, 429}
    # A retried notification repeats no scale: each firing (key) scales at most once over both.
    scaled = [alerts.alert_key(a) for a, r in zip(notification.alerts * 2, first + again, strict=True)
              if r.outcome == "scaled"]
    assert len(scaled) == len(set(scaled))
