"""Alerts scale once: re-sent, retried, after a restart or in a batch with bad ones, over the Swarm held in memory."""

from __future__ import annotations

import asyncio

from autoscaler.loop import Autoscaler
from autoscaler.policy import ALERTS_LABEL
from swarmshift import alerts
from swarmshift.alerts import alert_key, decode_seen
from tests.support.memory import Clock, MemorySwarm

LABELS = {"swarmshift.autoscale": "true", "swarmshift.autoscale.max": "20", "swarmshift.autoscale.mode": "alert"}


def _alert(service: str = "web", fingerprint: str = "f1", starts: str = "2025-06-15T15:00:00Z",
           **labels: str) -> dict:
    return {"status": "firing", "fingerprint": fingerprint, "startsAt": starts,
            "labels": {"alertname": "HighLoad", "swarmshift_action": "scale_up", "service": service, **labels}}


def notification(*items: dict) -> alerts.Notification:
    return alerts.parse({"version": "4", "status": "firing", "alerts": list(items)})


def swarm_with(*names: str, **labels: str) -> MemorySwarm:
    swarm = MemorySwarm()
    for name in names:
        swarm.add(name, image=f"{name}:1", replicas=2, labels={**LABELS, **labels})
    return swarm


def scaler(swarm: MemorySwarm, clock: Clock | None = None, **options) -> Autoscaler:
    return Autoscaler(swarm, source=None, clock=clock or Clock(), **options)  # type: ignore[arg-type] - alerts only


def outcomes(results) -> list[tuple[str, int]]:
    return [(r.outcome, r.status) for r in results]


def test_an_alert_re_sent_ten_times_with_cooldown_0_scales_once():
    swarm, clock = swarm_with("web"), Clock()
    daemon = scaler(swarm, clock)
    results = []
    for _ in range(10):
        results += asyncio.run(daemon.on_alerts(notification(_alert())))
        clock.advance(60)  # well past the cooldown, which is 0 anyway
    assert outcomes(results) == [("scaled", 200)] + [("repeat", 200)] * 9
    assert swarm.get("web").replicas == 3
    # The key travelled in the scale's own write, with the state label.
    [(service, changes)] = swarm.writes
    assert changes["replicas"] == 3 and ALERTS_LABEL in changes["labels"]


def test_a_restarted_daemon_does_not_scale_again_for_the_same_alert():
    swarm = swarm_with("web")
    assert outcomes(asyncio.run(scaler(swarm).on_alerts(notification(_alert())))) == [("scaled", 200)]
    restarted = scaler(swarm)  # a new process: nothing in memory, only the labels
    assert outcomes(asyncio.run(restarted.on_alerts(notification(_alert())))) == [("repeat", 200)]
    assert swarm.get("web").replicas == 3


def test_the_same_alert_firing_again_later_acts_again():
    swarm = swarm_with("web")
    daemon = scaler(swarm)
    asyncio.run(daemon.on_alerts(notification(_alert())))
    again = asyncio.run(daemon.on_alerts(notification(_alert(starts="2025-06-15T16:00:00Z"))))
    assert outcomes(again) == [("scaled", 200)]
    assert swarm.get("web").replicas == 4


def test_two_daemons_racing_on_one_alert_scale_once():
    swarm = swarm_with("web")
    a, b = scaler(swarm), scaler(swarm)

    async def both():
        return await asyncio.gather(a.on_alerts(notification(_alert())), b.on_alerts(notification(_alert())))

    first, second = asyncio.run(both())
    assert sorted(outcomes(first + second)) == [("repeat", 200), ("scaled", 200)]
    assert swarm.get("web").replicas == 3


def test_a_bad_alert_in_a_batch_gets_its_own_error_and_the_good_ones_act():
    swarm = swarm_with("web", "api")
    batch = notification(_alert("web"), _alert("nope", fingerprint="f2"), _alert("api", fingerprint="f3", step="x"),
                         _alert("api", fingerprint="f4"))
    results = asyncio.run(scaler(swarm).on_alerts(batch))
    assert outcomes(results) == [("scaled", 200), ("rejected", 404), ("rejected", 422), ("scaled", 200)]
    assert results[1].detail == "no service named 'nope'"
    assert (swarm.get("web").replicas, swarm.get("api").replicas) == (3, 3)


def test_a_retried_batch_repeats_none_of_its_scales():
    swarm = swarm_with("web", "api")
    batch = notification(_alert("web"), _alert("nope", fingerprint="f2"), _alert("api", fingerprint="f3"))
    daemon = scaler(swarm)
    asyncio.run(daemon.on_alerts(batch))
    retried = asyncio.run(scaler(swarm).on_alerts(batch))  # Alertmanager retries the whole notification
    assert outcomes(retried) == [("repeat", 200), ("rejected", 404), ("repeat", 200)]
    assert (swarm.get("web").replicas, swarm.get("api").replicas) == (3, 3)


def test_alerts_beyond_the_cap_are_answered_without_acting():
    swarm = swarm_with(*(f"s{i}" for i in range(5)))
    batch = notification(*(_alert(f"s{i}", fingerprint=f"f{i}") for i in range(5)))
    results = asyncio.run(scaler(swarm, max_alerts=3).on_alerts(batch))
    assert outcomes(results) == [("scaled", 200)] * 3 + [("rejected", 429)] * 2
    assert results[3].detail == "over the cap of 3 alerts per notification: not looked at (alert 4 of 5)"
    assert [swarm.get(f"s{i}").replicas for i in range(5)] == [3, 3, 3, 2, 2]


def test_an_unexpected_failure_answers_that_alert_only():
    swarm = swarm_with("web", "api")

    class Broken(Exception):
        pass

    original = swarm.service

    async def service(name: str):
        if name == "web":
            raise Broken("boom")
        return await original(name)

    swarm.service = service  # type: ignore[method-assign]
    results = asyncio.run(scaler(swarm).on_alerts(notification(_alert("web"), _alert("api", fingerprint="f2"))))
    assert outcomes(results) == [("error", 500), ("scaled", 200)]


def test_the_seen_list_is_bounded():
    swarm = swarm_with("web", **{"swarmshift.autoscale.max": "200"})
    daemon = scaler(swarm)
    sent = [_alert(fingerprint=f"f{i}") for i in range(alerts.SEEN_KEEP + 5)]
    for item in sent:
        asyncio.run(daemon.on_alerts(notification(item)))
    kept = decode_seen(swarm.get("web").labels[ALERTS_LABEL])
    assert len(kept) == alerts.SEEN_KEEP
    assert kept[-1] == alert_key(notification(sent[-1]).alerts[0])


def test_a_held_alert_is_not_remembered_so_a_re_send_may_act_later():
    swarm = swarm_with("web", **{"swarmshift.autoscale.max": "2"})
    daemon = scaler(swarm)
    assert outcomes(asyncio.run(daemon.on_alerts(notification(_alert())))) == [("held", 200)]
    assert ALERTS_LABEL not in swarm.get("web").labels
