"""The autoscaler daemon's settings: the `--config` file's daemon keys, flags and SWARMSHIFT_* variables.

The same file's `defaults:` and `services:` sections hold scaling policies; `autoscaler.policy`
validates those.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from autoscaler.sources.prometheus import CPU_QUERY, MEMORY_QUERY, SERVICE_LABEL, TASK_LABEL
from swarmshift.config import Duration, Strict
from swarmshift.daemon import DaemonSettings
from swarmshift.notify import NotifySettings


class PrometheusSettings(Strict):
    url: str | None = None
    rate_window: Duration = 60.0  # the range of rate(); with a 15 s scrape, 1m holds four samples
    timeout: Duration = 10.0
    service_label: str = SERVICE_LABEL
    task_label: str = TASK_LABEL
    cpu_query: str = CPU_QUERY
    memory_query: str = MEMORY_QUERY


class DockerStatsSettings(Strict):
    # On a multi-node swarm the docker source sees only its own node's tasks: a service with tasks
    # elsewhere is held as missing data, unless this is true and it is scaled on the visible ones.
    allow_partial: bool = False


class AutoscalerConfig(DaemonSettings):
    # listen, token_file, selector, log_format, log_level and dry_run: DaemonSettings, as the controller's.
    source: Literal["auto", "prometheus", "docker"] = "auto"
    interval: Duration = 15.0
    events_file: str | None = None
    events_kept: int = Field(500, ge=1, le=100_000)
    # The events file is rotated past this size (one `.1` kept), so it cannot fill the disk.
    events_max_bytes: int = Field(10 * 1024 * 1024, ge=4096)
    docker_timeout: Duration = 10.0
    prometheus: PrometheusSettings = PrometheusSettings()
    docker_stats: DockerStatsSettings = DockerStatsSettings()
    # Named PromQL templates: the label swarmshift.autoscale.query=NAME picks one; `{{service}}`
    # is the service's name. Anyone who can label a service cannot make the daemon run other PromQL
    # unless allow_label_queries is true. Checked by autoscaler.policy.query_problems.
    queries: dict[str, str] = {}
    allow_label_queries: bool = False
    # Alerts acted on per POST /v1/alerts; the rest of a bigger notification is answered 429.
    max_alerts_per_request: int = Field(50, ge=1, le=1000)
    notify: NotifySettings = NotifySettings()
    # Policies: validated by autoscaler.policy, which reports their problems with the same format.
    defaults: dict[str, Any] = {}
    services: dict[str, Any] = {}

    @field_validator("interval")
    @classmethod
    def _interval(cls, value: float) -> float:
        if value < 1:
            raise ValueError("must be at least 1s")
        return value

    @property
    def effective_source(self) -> str:
        """`auto` means Prometheus when a URL is configured, else the Docker stats API."""
        if self.source == "auto":
            return "prometheus" if self.prometheus.url else "docker"
        return self.source
