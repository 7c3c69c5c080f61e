"""Fuzzing the label parsers (issue 10): generated hostile labels, 1,000 examples each, shrunk when one fails.

Each property is what a user relies on: discovery never raises and accounts for every labelled
service, a rule either parses or is a RuleError, a state label is read or is a problem line,
durations and numbers are read strictly or refused with ValueError.
"""

from __future__ import annotations

import contextlib
import math
import re
from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st

from bluegreen.apps import AppDefaults, Color, discover
from bluegreen.labels import (
    APP_LABEL,
    COLOR_LABEL,
    HEALTH_PATH_LABEL,
    K_ACTIVE,
    K_GENERATION,
    K_PHASE,
    K_SINCE,
    LOCK_LABEL,
    PORT_LABEL,
    PREFIX,
    PREVIEW_RULE_LABEL,
    RULE_LABEL,
    STACK_LABEL,
    STATE_KEYS,
    STRATEGY_LABEL,
)
from bluegreen.rules import MAX_DEPTH, MAX_RULE_CHARS, RuleError, parse_rule
from bluegreen.state import App, AppState, load_state
from swarmshift.config import parse_duration
from swarmshift.numbers import whole_number
from tests.support.fuzz import fuzz

# Values that are almost right are the ones that find bugs: digits of other scripts, a trailing
# newline, huge numbers, template delimiters, deep nesting.
NASTY = st.sampled_from(["", "web", "web\n", "blue", "green", "blue\n", "²", "١٢", "８０００", "8000", "0", "65536",
                         "9" * 5000, "Host(`a`)", "Host(`a`)\n", "(" * 40 + "Host(`a`)" + ")" * 40, "!" * 5000,
                         "{{ .x }}", "/health", "/health\n", "progressive", "shop", "Shop", "../x", "a_b", "\x00",
                         "2025-01-31T12:00:00.000Z", "Stable", "Verifying", "10,50,100", "10,٥٠,100", "true"])
VALUE = st.one_of(NASTY, st.text(max_size=30))
KEY = st.one_of(st.sampled_from([APP_LABEL, COLOR_LABEL, PORT_LABEL, RULE_LABEL, HEALTH_PATH_LABEL,
                                 PREVIEW_RULE_LABEL, STRATEGY_LABEL, LOCK_LABEL, STACK_LABEL, *STATE_KEYS,
                                 f"{PREFIX}.bogus"]),
                st.text(max_size=12).map(lambda k: f"{PREFIX}.{k}"), st.text(max_size=12))
APP = st.one_of(st.sampled_from(["web", "api", "web\n", "Web", "web-blue", "١"]), st.text(max_size=8))
NAME = st.one_of(st.from_regex(r"[a-z][a-z0-9_-]{0,10}", fullmatch=True), st.text(max_size=12))


@dataclass(frozen=True)
class Svc:
    name: str
    labels: dict[str, str]
    created_at: float | None


@st.composite
def services(draw) -> list[Svc]:
    names = draw(st.lists(NAME, max_size=6, unique=True))
    out = []
    for name in names:
        labels = draw(st.dictionaries(KEY, VALUE, max_size=5))
        if draw(st.booleans()):  # most services look like an app's, so the deeper parsers are reached
            labels[APP_LABEL] = draw(APP)
            labels[COLOR_LABEL] = draw(st.one_of(st.sampled_from(["blue", "green"]), VALUE))
        created = draw(st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)))
        out.append(Svc(name, labels, created))
    return out


@fuzz
@given(services(), st.sampled_from([AppDefaults(), AppDefaults(port=8000, rule="Host(`{app}.example.com`)")]))
def test_discovery_never_raises_and_accounts_for_every_labelled_service(found_services, defaults):
    found = discover(found_services, defaults)
    in_apps = {s for app in found.apps.values() for s in (app.blue_service, app.green_service)}
    in_broken = {s for names in found.broken.values() for s in names}
    refused = {r.service for rs in found.refused.values() for r in rs}
    for svc in found_services:
        if not any(k.startswith(PREFIX + ".") for k in svc.labels):
            continue
        named = any(line.startswith(f"{svc.name}: ") for line in found.unattached)
        assert svc.name in in_apps | in_broken | refused or named, svc
    for key, app in found.apps.items():
        assert app.name == key and key not in found.broken
        assert re.fullmatch(r"(?:[a-z0-9][a-z0-9_-]{0,62}_)?[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?", key, re.ASCII)
        assert 1 <= app.port <= 65535
    for key in found.broken:
        assert found.issues.get(key), key  # a broken app always says why


# --- rules -----------------------------------------------------------------------------------------

MATCHER = st.builds(lambda name, arg: f"{name}(`{arg}`)",
                    st.sampled_from(["Host", "PathPrefix", "Path", "Method", "Hots", "Header"]),
                    st.text(alphabet=st.characters(blacklist_characters="`"), max_size=10))
RULE = st.recursive(MATCHER, lambda inner: st.one_of(
    inner.map(lambda r: f"!{r}"), inner.map(lambda r: f"({r})"),
    st.tuples(inner, st.sampled_from([" && ", " || ", " ", "&&&", ","]), inner).map("".join)), max_leaves=40)


@fuzz
@given(st.one_of(st.text(), st.text(alphabet="()!&|` ,HostPa\"\\", max_size=200), RULE))
def test_a_rule_parses_or_is_a_rule_error(text):
    with contextlib.suppress(RuleError):
        parse_rule(text)


@fuzz
@given(st.integers(0, 20_000), st.sampled_from(["(", "!", "!(", "( "]), st.booleans())
def test_deep_nesting_is_a_rule_error_never_a_recursion_error(depth, opener, closed):
    closer = ")" * opener.count("(") * depth if closed else ""
    text = opener * depth + "Host(`a`)" + closer
    levels = len(opener.strip()) * depth  # "!(" opens two
    try:
        parse_rule(text)
    except RuleError:
        assert levels > MAX_DEPTH or len(text) > MAX_RULE_CHARS or not (closed or "(" not in opener)
    else:
        assert levels <= MAX_DEPTH


# --- the state label codec -------------------------------------------------------------------------

STATE_VALUE = st.one_of(NASTY, st.text(max_size=20), st.integers(-5, 10 ** 6).map(str))
GOOD = {K_GENERATION: "3", K_ACTIVE: "blue", K_PHASE: "Stable", K_SINCE: "2025-01-31T12:00:00.000Z"}
APP_ = App("web", "web-blue", "web-green", 8000, "Host(`w`)")


@fuzz
@given(st.dictionaries(st.sampled_from(STATE_KEYS), STATE_VALUE, max_size=len(STATE_KEYS)),
       st.dictionaries(st.sampled_from(STATE_KEYS), STATE_VALUE, max_size=len(STATE_KEYS)), st.booleans())
def test_load_state_never_raises_and_bad_values_are_problems(blue, green, start_good):
    labels = {Color.BLUE: {**(GOOD if start_good else {}), **blue}, Color.GREEN: green}
    loaded = load_state(APP_, labels, {Color.BLUE: 1, Color.GREEN: 0}, None, 1_750_000_000.0)
    for color in Color:
        state, problems = AppState.from_labels(labels[color], APP_.service(color))
        assert (state is None) == bool(problems) or not any(k in STATE_KEYS for k in labels[color])
        assert all(line.startswith(f"{APP_.service(color)}: ") for line in problems)
        if state is not None:  # what was read writes back as the same labels
            assert AppState.from_labels({k: v for k, v in state.to_labels().items() if v is not None},
                                        "x") == (state, [])
    assert loaded.state.generation >= 0


# --- durations and numbers -------------------------------------------------------------------------

@fuzz
@given(st.one_of(st.text(max_size=80), NASTY, st.integers(), st.floats(), st.booleans(), st.none(),
                 st.from_regex(r"(?:[0-9]{1,4}(?:\.[0-9]{1,3})?(?:ms|s|m|h|d)){1,4}", fullmatch=True)))
def test_a_duration_is_finite_and_non_negative_or_a_value_error(value):
    try:
        seconds = parse_duration(value)
    except ValueError:
        return
    assert math.isfinite(seconds) and seconds >= 0
    if isinstance(value, str):
        assert value.strip().isascii()


@fuzz
@given(st.one_of(st.text(max_size=40), NASTY, st.integers(0, 10 ** 18 - 1).map(str)),
       st.integers(0, 10), st.one_of(st.none(), st.integers(0, 10 ** 20)))
def test_a_whole_number_is_ascii_digits_within_range_or_a_value_error(text, minimum, maximum):
    try:
        value = whole_number(text, minimum=minimum, maximum=maximum)
    except ValueError:
        return
    assert re.fullmatch(r"[0-9]{1,18}", text, re.ASCII) and int(text) == value
    assert value >= minimum and (maximum is None or value <= maximum)


# --- the controller over hostile labels ------------------------------------------------------------

HOSTILE = st.dictionaries(st.sampled_from([PORT_LABEL, RULE_LABEL, HEALTH_PATH_LABEL, PREVIEW_RULE_LABEL,
                                           STRATEGY_LABEL, STACK_LABEL, COLOR_LABEL, APP_LABEL, *STATE_KEYS]),
                          VALUE, max_size=5)


@fuzz
@given(HOSTILE, HOSTILE, HOSTILE)
def test_hostile_labels_never_keep_the_controller_from_serving_a_good_app(blue, green, extra):
    import asyncio

    from bluegreen.config import BlueGreenConfig
    from bluegreen.controller import Controller
    from bluegreen.observe import Checks
    from tests.support.memory import Clock, MemoryProber, MemoryRouter, MemorySwarm

    swarm = MemorySwarm()
    good = {APP_LABEL: "good", PORT_LABEL: "8000", RULE_LABEL: "Host(`good.example.com`)"}
    swarm.add("good-blue", image="g:1", labels={**good, COLOR_LABEL: "blue"})
    swarm.add("good-green", image="g:1", replicas=0, labels={**good, COLOR_LABEL: "green"})
    base = {APP_LABEL: "evil", PORT_LABEL: "8000", RULE_LABEL: "Host(`evil.example.com`)"}
    swarm.add("evil-blue", image="e:1", labels={**base, COLOR_LABEL: "blue", **blue})
    swarm.add("evil-green", image="e:1", replicas=0, labels={**base, COLOR_LABEL: "green", **green})
    swarm.add("evil-extra", image="e:1", labels={**base, **extra})
    router = MemoryRouter()
    c = Controller(swarm, router, BlueGreenConfig(probe_interval=0.2), prober=MemoryProber(),
                   checks=Checks(None, []), clock=Clock())

    async def scenario() -> None:
        await c.start()
        views = {v["app"]: v for v in await c.statuses()}
        await c.stop()
        assert router.ready and "good" in router.routes and views["good"]["broken"] is False
        assert set(views) == set(c.apps)
        for view in views.values():
            assert view["broken"] is bool(view["broken"]) and (not view["broken"] or view["problems"])

    asyncio.run(asyncio.wait_for(scenario(), 10))
