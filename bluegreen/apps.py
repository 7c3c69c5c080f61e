"""Apps: what two labelled color services describe, the defaults for unset labels, and discovery.

An app is two Swarm services labelled `swarmshift.bluegreen.app=<app>` and
`swarmshift.bluegreen.color=blue|green`; their routing labels (port, rule, health path, preview
rule, strategy) must agree. Discovery parses every label once: an `App`'s rules are `Rule`s.
Nothing here does I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from bluegreen.labels import (
    APP_LABEL,
    COLOR_LABEL,
    HEALTH_PATH_LABEL,
    OPERATOR_LABELS,
    PORT_LABEL,
    PREFIX,
    PREVIEW_RULE_LABEL,
    RULE_LABEL,
    STRATEGY_LABEL,
    known_label,
    problem,
)
from bluegreen.rules import Rule, RuleError

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
    rule: Rule
    health_path: str = DEFAULT_HEALTH_PATH
    preview_rule: Rule | None = None
    strategy: Strategy = Strategy.BLUEGREEN

    def __post_init__(self) -> None:
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


# Each label's parser: its value, or ValueError with the problem. Every label is parsed once.


def _port(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise ValueError("expected a port number from 1 to 65535")
    return int(value)


def _rule(value: str) -> Rule:
    try:
        return Rule.parse(value)
    except RuleError as err:
        raise ValueError(f"not a Traefik v3 rule: {err}") from None


def _health_path(value: str) -> str:
    if not _HEALTH_PATH.match(value):
        raise ValueError("expected an absolute path such as /health, without spaces or quotes")
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
        unknown[svc.name] = [problem(svc.name, key, "unknown label", ours[key])
                             for key in sorted(ours) if not known_label(key)]
        app = ours.get(APP_LABEL)
        color = ours.get(COLOR_LABEL)
        if app is None:
            problems.extend(unknown[svc.name])
            if any(k in ours for k in OPERATOR_LABELS):
                problems.append(problem(svc.name, APP_LABEL, "missing: the service carries blue-green labels"))
            continue
        if not _APP_NAME.match(app) or app.endswith(_RESERVED_SUFFIXES):
            problems.extend(unknown[svc.name])
            problems.append(problem(
                svc.name, APP_LABEL,
                "expected a lowercase DNS name (a-z, 0-9, -) that does not end in -blue, -green or -preview", app))
            continue
        named = Color.named(color)
        if named is None:
            problems.extend(unknown[svc.name])
            problems.append(problem(svc.name, COLOR_LABEL, "expected blue or green", color)
                            if color is not None else problem(svc.name, COLOR_LABEL, "missing: expected blue or green"))
            broken.setdefault(app, []).append(svc.name)
            continue
        members.setdefault(app, []).append((named, svc))

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
    rule_text = values.get(RULE_LABEL) or _expand(defaults.rule, name)
    preview_text = values.get(PREVIEW_RULE_LABEL) or _expand(defaults.preview_rule, name)
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
