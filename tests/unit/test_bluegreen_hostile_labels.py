"""Hostile labels (issue 10): whoever deploys a stack writes labels, and no label may hurt another app.

Names are data and are checked in full; numbers are ASCII digits of bounded length; rules are
bounded in length and nesting; an app is scoped by its stack; a service claiming a color its app
already has is refused while the app goes on. These pin each guard on the pure model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from bluegreen.apps import App, AppDefaults, Color, app_key, discover, split_key
from bluegreen.labels import K_ACTIVE, K_GENERATION, K_PHASE, K_SINCE, STACK_LABEL
from bluegreen.rules import MAX_DEPTH, MAX_RULE_CHARS, RuleError, parse_rule
from bluegreen.state import AppState, Routing, load_state, parse_time, validate_steps
from swarmshift.config import parse_duration
from swarmshift.numbers import whole_number
from swarmshift.swarm import parse_created, parse_service

DEFAULTS = AppDefaults(port=8000, rule="Host(`{app}.example.com`)")


@dataclass(frozen=True)
class Svc:
    name: str
    labels: dict[str, str] = field(default_factory=dict)
    created_at: float | None = None


def svc(name: str, app: str, color: str, stack: str | None = None, created_at: float | None = None,
        **extra: str) -> Svc:
    labels = {"swarmshift.bluegreen.app": app, "swarmshift.bluegreen.color": color}
    if stack is not None:
        labels[STACK_LABEL] = stack
    labels.update({k if "." in k else f"swarmshift.bluegreen.{k}": v for k, v in extra.items()})
    return Svc(name, labels, created_at)


def pair(app: str = "web", stack: str | None = None, prefix: str | None = None) -> list[Svc]:
    base = prefix or (f"{stack}_{app}" if stack else app)
    return [svc(f"{base}-blue", app, "blue", stack), svc(f"{base}-green", app, "green", stack)]


# --- names are data, not paths -------------------------------------------------------------------

@pytest.mark.parametrize("name", ["web\n", "web\r\n", "../etc", "web/x", "wéb", "web_app", "-web", "web-",
                                  "web-blue", "w" * 64, "", "ｗｅｂ"])
def test_an_app_name_is_checked_in_full_and_a_bad_one_names_no_app(name):
    found = discover([svc("a-blue", name, "blue"), svc("a-green", name, "green")], DEFAULTS)
    assert found.apps == {} and found.broken == {}
    assert len(found.unattached) == 2 and all("swarmshift.bluegreen.app: expected a lowercase DNS name" in line
                                              for line in found.unattached)


@pytest.mark.parametrize("service", ["web-blue\n", "web blue", "web.blue", "web-blue/../x", "wéb", "-web", "w" * 64])
def test_a_service_name_that_is_no_swarm_name_breaks_its_app_with_one_line(service):
    found = discover([svc(service, "web", "blue"), svc("web-green", "web", "green")], DEFAULTS)
    assert found.apps == {}
    assert sorted(found.broken["web"]) == sorted([service, "web-green"])
    assert found.issues["web"] == [f"{service}: name: not a Swarm service name, which the controller would put in "
                                   f"URLs (got {service!r})"]


def test_a_health_path_with_a_newline_or_a_non_ascii_character_is_refused():
    for path in ("/health\n", "/hé", "/h\x00", "/" + "h" * 300):
        found = discover([svc("web-blue", "web", "blue", **{"swarmshift.bluegreen.health.path": path}), svc("web-green", "web", "green")],
                         DEFAULTS)
        assert found.apps == {} and list(found.broken) == ["web"], path


# --- strict numbers -------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["²", "١٢", "٨٠٠٠", "８０００", " 80", "80 ", "+80", "-1", "8_000", "0x50", "", "9" * 5000])
def test_a_number_is_ascii_digits_of_bounded_length(text):
    with pytest.raises(ValueError):
        whole_number(text, maximum=65535 if len(text) < 10 else None)


def test_whole_numbers_within_their_range():
    assert whole_number("8000", minimum=1, maximum=65535) == 8000
    assert whole_number("0") == 0
    with pytest.raises(ValueError, match="from 1 to 65535"):
        whole_number("65536", minimum=1, maximum=65535)
    with pytest.raises(ValueError):
        whole_number("9" * 19)  # beyond MAX_DIGITS


@pytest.mark.parametrize("port", ["²", "١٢", "8000\n", "9" * 5000])
def test_a_port_in_other_digits_breaks_only_its_app(port):
    found = discover([svc("web-blue", "web", "blue", port=port), svc("web-green", "web", "green"), *pair("api")],
                     DEFAULTS)
    assert list(found.apps) == ["api"] and list(found.broken) == ["web"]
    assert found.issues["web"] == [f"web-blue: swarmshift.bluegreen.port: expected a port number from 1 to 65535 "
                                   f"(got {port!r})"]


STATE = {K_GENERATION: "3", K_ACTIVE: "blue", K_PHASE: "Stable", K_SINCE: "2025-01-31T12:00:00.000Z"}


@pytest.mark.parametrize(("key", "value"), [(K_GENERATION, "²"), (K_GENERATION, "١٢"), (K_GENERATION, "9" * 5000),
                                            (K_SINCE, "２０２５-01-31T12:00:00.000Z"), (K_SINCE, "2025-01-31T12:00:00Z\n"),
                                            (K_SINCE, "2025-W05-1T12:00:00Z")])
def test_a_state_label_in_other_digits_is_a_problem_not_a_crash(key, value):
    state, problems = AppState.from_labels({**STATE, key: value}, "web-blue")
    assert state is None and len(problems) == 1 and problems[0].startswith(f"web-blue: {key}: ")


def test_a_bad_copy_of_the_state_loses_to_the_good_one():
    app = App("web", "web-blue", "web-green", 8000, "Host(`w`)")
    loaded = load_state(app, {Color.BLUE: {**STATE, K_GENERATION: "²"}, Color.GREEN: STATE},
                        {Color.BLUE: 1, Color.GREEN: 0}, None, 0.0)
    assert loaded.state.generation == 3 and loaded.adopted is None and len(loaded.problems) == 1


def test_routing_and_steps_take_ascii_digits_only():
    with pytest.raises(ValueError):
        Routing.parse("blue=١٠٠ green=0 preview=green")
    with pytest.raises(ValueError):
        Routing.parse("blue=100 green=0 preview=green\nblue=0")
    assert Routing.parse(" blue=100 green=0 preview=green\n") == Routing.all_to(Color.BLUE)
    with pytest.raises(ValueError):
        validate_steps(())
    state, problems = AppState.from_labels({**STATE, K_PHASE: "Progressing", **_deploy(steps="10,٥٠,100")}, "b")
    assert state is None and "expected percentages such as 10,50,100" in problems[0]


def _deploy(**over: str) -> dict[str, str]:
    from bluegreen import labels

    base = {"id": "d", "kind": "deploy", "source": "blue", "image": "i", "previous": "p",
            "started": "2025-01-31T12:00:00.000Z", "steps": "100", "step": "0", "failures": "0"}
    return {getattr(labels, f"K_DEPLOY_{k.upper()}"): v for k, v in {**base, **over}.items()}


def test_parse_time_reads_only_what_format_time_writes():
    assert parse_time("2025-01-31T12:00:00.000Z") == 1738324800.0
    for text in ("2025-01-31T12:00:00.000+00:00", "2025-01-31", "2025-01-31T12:00:00.000Z ", "2025-13-01T00:00:00Z"):
        with pytest.raises(ValueError):
            parse_time(text)


@pytest.mark.parametrize("text", ["١٢s", "１m", "1_0", "1e3", "inf", "nan", "infinity", "9" * 5000, "1" * 70 + "s",
                                  "5m\n3s", "²s"])
def test_a_duration_is_ascii_finite_and_bounded(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_a_huge_integer_duration_is_a_value_error_not_an_overflow():
    with pytest.raises(ValueError):
        parse_duration(10 ** 400)
    assert parse_duration("1h30m") == 5400 and parse_duration("0.5") == 0.5


# --- rules are bounded ----------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "(" * 5000 + "Host(`a`)" + ")" * 5000,
    "!" * 5000 + "Host(`a`)",
    "(" * (MAX_DEPTH + 1) + "Host(`a`)" + ")" * (MAX_DEPTH + 1),
    "!" * (MAX_DEPTH + 1) + "Host(`a`)",
    " || ".join(["Host(`a`)"] * 200),
    "Host(`a\x00b`)",
])
def test_a_deep_or_long_rule_is_a_rule_error_never_a_recursion_error(text):
    with pytest.raises(RuleError):
        parse_rule(text)


def test_a_rule_at_the_limits_still_parses():
    parse_rule("(" * MAX_DEPTH + "Host(`a`)" + ")" * MAX_DEPTH)
    parse_rule("!" * MAX_DEPTH + "Host(`a`)")
    host = "a" * (MAX_RULE_CHARS - len("Host(``)"))
    parse_rule(f"Host(`{host}`)")
    parse_rule("Host(`a`)\n  || Host(`b`)")  # whitespace between tokens, as YAML may leave it


# --- apps are scoped by their stack ---------------------------------------------------------------

def test_two_stacks_may_both_have_an_app_named_web():
    found = discover([*pair("web", "shop"), *pair("web", "blog"), *pair("web")], DEFAULTS)
    assert sorted(found.apps) == ["blog_web", "shop_web", "web"] and found.problems == []
    shop = found.apps["shop_web"]
    assert (shop.name, shop.label, shop.stack, shop.blue_service) == ("shop_web", "web", "shop", "shop_web-blue")
    assert found.apps["web"].stack is None and found.apps["web"].label == "web"
    assert str(shop.rule) == "Host(`web.example.com`)"  # {app} in a default rule is the label, not the key


def test_services_of_one_app_must_share_a_stack():
    found = discover([svc("shop_web-blue", "web", "blue", "shop"), svc("web-green", "web", "green")], DEFAULTS)
    assert found.apps == {}
    assert found.broken == {"shop_web": ["shop_web-blue"], "web": ["web-green"]}
    assert found.issues["shop_web"] == ["app shop_web: no green service: label one with swarmshift.bluegreen.app=web "
                                        "and swarmshift.bluegreen.color=green in stack shop"]


@pytest.mark.parametrize("stack", ["Shop", "shop\n", "../x", "_shop", "s" * 64, "shop.x", "ｓhop"])
def test_a_bad_stack_name_names_no_app(stack):
    found = discover([*pair("web", stack, prefix="x"), *pair("api")], DEFAULTS)
    assert list(found.apps) == ["api"] and found.broken == {}
    assert len(found.unattached) == 2 and all(STACK_LABEL in line for line in found.unattached)


def test_a_key_splits_back_into_stack_and_name():
    assert app_key("web", None) == "web" and app_key("web", "my_stack") == "my_stack_web"
    assert split_key("my_stack_web") == ("my_stack", "web") and split_key("web") == (None, "web")
    assert App("shop_web", "b", "g", 1, "Host(`w`)").label == "web"


# --- an extra service claiming a color is refused -------------------------------------------------

def test_a_newcomer_claiming_blue_is_refused_and_the_app_keeps_working():
    services = [svc("web-blue", "web", "blue", created_at=100), svc("web-green", "web", "green", created_at=100),
                svc("aaa-intruder", "web", "blue", created_at=200)]
    found = discover(services, DEFAULTS)
    assert found.apps["web"].blue_service == "web-blue" and "web" not in found.broken
    [refusal] = found.refused["web"]
    assert (refusal.service, refusal.color, refusal.kept, refusal.reason) == (
        "aaa-intruder", Color.BLUE, "web-blue", "it is the older service")
    assert found.problems == ["app web: aaa-intruder: refused: swarmshift.bluegreen.color=blue is already "
                              "web-blue's (it is the older service)"]


def test_the_service_carrying_the_apps_state_keeps_its_color_even_when_younger():
    state = {K_GENERATION: "7"}
    services = [svc("web-blue", "web", "blue", created_at=300, **state),
                svc("web-green", "web", "green", created_at=100, **{K_GENERATION: "8"}),
                svc("old-impostor", "web", "blue", created_at=1, **{K_GENERATION: "1"})]
    found = discover(services, DEFAULTS)
    assert found.apps["web"].blue_service == "web-blue"
    assert found.refused["web"][0].reason == "it carries the app's state, as the other color does"


def test_the_color_goes_by_name_when_nothing_else_tells():
    found = discover([svc("web-blue", "web", "blue"), svc("web-blue2", "web", "blue"), svc("web-green", "web", "green")],
                     DEFAULTS)
    assert found.apps["web"].blue_service == "web-blue"
    assert [(r.service, r.reason) for r in found.refused["web"]] == [("web-blue2", "it comes first by name")]


def test_a_refused_service_with_bad_labels_does_not_break_the_app():
    found = discover([*pair("web"), svc("zzz-new", "web", "green", port="²", bogus="x")],
                     DEFAULTS)
    assert list(found.apps) == ["web"] and found.broken == {} and found.issues == {}


def test_created_at_is_parsed_from_docker():
    assert parse_created("2016-06-07T21:07:09.117246754Z") == pytest.approx(1465333629.117246)
    assert parse_created("yesterday") is None and parse_created(None) is None
    raw = {"ID": "x", "Version": {"Index": 1}, "CreatedAt": "2016-06-07T21:07:09Z",
           "Spec": {"Name": "web-blue", "Mode": {"Replicated": {"Replicas": 1}}}}
    assert parse_service(raw).created_at == 1465333629.0
