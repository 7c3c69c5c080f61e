"""The Traefik file-provider router: one YAML document per app in the watched directory, replaced atomically.

The same document generator serves the HTTP provider (`traefik_http`), and `TraefikAPI` reads
back what Traefik has loaded, for both.

An app's document:

    http:
      routers:
        <app>:          rule -> service <app>, on the configured entrypoints
        <app>-preview:  preview rule -> <app>-<preview color>      (only with a preview rule)
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

Traefik's file provider reloads the whole directory on any change. A file it cannot read (bad
YAML, a template that fails) makes it keep the provider's previous configuration whole, and a
router or service it refuses (a rule it rejects, an unknown entrypoint, a name defined twice)
is left out of what it runs while the rest of the file is served. So a document is checked
before it is written, and written by rename: Traefik (or any reader) sees the old file or the
new one, never a part. Temp files end in `.tmp`, an extension the provider skips.

Confirmation is Traefik's own word (with `api_url`): a routing counts only once Traefik's API
shows the app's router and services enabled with the new weights. Before a document whose shape
(anything but the weights) Traefik has not yet accepted goes live, it is tried: the same document
under the names `<app>-trial…`, each rule narrowed by a header no request carries, so users never
reach it. If Traefik refuses any part of the trial, the live file is left as it was and the
apply fails with Traefik's errors. If Traefik still refuses the live document (another file
defines the same names, say), the previous document is put back and the confirmation fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import re
import secrets
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from bluegreen.apps import App, Color
from bluegreen.routers import RouterError, poll_until
from bluegreen.rules import RuleError, parse_rule
from bluegreen.state import Routing

HEADER = "# Managed by swarmshift (blue-green controller): rewritten on every switch; do not edit.\n"
# The routing is repeated in a comment: without a preview rule the document has no preview
# router, and the preview color must still read back as written.
_ROUTING_LINE = re.compile(r"^# routing: blue=(\d+) green=(\d+) preview=(blue|green)$", re.MULTILINE)
_SERVER_URL = re.compile(r"^http://[A-Za-z0-9][A-Za-z0-9_.-]*:[0-9]{1,5}$")


def go_duration(seconds: float) -> str:
    """A Go duration string, the format Traefik reads (`5s`, `500ms`)."""
    ms = round(seconds * 1000)
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def color_service(app: str, color: Color) -> str:
    return f"{app}-{color}"


def preview_router(app: str) -> str:
    return f"{app}-preview"


def document(app: App, routing: Routing, *, entrypoints: Iterable[str] = ("web",), health_interval: float = 5.0,
             health_timeout: float = 2.0) -> dict[str, Any]:
    """The dynamic-configuration document that routes `app` as `routing` says."""
    entrypoints = tuple(entrypoints)
    # Each router gets its own list: a shared one would come out as a YAML anchor and alias.
    routers: dict[str, Any] = {
        app.name: {"rule": str(app.rule), "entryPoints": list(entrypoints), "service": app.name},
    }
    if app.preview_rule:
        routers[preview_router(app.name)] = {
            "rule": str(app.preview_rule),
            "entryPoints": list(entrypoints),
            "service": color_service(app.name, routing.preview),
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


TRIAL_SUFFIX = "-trial"  # model.py reserves it: no app is named like another's trial
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


def check_document(doc: Mapping[str, Any]) -> None:
    """RouterError unless `doc` is a document this module would hand to Traefik.

    The JSON schema cannot catch what makes Traefik drop a router or a service (a rule that
    does not parse, a dangling service name, a weighted health check over a child without one),
    so this checks those, for the exact shape `document` produces.
    """
    def fail(message: str) -> None:
        raise RouterError(f"refusing to hand Traefik an invalid document: {message}")

    if set(doc) != {"http"} or not isinstance(doc["http"], Mapping) or set(doc["http"]) - {"routers", "services"}:
        fail("expected only http.routers and http.services")
    routers = doc["http"].get("routers") or {}
    services = doc["http"].get("services") or {}
    for name, router in routers.items():
        if set(router) != {"rule", "entryPoints", "service"}:
            fail(f"router {name}: unexpected keys {sorted(router)}")
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
        preview = _preview_color(app, doc["http"]["routers"].get(preview_router(app), {}).get("service"))
        return Routing(blue=blue, green=green, preview=preview or fallback_preview or _idle(blue, green))
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def _preview_color(app: str, service: str | None) -> Color | None:
    if not service:
        return None
    name = service.split("@", 1)[0]  # the API may qualify names with their provider
    for color in Color:
        if name == color_service(app, color):
            return color
    return None


def _idle(blue: int, green: int) -> Color:
    # Without a preview router nothing shows the preview color; report the one Routing would pick.
    return Color.GREEN if blue >= green else Color.BLUE


def render(doc: Mapping[str, Any], routing: Routing) -> bytes:
    """The document as YAML, checked to read back as exactly the same document."""
    text = yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, allow_unicode=True)
    if yaml.safe_load(text) != doc:
        raise RouterError("the document does not survive a YAML round trip")
    return f"{HEADER}# routing: {routing}\n{text}".encode()


def parse_file(text: str, app: str) -> Routing | None:
    """The routing in a file this router wrote, or None when the file does not route `app`."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    if not isinstance(doc, Mapping):
        return None
    line = _ROUTING_LINE.search(text)
    return routing_of(doc, app, Color(line.group(3)) if line else None)


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace `path` with `data` so that readers see the old content or the new, never a part.

    The temp file sits in the same directory (rename is atomic only within a file system) and
    ends in `.tmp`, which Traefik's file provider skips. Data and directory are fsynced, so a
    crash right after the rename cannot bring back the old file or an empty one.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        # mkstemp creates 0600; the proxy reading the file may run as another user.
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class TraefikAPI:
    """Reads what Traefik has loaded, from its API (`GET /api/http/services/<name>@<provider>`).

    Traefik answers with the service's configuration as loaded plus runtime fields: for a
    weighted service `{"weighted": {"services": [{"name", "weight"}, …]}, "status", "name",
    "provider", "type": "weighted", …}`; a router answers with its `service`. The API should
    listen on an entrypoint only the stack can reach.
    """

    def __init__(self, url: str, *, provider: str = "file", timeout: float = 3.0,
                 session: aiohttp.ClientSession | None = None) -> None:
        self.url = url.rstrip("/")
        self.provider = provider
        self.timeout = timeout
        self._session = session
        self._own_session = session is None

    async def _get(self, path: str) -> dict[str, Any] | None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        try:
            async with self._session.get(f"{self.url}{path}") as resp:
                if resp.status == 404:
                    return None
                if resp.status != 200:
                    raise RouterError(f"Traefik API {path}: HTTP {resp.status}")
                return await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as err:
            raise RouterError(f"Traefik API {path}: {err or type(err).__name__}") from err

    async def loaded(self, app: App, fallback_preview: Color | None = None) -> Routing | None:
        """The routing Traefik has loaded for `app`, or None when it has not loaded the app (yet)."""
        service = await self._get(f"/api/http/services/{app.name}@{self.provider}")
        router = None
        if app.preview_rule:
            router = await self._get(f"/api/http/routers/{preview_router(app.name)}@{self.provider}")
        return loaded_routing(app.name, service, router, fallback_preview)

    async def refusals(self, routers: Iterable[str], services: Iterable[str]) -> list[str] | None:
        """What Traefik says is wrong with these routers and services; None while it has not loaded all of them.

        A router counts as refused unless its status is `enabled` (`warning` is an entrypoint
        that does not exist among others); a service when it is `disabled`.
        """
        problems: list[str] = []
        for kind, names, bad in (("routers", routers, {"disabled", "warning"}), ("services", services, {"disabled"})):
            for name in names:
                info = await self._get(f"/api/http/{kind}/{name}@{self.provider}")
                if info is None:
                    return None
                if info.get("status") in bad or (kind == "routers" and info.get("error")):
                    errors = "; ".join(info.get("error") or []) or f"status {info.get('status')}"
                    problems.append(f"{kind[:-1]} {name}: {errors}")
        return problems

    async def judge(self, doc: Mapping[str, Any], within: float) -> None:
        """Wait until Traefik has loaded every object of `doc`; RouterError with its words if it refuses one."""
        routers, services = objects(doc)
        deadline = time.monotonic() + within
        while True:
            problems = await self.refusals(routers, services)
            if problems:
                raise RouterError("Traefik refused it: " + "; ".join(problems))
            if problems is not None:
                return
            if time.monotonic() >= deadline:
                raise RouterError(f"Traefik did not load {', '.join(routers)} within {within:g}s")
            await asyncio.sleep(0.1)

    async def close(self) -> None:
        if self._session is not None and self._own_session:
            await self._session.close()
        self._session = None


class Trials:
    """Which document shapes Traefik has accepted per app, and the trial run for a new one."""

    def __init__(self, api: TraefikAPI | None, within: float) -> None:
        self.api = api
        self.within = within
        self.accepted: dict[str, str] = {}

    def needed(self, app: App, doc: Mapping[str, Any]) -> bool:
        return self.api is not None and self.accepted.get(app.name) != shape(doc)

    async def run(self, app: App, routing: Routing, make, publish, withdraw) -> None:
        """Publish the app's trial document, let Traefik judge it, withdraw it; RouterError if refused."""
        assert self.api is not None
        trial = make(trial_app(app), routing)
        check_document(trial)
        await publish(trial)
        try:
            await self.api.judge(trial, self.within)
        except RouterError as err:
            raise RouterError(f"{app.name}: the new Traefik configuration was tried first and {err}; "
                              "the routing in effect is unchanged") from None
        finally:
            await withdraw()

    def accept(self, app: App, doc: Mapping[str, Any]) -> None:
        self.accepted[app.name] = shape(doc)

    async def live_refusals(self, doc: Mapping[str, Any]) -> list[str] | None:
        assert self.api is not None
        return await self.api.refusals(*objects(doc))


def loaded_routing(app: str, service: Mapping[str, Any] | None, preview: Mapping[str, Any] | None,
                   fallback_preview: Color | None = None) -> Routing | None:
    """The routing in Traefik's API answers for the app's weighted service and preview router.

    None unless the service is a weighted one that Traefik runs (status enabled or warning) whose
    colors' weights add up to 100; a color left out has weight 0, and a child without a weight
    has Traefik's default weight, 1.
    """
    if not service or service.get("status") not in ("enabled", "warning"):
        return None
    try:
        children = service["weighted"]["services"]
        weights = {str(c["name"]).split("@", 1)[0]: c.get("weight", 1) for c in children}
        blue, green = weights.get(color_service(app, Color.BLUE), 0), weights.get(color_service(app, Color.GREEN), 0)
        if blue + green != 100:
            return None
        if preview is not None and preview.get("status") not in ("enabled", "warning"):
            return None
        color = _preview_color(app, preview.get("service") if preview else None)
        return Routing(blue=int(blue), green=int(green),
                       preview=color or fallback_preview or _idle(int(blue), int(green)))
    except (KeyError, TypeError, ValueError):
        return None


async def confirm_loaded(router, app: App, routing: Routing, doc: Mapping[str, Any] | None, put_back) -> bool:
    """Poll until Traefik runs `routing` for the app. If Traefik refuses the live document, put the
    previous one back and raise RouterError with its words; never report a routing it does not run."""
    trials: Trials = router.trials
    if trials.api is None or doc is None:
        return await poll_until(lambda: router.read(app), routing, router.confirm_timeout)
    deadline = time.monotonic() + router.confirm_timeout
    while True:
        problems = await trials.live_refusals(doc)
        if problems:
            await put_back(app)
            raise RouterError(f"{app.name}: Traefik refused the new configuration: {'; '.join(problems)}; "
                              "the previous one is put back")
        if problems is not None and await router.read(app) == routing:
            trials.accept(app, doc)
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.1)


class TraefikFileRouter:
    kind = "traefik-file"

    def __init__(self, dynamic_dir: str | Path, *, entrypoints: Iterable[str] = ("web",), health_interval: float = 5.0,
                 health_timeout: float = 2.0, api: TraefikAPI | None = None, confirm_timeout: float = 10.0) -> None:
        self.dir = Path(dynamic_dir)
        self.entrypoints = tuple(entrypoints)
        self.health_interval = health_interval
        self.health_timeout = health_timeout
        self.api = api
        self.confirm_timeout = confirm_timeout
        self.trials = Trials(api, confirm_timeout)
        self._previous: dict[str, bytes | None] = {}  # the file before the last write, to put back
        self._live: dict[str, dict[str, Any]] = {}  # the document last written per app

    def path(self, app: str) -> Path:
        return self.dir / f"{app}.yml"

    def document(self, app: App, routing: Routing) -> dict[str, Any]:
        return document(app, routing, entrypoints=self.entrypoints, health_interval=self.health_interval,
                        health_timeout=self.health_timeout)

    async def _write(self, path: Path, data: bytes | None) -> None:
        try:
            if data is None:
                with contextlib.suppress(FileNotFoundError):
                    await asyncio.to_thread(os.unlink, path)
            else:
                await asyncio.to_thread(write_atomic, path, data)
        except OSError as err:
            raise RouterError(f"{path}: {err.strerror or err}") from err

    async def apply(self, app: App, routing: Routing) -> None:
        doc = self.document(app, routing)
        check_document(doc)
        data = render(doc, routing)
        path = self.path(app.name)
        try:
            current: bytes | None = path.read_bytes()
        except FileNotFoundError:
            current = None
        except OSError as err:
            raise RouterError(f"{path}: {err.strerror or err}") from err
        self._live[app.name] = doc
        if current == data:
            return  # already in place: a rewrite would only make Traefik reload for nothing
        if self.trials.needed(app, doc):
            trial_path = self.path(f"{app.name}{TRIAL_SUFFIX}")
            await self.trials.run(app, routing, self.document,
                                  lambda trial: self._write(trial_path, render(trial, routing)),
                                  lambda: self._write(trial_path, None))
        self._previous[app.name] = current
        await self._write(path, data)

    async def written(self, app: App) -> Routing | None:
        """The routing in the app's file, or None when there is no readable file."""
        try:
            text = await asyncio.to_thread(self.path(app.name).read_text)
        except OSError:
            return None
        return parse_file(text, app.name)

    async def read(self, app: App) -> Routing | None:
        written = await self.written(app)
        if self.api is None:
            return written
        try:
            return await self.api.loaded(app, fallback_preview=written.preview if written else None)
        except RouterError:
            return None  # Traefik unreachable: unknown, which the machine never takes as confirmed

    async def confirm(self, app: App, routing: Routing) -> bool:
        return await confirm_loaded(self, app, routing, self._live.get(app.name), self._put_back)

    async def _put_back(self, app: App) -> None:
        previous = self._previous.pop(app.name, None)
        await self._write(self.path(app.name), previous)

    def merged(self) -> dict[str, Any]:
        """Every app file this router wrote, as one document: what `GET /v1/traefik` serves in file mode."""
        docs = []
        for path in sorted(self.dir.glob("*.yml")):
            if path.stem.endswith(TRIAL_SUFFIX):
                continue
            text = path.read_text()
            if text.startswith(HEADER):  # other files in the directory belong to the operator
                docs.append(yaml.safe_load(text))
        return merge(docs)

    async def remove(self, app: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(os.unlink, self.path(app))

    async def close(self) -> None:
        if self.api is not None:
            await self.api.close()
