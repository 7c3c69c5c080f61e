"""One app cannot take another's traffic: rule conflicts, who keeps a contested route, host allowances.

Table tests of bluegreen.claims, a fuzz test that checks the clause abstraction against a direct
evaluation of random rules on concrete requests (it may report too much, never too little), and
the wiring: a newcomer in conflict gets no routing through the real controller over
tests/support/memory.py, and `check` reports it.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st

from bluegreen.app_check import board, check_app_labels
from bluegreen.claims import (
    MAX_CLAUSES,
    Claim,
    allowance_for,
    allowance_problems,
    arbitrate,
    clauses,
    conflict,
    host_allowed,
)
from bluegreen.config import BlueGreenConfig
from bluegreen.controller import BrokenApp, Controller
from bluegreen.labels import APP_LABEL, COLOR_LABEL, K_GENERATION, PORT_LABEL, PREVIEW_RULE_LABEL, RULE_LABEL
from bluegreen.observe import Checks
from bluegreen.routers.traefik_file import TraefikFileRouter
from bluegreen.rules import AllOf, AnyOf, Matcher, Not, Rule, RuleNode
from tests.support.fuzz import fuzz
from tests.support.memory import Clock, MemoryProber, MemoryRouter, MemorySwarm

R = Rule.parse

# --- conflicts -----------------------------------------------------------------------------------

OVERLAPPING = {
    # name: (rule a, rule b, whether the example surely matches both)
    "a catch-all path without a host vs any app": ("PathPrefix(`/`)", "Host(`shop.example.com`)", True),
    "a catch-all vs a path under a host": ("PathPrefix(`/`)", "Host(`a`) && PathPrefix(`/api`)", True),
    "the same host": ("Host(`a`)", "Host(`a`)", True),
    "hosts differ only in case and a trailing dot": ("Host(`Shop.Example.com`)", "Host(`shop.example.com.`)", True),
    "one host of two": ("Host(`a`) || Host(`b`)", "Host(`b`)", True),
    "a host vs a path under it": ("Host(`a`)", "Host(`a`) && PathPrefix(`/x`)", True),
    "nested prefixes": ("Host(`a`) && PathPrefix(`/x`)", "Host(`a`) && PathPrefix(`/x/y`)", True),
    "a prefix vs a longer one as plain text": ("Host(`a`) && PathPrefix(`/x`)", "Host(`a`) && PathPrefix(`/xy`)", True),
    "an exact path under a prefix": ("Host(`a`) && Path(`/x/1`)", "Host(`a`) && PathPrefix(`/x/`)", True),
    "the same exact path": ("Host(`a`) && Path(`/x`)", "Host(`a`) && Path(`/x`)", True),
    "an exact path vs a host without a path": ("Path(`/x`)", "Host(`a`)", True),
    "a negated host still claims every other host": ("!Host(`a`)", "Host(`b`)", False),
    "a negation is never taken as disjoint": ("Host(`a`) && !PathPrefix(`/x`)", "Host(`a`) && PathPrefix(`/x`)", False),
    "a double negation is exact again": ("!!Host(`a`)", "Host(`a`)", True),
    "a host regexp may match any host": ("HostRegexp(`^.+\\.example\\.org$`)", "Host(`a.example.com`)", False),
    "a path regexp may match any path": ("Host(`a`) && PathRegexp(`^/y`)", "Host(`a`) && PathPrefix(`/x`)", False),
    "a header narrows nothing": ("Host(`a`) && Header(`X-Tenant`, `1`)", "Host(`a`) && Header(`X-Tenant`, `2`)",
                                 False),
    "a method narrows nothing": ("Host(`a`) && Method(`GET`)", "Host(`a`) && Method(`POST`)", False),
    "query and client IP narrow nothing": ("Host(`a`) && Query(`v`, `1`)", "Host(`a`) && ClientIP(`10.0.0.1`)", False),
    "a wildcard host covers one label": ("Host(`*.example.com`)", "Host(`shop.example.com`)", True),
    "a double wildcard covers any depth": ("Host(`**.example.com`)", "Host(`a.shop.example.com`)", True),
    "a wildcard within a double one": ("Host(`*.shop.example.com`)", "Host(`**.example.com`)", True),
    "a lone star covers single-label hosts": ("Host(`*`)", "Host(`localhost`)", True),
    "a long catch-all alternative": ("PathPrefix(`/`) || Host(`x`) && Path(`/a/very/long/path/to/win/by/length`)",
                                     "Host(`shop.example.com`) && PathPrefix(`/cart`)", True),
}

DISJOINT = {
    "different hosts": ("Host(`a`)", "Host(`b`)"),
    "one host, sibling prefixes": ("Host(`a`) && PathPrefix(`/x`)", "Host(`a`) && PathPrefix(`/y`)"),
    "one host, sibling directories": ("Host(`a`) && PathPrefix(`/x/`)", "Host(`a`) && PathPrefix(`/xy`)"),
    "two hosts vs a third": ("Host(`a`) || Host(`b`)", "Host(`c`)"),
    "different exact paths without hosts": ("Path(`/x`)", "Path(`/y`)"),
    "an exact path outside a prefix": ("Host(`a`) && Path(`/y`)", "Host(`a`) && PathPrefix(`/x`)"),
    "a header does not make other hosts overlap": ("Host(`a`) && Header(`X`, `1`)", "Host(`b`)"),
    "a rule that can match nothing": ("Host(`a`) && Host(`b`)", "PathPrefix(`/`)"),
    "a negation beside a pinned host": ("Host(`a`) && !Path(`/x`)", "Host(`b`)"),
    "a wildcard does not cover its own domain": ("Host(`*.example.com`)", "Host(`example.com`)"),
    "a wildcard covers one label only": ("Host(`*.example.com`)", "Host(`a.shop.example.com`)"),
    "wildcards of different domains": ("Host(`**.example.com`)", "Host(`*.example.org`)"),
    "a wildcard vs a deeper one": ("Host(`*.example.com`)", "Host(`*.shop.example.com`)"),
}


@pytest.mark.parametrize("name", list(OVERLAPPING))
def test_rules_that_can_match_one_request_conflict(name):
    a, b, certain = OVERLAPPING[name]
    for x, y in ((a, b), (b, a)):
        overlap = conflict(R(x), R(y))
        assert overlap is not None, f"{x} vs {y}"
        assert overlap.certain is certain


@pytest.mark.parametrize("name", list(DISJOINT))
def test_provably_disjoint_rules_do_not_conflict(name):
    a, b = DISJOINT[name]
    assert conflict(R(a), R(b)) is None
    assert conflict(R(b), R(a)) is None


def test_the_overlap_names_an_example_request():
    assert str(conflict(R("PathPrefix(`/`)"), R("Host(`shop.example.com`) && PathPrefix(`/cart`)"))) == \
        "both match Host shop.example.com, path /cart"
    assert str(conflict(R("Host(`a`) || Host(`b`)"), R("Host(`b`) && Header(`X`, `1`)"))) == \
        "both may match Host b, path /"


@pytest.mark.parametrize("rule", [
    # 65 short hosts: the rule still fits within the parser's 1,000 characters
    " || ".join(f"Host(`h{i}`)" for i in range(MAX_CLAUSES + 1)),
    # 8 hosts by 9 paths: 72 clauses
    "(" + " || ".join(f"Host(`h{i}`)" for i in range(8)) + ") && ("
    + " || ".join(f"PathPrefix(`/p{i}`)" for i in range(9)) + ")",
], ids=["alternatives", "product"])
def test_too_many_clauses_are_taken_to_match_anything(rule):
    found = clauses(R(rule))
    assert len(found) == 1 and found[0].host is None and not found[0].exact
    assert conflict(R(rule), R("Host(`unrelated.example.com`)")) is not None


def test_clauses_that_cannot_hold_are_dropped():
    # Any two of these hosts or prefixes exclude each other: no request matches the rule.
    assert clauses(R(" && ".join(f"(Host(`h{i}`) || PathPrefix(`/p{i}`))" for i in range(7)))) == ()


# --- arbitration ---------------------------------------------------------------------------------

SHOP = (("rule", R("Host(`shop.example.com`)")),)
CATCH_ALL = (("rule", R("PathPrefix(`/`)")),)


@pytest.mark.parametrize(("claims", "losers"), [
    # The app routed before keeps the route, however young.
    ([Claim("shop", SHOP, routed=True, created=20), Claim("aaa", CATCH_ALL, created=10)], {"aaa": "shop"}),
    # Neither routed: the older one.
    ([Claim("zzz", SHOP, created=10), Claim("aaa", CATCH_ALL, created=20)], {"aaa": "zzz"}),
    # Both routed: the older one.
    ([Claim("zzz", SHOP, routed=True, created=10), Claim("aaa", CATCH_ALL, routed=True, created=20)], {"aaa": "zzz"}),
    # Ages unknown: by name.
    ([Claim("shop", SHOP), Claim("aaa", CATCH_ALL)], {"shop": "aaa"}),
    # A known age ranks before an unknown one.
    ([Claim("shop", SHOP, created=5), Claim("aaa", CATCH_ALL)], {"aaa": "shop"}),
    # Disjoint apps both keep their routes.
    ([Claim("shop", SHOP), Claim("blog", (("rule", R("Host(`blog.example.com`)")),))], {}),
])
def test_the_established_app_keeps_the_route(claims, losers):
    lost = arbitrate(claims)
    assert {name: contests[0].established for name, contests in lost.items()} == losers


def test_an_app_that_lost_blocks_no_one():
    # b loses to a; c overlaps only b, which routes nothing, so c keeps its route.
    a = Claim("a", (("rule", R("Host(`x`)")),), routed=True)
    b = Claim("b", (("rule", R("Host(`x`) || Host(`y`)")),), created=1)
    c = Claim("c", (("rule", R("Host(`y`)")),), created=2)
    assert set(arbitrate([a, b, c])) == {"b"}


def test_the_preview_rule_counts_too():
    a = Claim("a", (("rule", R("Host(`a`)")), ("preview", R("Host(`preview.example.com`)"))), routed=True)
    b = Claim("b", (("rule", R("Host(`b`)")), ("preview", R("Host(`preview.example.com`)"))))
    [lost] = arbitrate([a, b])["b"]
    assert (lost.newcomer_label, lost.established_label) == ("preview", "preview")
    assert lost.problem() == (
        "app b: preview 'Host(`preview.example.com`)' overlaps app a's preview 'Host(`preview.example.com`)' "
        "(both match Host preview.example.com, path /); a was routed first, so it keeps the route and b is not "
        "routed: change one of the rules so that no request can match both")


# --- host allowances -----------------------------------------------------------------------------

HOSTS = {"shop_*": ["*.shop.example.com", "shop.example.com"], "legacy": ["*"], "*": ["*.apps.example.com"]}


@pytest.mark.parametrize(("host", "pattern", "allowed"), [
    ("shop.example.com", "shop.example.com", True),
    ("a.shop.example.com", "*.shop.example.com", True),
    ("a.b.shop.example.com", "*.shop.example.com", True),
    ("shop.example.com", "*.shop.example.com", False),  # the wildcard needs a label before the dot
    ("evilshop.example.com", "*.shop.example.com", False),
    ("anything", "*", True),
])
def test_host_patterns(host, pattern, allowed):
    assert host_allowed(host, pattern) is allowed


def test_the_first_key_that_covers_the_app_is_its_allowance():
    assert allowance_for(HOSTS, "web", ["shop_web-blue", "shop_web-green"]).key == "shop_*"
    # A stack glob must cover both colors: a color in another stack does not borrow the allowance.
    assert allowance_for(HOSTS, "web", ["shop_web-blue", "evil_web-green"]).key == "*"
    assert allowance_for(HOSTS, "legacy", ["x", "y"]).key == "legacy"
    assert allowance_for({"shop_*": ["x"]}, "blog", ["blog-blue", "blog-green"]) is None


SHOP_SERVICES = ("shop_web-blue", "shop_web-green")


@pytest.mark.parametrize(("rule", "want"), [
    ("Host(`shop.example.com`)", []),
    ("Host(`cart.shop.example.com`) && PathPrefix(`/x`) || Host(`shop.example.com`)", []),
    ("Host(`Shop.Example.COM`)", []),
    ("PathPrefix(`/`)",
     ["app web: rule 'PathPrefix(`/`)' can match any host; hosts['shop_*'] allows only *.shop.example.com, "
      "shop.example.com: pin every alternative of the rule with Host(`…`)"]),
    ("HostRegexp(`^.+\\.shop\\.example\\.com$`)",
     ["app web: rule 'HostRegexp(`^.+\\\\.shop\\\\.example\\\\.com$`)' can match any host; hosts['shop_*'] allows "
      "only *.shop.example.com, shop.example.com: pin every alternative of the rule with Host(`…`)"]),
    ("Host(`shop.example.com`) || PathPrefix(`/admin`)",
     ["app web: rule 'Host(`shop.example.com`) || PathPrefix(`/admin`)' can match any host; hosts['shop_*'] "
      "allows only *.shop.example.com, shop.example.com: pin every alternative of the rule with Host(`…`)"]),
    ("Host(`blog.example.com`)",
     ["app web: rule 'Host(`blog.example.com`)' routes host 'blog.example.com', which hosts['shop_*'] does not "
      "allow (allowed: *.shop.example.com, shop.example.com)"]),
    ("Host(`*.shop.example.com`) || Host(`**.cdn.shop.example.com`)", []),
    ("Host(`*.example.com`)",
     ["app web: rule 'Host(`*.example.com`)' routes host '*.example.com', which hosts['shop_*'] does not "
      "allow (allowed: *.shop.example.com, shop.example.com)"]),
    ("Host(`*`)",
     ["app web: rule 'Host(`*`)' routes host '*', which hosts['shop_*'] does not "
      "allow (allowed: *.shop.example.com, shop.example.com)"]),
])
def test_an_app_may_route_only_the_hosts_its_allowance_grants(rule, want):
    assert allowance_problems("web", [("rule", R(rule))], HOSTS, SHOP_SERVICES) == want


def test_without_hosts_any_app_routes_any_host_and_an_uncovered_app_none():
    assert allowance_problems("web", [("rule", R("PathPrefix(`/`)"))], None) == []
    assert allowance_problems("web", [("rule", R("Host(`a`)"))], {"shop_*": ["a"]}, ("web-blue", "web-green")) == [
        "app web: no entry of hosts covers it (keys: shop_*); the config decides which hosts an app may route: "
        "add its name, a glob over its services, or \"*\""]


# --- the config, check and the controller ----------------------------------------------------------


@dataclass
class Svc:
    name: str
    labels: dict = field(default_factory=dict)
    created_at: float | None = None


def services(app: str, rule: str, *, preview: str | None = None, routed: bool = False, created: float | None = None,
             prefix: str = "") -> list[Svc]:
    base = {APP_LABEL: app, PORT_LABEL: "8000", RULE_LABEL: rule}
    if preview:
        base[PREVIEW_RULE_LABEL] = preview
    state = {K_GENERATION: "3"} if routed else {}
    return [Svc(f"{prefix}{app}-{color}", {**base, **state, COLOR_LABEL: color}, created) for color in ("blue", "green")]


def test_check_reports_the_newcomer_naming_the_established_app():
    found = [*services("shop", "Host(`shop.example.com`)", created=1.0),
             *services("grab", "PathPrefix(`/`) || Host(`x`) && Path(`/long`)", created=2.0),
             *services("blog", "Host(`blog.example.com`)", created=3.0)]
    # grab loses to shop; blog overlaps only grab, which routes nothing, so blog may route.
    assert check_app_labels(found, BlueGreenConfig()) == [
        "app grab: swarmshift.bluegreen.rule 'PathPrefix(`/`) || Host(`x`) && Path(`/long`)' overlaps app shop's "
        "swarmshift.bluegreen.rule 'Host(`shop.example.com`)' (both match Host shop.example.com, path /); shop is "
        "older, so it keeps the route and grab is not routed: change one of the rules so that no request "
        "can match both"]


def test_check_reports_hosts_outside_the_allowance():
    config = BlueGreenConfig.model_validate({"hosts": HOSTS})
    found = services("web", "Host(`blog.example.com`)", prefix="shop_")
    assert check_app_labels(found, config) == [
        "app web: swarmshift.bluegreen.rule 'Host(`blog.example.com`)' routes host 'blog.example.com', which "
        "hosts['shop_*'] does not allow (allowed: *.shop.example.com, shop.example.com)"]


def test_an_app_that_routes_nothing_claims_nothing():
    # grab violates its allowance and was never routed: it cannot take shop's traffic, so shop is free.
    config = BlueGreenConfig.model_validate({"hosts": {"shop": ["shop.example.com"], "grab": ["grab.example.com"]}})
    found = [*services("shop", "Host(`shop.example.com`)", created=2.0), *services("grab", "PathPrefix(`/`)", created=1.0)]
    assert set(board(found, config).claims) == {"shop"}
    found[2].labels[K_GENERATION] = "1"  # ...unless it was routed before: its routing may still be in effect
    assert set(board(found, config).claims) == {"shop", "grab"}


@pytest.mark.parametrize(("text", "want"), [
    ("hosts: {'bad key': [a.example.com]}\n",
     ["hosts.bad key: expected an app name or a glob over app or service names, such as shop_* "
      "(letters, digits, _ . - * ?) (got 'bad key')"]),
    ("hosts: {shop: ['*.shop.example.com', 'shop.*', 'a b']}\n",
     ["hosts.shop[1]: expected *, a host name such as shop.example.com, or *.example.com (got 'shop.*')",
      "hosts.shop[2]: expected *, a host name such as shop.example.com, or *.example.com (got 'a b')"]),
    ("hosts: {shop: []}\n", ["hosts.shop: List should have at least 1 item after validation, not 0 (got [])"]),
    ("router: {traefik: {priority: 0}}\n",
     ["router.traefik.priority: Input should be greater than or equal to 1 (got 0)"]),
], ids=["key", "patterns", "empty", "priority"])
def test_bad_allowances_stop_the_start_one_line_each(tmp_path, text, want):
    from swarmshift.config import ConfigError, load

    path = tmp_path / "c.yml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load(BlueGreenConfig, path, env={})
    assert [line.removeprefix(f"{path}: ") for line in err.value.problems] == want


def test_hosts_are_read_in_the_order_written_and_folded():
    config = BlueGreenConfig.model_validate({"hosts": {"shop_*": ["Shop.Example.com"], "*": ["*.apps.example.com"]}})
    assert config.hosts == {"shop_*": ["shop.example.com"], "*": ["*.apps.example.com"]}
    assert BlueGreenConfig().hosts is None


@pytest.mark.parametrize("kind", ["memory", "traefik-file"])
def test_a_conflicting_newcomer_gets_no_routing_through_the_controller(tmp_path, kind):
    swarm = MemorySwarm()
    for svc in services("shop", "Host(`shop.example.com`)"):
        swarm.add(svc.name, image="shop:1", replicas=1 if svc.name.endswith("blue") else 0, labels=svc.labels)
    router = MemoryRouter() if kind == "memory" else TraefikFileRouter(tmp_path)
    config = BlueGreenConfig(probe_interval=1, verification_window=2)
    controller = Controller(swarm, router, config, prober=MemoryProber(), checks=Checks(None, []), clock=Clock())

    async def tick(name: str) -> None:
        rt = await controller.runtime(name)
        async with rt.lock:
            await controller.ticker.run(rt)

    def routed() -> set[str]:
        if isinstance(router, MemoryRouter):
            return set(router.routes)
        return {path.stem for path in tmp_path.glob("*.yml")}

    async def scenario() -> tuple[dict, dict, list]:
        await tick("shop")  # shop is routed and gets its state
        assert routed() == {"shop"}
        # A newcomer whose long catch-all would outrank shop by rule length in Traefik.
        for svc in services("grab", "PathPrefix(`/`) || Host(`x`) && Path(`/a/very/long/path`)"):
            swarm.add(svc.name, image="grab:1", replicas=1, labels=svc.labels)
        with structlog.testing.capture_logs() as logs:
            await tick("grab")
            await tick("grab")  # logged once, not every tick
        with pytest.raises(BrokenApp):
            await controller.switch("grab")
        await tick("shop")  # the established app goes on as before
        assert routed() == {"shop"}
        assert not [svc for svc, _ in swarm.writes if svc.startswith("grab")]  # not even its state
        views = await controller.status("grab"), await controller.status("shop")
        # grab's owner pins it to a host of its own: its next tick reads the fresh rule, and routes it.
        for color in ("blue", "green"):
            swarm._write(swarm.get(f"grab-{color}"), {"labels": {RULE_LABEL: "Host(`grab.example.com`)"}})
        await tick("grab")
        assert routed() == {"shop", "grab"}
        return *views, logs

    grab, shop, logs = asyncio.run(scenario())
    [line] = grab["problems"]
    assert line.startswith("app grab: swarmshift.bluegreen.rule 'PathPrefix(`/`) || Host(`x`) && "
                           "Path(`/a/very/long/path`)' overlaps app shop's swarmshift.bluegreen.rule "
                           "'Host(`shop.example.com`)' (both match Host shop.example.com, path /); shop was routed "
                           "first")
    assert shop["health"] == "healthy"
    conflicts = [e for e in logs if e["event"] == "app_conflict"]
    assert len(conflicts) == 1
    assert conflicts[0]["app"] == "grab" and conflicts[0]["established"] == "shop"
    assert conflicts[0]["overlap"] == "both match Host shop.example.com, path /"


# --- fuzz: the abstraction against a direct evaluation -------------------------------------------

FUZZ_HOSTS = ["a.example.com", "A.example.com.", "b.example.com", "shop.example.com", "*.example.com",
              "**.example.com", "*", "localhost", "example.com"]
FUZZ_PATHS = ["/", "/x", "/x/", "/xy", "/y", "/x/1"]
OTHERS = [r"HostRegexp(`^a\..+$`)", "PathRegexp(`^/x`)", "Header(`X-A`, `1`)", "Method(`GET`)", "Query(`q`)",
          "ClientIP(`10.0.0.0/8`)"]

_leaf = st.one_of(
    st.sampled_from(FUZZ_HOSTS).map(lambda h: f"Host(`{h}`)"),
    st.sampled_from(FUZZ_PATHS).map(lambda p: f"Path(`{p}`)"),
    st.sampled_from(FUZZ_PATHS).map(lambda p: f"PathPrefix(`{p}`)"),
    st.sampled_from(OTHERS),
)
rules = st.recursive(_leaf, lambda inner: st.one_of(
    st.lists(inner, min_size=2, max_size=3).map(lambda xs: "(" + " && ".join(xs) + ")"),
    st.lists(inner, min_size=2, max_size=3).map(lambda xs: "(" + " || ".join(xs) + ")"),
    inner.map(lambda x: "!" + x),
), max_leaves=10)

# Concrete requests: every host and path the rules name, their neighbours, with and without extras.
REQUEST_HOSTS = ["a.example.com", "b.example.com", "shop.example.com", "other.example.com", "aa.example.com",
                 "x.a.example.com", "example.com", "localhost", "other.org"]
REQUEST_PATHS = sorted({*FUZZ_PATHS, "/xz", "/x/z", "/q", "/x/1/2"})
REQUESTS = [(h, p, extras) for h in REQUEST_HOSTS for p in REQUEST_PATHS for extras in (False, True)]


def matches(node: RuleNode, host: str, path: str, extras: bool) -> bool:
    """Traefik's meaning of a rule on one request; `extras`: the header, GET, query and client IP all match."""
    if isinstance(node, Not):
        return not matches(node.inner, host, path, extras)
    if isinstance(node, AllOf):
        return all(matches(i, host, path, extras) for i in node.items)
    if isinstance(node, AnyOf):
        return any(matches(i, host, path, extras) for i in node.items)
    assert isinstance(node, Matcher)
    arg = node.args[0]
    return {
        "Host": lambda: host_matches(host, arg.lower().removesuffix(".")),
        "HostRegexp": lambda: re.search(arg, host) is not None,
        "Path": lambda: path == arg,
        "PathPrefix": lambda: path.startswith(arg),
        "PathRegexp": lambda: re.search(arg, path) is not None,
    }.get(node.name, lambda: extras)()


def host_matches(host: str, expr: str) -> bool:
    """Traefik's DomainMatchHostExpression: `*.d` one label before d, `**.d` one or more, else the host itself."""
    if expr.startswith("**."):
        return host.endswith(expr[2:]) and len(host) > len(expr) - 2
    if expr.startswith("*"):
        return expr == ".".join(["*", *host.split(".")[1:]])
    return host == expr


def matched(rule: Rule) -> set[tuple[str, str, bool]]:
    return {r for r in REQUESTS if matches(rule.node, *r)}


@fuzz
@given(rules, rules)
def test_fuzz_conflict_never_misses_an_overlap_and_is_symmetric(a_text, b_text):
    a, b = R(a_text), R(b_text)
    there, back = conflict(a, b), conflict(b, a)
    assert (there is None) == (back is None) and str(there) == str(back)
    both = matched(a) & matched(b)
    if both:
        assert there is not None, f"missed {sorted(both)[0]}"
    if there is not None and there.certain:
        # A certain example is a request both rules really match.
        ex = there.example
        host = ex.host if ex.host is not None else "other.example.com"
        host = {"*": "localhost", "*.example.com": "a.example.com", "**.example.com": "x.a.example.com"}.get(host, host)
        path = ex.path or ex.prefix or "/"
        assert matches(a.node, host, path, False) and matches(b.node, host, path, False)
    for rule in (a, b):
        assert len(clauses(rule)) <= MAX_CLAUSES



def test_the_board_answers_for_fresh_rules_too():
    from bluegreen.claims import Board

    shop = Claim("shop", SHOP, routed=True)
    blog = Claim("blog", (("rule", R("Host(`blog.example.com`)")),), created=1)
    board = Board({"shop": shop, "blog": blog})
    assert board.contests(blog) == []
    # blog's labels changed since the last discovery: its fresh rules are checked, not the board's.
    [lost] = board.contests(Claim("blog", CATCH_ALL, created=1))
    assert lost.established == "shop"


def test_only_the_apps_of_one_controller_are_compared():
    # Another controller's app (another selector) may sit behind another proxy: it takes nothing from ours.
    config = BlueGreenConfig.model_validate({"selector": "team=a"})
    ours = services("web", "Host(`shop.example.com`) && PathPrefix(`/web`)", created=2.0)
    theirs = services("shop", "Host(`shop.example.com`)", created=1.0)
    for svc in ours:
        svc.labels["team"] = "a"
    assert set(board([*ours, *theirs], config).claims) == {"web"}
    assert set(board([*ours, *theirs], BlueGreenConfig()).lost) == {"web"}


def test_a_routed_app_that_changes_its_rule_into_another_s_is_the_newcomer():
    # aaa would win by name; but shop holds the route with its rules, and aaa changed its own.
    swarm = MemorySwarm()
    for name, rule in (("shop", "Host(`shop.example.com`)"), ("aaa", "Host(`aaa.example.com`)")):
        for svc in services(name, rule):
            swarm.add(svc.name, image=f"{name}:1", replicas=1 if svc.name.endswith("blue") else 0, labels=svc.labels)
    router = MemoryRouter()
    controller = Controller(swarm, router, BlueGreenConfig(), prober=MemoryProber(), checks=Checks(None, []),
                            clock=Clock())

    async def tick(name: str) -> tuple[str, ...]:
        rt = await controller.runtime(name)
        async with rt.lock:
            await controller.ticker.run(rt)
        return rt.problems

    async def scenario() -> None:
        assert await tick("shop") == () and await tick("aaa") == ()
        for color in ("blue", "green"):
            swarm._write(swarm.get(f"aaa-{color}"),
                         {"labels": {RULE_LABEL: "Host(`shop.example.com`) && PathPrefix(`/cart`)"}})
        [problem] = await tick("aaa")
        assert "overlaps app shop's" in problem and "shop was routed first" in problem
        await controller._discover()
        assert await tick("shop") == ()  # shop keeps its route, also once discovery has seen aaa's new rule
        assert router.routes["aaa"] and not [r for name, r in router.applied[2:] if name == "aaa"]

    asyncio.run(scenario())
