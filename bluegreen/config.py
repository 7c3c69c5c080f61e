"""The blue-green controller's settings (the `--config` file and SWARMSHIFT_* variables) and the label check.

Timings use the issue's names at the top level (`probe_interval`, `healthy_threshold`,
`failure_threshold`, `verification_window`, `scale_down_delay`, `rollback_on_alert`); the router,
the app defaults, Prometheus and notifications are sections. Lists may also be given as one
comma-separated string, so that `SWARMSHIFT_PROGRESSIVE_STEPS=10,50,100` works.
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, ValidationInfo, field_validator, model_validator

from bluegreen.apps import AppDefaults, Color, Strategy, valid_key
from bluegreen.canary import CanaryPolicy
from bluegreen.claims import allowance_key_problem, host_pattern_problem
from bluegreen.phases import CheckResult, Settings
from bluegreen.routers.traefik_doc import DEFAULT_PRIORITY, MAX_PRIORITY
from bluegreen.rules import Rule
from bluegreen.smoke import MAX_REQUESTS, SmokeRequest
from bluegreen.state import validate_steps
from bluegreen.webhook_gates import Webhook, unique_names
from swarmshift.config import CommaList, Duration, IntList, Strict, selects
from swarmshift.daemon import DaemonSettings
from swarmshift.notify import NotifySettings


def _command(value: Any) -> Any:
    # A command from an environment variable is one string; split it the way a shell would.
    return shlex.split(value) if isinstance(value, str) else value


Command = Annotated[list[str], BeforeValidator(_command)]


def _allowance_key(value: str) -> str:
    problem = allowance_key_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _host_pattern(value: str) -> str:
    # Host names are case-insensitive, and Traefik's Host matcher folds them: so do the patterns.
    problem = host_pattern_problem(value.lower())
    if problem:
        raise ValueError(problem)
    return value.lower()


AllowanceKey = Annotated[str, AfterValidator(_allowance_key)]
HostPattern = Annotated[str, AfterValidator(_host_pattern)]

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_]*)\s*\}\}")
PLACEHOLDERS = ("app", "color", "service")
_CHECK_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


class PromCheck(Strict):
    """A PromQL query that must hold while a color is checked: the check passes when `value <comparison> threshold`.

    `{{app}}`, `{{color}}` and `{{service}}` in the query become the app, the color under test and
    its Swarm service. A query that returns no sample (no traffic yet) counts as `no_data`; a
    query Prometheus refuses always fails, because a typo must not pass silently.
    """

    name: str
    query: str
    threshold: float
    comparison: Literal["<", "<=", ">", ">="] = "<"
    no_data: Literal["pass", "fail"] = "pass"

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _CHECK_NAME.match(value):
            raise ValueError("use letters, digits, '.', '_' and '-'")
        return value

    @field_validator("query")
    @classmethod
    def _query(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the query is empty")
        unknown = sorted({name for name in _PLACEHOLDER.findall(value) if name not in PLACEHOLDERS})
        if unknown:
            raise ValueError(f"unknown placeholder {{{{{unknown[0]}}}}}: use {{{{app}}}}, {{{{color}}}} or {{{{service}}}}")
        if "{{" in _PLACEHOLDER.sub("", value):
            raise ValueError("unbalanced {{ in the query")
        return value

    def render(self, app: str, color: Color | str, service: str) -> str:
        values = {"app": app, "color": str(color), "service": service}
        return _PLACEHOLDER.sub(lambda m: values[m.group(1)], self.query)

    def evaluate(self, value: float | None, error: str | None = None) -> CheckResult:
        """The check's verdict on one query result: a value, no sample (None), or a query error."""
        if error is not None:
            return CheckResult(self.name, False, f"query failed: {error}")
        if value is None or math.isnan(value):
            return CheckResult(self.name, self.no_data == "pass", f"no data (no_data: {self.no_data})")
        ok = {"<": value < self.threshold, "<=": value <= self.threshold,
              ">": value > self.threshold, ">=": value >= self.threshold}[self.comparison]
        verdict = "" if ok else "not "
        return CheckResult(self.name, ok, f"{value:g} is {verdict}{self.comparison} {self.threshold:g}")


HTTP_CONFIRM_TIMEOUT = 90.0


class TraefikSettings(Strict):
    dynamic_dir: str = "/etc/traefik/dynamic"  # the file provider's watched directory (traefik-file)
    # Traefik's API, reachable only inside the stack, e.g. http://traefik:8080. When set, a switch
    # counts as done only once Traefik reports the new weights loaded.
    api_url: str | None = None
    entrypoints: CommaList = ["web"]
    # Traefik's own active health checks of each color: a dead color leaves the weighted service.
    health_interval: Duration = 5.0
    health_timeout: Duration = 2.0
    # How long one switch waits for Traefik to report it; default 10s, or 90s with traefik-http,
    # whose Traefik, after polls that failed while the controller was away, backs off up to 60 s
    # (±50 %) before it polls again (docs/benchmarks.md, "Traefik HTTP provider").
    confirm_timeout: Duration | None = None
    # Every router's explicit priority (see bluegreen.routers.traefik_doc): main routers P, preview
    # routers P + 1, trial routers P + 2 and P + 3. Traefik ranks a router without one by the
    # length of its rule, so the default outranks every such router with a rule shorter than it.
    priority: int = Field(DEFAULT_PRIORITY, ge=1, le=MAX_PRIORITY)

    def confirm_seconds(self, kind: str) -> float:
        if self.confirm_timeout is not None:
            return self.confirm_timeout
        return HTTP_CONFIRM_TIMEOUT if kind == "traefik-http" else 10.0

    @field_validator("entrypoints")
    @classmethod
    def _entrypoints(cls, value: list[str]) -> list[str]:
        if not value or any(not re.match(r"^[A-Za-z0-9_-]+$", v) for v in value):
            raise ValueError("expected entrypoint names such as web")
        return value

    @field_validator("api_url")
    @classmethod
    def _api_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/\s]+/?$", value):
            raise ValueError("expected the API's base URL, such as http://traefik:8080")
        return value.rstrip("/") if value else value

    @model_validator(mode="after")
    def _timeouts(self) -> TraefikSettings:
        if self.health_timeout >= self.health_interval:
            raise ValueError("health_timeout must be shorter than health_interval")
        return self


class NginxSettings(Strict):
    # One <app>.conf per app; nginx.conf includes it inside `http { include .../*.conf; }`.
    conf_dir: str = "/etc/nginx/swarmshift"
    listen: str = "80"  # PORT or HOST:PORT, as nginx's listen takes it
    # How a candidate is tested; it must read the live config, where the candidate sits.
    test_command: Command = ["nginx", "-t", "-q"]
    # How nginx is told to reload, one of: a command, SIGHUP to the pid in a file, or SIGHUP to
    # the containers of an nginx Swarm service on this node (the conf_dir volume's node). With
    # `service`, the test command runs in that container through the Docker API too.
    reload_command: Command | None = None
    pid_file: str | None = None
    service: str | None = None
    resolver: str = "127.0.0.11"  # Docker's embedded DNS: names of dnsrr services resolve per request
    resolver_valid: Duration = 5.0
    # 0 closes client connections after each response. An nginx reload closes idle keep-alive
    # connections, and a request sent on one at that instant is lost; without keep-alive no
    # request can be. Raise it when every client retries idempotent requests.
    keepalive_timeout: Duration = 0.0
    # Where each app's file answers with the routing nginx has loaded (PORT or HOST:PORT), so a
    # switch is confirmed by nginx itself; status_url is how the controller reaches it
    # (http://nginx:8099). Keep the port unpublished.
    status_listen: str | None = None
    status_url: str | None = None
    server_snippet: str = ""  # extra directives for every app's server block
    command_timeout: Duration = 10.0
    confirm_timeout: Duration = 5.0

    @field_validator("listen", "status_listen")
    @classmethod
    def _listen(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^(?:(?:[A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\]):)?[0-9]{1,5}$", value):
            raise ValueError("expected PORT or HOST:PORT")
        if value is not None and not 1 <= int(value.rsplit(":", 1)[-1]) <= 65535:
            raise ValueError("the port must be from 1 to 65535")
        return value

    @field_validator("status_url")
    @classmethod
    def _status_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/\s]+/?$", value):
            raise ValueError("expected a base URL such as http://nginx:8099")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> NginxSettings:
        reloads = [name for name in ("reload_command", "pid_file", "service") if getattr(self, name)]
        if len(reloads) > 1:
            raise ValueError(f"set one way to reload nginx, not {' and '.join(reloads)}")
        if (self.status_listen is None) != (self.status_url is None):
            raise ValueError("status_listen and status_url go together")
        if self.status_listen is not None and self.status_listen.rsplit(":", 1)[-1] == self.listen.rsplit(":", 1)[-1]:
            raise ValueError("status_listen must use another port than listen")
        return self


class RouterSettings(Strict):
    kind: Literal["traefik-file", "traefik-http", "nginx"] = "traefik-file"
    traefik: TraefikSettings = TraefikSettings()
    nginx: NginxSettings = NginxSettings()


class DefaultsSettings(Strict):
    """Routing attributes of apps whose labels don't set them; `{app}` in a rule is the app's name."""

    port: int | None = Field(None, ge=1, le=65535)
    rule: str | None = None
    health_path: str = "/health"
    preview_rule: str | None = None
    strategy: Strategy = Strategy.BLUEGREEN

    @field_validator("rule", "preview_rule")
    @classmethod
    def _rule(cls, value: str | None) -> str | None:
        if value is not None:
            Rule.parse(value.replace("{app}", "app"))
        return value

    @field_validator("health_path")
    @classmethod
    def _health_path(cls, value: str) -> str:
        if not re.match(r"^/[^\s\"'`;{}\\]*$", value):
            raise ValueError("expected an absolute path such as /health")
        return value


_PROBE_URL = re.compile(r"^https?://[^/\s]+(?:/[^\s]*)?$")


class ProbeSettings(Strict):
    """How the controller reaches a color for its HTTP probes.

    `direct` probes every task of the color by Swarm DNS (`tasks.<service>`), as the controller
    does when it runs on the apps' overlay network, as in production. `router` goes through the
    proxy instead, for a controller that cannot reach the tasks: the color that takes all traffic
    at `active_url`, the preview color at `preview_url`, with the first host of the app's rule
    (or preview rule) as the Host header. A color no route serves cannot be probed that way, and
    unreachable never counts as healthy.
    """

    via: Literal["direct", "router"] = "direct"
    active_url: str | None = None  # e.g. http://traefik:80 or http://127.0.0.1:8080; {app} is the app's name
    preview_url: str | None = None  # default: active_url (the preview rule's host tells them apart)
    # Probed besides the health path once users' traffic reaches the color (Progressing,
    # Verifying): a release whose health check passes but whose pages fail is caught there.
    verify_paths: CommaList = []
    verify_requests: int = Field(3, ge=1, le=100)  # per path and task in each round; any 5xx fails it

    @field_validator("active_url", "preview_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not _PROBE_URL.match(value):
            raise ValueError("expected a base URL such as http://traefik:80")
        return value.rstrip("/") if value else value

    @field_validator("verify_paths")
    @classmethod
    def _paths(cls, value: list[str]) -> list[str]:
        for path in value:
            if not re.match(r"^/[^\s\"'`;{}\\]*$", path):
                raise ValueError(f"expected absolute paths such as /, got {path!r}")
        return value

    @model_validator(mode="after")
    def _router_urls(self) -> ProbeSettings:
        if self.via == "router" and not self.active_url:
            raise ValueError("via router needs active_url (and preview_url when the preview rule is served elsewhere)")
        return self

    def route_url(self, app: str, preview: bool) -> str | None:
        template = (self.preview_url or self.active_url) if preview else self.active_url
        return template.replace("{app}", app) if template else None


def _canary_problem(info: ValidationInfo) -> str | None:
    """Why this config cannot run a canary step: it weights colors, so Traefik only, and reads Prometheus."""
    router = info.data.get("router")
    if router is not None and router.kind == "nginx":
        return ("a canary needs a Traefik router (router.kind traefik-file or traefik-http): router nginx switches "
                "all traffic at once and cannot send a weight to the new color")
    prometheus = info.data.get("prometheus")
    if prometheus is not None and not prometheus.url:
        return "a canary needs prometheus.url: its analysis reads Traefik's metrics through Prometheus"
    return None


def _app_key(value: str) -> str:
    if not valid_key(value):
        raise ValueError("expected an app key: the app's name, or <stack>_<app> for an app of a stack")
    return value


AppKey = Annotated[str, AfterValidator(_app_key)]
SmokeList = Annotated[list[SmokeRequest], Field(max_length=MAX_REQUESTS)]
# The webhook gates (bluegreen.webhook_gates): at most MAX_WEBHOOKS, names unique in each list.
WebhookList = Annotated[list[Webhook], AfterValidator(unique_names)]


class CanarySettings(Strict):
    """The canary step before the full switch (Traefik routers only; docs/bluegreen.md, "Canary").

    `weight` % of the traffic goes to the new color for `analysis`; every `interval` the
    controller asks Prometheus for the 5xx share and the latency quantile of that color's Traefik
    service over the canary so far. A breach rolls back at once; fewer than `min_requests`
    requests is no verdict yet; at the window's end too little traffic fails the canary unless
    `require_traffic: false`. Prometheus unanswered is retried (with backoff) and never passes:
    `grace` after the window, the deploy rolls back.
    """

    weight: int = Field(5, ge=1, le=50)
    analysis: Duration = 60.0
    interval: Duration = 10.0
    max_error_rate: float = Field(0.05, ge=0.0, le=1.0)
    max_latency: Duration | None = None  # None: the latency is shown, not judged
    latency_quantile: float = Field(0.99, gt=0.0, lt=1.0)
    min_requests: int = Field(20, ge=1, le=1_000_000)
    require_traffic: bool = True
    grace: Duration = 30.0

    @field_validator("interval")
    @classmethod
    def _interval(cls, value: float) -> float:
        if value < 1.0:
            raise ValueError("must be at least 1s: each analysis is three Prometheus queries")
        return value

    @field_validator("max_latency")
    @classmethod
    def _latency(cls, value: float | None) -> float | None:
        if value is not None and value <= 0:
            raise ValueError("must be more than 0")
        return value

    @model_validator(mode="after")
    def _window(self) -> CanarySettings:
        if self.analysis < self.interval:
            raise ValueError("analysis must hold at least one interval")
        return self

    def policy(self) -> CanaryPolicy:
        return CanaryPolicy(weight=self.weight, analysis=self.analysis, interval=self.interval,
                            max_error_rate=self.max_error_rate, max_latency=self.max_latency,
                            min_requests=self.min_requests, require_traffic=self.require_traffic, grace=self.grace,
                            latency_quantile=self.latency_quantile)


class AppGates(Strict):
    """One app's release gates, by its key under `apps`: each key given replaces the top-level one for it."""

    smoke: SmokeList | None = None  # [] turns the top-level smoke requests off for this app
    auto_promotion: bool | None = None
    auto_promotion_after: Duration | None = None
    # A mapping sets the app's canary, key by key over the top-level one; false: no canary for the app.
    canary: CanarySettings | Literal[False] | None = None
    webhooks: WebhookList | None = None  # replaces the top-level list for this app; [] turns them off
    preview_replicas: int | None = Field(None, ge=1, le=1000)  # the idle color's replicas until ScalingUp


class PrometheusSettings(Strict):
    url: str | None = None
    timeout: Duration = 5.0


class BlueGreenConfig(DaemonSettings):
    # Fields are validated in this order, so a check on one field may look at those above it;
    # DaemonSettings' (listen, token_file, selector, log_format, log_level, dry_run) come first.
    docker_timeout: Duration = 10.0
    router: RouterSettings = RouterSettings()
    defaults: DefaultsSettings = DefaultsSettings()
    # The hosts each app may route: app name, or glob over app or service names (`shop_*`) ->
    # host patterns (`shop.example.com`, `*.shop.example.com`, `*`). The first key that matches
    # an app, in the order written, is its allowance; with `hosts` set, an app no key matches may
    # route nothing. Unset: any app may route any host. Only this file widens it, never a label.
    hosts: dict[AllowanceKey, Annotated[list[HostPattern], Field(min_length=1)]] | None = None
    probe_interval: Duration = 2.0
    probe_timeout: Duration | None = None  # default: 2s, or probe_interval when that is shorter
    probe: ProbeSettings = ProbeSettings()
    # How often an app with nothing in flight is reconciled (routing, locks, retiring the idle
    # color); a deploy in flight ticks every probe_interval, and requests and alerts act at once.
    reconcile_interval: Duration = 10.0
    healthy_threshold: int = Field(3, ge=1, le=100)
    failure_threshold: int = Field(2, ge=0, le=100)
    wait_timeout: Duration = 300.0
    precheck_timeout: Duration = 120.0
    switch_timeout: Duration | None = None  # default: 30s, or the confirm timeout + 30s with traefik-http
    verification_window: Duration = 60.0
    prometheus: PrometheusSettings = PrometheusSettings()
    checks: list[PromCheck] = []
    scale_down_delay: Duration = 600.0
    # A failed or rolled-back deploy's color is retired after this instead (Argo Rollouts'
    # abortScaleDownDelaySeconds, 30 s by default there too): it is kept for inspection, not for a
    # way back, since nothing routes to it.
    abort_scale_down_delay: Duration = 30.0
    # A color is scaled down only once the router confirms its weight 0 and this long after, so
    # requests in flight on it finish (and Docker's stop_grace_period covers the tasks' own stop).
    drain_grace: Duration = 10.0
    keep: bool = False
    rollback_on_alert: Literal["verification", "always", "never"] = "verification"
    # Alerts looked at per POST /v1/alerts; the rest of a bigger notification is answered 429.
    max_alerts_per_request: int = Field(50, ge=1, le=1000)
    on_restart: Literal["resume", "rollback"] = "resume"
    progressive_steps: IntList = [10, 50, 100]
    notify: NotifySettings = NotifySettings()
    # Release gates before the switch (docs/bluegreen.md, "Gates before the switch"): requests the idle
    # color must answer as expected, and whether a person promotes. The operator's alone: no label
    # can set or loosen them. `apps` sets them per app key, the top-level keys for every other app.
    smoke: SmokeList = []
    auto_promotion: bool = True
    auto_promotion_after: Duration | None = None
    # A canary step before the full switch, for every app (apps.<key>.canary for one); Traefik only.
    canary: CanarySettings | None = None
    # Flagger-style webhook gates: pre-rollout, confirm-promotion and post-rollout (docs/bluegreen.md,
    # "Webhook gates"). Secrets come from files (`token_file`, `secret_file`), never from labels.
    webhooks: WebhookList = []
    # The idle color runs with this many replicas (at most the active count) through the gates,
    # and is scaled to the active count in ScalingUp, before the switch. None: the active count.
    preview_replicas: int | None = Field(None, ge=1, le=1000)
    apps: dict[AppKey, AppGates] = {}

    def selects(self, labels: Mapping[str, str]) -> bool:
        """Whether a service with `labels` is within this controller's `selector`."""
        return selects(self.selector, labels)

    @field_validator("dry_run")
    @classmethod
    def _no_dry_run(cls, value: bool) -> bool:
        # The autoscaler's decisions stand alone, so it can make them and not write them. A deploy
        # is a chain: each phase starts from the state the one before wrote on the services, so a
        # controller that writes nothing would accept a deploy and never leave its first step.
        if value:
            raise ValueError("the blue-green controller has no dry run: each phase starts from the state the one "
                             "before wrote, so writing nothing would stop every deploy at its first step; use "
                             "`swarmshift bluegreen check` to validate, and a staging stack to rehearse")
        return value

    @field_validator("defaults")
    @classmethod
    def _defaults(cls, value: DefaultsSettings, info: ValidationInfo) -> DefaultsSettings:
        router = info.data.get("router")
        if router is not None and router.kind == "nginx" and value.strategy is Strategy.PROGRESSIVE:
            raise ValueError("strategy progressive needs a Traefik router: nginx switches all traffic at once")
        return value

    @field_validator("probe_interval", "reconcile_interval")
    @classmethod
    def _tick(cls, value: float) -> float:
        if value < 0.2:
            raise ValueError("must be at least 200ms")
        return value

    @field_validator("probe_timeout")
    @classmethod
    def _probe_timeout(cls, value: float | None, info: ValidationInfo) -> float | None:
        interval = info.data.get("probe_interval")
        if value is not None and interval is not None and value > interval:
            raise ValueError("must not exceed probe_interval: a probe round has to fit in a tick")
        return value

    @field_validator("verification_window")
    @classmethod
    def _window(cls, value: float, info: ValidationInfo) -> float:
        interval = info.data.get("probe_interval")
        if interval is not None and value < interval:
            raise ValueError("must hold at least one probe_interval")
        return value

    @field_validator("progressive_steps")
    @classmethod
    def _steps(cls, value: list[int]) -> list[int]:
        validate_steps(value)
        return value

    @field_validator("checks")
    @classmethod
    def _checks(cls, value: list[PromCheck], info: ValidationInfo) -> list[PromCheck]:
        names = [check.name for check in value]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"check names must be unique: {', '.join(duplicates)}")
        prometheus = info.data.get("prometheus")
        if value and prometheus is not None and not prometheus.url:
            raise ValueError("checks need prometheus.url")
        return value

    @field_validator("auto_promotion_after")
    @classmethod
    def _after(cls, value: float | None, info: ValidationInfo) -> float | None:
        if value is not None and info.data.get("auto_promotion", True):
            raise ValueError("needs auto_promotion: false (the timer runs while a deploy is Paused, and only "
                             "auto_promotion: false pauses one)")
        return value

    @field_validator("canary")
    @classmethod
    def _canary(cls, value: CanarySettings | None, info: ValidationInfo) -> CanarySettings | None:
        if value is not None:
            problem = _canary_problem(info)
            if problem:
                raise ValueError(problem)
        return value

    @field_validator("apps")
    @classmethod
    def _apps(cls, value: dict[str, AppGates], info: ValidationInfo) -> dict[str, AppGates]:
        default = info.data.get("auto_promotion", True)
        bad = [key for key, gates in value.items() if gates.auto_promotion_after is not None
               and (gates.auto_promotion if gates.auto_promotion is not None else default)]
        if bad:
            raise ValueError(f"{', '.join(sorted(bad))}: auto_promotion_after needs auto_promotion: false, for the "
                             "app or at the top level")
        canaries = sorted(key for key, gates in value.items() if isinstance(gates.canary, CanarySettings))
        problem = _canary_problem(info) if canaries else None
        if problem:
            raise ValueError(f"{', '.join(f'apps.{key}.canary' for key in canaries)}: {problem}")
        return value

    def canary_policy(self, app: str | None) -> CanaryPolicy | None:
        """The canary step of the app with key `app`: its own keys over the top-level ones; None without a canary."""
        own = self.apps.get(app) if app is not None else None
        mine = own.canary if own is not None else None
        if mine is False:
            return None
        if mine is None:
            return self.canary.policy() if self.canary is not None else None
        if self.canary is None:
            return mine.policy()
        merged = {**self.canary.model_dump(), **mine.model_dump(include=mine.model_fields_set)}
        return CanarySettings(**merged).policy()

    def _for_app(self, app: str | None, key: str) -> Any:
        """`key` of the app with key `app`: its own under `apps` when it sets one, else the top-level one."""
        own = self.apps.get(app) if app is not None else None
        mine = getattr(own, key) if own is not None else None
        return mine if mine is not None else getattr(self, key)

    def gates(self, app: str | None) -> tuple[list[SmokeRequest], bool, float | None]:
        """The smoke requests, auto_promotion and auto_promotion_after of the app with key `app`."""
        auto = self._for_app(app, "auto_promotion")
        return list(self._for_app(app, "smoke")), auto, None if auto else self._for_app(app, "auto_promotion_after")

    def webhooks_for(self, app: str | None) -> list[Webhook]:
        """The webhook gates of the app with key `app`: its own list under `apps`, else the top-level one."""
        return list(self._for_app(app, "webhooks"))

    def webhook_files(self) -> list[tuple[str, str]]:
        """Every webhook's token_file and secret_file, with its key (`webhooks[0].secret_file`): read at start."""
        lists = [("webhooks", self.webhooks)] + [(f"apps.{key}.webhooks", gates.webhooks or [])
                                                 for key, gates in self.apps.items()]
        return [(f"{where}[{i}].{name}", path) for where, hooks in lists for i, hook in enumerate(hooks)
                for name, path in (("token_file", hook.token_file), ("secret_file", hook.secret_file)) if path]

    def preview_for(self, app: str | None) -> int | None:
        """The preview_replicas of the app with key `app`: its own under `apps`, else the top-level one."""
        return self._for_app(app, "preview_replicas")

    @property
    def probe_timeout_seconds(self) -> float:
        return self.probe_timeout if self.probe_timeout is not None else min(2.0, self.probe_interval)

    @property
    def switch_timeout_seconds(self) -> float:
        if self.switch_timeout is not None:
            return self.switch_timeout
        if self.router.kind == "traefik-http":
            return self.router.traefik.confirm_seconds(self.router.kind) + 30.0
        return 30.0

    @property
    def rollback_deadline(self) -> float:
        """Seconds from the first failed check to the rollback's routing, excluding the router's own apply."""
        return self.probe_interval * self.failure_threshold

    def settings(self, app: str | None = None) -> Settings:
        """The machine's settings for the app with key `app` (its gates from `apps`), or the top-level ones."""
        smoke, auto, after = self.gates(app)
        return Settings(
            probe_interval=self.probe_interval,
            healthy_threshold=self.healthy_threshold,
            failure_threshold=self.failure_threshold,
            wait_timeout=self.wait_timeout,
            precheck_timeout=self.precheck_timeout,
            switch_timeout=self.switch_timeout_seconds,
            verification_window=self.verification_window,
            scale_down_delay=self.scale_down_delay,
            keep=self.keep,
            rollback_on_alert=self.rollback_on_alert,
            on_restart=self.on_restart,
            progressive_steps=tuple(self.progressive_steps),
            smoke_tests=len(smoke),
            auto_promotion=auto,
            auto_promotion_after=after,
            canary=self.canary_policy(app),
            webhooks=tuple(hook.spec() for hook in self.webhooks_for(app)),
            preview_replicas=self.preview_for(app),
            abort_scale_down_delay=self.abort_scale_down_delay,
            drain_grace=self.drain_grace,
        )

    def app_defaults(self) -> AppDefaults:
        d = self.defaults
        return AppDefaults(port=d.port, rule=d.rule, health_path=d.health_path, preview_rule=d.preview_rule,
                           strategy=d.strategy)
