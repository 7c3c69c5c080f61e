"""The Traefik dynamic-configuration document of an app: generated, checked before Traefik sees it, read back.

Both Traefik routers (file and HTTP provider) hand Traefik these documents. An app's document:

    http:
      routers:
        <app>:          rule -> service <app>, on the configured entrypoints, priority P
        <app>-preview:  preview rule -> <app>-<preview color>, priority P + 1   (only with a preview rule)
      services:
        <app>:          weighted (WRR) over <app>-blue and <app>-green, healthCheck: {}
        <app>-blue:     loadBalancer -> http://<blue service>:<port>, healthCheck on the health path
        <app>-green:    loadBalancer -> http://<green service>:<port>, healthCheck on the health path

`healthCheck: {}` on the weighted service makes it skip a color whose servers all fail their
checks, and answer 503 "no available server" at once when no listed color is healthy; Traefik
refuses that unless every child has its own health check, hence the loadBalancer checks.

A color whose weight is 0 is left out of the weighted service, not listed with weight 0.
Traefik's WRR balancer (pkg/server/service/loadbalancer/wrr, v3.6) skips a 0-weight child when
it builds its heap, but still registers the child's health updater; once that child's checks go
down and up again it counts as an available server that is not in the heap, and with the
weighted colors down, the balancer's pick loops forever: requests hang. Left out, the idle color
can never take traffic nor keep a request waiting; the lab test "health checks in every order"
proves it.

Every router carries an explicit priority (`router.traefik.priority`, P): without one Traefik
ranks routers by the length of their rule, and an app with a long rule would outrank another
app, or the operator's routers, on the requests both match. All apps' main routers share P (no
two apps may overlap: bluegreen.claims refuses the newcomer); a preview router gets P + 1, so it
wins where it narrows its own app's main rule (a preview header, say), and the trial routers
P + 2 and P + 3: their rules are the live ones narrowed by a header only the controller sends,
so they win exactly for the controller's own trial requests and for nothing else.
"""

from __future__ import annotations

import dataclasses
import re
import secrets
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from bluegreen.apps import App, Color
from bluegreen.routers.base import HEADER, RouterError, duration, routing_comment, routing_in
from bluegreen.rules import RuleError, parse_rule
from bluegreen.state import Routing

_SERVER_URL = re.compile(r"^http://[A-Za-z0-9][A-Za-z0-9_.-]*:[0-9]{1,5}$")


go_duration = duration  # the format Traefik reads

DEFAULT_PRIORITY = 10_000  # above every length-ranked router whose rule is shorter than 10,000 characters
PREVIEW_RAISE = 1  # a preview router over its app's main router
TRIAL_RAISE = 2  # a trial's routers over the live ones
# Traefik reserves the top 1,000 priorities for its internal routers (api@internal, ACME), and
# refuses a user router above them; on a 32-bit build the top is 2^31 - 1.
MAX_PRIORITY = 2**31 - 1 - 1000 - TRIAL_RAISE - PREVIEW_RAISE
_TOP_PRIORITY = MAX_PRIORITY + TRIAL_RAISE + PREVIEW_RAISE  # a trial's preview router, at the highest P


def color_service(app: str, color: Color) -> str:
    return f"{app}-{color}"


def preview_router(app: str) -> str:
    return f"{app}-preview"


def document(app: App, routing: Routing, *, entrypoints: Iterable[str] = ("web",), health_interval: float = 5.0,
             health_timeout: float = 2.0, priority: int = DEFAULT_PRIORITY) -> dict[str, Any]:
    """The dynamic-configuration document that routes `app` as `routing` says; its main router at `priority`."""
    entrypoints = tuple(entrypoints)
    # Each router gets its own list: a shared one would come out as a YAML anchor and alias.
    routers: dict[str, Any] = {
        app.name: {"rule": str(app.rule), "entryPoints": list(entrypoints), "service": app.name,
                   "priority": priority},
    }
    if app.preview_rule:
        routers[preview_router(app.name)] = {
            "rule": str(app.preview_rule),
            "entryPoints": list(entrypoints),
            "service": color_service(app.name, routing.preview),
            "priority": priority + PREVIEW_RAISE,
        }
    services: dict[str, Any] = {
        app.name: {
            "weighted": {
                "services": [{"name": color_service(app.name, c), "weight": routing.weight(c)}
                             for c in Color if routing.weight(c) > 0],
                "healthCheck": {},
            }
        }
    }
    for color in Color:
        services[color_service(app.name, color)] = {
            "loadBalancer": {
                "servers": [{"url": app.url(color)}],
                "healthCheck": {
                    "path": app.health_path,
                    "interval": go_duration(health_interval),
                    "timeout": go_duration(health_timeout),
                },
            }
        }
    return {"http": {"routers": routers, "services": services}}


TRIAL_SUFFIX = "-trial"  # bluegreen.apps reserves it: no app is named like another's trial
TRIAL_HEADER = "X-Swarmshift-Trial"


def trial_app(app: App) -> App:
    """The app under its trial names, its rules narrowed to requests with a header only the controller knows."""
    token = secrets.token_hex(8)

    return dataclasses.replace(app, name=f"{app.name}{TRIAL_SUFFIX}", rule=app.rule.narrowed(TRIAL_HEADER, token),
                               preview_rule=app.preview_rule.narrowed(TRIAL_HEADER, token) if app.preview_rule else None)


def shape(doc: Mapping[str, Any]) -> str:
    """The document without its weights and preview target: what Traefik can refuse."""
    copy = yaml.safe_load(yaml.safe_dump(doc))
    for service in copy["http"]["services"].values():
        if "weighted" in service:
            service["weighted"]["services"] = sorted(c["name"] for c in service["weighted"]["services"])
    for router in copy["http"]["routers"].values():
        router.pop("service", None)
    return yaml.safe_dump(copy, sort_keys=True)


def objects(doc: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """The names of a document's routers and services."""
    return list(doc["http"]["routers"]), list(doc["http"]["services"])


def merge(documents: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Several apps' documents as one (the HTTP provider serves one); a name used twice is an error."""
    merged: dict[str, Any] = {"http": {"routers": {}, "services": {}}}
    for doc in documents:
        for section in ("routers", "services"):
            for name, value in doc["http"][section].items():
                if name in merged["http"][section]:
                    raise RouterError(f"two apps define the Traefik {section[:-1]} {name!r}")
                merged["http"][section][name] = value
    return merged


def check_document(doc: Mapping[str, Any], *, rules: bool = True) -> None:
    """RouterError unless `doc` is a document this module would hand to Traefik.

    The JSON schema cannot catch what makes Traefik drop a router or a service (a rule that
    does not parse, a dangling service name, a weighted health check over a child without one),
    so this checks those, for the exact shape `document` produces. A document `document` made
    from an app holds rules parsed at discovery: `rules=False` skips parsing them again.
    """
    def fail(message: str) -> None:
        raise RouterError(f"refusing to hand Traefik an invalid document: {message}")

    if set(doc) != {"http"} or not isinstance(doc["http"], Mapping) or set(doc["http"]) - {"routers", "services"}:
        fail("expected only http.routers and http.services")
    routers = doc["http"].get("routers") or {}
    services = doc["http"].get("services") or {}
    for name, router in routers.items():
        if set(router) != {"rule", "entryPoints", "service", "priority"}:
            fail(f"router {name}: unexpected keys {sorted(router)}")
        rank = router["priority"]
        # 0 would mean "rank by rule length", the very thing the explicit priority prevents.
        if not isinstance(rank, int) or isinstance(rank, bool) or not 1 <= rank <= _TOP_PRIORITY:
            fail(f"router {name}: priority must be a whole number from 1 to {_TOP_PRIORITY}, got {rank!r}")
        if rules:
            try:
                parse_rule(router["rule"])
            except (RuleError, TypeError) as err:
                fail(f"router {name}: rule {router['rule']!r}: {err}")
        eps = router["entryPoints"]
        if not isinstance(eps, list) or not eps or not all(isinstance(e, str) and e for e in eps):
            fail(f"router {name}: entryPoints must be a non-empty list of names")
        if router["service"] not in services:
            fail(f"router {name}: service {router['service']!r} is not defined")
    for name, service in services.items():
        if not isinstance(service, Mapping) or len(service) != 1:
            fail(f"service {name}: expected exactly one of loadBalancer or weighted")
        kind, body = next(iter(service.items()))
        if kind == "loadBalancer":
            servers = body.get("servers")
            if not servers or any(not _SERVER_URL.match(str(s.get("url", ""))) or int(s["url"].rsplit(":", 1)[1])
                                  not in range(1, 65536) for s in servers):
                fail(f"service {name}: servers must be http://host:port URLs")
            check = body.get("healthCheck")
            if not isinstance(check, Mapping) or not str(check.get("path", "")).startswith("/"):
                fail(f"service {name}: a loadBalancer needs a healthCheck with an absolute path")
        elif kind == "weighted":
            children = body.get("services") or []
            weights = [c.get("weight") for c in children]
            if not children or any(not isinstance(w, int) or isinstance(w, bool) or not 1 <= w <= 100 for w in weights):
                fail(f"service {name}: weights must be whole numbers from 1 to 100 (a color of weight 0 is left out)")
            if sum(weights) != 100:
                fail(f"service {name}: weights add up to {sum(weights)}, not 100")
            for child in children:
                target = services.get(child.get("name"))
                if target is None:
                    fail(f"service {name}: child {child.get('name')!r} is not defined")
                if "healthCheck" in body and "healthCheck" not in next(iter(target.values())):
                    fail(f"service {name}: healthCheck needs one on child {child['name']}")
        else:
            fail(f"service {name}: unexpected kind {kind}")


def routing_of(doc: Mapping[str, Any], app: str, fallback_preview: Color | None = None) -> Routing | None:
    """The routing a document gives `app`, or None when it does not route it."""
    try:
        children = {c["name"]: c["weight"] for c in doc["http"]["services"][app]["weighted"]["services"]}
        # A color left out has weight 0 (see the module's docstring).
        blue, green = children.get(color_service(app, Color.BLUE), 0), children.get(color_service(app, Color.GREEN), 0)
        preview = preview_color(app, doc["http"]["routers"].get(preview_router(app), {}).get("service"))
        return Routing(blue=blue, green=green, preview=preview or fallback_preview or idle_color(blue, green))
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def preview_color(app: str, service: str | None) -> Color | None:
    if not service:
        return None
    name = service.split("@", 1)[0]  # the API may qualify names with their provider
    for color in Color:
        if name == color_service(app, color):
            return color
    return None


def idle_color(blue: int, green: int) -> Color:
    # Without a preview router nothing shows the preview color; report the one Routing would pick.
    return Color.GREEN if blue >= green else Color.BLUE


def render(doc: Mapping[str, Any], routing: Routing) -> bytes:
    """The document as YAML, checked to read back as exactly the same document."""
    text = yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, allow_unicode=True)
    if yaml.safe_load(text) != doc:
        raise RouterError("the document does not survive a YAML round trip")
    return f"{HEADER}{routing_comment(routing)}\n{text}".encode()


def parse_file(text: str, app: str) -> Routing | None:
    """The routing in a file this router wrote, or None when the file does not route `app`."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    if not isinstance(doc, Mapping):
        return None
    # The routing is repeated in a comment: without a preview rule the document has no preview
    # router, and the preview color must still read back as written.
    recorded = routing_in(text)
    return routing_of(doc, app, recorded.preview if recorded else None)


def merged_document(routes: Iterable[tuple[App, Routing]], **settings: Any) -> dict[str, Any]:
    """One document routing every app as given: what a Traefik would need for the same routing."""
    return merge(document(app, routing, **settings) for app, routing in routes)
