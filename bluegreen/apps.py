"""Apps: what two labelled color services describe, the defaults for unset labels, and discovery.

An app is two Swarm services labelled `swarmshift.bluegreen.app=<app>` and
`swarmshift.bluegreen.color=blue|green`; their routing labels (port, rule, health path, preview
rule, strategy) must agree. Discovery parses every label once: an `App`'s rules are `Rule`s.
Nothing here does I/O.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from bluegreen.labels import (
    APP_LABEL,
    COLOR_LABEL,
    HEALTH_PATH_LABEL,
    K_GENERATION,
    PORT_LABEL,
    PREFIX,
    PREVIEW_RULE_LABEL,
    RULE_LABEL,
    STACK_LABEL,
    STRATEGY_LABEL,
    known_label,
    problem,
)
from bluegreen.rules import Rule, RuleError
from swarmshift.numbers import whole_number

DEFAULT_HEALTH_PATH = "/health"


class Color(StrEnum):
    BLUE = "blue"
    GREEN = "green"

    @classmethod
    def named(cls, text: str | None) -> Color | None:
        """The color `text` names, or None: where a color comes in (labels, requests), it is checked here once."""
        try:
            return cls(text) if text is not None else None
        except ValueError:
            return None

    @property
    def other(self) -> Color:
        return Color.GREEN if self is Color.BLUE else Color.BLUE


class Strategy(StrEnum):
    BLUEGREEN = "bluegreen"  # all traffic moves at once: 100/0 -> 0/100
    PROGRESSIVE = "progressive"  # weights move in steps, verified between steps (Traefik only)


# Every name is checked with fullmatch: `$` would let a trailing newline through.
_APP_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?", re.ASCII)
# A stack's name, as `docker stack deploy` takes it; it becomes part of the app's key and of file names.
_STACK_MAX = 63
_STACK_NAME = re.compile(rf"[a-z0-9][a-z0-9_-]{{0,{_STACK_MAX - 1}}}", re.ASCII)
# A Swarm service name (swarmkit: a DNS name component of at most 63 characters), which the
# controller puts in URLs as http://<service>:<port>.
_SERVICE_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?", re.ASCII)
# The Traefik document names its objects <app>, <app>-blue, <app>-green and <app>-preview (and an
# app's trial document <app>-trial…), and the file provider drops duplicate names across files:
# an app may not be named like another's parts.
_RESERVED_SUFFIXES = ("-blue", "-green", "-preview", "-trial")
_HEALTH_PATH_MAX = 256
_HEALTH_PATH_REFUSED = "\"'`;{}\\"


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
    """A working app. `name` is its key (`app_key`), which routers, state, metrics and logs use."""

    name: str
    blue_service: str
    green_service: str
    port: int
    rule: Rule
    health_path: str = DEFAULT_HEALTH_PATH
    preview_rule: Rule | None = None
    strategy: Strategy = Strategy.BLUEGREEN
    label: str = ""  # the app label's value, the plain name (the key's last part)
    stack: str | None = None  # the stack whose services these are, or None outside a stack

    def __post_init__(self) -> None:
        if not self.label:
            object.__setattr__(self, "label", split_key(self.name)[1])
        # Discovery hands over parsed rules; rule text (tests, tools) is parsed here, once.
        if isinstance(self.rule, str):
            object.__setattr__(self, "rule", Rule.parse(self.rule))
        if isinstance(self.preview_rule, str):
            object.__setattr__(self, "preview_rule", Rule.parse(self.preview_rule))

    def service(self, color: Color) -> str:
        return self.blue_service if color is Color.BLUE else self.green_service

    def url(self, color: Color) -> str:
        """Where the color's tasks answer: the Swarm service DNS name, on the overlay network."""
        return f"http://{self.service(color)}:{self.port}"


class Labelled(Protocol):
    """A Swarm service as far as the model cares (swarmshift.swarm.Service fits; `created_at` is optional)."""

    @property
    def name(self) -> str: ...

    @property
    def labels(self) -> Mapping[str, str]: ...


def scope_of(labels: Mapping[str, str]) -> str | None:
    """The stack a service belongs to (its `com.docker.stack.namespace`), or None outside a stack."""
    return labels.get(STACK_LABEL)


def app_key(name: str, stack: str | None) -> str:
    """The app's key within the controller: `<stack>_<app>` for a stack's app, the plain name outside a stack.

    Swarm names a stack's services `<stack>_<service>` the same way; app names hold no `_`, so
    the key splits back unambiguously (`split_key`).
    """
    return name if stack is None else f"{stack}_{name}"


def split_key(key: str) -> tuple[str | None, str]:
    """The stack and the plain app name of a key (`app_key` read back)."""
    stack, sep, name = key.rpartition("_")
    return (stack if sep else None), name


@dataclass(frozen=True)
class Refusal:
    """A service that claims a color its app already has: the app goes on without it."""

    service: str
    color: Color
    kept: str  # the service that keeps the color
    reason: str

    def line(self, key: str) -> str:
        return (f"app {key}: {self.service}: refused: {COLOR_LABEL}={self.color} is already {self.kept}'s "
                f"({self.reason})")


@dataclass(frozen=True)
class Discovery:
    apps: dict[str, App]  # by key
    problems: list[str]  # every problem line, the refused services' included (what `check` prints)
    # App key -> the services that claim it, for apps left out because of problems.
    broken: dict[str, list[str]] = field(default_factory=dict)
    # App key -> the problem lines charged to that app: why it is broken.
    issues: dict[str, list[str]] = field(default_factory=dict)
    # App key -> the services refused a color the app already has; the app itself works.
    refused: dict[str, list[Refusal]] = field(default_factory=dict)
    # Services that name no app (no app label, or a bad app or stack name): lines charged to no app.
    unattached: list[str] = field(default_factory=list)


# Each label's parser: its value, or ValueError with the problem. Every label is parsed once.


def _port(value: str) -> int:
    try:
        return whole_number(value, minimum=1, maximum=65535)
    except ValueError:
        raise ValueError("expected a port number from 1 to 65535") from None


def _rule(value: str) -> Rule:
    try:
        return Rule.parse(value)
    except RuleError as err:
        raise ValueError(f"not a Traefik v3 rule: {err}") from None


def _health_path(value: str) -> str:
    # Printable ASCII only: the path goes into probe URLs and into nginx's and Traefik's files.
    if not value.startswith("/") or any(not "!" <= c <= "~" or c in _HEALTH_PATH_REFUSED for c in value):
        raise ValueError("expected an absolute path such as /health, without spaces or quotes")
    if len(value) > _HEALTH_PATH_MAX:
        raise ValueError(f"expected a path of at most {_HEALTH_PATH_MAX} characters")
    return value


def _strategy(value: str) -> Strategy:
    if value not in {s.value for s in Strategy}:
        raise ValueError(f"expected one of {', '.join(s.value for s in Strategy)}")
    return Strategy(value)


_ATTRIBUTES = {
    PORT_LABEL: _port,
    RULE_LABEL: _rule,
    HEALTH_PATH_LABEL: _health_path,
    PREVIEW_RULE_LABEL: _rule,
    STRATEGY_LABEL: _strategy,
}


def discover(services: Iterable[Labelled], defaults: AppDefaults = AppDefaults()) -> Discovery:
    """The apps the labels describe, and one line per problem.

    An app with a problem is left out (and listed in `broken`, with its lines in `issues`): the
    controller does not touch an app it cannot describe exactly, so its routing stays as it was.
    Names are checked here, where they come in: a service whose app or stack name is bad names
    no app at all, so it can reach no other app's key, file or route.
    """
    problems: list[str] = []
    unattached: list[str] = []
    members: dict[str, list[tuple[Color, Labelled]]] = {}
    broken: dict[str, list[str]] = {}
    issues: dict[str, list[str]] = {}
    unknown: dict[str, list[str]] = {}  # service -> its unknown-label problems, charged to its app
    for svc in sorted(services, key=lambda s: s.name):
        ours = {k: v for k, v in svc.labels.items() if k.startswith(PREFIX + ".")}
        if not ours:
            continue
        unknown[svc.name] = [problem(svc.name, key, "unknown label", ours[key])
                             for key in sorted(ours) if not known_label(key)]
        app = ours.get(APP_LABEL)
        color = ours.get(COLOR_LABEL)
        lines: list[str] = []
        if app is None:
            if any(known_label(k) for k in ours):  # a stray state or lock label names no app either
                lines.append(problem(svc.name, APP_LABEL, "missing: the service carries blue-green labels"))
        elif not valid_app_name(app):
            lines.append(problem(
                svc.name, APP_LABEL,
                "expected a lowercase DNS name (a-z, 0-9, -) that does not end in -blue, -green or -preview", app))
        elif (stack := scope_of(svc.labels)) is not None and not valid_stack_name(stack):
            lines.append(problem(
                svc.name, STACK_LABEL,
                f"expected a stack name (a-z, 0-9, - and _, starting with a letter or digit, at most {_STACK_MAX} "
                "characters)", stack))
        if app is None or lines:
            unattached.extend([*unknown[svc.name], *lines])
            continue
        key = app_key(app, scope_of(svc.labels))
        named = Color.named(color)
        if named is None:
            lines = [*unknown[svc.name],
                     problem(svc.name, COLOR_LABEL, "expected blue or green", color) if color is not None
                     else problem(svc.name, COLOR_LABEL, "missing: expected blue or green")]
            issues.setdefault(key, []).extend(lines)
            broken.setdefault(key, []).append(svc.name)
            continue
        members.setdefault(key, []).append((named, svc))

    apps: dict[str, App] = {}
    refused: dict[str, list[Refusal]] = {}
    for key, claims in sorted(members.items()):
        found, refusals = _settle_colors(claims)
        lines = [line for _, svc in found for line in unknown[svc.name]]
        lines += [problem(svc.name, "name", "not a Swarm service name, which the controller would put in URLs",
                          svc.name) for _, svc in found if not valid_service_name(svc.name)]
        app, app_problems = _describe(key, found, defaults, key in broken or bool(lines))
        lines += app_problems
        if refusals:
            refused[key] = refusals
        if app is None or lines:
            broken[key] = sorted({*broken.get(key, []), *(svc.name for _, svc in found)})
            issues.setdefault(key, []).extend(lines)
        else:
            apps[key] = app
    for _key, lines in sorted(issues.items()):
        problems.extend(lines)
    for key, refusals in sorted(refused.items()):
        problems.extend(r.line(key) for r in refusals)
    problems.extend(unattached)
    return Discovery(apps=apps, problems=problems, broken=broken, issues=issues, refused=refused,
                     unattached=unattached)


def valid_app_name(name: str) -> bool:
    return _APP_NAME.fullmatch(name) is not None and not name.endswith(_RESERVED_SUFFIXES)


def valid_key(key: str) -> bool:
    """Whether `key` could be an app's key (`app_key`): a plain app name, or `<stack>_<app>`."""
    stack, name = split_key(key)
    return valid_app_name(name) and (stack is None or valid_stack_name(stack))


def valid_stack_name(name: str) -> bool:
    return _STACK_NAME.fullmatch(name) is not None


def valid_service_name(name: str) -> bool:
    return _SERVICE_NAME.fullmatch(name) is not None


def _settle_colors(claims: list[tuple[Color, Labelled]]) -> tuple[list[tuple[Color, Labelled]], list[Refusal]]:
    """The services that keep their colors, and the extra ones refused.

    A color claimed twice stays with the established service: the one whose state generation
    agrees with the other color's (the controller wrote both), else the oldest, else the first
    by name. A newcomer cannot take over, or break, an app by copying its labels.
    """
    kept: list[tuple[Color, Labelled]] = []
    refusals: list[Refusal] = []
    for color in Color:
        claimants = [svc for c, svc in claims if c is color]
        if len(claimants) <= 1:
            kept += [(color, svc) for svc in claimants]
            continue
        others = {g for c, svc in claims if c is not color if (g := _generation(svc)) is not None}

        def rank(svc: Labelled, others: set[int] = others) -> tuple[bool, float, str]:
            generation = _generation(svc)
            consistent = generation is not None and any(abs(generation - g) <= 1 for g in others)
            created = getattr(svc, "created_at", None)
            return (not consistent, created if created is not None else math.inf, svc.name)

        ranked = sorted(claimants, key=rank)
        winner = ranked[0]
        why = ("it carries the app's state, as the other color does" if not rank(winner)[0]
               else "it is the older service" if rank(winner)[1] < min((rank(s)[1] for s in ranked[1:]), default=0)
               else "it comes first by name")
        kept.append((color, winner))
        refusals += [Refusal(svc.name, color, winner.name, why) for svc in ranked[1:]]
    return kept, refusals


def _generation(svc: Labelled) -> int | None:
    try:
        return whole_number(svc.labels.get(K_GENERATION, ""))
    except ValueError:
        return None


def _describe(name: str, found: list[tuple[Color, Labelled]], defaults: AppDefaults,
              has_broken_member: bool) -> tuple[App | None, list[str]]:
    """One app from its services' labels, or None and the problems that prevent it."""
    problems: list[str] = []
    by_color: dict[Color, Labelled] = {}
    stack, plain = split_key(name)
    for color in Color:
        named = [svc for c, svc in found if c is color]
        if not named:
            problems.append(f"app {name}: no {color} service: label one with {APP_LABEL}={plain} "
                            f"and {COLOR_LABEL}={color}" + (f" in stack {stack}" if stack else ""))
        else:
            by_color[color] = named[0]
    if problems or has_broken_member:
        return None, problems  # a missing color makes the rest guesswork: report it alone
    values: dict[str, str] = {}  # label -> the one text both colors agree on
    parsed: dict[str, object] = {}  # label -> that text, parsed
    disputed: set[str] = set()  # labels set to a bad value, or to different values on the two colors
    for label, parse in _ATTRIBUTES.items():
        seen: dict[str, str] = {}
        readings: dict[str, object] = {}
        for _, svc in found:
            value = svc.labels.get(label)
            if value is None:
                continue
            try:
                readings[value] = parse(value)
            except ValueError as err:
                problems.append(problem(svc.name, label, str(err), value))
                disputed.add(label)
            else:
                seen[svc.name] = value
        if len(set(seen.values())) > 1:
            pairs = ", ".join(f"{svc}={value!r}" for svc, value in seen.items())
            problems.append(f"app {name}: {label} differs between the colors: {pairs}")
            disputed.add(label)
        elif seen:
            values[label] = next(iter(seen.values()))
            parsed[label] = readings[values[label]]
    port = parsed.get(PORT_LABEL, defaults.port)
    # "Missing" only when the label is absent: a bad or disputed value was reported already.
    if port is None and PORT_LABEL not in disputed:
        problems.append(f"app {name}: no port: set {PORT_LABEL} or defaults.port")
    # `{app}` in a default rule is the app's label, not its key: `_` is no host name character.
    rule_text = values.get(RULE_LABEL) or _expand(defaults.rule, plain)
    preview_text = values.get(PREVIEW_RULE_LABEL) or _expand(defaults.preview_rule, plain)
    rule = parsed.get(RULE_LABEL)
    if rule_text is None:
        if RULE_LABEL not in disputed:
            problems.append(f"app {name}: no routing rule: set {RULE_LABEL} or defaults.rule")
    elif RULE_LABEL not in values:
        rule = _default_rule(name, "rule", rule_text, problems)
    preview = parsed.get(PREVIEW_RULE_LABEL)
    if preview_text is not None and PREVIEW_RULE_LABEL not in values:
        preview = _default_rule(name, "preview_rule", preview_text, problems)
    if preview_text is not None and preview_text == rule_text:
        problems.append(f"app {name}: the preview rule is the main rule; give the preview its own host or path")
    if problems or port is None or rule is None:
        return None, problems
    assert isinstance(port, int) and isinstance(rule, Rule) and (preview is None or isinstance(preview, Rule))
    return App(
        name=name,
        label=plain,
        stack=stack,
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


def _default_rule(app: str, key: str, text: str, problems: list[str]) -> Rule | None:
    """A rule from the defaults, parsed; None (with the problem) when it does not parse."""
    try:
        return Rule.parse(text)
    except RuleError as err:
        problems.append(f"app {app}: defaults.{key}: not a Traefik v3 rule: {err} (got {text!r})")
        return None


def same_image(observed: str, wanted: str) -> bool:
    """Whether a service runs `wanted`: Swarm may pin a tag to its digest (`web:2@sha256:…`)."""
    if observed == wanted:
        return True
    return "@" not in wanted and observed.split("@", 1)[0] == wanted
