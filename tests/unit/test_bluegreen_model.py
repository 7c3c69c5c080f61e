"""The blue-green model: rules, apps from labels, routing, and the state stored as labels."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from bluegreen.apps import App, AppDefaults, Color, Strategy, discover, same_image
from bluegreen.labels import IDLE_LOCK, STATE_KEYS
from bluegreen.rules import AllOf, AnyOf, Matcher, Not, RuleError, parse_rule, rule_hosts
from bluegreen.state import (
    AppState,
    Deploy,
    Operation,
    Phase,
    Result,
    Routing,
    choose_state,
    format_time,
    infer_state,
    load_state,
    new_deploy_id,
    parse_time,
)

NOW = 1_750_000_000.125


@dataclass(frozen=True)
class Svc:
    name: str
    labels: dict[str, str] = field(default_factory=dict)


def color_service(name: str, app: str, color: str, **extra: str) -> Svc:
    labels = {"swarmshift.bluegreen.app": app, "swarmshift.bluegreen.color": color}
    labels.update({f"swarmshift.bluegreen.{k.replace('__', '.')}": v for k, v in extra.items()})
    return Svc(name, labels)


# --- rules -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("rule", "tree"), [
    ("Host(`a.example.com`)", Matcher("Host", ("a.example.com",))),
    ('Host("a.example.com")', Matcher("Host", ("a.example.com",))),
    ("Host(`a`) || Host(`b`)", AnyOf((Matcher("Host", ("a",)), Matcher("Host", ("b",))))),
    ("Host(`a`) && PathPrefix(`/api`)", AllOf((Matcher("Host", ("a",)), Matcher("PathPrefix", ("/api",))))),
    ("Host(`a`) && !(Path(`/x`) || Method(`POST`))",
     AllOf((Matcher("Host", ("a",)), Not(AnyOf((Matcher("Path", ("/x",)), Matcher("Method", ("POST",)))))))),
    ("Header(`X-Canary`, `1`)", Matcher("Header", ("X-Canary", "1"))),
    ("Query(`debug`)", Matcher("Query", ("debug",))),
    ("HostRegexp(`^.+\\.example\\.com$`)", Matcher("HostRegexp", ("^.+\\.example\\.com$",))),
])
def test_rules_parse(rule, tree):
    assert parse_rule(rule) == tree


@pytest.mark.parametrize(("rule", "message"), [
    ("", "the rule is empty"),
    ("Host(`a`", "expected ), found the end of the rule"),
    ("Hots(`a`)", "unknown matcher Hots"),
    ("Host(`a`, `b`)", "Host takes 1 argument, got 2"),
    ("Header(`X`)", "Header takes 2 arguments, got 1"),
    ("Host(``)", "Host has an empty argument"),
    ("Host(a)", "expected a quoted value, found 'a'"),
    ("Host(`a`) Host(`b`)", "unexpected 'Host' after a complete rule"),
    ("Host(`a`) & Host(`b`)", "unexpected '& Host(`b`' at character 11"),
    ("Host(`a`) &&", "expected a matcher, found the end of the rule"),
    # Traefik's file provider renders each file as a Go template.
    ("Host(`{{ env \"HOME\" }}`)", "'{{' is a Go template delimiter"),
    ("PathPrefix(`/a}}`)", "'}}' is a Go template delimiter"),
])
def test_bad_rules_say_why(rule, message):
    with pytest.raises(RuleError) as err:
        parse_rule(rule)
    assert message in str(err.value)


@pytest.mark.parametrize(("rule", "hosts"), [
    ("Host(`a`)", ("a",)),
    ("Host(`a`) || Host(`b`)", ("a", "b")),
    ("Host(`a`) && PathPrefix(`/x`)", None),
    ("PathPrefix(`/x`)", None),
    ("!Host(`a`)", None),
])
def test_rule_hosts(rule, hosts):
    assert rule_hosts(parse_rule(rule)) == hosts


# --- apps from labels --------------------------------------------------------------------------


def test_an_app_is_two_labelled_services_with_defaults_filled_in():
    services = [
        color_service("web-blue", "web", "blue", port="8000"),
        color_service("web-green", "web", "green", port="8000", health__path="/ready"),
        Svc("unrelated", {"com.example": "x"}),
    ]
    defaults = AppDefaults(rule="Host(`{app}.example.com`)", preview_rule="Host(`{app}.preview.example.com`)")
    found = discover(services, defaults)
    assert found.problems == []
    assert found.apps == {"web": App(
        name="web", blue_service="web-blue", green_service="web-green", port=8000,
        rule="Host(`web.example.com`)", health_path="/ready", preview_rule="Host(`web.preview.example.com`)",
        strategy=Strategy.BLUEGREEN,
    )}
    assert found.apps["web"].url(Color.GREEN) == "http://web-green:8000"


@pytest.mark.parametrize(("services", "problems"), [
    ([color_service("web-blue", "web", "blue", port="http", rule="Host(`w`)"),
      color_service("web-green", "web", "green")],
     ["web-blue: swarmshift.bluegreen.port: expected a port number from 1 to 65535 (got 'http')"]),
    ([color_service("web-blue", "web", "blue", port="8000", rule="Hots(`w`)"),
      color_service("web-green", "web", "green")],
     ["web-blue: swarmshift.bluegreen.rule: not a Traefik v3 rule: unknown matcher Hots (Traefik v3 knows "
      "ClientIP, Header, HeaderRegexp, Host, HostRegexp, Method, Path, PathPrefix, PathRegexp, Query, QueryRegexp) "
      "(got 'Hots(`w`)')"]),
    ([color_service("web-blue", "web", "blue", port="8000", rule="Host(`w`)", preview__rule="Host(`{{.x}}`)"),
      color_service("web-green", "web", "green")],
     ["web-blue: swarmshift.bluegreen.preview.rule: not a Traefik v3 rule: '{{' is a Go template delimiter, "
      "which Traefik's file provider would expand (got 'Host(`{{.x}}`)')"]),
    ([color_service("web-blue", "web", "blue", port="8000", rule="Host(`w`)"),
      color_service("web-green", "web", "green", port="8001")],
     ["app web: swarmshift.bluegreen.port differs between the colors: web-blue='8000', web-green='8001'"]),
    ([color_service("web-blue", "web", "blue", port="8000", rule="Host(`w`)")],
     ["app web: no green service: label one with swarmshift.bluegreen.app=web and swarmshift.bluegreen.color=green"]),
    ([color_service("web-blue", "web", "purple", port="8000", rule="Host(`w`)"),
      color_service("web-green", "web", "green")],
     ["web-blue: swarmshift.bluegreen.color: expected blue or green (got 'purple')",
      "app web: no blue service: label one with swarmshift.bluegreen.app=web and swarmshift.bluegreen.color=blue"]),
    ([Svc("x", {"swarmshift.bluegreen.color": "blue"})],
     ["x: swarmshift.bluegreen.app: missing: the service carries blue-green labels"]),
    ([color_service("web-blue", "Web_App", "blue")],
     ["web-blue: swarmshift.bluegreen.app: expected a lowercase DNS name (a-z, 0-9, -) that does not end in "
      "-blue, -green or -preview (got 'Web_App')"]),
    ([color_service("a-blue", "shop-green", "blue")],
     ["a-blue: swarmshift.bluegreen.app: expected a lowercase DNS name (a-z, 0-9, -) that does not end in "
      "-blue, -green or -preview (got 'shop-green')"]),
    ([color_service("web-blue", "web", "blue", port="8000", rule="Host(`w`)", helth__path="/h"),
      color_service("web-green", "web", "green")],
     ["web-blue: swarmshift.bluegreen.helth.path: unknown label (got '/h')"]),
    ([color_service("web-blue", "web", "blue", port="8000", rule="Host(`w`)", health__path="health"),
      color_service("web-green", "web", "green")],
     ["web-blue: swarmshift.bluegreen.health.path: expected an absolute path such as /health, without spaces or "
      "quotes (got 'health')"]),
    ([color_service("web-blue", "web", "blue", port="8000", rule="Host(`w`)", preview__rule="Host(`w`)"),
      color_service("web-green", "web", "green")],
     ["app web: the preview rule is the main rule; give the preview its own host or path"]),
    ([color_service("web-blue", "web", "blue", port="8000", rule="Host(`w`)", strategy="canary"),
      color_service("web-green", "web", "green")],
     ["web-blue: swarmshift.bluegreen.strategy: expected one of bluegreen, progressive (got 'canary')"]),
    ([color_service("web-blue", "web", "blue"), color_service("web-green", "web", "green")],
     ["app web: no port: set swarmshift.bluegreen.port or defaults.port",
      "app web: no routing rule: set swarmshift.bluegreen.rule or defaults.rule"]),
], ids=["bad-port", "bad-rule", "template-in-rule", "colors-disagree", "missing-color", "bad-color", "no-app-label",
        "bad-app-name", "reserved-suffix", "unknown-label", "bad-health-path", "preview-is-main", "bad-strategy",
        "no-port-no-rule"])
def test_bad_labels_give_one_line_each_naming_service_label_and_value(services, problems):
    found = discover(services)
    assert found.problems == problems
    assert found.apps == {}


def test_a_broken_app_leaves_the_others_alone():
    services = [
        color_service("web-blue", "web", "blue", port="8000", rule="Host(`w`)"),
        color_service("web-green", "web", "green"),
        color_service("api-blue", "api", "blue", port="x"),
        color_service("api-green", "api", "green"),
    ]
    found = discover(services, AppDefaults(rule="Host(`{app}`)"))
    assert list(found.apps) == ["web"]
    assert found.broken == {"api": ["api-blue", "api-green"]}


# --- routing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("routing", "blue", "green", "preview", "single"), [
    (Routing.all_to(Color.BLUE), 100, 0, Color.GREEN, Color.BLUE),
    (Routing.all_to(Color.GREEN), 0, 100, Color.BLUE, Color.GREEN),
    (Routing.toward(Color.GREEN, 10), 90, 10, Color.GREEN, None),
    (Routing.toward(Color.BLUE, 50), 50, 50, Color.BLUE, None),
])
def test_routing(routing, blue, green, preview, single):
    assert (routing.blue, routing.green, routing.preview, routing.single) == (blue, green, preview, single)


@pytest.mark.parametrize(("blue", "green"), [(50, 40), (101, -1), (-10, 110)])
def test_weights_must_be_percentages_adding_to_100(blue, green):
    with pytest.raises(ValueError, match="add up to 100"):
        Routing(blue=blue, green=green, preview=Color.BLUE)


@pytest.mark.parametrize(("observed", "wanted", "same"), [
    ("web:2", "web:2", True),
    ("web:2@sha256:abc", "web:2", True),
    ("web:2@sha256:abc", "web:2@sha256:def", False),
    ("web:3", "web:2", False),
])
def test_same_image_ignores_swarms_digest_pin(observed, wanted, same):
    assert same_image(observed, wanted) is same


# --- the stored state --------------------------------------------------------------------------

DEPLOY = Deploy(id="web-20250615T150640-ab12", kind=Operation.DEPLOY, source=Color.BLUE, image="web:2",
                previous_image="web:1", started_at=NOW - 30, steps=(10, 50, 100), step=1, failures=2,
                reason="", force=False)

STATES = {
    "fresh": AppState(active=Color.BLUE, since=NOW, generation=1),
    "verifying": AppState(active=Color.BLUE, phase=Phase.PROGRESSING, since=NOW, generation=7, deploy=DEPLOY),
    "rolled-back": AppState(active=Color.BLUE, phase=Phase.ROLLED_BACK, since=NOW, generation=9,
                            deploy=Deploy(id="d1", kind=Operation.SWITCH, source=Color.BLUE, image="web:2",
                                          previous_image="web:1", started_at=NOW - 5, failures=3, force=True,
                                          reason="3 failed checks: probe of web-green failed: HTTP 500"),
                            result=Result.ROLLED_BACK, retire_at=NOW + 600),
    "stable-green": AppState(active=Color.GREEN, phase=Phase.STABLE, since=NOW, generation=12,
                             deploy=DEPLOY, result=Result.SUCCEEDED),
}


@pytest.mark.parametrize("name", list(STATES))
def test_state_labels_round_trip(name):
    state = STATES[name]
    labels = state.to_labels()
    assert set(labels) == set(STATE_KEYS)  # absent values are None, so a write removes stale ones
    stored = {k: v for k, v in labels.items() if v is not None}
    assert AppState.from_labels({**stored, "com.example": "x"}, "web-blue") == (state, [])


def test_a_long_reason_is_cut_to_one_readable_line():
    deploy = Deploy(id="d", kind=Operation.DEPLOY, source=Color.BLUE, image="i", previous_image="p",
                    started_at=NOW, reason="line one\nline two " + "x" * 1000)
    labels = AppState(active=Color.BLUE, phase=Phase.FAILED, since=NOW, deploy=deploy).to_labels()
    reason = labels["swarmshift.bluegreen.state.deploy.reason"]
    assert reason.startswith("line one line two x") and len(reason) == 400 and "\n" not in reason


def test_no_state_labels_is_no_state():
    assert AppState.from_labels({"swarmshift.bluegreen.app": "web"}, "web-blue") == (None, [])


def _stored(name: str, **changes: str | None) -> dict[str, str]:
    labels = {k: v for k, v in STATES[name].to_labels().items() if v is not None}
    for key, value in changes.items():
        full = "swarmshift.bluegreen.state." + key.replace("__", ".")
        if value is None:
            labels.pop(full)
        else:
            labels[full] = value
    return labels


@pytest.mark.parametrize(("labels", "problem"), [
    (_stored("fresh", generation="seven"),
     "web-blue: swarmshift.bluegreen.state.generation: expected a whole number >= 0 (got 'seven')"),
    (_stored("fresh", active="red"),
     "web-blue: swarmshift.bluegreen.state.active: expected one of blue, green (got 'red')"),
    (_stored("fresh", phase="Deploying"),
     "web-blue: swarmshift.bluegreen.state.phase: expected one of Stable, Preparing, Waiting, PreChecks, SmokeTests, PreRollout, Paused, "
     "ConfirmPromotion, ScalingUp, Switching, Canary, "
     "Progressing, Verifying, RollingBack, RolledBack, Failed (got 'Deploying')"),
    (_stored("fresh", since="yesterday"),
     "web-blue: swarmshift.bluegreen.state.since: expected a UTC time such as 2025-01-31T12:00:00.000Z "
     "(got 'yesterday')"),
    (_stored("fresh", phase=None),
     "web-blue: swarmshift.bluegreen.state.phase: missing: the other state labels are present"),
    (_stored("fresh", phase="Verifying"),
     "web-blue: swarmshift.bluegreen.state.phase: a deploy phase without the deploy's labels (got 'Verifying')"),
    (_stored("verifying", deploy__steps="10,100,50"),
     "web-blue: swarmshift.bluegreen.state.deploy.steps: steps must rise strictly, each from 1 to 100 "
     "(got '10,100,50')"),
    (_stored("verifying", deploy__steps="ten"),
     "web-blue: swarmshift.bluegreen.state.deploy.steps: expected percentages such as 10,50,100 (got 'ten')"),
    (_stored("verifying", deploy__step="3"),
     "web-blue: swarmshift.bluegreen.state.deploy.step: beyond the 3 steps (got '3')"),
    (_stored("verifying", deploy__force="yes"),
     "web-blue: swarmshift.bluegreen.state.deploy.force: expected true or false (got 'yes')"),
    (_stored("verifying", deploy__image=None),
     "web-blue: swarmshift.bluegreen.state.deploy.image: missing: the other state labels are present"),
    (_stored("verifying", deploy__kind="canary"),
     "web-blue: swarmshift.bluegreen.state.deploy.kind: expected one of deploy, switch, rollback, undo (got 'canary')"),
])
def test_bad_state_labels_give_one_line_each(labels, problem):
    state, problems = AppState.from_labels(labels, "web-blue")
    assert state is None
    assert problems == [problem]


def test_times_are_utc_milliseconds():
    assert format_time(NOW) == "2025-06-15T15:06:40.125Z"
    assert parse_time("2025-06-15T15:06:40.125Z") == NOW
    with pytest.raises(ValueError):
        parse_time("2025-06-15T15:06:40+02:00")


def test_deploy_ids_say_what_and_when():
    assert new_deploy_id("web", NOW, "ab12") == "web-20250615T150640-ab12"
    assert new_deploy_id("web", NOW) != new_deploy_id("web", NOW)


@pytest.mark.parametrize(("phase", "locks"), [
    (Phase.STABLE, {Color.BLUE: None, Color.GREEN: IDLE_LOCK}),
    (Phase.WAITING, {Color.BLUE: DEPLOY.id, Color.GREEN: DEPLOY.id}),
    (Phase.ROLLING_BACK, {Color.BLUE: DEPLOY.id, Color.GREEN: DEPLOY.id}),
    (Phase.ROLLED_BACK, {Color.BLUE: None, Color.GREEN: IDLE_LOCK}),
])
def test_the_autoscaler_lock_covers_both_colors_in_a_deploy_and_the_idle_one_at_rest(phase, locks):
    assert AppState(active=Color.BLUE, phase=phase, since=NOW, deploy=DEPLOY).locks() == locks


@pytest.mark.parametrize(("phase", "step", "routing"), [
    (Phase.PREPARING, 0, Routing.all_to(Color.BLUE)),
    (Phase.PRECHECKS, 0, Routing.all_to(Color.BLUE)),
    (Phase.SWITCHING, 0, Routing.toward(Color.GREEN, 10)),
    (Phase.PROGRESSING, 1, Routing.toward(Color.GREEN, 50)),
    (Phase.VERIFYING, 2, Routing(blue=0, green=100, preview=Color.BLUE)),
    (Phase.ROLLING_BACK, 2, Routing.all_to(Color.BLUE)),
    (Phase.FAILED, 0, Routing.all_to(Color.BLUE)),
])
def test_each_phase_calls_for_one_routing(phase, step, routing):
    deploy = Deploy(id="d", kind=Operation.DEPLOY, source=Color.BLUE, image="web:2", previous_image="web:1",
                    started_at=NOW, steps=(10, 50, 100), step=step)
    assert AppState(active=Color.BLUE, phase=phase, since=NOW, deploy=deploy).routing() == routing


# --- choosing and inferring the state ----------------------------------------------------------


def test_the_highest_generation_wins():
    older, newer = STATES["verifying"], STATES["stable-green"]
    assert choose_state({Color.BLUE: older, Color.GREEN: newer}) is newer
    assert choose_state({Color.BLUE: newer, Color.GREEN: None}) is newer
    assert choose_state({Color.BLUE: None, Color.GREEN: None}) is None


@pytest.mark.parametrize(("replicas", "routed", "active", "why"), [
    ({Color.BLUE: 0, Color.GREEN: 3}, Routing.all_to(Color.BLUE), Color.BLUE, "the router sends all traffic to blue"),
    ({Color.BLUE: 2, Color.GREEN: 0}, None, Color.BLUE, "only blue has replicas"),
    ({Color.BLUE: 0, Color.GREEN: 2}, None, Color.GREEN, "only green has replicas"),
    ({Color.BLUE: 0, Color.GREEN: 2}, Routing.toward(Color.GREEN, 50), Color.GREEN, "only green has replicas"),
    ({Color.BLUE: 2, Color.GREEN: 2}, None, Color.BLUE, "blue by convention"),
])
def test_a_state_wiped_from_both_colors_is_inferred_without_moving_traffic(replicas, routed, active, why):
    state, reason = infer_state(replicas, routed, NOW)
    assert (state.active, state.phase) == (active, Phase.STABLE)
    assert why in reason


WEB = App("web", "web-blue", "web-green", 8000, "Host(`w`)")


def test_a_stack_deploy_that_wiped_one_color_loses_nothing():
    stored = _stored("verifying")
    loaded = load_state(WEB, {Color.BLUE: {"swarmshift.bluegreen.app": "web"}, Color.GREEN: stored},
                        {Color.BLUE: 2, Color.GREEN: 2}, None, NOW)
    assert loaded.state == STATES["verifying"]
    assert loaded.stored == {Color.BLUE: None, Color.GREEN: 7}
    assert loaded.adopted is None and loaded.problems == []


def test_bad_labels_on_one_color_fall_back_to_the_other_and_are_reported():
    good = _stored("stable-green")
    bad = _stored("stable-green", generation="x")
    loaded = load_state(WEB, {Color.BLUE: bad, Color.GREEN: good}, {Color.BLUE: 2, Color.GREEN: 2}, None, NOW)
    assert loaded.state == STATES["stable-green"]
    assert loaded.problems == ["web-blue: swarmshift.bluegreen.state.generation: expected a whole number >= 0 "
                               "(got 'x')"]


def test_both_copies_gone_adopts_a_state():
    loaded = load_state(WEB, {}, {Color.BLUE: 0, Color.GREEN: 1}, None, NOW)
    assert (loaded.state.active, loaded.state.generation, loaded.adopted) == (Color.GREEN, 1,
                                                                            "only green has replicas")


@pytest.mark.parametrize("routing", [Routing.all_to(Color.BLUE), Routing.toward(Color.GREEN, 10),
                                     Routing(blue=50, green=50, preview=Color.BLUE)])
def test_routing_has_one_text_form_that_reads_back(routing):
    assert Routing.parse(str(routing)) == routing


@pytest.mark.parametrize("text", ["", "blue=100 green=0", "blue=60 green=60 preview=blue", "blue=a green=0 preview=x"])
def test_other_text_is_not_a_routing(text):
    with pytest.raises(ValueError):
        Routing.parse(text)


def test_a_rule_is_parsed_once_and_narrowed_without_parsing_again():
    from bluegreen.rules import Rule

    rule = Rule.parse("Host(`a.example.com`) || Host(`b.example.com`)")
    assert rule.hosts == ("a.example.com", "b.example.com") and rule.first_host == "a.example.com"
    narrowed = rule.narrowed("X-Trial", "t0k")
    assert narrowed.node == parse_rule(narrowed.text) and narrowed.hosts is None
    assert App("web", "web-blue", "web-green", 8000, rule.text).rule == rule
