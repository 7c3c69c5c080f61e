"""Scaling policies: what a service's autoscaling is allowed to do, built from deploy labels and the policy file.

A policy is assembled key by key, each layer overriding the one before it:

    built-in defaults <- file `defaults:` <- file `services:` entries matching the service
    (globs in file order, then the exact name, so it wins) <- the service's labels

Every tunable has the same name in both places. Labels are flat, under `swarmshift.autoscale.`
(`swarmshift.autoscale.scale_down.stabilization=5m`); the file nests the same names
(`scale_down: {stabilization: 5m}`). The one exception is the PromQL query: the label
`swarmshift.autoscale.query` is `query.expr` in the file, because YAML cannot make `query`
both a string and the parent of `query.target`.

PromQL is the operator's: the label names one of the config's `queries:` templates
(`swarmshift.autoscale.query=rps`), since anyone who can label a service could otherwise make
the daemon run any query against Prometheus. Free-form PromQL in a label is a problem unless
the config sets `allow_label_queries: true`; the policy file, being the operator's own, may
hold either a template's name or free-form PromQL.

A service is in scope if it carries `swarmshift.autoscale=true` or matches an entry of the
file's `services:`; `swarmshift.autoscale=false` opts it out of both. A `null` in the file or
the label value `none` resets a key to its built-in default, so that an entry can, for
example, drop the `cpu` target that `defaults:` sets.

Every problem is one line naming the service, where the key came from (the label, or the file
and its key path) and the bad value. Nothing here does I/O.
"""

from __future__ import annotations

import difflib
import fnmatch
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Protocol

from pydantic import AfterValidator, BeforeValidator, ValidationError

from swarmshift.config import ConfigError, Duration, Strict, format_duration, problems_from

LABEL_PREFIX = "swarmshift.autoscale"
# Written by the daemon in the same service update as a replica change (see decide.History);
# reserved here so that it is never mistaken for a policy key.
STATE_LABEL = f"{LABEL_PREFIX}.state"
# The alerts that scaled the service (swarmshift.alerts' seen-list), written with the scale they made.
ALERTS_LABEL = f"{STATE_LABEL}.alerts"

# Docker's own rule for service names: what `{{service}}` may be replaced with in a query.
_SERVICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
QUERY_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,62}")


def _is_state_label(name: str) -> bool:
    return name == STATE_LABEL or name.startswith(f"{STATE_LABEL}.")


def promql_string(text: str) -> str:
    """`text` escaped for the inside of a PromQL string literal ("..." or '...')."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("'", "\\'")

Path = tuple[str, ...]


# --- The policy the decision reads -------------------------------------------------------------


@dataclass(frozen=True)
class RatePolicy:
    """HPA's HPAScalingPolicy: at most `value` pods, or `value` percent, per `period` seconds."""

    kind: Literal["pods", "percent"]
    value: int
    period: float

    def __str__(self) -> str:
        return f"{self.kind}={self.value}/{format_duration(self.period)}"


@dataclass(frozen=True)
class Rules:
    """HPA's HPAScalingRules for one direction.

    `select` picks among `policies`: `max` allows the biggest change, `min` the smallest, and
    `disabled` forbids scaling in this direction at all.
    """

    stabilization: float
    policies: tuple[RatePolicy, ...]
    select: Literal["max", "min", "disabled"] = "max"


@dataclass(frozen=True)
class Step:
    """Step mode, for users of threshold autoscalers: above `high` add `size`, below `low` remove it."""

    high: float | None = None
    low: float | None = None
    size: int = 1


# HPA's default behaviour: scale up by max(4 pods, 100 %) per 15 s at once, scale down by up to
# 100 % per 15 s but only to the highest recommendation of the last 5 minutes.
DEFAULT_SCALE_UP = Rules(
    stabilization=0.0,
    policies=(RatePolicy("pods", 4, 15.0), RatePolicy("percent", 100, 15.0)),
    select="max",
)
DEFAULT_SCALE_DOWN = Rules(stabilization=300.0, policies=(RatePolicy("percent", 100, 15.0),), select="max")


@dataclass(frozen=True)
class Policy:
    """One service's scaling policy, fully resolved.

    `cpu` and `memory` are target utilisations in % of the per-task limit (or reservation);
    `query_target` is the target average of `query` per replica. In `step` mode the targets only
    choose which metrics are watched, and `step.high`/`step.low` are compared with each metric in
    its own unit. In `alert` mode only alert webhooks (and the min/max bounds) change replicas.
    `cooldown` is a pause after any scale; it defaults to 0 because the stabilization windows and
    rate limits already do that job, as in HPA.
    """

    max: int
    min: int = 1
    cpu: float | None = None
    memory: float | None = None
    query: str | None = None
    query_target: float | None = None
    tolerance: float = 0.1
    mode: Literal["proportional", "step", "alert"] = "proportional"
    step: Step = Step()
    scale_up: Rules = DEFAULT_SCALE_UP
    scale_down: Rules = DEFAULT_SCALE_DOWN
    cooldown: float = 0.0

    def targets(self) -> dict[str, float]:
        """The metrics this policy watches, by name (`cpu`, `memory`, `query`), with their targets."""
        found = {"cpu": self.cpu, "memory": self.memory, "query": self.query_target if self.query else None}
        return {name: target for name, target in found.items() if target is not None}

    def query_for(self, service: str) -> str | None:
        """The PromQL for `service`, with `{{service}}` substituted; ValueError for a name Docker would refuse.

        The name is checked and escaped so that it can only ever be a string's content, never
        change the expression around it (a service is named by whoever can create one).
        """
        if not self.query:
            return None
        if not _SERVICE_NAME.fullmatch(service):
            raise ValueError(f"service name {service!r} is not a Docker service name: not substituted into PromQL")
        return self.query.replace("{{service}}", promql_string(service))


# --- Validation of one layer (a file section or a service's labels) ----------------------------
# Every field is optional: a layer sets only some keys, and validation of a layer checks only the
# values it sets. Relations between keys (min <= max, ...) are checked on the merged result.


def _no_bool(value: Any) -> Any:
    # pydantic would read `true` as 1; a YAML `max: yes` is a mistake, not a number.
    if isinstance(value, bool):
        raise ValueError("expected a number, not true/false")
    return value


def _lower(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


def _target(value: float) -> float:
    # NaN fails the comparison, and infinity is above 100.
    if not 0 < value <= 100:
        raise ValueError("must be in (0, 100]")
    return value


def _positive(value: float) -> float:
    if not (math.isfinite(value) and value > 0):
        raise ValueError("must be a number greater than 0")
    return value


def _at_least(lowest: int) -> Callable[[int], int]:
    def check(value: int) -> int:
        if value < lowest:
            raise ValueError(f"must be at least {lowest}")
        return value

    return check


def _min_replicas(value: int) -> int:
    # 0 replicas is "turned off" (decide._bounds): a service the autoscaler took to 0 would
    # never be scaled again, since no task would report a metric. Scale-from-zero may lift this.
    if value < 1:
        raise ValueError("must be at least 1: a service scaled to 0 has no tasks to measure, so it would never "
                         "come back")
    return value


def _tolerance(value: float) -> float:
    if not (math.isfinite(value) and 0 <= value < 1):
        raise ValueError("must be in [0, 1)")
    return value


def _duration_at_most(limit: float) -> Callable[[float], float]:
    # HPA's own limits (1 h windows, 30 min periods); they also bound the state label's size.
    def check(value: float) -> float:
        if value > limit:
            raise ValueError(f"must be at most {format_duration(limit)}")
        return value

    return check


def _period(value: float) -> float:
    if value <= 0:
        raise ValueError("must be longer than 0s")
    return _duration_at_most(1800)(value)


_COMPACT_POLICY = re.compile(r"\s*([A-Za-z]+)\s*=\s*([^/\s]+)\s*/\s*(\S+)\s*")


def _policies(value: Any) -> Any:
    """The compact form `pods=4/15s,percent=100/15s` as the list the file form uses."""
    if not isinstance(value, str):
        return value
    items = []
    for part in value.split(","):
        match = _COMPACT_POLICY.fullmatch(part)
        if not match:
            raise ValueError("expected TYPE=VALUE/PERIOD items separated by commas, e.g. pods=4/15s,percent=100/15s")
        items.append({"type": match.group(1), "value": match.group(2), "period": match.group(3)})
    return items


def _non_empty(value: tuple) -> tuple:
    if not value:
        raise ValueError("at least one policy is needed (use select: disabled to stop scaling this way)")
    return value


def _query_mapping(value: Any) -> Any:
    if isinstance(value, str):
        raise ValueError("expected a mapping {expr: <PromQL>, target: <value per replica>}")
    return value


MinReplicas = Annotated[int, BeforeValidator(_no_bool), AfterValidator(_min_replicas)]
AtLeastOne = Annotated[int, BeforeValidator(_no_bool), AfterValidator(_at_least(1))]
Target = Annotated[float, BeforeValidator(_no_bool), AfterValidator(_target)]
PositiveNumber = Annotated[float, BeforeValidator(_no_bool), AfterValidator(_positive)]
Tolerance = Annotated[float, BeforeValidator(_no_bool), AfterValidator(_tolerance)]
Window = Annotated[Duration, AfterValidator(_duration_at_most(3600))]
Period = Annotated[Duration, AfterValidator(_period)]


class RatePolicySpec(Strict):
    type: Annotated[Literal["pods", "percent"], BeforeValidator(_lower)]
    value: AtLeastOne
    period: Period


class RulesSpec(Strict):
    stabilization: Window | None = None
    policies: Annotated[tuple[RatePolicySpec, ...], BeforeValidator(_policies), AfterValidator(_non_empty)] | None = None
    select: Annotated[Literal["max", "min", "disabled"], BeforeValidator(_lower)] | None = None


class StepSpec(Strict):
    high: PositiveNumber | None = None
    low: PositiveNumber | None = None
    size: AtLeastOne | None = None


class QuerySpec(Strict):
    expr: str | None = None
    target: PositiveNumber | None = None


class PolicySpec(Strict):
    """One layer of a policy, as written in the file (and, flattened, in labels)."""

    min: MinReplicas | None = None
    max: AtLeastOne | None = None
    cpu: Target | None = None
    memory: Target | None = None
    query: Annotated[QuerySpec, BeforeValidator(_query_mapping)] | None = None
    tolerance: Tolerance | None = None
    mode: Annotated[Literal["proportional", "step", "alert"], BeforeValidator(_lower)] | None = None
    step: StepSpec | None = None
    scale_up: RulesSpec | None = None
    scale_down: RulesSpec | None = None
    cooldown: Duration | None = None


def _empty_is_all_defaults(value: Any) -> Any:
    # `services: {web: }` opts `web` in with the defaults; YAML reads the empty entry as null.
    return {} if value is None else value


Section = Annotated[PolicySpec, BeforeValidator(_empty_is_all_defaults)]


class PolicyFileSpec(Strict):
    """The policy file's schema; embeddable in a larger config model."""

    defaults: Section = PolicySpec()
    services: dict[str, Section] = {}


# --- Labels --------------------------------------------------------------------------------------

# Label key (after `swarmshift.autoscale.`) -> key path in PolicySpec.
LABEL_KEYS: dict[str, Path] = {
    "min": ("min",),
    "max": ("max",),
    "cpu": ("cpu",),
    "memory": ("memory",),
    "query": ("query", "expr"),
    "query.target": ("query", "target"),
    "tolerance": ("tolerance",),
    "mode": ("mode",),
    "step.high": ("step", "high"),
    "step.low": ("step", "low"),
    "step.size": ("step", "size"),
    **{
        f"{direction}.{key}": (direction, key)
        for direction in ("scale_up", "scale_down")
        for key in ("stabilization", "policies", "select")
    },
    "cooldown": ("cooldown",),
}
_PATH_LABELS = {path: f"{LABEL_PREFIX}.{key}" for key, path in LABEL_KEYS.items()}
_TRUE, _FALSE = {"true", "yes", "1", "on"}, {"false", "no", "0", "off"}


def _label_name(path: Path) -> str:
    return _PATH_LABELS.get(path, f"{LABEL_PREFIX}.{'.'.join(path)}")


def _file_key(path: Path) -> str:
    return ".".join(path)


def _flatten(data: Mapping[str, Any], prefix: Path = ()) -> dict[Path, Any]:
    """Leaves by key path; lists (rate policies) are leaves, replaced whole by a later layer."""
    out: dict[Path, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, (*prefix, key)))
        else:
            out[(*prefix, key)] = value
    return out


def _nest(leaves: Mapping[Path, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path, value in leaves.items():
        node = out
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return out


def _locate(loc: tuple[Any, ...], known: Iterable[Path]) -> tuple[Path, str]:
    """The longest known key path that starts `loc`, and the rest of `loc` as text."""
    for cut in range(len(loc), 0, -1):
        if tuple(loc[:cut]) in known:
            rest = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc[cut:]).lstrip(".")
            return tuple(loc[:cut]), rest
    return tuple(str(p) for p in loc), ""


def _message(error: Mapping[str, Any]) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown key"
    return str(error["msg"]).removeprefix("Value error, ")


@dataclass(frozen=True)
class Layer:
    """Validated leaves of one layer, with where each came from and the value as written."""

    name: str  # for the policy's `source`: "defaults", a file entry's key, or "labels"
    leaves: Mapping[Path, Any]
    where: Mapping[Path, str]
    written: Mapping[Path, Any]


def _labels_layer(service: str, labels: Mapping[str, str]) -> tuple[Layer, list[str]]:
    problems: list[str] = []
    raw: dict[Path, Any] = {}
    for name in sorted(labels):
        if not name.startswith(f"{LABEL_PREFIX}.") or _is_state_label(name):
            continue
        key = name[len(LABEL_PREFIX) + 1:]
        value = labels[name].strip()
        if key not in LABEL_KEYS:
            close = difflib.get_close_matches(key, LABEL_KEYS, n=1)
            hint = f" (did you mean {LABEL_PREFIX}.{close[0]}?)" if close else ""
            problems.append(f"service {service}: label {name}: unknown key{hint} (got {labels[name]!r})")
            continue
        raw[LABEL_KEYS[key]] = None if value.lower() == "none" else value
    leaves: dict[Path, Any] = {}
    try:
        spec = PolicySpec.model_validate(_nest(raw))
    except ValidationError as err:
        for error in err.errors():
            path, rest = _locate(error["loc"], raw)
            detail = f"{rest}: " if rest else ""
            got = f" (got {labels.get(_label_name(path), '')!r})" if path in raw else ""
            problems.append(f"service {service}: label {_label_name(path)}: {detail}{_message(error)}{got}")
    else:
        leaves = _flatten(spec.model_dump(exclude_unset=True))
    where = {path: f"label {_label_name(path)}" for path in raw}
    written = {path: labels[_label_name(path)] for path in raw}
    return Layer("labels", leaves, where, written), problems


def opt_in(labels: Mapping[str, str]) -> bool | None:
    """The `swarmshift.autoscale` label: True, False, or None when absent. Raises ValueError if garbled."""
    value = labels.get(LABEL_PREFIX)
    if value is None:
        return None
    text = value.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"label {LABEL_PREFIX}: must be true or false (got {value!r})")


# --- The policy file -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PolicyFile:
    """A validated policy file: its `defaults:` and its `services:` entries, in file order."""

    origin: str = "policy file"
    defaults: Layer = field(default_factory=lambda: Layer("defaults", {}, {}, {}))
    entries: tuple[Layer, ...] = ()
    # The operator's named PromQL templates, which `swarmshift.autoscale.query` labels refer to.
    queries: Mapping[str, str] = field(default_factory=dict)
    allow_label_queries: bool = False  # free-form PromQL in labels too (anyone who labels services)

    @classmethod
    def from_spec(cls, spec: PolicyFileSpec, data: Mapping[str, Any], origin: str,
                  queries: Mapping[str, str] | None = None, allow_label_queries: bool = False) -> PolicyFile:
        """A PolicyFile from an already validated spec; `data` is the raw mapping it came from."""

        def layer(name: str, section: PolicySpec, raw: Any, prefix: str) -> Layer:
            leaves = _flatten(section.model_dump(exclude_unset=True))
            written = _flatten(raw) if isinstance(raw, Mapping) else {}
            where = {path: f"{origin}: {prefix}.{_file_key(path)}" for path in leaves}
            return Layer(name, leaves, where, {p: written.get(p, v) for p, v in leaves.items()})

        raw_services = data.get("services") or {}
        return cls(
            origin=origin,
            defaults=layer("defaults", spec.defaults, data.get("defaults"), "defaults"),
            entries=tuple(
                layer(key, section, raw_services.get(key), f"services.{key}") for key, section in spec.services.items()
            ),
            queries=dict(queries or {}),
            allow_label_queries=allow_label_queries,
        )

    def matching(self, service: str) -> list[Layer]:
        """The entries that apply to `service`: globs in file order, then the exact name last."""
        globs = [e for e in self.entries if _is_glob(e.name) and fnmatch.fnmatchcase(service, e.name)]
        exact = [e for e in self.entries if not _is_glob(e.name) and e.name == service]
        return globs + exact

    def unmatched(self, services: Iterable[str]) -> list[str]:
        """Entries that match none of `services`: usually a typo in a service name."""
        names = list(services)
        return [
            e.name
            for e in self.entries
            if not any((fnmatch.fnmatchcase(n, e.name) if _is_glob(e.name) else n == e.name) for n in names)
        ]


def _is_glob(key: str) -> bool:
    return any(c in key for c in "*?[")


def load_policy_file(data: Mapping[str, Any] | None, origin: str, *, queries: Mapping[str, str] | None = None,
                     allow_label_queries: bool = False) -> PolicyFile:
    """The validated policy file, or ConfigError with one line per problem (`origin: key.path: ...`).

    `queries` are the config's named PromQL templates (checked by `query_problems`).
    """
    data = data or {}
    try:
        spec = PolicyFileSpec.model_validate(data)
    except ValidationError as err:
        raise ConfigError(problems_from(err, data, origin)) from err
    query_errors = query_problems(queries or {}, origin)
    if query_errors:
        raise ConfigError(query_errors)
    policy_file = PolicyFile.from_spec(spec, data, origin, queries, allow_label_queries)
    # Contradictions inside one section are the file's fault whatever the services' labels say,
    # so `run` refuses to start on them rather than skipping every matching service.
    problems = []
    for section in (policy_file.defaults, *policy_file.entries):
        problems += _contradictions(section.leaves, section.where, section.written, prefix="")
    if problems:
        raise ConfigError(problems)
    return policy_file


def query_problems(queries: Mapping[str, Any], origin: str) -> list[str]:
    """What is wrong with the config's `queries:`: names a label can carry, non-empty PromQL."""
    problems = []
    for name, template in queries.items():
        if not isinstance(name, str) or not QUERY_NAME.fullmatch(name):
            problems.append(f"{origin}: queries: {name!r}: a query name is a letter or _ then letters, digits, "
                            f"_ . - (at most 63)")
        if not isinstance(template, str) or not template.strip():
            problems.append(f"{origin}: queries.{name}: expected PromQL text (got {template!r})")
    return problems


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _named_query(leaves: dict[Path, Any], label_layer: Layer, policy_file: PolicyFile) -> list[str]:
    """Replace a query name by the operator's template in `leaves`; the problem when a label holds free-form PromQL."""
    path = ("query", "expr")
    expr = leaves.get(path)
    if expr is None:
        return []
    if expr in policy_file.queries:
        leaves[path] = policy_file.queries[expr]
        return []
    if label_layer.leaves.get(path) is None or policy_file.allow_label_queries:
        return []  # free-form PromQL from the policy file, or labels the operator trusts
    known = ", ".join(sorted(policy_file.queries)) or "none are defined"
    return [f"label {_label_name(path)}: names no query of the config's queries: ({known}); free-form PromQL in a "
            f"label is refused unless the config sets allow_label_queries: true (got {_short(str(expr))!r})"]


# --- Resolution ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Resolved:
    """A service's policy and where it came from, or the problems that stop it from having one.

    `source` names the layers that contributed, for logs: `labels`, `file:defaults,web-*+labels`.
    `origins` maps each key that was set (file form, dotted) to where it was set.
    """

    service: str
    policy: Policy | None
    source: str
    problems: tuple[str, ...] = ()
    origins: tuple[tuple[str, str], ...] = ()
    written: tuple[tuple[str, Any], ...] = ()

    @property
    def ok(self) -> bool:
        return self.policy is not None

    def where(self, key: str) -> str:
        """Where key `key` (file form, e.g. `cpu`, `scale_down.stabilization`) was set."""
        return dict(self.origins).get(key) or _label_name(tuple(key.split(".")))


def resolve(service: str, labels: Mapping[str, str], policy_file: PolicyFile | None = None) -> Resolved | None:
    """The policy of `service`, or None if it is not in scope.

    Bad labels or a bad combination never raise: the result carries the problems and no policy,
    so the daemon can skip this one service and keep scaling the others.
    """
    policy_file = policy_file or PolicyFile()
    try:
        chosen = opt_in(labels)
    except ValueError as err:
        return Resolved(service, None, "labels", (f"service {service}: {err}",))
    entries = policy_file.matching(service)
    if chosen is False or (chosen is None and not entries):
        return None

    label_layer, problems = _labels_layer(service, labels)
    layers = [policy_file.defaults, *entries, label_layer]
    leaves: dict[Path, Any] = {}
    where: dict[Path, str] = {}
    written: dict[Path, Any] = {}
    for layer in layers:
        leaves.update(layer.leaves)
        where.update(layer.where)
        written.update(layer.written)
    source = _source(policy_file, entries, label_layer)
    # A key reset to its default (null / `none`) counts as unset from here on.
    leaves = {path: value for path, value in leaves.items() if value is not None}
    origins = tuple((_file_key(p), where[p]) for p in leaves if p in where)
    shown = tuple((_file_key(p), written[p]) for p in leaves if p in written)
    if not problems:
        lines = _named_query(leaves, label_layer, policy_file) + _combination_problems(leaves, where, written)
        problems = [f"service {service}: {line}" for line in lines]
    if problems:
        return Resolved(service, None, source, tuple(problems), origins, shown)
    return Resolved(service, _build(leaves), source, (), origins, shown)


def _source(policy_file: PolicyFile, entries: list[Layer], labels: Layer) -> str:
    names = (["defaults"] if policy_file.defaults.leaves else []) + [e.name for e in entries]
    parts = ([f"file:{','.join(names)}"] if names else []) + (["labels"] if labels.where else [])
    return "+".join(parts) or "builtin"


def _got(path: Path, written: Mapping[Path, Any]) -> str:
    return f" (got {written[path]!r})" if path in written else ""


def _contradictions(
    leaves: Mapping[Path, Any], where: Mapping[Path, str], written: Mapping[Path, Any], prefix: str
) -> list[str]:
    """Pairs of keys that contradict each other; both must be set in `leaves`."""
    problems = []
    lo, hi = leaves.get(("min",)), leaves.get(("max",))
    if lo is not None and hi is not None and lo > hi:
        problems.append(
            f"{prefix}{where[('max',)]}: must be at least min ({lo}, from {where[('min',)]}){_got(('max',), written)}"
        )
    low, high = leaves.get(("step", "low")), leaves.get(("step", "high"))
    if low is not None and high is not None and low >= high:
        problems.append(
            f"{prefix}{where[('step', 'low')]}: must be below step.high ({high:g}, from {where[('step', 'high')]})"
            f"{_got(('step', 'low'), written)}"
        )
    return problems


def _combination_problems(
    leaves: Mapping[Path, Any], where: Mapping[Path, str], written: Mapping[Path, Any]
) -> list[str]:
    """What only the merged policy can show: missing keys and keys that do not fit together."""

    def at(path: Path) -> str:
        return where.get(path) or _label_name(path)

    problems = []
    if ("max",) not in leaves:
        problems.append(f"{_label_name(('max',))}: required: set the label, or max in the policy file")
    problems += _contradictions(leaves, {p: at(p) for p in _PATH_LABELS}, written, prefix="")
    expr, target = ("query", "expr"), ("query", "target")
    if expr in leaves and target not in leaves:
        problems.append(f"{at(expr)}: needs a target: set {_label_name(target)} (query.target in the file)")
    if target in leaves and expr not in leaves:
        problems.append(f"{at(target)}: a target without a query: set {_label_name(expr)} (query.expr in the file)")
    mode = leaves.get(("mode",), "proportional")
    percent = [name for name in ("cpu", "memory") if (name,) in leaves]
    has_query = expr in leaves and target in leaves
    if mode != "alert" and not percent and expr not in leaves and target not in leaves:
        problems.append(
            f"{LABEL_PREFIX}: no metric: set {LABEL_PREFIX}.cpu, .memory or .query "
            f"(or mode=alert to scale on alerts only)"
        )
    if mode == "step":
        for key in ("high", "low"):
            if ("step", key) not in leaves:
                problems.append(f"{_label_name(('step', key))}: required in step mode")
        if percent and has_query:
            problems.append(
                f"{at(('mode',))}: step thresholds are in one unit, so step mode takes either the query "
                f"or cpu/memory, not both (got {', '.join(percent)} and query)"
            )
    return problems


def _build(leaves: Mapping[Path, Any]) -> Policy:
    tree = _nest(leaves)

    def rules(raw: Mapping[str, Any], default: Rules) -> Rules:
        policies = raw.get("policies")
        return Rules(
            stabilization=raw.get("stabilization", default.stabilization),
            policies=(
                tuple(RatePolicy(p["type"], p["value"], p["period"]) for p in policies)
                if policies is not None
                else default.policies
            ),
            select=raw.get("select", default.select),
        )

    step = tree.get("step", {})
    query = tree.get("query", {})
    return Policy(
        max=tree["max"],
        min=tree.get("min", 1),
        cpu=tree.get("cpu"),
        memory=tree.get("memory"),
        query=query.get("expr"),
        query_target=query.get("target"),
        tolerance=tree.get("tolerance", 0.1),
        mode=tree.get("mode", "proportional"),
        step=Step(high=step.get("high"), low=step.get("low"), size=step.get("size", 1)),
        scale_up=rules(tree.get("scale_up", {}), DEFAULT_SCALE_UP),
        scale_down=rules(tree.get("scale_down", {}), DEFAULT_SCALE_DOWN),
        cooldown=tree.get("cooldown", 0.0),
    )


def scope_warning(service: str, labels: Mapping[str, str], policy_file: PolicyFile | None = None) -> str | None:
    """A hint for a service that has autoscale tunables but is not in scope, the classic "it never scales"."""
    try:
        chosen = opt_in(labels)
    except ValueError:
        return None  # resolve() reports that one
    if chosen is not None or (policy_file and policy_file.matching(service)):
        return None
    tunables = sorted(n for n in labels if n.startswith(f"{LABEL_PREFIX}.") and not _is_state_label(n))
    if not tunables:
        return None
    return f"service {service}: has {', '.join(tunables)} but not {LABEL_PREFIX}=true, so it is not autoscaled"


# --- Capacity ------------------------------------------------------------------------------------


class Resources(Protocol):
    """CPU in cores and memory in bytes, 0 meaning unset (swarmshift.swarm.Resources fits)."""

    cpus: float
    memory: float


def utilisation_base(limit: float, reservation: float) -> float | None:
    """What a % target is a percentage of: the per-task limit, else the reservation, else nothing."""
    if limit > 0:
        return limit
    if reservation > 0:
        return reservation
    return None


def capacity_problems(resolved: Resolved, limits: Resources, reservations: Resources) -> list[str]:
    """A % target on a service with neither a limit nor a reservation for that resource."""
    policy = resolved.policy
    if policy is None or policy.mode == "alert":
        return []
    problems = []
    checks = (("cpu", policy.cpu, limits.cpus, reservations.cpus, "CPU"),
              ("memory", policy.memory, limits.memory, reservations.memory, "memory"))
    for key, target, limit, reservation, what in checks:
        if target is not None and utilisation_base(limit, reservation) is None:
            got = dict(resolved.written).get(key, target)
            problems.append(
                f"service {resolved.service}: {resolved.where(key)}: a % target needs a {what} limit or "
                f"reservation on the service, and it has neither (got {got!r})"
            )
    return problems
