"""What keeps labelled apps from working with a config: the problems `bluegreen check` and the controller report."""

from __future__ import annotations

from collections.abc import Iterable

from bluegreen.apps import App, Labelled, Strategy, discover
from bluegreen.config import BlueGreenConfig
from bluegreen.labels import PREVIEW_RULE_LABEL, RULE_LABEL, STATE_KEYS, STRATEGY_LABEL
from bluegreen.state import AppState


def check_app_labels(services: Iterable[Labelled], config: BlueGreenConfig) -> list[str]:
    """Every problem with the blue-green labels of `services`, one line each (for `bluegreen check`)."""
    services = list(services)
    found = discover(services, config.app_defaults())
    problems = list(found.problems)
    for svc in sorted(services, key=lambda s: s.name):
        if any(key in STATE_KEYS for key in svc.labels):
            problems.extend(AppState.from_labels(svc.labels, svc.name)[1])
    for app in found.apps.values():
        problems.extend(app_problems(app, config))
    return problems


def app_problems(app: App, config: BlueGreenConfig) -> list[str]:
    """What keeps a well-labelled app from working with this config's router and probes."""
    where = f"app {app.name}"
    problems = []
    if config.probe.via == "router" and app.preview_rule is None:
        problems.append(f"{where}: probe.via router reaches the idle color only through the preview "
                        f"route: set {PREVIEW_RULE_LABEL} or defaults.preview_rule")
    if config.router.kind != "nginx":
        return problems
    if app.strategy is Strategy.PROGRESSIVE:
        problems.append(f"{where}: {STRATEGY_LABEL}: progressive needs a Traefik router; nginx switches "
                        "all traffic at once (got 'progressive')")
    for label, rule in ((RULE_LABEL, app.rule), (PREVIEW_RULE_LABEL, app.preview_rule)):
        if rule is not None and rule.hosts is None:
            problems.append(f"{where}: {label}: the nginx router needs a rule of Host(`…`) matchers "
                            f"joined by || (got {rule.text!r})")
    return problems
