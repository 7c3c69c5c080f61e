"""The blue-green model: colors, apps read from service labels, routing, phases, and the deploy state kept in labels.

An app is two Swarm services labelled `swarmshift.bluegreen.app=<app>` and
`swarmshift.bluegreen.color=blue|green`. The operator owns the routing labels (port, rule,
health path, preview rule, strategy); the controller owns the `swarmshift.bluegreen.state.*`
labels and the autoscaler lock `swarmshift.bluegreen.lock`.

Where the state lives, and why it survives anything:

- Both colors carry the full state (`AppState.to_labels()`), each copy stamped with a
  generation number that grows by one on every change. The copy with the highest generation
  is authoritative (`choose_state`). The controller writes one color and then the other, so a
  kill between the two writes leaves one newer copy, which wins.
- A state change is written to Swarm *before* its side effects run (see `bluegreen.phases`),
  and a side effect that changes a service travels in the same service update as the state.
- `docker stack deploy` of one color's stack replaces that service's labels: the other color
  still holds the state, and the controller writes it back. When both copies are gone,
  `infer_state` rebuilds a Stable state from what is observable: the routing the proxy has
  loaded, else the only color with replicas, else blue.

Nothing here does I/O.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Protocol

PREFIX = "swarmshift.bluegreen"
APP_LABEL = f"{PREFIX}.app"
COLOR_LABEL = f"{PREFIX}.color"
PORT_LABEL = f"{PREFIX}.port"
RULE_LABEL = f"{PREFIX}.rule"
HEALTH_PATH_LABEL = f"{PREFIX}.health.path"
PREVIEW_RULE_LABEL = f"{PREFIX}.preview.rule"
STRATEGY_LABEL = f"{PREFIX}.strategy"
# The autoscaler leaves alone every service that carries this label. Its value is the deploy id
# while a deploy runs (both colors), and IDLE_LOCK on the color that takes no traffic.
LOCK_LABEL = f"{PREFIX}.lock"
IDLE_LOCK = "idle"
STATE_PREFIX = f"{PREFIX}.state."

OPERATOR_LABELS = (APP_LABEL, COLOR_LABEL, PORT_LABEL, RULE_LABEL, HEALTH_PATH_LABEL, PREVIEW_RULE_LABEL,
                   STRATEGY_LABEL)

DEFAULT_HEALTH_PATH = "/health"
_REASON_MAX = 400  # labels are not a log: keep the reason readable in `docker service inspect`


class Color(StrEnum):
    BLUE = "blue"
    GREEN = "green"

    @property
    def other(self) -> Color:
        return Color.GREEN if self is Color.BLUE else Color.BLUE


class Strategy(StrEnum):
    BLUEGREEN = "bluegreen"  # all traffic moves at once: 100/0 -> 0/100
    PROGRESSIVE = "progressive"  # weights move in steps, verified between steps (Traefik only)


# --- Routing rules -----------------------------------------------------------------------------
#
# Traefik drops a router whose rule does not parse, and with it the app's traffic; the file itself
# is still valid, so Traefik would not even keep the old config. Rules are therefore checked here,
# with Traefik v3's grammar: matchers joined by &&, || and !, with parentheses.

_MATCHER_ARITY = {
    "Host": (1, 1), "HostRegexp": (1, 1), "Path": (1, 1), "PathPrefix": (1, 1), "PathRegexp": (1, 1),
    "Method": (1, 1), "Header": (2, 2), "HeaderRegexp": (2, 2), "Query": (1, 2), "QueryRegexp": (1, 2),
    "ClientIP": (1, 1),
}
_TOKEN = re.compile(r"\s*(?:(?P<op>&&|\|\||!|\(|\)|,)|(?P<name>[A-Za-z]+)|`(?P<bq>[^`]*)`|\"(?P<dq>(?:[^\"\\]|\\.)*)\")")


class RuleError(ValueError):
    """A rule that Traefik would refuse."""


@dataclass(frozen=True)
class Matcher:
    name: str
    args: tuple[str, ...]


@dataclass(frozen=True)
class Not:
    inner: RuleNode


@dataclass(frozen=True)
class AllOf:
    items: tuple[RuleNode, ...]


@dataclass(frozen=True)
class AnyOf:
    items: tuple[RuleNode, ...]


RuleNode = Matcher | Not | AllOf | AnyOf


def parse_rule(text: str) -> RuleNode:
    """The rule's syntax tree, or RuleError naming the first problem.

    `{{` and `}}` are refused anywhere: Traefik's file provider reads every file as a Go
    template, so a rule holding them would be rendered (or break the whole file) there.
    """
    for delimiter in ("{{", "}}"):
        if delimiter in text:
            raise RuleError(f"{delimiter!r} is a Go template delimiter, which Traefik's file provider would expand")
    tokens: list[tuple[str, str]] = []
    pos = 0
    stripped = text.rstrip()
    while pos < len(stripped):
        match = _TOKEN.match(stripped, pos)
        if not match:
            pos += len(stripped[pos:]) - len(stripped[pos:].lstrip())
            raise RuleError(f"unexpected {stripped[pos:pos + 10]!r} at character {pos + 1}")
        if match.group("op"):
            tokens.append(("op", match.group("op")))
        elif match.group("name"):
            tokens.append(("name", match.group("name")))
        else:
            tokens.append(("str", match.group("bq") if match.group("bq") is not None else match.group("dq")))
        pos = match.end()
    if not tokens:
        raise RuleError("the rule is empty")
    parser = _RuleParser(tokens)
    node = parser.expression()
    if parser.pos != len(tokens):
        raise RuleError(f"unexpected {tokens[parser.pos][1]!r} after a complete rule")
    return node


class _RuleParser:
    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.tokens, self.pos = tokens, 0

    def _peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _take(self, kind: str, value: str | None = None) -> str:
        token = self._peek()
        if token is None or token[0] != kind or (value is not None and token[1] != value):
            want = value or {"name": "a matcher", "str": "a quoted value"}.get(kind, kind)
            got = "the end of the rule" if token is None else repr(token[1])
            raise RuleError(f"expected {want}, found {got}")
        self.pos += 1
        return token[1]

    def expression(self) -> RuleNode:
        items = [self._conjunction()]
        while self._peek() == ("op", "||"):
            self.pos += 1
            items.append(self._conjunction())
        return items[0] if len(items) == 1 else AnyOf(tuple(items))

    def _conjunction(self) -> RuleNode:
        items = [self._unary()]
        while self._peek() == ("op", "&&"):
            self.pos += 1
            items.append(self._unary())
        return items[0] if len(items) == 1 else AllOf(tuple(items))

    def _unary(self) -> RuleNode:
        if self._peek() == ("op", "!"):
            self.pos += 1
            return Not(self._unary())
        if self._peek() == ("op", "("):
            self.pos += 1
            node = self.expression()
            self._take("op", ")")
            return node
        name = self._take("name")
        if name not in _MATCHER_ARITY:
            raise RuleError(f"unknown matcher {name} (Traefik v3 knows {', '.join(sorted(_MATCHER_ARITY))})")
        self._take("op", "(")
        args = [self._take("str")]
        while self._peek() == ("op", ","):
            self.pos += 1
            args.append(self._take("str"))
        self._take("op", ")")
        low, high = _MATCHER_ARITY[name]
        if not low <= len(args) <= high:
            want = str(low) if low == high else f"{low} or {high}"
            raise RuleError(f"{name} takes {want} argument{'s' if high > 1 else ''}, got {len(args)}")
        if any(not arg for arg in args):
            raise RuleError(f"{name} has an empty argument")
        return Matcher(name, tuple(args))


def rule_hosts(node: RuleNode) -> tuple[str, ...] | None:
    """The host names of a rule made only of Host matchers joined by ||, else None."""
    if isinstance(node, Matcher):
        return node.args if node.name == "Host" else None
    if isinstance(node, AnyOf):
        hosts: list[str] = []
        for item in node.items:
            found = rule_hosts(item)
            if found is None:
                return None
            hosts.extend(found)
        return tuple(hosts)
    return None


# --- Apps --------------------------------------------------------------------------------------

_APP_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
# The Traefik document names its objects <app>, <app>-blue, <app>-green and <app>-preview (and an
# app's trial document <app>-trial…), and the file provider drops duplicate names across files:
# an app may not be named like another's parts.
_RESERVED_SUFFIXES = ("-blue", "-green", "-preview", "-trial")
_HEALTH_PATH = re.compile(r"^/[^\s\"'`;{}\\]*$")


@dataclass(frozen=True)
class AppDefaults:
    """What an app gets for a routing label it does not set. `{app}` in a rule becomes the app's name."""

    port: int | None = None
    rule: str | None = None
    health_path: str = DEFAULT_HEALTH_PATH
    preview_rule: str | None = None
    strategy: Strategy = Strategy.BLUEGREEN


@dataclass(frozen=True)
class App:
    name: str
    blue_service: str
    green_service: str
    port: int
    rule: str
    health_path: str = DEFAULT_HEALTH_PATH
    preview_rule: str | None = None
    strategy: Strategy = Strategy.BLUEGREEN

    def service(self, color: Color) -> str:
        return self.blue_service if color is Color.BLUE else self.green_service

    def url(self, color: Color) -> str:
        """Where the color's tasks answer: the Swarm service DNS name, on the overlay network."""
        return f"http://{self.service(color)}:{self.port}"


class Labelled(Protocol):
    """A Swarm service as far as the model cares (swarmshift.swarm.Service fits)."""

    @property
    def name(self) -> str: ...

    @property
    def labels(self) -> Mapping[str, str]: ...


@dataclass(frozen=True)
class Discovery:
    apps: dict[str, App]
    problems: list[str]
    # App name -> the services that claim it, for apps left out because of problems.
    broken: dict[str, list[str]] = field(default_factory=dict)


def _problem(service: str, label: str, message: str, value: str | None = None) -> str:
    got = f" (got {value!r})" if value is not None else ""
    return f"{service}: {label}: {message}{got}"


def _known_label(key: str) -> bool:
    return key in OPERATOR_LABELS or key == LOCK_LABEL or key in STATE_KEYS


def _check_port(value: str) -> str | None:
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        return "expected a port number from 1 to 65535"
    return None


def _check_rule(value: str) -> str | None:
    try:
        parse_rule(value)
    except RuleError as err:
        return f"not a Traefik v3 rule: {err}"
    return None


def _check_health_path(value: str) -> str | None:
    if not _HEALTH_PATH.match(value):
        return "expected an absolute path such as /health, without spaces or quotes"
    return None


def _check_strategy(value: str) -> str | None:
    if value not in {s.value for s in Strategy}:
        return f"expected one of {', '.join(s.value for s in Strategy)}"
    return None


_ATTRIBUTES = {
    PORT_LABEL: _check_port,
    RULE_LABEL: _check_rule,
    HEALTH_PATH_LABEL: _check_health_path,
    PREVIEW_RULE_LABEL: _check_rule,
    STRATEGY_LABEL: _check_strategy,
}


def discover(services: Iterable[Labelled], defaults: AppDefaults = AppDefaults()) -> Discovery:
    """The apps the labels describe, and one line per problem.

    An app with a problem is left out (and listed in `broken`): the controller does not touch
    an app it cannot describe exactly, so its routing stays as it was.
    """
    problems: list[str] = []
    members: dict[str, list[tuple[Color, Labelled]]] = {}
    broken: dict[str, list[str]] = {}
    unknown: dict[str, list[str]] = {}  # service -> its unknown-label problems, charged to its app
    for svc in sorted(services, key=lambda s: s.name):
        ours = {k: v for k, v in svc.labels.items() if k.startswith(PREFIX + ".")}
        if not ours:
            continue
        unknown[svc.name] = [_problem(svc.name, key, "unknown label", ours[key])
                             for key in sorted(ours) if not _known_label(key)]
        app = ours.get(APP_LABEL)
        color = ours.get(COLOR_LABEL)
        if app is None:
            problems.extend(unknown[svc.name])
            if any(k in ours for k in OPERATOR_LABELS):
                problems.append(_problem(svc.name, APP_LABEL, "missing: the service carries blue-green labels"))
            continue
        if not _APP_NAME.match(app) or app.endswith(_RESERVED_SUFFIXES):
            problems.extend(unknown[svc.name])
            problems.append(_problem(
                svc.name, APP_LABEL,
                "expected a lowercase DNS name (a-z, 0-9, -) that does not end in -blue, -green or -preview", app))
            continue
        if color not in {c.value for c in Color}:
            problems.extend(unknown[svc.name])
            problems.append(_problem(svc.name, COLOR_LABEL, "expected blue or green", color)
                            if color is not None else _problem(svc.name, COLOR_LABEL, "missing: expected blue or green"))
            broken.setdefault(app, []).append(svc.name)
            continue
        members.setdefault(app, []).append((Color(color), svc))

    apps: dict[str, App] = {}
    for name, found in sorted(members.items()):
        app, app_problems = _describe(name, found, defaults, name in broken)
        problems.extend(line for _, svc in found for line in unknown[svc.name])
        problems.extend(app_problems)
        if app is None or any(unknown[svc.name] for _, svc in found):
            broken[name] = sorted({*broken.get(name, []), *(svc.name for _, svc in found)})
        else:
            apps[name] = app
    return Discovery(apps=apps, problems=problems, broken=broken)


def _describe(name: str, found: list[tuple[Color, Labelled]], defaults: AppDefaults,
              has_broken_member: bool) -> tuple[App | None, list[str]]:
    """One app from its services' labels, or None and the problems that prevent it."""
    problems: list[str] = []
    by_color: dict[Color, Labelled] = {}
    for color in Color:
        named = [svc for c, svc in found if c is color]
        if len(named) > 1:
            problems.append(f"app {name}: {len(named)} {color} services: "
                            f"{', '.join(s.name for s in named)}; exactly one may carry {COLOR_LABEL}={color}")
        elif not named:
            problems.append(f"app {name}: no {color} service: label one with {APP_LABEL}={name} "
                            f"and {COLOR_LABEL}={color}")
        else:
            by_color[color] = named[0]
    if problems or has_broken_member:
        return None, problems  # a missing or doubled color makes the rest guesswork: report it alone
    values: dict[str, str] = {}
    disputed: set[str] = set()  # labels set to a bad value, or to different values on the two colors
    for label, check in _ATTRIBUTES.items():
        seen: dict[str, str] = {}
        for _, svc in found:
            value = svc.labels.get(label)
            if value is None:
                continue
            message = check(value)
            if message:
                problems.append(_problem(svc.name, label, message, value))
                disputed.add(label)
            else:
                seen[svc.name] = value
        if len(set(seen.values())) > 1:
            pairs = ", ".join(f"{svc}={value!r}" for svc, value in seen.items())
            problems.append(f"app {name}: {label} differs between the colors: {pairs}")
            disputed.add(label)
        elif seen:
            values[label] = next(iter(seen.values()))
    port = int(values[PORT_LABEL]) if PORT_LABEL in values else defaults.port
    rule = values.get(RULE_LABEL) or _expand(defaults.rule, name)
    preview = values.get(PREVIEW_RULE_LABEL) or _expand(defaults.preview_rule, name)
    # "Missing" only when the label is absent: a bad or disputed value was reported already.
    if port is None and PORT_LABEL not in disputed:
        problems.append(f"app {name}: no port: set {PORT_LABEL} or defaults.port")
    if rule is None:
        if RULE_LABEL not in disputed:
            problems.append(f"app {name}: no routing rule: set {RULE_LABEL} or defaults.rule")
    elif RULE_LABEL not in values and (message := _check_rule(rule)):
        problems.append(f"app {name}: defaults.rule: {message} (got {rule!r})")
    if preview is not None and PREVIEW_RULE_LABEL not in values and (message := _check_rule(preview)):
        problems.append(f"app {name}: defaults.preview_rule: {message} (got {preview!r})")
    if preview is not None and preview == rule:
        problems.append(f"app {name}: the preview rule is the main rule; give the preview its own host or path")
    if problems or port is None or rule is None:
        return None, problems
    return App(
        name=name,
        blue_service=by_color[Color.BLUE].name,
        green_service=by_color[Color.GREEN].name,
        port=port,
        rule=rule,
        health_path=values.get(HEALTH_PATH_LABEL, defaults.health_path),
        preview_rule=preview,
        strategy=Strategy(values.get(STRATEGY_LABEL, defaults.strategy)),
    ), []


def _expand(template: str | None, app: str) -> str | None:
    # str.format would trip over the braces of HostRegexp patterns.
    return template.replace("{app}", app) if template else None


def same_image(observed: str, wanted: str) -> bool:
    """Whether a service runs `wanted`: Swarm may pin a tag to its digest (`web:2@sha256:…`)."""
    if observed == wanted:
        return True
    return "@" not in wanted and observed.split("@", 1)[0] == wanted


# --- Routing -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Routing:
    """What a router sends where: percent weights of the app's rule, and the color its preview rule serves."""

    blue: int
    green: int
    preview: Color

    def __post_init__(self) -> None:
        if not (0 <= self.blue <= 100 and 0 <= self.green <= 100 and self.blue + self.green == 100):
            raise ValueError(f"weights must be 0-100 and add up to 100 (got blue={self.blue} green={self.green})")

    @classmethod
    def all_to(cls, color: Color) -> Routing:
        """All traffic to `color`; the preview rule serves the other one."""
        return cls.toward(color, 100, preview=color.other)

    @classmethod
    def toward(cls, target: Color, percent: int, preview: Color | None = None) -> Routing:
        """`percent` of the traffic to `target`, the rest to the other color; preview on `target` unless told."""
        rest = 100 - percent
        blue, green = (percent, rest) if target is Color.BLUE else (rest, percent)
        return cls(blue=blue, green=green, preview=target if preview is None else preview)

    def weight(self, color: Color) -> int:
        return self.blue if color is Color.BLUE else self.green

    @property
    def single(self) -> Color | None:
        """The color that takes all traffic, if one does."""
        return Color.BLUE if self.blue == 100 else Color.GREEN if self.green == 100 else None

    def __str__(self) -> str:
        return f"blue={self.blue} green={self.green} preview={self.preview}"


# --- Phases and the stored state ---------------------------------------------------------------


class Phase(StrEnum):
    """Where an app is. `status` prints these; the deploy flow goes top to bottom."""

    STABLE = "Stable"  # all traffic on the active color, nothing in flight
    PREPARING = "Preparing"  # idle color gets the new image and the active color's replica count
    WAITING = "Waiting"  # for every task of the idle color to run and be Docker-healthy
    PRECHECKS = "PreChecks"  # healthy_threshold probes in a row, plus PromQL checks, before any traffic
    SWITCHING = "Switching"  # the router is told the new weights; left when it confirms them
    PROGRESSING = "Progressing"  # progressive mode: verifying a partial weight step
    VERIFYING = "Verifying"  # all traffic on the new color, under verification
    ROLLING_BACK = "RollingBack"  # traffic returns to the previous color
    ROLLED_BACK = "RolledBack"  # the deploy failed after traffic moved; traffic is back
    FAILED = "Failed"  # the deploy failed before traffic moved; the active color was never touched

    @property
    def in_flight(self) -> bool:
        return self not in (Phase.STABLE, Phase.ROLLED_BACK, Phase.FAILED)

    @property
    def moves_traffic(self) -> bool:
        """Phases whose routing sends traffic toward the deploy's target color."""
        return self in (Phase.SWITCHING, Phase.PROGRESSING, Phase.VERIFYING)


class Operation(StrEnum):
    DEPLOY = "deploy"  # a new image to the idle color
    SWITCH = "switch"  # move traffic to the other color as it is
    ROLLBACK = "rollback"  # return to the previous color


class Result(StrEnum):
    SUCCEEDED = "succeeded"
    ROLLED_BACK = "rolled-back"
    FAILED = "failed"


@dataclass(frozen=True)
class Deploy:
    """One operation on an app: the current one while in flight, else the last one."""

    id: str
    kind: Operation
    source: Color  # held the traffic when the operation started
    image: str  # what the target color runs (for a switch: what it ran already)
    previous_image: str  # what the source color runs
    started_at: float
    steps: tuple[int, ...] = (100,)  # percent of traffic on the target per step; the last is 100
    step: int = 0
    failures: int = 0  # failed verification rounds so far; stored, so a restart never forgets one
    reason: str = ""  # why it failed or was rolled back
    force: bool = False  # a forced switch skips the health gate and the verification

    @property
    def target(self) -> Color:
        return self.source.other

    @property
    def percent(self) -> int:
        return self.steps[self.step]


@dataclass(frozen=True)
class AppState:
    """Everything the controller must know about an app to continue after a restart."""

    active: Color  # the color of record: verified, and where traffic rests outside a switch
    phase: Phase = Phase.STABLE
    since: float = 0.0  # when the phase began (wall clock, seconds since the epoch)
    generation: int = 0
    deploy: Deploy | None = None
    result: Result | None = None  # of the last finished operation
    retire_at: float | None = None  # when the color without traffic (active.other) is scaled to 0

    def routing(self) -> Routing:
        """The routing this state calls for; regenerating it is always safe."""
        if self.phase.moves_traffic and self.deploy is not None:
            d = self.deploy
            # The preview serves the color under test while it shares traffic, then the idle one.
            return Routing.toward(d.target, d.percent, preview=d.target if d.percent < 100 else d.source)
        # Outside a switch the preview serves the color without traffic: before a switch that is
        # the color being deployed, so people can try it; after a rollback, the failed one.
        return Routing.all_to(self.active)

    def locks(self) -> dict[Color, str | None]:
        """The autoscaler lock each color should carry."""
        if self.phase.in_flight and self.deploy is not None:
            return {Color.BLUE: self.deploy.id, Color.GREEN: self.deploy.id}
        return {self.active: None, self.active.other: IDLE_LOCK}

    def to_labels(self) -> dict[str, str | None]:
        """Every state label, with None for the absent ones so that a write removes stale values."""
        labels: dict[str, str | None] = dict.fromkeys(STATE_KEYS)
        labels[_K_GENERATION] = str(self.generation)
        labels[_K_ACTIVE] = self.active.value
        labels[_K_PHASE] = self.phase.value
        labels[_K_SINCE] = format_time(self.since)
        if self.result is not None:
            labels[_K_RESULT] = self.result.value
        if self.retire_at is not None:
            labels[_K_RETIRE_AT] = format_time(self.retire_at)
        if self.deploy is not None:
            d = self.deploy
            labels.update({
                _K_DEPLOY_ID: d.id,
                _K_DEPLOY_KIND: d.kind.value,
                _K_DEPLOY_SOURCE: d.source.value,
                _K_DEPLOY_IMAGE: d.image,
                _K_DEPLOY_PREVIOUS: d.previous_image,
                _K_DEPLOY_STARTED: format_time(d.started_at),
                _K_DEPLOY_STEPS: ",".join(str(s) for s in d.steps),
                _K_DEPLOY_STEP: str(d.step),
                _K_DEPLOY_FAILURES: str(d.failures),
                _K_DEPLOY_FORCE: "true" if d.force else "false",
                _K_DEPLOY_REASON: _one_line(d.reason) or None,
            })
        return labels

    @classmethod
    def from_labels(cls, labels: Mapping[str, str], service: str) -> tuple[AppState | None, list[str]]:
        """The state stored on one service: (None, []) when it has none, (None, problems) when it is bad."""
        present = {k: v for k, v in labels.items() if k in STATE_KEYS}
        if not present:
            return None, []
        reader = _LabelReader(present, service)
        generation = reader.integer(_K_GENERATION, required=True, minimum=0)
        active = reader.enum(_K_ACTIVE, Color, required=True)
        phase = reader.enum(_K_PHASE, Phase, required=True)
        since = reader.time(_K_SINCE, required=True)
        result = reader.enum(_K_RESULT, Result)
        retire_at = reader.time(_K_RETIRE_AT)
        deploy = None
        if any(k.startswith(_DEPLOY_PREFIX) for k in present):
            steps = reader.steps(_K_DEPLOY_STEPS)
            step = reader.integer(_K_DEPLOY_STEP, required=True, minimum=0)
            if steps is not None and step is not None and step >= len(steps):
                reader.problems.append(_problem(service, _K_DEPLOY_STEP, f"beyond the {len(steps)} steps",
                                                present[_K_DEPLOY_STEP]))
            deploy_fields = dict(
                id=reader.text(_K_DEPLOY_ID),
                kind=reader.enum(_K_DEPLOY_KIND, Operation, required=True),
                source=reader.enum(_K_DEPLOY_SOURCE, Color, required=True),
                image=reader.text(_K_DEPLOY_IMAGE),
                previous_image=reader.text(_K_DEPLOY_PREVIOUS),
                started_at=reader.time(_K_DEPLOY_STARTED, required=True),
                steps=steps,
                step=step,
                failures=reader.integer(_K_DEPLOY_FAILURES, required=True, minimum=0),
                reason=present.get(_K_DEPLOY_REASON, ""),
                force=reader.boolean(_K_DEPLOY_FORCE),
            )
            if not reader.problems:
                deploy = Deploy(**deploy_fields)  # type: ignore[arg-type]
        if phase is not None and phase.in_flight and deploy is None and not reader.problems:
            reader.problems.append(_problem(service, _K_PHASE, "a deploy phase without the deploy's labels",
                                            present[_K_PHASE]))
        if reader.problems:
            return None, reader.problems
        assert generation is not None and active is not None and phase is not None and since is not None
        return cls(active=active, phase=phase, since=since, generation=generation, deploy=deploy,
                   result=result, retire_at=retire_at), []

    def evolve(self, **changes: object) -> AppState:
        """A copy with `changes` and the next generation: every change to the state is a new generation."""
        return replace(self, generation=self.generation + 1, **changes)  # type: ignore[arg-type]


_K_GENERATION = f"{STATE_PREFIX}generation"
_K_ACTIVE = f"{STATE_PREFIX}active"
_K_PHASE = f"{STATE_PREFIX}phase"
_K_SINCE = f"{STATE_PREFIX}since"
_K_RESULT = f"{STATE_PREFIX}result"
_K_RETIRE_AT = f"{STATE_PREFIX}retire_at"
_DEPLOY_PREFIX = f"{STATE_PREFIX}deploy."
_K_DEPLOY_ID = f"{_DEPLOY_PREFIX}id"
_K_DEPLOY_KIND = f"{_DEPLOY_PREFIX}kind"
_K_DEPLOY_SOURCE = f"{_DEPLOY_PREFIX}source"
_K_DEPLOY_IMAGE = f"{_DEPLOY_PREFIX}image"
_K_DEPLOY_PREVIOUS = f"{_DEPLOY_PREFIX}previous_image"
_K_DEPLOY_STARTED = f"{_DEPLOY_PREFIX}started"
_K_DEPLOY_STEPS = f"{_DEPLOY_PREFIX}steps"
_K_DEPLOY_STEP = f"{_DEPLOY_PREFIX}step"
_K_DEPLOY_FAILURES = f"{_DEPLOY_PREFIX}failures"
_K_DEPLOY_REASON = f"{_DEPLOY_PREFIX}reason"
_K_DEPLOY_FORCE = f"{_DEPLOY_PREFIX}force"
STATE_KEYS = (
    _K_GENERATION, _K_ACTIVE, _K_PHASE, _K_SINCE, _K_RESULT, _K_RETIRE_AT, _K_DEPLOY_ID, _K_DEPLOY_KIND,
    _K_DEPLOY_SOURCE, _K_DEPLOY_IMAGE, _K_DEPLOY_PREVIOUS, _K_DEPLOY_STARTED, _K_DEPLOY_STEPS, _K_DEPLOY_STEP,
    _K_DEPLOY_FAILURES, _K_DEPLOY_REASON, _K_DEPLOY_FORCE,
)


class _LabelReader:
    """Reads typed values from state labels, collecting one problem line per bad label."""

    def __init__(self, labels: Mapping[str, str], service: str) -> None:
        self.labels, self.service = labels, service
        self.problems: list[str] = []

    def _raw(self, key: str, required: bool) -> str | None:
        value = self.labels.get(key)
        if value is None and required:
            self.problems.append(_problem(self.service, key, "missing: the other state labels are present"))
        return value

    def text(self, key: str) -> str | None:
        value = self._raw(key, True)
        if value == "":
            self.problems.append(_problem(self.service, key, "empty", value))
        return value

    def integer(self, key: str, *, required: bool = False, minimum: int = 0) -> int | None:
        value = self._raw(key, required)
        if value is None:
            return None
        if not value.isdigit() or int(value) < minimum:
            self.problems.append(_problem(self.service, key, f"expected a whole number >= {minimum}", value))
            return None
        return int(value)

    def enum(self, key: str, kind: type[StrEnum], *, required: bool = False):  # noqa: ANN201 - the enum given
        value = self._raw(key, required)
        if value is None:
            return None
        try:
            return kind(value)
        except ValueError:
            self.problems.append(_problem(self.service, key, f"expected one of {', '.join(kind)}", value))
            return None

    def time(self, key: str, *, required: bool = False) -> float | None:
        value = self._raw(key, required)
        if value is None:
            return None
        try:
            return parse_time(value)
        except ValueError:
            self.problems.append(_problem(self.service, key, "expected a UTC time such as 2025-01-31T12:00:00.000Z",
                                          value))
            return None

    def boolean(self, key: str) -> bool:
        value = self._raw(key, False)
        if value in (None, "false"):
            return False
        if value == "true":
            return True
        self.problems.append(_problem(self.service, key, "expected true or false", value))
        return False

    def steps(self, key: str) -> tuple[int, ...] | None:
        value = self._raw(key, True)
        if value is None:
            return None
        try:
            steps = tuple(int(part) for part in value.split(","))
            validate_steps(steps)
        except ValueError as err:
            message = str(err) if "step" in str(err) else "expected percentages such as 10,50,100"
            self.problems.append(_problem(self.service, key, message, value))
            return None
        return steps


def validate_steps(steps: tuple[int, ...] | list[int]) -> None:
    """Weight steps rise strictly within 1-100 and end at 100, or ValueError."""
    if not steps:
        raise ValueError("at least one step is needed")
    if any(not 1 <= s <= 100 for s in steps) or list(steps) != sorted(set(steps)):
        raise ValueError("steps must rise strictly, each from 1 to 100")
    if steps[-1] != 100:
        raise ValueError("the last step must be 100")


def format_time(ts: float) -> str:
    """UTC with milliseconds: readable in `docker service inspect`, exact enough for a state."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(round(ts * 1000)) % 1000:03d}Z"


def parse_time(text: str) -> float:
    if not text.endswith("Z"):
        raise ValueError("expected a UTC time ending in Z")
    return round(datetime.fromisoformat(text[:-1] + "+00:00").timestamp(), 3)


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _REASON_MAX else text[: _REASON_MAX - 1] + "…"


def new_deploy_id(app: str, now: float, token: str | None = None) -> str:
    """A deploy id that says what and when: `web-20250131T120000-3fa2`."""
    stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%dT%H%M%S")
    return f"{app}-{stamp}-{token or secrets.token_hex(2)}"


def choose_state(stored: Mapping[Color, AppState | None]) -> AppState | None:
    """The authoritative copy: the highest generation (blue's on a tie, which only a split brain makes)."""
    copies = [(state.generation, color is Color.BLUE, state) for color, state in stored.items() if state is not None]
    if not copies:
        return None
    return max(copies, key=lambda c: (c[0], c[1]))[2]


def infer_state(replicas: Mapping[Color, int], routed: Routing | None, now: float) -> tuple[AppState, str]:
    """A Stable state for an app whose state labels are gone on both colors, and why this color.

    The loaded routing is the best witness, since it is what users get; then the only color
    with replicas; then blue. Nothing moves: the state describes what already is.
    """
    if routed is not None and routed.single is not None:
        active, why = routed.single, f"the router sends all traffic to {routed.single}"
    elif replicas.get(Color.BLUE, 0) > 0 and replicas.get(Color.GREEN, 0) == 0:
        active, why = Color.BLUE, "only blue has replicas"
    elif replicas.get(Color.GREEN, 0) > 0 and replicas.get(Color.BLUE, 0) == 0:
        active, why = Color.GREEN, "only green has replicas"
    else:
        active, why = Color.BLUE, "no routing and no single color with replicas: blue by convention"
    return AppState(active=active, phase=Phase.STABLE, since=now, generation=1), why


@dataclass(frozen=True)
class Loaded:
    """An app's state as reconciliation finds it in Swarm."""

    state: AppState
    stored: dict[Color, int | None]  # the generation each color holds now (None: no usable copy)
    problems: list[str]  # bad state labels, one line each
    adopted: str | None = None  # why the state was inferred, when neither color held a usable copy


def load_state(app: App, labels: Mapping[Color, Mapping[str, str]], replicas: Mapping[Color, int],
               routed: Routing | None, now: float) -> Loaded:
    """The authoritative state of `app` from both colors' labels, inferred when both copies are gone."""
    copies: dict[Color, AppState | None] = {}
    problems: list[str] = []
    for color in Color:
        state, bad = AppState.from_labels(labels.get(color, {}), app.service(color))
        copies[color] = state
        problems.extend(bad)
    stored = {color: state.generation if state else None for color, state in copies.items()}
    chosen = choose_state(copies)
    if chosen is not None:
        return Loaded(chosen, stored, problems)
    inferred, why = infer_state(replicas, routed, now)
    return Loaded(inferred, stored, problems, adopted=why)
