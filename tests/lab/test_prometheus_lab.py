"""Lab tests proving the Prometheus, Alertmanager and real cAdvisor fixtures on the real lab."""

from __future__ import annotations

import contextlib
import threading
import time
import urllib.error
import urllib.request
import uuid

import pytest

from tests.support import lab

SERVICE = "container_label_com_docker_swarm_service_name"
MIB = 1024 * 1024


def cpu_rate_query(service: str) -> str:
    """Cores used per service, summed over its tasks and over the `cpu` label (total or per-CPU)."""
    return (f'sum by ({SERVICE}) '
            f'(rate(container_cpu_usage_seconds_total{{{SERVICE}="{service}"}}[{lab.RATE_WINDOW}]))')


def only_value(result: list[dict]) -> float:
    assert len(result) == 1, f"expected one series, got {result}"
    return float(result[0]["value"][1])


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def demo_service(swarm, demo_image: str, stem: str, **resources) -> tuple[str, int]:
    """One demo task with a host-mode port on this node; returns (service name, host port)."""
    port = lab.free_port()
    svc = swarm.service(stem, image=demo_image, replicas=1, publish={port: 8000}, **resources)
    lab.wait_for(f"the demo app on :{port}", lambda: http_ok(f"http://127.0.0.1:{port}/health"), 30)
    return svc.name, port


@contextlib.contextmanager
def burning(port: int, *, ms: int = 250, max_requests: int = 120, max_seconds: float = 30.0):
    """Keep one /burn request in flight until the block ends, at most max_requests or max_seconds."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        deadline = time.monotonic() + max_seconds
        for _ in range(max_requests):
            if stop.is_set() or time.monotonic() > deadline:
                return
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/burn?ms={ms}", timeout=10) as resp:
                    resp.read()
            except OSError as err:
                errors.append(err)
                return

    thread = threading.Thread(target=run, name="burn", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=15)
    assert not errors, f"/burn failed: {errors[0]!r}"


@pytest.mark.heavy
def test_cpu_rate_per_service_rises_under_burn_and_respects_the_limit(swarm, demo_image, prometheus):
    name, port = demo_service(swarm, demo_image, "cpu", cpu_limit=0.5)
    selector = f'{SERVICE}="{name}"'
    query = cpu_rate_query(name)

    # Two scrapes of the new task are needed before rate() returns anything.
    idle = only_value(prometheus.wait_query(query, bool, timeout=30))
    assert idle < 0.1, f"an idle demo task uses {idle:.3f} cores"

    assert prometheus.value(f"container_spec_cpu_quota{{{selector}}}") == 50_000
    assert prometheus.value(f"container_spec_cpu_period{{{selector}}}") == 100_000
    assert prometheus.value(f"container_spec_memory_limit_bytes{{{selector}}}") == 0

    with burning(port):
        started = time.monotonic()
        prometheus.wait_query(query, lambda r: r and only_value(r) > 0.2, timeout=30)
        # Let the rate window fill with loaded samples only before reading the plateau.
        time.sleep(max(0.0, started + lab.RATE_WINDOW_SECONDS + 2 - time.monotonic()))
        loaded = only_value(prometheus.query(query))

    assert loaded > 0.2 and loaded > idle + 0.15, f"loaded {loaded:.3f} vs idle {idle:.3f} cores"
    # The CFS quota holds the task at 0.5 cores; allow for rate()'s extrapolation at the edges.
    assert loaded <= 0.6, f"a task limited to 0.5 cores used {loaded:.3f}"


def test_working_set_rises_after_alloc(swarm, demo_image, prometheus):
    name, port = demo_service(swarm, demo_image, "mem", memory_limit=256 * MIB)
    selector = f'{SERVICE}="{name}"'
    query = f"sum by ({SERVICE}) (container_memory_working_set_bytes{{{selector}}})"

    before = only_value(prometheus.wait_query(query, bool, timeout=30))
    assert http_ok(f"http://127.0.0.1:{port}/alloc?mb=64")
    after = only_value(prometheus.wait_query(query, lambda r: r and only_value(r) > before + 48 * MIB,
                                             timeout=25))

    usage = prometheus.value(f"container_memory_usage_bytes{{{selector}}}")
    assert usage is not None and usage >= after - 4 * MIB, f"usage {usage} < working set {after}"
    assert prometheus.value(f"container_spec_memory_limit_bytes{{{selector}}}") == 256 * MIB
    # No CPU limit: cAdvisor exports the period but no quota series at all.
    assert prometheus.value(f"container_spec_cpu_period{{{selector}}}") == 100_000
    assert prometheus.query(f"container_spec_cpu_quota{{{selector}}}") == []


def fast_route(receiver: str) -> dict:
    # Small waits so that a firing alert is delivered within a couple of seconds.
    return {"receiver": receiver, "group_by": ["alertname"], "group_wait": "1s",
            "group_interval": "1s", "repeat_interval": "1h"}


def test_rule_alert_reaches_webhook_with_bearer_token(prometheus, alertmanager, webhook, tmp_path):
    token = uuid.uuid4().hex
    token_file = tmp_path / "webhook-token"
    token_file.write_text(token + "\n")
    am = alertmanager({
        "route": fast_route("hook"),
        "receivers": [{"name": "hook", "webhook_configs": [{
            "url": f"{webhook.url}/alerts",
            "send_resolved": False,
            "http_config": {"authorization": {"type": "Bearer", "credentials_file": str(token_file)}},
        }]}],
    })
    marker = uuid.uuid4().hex[:8]
    prometheus.add_rules(f"""
groups:
  - name: lab
    interval: 1s
    rules:
      - alert: SwarmshiftLabAlways
        expr: vector(1)
        labels: {{severity: page, marker: "{marker}"}}
        annotations: {{summary: always firing}}
""")
    # The alert fires before Prometheus knows the Alertmanager; the fixture's short resend delay
    # must still get it there.
    prometheus.set_alertmanager(am.url)

    delivery = webhook.next(timeout=30)
    assert delivery.path == "/alerts"
    assert delivery.headers.get("Authorization") == f"Bearer {token}"
    body = delivery.body
    assert body["version"] == "4"
    assert body["status"] == "firing"
    assert body["receiver"] == "hook"
    assert body["groupLabels"] == {"alertname": "SwarmshiftLabAlways"}
    [alert] = body["alerts"]
    assert alert["status"] == "firing"
    assert alert["labels"] == {"alertname": "SwarmshiftLabAlways", "severity": "page", "marker": marker}
    assert alert["annotations"] == {"summary": "always firing"}


def test_alert_posted_directly_is_delivered(alertmanager, webhook):
    am = alertmanager({
        "route": fast_route("hook"),
        "receivers": [{"name": "hook", "webhook_configs": [{"url": f"{webhook.url}/direct"}]}],
    })
    marker = uuid.uuid4().hex[:8]
    am.post_alert({"alertname": "SwarmshiftDirect", "marker": marker}, {"summary": "posted"})

    delivery = webhook.next(timeout=15)
    assert delivery.body["version"] == "4"
    assert delivery.body["status"] == "firing"
    assert [a["labels"]["marker"] for a in delivery.body["alerts"]] == [marker]
    assert [a["labels"]["marker"] for a in am.alerts()] == [marker]


def test_prometheus_restarts_on_the_same_port_and_storage(prometheus):
    prometheus.wait_query('up{job="cadvisor"} == 1', bool, timeout=15)
    count = 'count_over_time(up{job="cadvisor"}[10m])'
    before = only_value(prometheus.query(count))
    url = prometheus.url

    prometheus.stop()
    with pytest.raises(OSError):
        prometheus.query("up")

    prometheus.start()
    assert prometheus.url == url
    # The samples from before the outage are still there, and scraping goes on.
    prometheus.wait_query(count, lambda r: r and only_value(r) > before, timeout=15)
