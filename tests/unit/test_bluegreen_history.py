"""History, undo, preview_replicas, abort_scale_down_delay and drain_grace (issue 11, items 5 and 6).

First the pure pieces as tables (the history codec, which release an undo picks, the ScalingUp
phase, retirement with the drain), then whole operations through the real Controller over the
in-memory Swarm, the API and the CLI.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from pydantic import ValidationError
from structlog.testing import capture_logs

from bluegreen.apps import Color
from bluegreen.cli import render_history
from bluegreen.config import BlueGreenConfig
from bluegreen.labels import K_HISTORY
from bluegreen.phases import (
    Probe,
    ProbeOutcome,
    Progress,
    Refused,
    Scale,
    SetImage,
    advance,
    drain_problem,
    preview_count,
    retire_delay,
    start_abort,
    start_deploy,
    start_promote,
    start_undo,
    undo_target,
)
from bluegreen.state import (
    HISTORY_MAX,
    AppState,
    Operation,
    Outcome,
    Phase,
    Release,
    Result,
    Routing,
    decode_history,
    decode_phases,
    encode_history,
    encode_phases,
    record,
)
from tests.unit.test_bluegreen_api import Canned, cli
from tests.unit.test_bluegreen_controller import World, restarted, run
from tests.unit.test_bluegreen_gates import AUTH, api
from tests.unit.test_bluegreen_phases import PAUSES, D, S, T, at_rest, in_deploy, observe

IN_FLIGHT = {p.value for p in Phase if p.in_flight}
OK_PROBE = Probe(ProbeOutcome.OK)


def replace_progress(**changes) -> Progress:
    return Progress(**{"started": T - 1, **changes})


def release(revision: int, image: str, outcome: Outcome = Outcome.SUCCEEDED, kind: Operation = Operation.DEPLOY,
            **changes) -> Release:
    return Release(revision=revision, image=image, kind=kind, outcome=outcome, started=T - 100 + revision,
                   ended=T - 90 + revision, **changes)


# --- the history label -------------------------------------------------------------------------


def test_a_history_round_trips_through_its_label_compactly():
    history = (release(1, "web:1", phases=(("Preparing", 1.5), ("Waiting", 3.0)), by="alice"),
               release(2, "web:2", Outcome.FAILED, reason="smoke test failed on web-green: GET / …"),
               release(3, "web:1", kind=Operation.UNDO, by="alert:HighErrorRate"))
    text = encode_history(history)
    assert text.isascii() and text == json.dumps(json.loads(text), separators=(",", ":"))
    assert decode_history(text) == (history, None)
    assert encode_history(()) is None and decode_history(None) == ((), None)


def test_the_history_keeps_the_last_entries_and_revisions_keep_rising():
    history: tuple[Release, ...] = ()
    for n in range(1, 15):
        history = record(history, replace(D, image=f"web:{n}", reason="x" * 500), Outcome.FAILED, T)
    assert len(history) == HISTORY_MAX and [r.revision for r in history] == list(range(5, 15))
    assert all(len(r.reason) <= 160 for r in history)  # bounded, so the label is
    assert len(encode_history(history)) < 4000


@pytest.mark.parametrize(("text", "why"), [
    ("{", "not a history"),
    ("{}", "not a history"),
    ("[1]", "not a history"),
    ('[{"rev":1}]', "not a history"),
    ('[{"rev":true,"image":"a","kind":"deploy","result":"Succeeded","start":"2025-01-31T12:00:00.000Z",'
     '"end":"2025-01-31T12:00:00.000Z"}]', "not a history"),
    ('[{"rev":1,"image":"a","kind":"canary","result":"Succeeded","start":"2025-01-31T12:00:00.000Z",'
     '"end":"2025-01-31T12:00:00.000Z"}]', "not a history"),
    ('[{"rev":2,"image":"a","kind":"deploy","result":"Succeeded","start":"2025-01-31T12:00:00.000Z",'
     '"end":"2025-01-31T12:00:00.000Z"},{"rev":1,"image":"a","kind":"deploy","result":"Succeeded",'
     '"start":"2025-01-31T12:00:00.000Z","end":"2025-01-31T12:00:00.000Z"}]', "revisions must rise"),
    ("[" * 100_000, "longer than"),
    ("[" * 5000, "not a history"),
])
def test_a_damaged_history_is_reset_with_a_reason_never_an_error(text, why):
    history, problem = decode_history(text)
    assert history == () and why in problem


def test_a_damaged_history_label_leaves_the_state_usable_and_is_logged_once():
    async def scenario(w: World) -> None:
        for name in ("web-blue", "web-green"):
            w.swarm.get(name).labels[K_HISTORY] = '[{"rev": "one"}]'
        with capture_logs() as logs:
            for _ in range(3):
                await w.tick()
        resets = [e for e in logs if e["event"] == "history_reset"]
        assert len(resets) == 1 and "the history starts again" in resets[0]["problem"]
        assert (await w.controller.history("web"))["releases"] == []
        await w.controller.deploy("web", "web:2")
        await settle(w)
        assert [r["image"] for r in (await w.controller.history("web"))["releases"]] == ["web:2"]

    run(scenario)


def test_phase_times_are_bookkeeping_read_leniently():
    assert decode_phases(encode_phases((("Preparing", 1.25), ("Waiting", 1234567.0)))) == (
        ("Preparing", 1.25), ("Waiting", 1234567.0))
    for bad in ("Preparing=x", "Bogus=1", "Preparing=1,Preparing=2", "Preparing=1e5", "=", "Preparing=١"):
        assert decode_phases(bad) == ()


# --- the history as the machine writes it -----------------------------------------------------


def test_the_final_transition_appends_the_entry_with_phase_times_and_who_asked():
    verifying = in_deploy(Phase.VERIFYING, replace(D, by="alice", phases=(("Preparing", 2.0), ("Switching", 0.5))),
                          since=T - 6)
    step = advance("web", verifying, replace_progress(started=T - 6, rounds=5), observe(verifying, probe=OK_PROBE), S)
    assert step.state.phase is Phase.STABLE
    (entry,) = step.state.history
    assert entry == Release(revision=1, image="web:2", kind=Operation.DEPLOY, outcome=Outcome.SUCCEEDED,
                            started=D.started_at, ended=T, phases=(("Preparing", 2.0), ("Switching", 0.5),
                                                                   ("Verifying", 6.0)), by="alice", previous="web:1")
    assert step.state.to_labels()[K_HISTORY] == encode_history(step.state.history)  # in the same write


def test_an_abort_is_recorded_as_aborted_and_a_rolled_back_deploy_as_rolled_back():
    paused = in_deploy(Phase.PAUSED, history=(release(1, "web:1"),))
    aborted = start_abort("web", paused, observe(paused), settings=S).state
    assert [(r.revision, r.outcome) for r in aborted.history] == [(1, Outcome.SUCCEEDED), (2, Outcome.ABORTED)]
    back = in_deploy(Phase.ROLLING_BACK, replace(D, reason="2 failed checks"))
    done = advance("web", back, replace_progress(), observe(back), S).state
    assert done.phase is Phase.ROLLED_BACK and done.history[-1].outcome is Outcome.ROLLED_BACK
    assert done.history[-1].reason == "2 failed checks"


def test_no_entry_while_the_operation_is_in_flight():
    waiting = in_deploy(Phase.WAITING)
    step = advance("web", waiting, replace_progress(), observe(waiting), S)
    assert step.state.phase is Phase.PRECHECKS and step.state.history == ()
    assert step.state.deploy.phases == (("Waiting", 10.0),)


# --- undo: which release -----------------------------------------------------------------------

HISTORY = (release(1, "web:1"), release(2, "web:2"), release(3, "web:3", Outcome.FAILED), release(4, "web:2b"))


@pytest.mark.parametrize(("history", "running", "revision", "image_or_code"), [
    (HISTORY, "web:2b", None, "web:2"),  # the newest success not running; the failed web:3 is skipped
    (HISTORY, "web:2", None, "web:2b"),  # an earlier undo left web:2 running: the newest other success
    (HISTORY, "web:2b", 1, "web:1"),
    (HISTORY, "web:2b", 3, "web:3"),  # an explicit revision is taken whatever its result; the gates judge it
    (HISTORY, "web:2b", 4, "noop"),  # its image is the one running
    (HISTORY, "web:2b", 9, "unknown"),
    ((), "web:1", None, "nothing"),
    ((), "web:1", 1, "unknown"),
    ((release(1, "web:1"),), "web:1", None, "nothing"),  # no earlier release
    # The first release through the controller: back to the image it replaced.
    ((release(1, "web:2", previous="web:1"),), "web:2", None, "web:1"),
    ((release(1, "web:2", previous="web:1"), release(2, "web:1", kind=Operation.UNDO, previous="web:2")), "web:1",
     None, "web:2"),
])
def test_undo_picks_the_previous_successful_release_or_refuses_saying_why(history, running, revision, image_or_code):
    if image_or_code in ("noop", "unknown", "nothing"):
        with pytest.raises(Refused) as err:
            undo_target("web", history, running, revision)
        assert err.value.code == image_or_code
    else:
        assert undo_target("web", history, running, revision)[0] == image_or_code


def test_undo_is_a_deploy_through_the_same_gates_recorded_as_undo():
    state = at_rest(history=HISTORY, result=Result.SUCCEEDED)
    obs = observe(state, blue={"image": "web:2b"})
    step = start_undo("web", state, obs, deploy_id="web-u1", settings=replace(S, **PAUSES), by="bob")
    d = step.state.deploy
    assert step.state.phase is Phase.PREPARING and d.kind is Operation.UNDO and d.image == "web:2" and d.by == "bob"
    assert SetImage(Color.GREEN, "web:2") in step.intents
    assert step.reason.startswith("undo to revision 2: undo web:2 to green")
    # The promotion gate applies to an undo as to a deploy.
    checked = in_deploy(Phase.PRECHECKS, d)
    nxt = advance("web", checked, replace_progress(consecutive_ok=2), observe(checked, probe=OK_PROBE),
                  replace(S, **PAUSES))
    assert nxt.state.phase is Phase.PAUSED


def test_undo_is_refused_while_an_operation_is_in_flight():
    state = in_deploy(Phase.VERIFYING, history=HISTORY)
    with pytest.raises(Refused) as err:
        start_undo("web", state, observe(state), deploy_id="x", settings=S)
    assert err.value.code == "busy"


# --- preview_replicas and ScalingUp -------------------------------------------------------------


@pytest.mark.parametrize(("active", "preview", "count"), [(4, None, 4), (4, 1, 1), (4, 2, 2), (4, 9, 4), (0, 1, 1),
                                                          (0, None, 1)])
def test_the_preview_count_is_at_most_the_active_count_and_at_least_one(active, preview, count):
    assert preview_count(active, preview) == count


PREVIEW = replace(S, preview_replicas=1)


def test_the_idle_color_is_prepared_with_the_preview_count():
    state = at_rest()
    step = start_deploy("web", state, observe(state, blue={"replicas": 4}), image="web:2", deploy_id="d",
                        settings=PREVIEW)
    assert Scale(Color.GREEN, 1) in step.intents


@pytest.mark.parametrize("phase", [Phase.WAITING, Phase.SMOKE_TESTS, Phase.PAUSED])
def test_the_preview_count_is_not_a_change_from_outside_before_scaling_up(phase):
    state = in_deploy(phase)
    settings = replace(PREVIEW, auto_promotion=False, smoke_tests=1)
    step = advance("web", state, replace_progress(), observe(state, green={"replicas": 1}), settings)
    assert step.state.phase is not Phase.PREPARING


def test_promote_goes_through_scaling_up_and_the_switch_waits_for_the_full_count():
    paused = in_deploy(Phase.PAUSED)
    obs = observe(paused, green={"replicas": 1})
    step = start_promote("web", paused, obs, settings=replace(PREVIEW, **PAUSES))
    assert step.state.phase is Phase.SCALING_UP and Scale(Color.GREEN, 2) in step.intents
    assert step.state.routing() == Routing.all_to(Color.BLUE)  # no user traffic yet
    scaling = step.state
    starting = advance("web", scaling, replace_progress(), observe(scaling, green={"replicas": 2, "running": 1}),
                       PREVIEW)
    assert starting.state.phase is Phase.SCALING_UP and "1/2 tasks running" in starting.reason
    ready = advance("web", scaling, replace_progress(), observe(scaling, green={"replicas": 2}), PREVIEW)
    assert ready.state.phase is Phase.SWITCHING
    assert ready.state.deploy.phases[-2:] == (("Paused", 10.0), ("ScalingUp", 0.0))


def test_scaling_up_puts_the_count_back_fails_at_the_timeout_and_restarts_on_a_new_image():
    scaling = in_deploy(Phase.SCALING_UP)
    put_back = advance("web", scaling, replace_progress(), observe(scaling, green={"replicas": 1}), PREVIEW)
    assert put_back.state.phase is Phase.SCALING_UP and Scale(Color.GREEN, 2) in put_back.intents
    late = advance("web", scaling, replace_progress(started=T - 31), observe(scaling, green={"running": 1}), PREVIEW)
    assert late.state.phase is Phase.FAILED and "did not scale up to 2 ready tasks" in late.state.deploy.reason
    assert late.state.routing() == Routing.all_to(Color.BLUE)
    changed = advance("web", scaling, replace_progress(), observe(scaling, green={"image": "web:9"}), PREVIEW)
    assert changed.state.phase is Phase.PREPARING


def test_scaling_up_can_be_aborted_before_any_traffic_moved():
    scaling = in_deploy(Phase.SCALING_UP)
    assert start_abort("web", scaling, observe(scaling), settings=S).state.phase is Phase.FAILED


# --- retirement: abort_scale_down_delay and the drain -----------------------------------------


def test_a_failed_color_retires_after_the_abort_delay_and_never_before_the_drain_grace():
    settings = replace(S, abort_scale_down_delay=5, drain_grace=10)
    assert retire_delay(settings, failed=True) == 10  # the grace at least
    assert retire_delay(replace(settings, abort_scale_down_delay=30), failed=True) == 30
    assert retire_delay(settings, failed=False) == S.scale_down_delay
    assert retire_delay(replace(S, abort_scale_down_delay=None), failed=True) == S.scale_down_delay
    paused = in_deploy(Phase.PAUSED)
    failed = start_abort("web", paused, observe(paused), settings=replace(settings, abort_scale_down_delay=30)).state
    assert failed.retire_at == T + 30


DUE = at_rest(phase=Phase.ROLLED_BACK, since=T - 3, retire_at=T - 1, deploy=D, result=Result.ROLLED_BACK)


@pytest.mark.parametrize(("routed", "grace", "retires", "why"), [
    (Routing.all_to(Color.BLUE), 0, True, ""),
    (Routing.all_to(Color.BLUE), 10, False, "draining until"),  # out of the routing for 3 s only
    (Routing.toward(Color.GREEN, 10), 0, False, "still gives it weight 10"),
    (None, 0, False, "reports no routing"),
])
def test_a_color_is_scaled_down_only_with_weight_0_confirmed_and_after_the_drain_grace(routed, grace, retires, why):
    step = advance("web", DUE, replace_progress(), observe(DUE, green={"replicas": 2}, routed=routed),
                   replace(S, drain_grace=grace))
    assert (Scale(Color.GREEN, 0) in step.intents) is retires
    assert why in step.reason and why in (drain_problem(DUE, routed, T, grace) or "")
    if not retires:
        assert step.state.retire_at == DUE.retire_at  # still due: retired on a later tick


# --- through the controller ---------------------------------------------------------------------


async def settle(w: World, limit: int = 40) -> str:
    for _ in range(limit):
        if w.phase() not in IN_FLIGHT:
            return w.phase()
        await w.tick()
    raise AssertionError(f"still {w.phase()} after {limit} ticks")


def test_deploys_and_an_undo_are_recorded_and_survive_a_restart():
    seen = {}

    async def scenario(w: World) -> None:
        await w.controller.deploy("web", "web:2", by="alice")
        assert await settle(w) == "Stable"
        await w.controller.deploy("web", "web:3", by="ci")
        assert await settle(w) == "Stable"
        later = restarted(w)
        await later.tick()
        state = await later.controller.undo("web", by="bob")
        assert state.deploy.kind is Operation.UNDO and state.deploy.image == "web:2"
        assert await settle(later) == "Stable"
        seen["history"] = await later.controller.history("web")
        with pytest.raises(Refused) as err:
            await later.controller.undo("web", revision=3)  # web:2, running now
        seen["noop"] = err.value

    w = run(scenario)
    releases = seen["history"]["releases"]
    assert [(r["revision"], r["kind"], r["image"], r["result"], r["requested_by"]) for r in releases] == [
        (3, "undo", "web:2", "Succeeded", "bob"), (2, "deploy", "web:3", "Succeeded", "ci"),
        (1, "deploy", "web:2", "Succeeded", "alice")]
    assert list(releases[0]["phases"]) == ["Preparing", "Waiting", "PreChecks", "Switching", "Verifying"]
    assert seen["noop"].code == "noop"
    assert w.swarm.get("web-green").image == "web:2"  # the undo went to the idle color
    assert w.router.routes["web"] == Routing.all_to(Color.GREEN)
    # Both copies carry it.
    assert w.swarm.get("web-blue").labels[K_HISTORY] == w.swarm.get("web-green").labels[K_HISTORY]


def test_a_failed_deploy_is_recorded_with_its_reason_and_its_color_retired_after_the_abort_delay():
    async def scenario(w: World) -> None:
        w.swarm.health["web-green"] = "unhealthy"
        await w.controller.deploy("web", "web:2")
        assert await settle(w) == "Failed"
        (entry,) = (await w.controller.history("web"))["releases"]
        assert entry["result"] == "Failed" and "web-green" in entry["reason"]
        assert w.swarm.get("web-green").replicas == 2
        w.clock.advance(30)
        await w.tick()

    w = run(scenario, abort_scale_down_delay="5s", drain_grace="20s")
    assert w.swarm.get("web-green").replicas == 0


def test_preview_replicas_through_the_controller_scale_up_before_the_switch_even_after_a_restart():
    counts = []

    async def scenario(w: World) -> None:
        await w.controller.deploy("web", "web:2")
        while w.phase() != "Paused":
            counts.append((w.phase(), w.swarm.get("web-green").replicas))
            await w.tick()
        later = restarted(w, preview_replicas=1, auto_promotion=False)
        assert await later.tick() == "Paused" and w.swarm.get("web-green").replicas == 1
        state = await later.controller.promote("web")
        assert state.phase is Phase.SCALING_UP and w.swarm.get("web-green").replicas == 2
        assert all(r.weight(Color.GREEN) == 0 for _, r in w.router.applied)  # no traffic before the full count
        assert await settle(later) == "Stable"
        counts.append(("end", w.swarm.get("web-green").replicas))

    w = run(scenario, preview_replicas=1, auto_promotion=False)
    assert counts[0] == ("Preparing", 1) and all(n == 1 for _, n in counts[:-1]) and counts[-1] == ("end", 2)
    assert w.router.routes["web"] == Routing.all_to(Color.GREEN)


def test_config_keys_are_validated_and_per_app():
    cfg = BlueGreenConfig(preview_replicas=2, apps={"shop_web": {"preview_replicas": 1}, "blog": {}})
    assert cfg.settings("shop_web").preview_replicas == 1 and cfg.settings("blog").preview_replicas == 2
    assert BlueGreenConfig().settings().abort_scale_down_delay == 30 and BlueGreenConfig().settings().drain_grace == 10
    for bad in ({"preview_replicas": 0}, {"apps": {"web": {"preview_replicas": 0}}}, {"drain_grace": "soon"},
                {"abort_scale_down_delay": "-1s"}):
        with pytest.raises(ValidationError):
            BlueGreenConfig(**bad)


# --- the API and the CLI ------------------------------------------------------------------------


def test_the_api_undoes_and_lists_the_history_and_refuses_clearly(tmp_path):
    answers: list[tuple[str, int, object]] = []

    async def scenario(w: World) -> None:
        async def calls(client) -> None:
            async def call(what: str, method: str, path: str, **kwargs) -> None:
                resp = await client.request(method, path, **kwargs)
                answers.append((what, resp.status, await resp.json()))

            await call("empty undo", "POST", "/v1/apps/web/undo", headers=AUTH)
            await call("deploy", "POST", "/v1/apps/web/deploy", headers=AUTH, json={"image": "web:2", "by": "alice"})
            await settle(w)
            await call("bad by", "POST", "/v1/apps/web/undo", headers=AUTH, json={"by": "\x1b[31m"})
            await call("bad revision", "POST", "/v1/apps/web/undo", headers=AUTH, json={"revision": True})
            await call("unknown revision", "POST", "/v1/apps/web/undo", headers=AUTH, json={"revision": 7})
            await call("no token", "POST", "/v1/apps/web/undo")
            await call("same image", "POST", "/v1/apps/web/undo", headers=AUTH, json={"revision": 1})
            await call("history", "GET", "/v1/apps/web/history")
            await call("bad query", "GET", "/v1/apps/web/history?limit=0")
            await call("limit", "GET", "/v1/apps/web/history?limit=1")

        await api(w, tmp_path, calls)

    run(scenario)
    got = {what: (status, body) for what, status, body in answers}
    assert {what: status for what, (status, _) in got.items()} == {
        "empty undo": 422, "deploy": 202, "bad by": 400, "bad revision": 400, "unknown revision": 422, "no token": 401,
        "same image": 422, "history": 200, "bad query": 400, "limit": 200}
    assert got["empty undo"][1]["code"] == "nothing" and "no earlier successful release" in got["empty undo"][1]["error"]
    assert got["unknown revision"][1] == {
        "error": "web: no revision 7 in the history (revisions 1 to 1); `swarmshift bluegreen history web` lists them",
        "code": "unknown"}
    (entry,) = got["history"][1]["releases"]
    assert entry["requested_by"] == "alice" and entry["image"] == "web:2" and got["history"][1]["problem"] is None
    assert len(got["limit"][1]["releases"]) == 1


def test_the_history_table_and_the_undo_command(monkeypatch):
    body = {"app": "web", "problem": None, "releases": [
        {"revision": 2, "kind": "deploy", "image": "web:3", "result": "Failed", "started": "2026-12-01T19:00:00.000Z",
         "ended": "2026-12-01T19:00:20.000Z", "seconds": 20.0, "phases": {"Preparing": 1.0, "SmokeTests": 0.4},
         "reason": "smoke test failed on web-green", "requested_by": "ci"},
        {"revision": 1, "kind": "deploy", "image": "web:2", "result": "Succeeded", "started": "2026-12-01T18:00:00.000Z",
         "ended": "2026-12-01T18:02:05.000Z", "seconds": 125.0, "phases": {}, "reason": "", "requested_by": None}]}
    text = render_history(body)
    lines = text.splitlines()
    assert lines[0].split() == ["REV", "KIND", "IMAGE", "RESULT", "STARTED", "TOOK", "PHASES", "BY"]
    assert lines[1].split()[:6] == ["2", "deploy", "web:3", "Failed", "2026-12-01T19:00:00.000Z", "20.0s"]
    assert "Preparing 1.0s SmokeTests 0.4s" in lines[1] and lines[1].endswith("ci")
    assert "2m05s" in lines[2] and lines[2].endswith("-")
    assert lines[-1] == "rev 2 Failed: smoke test failed on web-green"
    assert "(no release recorded yet for web)" in render_history({"app": "web", "releases": []})

    started = {"phase": "Preparing", "active": "blue", "deploy": {"id": "web-u", "operation": "undo", "image": "web:2",
                                                                   "target": "green"}}
    server = Canned({("GET", "/v1/apps/web/history"): (200, body), ("POST", "/v1/apps/web/undo"): (202, started),
                     ("POST", "/v1/apps/api/undo"): (422, {"error": "api: no earlier successful release",
                                                            "code": "nothing"})})
    try:
        shown = cli(server.url, "history", "web")
        assert shown.exit_code == 0 and shown.output.startswith("REV")
        as_json = cli(server.url, "history", "web", "--json")
        assert json.loads(as_json.output) == body
        monkeypatch.setenv("USER", "dana")
        ok = cli(server.url, "undo", "web", "--to", "1")
        assert ok.exit_code == 0 and "web: undo web-u started: Preparing, web:2 on green" in ok.output
        by = cli(server.url, "undo", "web", "--by", "release-bot")
        refused = cli(server.url, "undo", "api")
        assert refused.exit_code == 1 and "no earlier successful release" in refused.output
        assert cli(server.url, "undo", "web", "--to", "0").exit_code == 2
    finally:
        server.close()
    bodies = [b for method, path, _, b in server.requests if path.endswith("/undo")]
    assert bodies[:2] == [{"revision": 1, "by": "dana"}, {"by": "release-bot"}]
    assert by.exit_code == 0


def test_a_history_entry_is_never_written_twice_after_a_restart_mid_write():
    """The entry travels in the final phase's own state: a tick re-run on the same stored state adds nothing."""
    stable = AppState(active=Color.GREEN, phase=Phase.STABLE, since=T, generation=9, deploy=D,
                      result=Result.SUCCEEDED, history=(release(1, "web:2"),))
    step = advance("web", stable, Progress(), observe(stable, blue={"replicas": 2}), S)
    assert step.state.history == stable.history


def test_an_alerts_rollback_at_rest_is_requested_by_the_alert():
    state = at_rest(deploy=replace(D, by="alice"), result=Result.SUCCEEDED, active=Color.GREEN)
    obs = observe(state, blue={"image": "web:1", "replicas": 2}, green={"image": "web:2", "replicas": 2},
                  alert="HighErrorRate")
    step = advance("web", state, replace_progress(), obs, replace(S, rollback_on_alert="always"))
    assert step.state.deploy.kind is Operation.ROLLBACK and step.state.deploy.by == "alert:HighErrorRate"
