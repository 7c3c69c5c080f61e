"""What keeps labelled apps from working with a config: the problems `bluegreen check` and the controller report."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from bluegreen import routers
from bluegreen.apps import App, Discovery, Labelled, app_key, discover, scope_of
from bluegreen.claims import Board, Claim, allowance_problems
from bluegreen.config import BlueGreenConfig
from bluegreen.labels import APP_LABEL, K_GENERATION, PREVIEW_RULE_LABEL, RULE_LABEL, STATE_KEYS
from bluegreen.rules import Rule
from bluegreen.state import AppState

Created = Callable[[Labelled], Any]


def service_created(svc: Labelled) -> Any:
    """When the service was created, or None: swarmshift.swarm.Service may carry `created_at`."""
    return getattr(svc, "created_at", None)


def check_app_labels(services: Iterable[Labelled], config: BlueGreenConfig,
                     created: Created = service_created) -> list[str]:
    """Every problem with the blue-green labels of `services`, one line each (for `bluegreen check`)."""
    services = list(services)
    found = discover(services, config.app_defaults())
    problems = list(found.problems)
    for svc in sorted(services, key=lambda s: s.name):
        if any(key in STATE_KEYS for key in svc.labels):
            problems.extend(AppState.from_labels(svc.labels, svc.name)[1])
    for app in found.apps.values():
        problems.extend(app_problems(app, config))
    lost = board(services, config, created).lost
    problems.extend(c.problem() for name in sorted(lost) for c in lost[name])
    return problems


def unmatched_gates(config: BlueGreenConfig, keys: Iterable[str]) -> list[str]:
    """The `apps` keys of the config that name none of `keys`: their gates apply to nothing, maybe a typo.

    Not a problem (the app may be deployed later), but an operator who meant to pause `shop_web`
    and wrote `web` must learn that `shop_web` deploys without the pause.
    """
    known = set(keys)
    return [f"apps.{key}: no app has this key, so its gates apply to nothing (app keys: "
            f"{', '.join(sorted(known)) or 'none'})" for key in sorted(config.apps) if key not in known]


def app_rules(app: App) -> tuple[tuple[str, Rule], ...]:
    """The app's rules, each with the label that sets it."""
    return ((RULE_LABEL, app.rule),) + (((PREVIEW_RULE_LABEL, app.preview_rule),) if app.preview_rule else ())


def app_problems(app: App, config: BlueGreenConfig) -> list[str]:
    """What keeps a well-labelled app from working with this config's router, probes and host allowances."""
    where = f"app {app.name}"
    problems = []
    if config.probe.via == "router" and app.preview_rule is None:
        problems.append(f"{where}: probe.via router reaches the idle color only through the preview "
                        f"route: set {PREVIEW_RULE_LABEL} or defaults.preview_rule")
    problems += allowance_problems(app.name, app_rules(app), config.hosts, (app.blue_service, app.green_service))
    return problems + routers.app_problems(config.router, app)


def claim(app: App, services: Iterable[Labelled], created: Created = service_created,
          last: App | None = None) -> Claim:
    """The app's claim: its rules, whether it was routed with them, and its age (its oldest service's).

    Routed: a service carries the state, and `last` (the app as this process last routed it, if
    it did) had the same rules. An app routed before that changes its rules is a newcomer to
    what the new ones claim: it cannot take over another app's route by age alone.
    """
    services = list(services)
    ages = [age for svc in services if (age := created(svc)) is not None]
    rules = app_rules(app)
    same = last is None or app_rules(last) == rules
    return Claim(app.name, rules, routed=same and any(K_GENERATION in svc.labels for svc in services),
                 created=min(ages) if ages else None)


def board(services: Iterable[Labelled], config: BlueGreenConfig, created: Created = service_created,
          last: Mapping[str, App] | None = None) -> Board:
    """Every app's claim, for the conflict check: the apps of this controller (its selector), which share its proxy.

    Another controller's apps are not compared: it may drive another proxy (another stack's
    Traefik), where they take nothing from ours; two controllers that share one proxy keep apart
    by giving their apps disjoint `hosts`. `last`: the apps as this process last routed them
    (see `claim`).
    """
    services = [svc for svc in services if config.selects(svc.labels)]
    return board_of(discover(services, config.app_defaults()), services, config, created, last)


def board_of(found: Discovery, services: Iterable[Labelled], config: BlueGreenConfig,
             created: Created = service_created, last: Mapping[str, App] | None = None) -> Board:
    """`board` for services already selected and discovered (`found` is `discover(services)`).

    An app this controller would not route anyway (problems with this config, never routed)
    claims nothing.
    """
    members: dict[str, list[Labelled]] = {}
    for svc in services:
        members.setdefault(app_key(svc.labels.get(APP_LABEL, ""), scope_of(svc.labels)), []).append(svc)
    claims = {}
    for name, app in found.apps.items():
        c = claim(app, members[name], created, (last or {}).get(name))
        if c.routed or not app_problems(app, config):
            claims[name] = c
    return Board(claims)
