"""The autoscaler's own Prometheus metrics, served at /metrics."""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

# The *_created series double every counter's size on /metrics and no dashboard here uses them.
disable_created_metrics()


class Telemetry:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.scale_events = Counter(
            "swarmshift_autoscaler_scale_events", "Replica changes made (a --dry-run daemon makes none).",
            ["service", "direction"], registry=r,
        )
        self.desired = Gauge(
            "swarmshift_autoscaler_desired_replicas", "Replicas the last decision asked for.", ["service"], registry=r
        )
        self.current = Gauge(
            "swarmshift_autoscaler_current_replicas", "Replicas in the service spec when last read.", ["service"], registry=r
        )
        self.metric_value = Gauge(
            "swarmshift_autoscaler_metric_value",
            "The value each metric had in the last decision (utilisation % or the query's per-replica value).",
            ["service", "metric"], registry=r,
        )
        self.metric_target = Gauge(
            "swarmshift_autoscaler_metric_target", "The policy's target for each metric.", ["service", "metric"], registry=r
        )
        self.loop_duration = Histogram(
            "swarmshift_autoscaler_loop_duration_seconds", "Wall time of one evaluation loop.",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30), registry=r,
        )
        self.source_up = Gauge(
            "swarmshift_autoscaler_metrics_source_up", "1 when the metrics source answered in the last loop.", registry=r
        )
        self.services = Gauge("swarmshift_autoscaler_services", "Services opted in to autoscaling.", registry=r)

    def forget(self, service: str) -> None:
        """Drop the series of a service that left scope, so dashboards don't show it frozen and memory stays bounded."""
        for gauge in (self.desired, self.current):
            with contextlib.suppress(KeyError):
                gauge.remove(service)
        # The counter too: a service that comes back starts from 0, which rate() reads as a reset,
        # and series of services long gone must not pile up in memory and on /metrics.
        for metric in (self.metric_value, self.metric_target, self.scale_events):
            for labels in list(metric._metrics):  # noqa: SLF001 - prometheus_client offers no per-prefix removal
                if labels[0] == service:
                    metric.remove(*labels)
