"""The HTTP edges both daemons share, one guard per test: tokens as bytes, bounded JSON, checked queries, the 500 body.

Requests go out as raw bytes (tests/support/http_fuzz.py), so that headers no `str` can carry
(latin-1, invalid UTF-8, several of one name) reach the server as a client would send them.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from swarmshift.http import (
    MAX_DEPTH,
    QUERY,
    TokenFile,
    accepts,
    authenticated,
    bearer,
    depth,
    new_app,
    read_json,
    whole_number,
)
from tests.support.http_fuzz import RIGHT, Hostile, nested, send_raw

TOKEN_HEADER = ("Authorization", RIGHT)


@authenticated
async def echo(request: web.Request) -> web.Response:
    return web.json_response({"got": await read_json(request)})


@accepts(limit=whole_number(1, 100))
async def listing(request: web.Request) -> web.Response:
    return web.json_response({"query": request[QUERY]})


async def crash(request: web.Request) -> web.Response:
    raise RuntimeError("secret path /etc/swarmshift/token.yml")


def ask(tmp_path, *requests: Hostile) -> list[tuple[int, dict]]:
    """Each request's status and JSON body, from an app with the shared helpers and three routes."""
    (tmp_path / "token").write_text("s3cret\n")

    async def main():
        app = new_app(CollectorRegistry(), TokenFile(tmp_path / "token"))
        app.router.add_post("/echo", echo)
        app.router.add_get("/list", listing)
        app.router.add_get("/crash", crash)
        server = TestServer(app)
        await server.start_server()
        try:
            answers = [await send_raw(server.host, server.port, r) for r in requests]
        finally:
            await server.close()
        return [(a.status, json.loads(a.body) if a.body.startswith(b"{") else {"text": a.body}) for a in answers]

    return asyncio.run(main())


def post(body: bytes | None = b"{}", *headers: tuple[str, bytes]) -> Hostile:
    return Hostile("POST", "/echo", tuple(headers), body)


@pytest.mark.parametrize("header", [
    b"Bearer s3cr\xe9t", b"Bearer s3cret\xff", b"Bearer \xc3\x28", b"\x80", b"Bearer", b"Bearer ", b"Bearer   ",
    b"Basic s3cret", b"s3cret", b"Bearer " + b"x" * 7000,
])
def test_an_undecodable_or_malformed_authorization_header_is_401_never_500(tmp_path, header):
    [(status, body)] = ask(tmp_path, post(b"{}", ("Authorization", header)))
    assert (status, body) == (401, {"error": "missing or wrong bearer token"})


def test_a_header_too_large_for_aiohttp_is_its_400(tmp_path):
    [(status, _)] = ask(tmp_path, post(b"{}", ("Authorization", b"Bearer " + b"x" * 9000)))
    assert status == 400


def test_several_authorization_headers_are_400_even_when_one_is_right(tmp_path):
    answers = ask(tmp_path, post(b"{}", TOKEN_HEADER, ("Authorization", b"Bearer x")),
                  post(b"{}", ("Authorization", b"Bearer x"), TOKEN_HEADER), post(b"{}", TOKEN_HEADER, TOKEN_HEADER))
    assert answers == [(400, {"error": "Authorization: send one header, not 2"})] * 3


def test_the_token_is_compared_as_the_bytes_sent(tmp_path):
    (tmp_path / "token").write_text("s3crét\n")
    checker = TokenFile(tmp_path / "token")
    assert checker.matches("Bearer s3crét") and checker.matches("bearer   s3crét ")
    # What aiohttp hands over for the latin-1 byte é (\xe9): a surrogate, which is not the UTF-8 é.
    assert not checker.matches("Bearer s3cr\udce9t")
    assert not checker.matches("Bearer s3cr\ud800t")  # a surrogate no wire byte gives: refused, not raised
    assert bearer("Bearer \udcff") == b"\xff"


def test_json_nested_deeper_than_32_levels_is_400(tmp_path):
    answers = ask(tmp_path, *(post(nested(n, opener), TOKEN_HEADER) for n in (MAX_DEPTH, MAX_DEPTH + 1, 100_000)
                              for opener in ("[", '{"a":')), post(b"[" * 100_000, TOKEN_HEADER))
    assert [status for status, _ in answers] == [200, 200, 400, 400, 400, 400, 400]
    assert answers[2][1] == {"error": "malformed JSON: nested deeper than 32 levels"}
    assert depth(json.loads(nested(MAX_DEPTH, "["))) == MAX_DEPTH and depth(1) == 0 and depth([]) == 1


@pytest.mark.parametrize(("body", "error"), [
    (b"1" * 5000, "malformed JSON: a number of 5000 characters (at most 64)"),
    (b"NaN", "malformed JSON: NaN is not JSON"),
    (b'{"a": -Infinity}', "malformed JSON: -Infinity is not JSON"),
    (b'{"a": "\xc3\x28"}', "malformed JSON: not UTF-8 (invalid continuation byte at byte 7)"),
    (b"{nope", "malformed JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"),
])
def test_json_python_reads_but_no_client_should_send_is_400(tmp_path, body, error):
    assert ask(tmp_path, post(body, TOKEN_HEADER)) == [(400, {"error": error})]


def test_a_body_that_is_not_its_content_encoding_is_400(tmp_path):
    [(status, body)] = ask(tmp_path, post(b"not gzip", TOKEN_HEADER, ("Content-Encoding", b"gzip")))
    assert (status, body) == (400, {"error": "unreadable body: it does not decode as Content-Encoding 'gzip'"})


def test_the_body_is_bounded(tmp_path):
    [(status, _)] = ask(tmp_path, post(b'"' + b"x" * (1024 * 1024) + b'"', TOKEN_HEADER))
    assert status == 413


@pytest.mark.parametrize(("query", "problem"), [
    ("limit=%C2%B2", "query.limit: expected a whole number from 1 to 100 (got '²')"),
    ("limit=%D9%A3", "query.limit: expected a whole number from 1 to 100 (got '٣')"),
    ("limit=0", "query.limit: expected a whole number from 1 to 100 (got '0')"),
    ("limit=101", "query.limit: expected a whole number from 1 to 100 (got '101')"),
    ("limit=" + "9" * 5000, "query.limit: expected a whole number from 1 to 100 (got '" + "9" * 119 + "... (5002 characters))"),
    ("limit=", "query.limit: expected a whole number from 1 to 100 (got '')"),
    ("limit=1&limit=2", "query.limit: given 2 times (got ['1', '2'])"),
    ("servce=web", "query.servce: unknown parameter (got 'web')"),
])
def test_every_query_parameter_is_checked_and_a_bad_one_named_with_its_value(tmp_path, query, problem):
    [(status, body)] = ask(tmp_path, Hostile("GET", f"/list?{query}"))
    assert status == 400
    assert body == {"error": "bad query string", "problems": [problem], "accepted": ["limit"]}


def test_a_good_query_is_parsed_and_routes_without_parameters_take_none(tmp_path):
    answers = ask(tmp_path, Hostile("GET", "/list?limit=7"), Hostile("GET", "/list"), Hostile("GET", "/healthz?x=1"),
                  Hostile("GET", "/metrics?name[]=up"))
    assert answers[:2] == [(200, {"query": {"limit": 7}}), (200, {"query": {}})]
    assert [status for status, _ in answers[2:]] == [400, 400]


def test_the_token_is_checked_before_the_query_and_before_100_continue(tmp_path):
    answers = ask(tmp_path, Hostile("POST", "/echo?x=1", (), b"{}"),
                  Hostile("POST", "/echo", (("Expect", b"100-continue"),), b"{}"),
                  Hostile("POST", "/echo?x=1", (TOKEN_HEADER,), b"{}"))
    assert [status for status, _ in answers] == [401, 401, 400]


def test_an_undecodable_expect_header_is_417_on_any_path(tmp_path):
    answers = ask(tmp_path, Hostile("GET", "/healthz", (("Expect", b"\xff"),)),
                  Hostile("GET", "/nosuch", (("Expect", b"\xff"),)),
                  Hostile("POST", "/echo", (TOKEN_HEADER, ("Expect", b"100-continue")), b'{"a": 1}'))
    assert answers[0] == (417, {"error": "the only expectation understood is 100-continue"})
    assert answers[1][0] == 417
    assert answers[2] == (200, {"got": {"a": 1}})


def test_a_500_says_only_internal_error_and_the_log_has_the_request_id_and_the_traceback(tmp_path):
    with capture_logs() as logged:
        [(status, body)] = ask(tmp_path, Hostile("GET", "/crash"))
    assert status == 500 and set(body) == {"error", "request_id"} and body["error"] == "internal error"
    [line] = [e for e in logged if e["event"] == "http_handler_failed"]
    assert line["request_id"] == body["request_id"] and line["path"] == "/crash"
    assert "secret" not in json.dumps(body)
