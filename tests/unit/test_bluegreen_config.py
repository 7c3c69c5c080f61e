"""The blue-green controller's config: defaults, one line per problem, PromQL checks, and the label check."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest

from bluegreen.app_check import check_app_labels
from bluegreen.apps import Color, Strategy
from bluegreen.config import BlueGreenConfig, PromCheck
from bluegreen.phases import CheckResult, Settings
from swarmshift.config import ConfigError, load


def load_yaml(tmp_path, text: str, env: dict | None = None) -> BlueGreenConfig:
    path = tmp_path / "bluegreen.yml"
    path.write_text(text)
    return load(BlueGreenConfig, path, env or {})


def problems(tmp_path, text: str, env: dict | None = None) -> list[str]:
    with pytest.raises(ConfigError) as err:
        load_yaml(tmp_path, text, env)
    return [line.split(": ", 1)[1] for line in err.value.problems]


def test_the_defaults_are_a_working_config():
    config = BlueGreenConfig()
    assert config.router.kind == "traefik-file"
    assert config.router.traefik.dynamic_dir == "/etc/traefik/dynamic"
    assert config.settings() == Settings(
        probe_interval=2, healthy_threshold=3, failure_threshold=2, wait_timeout=300, precheck_timeout=120,
        switch_timeout=30, verification_window=60, scale_down_delay=600, keep=False, rollback_on_alert="verification",
        on_restart="resume", progressive_steps=(10, 50, 100), smoke_tests=0, auto_promotion=True,
        auto_promotion_after=None, preview_replicas=None, abort_scale_down_delay=30, drain_grace=10)
    assert config.rollback_deadline == 4.0
    assert config.probe_timeout_seconds == 2.0


def test_a_full_config_loads(tmp_path):
    config = load_yaml(tmp_path, """
listen: 0.0.0.0:9090
token_file: /run/secrets/bluegreen_token
router:
  kind: traefik-http
  traefik: {api_url: "http://traefik:8080/", entrypoints: [web, websecure], health_interval: 2s, health_timeout: 1s}
defaults: {port: 8000, rule: "Host(`{app}.example.com`)", preview_rule: "Host(`{app}.preview.example.com`)"}
probe_interval: 1s
healthy_threshold: 5
failure_threshold: 3
verification_window: 2m
checks:
  - name: errors
    query: 'sum(rate(traefik_service_requests_total{service="{{service}}@file",code=~"5.."}[1m]))'
    threshold: 0.05
prometheus: {url: "http://prometheus:9090"}
scale_down_delay: 15m
keep: true
rollback_on_alert: always
progressive_steps: [5, 25, 100]
notify: {webhooks: ["http://hooks.example.com/a"]}
""", env={"SWARMSHIFT_FAILURE_THRESHOLD": "4"})
    assert config.router.traefik.api_url == "http://traefik:8080"
    assert config.settings() == Settings(
        probe_interval=1, healthy_threshold=5, failure_threshold=4, wait_timeout=300, precheck_timeout=120,
        switch_timeout=120, verification_window=120, scale_down_delay=900, keep=True, rollback_on_alert="always",
        on_restart="resume", progressive_steps=(5, 25, 100), smoke_tests=0, auto_promotion=True,
        auto_promotion_after=None, preview_replicas=None, abort_scale_down_delay=30, drain_grace=10)
    # traefik-http: Traefik may have backed off its polls while the controller was away.
    assert config.router.traefik.confirm_seconds(config.router.kind) == 90
    assert config.app_defaults().rule == "Host(`{app}.example.com`)"
    assert config.rollback_deadline == 4.0
    assert config.probe_timeout_seconds == 1.0  # a probe round fits in the shorter tick


def test_lists_and_commands_can_come_from_one_environment_variable(tmp_path):
    config = load_yaml(tmp_path, "router: {kind: nginx}\n", env={
        "SWARMSHIFT_PROGRESSIVE_STEPS": "20,100",
        "SWARMSHIFT_ROUTER__TRAEFIK__ENTRYPOINTS": "web,internal",
        "SWARMSHIFT_ROUTER__NGINX__TEST_COMMAND": "docker exec nginx nginx -t",
        "SWARMSHIFT_NOTIFY__WEBHOOKS": "http://a, http://b",
    })
    assert config.progressive_steps == [20, 100]
    assert config.router.traefik.entrypoints == ["web", "internal"]
    assert config.router.nginx.test_command == ["docker", "exec", "nginx", "nginx", "-t"]
    assert config.notify.webhooks == ["http://a", "http://b"]


@pytest.mark.parametrize(("text", "want"), [
    ("probe_interval: 100ms\n", ["probe_interval: must be at least 200ms (got '100ms')"]),
    ("healthy_threshold: 0\n", ["healthy_threshold: Input should be greater than or equal to 1 (got 0)"]),
    ("progressive_steps: [10, 50]\n", ["progressive_steps: the last step must be 100 (got [10, 50])"]),
    ("progressive_steps: [50, 10, 100]\n",
     ["progressive_steps: steps must rise strictly, each from 1 to 100 (got [50, 10, 100])"]),
    ("rollback_on_alert: sometimes\n",
     ["rollback_on_alert: Input should be 'verification', 'always' or 'never' (got 'sometimes')"]),
    ("router: {kind: haproxy}\n",
     ["router.kind: Input should be 'traefik-file', 'traefik-http' or 'nginx' (got 'haproxy')"]),
    ("router: {traefik: {api_url: traefik:8080}}\n",
     ["router.traefik.api_url: expected the API's base URL, such as http://traefik:8080 "
      "(got 'traefik:8080')"]),
    ("router: {nginx: {pid_file: /run/nginx.pid, reload_command: [nginx, -s, reload]}}\n",
     ["router.nginx: set one way to reload nginx, not reload_command and pid_file "
      "(got {'pid_file': '/run/nginx.pid', 'reload_command': ['nginx', '-s', 'reload']})"]),
    ("router: {nginx: {listen: 'web:http'}}\n",
     ["router.nginx.listen: expected PORT or HOST:PORT (got 'web:http')"]),
    ("defaults: {rule: 'Host(`{app}.example.com`'}\n",
     ["defaults.rule: expected ), found the end of the rule (got 'Host(`{app}.example.com`')"]),
    ("defaults: {health_path: health}\n",
     ["defaults.health_path: expected an absolute path such as /health (got 'health')"]),
    ("probe_timeout: 5s\n", ["probe_timeout: must not exceed probe_interval: a probe round has to fit in a tick "
                             "(got '5s')"]),
    ("probe_interval: 10s\nverification_window: 5s\n",
     ["verification_window: must hold at least one probe_interval (got '5s')"]),
    ("checks: [{name: errors, query: up, threshold: 1}]\n",
     ["checks: checks need prometheus.url (got [{'name': 'errors', 'query': 'up', 'threshold': 1}])"]),
    ("checks: [{name: e, query: 'up{job=\"{{job}}\"}', threshold: 1}]\nprometheus: {url: http://p}\n",
     ["checks[0].query: unknown placeholder {{job}}: use {{app}}, {{color}} or {{service}} "
      "(got 'up{job=\"{{job}}\"}')"]),
    ("checks: [{name: e, query: up, threshold: 1}, {name: e, query: up, threshold: 2}]\n"
     "prometheus: {url: http://p}\n",
     ["checks: check names must be unique: e (got [{'name': 'e', 'query': 'up', 'threshold': 1}, "
      "{'name': 'e', 'query': 'up', 'threshold': 2}])"]),
    ("router: {kind: nginx}\ndefaults: {strategy: progressive}\n",
     ["defaults: strategy progressive needs a Traefik router: nginx switches all traffic at once "
      "(got {'strategy': 'progressive'})"]),
    ("keep: true\nkepe: false\n", ["kepe: unknown key (got False)"]),
], ids=["fast-probes", "threshold-0", "steps-short", "steps-order", "alert-policy", "router-kind", "api-url",
        "two-reloads", "nginx-listen", "default-rule", "health-path", "probe-timeout", "short-window",
        "checks-no-prometheus",
        "placeholder", "duplicate-checks", "progressive-nginx", "unknown-key"])
def test_each_problem_is_one_line_with_key_and_value(tmp_path, text, want):
    assert problems(tmp_path, text) == want


def test_problems_name_the_variable_they_came_from(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_yaml(tmp_path, "", env={"SWARMSHIFT_SCALE_DOWN_DELAY": "soon"})
    assert err.value.problems == ["SWARMSHIFT_SCALE_DOWN_DELAY: scale_down_delay: expected a duration such as "
                                  "30s, 5m or 1h30m (got 'soon')"]


# --- PromQL checks -----------------------------------------------------------------------------

ERRORS = PromCheck(name="errors", query='sum(rate(x{service="{{ service }}@file",app="{{app}}",color="{{color}}"}[1m]))',
                   threshold=0.05)


def test_placeholders_become_the_app_the_color_and_its_service():
    assert ERRORS.render("web", Color.GREEN, "web-green") == \
        'sum(rate(x{service="web-green@file",app="web",color="green"}[1m]))'


@pytest.mark.parametrize(("check", "value", "error", "want"), [
    (ERRORS, 0.01, None, CheckResult("errors", True, "0.01 is < 0.05")),
    (ERRORS, 0.05, None, CheckResult("errors", False, "0.05 is not < 0.05")),
    (ERRORS.model_copy(update={"comparison": "<="}), 0.05, None, CheckResult("errors", True, "0.05 is <= 0.05")),
    (ERRORS.model_copy(update={"comparison": ">", "threshold": 10}), 12, None,
     CheckResult("errors", True, "12 is > 10")),
    (ERRORS.model_copy(update={"comparison": ">="}), 0.01, None, CheckResult("errors", False, "0.01 is not >= 0.05")),
    (ERRORS, None, None, CheckResult("errors", True, "no data (no_data: pass)")),
    (ERRORS, math.nan, None, CheckResult("errors", True, "no data (no_data: pass)")),
    (ERRORS.model_copy(update={"no_data": "fail"}), None, None, CheckResult("errors", False, "no data (no_data: fail)")),
    # A query Prometheus refuses is never a pass: a typo must not wave a deploy through.
    (ERRORS, None, "bad_data: parse error", CheckResult("errors", False, "query failed: bad_data: parse error")),
])
def test_a_check_compares_its_value_with_the_threshold(check, value, error, want):
    assert check.evaluate(value, error) == want


# --- the label check ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Svc:
    name: str
    labels: dict = field(default_factory=dict)


def app_services(app: str = "web", **labels: str) -> list[Svc]:
    base = {"swarmshift.bluegreen.app": app, "swarmshift.bluegreen.port": "8000"}
    extra = {f"swarmshift.bluegreen.{k.replace('__', '.')}": v for k, v in labels.items()}
    return [Svc(f"{app}-blue", {**base, **extra, "swarmshift.bluegreen.color": "blue"}),
            Svc(f"{app}-green", {**base, "swarmshift.bluegreen.color": "green"})]


def test_good_labels_have_no_problems():
    config = BlueGreenConfig.model_validate({"defaults": {"rule": "Host(`{app}.example.com`)"}})
    assert check_app_labels(app_services(), config) == []


def test_the_label_check_reports_bad_state_labels_too():
    services = app_services(rule="Host(`w`)")
    services[0].labels.update({"swarmshift.bluegreen.state.generation": "1", "swarmshift.bluegreen.state.active": "red",
                               "swarmshift.bluegreen.state.phase": "Stable",
                               "swarmshift.bluegreen.state.since": "2025-01-01T00:00:00.000Z"})
    assert check_app_labels(services, BlueGreenConfig()) == [
        "web-blue: swarmshift.bluegreen.state.active: expected one of blue, green (got 'red')"]


@pytest.mark.parametrize(("labels", "want"), [
    ({"rule": "Host(`w.example.com`) && PathPrefix(`/api`)"},
     ["app web: swarmshift.bluegreen.rule: the nginx router needs a rule of Host(`…`) matchers joined by || "
      "(got 'Host(`w.example.com`) && PathPrefix(`/api`)')"]),
    ({"rule": "Host(`w`)", "preview__rule": "PathPrefix(`/preview`)"},
     ["app web: swarmshift.bluegreen.preview.rule: the nginx router needs a rule of Host(`…`) matchers joined by || "
      "(got 'PathPrefix(`/preview`)')"]),
    ({"rule": "Host(`w`)", "strategy": "progressive"},
     ["app web: swarmshift.bluegreen.strategy: progressive needs a Traefik router; nginx switches all traffic at "
      "once (got 'progressive')"]),
    ({"rule": "Host(`a`) || Host(`b`)"}, []),
], ids=["path-rule", "path-preview", "progressive", "hosts-ok"])
def test_the_nginx_router_takes_host_rules_only(labels, want):
    config = BlueGreenConfig.model_validate({"router": {"kind": "nginx"}})
    assert check_app_labels(app_services(**labels), config) == want


def test_strategy_labels_reach_the_app():
    config = BlueGreenConfig.model_validate({"defaults": {"strategy": "progressive", "rule": "Host(`x`)"}})
    from bluegreen.apps import discover

    found = discover(app_services(), config.app_defaults())
    assert found.apps["web"].strategy is Strategy.PROGRESSIVE


# --- probes, the selector ----------------------------------------------------------------------


def test_probe_settings_default_to_the_tasks_directly():
    config = BlueGreenConfig()
    assert (config.probe.via, config.probe.verify_paths, config.reconcile_interval, config.selector) == \
        ("direct", [], 10.0, None)


def test_probes_through_the_router_name_their_urls(tmp_path):
    config = load_yaml(tmp_path, """
probe: {via: router, active_url: "http://traefik:80/", verify_paths: "/, /api/ping"}
""")
    assert config.probe.route_url("web", preview=False) == "http://traefik:80"
    assert config.probe.route_url("web", preview=True) == "http://traefik:80"  # the preview host tells them apart
    assert config.probe.verify_paths == ["/", "/api/ping"]
    other = load_yaml(tmp_path, 'probe: {via: router, active_url: "http://127.0.0.1:8080/{app}", '
                                'preview_url: "http://127.0.0.1:8081"}\n')
    assert other.probe.route_url("web", preview=False) == "http://127.0.0.1:8080/web"
    assert other.probe.route_url("web", preview=True) == "http://127.0.0.1:8081"


@pytest.mark.parametrize(("text", "want"), [
    ("probe: {via: router}\n",
     ["probe: via router needs active_url (and preview_url when the preview rule is served elsewhere) "
      "(got {'via': 'router'})"]),
    ("probe: {via: tunnel}\n", ["probe.via: Input should be 'direct' or 'router' (got 'tunnel')"]),
    ("probe: {active_url: traefik}\n", ["probe.active_url: expected a base URL such as http://traefik:80 "
                                        "(got 'traefik')"]),
    ("probe: {verify_paths: [health]}\n", ["probe.verify_paths: expected absolute paths such as /, got 'health' "
                                           "(got ['health'])"]),
    ("selector: 'a b'\n", ["selector: expected a label KEY or KEY=VALUE (got 'a b')"]),
    ("reconcile_interval: 0\n", ["reconcile_interval: must be at least 200ms (got 0)"]),
], ids=["router-without-url", "via", "url", "verify-path", "selector", "reconcile"])
def test_probe_and_selector_problems(tmp_path, text, want):
    assert problems(tmp_path, text) == want


def test_the_selector_matches_a_key_or_a_key_and_value():
    assert BlueGreenConfig(selector="stack").selects({"stack": "shop"})
    assert BlueGreenConfig(selector="stack=shop").selects({"stack": "shop"})
    assert not BlueGreenConfig(selector="stack=shop").selects({"stack": "blog"})
    assert not BlueGreenConfig(selector="stack").selects({})
    assert BlueGreenConfig().selects({})


def test_probing_through_the_router_needs_a_preview_rule():
    config = BlueGreenConfig.model_validate({"probe": {"via": "router", "active_url": "http://traefik"},
                                             "defaults": {"rule": "Host(`{app}.example.com`)"}})
    assert check_app_labels(app_services(), config) == [
        "app web: probe.via router reaches the idle color only through the preview route: set "
        "swarmshift.bluegreen.preview.rule or defaults.preview_rule"]
    assert check_app_labels(app_services(preview__rule="Host(`p.example.com`)"), config) == []


@pytest.mark.parametrize(("router", "confirm", "switch"), [
    ("kind: traefik-file", 10, 30),
    ("kind: traefik-http", 90, 120),
    ("kind: nginx", None, 30),
    ("{kind: traefik-http, traefik: {confirm_timeout: 20s}}\nswitch_timeout: 45s", 20, 45),
])
def test_the_switch_waits_as_long_as_the_router_can_take(tmp_path, router, confirm, switch):
    config = load_yaml(tmp_path, f"router: {router}\n" if router.startswith("{") else f"router: {{{router}}}\n")
    if confirm is not None:
        assert config.router.traefik.confirm_seconds(config.router.kind) == confirm
    assert config.settings().switch_timeout == switch
