"""Which requests an app's rules can claim: conflicts between apps, who keeps a contested route, and host allowances.

Traefik sends a request to the highest-priority router whose rule matches, and every router
swarmshift writes has the same priority; two apps whose rules can match one request would split
it by chance (nginx: the first file's server block wins). So each rule is abstracted into a
bounded set of clauses, each a host (or any host) and a path constraint (exact, prefix, or any
path), whose union holds every request the rule can match. The abstraction may only claim too
much, never too little:

- Host, Path and PathPrefix are known exactly (hosts compared as Traefik does: case-folded, a
  trailing dot ignored, `*.example.com` one label under example.com, `**.example.com` any);
- HostRegexp, PathRegexp, Header, Query, Method, ClientIP and anything under a negation (`!`)
  constrain nothing: they are taken to match any request;
- a rule whose clauses would exceed `MAX_CLAUSES` is taken to match any request.

Two rules are disjoint only when every pair of their clauses is provably disjoint: different
hosts, or paths that no single path can satisfy. Nothing here does I/O.
"""

from __future__ import annotations

import fnmatch
import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bluegreen.rules import AnyOf, Matcher, Not, Rule, RuleNode

MAX_CLAUSES = 64  # past this, a rule is taken to match anything: the bound keeps the check cheap


@dataclass(frozen=True)
class Clause:
    """Requests for `host` (None: any host) whose path is `path` (exact), or starts with `prefix`.

    `exact` is True when the clause is exactly what its branch of the rule matches, False when
    something was left out (a regexp, a header, a negation) and it holds more.
    """

    host: str | None = None
    path: str | None = None
    prefix: str | None = None
    exact: bool = True

    def meet(self, other: Clause) -> Clause | None:
        """The requests both clauses match, or None when provably none."""
        if self.host is None or other.host is None:
            host = self.host if self.host is not None else other.host
        else:
            host = _host_meet(self.host, other.host)
            if host is None:
                return None
        exact = self.exact and other.exact
        paths = {p for p in (self.path, other.path) if p is not None}
        prefixes = sorted({p for p in (self.prefix, other.prefix) if p is not None}, key=len)
        if len(paths) > 1:
            return None
        if len(prefixes) == 2 and not prefixes[1].startswith(prefixes[0]):
            return None
        prefix = prefixes[-1] if prefixes else None
        if paths:
            path = next(iter(paths))
            if prefix is not None and not path.startswith(prefix):
                return None
            return Clause(host, path, None, exact)
        return Clause(host, None, prefix, exact)

    def example(self) -> str:
        host = f"Host {self.host}" if self.host is not None else "any host"
        return f"{host}, path {self.path or self.prefix or '/'}"


ANYTHING = Clause(exact=False)


def _host(name: str) -> str:
    # Traefik's Host matcher lower-cases the rule's host and ignores one trailing dot on either side.
    return name.lower().removesuffix(".")


def _wildcard(host: str) -> tuple[str, str] | None:
    """A host expression's wildcard ("*" or "**") and the domain after it, or None for an exact host.

    Traefik v3's Host matcher takes `*.example.com` for one label before example.com and (newer
    releases) `**.example.com` for one or more; neither matches example.com itself. Read this
    way even by a Traefik that compares hosts literally, the expression only claims more.
    """
    for star in ("**.", "*."):
        if host.startswith(star):
            return star[:-1], host[len(star):]
    return ("*", "") if host == "*" else None  # `*` alone: any host of a single label


def _covers(host: str, star: str, rest: str) -> bool:
    """Whether the wildcard `star`.`rest` matches the exact `host`."""
    if not rest:
        return "." not in host
    if not host.endswith("." + rest):
        return False
    head = host[: -len(rest) - 1]
    return bool(head) and (star == "**" or "." not in head)


def _host_meet(a: str, b: str) -> str | None:
    """A host expression holding every host both match, or None when provably none."""
    if a == b:
        return a
    wa, wb = _wildcard(a), _wildcard(b)
    if wa is None and wb is None:
        return None
    if wa is None or wb is None:
        exact, (star, rest) = (a, wb) if wa is None else (b, wa)  # type: ignore[misc]
        return exact if _covers(exact, star, rest) else None
    # Two wildcards: the one whose domain lies within the other's, when the other can reach it.
    for (s1, r1), (s2, r2), h in ((wa, wb, a), (wb, wa, b)):
        inside = r1 == r2 or (bool(r2) and r1.endswith("." + r2))
        if inside and (r1 == r2 and (s2 == "**" or s1 == "*") or r1 != r2 and s2 == "**"):
            return h
    return None


def _clauses(node: RuleNode, positive: bool) -> list[Clause]:
    """Clauses whose union holds every request `node` matches (or, not `positive`, does not match)."""
    if isinstance(node, Not):
        return _clauses(node.inner, not positive)
    if isinstance(node, Matcher):
        if not positive:
            return [ANYTHING]  # "not this host" still leaves every other host: claim them all
        if node.name == "Host":
            return [Clause(host=_host(node.args[0]))]
        if node.name == "Path":
            return [Clause(path=node.args[0])]
        if node.name == "PathPrefix":
            return [Clause(prefix=node.args[0])]
        return [ANYTHING]  # regexps, headers, queries, methods, client IPs: anything may match
    # De Morgan: under a negation, "all of" becomes "any of" and the other way round.
    union = isinstance(node, AnyOf) == positive
    parts = [_clauses(item, positive) for item in node.items]
    if union:
        found: list[Clause] = []
        for part in parts:
            found.extend(c for c in part if c not in found)
            if len(found) > MAX_CLAUSES:
                return [ANYTHING]
        return found
    found = [Clause()]
    for part in parts:
        found = list(dict.fromkeys(m for a in found for b in part if (m := a.meet(b)) is not None))
        if len(found) > MAX_CLAUSES:
            return [ANYTHING]
    return found


@functools.lru_cache(maxsize=4096)  # every tick checks its app against every other: rules seldom change
def clauses(rule: Rule | RuleNode) -> tuple[Clause, ...]:
    """The bounded set of clauses that holds every request the rule can match (empty: it matches none)."""
    return tuple(_clauses(rule.node if isinstance(rule, Rule) else rule, True))


@dataclass(frozen=True)
class Overlap:
    """Requests two rules can both match: one example, and whether it surely matches both."""

    example: Clause

    @property
    def certain(self) -> bool:
        return self.example.exact

    def __str__(self) -> str:
        return f"{'both match' if self.certain else 'both may match'} {self.example.example()}"


def _rank(clause: Clause) -> tuple[Any, ...]:
    # Prefer an example both rules surely match, then one that names a host, then by text: the
    # choice is the same whichever rule comes first.
    return (not clause.exact, clause.host is None, clause.host or "", clause.path or "", clause.prefix or "")


@functools.lru_cache(maxsize=16384)
def conflict(a: Rule | RuleNode, b: Rule | RuleNode) -> Overlap | None:
    """What two rules can both match, or None when they are provably disjoint. Symmetric."""
    met = [m for x in clauses(a) for y in clauses(b) if (m := x.meet(y)) is not None]
    return Overlap(min(met, key=_rank)) if met else None


# --- Arbitration: who keeps a contested route -----------------------------------------------------


@dataclass(frozen=True)
class Claim:
    """An app's rules, and what decides whether it keeps them when another app's overlap.

    `routed`: it has been routed before with these rules (its services carry a state generation,
    and the controller has not seen it change its rules since). `created`:
    any value that orders apps by age, oldest first (when its first service was created), None
    when unknown (ranked after every known age).
    """

    name: str
    rules: tuple[tuple[str, Rule], ...]  # (label, rule): the main rule and the preview rule
    routed: bool = False
    created: Any = None

    @functools.cached_property
    def hosts(self) -> frozenset[str] | None:
        """Every host its rules can claim; None when one of them can claim any host."""
        found = [c.host for _, rule in self.rules for c in clauses(rule)]
        return None if None in found else frozenset(found)  # type: ignore[arg-type]

    @property
    def seniority(self) -> tuple[Any, ...]:
        return (not self.routed, self.created is None, self.created if self.created is not None else 0, self.name)


@dataclass(frozen=True)
class Contest:
    """A newcomer's rule that overlaps a rule of an app that keeps its routing."""

    newcomer: str
    newcomer_label: str
    newcomer_rule: Rule
    established: str
    established_label: str
    established_rule: Rule
    overlap: Overlap
    why: str  # why the established app keeps it

    def problem(self) -> str:
        return (f"app {self.newcomer}: {self.newcomer_label} {self.newcomer_rule.text!r} overlaps app "
                f"{self.established}'s {self.established_label} {self.established_rule.text!r} "
                f"({self.overlap}); {self.established} {self.why}, so it keeps the route and {self.newcomer} is "
                "not routed: change one of the rules so that no request can match both")


def _why(winner: Claim, loser: Claim) -> str:
    if winner.routed and not loser.routed:
        return "was routed first"
    if winner.created is not None and (loser.created is None or winner.created < loser.created):
        return "is older"
    return "comes first by name"


def contest(newcomer: Claim, established: Claim) -> list[Contest]:
    """Every pair of their rules that can match one request."""
    if newcomer.hosts is not None and established.hosts is not None and not newcomer.hosts & established.hosts:
        return []  # the common case, apps on hosts of their own, without comparing rule by rule
    found = []
    for label, rule in newcomer.rules:
        for other_label, other_rule in established.rules:
            overlap = conflict(rule, other_rule)
            if overlap is not None:
                found.append(Contest(newcomer.name, label, rule, established.name, other_label, other_rule, overlap,
                                     _why(established, newcomer)))
    return found


def arbitrate(claims: Iterable[Claim]) -> dict[str, list[Contest]]:
    """The apps that may not route, each with the contests it lost.

    Apps are taken by seniority (routed before, then older, then by name); an app loses to
    every more senior app that keeps its routing and overlaps it. An app that lost keeps nothing,
    so it blocks no one.
    """
    kept: list[Claim] = []
    lost: dict[str, list[Contest]] = {}
    for claim in sorted(claims, key=lambda c: c.seniority):
        contests = [c for winner in kept for c in contest(claim, winner)]
        if contests:
            lost[claim.name] = contests
        else:
            kept.append(claim)
    return lost


# --- Host allowances: which hosts an app may claim ---------------------------------------------

_HOST_PATTERN = re.compile(r"^(?:\*\.)?[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*$")
_KEY = re.compile(r"^[A-Za-z0-9_.*?-]+$")


def host_pattern_problem(pattern: str) -> str | None:
    """Why `pattern` is not a host pattern (`*`, `host.example.com`, `*.example.com`), or None."""
    if pattern == "*" or _HOST_PATTERN.match(pattern):
        return None
    return "expected *, a host name such as shop.example.com, or *.example.com"


def allowance_key_problem(key: str) -> str | None:
    """Why `key` cannot name apps (an app name, or a glob over app or service names), or None."""
    if _KEY.match(key):
        return None
    return "expected an app name or a glob over app or service names, such as shop_* (letters, digits, _ . - * ?)"


def host_allowed(host: str, pattern: str) -> bool:
    """Whether `host` (as a clause holds it) is allowed by `pattern`; `*.example.com` allows any subdomain."""
    if pattern == "*":
        return True
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return host == pattern


@dataclass(frozen=True)
class Allowance:
    """The hosts an app may claim: the first entry whose key matches it, and that entry's patterns."""

    key: str
    patterns: tuple[str, ...]


def allowance_for(entries: Mapping[str, Sequence[str]], app: str, services: Sequence[str]) -> Allowance | None:
    """The entry that covers the app: the first key (in the operator's order) that matches its name or
    all of its services' names (a stack glob must cover both colors). None when no key matches."""
    for key, patterns in entries.items():
        if fnmatch.fnmatchcase(app, key) or (services and all(fnmatch.fnmatchcase(s, key) for s in services)):
            return Allowance(key, tuple(patterns))
    return None


def allowance_problems(app: str, rules: Iterable[tuple[str, Rule]], entries: Mapping[str, Sequence[str]] | None,
                       services: Sequence[str] = ()) -> list[str]:
    """Why the app's rules claim hosts its allowance does not grant (none without `hosts` in the config)."""
    if entries is None:
        return []
    allowance = allowance_for(entries, app, services)
    if allowance is None:
        return [f"app {app}: no entry of hosts covers it (keys: {', '.join(entries) or 'none'}); the config "
                "decides which hosts an app may route: add its name, a glob over its services, or \"*\""]
    if "*" in allowance.patterns:
        return []
    allowed = ", ".join(allowance.patterns)
    problems = []
    for label, rule in rules:
        for clause in clauses(rule):
            if clause.host is None:
                problems.append(f"app {app}: {label} {rule.text!r} can match any host; hosts[{allowance.key!r}] "
                                f"allows only {allowed}: pin every alternative of the rule with Host(`…`)")
                break
            if not any(host_allowed(clause.host, p) for p in allowance.patterns):
                problems.append(f"app {app}: {label} {rule.text!r} routes host {clause.host!r}, which "
                                f"hosts[{allowance.key!r}] does not allow (allowed: {allowed})")
    return list(dict.fromkeys(problems))


@dataclass(frozen=True)
class Board:
    """Every app's claim as last discovered: what one app's rules are checked against."""

    claims: Mapping[str, Claim] = field(default_factory=dict)

    @functools.cached_property
    def lost(self) -> dict[str, list[Contest]]:
        # Every app's tick asks; the arbitration changes only with the board.
        return arbitrate(self.claims.values())

    def updated(self, claim: Claim | None, name: str) -> Board:
        """The board with the app's entry replaced by `claim` (None: the app claims nothing)."""
        if self.claims.get(name) == claim:
            return self
        claims = {n: c for n, c in self.claims.items() if n != name}
        return Board({**claims, name: claim} if claim is not None else claims)

    def contests(self, claim: Claim) -> list[Contest]:
        """The contests `claim` loses against the other apps on the board (its own entry replaced by it)."""
        if self.claims.get(claim.name) == claim:
            return self.lost.get(claim.name, [])
        others = [c for name, c in self.claims.items() if name != claim.name]
        return arbitrate([*others, claim]).get(claim.name, [])
