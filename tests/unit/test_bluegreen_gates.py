"""The release gates through the controller and its API: smoke requests before the switch, Paused, promote and abort.

The real Controller over the Swarm, router and prober held in memory (tests/support/memory.py),
as in test_bluegreen_controller.py, and the real API through aiohttp's test client. The lab
tests (issue 11) prove the same through Traefik and nginx under load.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from bluegreen.api import make_app
from bluegreen.apps import Color
from bluegreen.cli import render_status
from bluegreen.phases import Refused
from bluegreen.smoke import Answer
from bluegreen.state import Phase, Routing
from swarmshift.http import TokenFile
from tests.unit.test_bluegreen_controller import World, restarted, run

SMOKE = [{"path": "/", "body": "ok"}, {"path": "/checkout", "method": "POST", "status": "200-299"}]


async def settle(w: World, limit: int = 30, until: Callable[[str], bool] = lambda phase: phase not in IN_FLIGHT) -> str:
    """Tick until `until` holds for the phase (by default: nothing in flight)."""
    for _ in range(limit):
        if until(w.phase()):
            return w.phase()
        await w.tick()
    raise AssertionError(f"still {w.phase()} after {limit} ticks")


IN_FLIGHT = {phase.value for phase in Phase if phase.in_flight}


def green_weights(w: World) -> list[int]:
    return [routing.weight(Color.GREEN) for _, routing in w.router.applied]


# --- smoke requests ------------------------------------------------------------------------------


def test_a_release_failing_a_smoke_request_ends_failed_without_user_traffic_and_says_why():
    views = []

    async def scenario(w: World) -> None:
        w.prober.answers["/checkout"] = Answer(0.0123, 500, "<h1>Internal Server Error</h1>\n" + "x" * 500)
        await w.controller.deploy("web", "web:3")
        with capture_logs() as logs:
            assert await settle(w) == "Failed"
        views.append(await w.controller.status("web"))
        views.append(logs)

    w = run(scenario, smoke=SMOKE)
    view, logs = views
    assert max(green_weights(w)) == 0  # the release never took a request of a user
    assert w.router.routes["web"] == Routing.all_to(Color.BLUE)
    assert [requests for _, _, requests in w.prober.smoked] == [("GET /", "POST /checkout")]
    reason = view["deploy"]["reason"]
    assert reason.startswith("smoke test failed on web-green: POST /checkout on preview route: HTTP 500 in 12 ms "
                             "(expected status 200-299); body: '<h1>Internal Server Error</h1> xxx")
    assert reason.endswith("; traffic stays on blue") and len(reason) < 400
    assert view["result"] == "failed" and view["smoke"]["outcome"] == "failed"
    assert any(line.startswith("the last deploy (") and "POST /checkout" in line for line in view["degraded"])
    [event] = [e for e in logs if e["event"] == "smoke_failed"]
    assert (event["method"], event["path"], event["status"], event["latency_ms"]) == ("POST", "/checkout", 500, 12.3)
    assert event["body"].startswith("<h1>Internal Server Error</h1> xxx") and len(event["body"]) == 120
    assert event["expected"] == "status 200-299" and event["log_level"] == "error"
    assert [e["to"] for e in logs if e["event"] == "phase_changed"][-2:] == ["SmokeTests", "Failed"]


def test_a_release_passing_its_smoke_requests_goes_live_and_they_are_sent_once():
    async def scenario(w: World) -> None:
        await w.controller.deploy("web", "web:2")
        assert await settle(w) == "Stable"

    w = run(scenario, smoke=SMOKE)
    assert w.active() == "green" and len(w.prober.smoked) == 1


def test_smoke_requests_are_per_app_key_and_an_app_without_any_skips_the_phase():
    seen: list[str] = []

    async def scenario(w: World) -> None:
        await w.controller.deploy("web", "web:2")
        while w.phase() in IN_FLIGHT:
            seen.append(await w.tick())

    w = run(scenario, smoke=SMOKE, apps={"web": {"smoke": []}})
    assert "SmokeTests" not in seen and w.prober.smoked == [] and w.active() == "green"


def test_an_unreachable_idle_color_is_tried_again_and_fails_only_at_the_timeout():
    async def scenario(w: World) -> None:
        w.prober.smoke_unreachable = "no route serves green alone"
        await w.controller.deploy("web", "web:2")
        await settle(w, until=lambda phase: phase == "SmokeTests")
        assert await w.tick() == "SmokeTests"  # not a verdict on the release
        assert await settle(w) == "Failed"

    w = run(scenario, smoke=SMOKE)
    assert len(w.prober.smoked) >= 3 and max(green_weights(w)) == 0
    assert "could not reach web-green within 3s" in w.controller.apps["web"].state.deploy.reason


# --- the promotion gate ---------------------------------------------------------------------------


async def _paused(w: World) -> None:
    await w.controller.deploy("web", "web:2")
    await settle(w, until=lambda phase: phase == "Paused")


def test_a_paused_deploy_holds_traffic_until_promote_then_goes_live():
    async def scenario(w: World) -> None:
        await _paused(w)
        for _ in range(5):
            assert await w.tick() == "Paused"
        assert max(green_weights(w)) == 0
        state = await w.controller.promote("web")
        assert state.phase.value in ("Switching", "Verifying")
        assert await settle(w) == "Stable"

    w = run(scenario, auto_promotion=False, smoke=SMOKE)
    assert w.active() == "green" and w.router.routes["web"] == Routing.all_to(Color.GREEN)
    assert len(w.prober.smoked) == 1  # the smoke requests ran before the pause, once


def test_abort_fails_a_paused_deploy_leaves_traffic_and_retires_the_idle_color_later():
    async def scenario(w: World) -> None:
        await _paused(w)
        state = await w.controller.abort("web")
        assert state.phase.value == "Failed" and state.deploy.reason == ("aborted by request in Paused; traffic "
                                                                          "stays on blue")
        w.clock.advance(600)  # scale_down_delay
        await w.tick()

    w = run(scenario, auto_promotion=False)
    assert max(green_weights(w)) == 0 and w.active() == "blue"
    assert w.swarm.get("web-green").replicas == 0


@pytest.mark.parametrize(("setup", "request_", "message"), [
    ("rest", "promote", "web: nothing to promote: the app is Stable"),
    ("verifying", "promote", "web: nothing to promote: the app is Verifying (deploy "),
    ("rest", "abort", "web: nothing to abort: the app is Stable"),
    ("verifying", "abort", "web: cannot abort in Verifying"),
])
def test_promote_and_abort_are_refused_in_the_wrong_phase_naming_it(setup, request_, message):
    async def scenario(w: World) -> None:
        if setup == "verifying":
            await w.controller.deploy("web", "web:2")
            await settle(w, until=lambda phase: phase == "Verifying")
        with pytest.raises(Refused) as err:
            await getattr(w.controller, request_)("web")
        assert err.value.code == "phase" and err.value.message.startswith(message)

    run(scenario)


def test_a_paused_deploy_survives_a_restart_and_the_new_process_promotes_it():
    async def scenario(w: World) -> None:
        await _paused(w)
        later = restarted(w, auto_promotion=False)
        assert await later.tick() == "Paused"  # all from the labels
        assert (await later.controller.status("web"))["gate"]["promote"] == "swarmshift bluegreen promote web"
        await later.controller.promote("web")
        assert await settle(later) == "Stable"
        assert later.active() == "green"

    run(scenario, auto_promotion=False)


def test_auto_promotion_after_goes_on_by_itself_even_across_a_restart():
    async def scenario(w: World) -> None:
        await _paused(w)
        since = w.controller.apps["web"].state.since
        w.clock.advance(5)
        later = restarted(w, auto_promotion=False, auto_promotion_after="10s")
        assert await later.tick() == "Paused"
        view = await later.controller.status("web")
        assert view["gate"]["auto_promotion_at"] is not None
        while later.clock.now < since + 10:
            assert await later.tick() == "Paused"
        assert await settle(later) == "Stable"

    run(scenario, auto_promotion=False, auto_promotion_after="10s")


def test_the_status_shows_a_paused_deploy_since_when_and_what_to_run():
    views = []

    async def scenario(w: World) -> None:
        await _paused(w)
        views.append(await w.controller.status("web"))

    run(scenario, apps={"web": {"auto_promotion": False, "auto_promotion_after": "1h"}})
    view = views[0]
    assert view["phase"] == "Paused" and view["health"] == "progressing"
    gate = view["gate"]
    assert gate["promote"] == "swarmshift bluegreen promote web" and gate["abort"] == "swarmshift bluegreen abort web"
    assert gate["paused_since"] == view["since"] and gate["auto_promotion_at"] > gate["paused_since"]
    text = render_status([view])
    assert f"web: Paused since {view['since']} before switching to green (web:2): run `swarmshift bluegreen promote " \
           "web` to go on, or `swarmshift bluegreen abort web` to fail the deploy; it promotes itself at " in text


# --- the API ------------------------------------------------------------------------------------


def api(w: World, tmp_path, calls: Callable[[TestClient], Awaitable[None]]) -> Awaitable[None]:
    """The controller's API over `w`, with the token s3cret, running `calls` against it."""
    (tmp_path / "token").write_text("s3cret\n")

    async def main() -> None:
        client = TestClient(TestServer(make_app(w.controller, TokenFile(tmp_path / "token"))))
        await client.start_server()
        try:
            await calls(client)
        finally:
            await client.close()

    return main()


AUTH = {"Authorization": "Bearer s3cret"}


def test_the_api_promotes_and_aborts_with_the_token_and_answers_409_naming_the_phase(tmp_path):
    answers: list[tuple[str, int, dict]] = []

    async def scenario(w: World) -> None:
        async def calls(client: TestClient) -> None:
            async def post(what: str, **kwargs) -> None:
                resp = await client.post(f"/v1/apps/web/{what}", **kwargs)
                answers.append((what, resp.status, await resp.json()))

            await post("promote", headers=AUTH)  # at rest
            await post("abort", headers=AUTH)
            await _paused(w)
            await post("promote")  # no token
            await post("abort", headers={"Authorization": "Bearer wrong"})
            await post("promote", headers=AUTH, json={"force": True})
            await post("promote", headers=AUTH)
            await post("abort", headers=AUTH)  # traffic has moved
            resp = await client.post("/v1/apps/nope/promote", headers=AUTH)
            answers.append(("unknown", resp.status, await resp.json()))

        await api(w, tmp_path, calls)

    run(scenario, auto_promotion=False)
    statuses = [(what, status) for what, status, _ in answers]
    assert statuses == [("promote", 409), ("abort", 409), ("promote", 401), ("abort", 401), ("promote", 400),
                        ("promote", 202), ("abort", 409), ("unknown", 404)]
    assert answers[0][2] == {"error": "web: nothing to promote: the app is Stable; promote goes on with a deploy "
                                      "that is Paused", "code": "phase"}
    assert answers[4][2]["problems"] == ["body.force: unknown key (got True)"]
    promoted = answers[5][2]
    assert promoted["phase"] in ("Switching", "Verifying") and promoted["deploy"]["target"] == "green"
    assert answers[6][2]["code"] == "phase" and "cannot abort in" in answers[6][2]["error"]


def test_the_api_aborts_a_paused_deploy(tmp_path):
    answers = []

    async def scenario(w: World) -> None:
        async def calls(client: TestClient) -> None:
            await _paused(w)
            resp = await client.post("/v1/apps/web/abort", headers=AUTH)
            answers.append((resp.status, await resp.json()))
            view = await (await client.get("/v1/apps/web")).json()
            answers.append(view)

        await api(w, tmp_path, calls)

    run(scenario, auto_promotion=False)
    (status, body), view = answers
    assert status == 202 and body["phase"] == "Failed" and body["active"] == "blue"
    assert view["deploy"]["reason"] == "aborted by request in Paused; traffic stays on blue" and view["gate"] is None


def test_a_promote_while_another_request_runs_is_busy():
    async def scenario(w: World) -> None:
        await _paused(w)
        w.swarm.gate = asyncio.Event()
        first = asyncio.create_task(w.controller.abort("web"))
        for _ in range(100):
            if w.controller.apps["web"].request is not None:
                break
            await asyncio.sleep(0)
        from bluegreen.controller import Busy

        with pytest.raises(Busy, match="abort is running"):
            await w.controller.promote("web")
        w.swarm.gate.set()
        assert (await first).phase.value == "Failed"

    run(scenario, auto_promotion=False)


def test_gates_for_a_key_no_app_has_are_reported_at_start_and_by_check():
    from bluegreen.app_check import unmatched_gates
    from bluegreen.config import BlueGreenConfig

    config = BlueGreenConfig(apps={"web": {"auto_promotion": False}, "shop_web": {"smoke": []}})
    assert unmatched_gates(config, ["web", "blog_web"]) == [
        "apps.shop_web: no app has this key, so its gates apply to nothing (app keys: blog_web, web)"]
    logs = []

    async def scenario(w: World) -> None:
        with capture_logs() as captured:
            await w.controller.start()
            await w.controller.stop()
        logs.extend(captured)

    run(scenario, apps={"shop_web": {"auto_promotion": False}})
    [event] = [e for e in logs if e["event"] == "gates_unmatched"]
    assert event["problems"] == ["apps.shop_web: no app has this key, so its gates apply to nothing (app keys: web)"]
