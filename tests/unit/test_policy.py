"""Policies from labels and the policy file: values, precedence, scope, and one line per problem."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from autoscaler.policy import (
    DEFAULT_SCALE_DOWN,
    DEFAULT_SCALE_UP,
    LABEL_KEYS,
    STATE_LABEL,
    Policy,
    PolicyFile,
    RatePolicy,
    Rules,
    Step,
    capacity_problems,
    load_policy_file,
    opt_in,
    resolve,
    scope_warning,
    utilisation_base,
)
from swarmshift.config import ConfigError

P = "swarmshift.autoscale"
MIN_PROBLEM = "must be at least 1: a service scaled to 0 has no tasks to measure, so it would never come back"


def labels(**keys: str) -> dict[str, str]:
    """Opted-in labels; `scale_up__stabilization="1m"` is `swarmshift.autoscale.scale_up.stabilization=1m`."""
    out = {P: "true"}
    out.update({f"{P}.{k.replace('__', '.')}": v for k, v in keys.items()})
    return out


# Most tables here write PromQL into labels, as a config with allow_label_queries: true permits;
# the refusal without it, and named queries, have tests of their own.
TRUSTING = PolicyFile(allow_label_queries=True)


def policy_of(service: str, service_labels: dict[str, str], policy_file: PolicyFile | None = None) -> Policy:
    resolved = resolve(service, service_labels, policy_file or TRUSTING)
    assert resolved is not None, "not in scope"
    assert resolved.problems == (), resolved.problems
    assert resolved.policy is not None
    return resolved.policy


def problems_of(service: str, service_labels: dict[str, str], policy_file: PolicyFile | None = None) -> list[str]:
    resolved = resolve(service, service_labels, policy_file or TRUSTING)
    assert resolved is not None, "not in scope"
    assert resolved.policy is None
    return list(resolved.problems)


# --- Labels: every key, with its default -------------------------------------------------------


def test_defaults_are_hpas():
    policy = policy_of("web", labels(max="10", cpu="50"))
    assert policy == Policy(
        max=10,
        min=1,
        cpu=50.0,
        tolerance=0.1,
        mode="proportional",
        scale_up=Rules(0.0, (RatePolicy("pods", 4, 15.0), RatePolicy("percent", 100, 15.0)), "max"),
        scale_down=Rules(300.0, (RatePolicy("percent", 100, 15.0),), "max"),
        cooldown=0.0,
    )


LABEL_VALUES = [
    pytest.param({"min": "2"}, "min", 2, id="min"),
    pytest.param({"min": " 2 "}, "min", 2, id="min-with-spaces"),
    pytest.param({"max": "25"}, "max", 25, id="max"),
    pytest.param({"cpu": "75.5"}, "cpu", 75.5, id="cpu"),
    pytest.param({"cpu": "100"}, "cpu", 100.0, id="cpu-100-is-allowed"),
    pytest.param({"memory": "80"}, "memory", 80.0, id="memory"),
    pytest.param({"query": 'sum(rate(http_requests_total{service="{{service}}"}[1m]))', "query__target": "20"},
                 "query_target", 20.0, id="query-target"),
    pytest.param({"tolerance": "0.05"}, "tolerance", 0.05, id="tolerance"),
    pytest.param({"tolerance": "0"}, "tolerance", 0.0, id="tolerance-0"),
    pytest.param({"mode": "Step", "step__high": "85", "step__low": "25"}, "mode", "step", id="mode-any-case"),
    pytest.param({"mode": "step", "step__high": "85", "step__low": "25", "step__size": "2"}, "step",
                 Step(85.0, 25.0, 2), id="step"),
    pytest.param({"mode": "alert"}, "mode", "alert", id="mode-alert"),
    pytest.param({"scale_up__stabilization": "1m"}, "scale_up",
                 Rules(60.0, DEFAULT_SCALE_UP.policies, "max"), id="scale-up-stabilization"),
    pytest.param({"scale_down__stabilization": "0"}, "scale_down",
                 Rules(0.0, DEFAULT_SCALE_DOWN.policies, "max"), id="scale-down-stabilization-bare-number"),
    pytest.param({"scale_down__policies": "pods=4/60s,percent=10/1m"}, "scale_down",
                 Rules(300.0, (RatePolicy("pods", 4, 60.0), RatePolicy("percent", 10, 60.0)), "max"),
                 id="scale-down-policies-compact"),
    pytest.param({"scale_up__policies": " Percent = 900 / 60s "}, "scale_up",
                 Rules(0.0, (RatePolicy("percent", 900, 60.0),), "max"), id="policies-spaces-and-case"),
    pytest.param({"scale_up__select": "Min"}, "scale_up", Rules(0.0, DEFAULT_SCALE_UP.policies, "min"),
                 id="select-any-case"),
    pytest.param({"scale_down__select": "disabled"}, "scale_down",
                 Rules(300.0, DEFAULT_SCALE_DOWN.policies, "disabled"), id="select-disabled"),
    pytest.param({"cooldown": "1m30s"}, "cooldown", 90.0, id="cooldown"),
    pytest.param({"memory": "none"}, "memory", None, id="none-means-default"),
]


@pytest.mark.parametrize(("extra", "attribute", "expected"), LABEL_VALUES)
def test_label_values(extra, attribute, expected):
    keys = {"max": "10", "cpu": "50", **extra}
    assert getattr(policy_of("web", labels(**keys)), attribute) == expected


def test_every_label_key_is_also_a_file_key():
    # Every tunable can be set in both places: set each once by label and once by file, compare.
    values = {
        "min": "2", "max": "9", "cpu": "40", "memory": "70", "query": "up", "query.target": "3",
        "tolerance": "0.2", "mode": "step", "step.high": "80", "step.low": "20", "step.size": "2",
        "scale_up.stabilization": "30s", "scale_up.policies": "pods=2/30s", "scale_up.select": "min",
        "scale_down.stabilization": "10m", "scale_down.policies": "percent=50/1m", "scale_down.select": "max",
        "cooldown": "45s",
    }
    assert set(values) == set(LABEL_KEYS)
    by_label = {f"{P}.{k}": v for k, v in values.items() if k not in ("query", "query.target")}
    file_entry: dict = {}
    for key, value in values.items():
        if key in ("query", "query.target"):
            continue  # step mode takes cpu/memory or the query; the query is checked below
        node = file_entry
        *parents, last = key.split(".")
        for parent in parents:
            node = node.setdefault(parent, {})
        node[last] = value
    from_labels = policy_of("web", {P: "true", **by_label})
    from_file = policy_of("web", {}, load_policy_file({"services": {"web": file_entry}}, "policy.yaml"))
    assert from_labels == from_file
    query_file = load_policy_file({"services": {"q": {"max": 3, "query": {"expr": "up", "target": 3}}}}, "f")
    assert policy_of("q", {}, query_file) == policy_of("q", labels(max="3", query="up", query__target="3"))


def test_query_substitutes_the_service():
    policy = policy_of("shop_web", labels(max="5", query='sum(rate(x{service="{{service}}"}[1m]))',
                                          query__target="10"))
    assert policy.query_for("shop_web") == 'sum(rate(x{service="shop_web"}[1m]))'
    assert policy.targets() == {"query": 10.0}


@pytest.mark.parametrize(
    ("keys", "targets"),
    [
        pytest.param({"cpu": "50"}, {"cpu": 50.0}, id="cpu"),
        pytest.param({"cpu": "50", "memory": "80"}, {"cpu": 50.0, "memory": 80.0}, id="cpu-and-memory"),
        pytest.param({"mode": "alert"}, {}, id="alert-only"),
    ],
)
def test_targets(keys, targets):
    assert policy_of("web", labels(max="5", **keys)).targets() == targets


def test_state_label_is_not_a_policy_key():
    assert policy_of("web", {**labels(max="5", cpu="50"), STATE_LABEL: "v1;last=1"}).max == 5


def test_other_labels_are_ignored():
    assert policy_of("web", {**labels(max="5", cpu="50"), "swarmshift.autoscaler": "x", "com.example": "y"}).max == 5


# --- Labels: one line per problem ----------------------------------------------------------------

LABEL_PROBLEMS = [
    pytest.param({"cpu": "150"}, [f"service web: label {P}.cpu: must be in (0, 100] (got '150')"], id="cpu-over-100"),
    pytest.param({"cpu": "0"}, [f"service web: label {P}.cpu: must be in (0, 100] (got '0')"], id="cpu-0"),
    pytest.param({"memory": "-5"}, [f"service web: label {P}.memory: must be in (0, 100] (got '-5')"],
                 id="memory-negative"),
    pytest.param({"cpu": "nan"}, [f"service web: label {P}.cpu: must be in (0, 100] (got 'nan')"], id="cpu-nan"),
    pytest.param({"cpu": "half"},
                 [f"service web: label {P}.cpu: Input should be a valid number, unable to parse string as a number "
                  "(got 'half')"], id="cpu-not-a-number"),
    pytest.param({"min": "-1"}, [f"service web: label {P}.min: {MIN_PROBLEM} (got '-1')"], id="min-negative"),
    # A service the autoscaler took to 0 would never come back: no task would report a metric.
    pytest.param({"min": "0"}, [f"service web: label {P}.min: {MIN_PROBLEM} (got '0')"], id="min-0"),
    pytest.param({"max": "0"}, [f"service web: label {P}.max: must be at least 1 (got '0')"], id="max-0"),
    pytest.param({"max": "2.5"},
                 [f"service web: label {P}.max: Input should be a valid integer, unable to parse string as an integer "
                  "(got '2.5')"], id="max-fraction"),
    pytest.param({"max": "none"}, [f"service web: {P}.max: required: set the label, or max in the policy file"],
                 id="max-reset"),
    pytest.param({"min": "5", "max": "3"},
                 [f"service web: label {P}.max: must be at least min (5, from label {P}.min) (got '3')"],
                 id="min-above-max"),
    pytest.param({"tolerance": "1"}, [f"service web: label {P}.tolerance: must be in [0, 1) (got '1')"],
                 id="tolerance-1"),
    pytest.param({"cooldown": "soon"},
                 [f"service web: label {P}.cooldown: expected a duration such as 30s, 5m or 1h30m (got 'soon')"],
                 id="cooldown-bad"),
    pytest.param({"cooldown": "-5s"},
                 [f"service web: label {P}.cooldown: expected a duration such as 30s, 5m or 1h30m (got '-5s')"],
                 id="cooldown-negative"),
    pytest.param({"scale_down__stabilization": "2h"},
                 [f"service web: label {P}.scale_down.stabilization: must be at most 1h (got '2h')"],
                 id="window-over-an-hour"),
    pytest.param({"scale_up__policies": "pods=4"},
                 [f"service web: label {P}.scale_up.policies: expected TYPE=VALUE/PERIOD items separated by commas, "
                  "e.g. pods=4/15s,percent=100/15s (got 'pods=4')"], id="policy-without-period"),
    pytest.param({"scale_up__policies": ""},
                 [f"service web: label {P}.scale_up.policies: expected TYPE=VALUE/PERIOD items separated by commas, "
                  "e.g. pods=4/15s,percent=100/15s (got '')"], id="policies-empty"),
    pytest.param({"scale_up__policies": "nodes=4/15s"},
                 [f"service web: label {P}.scale_up.policies: [0].type: Input should be 'pods' or 'percent' "
                  "(got 'nodes=4/15s')"], id="policy-type"),
    pytest.param({"scale_down__policies": "pods=4/15s,percent=0/15s"},
                 [f"service web: label {P}.scale_down.policies: [1].value: must be at least 1 "
                  "(got 'pods=4/15s,percent=0/15s')"], id="policy-value-0"),
    pytest.param({"scale_down__policies": "pods=1/0s"},
                 [f"service web: label {P}.scale_down.policies: [0].period: must be longer than 0s (got 'pods=1/0s')"],
                 id="policy-period-0"),
    pytest.param({"scale_down__policies": "pods=1/1h"},
                 [f"service web: label {P}.scale_down.policies: [0].period: must be at most 30m (got 'pods=1/1h')"],
                 id="policy-period-over-30m"),
    pytest.param({"scale_up__select": "fastest"},
                 [f"service web: label {P}.scale_up.select: Input should be 'max', 'min' or 'disabled' "
                  "(got 'fastest')"], id="select"),
    pytest.param({"mode": "threshold"},
                 [f"service web: label {P}.mode: Input should be 'proportional', 'step' or 'alert' (got 'threshold')"],
                 id="mode"),
    pytest.param({"cooldwn": "1m"},
                 [f"service web: label {P}.cooldwn: unknown key (did you mean {P}.cooldown?) (got '1m')"],
                 id="unknown-key-with-hint"),
    pytest.param({"replicas": "3"}, [f"service web: label {P}.replicas: unknown key (got '3')"], id="unknown-key"),
    pytest.param({"query": "sum(up)"},
                 [f"service web: label {P}.query: needs a target: set {P}.query.target (query.target in the file)"],
                 id="query-without-target"),
    pytest.param({"query__target": "5"},
                 [f"service web: label {P}.query.target: a target without a query: set {P}.query "
                  "(query.expr in the file)"], id="target-without-query"),
    pytest.param({"query": "sum(up)", "query__target": "0"},
                 [f"service web: label {P}.query.target: must be a number greater than 0 (got '0')"],
                 id="query-target-0"),
    pytest.param({"mode": "step"},
                 [f"service web: {P}.step.high: required in step mode", f"service web: {P}.step.low: required in step mode"],
                 id="step-without-thresholds"),
    pytest.param({"mode": "step", "step__high": "20", "step__low": "80"},
                 [f"service web: label {P}.step.low: must be below step.high (20, from label {P}.step.high) "
                  "(got '80')"], id="step-low-above-high"),
    pytest.param({"mode": "step", "step__high": "80", "step__low": "20", "step__size": "0"},
                 [f"service web: label {P}.step.size: must be at least 1 (got '0')"], id="step-size-0"),
    pytest.param({"mode": "step", "step__high": "80", "step__low": "20", "query": "up", "query__target": "1"},
                 [f"service web: label {P}.mode: step thresholds are in one unit, so step mode takes either the "
                  "query or cpu/memory, not both (got cpu and query)"], id="step-mixes-units"),
    pytest.param({"cpu": "none"},
                 [f"service web: {P}: no metric: set {P}.cpu, .memory or .query (or mode=alert to scale on "
                  "alerts only)"], id="no-metric"),
    # Every problem of a service at once, not only the first.
    pytest.param({"cpu": "150", "min": "-1", "oops": "1"},
                 [f"service web: label {P}.oops: unknown key (got '1')",
                  f"service web: label {P}.min: {MIN_PROBLEM} (got '-1')",
                  f"service web: label {P}.cpu: must be in (0, 100] (got '150')"], id="all-problems-at-once"),
]


@pytest.mark.parametrize(("extra", "expected"), LABEL_PROBLEMS)
def test_label_problems(extra, expected):
    keys = {"max": "10", "cpu": "50", **extra}
    assert sorted(problems_of("web", labels(**keys))) == sorted(expected)


def test_missing_max_is_a_problem():
    assert problems_of("web", labels(cpu="50")) == [
        f"service web: {P}.max: required: set the label, or max in the policy file"
    ]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("true", True, id="true"),
        pytest.param("True", True, id="true-capitalised"),
        pytest.param("yes", True, id="yes"),
        pytest.param("1", True, id="one"),
        pytest.param("false", False, id="false"),
        pytest.param("0", False, id="zero"),
        pytest.param(None, None, id="absent"),
    ],
)
def test_opt_in_values(value, expected):
    assert opt_in({} if value is None else {P: value}) is expected


def test_garbled_opt_in_is_a_problem_not_a_crash():
    resolved = resolve("web", {P: "please", f"{P}.max": "3", f"{P}.cpu": "50"})
    assert resolved is not None and resolved.policy is None
    assert resolved.problems == (f"service web: label {P}: must be true or false (got 'please')",)


# --- Scope ---------------------------------------------------------------------------------------

FILE = {
    "defaults": {"min": 2, "cpu": 70, "scale_down": {"stabilization": "10m"}},
    "services": {
        "web-*": {"max": 20, "memory": 80},
        "*-api": {"max": 8, "tolerance": 0.2},
        "web-api": {"cpu": None, "query": {"expr": "sum(rate(req{s='{{service}}'}[1m]))", "target": 50}},
        "db": None,
    },
}


@pytest.fixture(scope="module")
def policy_file() -> PolicyFile:
    return load_policy_file(FILE, "policy.yaml")


@pytest.mark.parametrize(
    ("service", "service_labels", "in_scope"),
    [
        pytest.param("cache", {}, False, id="no-label-no-entry"),
        pytest.param("cache", {P: "true", f"{P}.max": "3", f"{P}.cpu": "50"}, True, id="label-opts-in"),
        pytest.param("web-front", {}, True, id="glob-entry-opts-in"),
        pytest.param("web-front", {P: "false"}, False, id="label-false-opts-out-of-the-file"),
        pytest.param("cache", {f"{P}.max": "3", f"{P}.cpu": "50"}, False, id="tunables-without-opt-in"),
        pytest.param("WEB-front", {}, False, id="globs-are-case-sensitive"),
    ],
)
def test_scope(policy_file, service, service_labels, in_scope):
    assert (resolve(service, service_labels, policy_file) is not None) == in_scope


def test_scope_warning_explains_it_never_scales(policy_file):
    assert scope_warning("cache", {f"{P}.max": "3"}, policy_file) == (
        f"service cache: has {P}.max but not {P}=true, so it is not autoscaled"
    )
    assert scope_warning("cache", {P: "true", f"{P}.max": "3"}, policy_file) is None
    assert scope_warning("web-x", {f"{P}.max": "3"}, policy_file) is None  # the file opts it in
    assert scope_warning("cache", {}, policy_file) is None


# --- Precedence: defaults <- globs in file order <- exact name <- labels -------------------------

PRECEDENCE = [
    pytest.param("web-front", {}, "min", 2, "file:defaults,web-*", id="file-defaults"),
    pytest.param("web-front", {}, "max", 20, "file:defaults,web-*", id="glob-entry"),
    pytest.param("web-front", {}, "cpu", 70.0, "file:defaults,web-*", id="defaults-under-glob"),
    pytest.param("web-front", {}, "scale_down", Rules(600.0, DEFAULT_SCALE_DOWN.policies, "max"),
                 "file:defaults,web-*", id="nested-key-from-defaults-rest-builtin"),
    pytest.param("web-front", {}, "scale_up", DEFAULT_SCALE_UP, "file:defaults,web-*", id="builtin-where-unset"),
    pytest.param("shop-api", {}, "max", 8, "file:defaults,*-api", id="other-glob"),
    # Both globs match web-api: the later one in the file wins, and the exact name wins over both.
    pytest.param("web-api", {}, "max", 8, "file:defaults,web-*,*-api,web-api", id="later-glob-wins"),
    pytest.param("web-api", {}, "memory", 80.0, "file:defaults,web-*,*-api,web-api", id="earlier-glob-fills-in"),
    pytest.param("web-api", {}, "cpu", None, "file:defaults,web-*,*-api,web-api", id="exact-null-resets"),
    pytest.param("web-api", {}, "query_target", 50.0, "file:defaults,web-*,*-api,web-api", id="exact-entry"),
    pytest.param("web-api", {f"{P}.max": "30"}, "max", 30, "file:defaults,web-*,*-api,web-api+labels",
                 id="label-over-everything"),
    pytest.param("web-api", {f"{P}.tolerance": "none"}, "tolerance", 0.1,
                 "file:defaults,web-*,*-api,web-api+labels", id="label-none-back-to-builtin"),
    pytest.param("cache", {P: "true", f"{P}.max": "4"}, "cpu", 70.0, "file:defaults+labels",
                 id="labels-over-file-defaults"),
]


@pytest.mark.parametrize(("service", "service_labels", "attribute", "expected", "source"), PRECEDENCE)
def test_precedence(policy_file, service, service_labels, attribute, expected, source):
    resolved = resolve(service, service_labels, policy_file)
    assert resolved is not None and resolved.policy is not None, resolved
    assert getattr(resolved.policy, attribute) == expected
    assert resolved.source == source


@pytest.mark.parametrize(
    ("service_labels", "source"),
    [
        pytest.param(labels(max="3", cpu="50"), "labels", id="labels-only"),
        pytest.param({P: "true"}, "file:svc", id="file-only"),
    ],
)
def test_source_without_file_defaults(service_labels, source):
    policy_file = load_policy_file({"services": {"svc": {"max": 3, "cpu": 50}}}, "policy.yaml")
    assert resolve("svc" if "file" in source else "other", service_labels, policy_file).source == source


def test_exact_entry_wins_wherever_it_is_in_the_file():
    data = {"services": {"web": {"max": 3, "cpu": 50}, "w*": {"max": 9}}}
    assert policy_of("web", {}, load_policy_file(data, "f")).max == 3


def test_empty_entry_opts_in_with_defaults(policy_file):
    # `db:` has no keys of its own and the defaults have no max: the problem names the missing key.
    assert problems_of("db", {}, policy_file) == [
        f"service db: {P}.max: required: set the label, or max in the policy file"
    ]
    assert policy_of("db", {f"{P}.max": "2"}, policy_file).min == 2


def test_problems_name_the_file_key_a_value_came_from(policy_file):
    assert problems_of("web-front", {f"{P}.max": "1"}, policy_file) == [
        f"service web-front: label {P}.max: must be at least min (2, from policy.yaml: defaults.min) (got '1')"
    ]
    data = {"defaults": {"max": 3}, "services": {"w*": {"min": 5, "cpu": 50}}}
    assert problems_of("web", {}, load_policy_file(data, "p.yaml")) == [
        "service web: p.yaml: defaults.max: must be at least min (5, from p.yaml: services.w*.min) (got 3)"
    ]


def test_one_bad_service_does_not_spoil_the_others(policy_file):
    bad = resolve("web-front", {f"{P}.cpu": "300"}, policy_file)
    good = resolve("web-back", {}, policy_file)
    assert bad is not None and not bad.ok and bad.problems
    assert good is not None and good.ok


# --- The file ------------------------------------------------------------------------------------

FILE_PROBLEMS = [
    pytest.param({"defaults": {"cpu": 150}}, ["policy.yaml: defaults.cpu: must be in (0, 100] (got 150)"],
                 id="target-out-of-range"),
    pytest.param({"services": {"web": {"max": 0}}}, ["policy.yaml: services.web.max: must be at least 1 (got 0)"],
                 id="max-0"),
    pytest.param({"services": {"web": {"max": True}}},
                 ["policy.yaml: services.web.max: expected a number, not true/false (got True)"], id="bool-is-not-a-number"),
    pytest.param({"services": {"web": {"min": -1}}}, [f"policy.yaml: services.web.min: {MIN_PROBLEM} (got -1)"],
                 id="min-negative"),
    pytest.param({"defaults": {"min": 0}}, [f"policy.yaml: defaults.min: {MIN_PROBLEM} (got 0)"], id="min-0"),
    pytest.param({"services": {"web": {"maxx": 3}}}, ["policy.yaml: services.web.maxx: unknown key (got 3)"],
                 id="unknown-key"),
    pytest.param({"service": {}}, ["policy.yaml: service: unknown key (got {})"], id="unknown-top-level-key"),
    pytest.param({"defaults": {"scale_down": {"stabilisation": "5m"}}},
                 ["policy.yaml: defaults.scale_down.stabilisation: unknown key (got '5m')"], id="unknown-nested-key"),
    pytest.param({"defaults": {"cooldown": "5 minutes"}},
                 ["policy.yaml: defaults.cooldown: expected a duration such as 30s, 5m or 1h30m (got '5 minutes')"],
                 id="bad-duration"),
    pytest.param({"defaults": {"scale_up": {"policies": [{"type": "pods", "value": 4, "period": "15s"},
                                                         {"type": "pod", "value": 4, "period": "15s"}]}}},
                 ["policy.yaml: defaults.scale_up.policies[1].type: Input should be 'pods' or 'percent' (got 'pod')"],
                 id="policy-type-in-list"),
    pytest.param({"defaults": {"scale_up": {"policies": [{"type": "pods", "value": 4}]}}},
                 ["policy.yaml: defaults.scale_up.policies[0].period: Field required"], id="policy-without-period"),
    pytest.param({"defaults": {"scale_up": {"policies": []}}},
                 ["policy.yaml: defaults.scale_up.policies: at least one policy is needed (use select: disabled to stop "
                  "scaling this way) (got [])"], id="no-policies"),
    pytest.param({"defaults": {"query": "sum(up)"}},
                 ["policy.yaml: defaults.query: expected a mapping {expr: <PromQL>, target: <value per replica>} "
                  "(got 'sum(up)')"], id="query-as-string"),
    pytest.param({"services": ["web"]},
                 ["policy.yaml: services: Input should be a valid dictionary (got ['web'])"], id="services-as-list"),
    pytest.param({"services": {"web": {"min": 4, "max": 2}}},
                 ["policy.yaml: services.web.max: must be at least min (4, from policy.yaml: services.web.min) (got 2)"],
                 id="min-above-max-in-one-entry"),
    pytest.param({"defaults": {"step": {"high": 30, "low": 60}}},
                 ["policy.yaml: defaults.step.low: must be below step.high (30, from policy.yaml: defaults.step.high) "
                  "(got 60)"], id="step-low-above-high"),
    pytest.param({"defaults": {"cpu": 0}, "services": {"a": {"memory": 101}, "b": {"mode": "fast"}}},
                 ["policy.yaml: defaults.cpu: must be in (0, 100] (got 0)",
                  "policy.yaml: services.a.memory: must be in (0, 100] (got 101)",
                  "policy.yaml: services.b.mode: Input should be 'proportional', 'step' or 'alert' (got 'fast')"],
                 id="every-problem-at-once"),
]


@pytest.mark.parametrize(("data", "expected"), FILE_PROBLEMS)
def test_file_problems(data, expected):
    with pytest.raises(ConfigError) as caught:
        load_policy_file(data, "policy.yaml")
    assert caught.value.problems == expected


def test_file_accepts_the_compact_policies_and_nested_forms():
    data = {"services": {"web": {"max": 5, "cpu": 50, "scale_down": {"policies": "pods=1/1m"},
                                 "scale_up": {"policies": [{"type": "Percent", "value": 50, "period": 30}]}}}}
    policy = policy_of("web", {}, load_policy_file(data, "f"))
    assert policy.scale_down.policies == (RatePolicy("pods", 1, 60.0),)
    assert policy.scale_up.policies == (RatePolicy("percent", 50, 30.0),)


@pytest.mark.parametrize("data", [pytest.param(None, id="none"), pytest.param({}, id="empty")])
def test_empty_file(data):
    policy_file = load_policy_file(data, "f")
    assert resolve("web", {}, policy_file) is None
    assert policy_of("web", labels(max="2", cpu="50"), policy_file).max == 2


def test_unmatched_entries_are_reported():
    policy_file = load_policy_file({"services": {"web": {}, "db-*": {}, "api": {}}}, "f")
    assert policy_file.unmatched(["web", "cache"]) == ["db-*", "api"]


# --- Capacity: a % target needs a limit or a reservation -----------------------------------------


@dataclass(frozen=True)
class Res:
    cpus: float = 0.0
    memory: int = 0


@pytest.mark.parametrize(
    ("limit", "reservation", "base"),
    [
        pytest.param(0.5, 0.25, 0.5, id="limit-first"),
        pytest.param(0.0, 0.25, 0.25, id="reservation-fallback"),
        pytest.param(0.0, 0.0, None, id="neither"),
    ],
)
def test_utilisation_base(limit, reservation, base):
    assert utilisation_base(limit, reservation) == base


CAPACITY = [
    pytest.param({"cpu": "50"}, Res(), Res(), [
        f"service web: label {P}.cpu: a % target needs a CPU limit or reservation on the service, and it has "
        "neither (got '50')"], id="cpu-without-limit"),
    pytest.param({"cpu": "50"}, Res(cpus=0.5), Res(), [], id="cpu-limit"),
    pytest.param({"cpu": "50"}, Res(), Res(cpus=0.25), [], id="cpu-reservation"),
    pytest.param({"cpu": "50"}, Res(memory=1 << 30), Res(), [
        f"service web: label {P}.cpu: a % target needs a CPU limit or reservation on the service, and it has "
        "neither (got '50')"], id="memory-limit-does-not-count-for-cpu"),
    pytest.param({"cpu": "50", "memory": "80"}, Res(cpus=1), Res(), [
        f"service web: label {P}.memory: a % target needs a memory limit or reservation on the service, and it "
        "has neither (got '80')"], id="memory-without-limit"),
    pytest.param({"cpu": "none", "query": "up", "query__target": "1"}, Res(), Res(), [], id="query-needs-none"),
    pytest.param({"mode": "alert"}, Res(), Res(), [], id="alert-mode-needs-none"),
]


@pytest.mark.parametrize(("keys", "limits", "reservations", "expected"), CAPACITY)
def test_capacity_problems(keys, limits, reservations, expected):
    resolved = resolve("web", labels(max="5", **keys), TRUSTING)
    assert resolved is not None and resolved.ok, resolved
    assert capacity_problems(resolved, limits, reservations) == expected


def test_capacity_problem_names_the_file_key():
    policy_file = load_policy_file({"defaults": {"memory": 75}}, "policy.yaml")
    resolved = resolve("web", labels(max="5"), policy_file)
    assert capacity_problems(resolved, Res(cpus=1), Res()) == [
        "service web: policy.yaml: defaults.memory: a % target needs a memory limit or reservation on the "
        "service, and it has neither (got 75)"
    ]


def test_policy_is_frozen():
    policy = policy_of("web", labels(max="5", cpu="50"))
    with pytest.raises(AttributeError):
        policy.max = 6  # type: ignore[misc]


# --- PromQL is the operator's: labels name the config's query templates --------------------------

RPS = 'sum(rate(traefik_service_requests_total{service=~"{{service}}.*"}[1m]))'


def test_a_label_names_one_of_the_operators_queries():
    operator = load_policy_file({}, "config", queries={"rps": RPS})
    policy = policy_of("shop_web", labels(max="5", query="rps", query__target="10"), operator)
    assert policy.query_for("shop_web") == 'sum(rate(traefik_service_requests_total{service=~"shop_web.*"}[1m]))'


def test_free_form_promql_in_a_label_is_refused_unless_the_config_allows_it():
    operator = load_policy_file({}, "config", queries={"rps": RPS})
    service_labels = labels(max="5", query='count(up{job="secret"})', query__target="1")
    assert problems_of("web", service_labels, operator) == [
        f"service web: label {P}.query: names no query of the config's queries: (rps); free-form PromQL in a label "
        "is refused unless the config sets allow_label_queries: true (got 'count(up{job=\"secret\"})')"]
    trusting = load_policy_file({}, "config", queries={"rps": RPS}, allow_label_queries=True)
    assert policy_of("web", service_labels, trusting).query == 'count(up{job="secret"})'


def test_without_a_config_a_label_query_is_refused():
    resolved = resolve("web", labels(max="5", query="up", query__target="1"))
    assert resolved is not None and not resolved.ok
    assert "none are defined" in resolved.problems[0]


def test_the_policy_file_may_hold_free_form_promql_or_a_name():
    data = {"services": {"a": {"max": 3, "query": {"expr": "sum(up)", "target": 1}},
                         "b": {"max": 3, "query": {"expr": "rps", "target": 1}}}}
    operator = load_policy_file(data, "config", queries={"rps": RPS})
    assert policy_of("a", {}, operator).query == "sum(up)"
    assert policy_of("b", {}, operator).query == RPS


@pytest.mark.parametrize(("queries", "expected"), [
    pytest.param({"bad name": "up"}, ["config: queries: 'bad name': a query name is a letter or _ then letters, "
                                      "digits, _ . - (at most 63)"], id="bad-name"),
    pytest.param({"rps": " "}, ["config: queries.rps: expected PromQL text (got ' ')"], id="empty"),
])
def test_query_templates_are_checked(queries, expected):
    with pytest.raises(ConfigError) as err:
        load_policy_file({}, "config", queries=queries)
    assert err.value.problems == expected


@pytest.mark.parametrize("name", ['web"}) or vector(1e9', "web'x", "a\\b", "", "-web", "x" * 64])
def test_only_a_docker_service_name_is_substituted(name):
    policy = Policy(max=3, query='sum(x{service="{{service}}"})', query_target=1)
    with pytest.raises(ValueError, match="not a Docker service name"):
        policy.query_for(name)


def test_state_labels_are_never_policy_keys():
    service_labels = {**labels(max="5", cpu="50"), STATE_LABEL: "v1", f"{STATE_LABEL}.alerts": "0123456789ab"}
    assert policy_of("web", service_labels).max == 5
    assert scope_warning("web", {STATE_LABEL: "v1", f"{STATE_LABEL}.alerts": "x"}) is None
