"""The canary step's analysis, pure: the policy, the PromQL that measures one color's Traefik service, and the verdict.

A canary deploy sends `weight` percent of the traffic to the new color for `analysis` seconds
before the full switch. Traefik counts what that color's own service answered
(`traefik_service_requests_total` and `traefik_service_request_duration_seconds`, labelled
`service="<app>-<color>@<provider>"`: the loadBalancer child of the app's weighted service that
bluegreen.routers.traefik_doc generates); Prometheus scrapes Traefik, and every `interval` the
controller asks Prometheus about the canary so far. Nothing here does I/O: the queries are built
from plain values (`queries`), the answer comes back as a `CanaryReading`, and `breach` and
`verdict` are what the state machine decides with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bluegreen.apps import Color
from bluegreen.routers.traefik_doc import color_service

# What each Traefik router kind is to Traefik: the provider its objects are named after.
PROVIDERS = {"traefik-file": "file", "traefik-http": "http"}


@dataclass(frozen=True)
class CanaryPolicy:
    """The canary step of one app, from the config (bluegreen.config.CanarySettings); seconds and fractions."""

    weight: int  # percent of the traffic on the new color during the analysis, 1-50
    analysis: float  # how long the new color takes that share before the full switch
    interval: float  # how often Prometheus is asked about the canary so far
    max_error_rate: float  # a 5xx share above this is a breach (0.05: 5 %)
    max_latency: float | None  # a latency quantile above this is a breach; None: shown, not judged
    min_requests: int  # fewer requests in the window so far: no verdict yet
    require_traffic: bool  # at the window's end with fewer than min_requests: fail (True) or pass (False)
    grace: float  # how long past the window an analysis Prometheus cannot answer may wait, then roll back
    latency_quantile: float = 0.99


@dataclass(frozen=True)
class CanaryQueries:
    """The three instant queries of one analysis: requests and 5xx answers in the window, and the latency quantile."""

    requests: str
    errors: str
    latency: str

    def all(self) -> tuple[str, str, str]:
        return self.requests, self.errors, self.latency


@dataclass(frozen=True)
class CanaryReading:
    """What Prometheus said about the canary over its window so far; plain data for the machine.

    `error` set: Prometheus could not answer (unreachable, refused the query, a bad answer); the
    counts are then None. `requests` 0 with no error: Traefik counted no request of the color
    (no traffic yet, or Prometheus does not scrape Traefik's service metrics).
    """

    window: float  # seconds the queries covered, counted back from when they ran
    requests: float | None = None
    errors: float | None = None
    latency: float | None = None  # the quantile in seconds; None when no request was measured
    error: str | None = None

    @property
    def available(self) -> bool:
        return self.error is None and self.requests is not None

    @property
    def error_rate(self) -> float | None:
        if not self.available or not self.requests:
            return None
        return (self.errors or 0.0) / self.requests

    def summary(self, policy: CanaryPolicy) -> str:
        """One line for reasons and status: requests, error rate and latency over the window."""
        if self.error is not None:
            return f"no analysis: {self.error}"
        rate = self.error_rate
        latency = "no latency measured" if self.latency is None else \
            f"p{_quantile_name(policy.latency_quantile)} latency {_ms(self.latency)}"
        rate_text = "no error rate" if rate is None else f"error rate {rate:.4g}"
        return f"{_count(self.requests)} requests, {rate_text}, {latency} over {self.window:g}s"


def traefik_service(app: str, color: Color, provider: str) -> str:
    """The Traefik service name of `app`'s `color`, as Traefik labels its metrics: `web-green@file`."""
    return f"{color_service(app, color)}@{provider}"


def _label_value(value: str) -> str:
    # App keys are DNS labels with `_`; escaped anyway, so no name can end the selector early.
    return value.replace("\\", "\\\\").replace('"', '\\"')


def promql_range(seconds: float) -> str:
    """A PromQL range duration in whole seconds, at least one."""
    return f"{max(1, math.ceil(seconds - 1e-9))}s"


def window_for(elapsed: float, policy: CanaryPolicy) -> float:
    """The seconds an analysis covers at `elapsed` into the canary: the canary so far, at least one interval, at most the window."""
    return float(max(math.ceil(policy.interval - 1e-9), min(math.ceil(elapsed - 1e-9), math.ceil(policy.analysis - 1e-9)), 1))


def queries(app: str, color: Color, provider: str, window: float, quantile: float = 0.99) -> CanaryQueries:
    """The PromQL of one analysis of `app`'s `color` behind Traefik's `provider` (file or http), over `window` seconds.

    The selector is the exact service name, so it matches one color of one app: not the app's
    weighted service (`web@file`), not the other color, not the controller's trial objects
    (`web-trial…`). Errors are `or vector(0)`: a color that answered no 5xx has no such series.
    """
    selector = f'service="{_label_value(traefik_service(app, color, provider))}"'
    r = promql_range(window)
    return CanaryQueries(
        requests=f"sum(increase(traefik_service_requests_total{{{selector}}}[{r}]))",
        errors=f'sum(increase(traefik_service_requests_total{{{selector},code=~"5.."}}[{r}])) or vector(0)',
        latency=(f"histogram_quantile({quantile:g}, sum by (le) "
                 f"(rate(traefik_service_request_duration_seconds_bucket{{{selector}}}[{r}])))"),
    )


def breach(reading: CanaryReading, policy: CanaryPolicy) -> str | None:
    """Why the canary fails on this reading (the metric, its value and the threshold), or None.

    Only a reading with at least `min_requests` requests can breach: fewer is no verdict.
    """
    if not reading.available or (reading.requests or 0.0) < policy.min_requests:
        return None
    rate = reading.error_rate
    if rate is not None and rate > policy.max_error_rate:
        return (f"error rate {rate:.4g} ({_count(reading.errors)} of {_count(reading.requests)} requests answered "
                f"5xx over {reading.window:g}s) is above canary.max_error_rate {policy.max_error_rate:g}")
    if policy.max_latency is not None and reading.latency is not None and reading.latency > policy.max_latency:
        return (f"p{_quantile_name(policy.latency_quantile)} latency {_ms(reading.latency)} over {reading.window:g}s "
                f"is above canary.max_latency {_ms(policy.max_latency)}")
    return None


def _count(value: float | None) -> str:
    return "?" if value is None else f"{value:.0f}" if abs(value - round(value)) < 0.05 else f"{value:.1f}"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def _quantile_name(q: float) -> str:
    return f"{q * 100:g}"
