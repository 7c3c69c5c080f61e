"""The blue-green controller's own Prometheus metrics, served at /metrics."""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

from bluegreen.apps import Color
from bluegreen.state import Phase

disable_created_metrics()


class Telemetry:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.active_color = Gauge(
            "swarmshift_bluegreen_active_color", "1 for the color of record (verified, taking traffic at rest), else 0.",
            ["app", "color"], registry=r,
        )
        self.phase = Gauge(
            "swarmshift_bluegreen_phase", "1 for the phase the app is in, else 0.", ["app", "phase"], registry=r,
        )
        self.deploys = Counter(
            "swarmshift_bluegreen_deploys", "Deploys that ended, by result (succeeded, rolled-back, failed).",
            ["app", "result"], registry=r,
        )
        self.rollbacks = Counter(
            "swarmshift_bluegreen_rollbacks",
            "Traffic sent back to the previous color, by reason (checks, alert, request, router, restart).",
            ["app", "reason"], registry=r,
        )
        self.switch_duration = Histogram(
            "swarmshift_bluegreen_switch_duration_seconds",
            "From handing the router a new routing to the router confirming it loaded.",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30), registry=r,
        )

    def show(self, app: str, active: Color, phase: Phase) -> None:
        for color in Color:
            self.active_color.labels(app, color.value).set(1 if color is active else 0)
        for each in Phase:
            self.phase.labels(app, each.value).set(1 if each is phase else 0)

    def forget(self, app: str) -> None:
        """Drop the series of an app whose services are gone: dashboards don't show it frozen, memory stays bounded.

        The counters go too; an app that comes back starts them from 0, which rate() reads as a reset.
        """
        for color in Color:
            with contextlib.suppress(KeyError):
                self.active_color.remove(app, color.value)
        for each in Phase:
            with contextlib.suppress(KeyError):
                self.phase.remove(app, each.value)
        for counter in (self.deploys, self.rollbacks):
            for labels in list(counter._metrics):  # noqa: SLF001 - prometheus_client offers no per-prefix removal
                if labels[0] == app:
                    counter.remove(*labels)
