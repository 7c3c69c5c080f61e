"""Scale events that only the service's state label remembers are restored to the event log once."""

from __future__ import annotations

from autoscaler.decide import History, ScaleEvent
from autoscaler.events import EventLog
from autoscaler.loop import Autoscaler, _iso


def recover(log: EventLog, saved: History) -> list[tuple]:
    scaler = Autoscaler(swarm=None, source=None, events=log)  # type: ignore[arg-type] - no I/O here
    scaler._recover_events("web", saved)
    return [(e["from"], e["to"], e.get("recovered", False)) for e in log.recent(service="web")]


def test_a_scale_missing_from_the_log_is_recovered(tmp_path):
    saved = History((), (ScaleEvent(1_700_000_000, 1, 2), ScaleEvent(1_700_000_030, 2, 4)), 1_700_000_030)
    log = EventLog(path=tmp_path / "events.jsonl")
    log.record({"service": "web", "from": 1, "to": 2, "at": _iso(1_700_000_000)})
    assert recover(log, saved) == [(1, 2, False), (2, 4, True)]
    log.flush()
    assert len((tmp_path / "events.jsonl").read_text().splitlines()) == 2


def test_nothing_is_recovered_twice_or_for_other_services():
    saved = History((), (ScaleEvent(1_700_000_000, 3, 1),), 1_700_000_000)
    log = EventLog()
    log.record({"service": "api", "from": 3, "to": 1, "at": _iso(1_700_000_000)})
    assert recover(log, saved) == [(3, 1, True)]
    assert recover(log, saved) == [(3, 1, True)]
