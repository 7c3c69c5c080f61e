"""The canary analysis against Prometheus: the `Analyst` interface the observer asks, and its Prometheus implementation.

The queries are bluegreen.canary's (pure); this module only runs them and turns the answers into
a `CanaryReading`. An answer Prometheus cannot give is a reading with `error` set, never an
exception and never a pass: the machine keeps the canary waiting, then rolls it back.
"""

from __future__ import annotations

import asyncio
import math
from typing import Protocol

from bluegreen.apps import App, Color
from bluegreen.canary import PROVIDERS, CanaryReading, queries
from swarmshift import logs
from swarmshift.prometheus import Prometheus, PrometheusUnavailable, QueryError

log = logs.get("bluegreen")


class Analyst(Protocol):
    """Measures one color's canary over the last `window` seconds."""

    async def analyse(self, app: App, color: Color, window: float, quantile: float) -> CanaryReading: ...


class NoAnalyst:
    """What a controller built without an analyst has: every reading is unavailable, so no canary ever passes."""

    async def analyse(self, app: App, color: Color, window: float, quantile: float) -> CanaryReading:
        return CanaryReading(window=window, error="the controller has no Prometheus to analyse the canary with")


class PrometheusAnalyst:
    """The canary's requests, 5xx answers and latency quantile, from Traefik's service metrics in Prometheus."""

    def __init__(self, prometheus: Prometheus, provider: str) -> None:
        self.prometheus = prometheus
        self.provider = provider  # Traefik's name of the provider our documents go through: file or http

    @classmethod
    def from_config(cls, config) -> PrometheusAnalyst | None:  # noqa: ANN001 - BlueGreenConfig; avoids an import cycle
        """None without prometheus.url or a Traefik router (the config refuses a canary then anyway)."""
        provider = PROVIDERS.get(config.router.kind)
        if not config.prometheus.url or provider is None:
            return None
        return cls(Prometheus(config.prometheus.url, timeout=config.prometheus.timeout, retries=0), provider)

    async def analyse(self, app: App, color: Color, window: float, quantile: float) -> CanaryReading:
        q = queries(app.name, color, self.provider, window, quantile)
        try:
            requests, errors, latency = await asyncio.gather(*(self.prometheus.query(text) for text in q.all()))
        except QueryError as err:
            # As for the checks: Prometheus's answer quotes the query, and views need no token.
            log.error("canary_query_refused", app=app.name, color=color.value, error=str(err))
            return CanaryReading(window=window, error="Prometheus refused the query (logged as canary_query_refused)")
        except PrometheusUnavailable as err:
            return CanaryReading(window=window, error=f"Prometheus unavailable: {err}")
        total = _one(requests)
        if total is None or total <= 0:
            return CanaryReading(window=window, requests=0.0, errors=0.0)
        return CanaryReading(window=window, requests=total, errors=_one(errors) or 0.0, latency=_one(latency))


def _one(samples: list) -> float | None:  # noqa: ANN001 - swarmshift.prometheus.Sample
    """The value of a `sum(...)` answer: None for no sample (NaN: 0/0, no request measured)."""
    values = [s.value for s in samples if not math.isnan(s.value)]
    return max(values) if values else None
