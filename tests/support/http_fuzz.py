"""Hostile HTTP requests for fuzzing both daemons' APIs: hypothesis strategies, and one sender that talks bytes.

A request is plain data (`Hostile`); `send` delivers it through aiohttp's test client, or, when a
header holds bytes no `str` can carry (latin-1, invalid UTF-8), over a raw socket to the same
test server. Both return `Answer`: the status and the body as bytes.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, field, replace
from urllib.parse import quote

import aiohttp
from aiohttp.test_utils import TestClient
from hypothesis import strategies as st

TOKEN = "s3cret"
RIGHT = f"Bearer {TOKEN}".encode()

# What no answer may contain: a Python traceback, or the repr of an internal exception.
TRACEBACK_MARKS = (b"Traceback (most recent call last)", b'File "/', b"site-packages")


@dataclass(frozen=True)
class Hostile:
    method: str
    target: str  # path and query, percent-encoded as sent on the wire
    headers: tuple[tuple[str, bytes], ...] = ()
    body: bytes | None = None
    canonical: bool = False  # the route's own method and path (with a plain app name): it must be routed

    @property
    def authorizations(self) -> list[bytes]:
        return [v for k, v in self.headers if k.lower() == "authorization"]

    @property
    def right_token(self) -> bool:
        # RFC 6750 and 7235: the scheme is case-insensitive, and one or more spaces follow it.
        return len(self.authorizations) == 1 and re.fullmatch(
            rb"(?i:bearer) [ \t]*" + TOKEN.encode() + rb"[ \t]*", self.authorizations[0]) is not None

    def __repr__(self) -> str:  # hypothesis prints this for a failing example
        body = None if self.body is None else (self.body[:200] + b"..." if len(self.body) > 200 else self.body)
        return f"Hostile({self.method} {self.target[:300]!r} headers={self.headers!r} body={body!r})"


@dataclass
class Answer:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


# -- strategies ---------------------------------------------------------------------------------

METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
# Characters that break naive parsers: non-ASCII digits, a lone surrogate's neighbours, RTL, NUL.
TRICKY = "²٣١０ \t\x00\x7f\u202eé中\U0001f600%&=+;/?#\\\"'<>{}[]"
texts = st.text(alphabet=st.characters(codec="utf-8") | st.sampled_from(TRICKY), max_size=16)
numbers = st.one_of(st.integers(-10**6, 10**7).map(str), st.sampled_from(["", "0", "1", "²", "٣", "１０", "1e3",
                                                                          "0x10", " 5", "5 ", "+5", "-1", "9" * 5000]))


def _quote_segment(text: str) -> str:
    return quote(text, safe="")


# Pools of hand-picked hostile parts: hypothesis combines them (and shrinks to the fewest), and
# the random branches beside them add what nobody thought of. Drawing from a pool is one choice,
# which keeps a thousand examples per endpoint within seconds on a shared machine.
APPS = ["web", "nosuch", "WEB", "web-blue", "a" * 64, "-x", "%2e%2e", "%ff", "%C0%AF", "%00", "%F0%9F%98%80",
        "%C2%B2", "web%20x", "web;x", "web%3Fx=1", "shop-1"]
SUFFIXES = ["", "", "", "/", "//", "/x", "/%2F", "/%00", "/..", ";x", "/deploy", "%20"]
RAW_QUERIES = ["", "", "", "?", "?&", "?=", "?=x", "?limit", "?limit=", "?limit=%ff", "?limit=%C2%B2", "?limit=0",
               "?limit=1", "?limit=-1", "?limit=1e3", "?limit=%EF%BC%91", "?limit=" + "9" * 5000, "?limit=1&limit=2",
               "?service=api", "?service=%C0%AF", "?service=" + "a" * 300, "?service=a%00b", "?%ZZ=1", "?x=1",
               "?" + "a=1&" * 500, "?limit=2&service=api", "?app=web", "?service=api&x"]


def paths(template: str) -> st.SearchStrategy[tuple[str, bool]]:
    """The route's path with `{app}` filled in, or mutated; True when it is the route itself."""
    def fill(app: str, suffix: str) -> tuple[str, bool]:
        plain = app in ("web", "nosuch", "shop-1") and not suffix
        return template.replace("{app}", app) + suffix, plain or ("{app}" not in template and not suffix)

    apps = st.one_of(st.sampled_from(APPS), texts.filter(lambda t: t not in ("", ".", "..")).map(_quote_segment))
    return st.builds(fill, apps, st.sampled_from(SUFFIXES))


def queries(known: tuple[str, ...]) -> st.SearchStrategy[str]:
    keys = st.one_of(st.sampled_from([*known, "x", "limit", "service", "app"]), texts)
    values = st.one_of(numbers, texts)

    def encode(items: list[tuple[str, str]]) -> str:
        return "?" + "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in items)

    return st.one_of(st.sampled_from(RAW_QUERIES), st.lists(st.tuples(keys, values), min_size=1, max_size=3).map(encode))


AUTHORIZATIONS = [(), (), (RIGHT,), (RIGHT,), (b"Bearer",), (b"Bearer ",), (b"Bearer  " + TOKEN.encode(),),
                  (b"bearer " + TOKEN.encode(),), (b"Basic " + TOKEN.encode(),), (TOKEN.encode(),),
                  (b"Bearer " + TOKEN.encode() + b"x",), (b"Bearer s3cr\xe9t",), (b"Bearer \xff\xfe",),
                  (b"Bearer \xc3\x28",), (b"\x80",), (b"Bearer " + b"x" * 7000,), (b"Bearer " + b"x" * 9000,),
                  ("Bearer s3crét".encode(),), (RIGHT, RIGHT), (RIGHT, b"Bearer x"), (b"Bearer x", RIGHT),
                  (b"Bearer \t" + TOKEN.encode(),), (b"Bearer " + TOKEN.encode() + b"\xff",)]


def authorizations() -> st.SearchStrategy[tuple[bytes, ...]]:
    """Authorization headers: none, right, wrong, malformed, undecodable, huge, several."""
    random = st.binary(max_size=40).filter(lambda b: not any(c in b for c in b"\r\n\x00")).map(
        lambda b: (b"Bearer " + b,))
    return st.one_of(st.sampled_from(AUTHORIZATIONS), random)


HEADERS = [(), (), (), (("Content-Type", b"application/json"),), (("Content-Type", b"text/plain; charset=latin-1"),),
           (("Content-Encoding", b"gzip"),), (("Content-Encoding", b"br"),), (("Expect", b"100-continue"),),
           (("Expect", b"\xff"),), (("Expect", b"nothing"),), (("Accept", b"\xff\xfe"),), (("X-Request-Id", b"x" * 7000),),
           (("Cookie", b"a=\x80"),), (("Transfer-Encoding", b"chunked"),), (("Content-Type", b"a"), ("Content-Type", b"b"))]


def other_headers() -> st.SearchStrategy[tuple[tuple[str, bytes], ...]]:
    random = texts.filter(lambda t: not any(c in t for c in "\r\n\x00")).map(lambda t: (("X-Fuzz", t.encode()),))
    return st.one_of(st.sampled_from(HEADERS), random)


def _json() -> st.SearchStrategy:
    leaves = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), texts)
    return st.recursive(leaves, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
                        max_leaves=8)


ALERT_LABELS = ["alertname", "service", "swarmshift_action", "step", "swarmshift_app", "severity"]


def alertmanager() -> st.SearchStrategy:
    """Alertmanager-shaped payloads: the right keys, with right, wrong and random values, and random extras."""
    label_values = st.one_of(st.sampled_from(["api", "web", "nosuch", "scale_up", "scale_down", "1", "²", "0", "-1",
                                              "9" * 5000, "HighLoad"]), texts)
    labels = st.dictionaries(st.one_of(st.sampled_from(ALERT_LABELS), texts), label_values, max_size=5)
    odd = st.sampled_from([None, 1, [], {}, "", True, 1.5])
    alert = st.fixed_dictionaries(
        {"status": st.one_of(st.sampled_from(["firing", "firing", "resolved", "pending"]), odd),
         "labels": st.one_of(labels, labels, odd)},
        optional={"annotations": st.one_of(st.dictionaries(texts, texts, max_size=2), odd),
                  "startsAt": st.sampled_from(["2026-12-01T17:00:00Z", "", "not a time", None, 0]),
                  "fingerprint": st.one_of(texts, odd), "generatorURL": texts, "extra": _json()},
    )
    return st.fixed_dictionaries(
        {"version": st.sampled_from(["4", "4", "3", 4, None]), "status": st.sampled_from(["firing", "resolved", "x"]),
         "alerts": st.one_of(st.lists(alert, max_size=3), odd)},
        optional={"receiver": texts, "groupKey": texts, "commonLabels": labels, "truncatedAlerts": st.integers()},
    )


def operations() -> st.SearchStrategy:
    """Bodies shaped like deploy, switch and rollback requests."""
    return st.one_of(
        st.fixed_dictionaries({}, optional={"image": st.one_of(st.sampled_from(["web:2", "", " ", "a b"]), texts,
                                                               _json())}),
        st.fixed_dictionaries({}, optional={"to": st.one_of(st.sampled_from(["blue", "green", "red"]), _json()),
                                            "force": st.one_of(st.booleans(), _json())}),
        st.dictionaries(texts, _json(), max_size=3),
    )


def nested(depth: int, opener: str) -> bytes:
    close = {"[": "]", '{"a":': "}"}[opener]
    return (opener * depth + "1" + close * depth).encode()


BODIES = [None, b"", b"{", b"[" * 100_000, b"\xff\xfe{}", b"\x00", b"1" * 5000, b"-" + b"9" * 5000, b"1e999",
          b"NaN", b'{"a": Infinity}', b'"\\ud800"', b'{"a":1,"a":2}', b"\xef\xbb\xbf{}", b"null", b"[]",
          b'{"image": "web:2"}', b'{"image": "web:2", "x": 1}', b'{"to": "green", "force": true}', b'{"to": "red"}',
          b'"' + b"x" * (1024 * 1024) + b'"', b" " * (1024 * 1024 + 1)]
BODIES += [nested(n, opener) for n in (31, 32, 33, 1000, 100_000) for opener in ("[", '{"a":')]


def bodies(shaped: st.SearchStrategy) -> st.SearchStrategy[bytes | None]:
    """Bodies for a route: any bytes, any JSON, JSON shaped like the route's own, deep nesting, edge cases."""
    as_json = st.one_of(_json(), shaped).map(lambda v: json.dumps(v).encode())
    return st.one_of(st.none(), st.sampled_from(BODIES), st.binary(max_size=100), as_json, as_json)


def hostile(method: str, template: str, known_query: tuple[str, ...] = ()) -> st.SearchStrategy[Hostile]:
    """Requests aimed at one route: mostly its own method, with any path under it, query, headers and body."""
    shaped = alertmanager() if template.endswith("/alerts") else operations() if "{app}/" in template else _json()

    def build(m: str, path: tuple[str, bool], query: str, auth: tuple[bytes, ...],
              extra: tuple[tuple[str, bytes], ...], body: bytes | None) -> Hostile:
        headers = tuple(("Authorization", a) for a in auth) + tuple(
            (k, v) for k, v in extra if k != "Transfer-Encoding" or body is None)
        return Hostile(m, path[0] + query, headers, body, canonical=path[1] and m == method)

    return st.builds(build, st.sampled_from([method] * 4 + METHODS), paths(template),
                     queries(known_query), authorizations(), other_headers(), bodies(shaped))


# -- sending ------------------------------------------------------------------------------------


def _printable(value: bytes) -> bool:
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    # What aiohttp's client agrees to send; anything else goes out raw.
    return all(c == "\t" or " " <= c < "\x7f" or c > "\x9f" for c in text)


async def send(client: TestClient, req: Hostile) -> Answer:
    """Deliver `req`; through the test client when a str can carry every header, else as raw bytes."""
    if all(_printable(v) for _, v in req.headers):
        from multidict import CIMultiDict
        from yarl import URL

        headers = CIMultiDict((k, v.decode("utf-8")) for k, v in req.headers)
        url = client.make_url("/").with_path("/", encoded=True)
        url = URL(str(url).rstrip("/") + req.target, encoded=True)
        try:
            async with client.session.request(req.method, url, headers=headers, data=req.body,
                                              skip_auto_headers=("Content-Type",)) as resp:
                return Answer(resp.status, await resp.read(), dict(resp.headers))
        except aiohttp.ClientResponseError:
            pass  # aiohttp's client cannot read the server's answer to a request it refused outright: read it raw
    try:
        return await send_raw(client.host, client.port, req)
    except (ConnectionResetError, BrokenPipeError):
        # The server refused the head and closed while the body was on its way, which resets the
        # connection and loses the answer: ask again without the body to read it.
        return await send_raw(client.host, client.port, replace(req, body=None))


async def send_raw(host: str, port: int, req: Hostile) -> Answer:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        body = req.body or b""
        head = [f"{req.method} {req.target} HTTP/1.1".encode(), f"Host: {host}:{port}".encode(), b"Connection: close"]
        head += [k.encode() + b": " + v for k, v in req.headers]
        if req.body is not None:
            head.append(f"Content-Length: {len(body)}".encode())
        writer.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        await writer.drain()
        raw = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    return parse_raw(raw)


def parse_raw(raw: bytes) -> Answer:
    head, _, body = raw.partition(b"\r\n\r\n")
    while head.startswith(b"HTTP/1.1 1"):  # 100 Continue before the answer
        head, _, body = body.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.decode("latin-1").partition(":")
        headers[k.strip()] = v.strip()
    if headers.get("Transfer-Encoding", "").lower() == "chunked":
        out, rest = b"", body
        while rest:
            size, _, rest = rest.partition(b"\r\n")
            n = int(size.split(b";")[0] or b"0", 16)
            if n == 0:
                break
            out, rest = out + rest[:n], rest[n + 2:]
        body = out
    return Answer(status, body, headers)
