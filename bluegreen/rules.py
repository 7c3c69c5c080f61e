"""Traefik v3's rule grammar, and `Rule`: a rule parsed once, at discovery, with the hosts it names.

Traefik drops a router whose rule does not parse, and with it the app's traffic; the file itself
is still valid, so Traefik would not even keep the old config. Rules are therefore checked here,
with Traefik v3's grammar: matchers joined by &&, || and !, with parentheses. Probes, routers and
the config check read a `Rule`'s hosts; nothing parses an app's rule again.

Rules come from service labels, which anyone who deploys a stack writes, so the parser is
bounded: a rule has at most `MAX_RULE_CHARS` characters and nests `!` and parentheses at most
`MAX_DEPTH` deep, and holds no control characters but whitespace. `parse_rule` raises only RuleError, whatever
the text: a hostile rule breaks its own app, never the parser (no RecursionError).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_MATCHER_ARITY = {
    "Host": (1, 1), "HostRegexp": (1, 1), "Path": (1, 1), "PathPrefix": (1, 1), "PathRegexp": (1, 1),
    "Method": (1, 1), "Header": (2, 2), "HeaderRegexp": (2, 2), "Query": (1, 2), "QueryRegexp": (1, 2),
    "ClientIP": (1, 1),
}
MAX_RULE_CHARS = 1000  # Traefik's own examples are a few dozen characters; a label is not a program
MAX_DEPTH = 16  # nested `!` and parentheses: far below Python's recursion limit, far above any real rule
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")  # whitespace between tokens is fine
_TOKEN = re.compile(r"\s*(?:(?P<op>&&|\|\||!|\(|\)|,)|(?P<name>[A-Za-z]+)|`(?P<bq>[^`]*)`|\"(?P<dq>(?:[^\"\\]|\\.)*)\")")


class RuleError(ValueError):
    """A rule that Traefik would refuse."""


@dataclass(frozen=True)
class Matcher:
    name: str
    args: tuple[str, ...]


@dataclass(frozen=True)
class Not:
    inner: RuleNode


@dataclass(frozen=True)
class AllOf:
    items: tuple[RuleNode, ...]


@dataclass(frozen=True)
class AnyOf:
    items: tuple[RuleNode, ...]


RuleNode = Matcher | Not | AllOf | AnyOf


def parse_rule(text: str) -> RuleNode:
    """The rule's syntax tree, or RuleError naming the first problem.

    `{{` and `}}` are refused anywhere: Traefik's file provider reads every file as a Go
    template, so a rule holding them would be rendered (or break the whole file) there.
    """
    if not isinstance(text, str):
        raise RuleError(f"expected the rule as text (got {type(text).__name__})")
    if len(text) > MAX_RULE_CHARS:
        raise RuleError(f"the rule has {len(text)} characters; at most {MAX_RULE_CHARS} are allowed")
    if (control := _CONTROL.search(text)) is not None:
        raise RuleError(f"control character {control.group()!r} at character {control.start() + 1}")
    for delimiter in ("{{", "}}"):
        if delimiter in text:
            raise RuleError(f"{delimiter!r} is a Go template delimiter, which Traefik's file provider would expand")
    tokens: list[tuple[str, str]] = []
    pos = 0
    stripped = text.rstrip()
    while pos < len(stripped):
        match = _TOKEN.match(stripped, pos)
        if not match:
            pos += len(stripped[pos:]) - len(stripped[pos:].lstrip())
            raise RuleError(f"unexpected {stripped[pos:pos + 10]!r} at character {pos + 1}")
        if match.group("op"):
            tokens.append(("op", match.group("op")))
        elif match.group("name"):
            tokens.append(("name", match.group("name")))
        else:
            tokens.append(("str", match.group("bq") if match.group("bq") is not None else match.group("dq")))
        pos = match.end()
    if not tokens:
        raise RuleError("the rule is empty")
    parser = _RuleParser(tokens)
    node = parser.expression()
    if parser.pos != len(tokens):
        raise RuleError(f"unexpected {tokens[parser.pos][1]!r} after a complete rule")
    return node


class _RuleParser:
    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.tokens, self.pos = tokens, 0
        self.depth = 0  # `!` and parentheses open around the current position

    def _deeper(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise RuleError(f"the rule nests ! and parentheses more than {MAX_DEPTH} deep")

    def _peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _take(self, kind: str, value: str | None = None) -> str:
        token = self._peek()
        if token is None or token[0] != kind or (value is not None and token[1] != value):
            want = value or {"name": "a matcher", "str": "a quoted value"}.get(kind, kind)
            got = "the end of the rule" if token is None else repr(token[1])
            raise RuleError(f"expected {want}, found {got}")
        self.pos += 1
        return token[1]

    def expression(self) -> RuleNode:
        items = [self._conjunction()]
        while self._peek() == ("op", "||"):
            self.pos += 1
            items.append(self._conjunction())
        return items[0] if len(items) == 1 else AnyOf(tuple(items))

    def _conjunction(self) -> RuleNode:
        items = [self._unary()]
        while self._peek() == ("op", "&&"):
            self.pos += 1
            items.append(self._unary())
        return items[0] if len(items) == 1 else AllOf(tuple(items))

    def _unary(self) -> RuleNode:
        if self._peek() == ("op", "!"):
            self.pos += 1
            self._deeper()
            node: RuleNode = Not(self._unary())
            self.depth -= 1
            return node
        if self._peek() == ("op", "("):
            self.pos += 1
            self._deeper()
            node = self.expression()
            self._take("op", ")")
            self.depth -= 1
            return node
        name = self._take("name")
        if name not in _MATCHER_ARITY:
            raise RuleError(f"unknown matcher {name} (Traefik v3 knows {', '.join(sorted(_MATCHER_ARITY))})")
        self._take("op", "(")
        args = [self._take("str")]
        while self._peek() == ("op", ","):
            self.pos += 1
            args.append(self._take("str"))
        self._take("op", ")")
        low, high = _MATCHER_ARITY[name]
        if not low <= len(args) <= high:
            want = str(low) if low == high else f"{low} or {high}"
            raise RuleError(f"{name} takes {want} argument{'s' if high > 1 else ''}, got {len(args)}")
        if any(not arg for arg in args):
            raise RuleError(f"{name} has an empty argument")
        return Matcher(name, tuple(args))


def rule_hosts(node: RuleNode) -> tuple[str, ...] | None:
    """The host names of a rule made only of Host matchers joined by ||, else None."""
    if isinstance(node, Matcher):
        return node.args if node.name == "Host" else None
    if isinstance(node, AnyOf):
        hosts: list[str] = []
        for item in node.items:
            found = rule_hosts(item)
            if found is None:
                return None
            hosts.extend(found)
        return tuple(hosts)
    return None


@dataclass(frozen=True)
class Rule:
    """A Traefik rule as the operator wrote it, with its syntax tree; equal when the text is."""

    text: str
    node: RuleNode = field(compare=False, repr=False)

    @classmethod
    def parse(cls, text: str) -> Rule:
        """The rule, or RuleError naming the first problem."""
        return cls(text, parse_rule(text))

    @property
    def hosts(self) -> tuple[str, ...] | None:
        """The host names of a rule made only of Host matchers joined by ||, else None."""
        return rule_hosts(self.node)

    @property
    def first_host(self) -> str | None:
        hosts = self.hosts
        return hosts[0] if hosts else None

    def narrowed(self, header: str, value: str) -> Rule:
        """This rule, matching only requests that also carry `header: value`."""
        return Rule(f"({self.text}) && Header(`{header}`, `{value}`)",
                    AllOf((self.node, Matcher("Header", (header, value)))))

    def __str__(self) -> str:
        return self.text
