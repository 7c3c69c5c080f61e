"""What the controller keeps in memory per app: none of it is needed to resume after a restart."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bluegreen.apps import App
from bluegreen.canary import CanaryReading
from bluegreen.phases import Progress
from bluegreen.state import AppState, Routing

if TYPE_CHECKING:
    from bluegreen.observe import Reading


@dataclass
class CanaryTrack:
    """When the canary of one deploy was last analysed and what came back: it paces the Prometheus queries."""

    key: tuple[str, float]  # the deploy id and when its Canary phase began
    next_at: float = 0.0  # wall clock: the next analysis is due then
    failures: int = 0  # analyses in a row Prometheus could not answer (the backoff)
    last: CanaryReading | None = None
    last_at: float | None = None


@dataclass
class Runtime:
    """What the controller keeps in memory per app; none of it is needed to resume after a restart."""

    name: str  # the app's key (bluegreen.apps.app_key)
    app: App | None = None  # as last read from the labels
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    next_at: float = 0.0  # monotonic time of the next tick
    progress: Progress = field(default_factory=Progress)
    state: AppState | None = None
    request: str | None = None  # the operator request running now
    reason: str = ""  # why the app entered its phase, as the last transition said
    problems: tuple[str, ...] = ()
    refused: dict[str, str] = field(default_factory=dict)  # service -> why it was refused a color the app has
    probe: dict[str, Any] | None = None  # the last probe round, for status
    smoke: dict[str, Any] | None = None  # the last smoke round, for status
    canary: CanaryTrack | None = None  # the canary analyses of the deploy in Canary, for pacing and status
    webhooks: dict[str, Any] | None = None  # the last round of webhook gates, for status
    unreachable: str | None = None  # the unreachable probe already logged
    history_problem: str | None = None  # the damaged history label already logged (history_reset)
    # The key of the alert being weighed by the tick under way (swarmshift.alerts.alert_key): the
    # executor records it in the same write as the rollback it causes, or refuses a repeat.
    alert_key: str | None = None
    observed_at: float = 0.0  # monotonic time of the last observation: the next tick is an interval after it
    routed: Routing | None = None  # what the router last reported or confirmed
    route_error: str | None = None  # why the router refused the last routing, until one is confirmed
    reading: Reading | None = None  # the last reading, as this process's own writes left it
    task: asyncio.Task | None = None

    def schedule(self, at: float) -> None:
        if at < self.next_at:
            self.next_at = at
            self.changed.set()
