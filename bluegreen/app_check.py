"""What keeps labelled apps from working with a config: the problems `bluegreen check` and the controller report."""

from __future__ import annotations

from collections.abc import Iterable

from bluegreen import routers
from bluegreen.apps import App, Labelled, discover
from bluegreen.config import BlueGreenConfig
from bluegreen.labels import PREVIEW_RULE_LABEL, STATE_KEYS
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
    return problems + routers.app_problems(config.router, app)
