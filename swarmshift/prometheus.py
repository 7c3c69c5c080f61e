"""The Prometheus access layer: instant queries off the event loop, with a timeout and retries."""

from __future__ import annotations

import asyncio
import math
import random
from dataclasses import dataclass

import requests
from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
from urllib3.util.retry import Retry

from swarmshift import logs

log = logs.get("swarmshift.prometheus")


class PrometheusUnavailable(Exception):
    """Prometheus did not answer, or answered with a server error, even after retries."""


class QueryError(Exception):
    """Prometheus refused the query itself (HTTP 400/422): a bad expression, not an outage."""


@dataclass(frozen=True)
class Sample:
    labels: dict[str, str]
    value: float


class Prometheus:
    def __init__(self, url: str, *, timeout: float = 10.0, retries: int = 2, backoff: float = 0.5) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.requests = 0  # HTTP queries made, for benchmarks and loop-cost logging
        # What errors (and so logs) show of the URL: never a user:password@ in it.
        self._shown = logs.redact_url(self.url) if "@" in self.url else self.url
        # The client's own urllib3 retries would hide outages behind long waits; ours are bounded.
        self._client = PrometheusConnect(url=self.url, retry=Retry(total=0), timeout=timeout)

    def _query(self, promql: str, keep_nan: bool = False) -> list[Sample]:
        self.requests += 1
        raw = self._client.custom_query(query=promql)
        if len(raw) == 2 and not isinstance(raw[0], dict):
            raw = [{"metric": {}, "value": raw}]  # a scalar result: [time, "value"]
        samples = []
        for item in raw:
            value = item.get("value")
            if not value:
                continue
            number = float(value[1])
            if math.isnan(number) and not keep_nan:
                continue  # NaN (0/0 in PromQL) means "no data" here, never a value to act on
            samples.append(Sample(labels=dict(item.get("metric", {})), value=number))
        return samples

    async def query(self, promql: str, *, keep_nan: bool = False) -> list[Sample]:
        """An instant vector; QueryError for a bad expression, PrometheusUnavailable after the retries.

        NaN samples are dropped unless `keep_nan`; +Inf and -Inf are kept: what they mean is the caller's.
        """
        delay = self.backoff
        for attempt in range(1, self.retries + 2):
            try:
                return await asyncio.wait_for(asyncio.to_thread(self._query, promql, keep_nan), timeout=self.timeout + 1)
            except PrometheusApiClientException as err:
                if str(err).startswith(("HTTP Status Code 400", "HTTP Status Code 422")):
                    raise QueryError(str(err)[:300]) from err
                if attempt > self.retries:
                    raise PrometheusUnavailable(f"{self._shown}: {logs.redact(str(err), self.url)[:300]}") from err
            except (TimeoutError, requests.RequestException, ValueError) as err:
                if attempt > self.retries:
                    detail = logs.redact(str(err), self.url)[:300] or type(err).__name__
                    raise PrometheusUnavailable(f"{self._shown}: {detail}") from err
            await asyncio.sleep(delay + random.uniform(0, delay / 2))
            delay *= 2
        raise AssertionError("unreachable")
