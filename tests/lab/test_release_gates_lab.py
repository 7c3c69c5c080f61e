"""The release gates on the real lab, through nginx: smoke requests on the preview route, and the Paused gate.

The app is the nginx-fronted stack of tests/support/bluegreen.py: blue serves v1 to users on
127.0.0.1, and the preview route (Host `preview.localhost`) serves the idle color. Users' load
goes to the main route only, so every failed or foreign response it sees is one a user would
have seen.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.lab.test_bluegreen_lab import start_controller
from tests.support import lab
from tests.support.bluegreen import Stack, nginx_image, release_images, wait_phase
from tests.support.load import LoadResult

SMOKE = [{"path": "/", "status": "2xx", "body": "v"}, {"path": "/health", "status": "200"}]


@pytest.fixture(scope="module")
def images(docker_client, demo_image) -> dict[str, str]:
    return release_images(docker_client)


@pytest.fixture
def stack(swarm, tmp_path, images, docker_client) -> Stack:
    return Stack(swarm, tmp_path, images, nginx_image(docker_client))


def served(result: LoadResult, after: float = 0.0) -> set[str]:
    """The versions users got in responses that completed after monotonic time `after`."""
    return {v for t, _, v in result.bodies if t > after}


def test_a_release_failing_a_smoke_request_never_gets_user_traffic(swarm, stack, bluegreen_proc):
    daemon = start_controller(bluegreen_proc, stack, smoke=SMOKE)
    app = stack.app
    load = stack.load(rate=60, seconds=60).start()
    try:
        time.sleep(0.5)
        done = daemon.cli("deploy", app, "--image", stack.images["5xx"], "--wait", "--timeout", "60")
        time.sleep(0.5)
    finally:
        result = load.stop()
    assert done.returncode == 1, done.stdout + done.stderr
    view = daemon.status(app)
    assert (view["phase"], view["active"], view["result"]) == ("Failed", "blue", "failed")
    assert "smoke test failed" in view["deploy"]["reason"] and "GET /" in view["deploy"]["reason"], view
    # The failing request and its answer: in the log, and in `status`.
    failed = daemon.wait_event("smoke_failed", 1, app=app)
    assert (failed["method"], failed["path"], failed["status"]) == ("GET", "/", 500), failed
    assert "preview.localhost" in failed["target"], failed
    status = daemon.cli("status", app)
    assert "smoke test failed" in status.stdout and "500" in status.stdout, status.stdout
    # No user got an error or the release: the router never moved.
    assert result.sent >= 50 and result.failed == 0, (result.statuses, result.errors)
    assert served(result) == {"v1"}
    assert [e["to"] for e in daemon.events("phase_changed", app=app)] == [
        "Preparing", "Waiting", "PreChecks", "SmokeTests", "Failed"]
    assert not daemon.events("route_applied", app=app)[1:], "the routing changed during the deploy"
    assert daemon.metric("swarmshift_bluegreen_deploys_total", app=app, result="failed") == 1


def test_a_paused_deploy_holds_traffic_across_a_kill_until_promote_and_abort_leaves_it(swarm, stack, bluegreen_proc):
    daemon = start_controller(bluegreen_proc, stack, smoke=SMOKE, auto_promotion=False)
    app = stack.app
    load = stack.load(rate=40, seconds=110).start()
    try:
        code, body = daemon.api("POST", f"/v1/apps/{app}/deploy", {"image": stack.images["v2"]})
        assert code == 202, body
        paused = daemon.wait_event("deploy_paused", 60, app=app)
        # Held: the smoke requests passed, and users stay on v1 while the gate waits.
        assert daemon.events("smoke_passed", app=app)
        time.sleep(2)
        assert stack.serves("v1") and daemon.status(app)["active"] == "blue"
        # SIGKILL while Paused: the new process finds the gate in the labels and keeps waiting.
        daemon.kill()
        assert stack.state("green")["phase"] == "Paused"
        since = len(daemon.lines())
        daemon.start()
        daemon.wait_event("app_reconciled", 30, since=since, app=app)
        time.sleep(3)
        view = daemon.status(app)
        assert (view["phase"], view["active"]) == ("Paused", "blue"), view
        assert view["gate"]["promote"] == f"swarmshift bluegreen promote {app}", view["gate"]
        shown = daemon.cli("status", app)
        assert "Paused" in shown.stdout and "promote" in shown.stdout, shown.stdout + shown.stderr
        assert stack.serves("v1")
        promoted_at = time.monotonic()
        done = daemon.cli("promote", app, "--wait", "--timeout", "60")
        assert done.returncode == 0, done.stdout + done.stderr
        assert wait_phase(daemon, app, {"Stable"}, 30)["active"] == "green"
        assert stack.serves("v2")

        # A second deploy (back to v1 on blue) pauses too; abort fails it and leaves users on v2.
        code, body = daemon.api("POST", f"/v1/apps/{app}/deploy", {"image": stack.images["v1"]})
        assert code == 202, body
        daemon.wait_event("deploy_paused", 60, since=since, app=app, target="blue")
        aborted = daemon.cli("abort", app)
        assert aborted.returncode == 0, aborted.stdout + aborted.stderr
        view = wait_phase(daemon, app, {"Failed"}, 10)
        time.sleep(1)
        assert stack.serves("v2")
    finally:
        result = load.stop()
    assert (view["active"], view["result"]) == ("green", "failed") and "aborted by request" in view["deploy"]["reason"]
    assert result.failed == 0, (result.statuses, result.errors)
    # Before the promotion users got only v1; v2 only after it.
    assert {v for t, _, v in result.bodies if t < promoted_at} == {"v1"}
    assert paused["target"] == "green"
    assert len(daemon.events("switched", app=app)) == 1  # the promotion's; the abort moved nothing


def test_webhook_gates_hold_pass_and_fail_a_deploy_once_per_phase_across_kills_and_undo_goes_through_them(
        swarm, stack, bluegreen_proc, webhook, tmp_path):
    from bluegreen.webhook_gates import verify

    secret, token = b"lab-webhook-secret", "lab-approve-token"
    (tmp_path / "wh-secret").write_bytes(secret + b"\n")
    (tmp_path / "wh-token").write_text(token + "\n")
    hooks = [
        {"name": "migrate", "type": "pre-rollout", "url": f"{webhook.url}/pre", "secret_file": str(tmp_path / "wh-secret"),
         "retries": 0, "on_failure": "fail"},
        {"name": "approve", "type": "confirm-promotion", "url": f"{webhook.url}/approve",
         "token_file": str(tmp_path / "wh-token"), "retries": 0, "gate_timeout": "2m"},
        {"name": "e2e", "type": "post-rollout", "url": f"{webhook.url}/post", "retries": 0, "on_failure": "hold",
         "gate_timeout": "2m"},
    ]
    daemon = start_controller(bluegreen_proc, stack, webhooks=hooks)
    app = stack.app
    load = stack.load(rate=40, seconds=150).start()
    try:
        # 1. pre-rollout answers 500 with on_failure: fail: the deploy fails there, users never moved.
        webhook.answers["/pre"] = 500
        done = daemon.cli("deploy", app, "--image", stack.images["v2"], "--wait", "--timeout", "60")
        assert done.returncode == 1 and "ended Failed" in done.stdout, done.stdout + done.stderr
        [first] = webhook.calls("/pre")
        assert first.status == 500 and not webhook.calls("/approve")
        assert "migrate" in daemon.status(app)["deploy"]["reason"]

        # 2. pre-rollout passes; confirm-promotion holds (403) across a SIGKILL, then says yes.
        webhook.answers.update({"/pre": 200, "/approve": 403, "/post": 500})
        code, body = daemon.api("POST", f"/v1/apps/{app}/deploy", {"image": stack.images["v2"], "by": "lab"})
        assert code == 202, body
        second = body["deploy"]["id"]
        lab.wait_for("two polls of the held approval", lambda: len(webhook.calls("/approve")) >= 2, 60)
        assert stack.serves("v1") and daemon.status(app)["phase"] == "ConfirmPromotion"
        daemon.kill()
        since = len(daemon.lines())
        daemon.start()
        daemon.wait_event("app_reconciled", 30, since=since, app=app)
        polls = len(webhook.calls("/approve"))
        lab.wait_for("the approval polled again after the restart", lambda: len(webhook.calls("/approve")) > polls, 30)
        assert stack.serves("v1")
        approved_at = time.monotonic()
        webhook.answers["/approve"] = 200
        assert wait_phase(daemon, app, {"Stable"}, 60, operation=second)["active"] == "green"
        # post-rollout: held (500) at least once, then passed; never called again after it passed.
        lab.wait_for("the post-rollout webhook to be held", lambda: webhook.calls("/post"), 30)
        webhook.answers["/post"] = 200
        daemon.wait_event("webhook_recorded", 40, app=app, webhook="e2e", outcome="passed")
        daemon.kill()
        since = len(daemon.lines())
        daemon.start()
        daemon.wait_event("app_reconciled", 30, since=since, app=app)
        posts = len(webhook.calls("/post"))
        time.sleep(3)
        assert len(webhook.calls("/post")) == posts, "a post-rollout webhook that passed was sent again"
        assert stack.serves("v2")

        # 3. undo: back to v1 through the same gates.
        webhook.answers.update({"/pre": 200, "/approve": 200, "/post": 200})
        undone = daemon.cli("undo", app, "--by", "lab", "--wait", "--timeout", "60")
        assert undone.returncode == 0, undone.stdout + undone.stderr
        assert stack.serves("v1")
    finally:
        result = load.stop()
    assert result.failed == 0, (result.statuses, result.errors)
    assert {v for t, _, v in result.bodies if t < approved_at} == {"v1"}, "users reached v2 before the approval"

    # Once per phase: each deploy's pre-rollout passed once (kills included); the idempotency key says which.
    pre = webhook.calls("/pre")
    keys = [d.body["idempotency_key"] for d in pre]
    assert len(keys) == len(set(keys)) == 3, keys
    for d in pre:  # signed with the shared secret over the timestamp and the exact body
        assert verify(secret, d.headers["X-Swarmshift-Timestamp"], d.raw, d.headers["X-Swarmshift-Signature"])
    approvals = webhook.calls("/approve")
    assert all(d.headers["Authorization"] == f"Bearer {token}" for d in approvals)
    assert [d.status for d in approvals][-2:] == [200, 200]  # the deploy's yes, then the undo's only call
    second_pre = next(d.body for d in pre if d.body["deploy"] == second)
    assert (second_pre["app"], second_pre["gate"], second_pre["source"], second_pre["target"],
            second_pre["new_image"]) == (app, "pre-rollout", "blue", "green", stack.images["v2"]), second_pre
    posts = [d for d in webhook.calls("/post") if d.body["deploy"] == second]
    assert [d.status for d in posts][-1] == 200 and [d.status for d in posts].count(200) == 1

    # The history: newest first, the undo, the approved deploy and the failed one, with who asked.
    shown = daemon.cli("history", app, "--json")
    releases = json.loads(shown.stdout)["releases"]
    assert [(r["kind"], r["result"]) for r in releases[:3]] == [
        ("undo", "Succeeded"), ("deploy", "Succeeded"), ("deploy", "Failed")], releases
    assert releases[0]["image"] == stack.images["v1"] and releases[1]["requested_by"] == "lab"
    table = daemon.cli("history", app)
    assert table.stdout.split("\n")[0].split() == ["REV", "KIND", "IMAGE", "RESULT", "STARTED", "TOOK", "PHASES", "BY"]
