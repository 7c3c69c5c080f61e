"""Webhook gates (issue 11, item 4): the machine's table, the config, the HTTP client against a real server, and the controller.

The client is tested against an aiohttp server of the test's own on 127.0.0.1 (our code on both
ends, no fake of a third-party API); the controller runs over the Swarm and router held in
memory (tests/support/memory.py) with that real client, as in test_bluegreen_gates.py.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import pytest
from aiohttp import web
from pydantic import ValidationError
from structlog.testing import capture_logs

from bluegreen.apps import Color
from bluegreen.config import BlueGreenConfig
from bluegreen.controller import Controller
from bluegreen.labels import K_DEPLOY_POST_ROLLOUT, K_DEPLOY_WEBHOOKS
from bluegreen.observe import Checks
from bluegreen.phases import (
    Needs,
    Notify,
    Probe,
    ProbeOutcome,
    Progress,
    Route,
    Scale,
    advance,
    needs,
    start_abort,
    start_promote,
    start_rollback,
)
from bluegreen.state import AppState, Operation, Phase, Result, Routing
from bluegreen.webhook_gates import (
    Gate,
    HookCall,
    HookResult,
    HookRound,
    HookSpec,
    Webhook,
    decode_record,
    encode_record,
    verify,
)
from bluegreen.webhooks import WebhookCaller
from swarmshift.config import ConfigError, problems_from
from tests.support.memory import Clock, MemoryProber, MemoryRouter, MemorySwarm
from tests.unit.test_bluegreen_controller import BASE, LABELS, World
from tests.unit.test_bluegreen_gates import IN_FLIGHT, green_weights, settle
from tests.unit.test_bluegreen_phases import D, S, T, at_rest, in_deploy, observe

# --- the machine -----------------------------------------------------------------------------------

PRE = HookSpec("migrate", Gate.PRE_ROLLOUT, "hold", 60)
PRE_FAIL = HookSpec("load-test", Gate.PRE_ROLLOUT, "fail", 60)
CONFIRM = HookSpec("approve", Gate.CONFIRM_PROMOTION, "hold", 3600)
POST = HookSpec("announce", Gate.POST_ROLLOUT, "hold", 60)
POST_FAIL = HookSpec("e2e", Gate.POST_ROLLOUT, "fail", 60)
ROUTED_STABLE = Routing.all_to(Color.GREEN)


def hooks(gate: Gate, **answers: bool) -> HookRound:
    return HookRound(gate, tuple(HookResult(name.replace("_", "-"), ok, 200 if ok else 503,
                                            "HTTP 200" if ok else "HTTP 503 after 3 attempts")
                                 for name, ok in answers.items()))


def step_of(state: AppState, specs: tuple[HookSpec, ...], round_: HookRound | None = None, now: float = T,
            **settings):
    obs = replace(observe(state), webhooks=round_, now=now)
    return advance("web", state, Progress(started=T - 1), obs, replace(S, webhooks=specs, **settings))


def stable(deploy=None, **changes) -> AppState:
    d = deploy or replace(D, post_rollout=True)
    return at_rest(active=Color.GREEN, deploy=d, result=Result.SUCCEEDED, since=T - 5, retire_at=T + 600, **changes)


def stable_obs(state: AppState, round_: HookRound | None, now: float = T, previous_up: bool = True):
    obs = observe(state, blue={"replicas": 2 if previous_up else 0, "lock": "idle"},
                  green={"image": "web:2", "replicas": 2, "lock": None}, routed=ROUTED_STABLE, now=now)
    return replace(obs, webhooks=round_)


def test_prechecks_then_pre_rollout_then_paused_then_confirm_then_switch():
    specs = (PRE, CONFIRM)
    ok = replace(observe(in_deploy(Phase.PRECHECKS)), probe=Probe(ProbeOutcome.OK))
    step = advance("web", in_deploy(Phase.PRECHECKS), Progress(started=T - 5, consecutive_ok=2), ok,
                   replace(S, webhooks=specs, auto_promotion=False))
    assert step.state.phase is Phase.PRE_ROLLOUT and "calling the pre-rollout webhook(s) migrate" in step.reason
    assert needs(step.state, replace(S, webhooks=specs)) == Needs(webhooks=HookCall(Gate.PRE_ROLLOUT, ("migrate",)))
    assert needs(step.state) == Needs()  # without the app's settings nothing is called
    pre = step.state
    step = step_of(pre, specs, hooks(Gate.PRE_ROLLOUT, migrate=True), auto_promotion=False)
    assert step.state.phase is Phase.PAUSED and step.state.deploy.webhooks == (("migrate", "passed"),)
    promoted = start_promote("web", step.state, observe(step.state), settings=replace(S, webhooks=specs))
    assert promoted.state.phase is Phase.CONFIRM_PROMOTION
    assert needs(promoted.state, replace(S, webhooks=specs)).webhooks == HookCall(Gate.CONFIRM_PROMOTION, ("approve",))
    held = step_of(promoted.state, specs, hooks(Gate.CONFIRM_PROMOTION, approve=False))
    assert held.state.phase is Phase.CONFIRM_PROMOTION and not held.persisted
    assert "held until it answers 2xx, at most gate_timeout 1h" in held.reason
    assert not any(isinstance(i, Route) for i in held.intents)
    go = step_of(promoted.state, specs, hooks(Gate.CONFIRM_PROMOTION, approve=True))
    assert go.state.phase is Phase.SWITCHING
    assert go.state.deploy.webhooks == (("migrate", "passed"), ("approve", "passed"))


def test_a_target_without_a_task_at_the_switch_goes_back_through_the_gates_calling_no_passed_webhook():
    settings = replace(S, webhooks=(PRE, CONFIRM))
    confirming = in_deploy(Phase.CONFIRM_PROMOTION, replace(D, webhooks=(("migrate", "passed"),)), since=T - 600)
    obs = replace(observe(confirming, green={"running": 0}), webhooks=hooks(Gate.CONFIRM_PROMOTION, approve=True))
    step = advance("web", confirming, Progress(started=T - 600), obs, settings)
    assert step.state.phase is Phase.WAITING and not any(isinstance(i, Route) for i in step.intents)
    assert "web-green has no running task (0/2 tasks running): waiting for its tasks" in step.reason
    assert step.state.deploy.webhooks == (("migrate", "passed"), ("approve", "passed"))
    # Swarm runs the task again elsewhere: Waiting (its wait_timeout counted from re-entering it),
    # PreChecks, and then the switch, with no webhook called on the way.
    waiting = step.state
    assert (waiting.since, step.progress) == (T, Progress(started=T))
    step = advance("web", waiting, step.progress, observe(waiting, now=T + 20), settings)
    assert step.state.phase is Phase.PRECHECKS
    checking = step.state
    assert needs(checking, settings).webhooks is None
    ok = replace(observe(checking, now=T + 23), probe=Probe(ProbeOutcome.OK))
    step = advance("web", checking, Progress(started=T + 20, consecutive_ok=2), ok, settings)
    assert step.state.phase is Phase.SWITCHING
    assert Route(Routing(blue=0, green=100, preview=Color.BLUE)) in step.intents
    # With auto_promotion: false, the pause asks again (a webhook is never sent twice; a person is asked).
    paused = advance("web", checking, Progress(started=T + 20, consecutive_ok=2), ok,
                     replace(settings, auto_promotion=False))
    assert paused.state.phase is Phase.PAUSED and needs(paused.state, settings).webhooks is None


@dataclass(frozen=True)
class Row:
    name: str
    state: AppState
    specs: tuple[HookSpec, ...]
    round: HookRound | None = None
    now: float = T
    phase: Phase | None = None
    record: tuple[tuple[str, str], ...] | None = None
    reason: str = ""
    persisted: bool | None = None
    settings: dict = field(default_factory=dict)


PRE_ROLLOUT = in_deploy(Phase.PRE_ROLLOUT, since=T - 10)
CONFIRMING = in_deploy(Phase.CONFIRM_PROMOTION, since=T - 10)
ROWS = [
    Row("pre-rollout: all pass, on to the switch", PRE_ROLLOUT, (PRE, PRE_FAIL),
        hooks(Gate.PRE_ROLLOUT, migrate=True, load_test=True), phase=Phase.SWITCHING,
        record=(("migrate", "passed"), ("load-test", "passed"))),
    Row("pre-rollout: one passes, the other holds: the pass is recorded now", PRE_ROLLOUT, (PRE, PRE_FAIL),
        HookRound(Gate.PRE_ROLLOUT, (HookResult("load-test", True, 200),)), record=(("load-test", "passed"),),
        persisted=True),
    Row("pre-rollout: a hold that answers 503 stays, unrecorded", PRE_ROLLOUT, (PRE,),
        hooks(Gate.PRE_ROLLOUT, migrate=False), record=(), persisted=False,
        reason="pre-rollout webhook migrate: HTTP 503 after 3 attempts; held until it answers 2xx"),
    Row("pre-rollout: on_failure fail fails the deploy, traffic untouched", PRE_ROLLOUT, (PRE_FAIL,),
        hooks(Gate.PRE_ROLLOUT, load_test=False), phase=Phase.FAILED,
        reason="pre-rollout webhook load-test failed: HTTP 503 after 3 attempts (on_failure: fail); traffic stays "
               "on blue"),
    Row("pre-rollout: a hold past its gate_timeout (from the stored since) fails", in_deploy(Phase.PRE_ROLLOUT,
        since=T - 61), (PRE,), hooks(Gate.PRE_ROLLOUT, migrate=False), phase=Phase.FAILED,
        reason="pre-rollout webhook migrate did not answer 2xx within gate_timeout 1m; traffic stays on blue"),
    Row("pre-rollout: a pass at the deadline still counts", in_deploy(Phase.PRE_ROLLOUT, since=T - 61), (PRE,),
        hooks(Gate.PRE_ROLLOUT, migrate=True), phase=Phase.SWITCHING),
    Row("pre-rollout: webhooks recorded before a restart are not waited for", in_deploy(
        Phase.PRE_ROLLOUT, replace(D, webhooks=(("migrate", "passed"),))), (PRE,), None, phase=Phase.SWITCHING),
    Row("pre-rollout: the webhooks removed from the config, on", PRE_ROLLOUT, (), None, phase=Phase.SWITCHING),
    Row("pre-rollout: on to Paused with auto_promotion false", PRE_ROLLOUT, (PRE,),
        hooks(Gate.PRE_ROLLOUT, migrate=True), phase=Phase.PAUSED, settings={"auto_promotion": False}),
    Row("pre-rollout: a round of another gate is no evidence", PRE_ROLLOUT, (PRE,),
        hooks(Gate.CONFIRM_PROMOTION, migrate=True), persisted=False),
    Row("confirm-promotion: no yes yet", CONFIRMING, (CONFIRM,), hooks(Gate.CONFIRM_PROMOTION, approve=False),
        persisted=False),
    Row("confirm-promotion: yes, switch", CONFIRMING, (CONFIRM,), hooks(Gate.CONFIRM_PROMOTION, approve=True),
        phase=Phase.SWITCHING),
    Row("confirm-promotion: timed out", in_deploy(Phase.CONFIRM_PROMOTION, since=T - 3600), (CONFIRM,),
        hooks(Gate.CONFIRM_PROMOTION, approve=False), phase=Phase.FAILED,
        reason="confirm-promotion webhook approve did not answer 2xx within gate_timeout 1h"),
    Row("confirm-promotion: skipped by a rollback's redeploy", in_deploy(Phase.PAUSED, replace(
        D, kind=Operation.ROLLBACK)), (CONFIRM,), settings={"auto_promotion": False, "auto_promotion_after": 1},
        phase=Phase.SWITCHING),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_webhook_gate_transition(row: Row):
    step = step_of(row.state, row.specs, row.round, row.now, **row.settings)
    assert step.state.phase is (row.phase or row.state.phase), step.reason
    assert row.reason in step.reason
    if row.record is not None:
        assert step.state.deploy.webhooks == row.record
    if row.persisted is not None:
        assert step.persisted is row.persisted
    # Before the switch, traffic never leans toward the release.
    if step.state.phase in (Phase.PRE_ROLLOUT, Phase.CONFIRM_PROMOTION, Phase.FAILED, Phase.PAUSED):
        assert step.state.routing() == Routing.all_to(Color.BLUE)


def test_a_verified_deploy_is_armed_for_post_rollout_only_with_webhooks_configured():
    state = in_deploy(Phase.VERIFYING)
    obs = replace(observe(state), probe=Probe(ProbeOutcome.OK))
    for specs, armed in (((POST,), True), ((PRE,), False), ((), False)):
        step = advance("web", state, Progress(started=T - 5, rounds=4), obs, replace(S, webhooks=specs))
        assert step.state.phase is Phase.STABLE and step.state.deploy.post_rollout is armed
        assert (needs(step.state, replace(S, webhooks=specs)).webhooks is not None) is armed


@pytest.mark.parametrize(("name", "specs", "round_", "now", "previous_up", "want"), [
    ("passes: recorded, stays Stable", (POST,), hooks(Gate.POST_ROLLOUT, announce=True), T, True,
     (Phase.STABLE, (("announce", "passed"),))),
    ("hold answers 503: called again, nothing recorded", (POST,), hooks(Gate.POST_ROLLOUT, announce=False), T, True,
     (Phase.STABLE, ())),
    ("hold past gate_timeout: recorded failed, stays Stable", (POST,), hooks(Gate.POST_ROLLOUT, announce=False),
     T + 60, True, (Phase.STABLE, (("announce", "failed"),))),
    ("fail: a health-checked switch back while the previous color is up", (POST_FAIL,),
     hooks(Gate.POST_ROLLOUT, e2e=False), T, True, (Phase.SWITCHING, ())),
    ("fail: a redeploy of the previous image when it is scaled down", (POST_FAIL,),
     hooks(Gate.POST_ROLLOUT, e2e=False), T, False, (Phase.PREPARING, ())),
])
def test_post_rollout(name, specs, round_, now, previous_up, want):
    state = stable()
    step = advance("web", state, Progress(started=T - 1), stable_obs(state, round_, now, previous_up),
                   replace(S, webhooks=specs))
    phase, record = want
    assert step.state.phase is phase, step.reason
    if phase is Phase.STABLE:
        assert step.state.deploy.webhooks == record and step.persisted is bool(record)
        assert needs(step.state, replace(S, webhooks=specs)).webhooks == (
            None if record else needs(state, replace(S, webhooks=specs)).webhooks)
    else:
        d = step.state.deploy
        assert d.kind is Operation.ROLLBACK and d.target is Color.BLUE and d.image == "web:1"
        assert "post-rollout webhook e2e failed: HTTP 503 after 3 attempts (on_failure: fail)" in step.reason
        assert any(isinstance(i, Notify) for i in step.intents)
        if phase is Phase.SWITCHING:
            assert any(isinstance(i, Route) and i.routing == Routing.all_to(Color.BLUE) for i in step.intents)
        else:
            assert any(isinstance(i, Scale) and i.color is Color.BLUE for i in step.intents)


def test_post_rollout_is_never_called_for_a_release_not_armed_for_it():
    state = stable(deploy=D)  # Stable long before the webhook was configured
    assert needs(state, replace(S, webhooks=(POST,))) == Needs()
    rolled_back = stable(deploy=replace(D, kind=Operation.ROLLBACK, post_rollout=True))
    assert needs(rolled_back, replace(S, webhooks=(POST,))).webhooks is not None  # armed is armed, whatever made it


@pytest.mark.parametrize("phase", [Phase.PRE_ROLLOUT, Phase.CONFIRM_PROMOTION])
def test_abort_and_rollback_work_from_the_webhook_phases(phase):
    state = in_deploy(phase)
    settings = replace(S, webhooks=(PRE, CONFIRM))
    aborted = start_abort("web", state, observe(state), settings=settings)
    assert aborted.state.phase is Phase.FAILED and aborted.state.deploy.reason == (
        f"aborted by request in {phase}; traffic stays on blue")
    rolled = start_rollback("web", state, observe(state), deploy_id="x", settings=settings)
    assert rolled.state.phase is Phase.FAILED and rolled.state.routing() == Routing.all_to(Color.BLUE)


def test_the_record_survives_the_state_labels():
    from bluegreen.apps import App, Strategy
    from bluegreen.rules import Rule
    from bluegreen.state import load_state

    state = in_deploy(Phase.PRE_ROLLOUT, replace(D, webhooks=(("migrate", "passed"), ("x.y_z", "failed")),
                                                 post_rollout=True))
    labels = {k: v for k, v in state.to_labels().items() if v is not None}
    assert labels[K_DEPLOY_WEBHOOKS] == "migrate:passed,x.y_z:failed" and labels[K_DEPLOY_POST_ROLLOUT] == "true"
    app = App(name="web", blue_service="web-blue", green_service="web-green", port=8000,
              rule=Rule.parse("Host(`web.example.com`)"), health_path="/health", preview_rule=None,
              strategy=Strategy.BLUEGREEN)
    loaded = load_state(app, {c: labels for c in Color}, {c: 1 for c in Color}, None, T)
    assert loaded.state == state
    assert encode_record(()) is None and decode_record("a:passed") == (("a", "passed"),)
    bad = AppState.from_labels({**labels, K_DEPLOY_WEBHOOKS: "migrate:maybe"}, "web-blue")
    assert bad[0] is None and "expected name:passed or name:failed" in bad[1][0]


# --- the config ------------------------------------------------------------------------------------

HOOK = {"name": "migrate", "type": "pre-rollout", "url": "https://hooks.example.com/migrate?key=hunter2"}


def problems(**config) -> list[str]:
    try:
        BlueGreenConfig(**config)
    except ValidationError as err:
        return problems_from(err, config, "config")
    return []


@pytest.mark.parametrize(("hook", "problem"), [
    ({"type": "canary"}, "config: webhooks[0].type: Input should be 'pre-rollout', 'confirm-promotion' or "
                         "'post-rollout' (got 'canary')"),
    ({"name": "Migrate DB"}, "config: webhooks[0].name: expected a name of at most 63 lowercase letters"),
    ({"url": "ftp://x/secret-token"}, "config: webhooks[0].url: expected an http:// or https:// URL with a host "
                                      "(the value is not shown: it may hold a secret)"),
    ({"timeout": "45s"}, "config: webhooks[0].timeout: must be more than 0 and at most 30s (got '45s')"),
    ({"retries": 9}, "config: webhooks[0].retries: Input should be less than or equal to 5 (got 9)"),
    ({"on_failure": "ignore"}, "config: webhooks[0].on_failure: Input should be 'hold' or 'fail' (got 'ignore')"),
    ({"gate_timeout": "1s", "timeout": "2s"}, "config: webhooks[0].gate_timeout: must be at least timeout (2s) and "
                                              "at most 168h (got '1s')"),
    ({"token_file": "/run/secrets/a", "secret_file": "/run/secrets/b"},
     "config: webhooks[0].secret_file: set token_file or secret_file, not both (got '/run/secrets/b')"),
    ({"type": "confirm-promotion", "on_failure": "fail"}, "config: webhooks[0].on_failure: confirm-promotion is "
                                                          "polled until it answers 2xx: on_failure must be hold"),
    ({"token": "hunter2"}, "config: webhooks[0].token: unknown key (got 'hunter2')"),
    ({"metadata": {"team": "x" * 300}}, "config: webhooks[0].metadata: team: at most 256 characters"),
])
def test_bad_webhook_config_names_the_key_and_value(hook, problem):
    lines = problems(webhooks=[{**HOOK, **hook}])
    assert len(lines) == 1 and lines[0].startswith(problem), lines
    assert "hunter2" not in lines[0] or "token" in hook  # a URL is never echoed


def test_webhook_lists_are_bounded_unique_and_per_app_replaces_the_top_level():
    assert problems(webhooks=[HOOK, HOOK]) == ["config: webhooks: webhook names must be unique: migrate"]
    assert problems(webhooks=[{**HOOK, "name": f"h{i}"} for i in range(11)]) == [
        "config: webhooks: at most 10 webhooks (got 11)"]
    assert problems(apps={"web": {"webhooks": [HOOK, HOOK]}}) == [
        "config: apps.web.webhooks: webhook names must be unique: migrate"]
    config = BlueGreenConfig(webhooks=[HOOK], apps={"shop_web": {"webhooks": []},
                                                    "blog_web": {"webhooks": [{**HOOK, "name": "own"}]}})
    assert [s.name for s in config.settings("other").webhooks] == ["migrate"]
    assert config.settings("shop_web").webhooks == ()
    assert [h.name for h in config.webhooks_for("blog_web")] == ["own"]
    assert "hunter2" not in repr(config)


def test_run_refuses_a_webhook_secret_file_it_cannot_read(tmp_path):
    from bluegreen.cli import _startup_problems

    (tmp_path / "empty").write_text("\n")
    config = BlueGreenConfig(webhooks=[{**HOOK, "secret_file": str(tmp_path / "missing")},
                                       {**HOOK, "name": "b", "token_file": str(tmp_path / "empty")}],
                             router={"traefik": {"dynamic_dir": str(tmp_path)}})
    _, lines = _startup_problems(config)
    assert lines[0].startswith("config: webhooks[0].secret_file: cannot read ") and lines[0].endswith(
        f"(got {str(tmp_path / 'missing')!r})")
    assert lines[1].startswith("config: webhooks[1].token_file: ") and "is empty" in lines[1]
    assert issubclass(ConfigError, Exception)


# --- the HTTP client against a real server ---------------------------------------------------------


@dataclass
class Receiver:
    """Our own webhook receiver on 127.0.0.1: answers each path from a queue of statuses (then `default`)."""

    answers: dict[str, list[int]] = field(default_factory=dict)
    default: int = 200
    delay: float = 0.0
    received: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    url: str = ""
    runner: web.AppRunner | None = None

    async def start(self) -> Receiver:
        async def handle(request: web.Request) -> web.Response:
            body = await request.read()
            self.received.append((request.path, dict(request.headers), body))
            if self.delay:
                await asyncio.sleep(self.delay)
            queue = self.answers.get(request.path, [])
            return web.Response(status=queue.pop(0) if queue else self.default, text="not yet: ask #releases")

        app = web.Application()
        app.router.add_post("/{name}", handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # noqa: SLF001 - the port the OS chose
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    def calls(self, path: str) -> list[dict]:
        return [json.loads(body) for p, _, body in self.received if p == path]


def webhook(receiver: Receiver, name: str, gate: str = "pre-rollout", **more) -> dict:
    return {"name": name, "type": gate, "url": f"{receiver.url}/{name}", "retries": 0, **more}


def within(coro_factory: Callable[[Receiver], object]) -> None:
    async def main() -> None:
        receiver = await Receiver().start()
        try:
            await coro_factory(receiver)
        finally:
            await receiver.close()

    asyncio.run(main())


STATE = in_deploy(Phase.PRE_ROLLOUT)


def test_a_signed_call_verifies_and_carries_the_payload_and_idempotency_key(tmp_path):
    (tmp_path / "secret").write_text("s3cret\n")

    async def scenario(r: Receiver) -> None:
        hook = Webhook(**webhook(r, "migrate", secret_file=str(tmp_path / "secret"), metadata={"team": "shop"}))
        caller = WebhookCaller(clock=lambda: 1_750_000_000.25)
        result = await caller.round("shop_web", Gate.PRE_ROLLOUT, [hook], STATE)
        await caller.close()
        assert result == HookRound(Gate.PRE_ROLLOUT, (HookResult("migrate", True, 200, "HTTP 200", 1),))
        [(path, headers, body)] = r.received
        assert headers["X-Swarmshift-Timestamp"] == "1750000000"
        assert verify(b"s3cret", headers["X-Swarmshift-Timestamp"], body, headers["X-Swarmshift-Signature"])
        assert not verify(b"s3cret", "1750000001", body, headers["X-Swarmshift-Signature"])  # a replay, re-stamped
        assert "Authorization" not in headers
        assert headers["Idempotency-Key"] == "web-d1/pre-rollout/migrate"
        assert json.loads(body) == {
            "app": "shop_web", "gate": "pre-rollout", "webhook": "migrate", "phase": "PreRollout",
            "deploy": "web-d1", "kind": "deploy", "source": "blue", "target": "green", "old_image": "web:1",
            "new_image": "web:2", "idempotency_key": "web-d1/pre-rollout/migrate", "attempt": 1,
            "sent_at": "2025-06-15T15:06:40.250Z", "metadata": {"team": "shop"}}

    within(scenario)


def test_a_bearer_token_is_sent_from_its_file_and_re_read_when_rotated(tmp_path):
    token = tmp_path / "token"
    token.write_text("t1\n")

    async def scenario(r: Receiver) -> None:
        hook = Webhook(**webhook(r, "migrate", token_file=str(token)))
        caller = WebhookCaller()
        await caller.round("web", Gate.PRE_ROLLOUT, [hook], STATE)
        token.write_text("t2")
        await caller.round("web", Gate.PRE_ROLLOUT, [hook], STATE)
        token.unlink()
        with capture_logs() as logs:
            result = await caller.round("web", Gate.PRE_ROLLOUT, [hook], STATE)
        await caller.close()
        assert [h["Authorization"] for _, h, _ in r.received] == ["Bearer t1", "Bearer t2"]
        assert not result.results[0].passed and "cannot read" in result.results[0].detail
        assert [e["event"] for e in logs] == ["webhook_failed"]

    within(scenario)


def test_retries_are_bounded_with_backoff_and_every_attempt_is_logged_without_the_url_secret():
    async def scenario(r: Receiver) -> None:
        r.answers["/migrate"] = [503, 502]
        hook = Webhook(**{**webhook(r, "migrate"), "url": f"{r.url}/migrate?key=hunter2", "retries": 2})
        caller = WebhookCaller(backoff=0.05)
        started = time.monotonic()
        with capture_logs() as logs:
            result = await caller.round("web", Gate.PRE_ROLLOUT, [hook], STATE)
        assert time.monotonic() - started >= 0.05 + 0.1
        assert result.results == (HookResult("migrate", True, 200, "HTTP 200", 3),)
        assert [b["attempt"] for b in r.calls("/migrate")] == [1, 2, 3]
        assert [(e["event"], e.get("attempt")) for e in logs] == [
            ("webhook_sent", 1), ("webhook_failed", 1), ("webhook_sent", 2), ("webhook_failed", 2),
            ("webhook_sent", 3), ("webhook_passed", 3)]
        failed = logs[1]
        assert (failed["status"], failed["gate"], failed["webhook"], failed["attempts"]) == (
            503, "pre-rollout", "migrate", 3)
        assert failed["action"] == "retrying in 0.05s" and failed["body"] == "not yet: ask #releases"
        assert "elapsed_ms" in failed and all(e["url"] == f"{r.url}/<redacted>" for e in logs)
        assert "hunter2" not in repr(logs)
        r.default = 500
        with capture_logs() as logs:
            result = await caller.round("web", Gate.PRE_ROLLOUT, [hook], STATE)
        await caller.close()
        assert result.results[0] == HookResult("migrate", False, 500, "HTTP 500 after 3 attempts", 3)
        assert logs[-1]["action"] == "held: called again next tick, until gate_timeout"

    within(scenario)


def test_a_slow_receiver_is_cut_at_the_timeout_and_a_dead_one_fails_at_once():
    async def scenario(r: Receiver) -> None:
        r.delay = 2.0
        slow = Webhook(**webhook(r, "slow", timeout="200ms", retries=1))
        dead = Webhook(name="dead", type="pre-rollout", url="http://127.0.0.1:9/x", retries=0)
        caller = WebhookCaller(backoff=0.01)
        started = time.monotonic()
        result = await caller.round("web", Gate.PRE_ROLLOUT, [slow, dead], STATE)
        await caller.close()
        assert time.monotonic() - started < 1.5  # two attempts of 200 ms each, in parallel with the dead one
        by_name = {x.name: x for x in result.results}
        assert by_name["slow"] == HookResult("slow", False, None, "no answer within 0.2s after 2 attempts", 2)
        assert not by_name["dead"].passed and by_name["dead"].detail.startswith("cannot connect")

    within(scenario)


# --- through the controller -------------------------------------------------------------------------


_CALLERS: list[WebhookCaller] = []  # every world's client, closed when its scenario ends


def hooked_world(**config) -> World:
    swarm = MemorySwarm()
    swarm.add("web-blue", image="web:1", replicas=2, labels={**LABELS, "swarmshift.bluegreen.color": "blue"})
    swarm.add("web-green", image="web:1", replicas=0, labels={**LABELS, "swarmshift.bluegreen.color": "green"})
    return _world(swarm, MemoryRouter(), MemoryProber(), Clock(), **config)


def _world(swarm, router, prober, clock, **config) -> World:
    cfg = BlueGreenConfig(**{**BASE, **config})
    caller = WebhookCaller(backoff=0.01)
    _CALLERS.append(caller)
    controller = Controller(swarm, router, cfg, prober=prober, checks=Checks(None, []), clock=clock,
                            webhooks=caller)
    return World(swarm, router, prober, clock, controller)


def again(w: World, **config) -> World:
    """The same swarm, router and clock under a new controller process: nothing in memory survives."""
    return _world(w.swarm, w.router, w.prober, w.clock, **config)


def through(scenario: Callable[[Receiver, Callable[..., World]], object]) -> None:
    async def main() -> None:
        receiver = await Receiver().start()

        def make(**config) -> World:
            return hooked_world(**config)

        try:
            await scenario(receiver, make)
        finally:
            while _CALLERS:
                await _CALLERS.pop().close()
            await receiver.close()

    asyncio.run(main())


async def begin(w: World) -> None:
    await w.tick()
    await w.controller.deploy("web", "web:2")


def test_each_gate_is_called_once_in_order_and_the_deploy_goes_live():
    async def scenario(r: Receiver, make) -> None:
        hooks_ = [webhook(r, "pre"), webhook(r, "confirm", "confirm-promotion"), webhook(r, "post", "post-rollout")]
        w = make(webhooks=hooks_)
        await begin(w)
        with capture_logs() as logs:
            assert await settle(w) == "Stable" and w.active() == "green"
        seen = [e["to"] for e in logs if e["event"] == "phase_changed"]
        assert seen == ["Waiting", "PreChecks", "PreRollout", "ConfirmPromotion", "Switching", "Verifying", "Stable"]
        for _ in range(3):
            await w.tick()
        assert [p for p, _, _ in r.received] == ["/pre", "/confirm", "/post"]
        assert [b["phase"] for p in ("/pre", "/confirm", "/post") for b in r.calls(p)] == [
            "PreRollout", "ConfirmPromotion", "Stable"]
        d = w.controller.apps["web"].state.deploy
        assert d.webhooks == (("pre", "passed"), ("confirm", "passed"), ("post", "passed"))
        view = await w.controller.status("web")
        assert view["webhooks"]["gate"] is None and len(view["webhooks"]["done"]) == 3

    through(scenario)


def test_a_hold_keeps_the_deploy_before_traffic_until_a_yes_then_a_fail_stops_it():
    async def scenario(r: Receiver, make) -> None:
        r.answers["/approve"] = [409, 409, 409]
        w = make(webhooks=[webhook(r, "approve", "confirm-promotion")])
        await begin(w)
        await settle(w, until=lambda phase: phase == "ConfirmPromotion")
        for _ in range(2):
            assert await w.tick() == "ConfirmPromotion"
        assert max(green_weights(w)) == 0
        view = await w.controller.status("web")
        assert view["webhooks"] == {"gate": "confirm-promotion", "pending": ["approve"], "done": [],
                                    "last": view["webhooks"]["last"]}
        assert view["webhooks"]["last"]["results"][0]["status"] == 409
        assert await settle(w) == "Stable" and w.active() == "green"
        assert len(r.calls("/approve")) == 4

        r.received.clear()
        r.default = 500
        w2 = make(webhooks=[webhook(r, "load", on_failure="fail", retries=1)])
        await begin(w2)
        with capture_logs() as logs:
            assert await settle(w2) == "Failed"
        assert max(green_weights(w2)) == 0 and w2.active() == "blue"
        assert len(r.calls("/load")) == 2  # one call, one retry: never again
        assert w2.controller.apps["web"].state.deploy.reason == (
            "pre-rollout webhook load failed: HTTP 500 after 2 attempts (on_failure: fail); traffic stays on blue")
        assert [e["event"] for e in logs if e["event"].startswith("webhook_")] == [
            "webhook_sent", "webhook_failed", "webhook_sent", "webhook_failed"]

    through(scenario)


def test_a_hold_past_its_gate_timeout_fails_the_deploy_even_across_a_restart():
    async def scenario(r: Receiver, make) -> None:
        r.default = 503
        config = {"webhooks": [webhook(r, "migrate", gate_timeout="30s")]}
        w = make(**config)
        await begin(w)
        await settle(w, until=lambda phase: phase == "PreRollout")
        w.clock.advance(20)
        later = again(w, **config)
        assert await later.tick() == "PreRollout"
        later.clock.advance(10)
        assert await settle(later) == "Failed"
        assert "did not answer 2xx within gate_timeout 30s" in later.controller.apps["web"].state.deploy.reason
        assert max(green_weights(later)) == 0

    through(scenario)


def test_a_gate_that_passed_is_never_sent_again_after_a_restart():
    async def scenario(r: Receiver, make) -> None:
        r.answers["/b"] = [503]
        config = {"webhooks": [webhook(r, "a"), webhook(r, "b")], "auto_promotion": False}
        w = make(**config)
        await begin(w)
        await settle(w, until=lambda phase: phase == "PreRollout")
        assert w.swarm.get("web-blue").labels[K_DEPLOY_WEBHOOKS].startswith("a:passed")
        later = again(w, **config)  # a new process: only the labels say what passed
        assert await later.tick() == "Paused"
        for _ in range(2):
            await again(later, **config).tick()  # restarted again, while Paused
        assert len(r.calls("/a")) == 1 and len(r.calls("/b")) == 2
        assert {b["idempotency_key"] for b in r.calls("/b")} == {
            f"{later.controller.apps['web'].state.deploy.id}/pre-rollout/b"}

    through(scenario)


def test_abort_ends_a_deploy_held_by_a_webhook_and_traffic_stays():
    async def scenario(r: Receiver, make) -> None:
        r.default = 503
        w = make(webhooks=[webhook(r, "approve", "confirm-promotion", gate_timeout="1h")])
        await begin(w)
        await settle(w, until=lambda phase: phase == "ConfirmPromotion")
        state = await w.controller.abort("web")
        assert state.phase is Phase.FAILED and w.active() == "blue" and max(green_weights(w)) == 0
        calls = len(r.received)
        await w.tick()
        assert len(r.received) == calls

    through(scenario)


def test_a_failing_post_rollout_webhook_rolls_back_and_a_holding_one_gives_up_and_stays():
    async def scenario(r: Receiver, make) -> None:
        r.default = 500
        w = make(webhooks=[webhook(r, "e2e", "post-rollout", on_failure="fail")])
        await begin(w)
        assert await settle(w) == "Stable" and w.active() == "green"
        with capture_logs() as logs:
            assert await w.tick() in IN_FLIGHT  # the post-rollout call fails: a rollback, as an operator's
        started = [e for e in logs if e["event"] == "deploy_started"]
        assert started[0]["operation"] == "rollback" and started[0]["target"] == "blue"
        assert await settle(w) == "Stable"
        assert w.active() == "blue" and w.router.routes["web"] == Routing.all_to(Color.BLUE)
        assert w.controller.apps["web"].state.deploy.kind is Operation.ROLLBACK
        assert len(r.calls("/e2e")) == 1

        r.received.clear()
        config = {"webhooks": [webhook(r, "announce", "post-rollout", gate_timeout="5s")]}
        w2 = make(**config)
        await begin(w2)
        assert await settle(w2) == "Stable"
        with capture_logs() as logs:
            for _ in range(8):
                await again(w2, **config).tick()
        assert w2.active() == "green" and w2.phase() == "Stable"
        assert w2.swarm.get("web-green").labels[K_DEPLOY_WEBHOOKS] == "announce:failed"
        calls = len(r.calls("/announce"))
        assert 2 <= calls <= 7
        [gave_up] = [e for e in logs if e["event"] == "webhook_recorded"]
        assert gave_up["outcome"] == "failed" and gave_up["log_level"] == "warning"
        await again(w2, **config).tick()
        assert len(r.calls("/announce")) == calls

    through(scenario)
