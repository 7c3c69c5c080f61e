"""The autoscaler daemon on the real lab: real Swarm, real Prometheus and Alertmanager, real load."""

from __future__ import annotations

import json
import time
from datetime import datetime

import pytest

from tests.support import lab
from tests.support.load import OverlayLoad

KNOB_QUERY = 'max(swarmshift_test_load{service="{{service}}"})'
# Labels name the operator's PromQL templates; a daemon scaling knob_labels services needs this in its config.
KNOB = {"queries": {"knob": KNOB_QUERY}}


def knob_labels(**extra: str) -> dict[str, str]:
    """A service scaled on the hand-turned gauge: value / 10 replicas (the daemon's config needs KNOB)."""
    return {
        "swarmshift.autoscale": "true",
        "swarmshift.autoscale.max": "5",
        "swarmshift.autoscale.query": "knob",
        "swarmshift.autoscale.query.target": "10",
        **{f"swarmshift.autoscale.{k}": v for k, v in extra.items()},
    }


def wait_replicas(swarm, name: str, want: int, timeout: float, daemon=None) -> float:
    """Wait until the service spec asks for `want` replicas; returns when (monotonic).

    With `daemon`, also wait for its `service_scaled` line: the daemon logs a scale just after
    the write lands, so a test that sees the new count may otherwise read the log a moment early.
    """
    lab.wait_for(f"{name} to have {want} replicas", lambda: swarm.replicas(name) == want, timeout, interval=0.2)
    reached = time.monotonic()
    if daemon is not None:
        lab.wait_for(f"the service_scaled line for {name} -> {want}",
                     lambda: any(e["to"] == want for e in scaled(daemon, name)), 5, interval=0.1)
    return reached


def stays(swarm, name: str, want: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert swarm.replicas(name) == want, f"{name} changed from {want} replicas"
        time.sleep(0.25)


def wall(event: dict) -> float:
    return datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()


def scaled(daemon, service: str) -> list[dict]:
    return daemon.events("service_scaled", service=service)


# -- CPU, from each source ------------------------------------------------------------------


def cpu_service(swarm, demo_image, net, **labels):
    # A small limit, so that the demand below (8 burns of 100 ms a second) is above it on one and
    # on two tasks while needing only half a core: on two shared cores the other lanes' load must
    # not starve the burn the second scale-up is judged on.
    return swarm.service(
        "cpu", image=demo_image, networks=[net], cpu_limit=0.25,
        labels={"swarmshift.autoscale": "true", "swarmshift.autoscale.max": "4", "swarmshift.autoscale.cpu": "50",
                **{f"swarmshift.autoscale.{k}": v for k, v in labels.items()}},
    )


@pytest.mark.heavy
def test_cpu_load_scales_up_through_prometheus_then_down_after_the_window(
    swarm, demo_image, docker_client, prometheus, autoscaler_proc
):
    interval, window = 5, lab.RATE_WINDOW_SECONDS
    net = swarm.network()
    svc = cpu_service(swarm, demo_image, net, **{
        "scale_down.stabilization": "20s", "scale_down.policies": "pods=1/10s",
    })
    daemon = autoscaler_proc({"interval": interval, "prometheus": {"url": prometheus.url, "rate_window": f"{window}s"}})
    stays(swarm, svc.name, 1, 2 * interval)  # idle: nothing to do
    assert daemon.metric("swarmshift_autoscaler_metrics_source_up") == 1

    # About 0.8 cores of demand against one task limited to 0.25: 100 % of the limit, target 50 %.
    load = OverlayLoad(docker_client, net, svc.name, "/burn?ms=100", rate=8, max_seconds=120, max_requests=1000)
    onset = time.monotonic()
    with load:
        lab.wait_for("a scale-up", lambda: swarm.replicas(svc.name) > 1, 2 * interval + window + 15, interval=0.2)
        reaction = time.monotonic() - onset
        up = scaled(daemon, svc.name)[0]
        assert (up["from"], up["direction"], up["reason"], up["dry_run"]) == (1, "up", "scale_up", False)
        cpu = next(m for m in up["metrics"] if m["metric"] == "cpu")
        assert cpu["value"] > 50 * 1.1 and cpu["target"] == 50  # above target + tolerance: why it scaled
        # The same demand spread over two tasks is still above each limit: it keeps going.
        lab.wait_for("a second scale-up", lambda: swarm.replicas(svc.name) >= 3, 2 * interval + window + 20, interval=0.2)
        peak = max(e["to"] for e in scaled(daemon, svc.name))
    stopped = time.time()
    print(f"reaction {reaction:.1f}s, peak {peak} replicas")

    wait_replicas(swarm, svc.name, 1, 20 + window + 10 * (peak - 1) + 4 * interval + 15, daemon)
    downs = [e for e in scaled(daemon, svc.name) if e["direction"] == "down"]
    assert downs and all(e["from"] - e["to"] == 1 for e in downs), downs  # pods=1 per 10 s
    times = [wall(e) for e in downs]
    assert all(b - a >= 9.5 for a, b in zip(times, times[1:], strict=False)), times  # one step per 10 s
    last_up = max(wall(e) for e in scaled(daemon, svc.name) if e["direction"] == "up")
    # The scale-up's recommendation stays the highest in the window for 20 s after it was made.
    assert times[0] - last_up >= 20, "scaled down inside the 20 s stabilization window"
    assert times[0] - stopped < 20 + window + 2 * interval, "scale-down came later than the window allows"


@pytest.mark.heavy
def test_cpu_load_scales_up_through_docker_stats(swarm, demo_image, docker_client, autoscaler_proc):
    interval = 5
    net = swarm.network()
    svc = cpu_service(swarm, demo_image, net)
    daemon = autoscaler_proc({"interval": interval, "source": "docker"})
    stays(swarm, svc.name, 1, 2 * interval)
    with OverlayLoad(docker_client, net, svc.name, "/burn?ms=100", rate=8, max_seconds=60, max_requests=500):
        onset = time.monotonic()
        lab.wait_for("a scale-up", lambda: swarm.replicas(svc.name) > 1, 2 * interval + 15, interval=0.2)
        print(f"reaction {time.monotonic() - onset:.1f}s")
    up = scaled(daemon, svc.name)[0]
    assert up["from"] == 1 and up["direction"] == "up"
    assert next(m for m in up["metrics"] if m["metric"] == "cpu")["value"] > 50 * 1.1


# -- failures and restarts, on a hand-turned signal -------------------------------------------


def test_prometheus_outage_holds_everything_and_scaling_resumes(swarm, demo_image, prometheus, knob, autoscaler_proc):
    prometheus.add_target("knob", knob.address)
    svc = swarm.service("outage", image=demo_image, labels=knob_labels(**{"scale_down.stabilization": "0s"}))
    knob.set(svc.name, 30)
    daemon = autoscaler_proc({"interval": 2, "prometheus": {"url": prometheus.url}, **KNOB})
    wait_replicas(swarm, svc.name, 3, 30)

    prometheus.stop()
    knob.set(svc.name, 0)  # would mean "scale to min", if anyone could read it
    stays(swarm, svc.name, 3, 10)
    assert daemon.running
    assert daemon.get("/healthz")[0] == 200
    assert daemon.metric("swarmshift_autoscaler_metrics_source_up") == 0
    assert len(daemon.events("metrics_source_down")) == 1  # once per outage, not every loop

    prometheus.start()
    wait_replicas(swarm, svc.name, 1, 40, daemon)
    assert daemon.metric("swarmshift_autoscaler_metrics_source_up") == 1
    assert len(daemon.events("metrics_source_recovered")) == 1
    assert [e["to"] for e in scaled(daemon, svc.name)] == [3, 1]


def test_restart_during_cooldown_never_scales_early(swarm, demo_image, prometheus, knob, autoscaler_proc, tmp_path):
    prometheus.add_target("knob", knob.address)
    cooldown = 20
    svc = swarm.service("cool", image=demo_image, labels=knob_labels(cooldown=f"{cooldown}s"))
    knob.set(svc.name, 20)
    events_file = tmp_path / "events.jsonl"
    config = {"interval": 1, "events_file": str(events_file), "prometheus": {"url": prometheus.url}, **KNOB}
    first = autoscaler_proc(config, name="first")
    scaled_at = wait_replicas(swarm, svc.name, 2, 30)
    first.kill()
    # A kill can land between the replica write and the event record; emulate the worst case.
    # The state label on the service is the truth, and the next daemon restores the event.
    events_file.write_text("")
    knob.set(svc.name, 30)

    second = autoscaler_proc(config, name="second")
    stays(swarm, svc.name, 2, cooldown - (time.monotonic() - scaled_at) - 1.5)
    again = wait_replicas(swarm, svc.name, 3, 15, second)
    assert again - scaled_at >= cooldown - 1.5
    assert [(e["from"], e["to"]) for e in scaled(second, svc.name)] == [(2, 3)]
    assert second.events("service_held", service=svc.name, reason="cooldown")
    # The events file outlives the daemon, and a scale it missed is recovered from the label.
    served = json.loads(second.get(f"/v1/events?service={svc.name}")[1])["events"]
    assert [(e["from"], e["to"], e.get("recovered", False)) for e in served] == [(1, 2, True), (2, 3, False)]
    # The file is written by the daemon's writer thread, a moment after the event is served.
    lab.wait_for("both events in the file",
                 lambda: [json.loads(line)["to"] for line in events_file.read_text().splitlines()] == [2, 3], 5,
                 interval=0.1)


def test_two_daemons_never_double_scale(swarm, demo_image, prometheus, knob, autoscaler_proc):
    prometheus.add_target("knob", knob.address)
    svc = swarm.service("pair", image=demo_image, labels=knob_labels(max="6"))
    config = {"interval": 1, "prometheus": {"url": prometheus.url}, **KNOB}
    daemons = [autoscaler_proc(config, name="a"), autoscaler_proc(config, name="b")]
    for value, want in ((20, 2), (40, 4)):
        knob.set(svc.name, value)
        wait_replicas(swarm, svc.name, want, 30)
        stays(swarm, svc.name, want, 4)
    events = [e for d in daemons for e in scaled(d, svc.name)]
    assert sorted((e["from"], e["to"]) for e in events) == [(1, 2), (2, 4)], events


# -- alerts ---------------------------------------------------------------------------------


def alertmanager_config(daemon_url: str, token_file) -> dict:
    return {
        "route": {"receiver": "swarmshift", "group_by": ["alertname", "service"],
                  "group_wait": "0s", "group_interval": "1s", "repeat_interval": "2s"},
        "receivers": [{"name": "swarmshift", "webhook_configs": [{
            "url": f"{daemon_url}/v1/alerts", "send_resolved": True,
            "http_config": {"authorization": {"type": "Bearer", "credentials_file": str(token_file)}},
        }]}],
    }


def test_alert_rule_scales_through_alertmanager_and_a_wrong_token_changes_nothing(
    swarm, demo_image, prometheus, alertmanager, autoscaler_proc, tmp_path
):
    token, wrong = tmp_path / "token", tmp_path / "wrong"
    token.write_text("the-right-token\n")
    wrong.write_text("not-the-token\n")
    svc = swarm.service("alert", image=demo_image, labels={
        "swarmshift.autoscale": "true", "swarmshift.autoscale.max": "3",
        "swarmshift.autoscale.mode": "alert", "swarmshift.autoscale.cooldown": "60s",
    })
    daemon = autoscaler_proc({"interval": 2, "token_file": str(token), "prometheus": {"url": prometheus.url}})
    prometheus.add_rules(f"""
groups:
- name: swarmshift
  rules:
  - alert: DemoNeedsMore
    expr: vector(1)
    labels:
      swarmshift_action: scale_up
      service: {svc.name}
""")
    bad = alertmanager(alertmanager_config(daemon.url, wrong))
    prometheus.set_alertmanager(bad.url)
    lab.wait_for("a delivery with the wrong token", lambda: daemon.events("http_unauthorized"), 30)
    stays(swarm, svc.name, 1, 3)
    assert not scaled(daemon, svc.name)

    bad.close()
    good = alertmanager(alertmanager_config(daemon.url, token))
    prometheus.set_alertmanager(good.url)
    wait_replicas(swarm, svc.name, 2, 30, daemon)
    # Alertmanager re-sends every 2 s; the same alert acts once, its key written with the scale.
    stays(swarm, svc.name, 2, 6)
    events = scaled(daemon, svc.name)
    assert [(e["from"], e["to"], e["alert"], e["reason"]) for e in events] == [(1, 2, "DemoNeedsMore", "alert_scale_up")]
    assert swarm.client.api.inspect_service(svc.name)["Spec"]["Labels"].get("swarmshift.autoscale.state.alerts")


def test_alert_endpoint_rejects_bad_requests_and_scaling_is_notified(swarm, demo_image, autoscaler_proc, webhook, tmp_path):
    token = tmp_path / "token"
    token.write_text("t0ken")
    opted = swarm.service("opted", image=demo_image, labels={
        "swarmshift.autoscale": "true", "swarmshift.autoscale.max": "2", "swarmshift.autoscale.mode": "alert"})
    plain = swarm.service("plain", image=demo_image)
    # The first receiver never answers (a closed port): it must not delay the others or the loop.
    notify = {"webhooks": [f"http://127.0.0.1:{lab.free_port()}/dead", webhook.url + "/hook"], "retries": 2}
    daemon = autoscaler_proc({"interval": 2, "token_file": str(token), "source": "docker", "notify": notify})
    auth = {"Authorization": "Bearer t0ken", "Content-Type": "application/json"}

    def alert(service, action="scale_up", status="firing", **labels):
        return json.dumps({"version": "4", "status": status, "alerts": [{
            "status": status, "labels": {"alertname": "X", "swarmshift_action": action, "service": service, **labels},
            "fingerprint": "f1"}]}).encode()

    def post(body, headers=auth):
        status, reply = daemon.request("POST", "/v1/alerts", body, headers)
        return status, json.loads(reply or b"{}")

    assert post(alert(opted.name), {})[0] == 401
    assert post(alert(opted.name), {**auth, "Authorization": "Bearer nope"})[0] == 401
    status, reply = post(b"{not json")
    assert status == 400 and reply["error"].startswith("malformed JSON")
    status, reply = post(json.dumps({"version": "3", "alerts": []}).encode())
    assert status == 400 and any("version" in p for p in reply["problems"])
    assert post(b'"' + b"x" * (1024 * 1024 + 10) + b'"')[0] == 413
    assert post(alert("swarmshift-no-such-service"))[0] == 404
    assert post(alert(plain.name))[0] == 422
    assert post(alert(opted.name, action="explode"))[0] == 422
    assert post(alert(opted.name, step="0"))[0] == 422
    status, reply = post(alert(opted.name, status="resolved"))
    assert status == 200 and reply["results"][0]["outcome"] == "resolved"
    assert swarm.replicas(opted.name) == 1 and swarm.replicas(plain.name) == 1
    assert daemon.running

    status, reply = post(alert(opted.name, step="5"))
    assert status == 200 and reply["results"][0]["outcome"] == "scaled"
    assert swarm.replicas(opted.name) == 2  # clamped to max
    status, body = daemon.get(f"/v1/events?service={opted.name}")
    assert status == 200 and [(e["from"], e["to"]) for e in json.loads(body)["events"]] == [(1, 2)]
    assert daemon.metric("swarmshift_autoscaler_scale_events_total", service=opted.name, direction="up") == 1

    delivery = webhook.next(timeout=10)
    assert delivery.path == "/hook"
    assert (delivery.body["type"], delivery.body["service"], delivery.body["to"]) == ("service_scaled", opted.name, 2)
    assert delivery.body["text"].startswith(f"swarmshift: scaled {opted.name} from 1 to 2")
    lab.wait_for("the dead receiver to be given up", lambda: daemon.events("notification_failed"), 15)
    # The webhook URL may hold a token: the log shows its scheme and host only.
    dead = notify["webhooks"][0].removesuffix("/dead") + "/<redacted>"
    assert {e["url"] for e in daemon.events("notification_failed")} == {dead}


def test_check_reports_bad_labels_with_key_and_value(swarm, demo_image, tmp_path):
    import subprocess

    from tests.support.swarmshift_proc import SWARMSHIFT

    svc = swarm.service("bad", image=demo_image, wait=False, replicas=0, labels={
        "swarmshift.autoscale": "true", "swarmshift.autoscale.max": "3", "swarmshift.autoscale.cpu": "150"})
    result = subprocess.run([SWARMSHIFT, "autoscaler", "check"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert f"service {svc.name}: label swarmshift.autoscale.cpu: must be in (0, 100] (got '150')" in result.stderr


@pytest.mark.parametrize("flag", ["--dry-run"])
def test_dry_run_logs_and_changes_nothing(swarm, demo_image, prometheus, knob, autoscaler_proc, flag):
    prometheus.add_target("knob", knob.address)
    svc = swarm.service("dry", image=demo_image, labels=knob_labels())
    knob.set(svc.name, 30)
    daemon = autoscaler_proc({"interval": 1, "prometheus": {"url": prometheus.url}, **KNOB}, flag)
    lab.wait_for("a dry-run decision", lambda: scaled(daemon, svc.name), 20)
    stays(swarm, svc.name, 1, 2)
    event = scaled(daemon, svc.name)[0]
    assert (event["dry_run"], event["from"], event["to"]) == (True, 1, 3)


def test_a_cadvisor_without_the_service_label_gives_no_series_in_plan_and_in_the_log(
        swarm, demo_image, docker_client, tmp_path, autoscaler_proc):
    import subprocess

    from tests.support.fixtures_prom import Prometheus, start_cadvisor
    from tests.support.swarmshift_proc import SWARMSHIFT

    # The real cAdvisor with the stack's flags, but an empty label allowlist: its series carry no
    # container_label_com_docker_swarm_service_name, which the autoscaler groups by.
    args = [a for a in lab.stack_cadvisor_args() if not a.startswith("--whitelisted_container_labels")]
    bare = start_cadvisor(docker_client, [*args, "--whitelisted_container_labels="], stem="cadvisor-bare")
    prom = Prometheus(tmp_path / "prometheus", lab.free_port())
    try:
        prom.add_target("cadvisor", bare.address)
        prom.start()
        svc = swarm.service("noseries", image=demo_image, cpu_limit=0.5, labels={
            "swarmshift.autoscale": "true", "swarmshift.autoscale.max": "3", "swarmshift.autoscale.cpu": "50"})
        # Prometheus has this cAdvisor's series, the service's container among them, just unlabelled.
        prom.wait_query(f'container_cpu_usage_seconds_total{{name=~"{svc.name}.*"}}', bool, timeout=30)
        assert prom.query('container_cpu_usage_seconds_total{container_label_com_docker_swarm_service_name!=""}') == []
        path = swarm_config({"prometheus": {"url": prom.url}})
        result = subprocess.run([SWARMSHIFT, "autoscaler", "plan", "--config", path, "--json"],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        row = next(r for r in json.loads(result.stdout) if r["service"] == svc.name)
        message = f"no series for service {svc.name}: is cAdvisor scraped, and are its labels kept?"
        assert message in row["problems"]
        assert row["to"] == 1 and row["reason"] == "no_data"
        table = subprocess.run([SWARMSHIFT, "autoscaler", "plan", "--config", path],
                               capture_output=True, text=True, timeout=60).stdout
        assert table.startswith("SERVICE") and svc.name in table and "no series for service" in table
        # The daemon says the same in its log, and holds the service where it is.
        daemon = autoscaler_proc({"interval": 1, "prometheus": {"url": prom.url}})
        lab.wait_for("the daemon to log the missing series",
                     lambda: any(message in json.dumps(e) for e in daemon.lines()), 20)
        assert swarm.replicas(svc.name) == 1
    finally:
        prom.close()
        lab.remove_service(docker_client, bare.service)


# -- memory ---------------------------------------------------------------------------------------


def test_the_memory_working_set_scales_up_and_back_down_through_prometheus(
        swarm, demo_image, docker_client, prometheus, autoscaler_proc):
    net = swarm.network()
    mib = 1024 * 1024
    svc = swarm.service("mem", image=demo_image, networks=[net], memory_limit=256 * mib, labels={
        "swarmshift.autoscale": "true", "swarmshift.autoscale.max": "3", "swarmshift.autoscale.memory": "50",
        "swarmshift.autoscale.scale_down.stabilization": "10s"})
    daemon = autoscaler_proc({"interval": 2, "prometheus": {"url": prometheus.url}})
    stays(swarm, svc.name, 1, 6)  # about 7 % of the limit: nothing to do
    # 160 MiB resident in the only task: about 69 % of its 256 MiB limit, target 50 % -> 2 tasks.
    with OverlayLoad(docker_client, net, svc.name, "/alloc?mb=160", rate=1, max_seconds=10, max_requests=1):
        wait_replicas(swarm, svc.name, 2, 60, daemon)
    up = scaled(daemon, svc.name)[0]
    memory = next(m for m in up["metrics"] if m["metric"] == "memory")
    assert up["direction"] == "up" and memory["value"] > 55 and memory["target"] == 50, up
    swarm.wait_running(svc.name, 2)
    # Free it on every task: the working set falls back, and after the window so do the replicas.
    with OverlayLoad(docker_client, net, svc.name, "/free", rate=4, max_seconds=10, max_requests=8):
        wait_replicas(swarm, svc.name, 1, 90, daemon)
    down = [e for e in scaled(daemon, svc.name) if e["direction"] == "down"]
    assert down and next(m for m in down[0]["metrics"] if m["metric"] == "memory")["value"] < 50, down


def swarm_config(cfg: dict) -> str:
    import tempfile

    import yaml

    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
        yaml.safe_dump(cfg, f)
        return f.name


def test_scale_up_stops_at_node_capacity(swarm, demo_image, prometheus, knob, autoscaler_proc):
    prometheus.add_target("knob", knob.address)
    node_memory = swarm.client.info()["MemTotal"]
    # Each task reserves 40 % of the node's memory: two fit, a third stays pending.
    svc = swarm.service("full", image=demo_image, labels=knob_labels(max="6"))
    swarm.client.api.update_service(**update_reservation(swarm, svc.name, int(node_memory * 0.4)))
    swarm.wait_running(svc.name, 1)
    knob.set(svc.name, 30)
    daemon = autoscaler_proc({"interval": 1, "prometheus": {"url": prometheus.url}, **KNOB})
    wait_replicas(swarm, svc.name, 3, 30)
    knob.set(svc.name, 60)  # asks for 6; the pending task says there is no room
    lab.wait_for("the capacity cap", lambda: daemon.events("scale_capped_by_capacity", service=svc.name), 30)
    stays(swarm, svc.name, 3, 4)
    assert len(swarm.running_tasks(svc.name)) == 2


def update_reservation(swarm, name: str, memory: int) -> dict:
    raw = swarm.client.api.inspect_service(name)
    spec = raw["Spec"]
    spec["TaskTemplate"].setdefault("Resources", {})["Reservations"] = {"MemoryBytes": memory}
    return {"service": raw["ID"], "version": raw["Version"]["Index"], "task_template": spec["TaskTemplate"],
            "name": spec["Name"], "labels": spec["Labels"], "mode": spec["Mode"],
            "endpoint_spec": spec.get("EndpointSpec")}


def test_an_alert_re_sent_ten_times_across_a_restart_scales_exactly_once_with_cooldown_zero(
    swarm, demo_image, autoscaler_proc, tmp_path
):
    # Alertmanager re-sends a firing alert every repeat_interval, and retries a delivery it saw
    # fail: the same alert (fingerprint and startsAt) arrives again and again. With the default
    # cooldown of 0 only the deduplication stands between it and a scale per delivery.
    token = tmp_path / "token"
    token.write_text("t0ken")
    svc = swarm.service("once", image=demo_image, labels={
        "swarmshift.autoscale": "true", "swarmshift.autoscale.max": "5", "swarmshift.autoscale.mode": "alert"})
    daemon = autoscaler_proc({"interval": 2, "token_file": str(token), "source": "docker"})
    auth = {"Authorization": "Bearer t0ken", "Content-Type": "application/json"}

    def notification(starts_at: str) -> bytes:
        return json.dumps({"version": "4", "status": "firing", "receiver": "swarmshift", "alerts": [{
            "status": "firing", "startsAt": starts_at, "fingerprint": "0a1b2c3d4e5f",
            "labels": {"alertname": "NeedsMore", "swarmshift_action": "scale_up", "service": svc.name}}]}).encode()

    first = notification("2026-12-01T10:00:00.000Z")
    answers = []
    for delivery in range(10):
        if delivery == 5:
            daemon.kill()  # SIGKILL: nothing in memory survives, only what is on the service
            daemon.start()
        status, reply = daemon.request("POST", "/v1/alerts", first, auth)
        assert status == 200, reply
        answers.append(json.loads(reply)["results"][0]["outcome"])
    assert answers[0] == "scaled" and "scaled" not in answers[1:], answers
    stays(swarm, svc.name, 2, 3)
    assert [(e["from"], e["to"]) for e in scaled(daemon, svc.name)] == [(1, 2)]

    # The same alert firing anew (a new startsAt) is a new alert, and acts.
    status, reply = daemon.request("POST", "/v1/alerts", notification("2026-12-01T11:00:00.000Z"), auth)
    assert status == 200 and json.loads(reply)["results"][0]["outcome"] == "scaled", reply
    assert swarm.replicas(svc.name) == 3
