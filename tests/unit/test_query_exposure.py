"""PromQL is the operator's: no endpoint that needs no token shows a query's text, and the sources act only on loads."""

from __future__ import annotations

import asyncio
import math

import pytest
from aiohttp.test_utils import TestClient, TestServer

from autoscaler.api import make_app
from autoscaler.loop import Autoscaler
from autoscaler.policy import PolicyFile
from autoscaler.sources import Target, Usage
from autoscaler.sources.prometheus import PrometheusSource
from bluegreen.apps import Color
from bluegreen.config import PromCheck
from bluegreen.observe import Checks
from swarmshift.prometheus import QueryError, Sample
from tests.support.memory import Clock, MemorySwarm

SECRET_QUERY = 'sum(rate(internal_billing_total{tenant="acme",service="{{service}}"}[1m]))'


class Busy:
    """A custom query that answers 100 for every service: five times the target of 20 per replica."""

    name, requests = "memory", 0

    async def collect(self, targets):
        return {t.service: Usage(query=100.0) for t in targets}


def test_no_unauthenticated_endpoint_shows_the_query():
    swarm = MemorySwarm()
    swarm.add("web", image="web:1", replicas=1, labels={
        "swarmshift.autoscale": "true", "swarmshift.autoscale.max": "8", "swarmshift.autoscale.query": "billing",
        "swarmshift.autoscale.query.target": "20"})
    daemon = Autoscaler(swarm, Busy(), PolicyFile(queries={"billing": SECRET_QUERY}), clock=Clock())

    async def main() -> list[str]:
        [ev] = await daemon.evaluate()
        assert ev.scaled
        client = TestClient(TestServer(make_app(daemon, token=None)))
        await client.start_server()
        try:
            bodies = []
            for path in ("/v1/events", "/metrics", "/healthz"):
                resp = await client.get(path)
                assert resp.status == 200
                bodies.append(await resp.text())
            return bodies
        finally:
            await client.close()

    for body in asyncio.run(main()):
        assert "internal_billing_total" not in body and "acme" not in body


class Answers:
    """A Prometheus client that answers every query with `value`, or refuses it quoting the query."""

    requests = 0

    def __init__(self, value: float | None = None) -> None:
        self.value = value

    async def query(self, promql: str, *, keep_nan: bool = False):
        if self.value is None:
            raise QueryError(f'bad_data: 1:5: parse error: unexpected identifier in "{promql}"')
        return [Sample({}, self.value)]


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan, -3.0])
def test_a_custom_query_that_is_not_a_load_is_no_data(value):
    source = PrometheusSource(Answers(value))  # type: ignore[arg-type] - the one call it makes
    usage = asyncio.run(source.collect([Target("web", frozenset({"t1"}), query="sum(x)")]))["web"]
    assert usage.query is None and "not a load" in (usage.query_error or "")


def test_a_check_prometheus_refuses_shows_no_query_on_the_apps_endpoint():
    check = PromCheck(name="errors", query='sum(secret_metric{app="{{app}}"})', threshold=1, comparison="<")
    checks = Checks(Answers(None), [check])  # type: ignore[arg-type]

    class App:
        name = "web"

        def service(self, color):
            return f"web-{color}"

    [result] = asyncio.run(checks.run(App(), Color.GREEN))  # type: ignore[arg-type]
    assert not result.ok and "secret_metric" not in result.detail
