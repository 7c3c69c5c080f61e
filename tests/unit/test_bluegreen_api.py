"""The operator CLI: exit codes, tables and progress, over recorded controller answers.

The CLI is a client of the controller's HTTP API; these tests pin how it maps answers to exit
codes and output. The API itself and the CLI against the real controller are tested on the lab
(tests/lab/test_bluegreen_lab.py).
"""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner

from bluegreen.cli import bluegreen, render_status
from bluegreen.client import token_from_env

AUTH = {"Authorization": "Bearer s3cret"}


# --- the operator CLI --------------------------------------------------------------------------


class Canned:
    """A stand-in controller on 127.0.0.1 answering each path with a canned status and body."""

    def __init__(self, answers: dict[tuple[str, str], tuple[int, object]]) -> None:
        self.requests: list[tuple[str, str, dict, object]] = []
        canned = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
                canned.requests.append((self.command, self.path, dict(self.headers), json.loads(raw) if raw else None))
                answer = answers.get((self.command, self.path), (404, {"error": "no such path"}))
                if isinstance(answer, list):  # a sequence: each request takes the next, the last one stays
                    answer = answer.pop(0) if len(answer) > 1 else answer[0]
                status, body = answer
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _answer  # noqa: N815 - http.server's names

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def view(phase="Stable", health="healthy", result="succeeded", deploy_id="web-1", degraded=()):
    color = {"image": "web:1", "running": 2, "replicas": 2, "weight": 100}
    return {"app": "web", "active": "blue", "phase": phase, "health": health, "result": result, "reason": "",
            "degraded": list(degraded), "colors": {"blue": color, "green": {**color, "image": "web:2", "weight": 0}},
            "deploy": {"id": deploy_id, "operation": "deploy", "reason": "checks failed"}}


def cli(server_url: str, *args: str, env: dict | None = None):
    return CliRunner().invoke(bluegreen, list(args), env={"SWARMSHIFT_CONTROLLER": server_url,
                                                          "SWARMSHIFT_TOKEN": "s3cret", **(env or {})})


@pytest.fixture
def canned():
    servers: list[Canned] = []

    def make(answers):
        servers.append(Canned(answers))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def test_exit_codes_say_what_happened(canned):
    accepted = {"phase": "Preparing", "deploy": {"id": "web-1", "operation": "deploy", "image": "web:2",
                                                 "target": "green"}}
    server = canned({
        ("POST", "/v1/apps/web/deploy"): (202, accepted),
        ("POST", "/v1/apps/web/switch"): (422, {"error": "web: refusing to switch to green: …", "code": "unhealthy"}),
        ("POST", "/v1/apps/busy/deploy"): (409, {"error": "busy: deploy busy:2 is running", "code": "busy"}),
        ("POST", "/v1/apps/locked/rollback"): (401, {"error": "missing or wrong bearer token"}),
        ("GET", "/v1/apps/web"): (200, view()),
        ("GET", "/v1/apps"): (200, {"apps": [view(), view(health="degraded", degraded=["the last deploy failed"])]}),
    })
    deployed = cli(server.url, "deploy", "web", "--image", "web:2")
    assert deployed.exit_code == 0 and "deploy web-1 started: Preparing, web:2 on green" in deployed.output
    assert server.requests[0][2]["Authorization"] == "Bearer s3cret" and server.requests[0][3] == {"image": "web:2"}
    assert cli(server.url, "deploy", "web", "--image", "web:2", "--wait").exit_code == 0  # ends Stable, succeeded
    assert cli(server.url, "switch", "web").exit_code == 1
    assert cli(server.url, "deploy", "busy", "--image", "busy:3").exit_code == 1
    assert cli(server.url, "rollback", "locked").exit_code == 2
    assert cli(server.url, "deploy", "nosuch", "--image", "x").exit_code == 2  # 404: an unknown app
    assert cli(server.url, "deploy", "web").exit_code == 2  # --image is required
    assert cli(server.url, "status", "web").exit_code == 0
    status = cli(server.url, "status")
    assert status.exit_code == 1 and "web: the last deploy failed" in status.output
    as_json = cli(server.url, "status", "web", "--json")
    assert json.loads(as_json.output)["phase"] == "Stable"


def test_a_rolled_back_deploy_exits_1_with_wait(canned):
    server = canned({
        ("POST", "/v1/apps/web/deploy"): (202, {"phase": "Preparing", "deploy": {"id": "web-1"}}),
        ("GET", "/v1/apps/web"): (200, view(phase="RolledBack", result="rolled-back", health="degraded")),
    })
    done = cli(server.url, "deploy", "web", "--image", "web:2", "--wait")
    assert done.exit_code == 1 and "ended RolledBack (rolled-back); traffic on blue: checks failed" in done.output


def test_an_unreachable_controller_exits_3():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    for args in (["status"], ["deploy", "web", "--image", "web:2"], ["switch", "web"], ["rollback", "web"]):
        result = cli(url, *args)
        assert result.exit_code == 3, (args, result.output)
        assert f"cannot reach the controller at {url}" in result.output


def test_the_token_comes_from_the_environment_or_a_file(tmp_path):
    path = tmp_path / "token"
    path.write_text("from-file\n")
    assert token_from_env({"SWARMSHIFT_TOKEN": "t", "SWARMSHIFT_TOKEN_FILE": str(path)}) == "t"
    assert token_from_env({"SWARMSHIFT_TOKEN_FILE": str(path)}) == "from-file"
    assert token_from_env({}) is None
    with pytest.raises(ValueError, match="SWARMSHIFT_TOKEN_FILE: cannot read"):
        token_from_env({"SWARMSHIFT_TOKEN_FILE": str(tmp_path / "missing")})


def test_the_status_table():
    text = render_status([view(), {"app": "shop", "health": "degraded", "degraded": ["app shop: no green service"]}])
    lines = text.splitlines()
    assert lines[0].split() == ["APP", "ACTIVE", "PHASE", "HEALTH", "BLUE", "GREEN", "LAST"]
    assert lines[1].split() == ["web", "blue", "Stable", "healthy", "web:1", "2/2", "100%", "web:2", "2/2",
                                "deploy", "succeeded"]
    assert lines[2].split()[:4] == ["shop", "-", "-", "degraded"]
    assert lines[-1] == "shop: app shop: no green service"


def test_deploy_wait_on_a_tty_prints_each_phase(canned, monkeypatch):
    monkeypatch.setattr("bluegreen.cli._interactive", lambda: True)
    monkeypatch.setattr("bluegreen.cli.time.sleep", lambda seconds: None)
    phases = [("Preparing", "preparing web-green"), ("Waiting", "waiting for web-green: 0/2 tasks running"),
              ("Waiting", "waiting for web-green: 1/2 tasks running"), ("PreChecks", "probe 1/3 passed"),
              ("Verifying", "the router confirms blue=0 green=100"), ("Stable", "green verified")]
    views = [(200, {**view(phase=phase, result=None if phase != "Stable" else "succeeded"), "reason": reason})
             for phase, reason in phases]
    server = canned({("POST", "/v1/apps/web/deploy"): (202, {"phase": "Preparing", "deploy": {"id": "web-1"}}),
                     ("GET", "/v1/apps/web"): views})
    done = cli(server.url, "deploy", "web", "--image", "web:2", "--wait")
    lines = done.output.splitlines()
    assert done.exit_code == 0
    assert [line.split()[1] for line in lines[1:-1]] == ["Preparing", "Waiting", "PreChecks", "Verifying", "Stable"]
    assert lines[-1] == "web: deploy web-1 ended Stable; traffic on blue"


def paused_view(**changes):
    base = view(phase="Paused", result=None)
    return {**base, "since": "2026-12-01T19:00:00.000Z",
            "deploy": {**base["deploy"], "image": "web:2", "target": "green"},
            "gate": {"paused_since": "2026-12-01T19:00:00.000Z", "auto_promotion_at": None,
                     "promote": "swarmshift bluegreen promote web", "abort": "swarmshift bluegreen abort web"},
            **changes}


def test_promote_and_abort_exit_codes_and_lines(canned):
    accepted = {"phase": "Switching", "active": "blue", "deploy": {"id": "web-1", "operation": "deploy",
                                                                    "image": "web:2", "target": "green"}}
    server = canned({
        ("POST", "/v1/apps/web/promote"): (202, accepted),
        ("POST", "/v1/apps/web/abort"): (202, {**accepted, "phase": "Failed"}),
        ("POST", "/v1/apps/rest/promote"): (409, {"error": "rest: nothing to promote: the app is Stable; promote "
                                                           "goes on with a deploy that is Paused", "code": "phase"}),
        ("POST", "/v1/apps/rest/abort"): (409, {"error": "rest: nothing to abort: the app is Stable", "code": "phase"}),
        ("POST", "/v1/apps/locked/promote"): (401, {"error": "missing or wrong bearer token"}),
        ("GET", "/v1/apps/web"): (200, view()),
    })
    promoted = cli(server.url, "promote", "web")
    assert promoted.exit_code == 0
    assert promoted.output == "web: deploy web-1 promoted: Switching, web:2 on green\n"
    assert server.requests[0][:2] == ("POST", "/v1/apps/web/promote") and server.requests[0][3] == {}
    assert cli(server.url, "promote", "web", "--wait").exit_code == 0  # ends Stable, succeeded
    aborted = cli(server.url, "abort", "web")
    assert aborted.exit_code == 0 and aborted.output == "web: deploy web-1 aborted: Failed; traffic stays on blue\n"
    refused = cli(server.url, "promote", "rest")
    assert refused.exit_code == 1 and "nothing to promote: the app is Stable" in refused.output
    assert cli(server.url, "abort", "rest").exit_code == 1
    assert cli(server.url, "promote", "locked").exit_code == 2
    assert cli(server.url, "promote", "nosuch").exit_code == 2  # 404


def test_status_shows_a_paused_deploy_and_deploy_wait_says_what_it_waits_for(canned, monkeypatch):
    monkeypatch.setattr("bluegreen.cli.time.sleep", lambda seconds: None)
    server = canned({
        ("GET", "/v1/apps"): (200, {"apps": [paused_view()]}),
        ("POST", "/v1/apps/web/deploy"): (202, {"phase": "Preparing", "deploy": {"id": "web-1"}}),
        ("GET", "/v1/apps/web"): [(200, paused_view()), (200, paused_view()), (200, view())],
    })
    status = cli(server.url, "status")
    assert status.exit_code == 0  # Paused is not degraded
    assert status.output.splitlines()[1].split()[:4] == ["web", "blue", "Paused", "healthy"]
    assert ("web: Paused since 2026-12-01T19:00:00.000Z before switching to green (web:2): run `swarmshift bluegreen "
            "promote web` to go on, or `swarmshift bluegreen abort web` to fail the deploy") in status.output
    waited = cli(server.url, "deploy", "web", "--image", "web:2", "--wait")
    assert waited.exit_code == 0
    assert waited.stderr.count("web: Paused since") == 1  # once, when the wait begins, for a CI log


def test_status_shows_a_canary_its_window_and_its_last_analysis(canned):
    canary = {"color": "green", "weight": 5, "since": "2026-12-01T19:00:00.000Z", "analysis": 60.0, "elapsed": 12.5,
              "remaining": 47.5, "thresholds": None,
              "last": {"at": "2026-12-01T19:00:12.000Z", "window": 12.0, "requests": 48.0, "errors": 1.0,
                       "error_rate": 1 / 48, "latency": 0.042, "error": None}}
    down = {**canary, "last": {**canary["last"], "error": "Prometheus does not answer"}}
    server = canned({("GET", "/v1/apps"): (200, {"apps": [
        {**view(phase="Canary", result=None), "canary": canary, "app": "web"},
        {**view(phase="Canary", result=None), "canary": down, "app": "shop"}]})})
    lines = cli(server.url, "status").output.splitlines()
    assert ("web: Canary: 5% on green since 2026-12-01T19:00:00.000Z, 12.5s of 60s; last analysis: 48 requests, "
            "error rate 0.021, latency 42 ms") in lines
    assert "shop: Canary: 5% on green since 2026-12-01T19:00:00.000Z, 12.5s of 60s; last analysis: Prometheus " \
           "does not answer" in lines
