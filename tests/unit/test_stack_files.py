"""The stack's files as the tools that read them see them: promtool, amtool, the daemons' config
loaders, Grafana's provisioning, and the stack file's own structure (the Docker CLI parses and
deploys it in tests/lab/test_stack_file_deploys.py and test_stack_e2e.py).

promtool and amtool are Debian's (`make lab` installs prometheus and prometheus-alertmanager);
a missing one fails the test with the reason.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from autoscaler.config import AutoscalerConfig
from autoscaler.telemetry import Telemetry as AutoscalerTelemetry
from bluegreen.config import BlueGreenConfig
from bluegreen.telemetry import Telemetry as BlueGreenTelemetry
from swarmshift.config import load
from tests.conftest import ROOT

STACK = ROOT / "stack"
PROMTOOL = os.environ.get("LAB_PROMTOOL", "/usr/bin/promtool")
AMTOOL = os.environ.get("LAB_AMTOOL", "/usr/bin/amtool")
DAEMONS = ("autoscaler", "bluegreen")


def run(tool: str, *args: str | Path) -> subprocess.CompletedProcess:
    if not os.access(tool, os.X_OK):
        pytest.fail(f"{tool} is missing: install Debian's prometheus and prometheus-alertmanager (`make lab`)",
                    pytrace=False)
    return subprocess.run([tool, *map(str, args)], capture_output=True, text=True, timeout=60)


def stack_file(path: Path) -> dict:
    return yaml.safe_load(path.read_text())  # anchors and merge keys expanded, ${VARS} left as text


@pytest.fixture(scope="module")
def prod() -> dict:
    return stack_file(ROOT / "docker-stack.yml")


@pytest.fixture(scope="module")
def labvariant() -> dict:
    return stack_file(STACK / "lab" / "docker-stack.lab.yml")


# --- promtool and amtool -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["prometheus.yml", "prometheus.lab.yml"])
def test_promtool_accepts_the_prometheus_configs_and_their_rule_files(name):
    done = run(PROMTOOL, "check", "config", STACK / "prometheus" / name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 1 rule files found" in done.stdout


def test_promtool_accepts_the_alert_rules_and_their_unit_tests_pass():
    done = run(PROMTOOL, "check", "rules", STACK / "prometheus" / "alerts.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    # stack/prometheus/alerts_test.yml: each webhook alert fires with the labels the daemons act on.
    done = run(PROMTOOL, "test", "rules", STACK / "prometheus" / "alerts_test.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_amtool_accepts_the_alertmanager_config_and_routes_each_alert_to_its_daemon():
    config = STACK / "alertmanager" / "alertmanager.yml"
    done = run(AMTOOL, "check-config", config)
    assert done.returncode == 0, done.stdout + done.stderr
    for labels, receiver in ((["swarmshift_action=scale_up", "service=shop_web"], "swarmshift-autoscaler"),
                             (["swarmshift_action=scale_down", "service=shop_web"], "swarmshift-autoscaler"),
                             (["swarmshift_app=web", "alertname=BlueGreenColorErrors"], "swarmshift-bluegreen"),
                             (["alertname=SwarmshiftDaemonDown"], "default")):
        done = run(AMTOOL, "config", "routes", "test", f"--config.file={config}", f"--verify.receivers={receiver}",
                   *labels)
        assert done.returncode == 0, f"{labels}: {done.stdout}{done.stderr}"
    # Both webhooks carry the token from the secret the stack mounts into Alertmanager.
    doc = yaml.safe_load(config.read_text())
    hooks = {r["name"]: r["webhook_configs"][0] for r in doc["receivers"] if r.get("webhook_configs")}
    assert {name: hook["url"] for name, hook in hooks.items()} == {
        "swarmshift-autoscaler": "http://autoscaler:8080/v1/alerts",
        "swarmshift-bluegreen": "http://bluegreen:8080/v1/alerts"}
    for hook in hooks.values():
        assert hook["http_config"]["authorization"] == {
            "type": "Bearer", "credentials_file": "/run/secrets/swarmshift_token"}


def test_the_tools_reject_broken_files(tmp_path):
    """The checks above can fail: each tool refuses a file with one mistake in it."""
    rules = (STACK / "prometheus" / "alerts.yml").read_text().replace("> 0.9,", "> 0.9 +,", 1)
    (tmp_path / "alerts.yml").write_text(rules)
    assert run(PROMTOOL, "check", "rules", tmp_path / "alerts.yml").returncode != 0
    config = (STACK / "prometheus" / "prometheus.yml").read_text().replace("scrape_interval:", "scrape_intervall:", 1)
    (tmp_path / "prometheus.yml").write_text(config)
    assert run(PROMTOOL, "check", "config", tmp_path / "prometheus.yml").returncode != 0
    am = (STACK / "alertmanager" / "alertmanager.yml").read_text().replace(
        "receiver: swarmshift-bluegreen", "receiver: swarmshift-blugreen", 1)
    (tmp_path / "alertmanager.yml").write_text(am)
    assert run(AMTOOL, "check-config", tmp_path / "alertmanager.yml").returncode != 0


# --- the daemons' config files ------------------------------------------------------------------


@pytest.mark.parametrize("path", ["swarmshift/autoscaler.yml", "lab/autoscaler.yml"])
def test_the_autoscaler_config_files_load(path):
    cfg = load(AutoscalerConfig, STACK / path, env={"SWARMSHIFT_TOKEN_FILE": "/run/secrets/swarmshift_token"})
    assert cfg.effective_source == "prometheus" and cfg.prometheus.url == "http://prometheus:9090"
    assert cfg.token_file == "/run/secrets/swarmshift_token"


def test_the_bluegreen_config_files_load():
    env = {"SWARMSHIFT_TOKEN_FILE": "/run/secrets/swarmshift_token"}
    prod = load(BlueGreenConfig, STACK / "swarmshift" / "bluegreen.yml", env=env)
    assert prod.router.kind == "traefik-file" and prod.router.traefik.api_url == "http://traefik:8080"
    assert prod.token_file == "/run/secrets/swarmshift_token" and prod.checks
    env = {**env, "SWARMSHIFT_ROUTER__NGINX__SERVICE": "s_nginx", "SWARMSHIFT_SELECTOR": "com.docker.stack.namespace=s"}
    lab = load(BlueGreenConfig, STACK / "lab" / "bluegreen.yml", env=env)
    assert lab.router.kind == "nginx" and lab.router.nginx.service == "s_nginx"
    assert lab.selector == "com.docker.stack.namespace=s"


# --- docker-stack.yml ---------------------------------------------------------------------------


def test_the_stack_has_every_service_on_its_networks(prod):
    services = prod["services"]
    assert set(services) == {"autoscaler", "bluegreen", "traefik", "prometheus", "alertmanager", "cadvisor",
                             "grafana", "demo-blue", "demo-green"}
    assert {n: spec["driver"] for n, spec in prod["networks"].items()} == {"edge": "overlay", "monitoring": "overlay"}
    nets = {name: set(svc["networks"]) for name, svc in services.items()}
    assert nets["demo-blue"] == nets["demo-green"] == {"edge"}
    assert nets["traefik"] == nets["bluegreen"] == {"edge", "monitoring"}
    assert all(nets[s] == {"monitoring"} for s in ("prometheus", "alertmanager", "cadvisor", "grafana", "autoscaler"))


def test_the_daemons_run_once_each_on_a_manager_non_root_with_the_token_secret(prod):
    for name in DAEMONS:
        svc = prod["services"][name]
        deploy = svc["deploy"]
        assert svc["image"].startswith("${SWARMSHIFT_IMAGE")
        assert svc["command"][:2] == [name, "run"]
        assert deploy["replicas"] == 1 and deploy["update_config"]["order"] == "stop-first"
        assert "node.role == manager" in deploy["placement"]["constraints"]
        assert deploy["resources"]["limits"]["cpus"] and deploy["resources"]["limits"]["memory"]
        assert deploy["restart_policy"]["condition"] == "any"
        assert re.fullmatch(r"10001:\$\{DOCKER_GID:\?.+\}", svc["user"])
        assert {"type": "bind", "source": "/var/run/docker.sock", "target": "/var/run/docker.sock"} in svc["volumes"]
        assert svc["secrets"] == [{"source": "swarmshift_token", "target": "swarmshift_token", "mode": 0o444}]
        assert svc["environment"]["SWARMSHIFT_TOKEN_FILE"] == "/run/secrets/swarmshift_token"
        [config] = svc["configs"]
        assert svc["command"][-1] == config["target"]
        assert prod["configs"][config["source"]]["file"] == f"./stack/swarmshift/{name}.yml"
    assert prod["secrets"]["swarmshift_token"]["external"] is True


def test_traefik_shares_the_dynamic_directory_with_the_controller_on_the_same_node(prod):
    traefik, bluegreen = prod["services"]["traefik"], prod["services"]["bluegreen"]
    static = yaml.safe_load((ROOT / "traefik" / "traefik.yml").read_text())
    [routes] = [m for m in traefik["volumes"] if m["source"] == "traefik-dynamic"]
    [bluegreen_routes] = [m for m in bluegreen["volumes"] if m["source"] == "traefik-dynamic"]
    assert routes["target"] == bluegreen_routes["target"] == static["providers"]["file"]["directory"]
    assert routes.get("read_only") is True and not bluegreen_routes.get("read_only")
    router = "node.labels.swarmshift.router == true"
    assert router in traefik["deploy"]["placement"]["constraints"]
    assert router in bluegreen["deploy"]["placement"]["constraints"]
    # The static config is traefik/traefik.yml; only the web entrypoint is published, never the API's.
    [config] = traefik["configs"]
    assert config["target"] == "/etc/traefik/traefik.yml"
    assert prod["configs"][config["source"]]["file"] == "./traefik/traefik.yml"
    assert [p["target"] for p in traefik["ports"]] == [int(static["entryPoints"]["web"]["address"].lstrip(":"))]
    assert static["metrics"]["prometheus"] and static["api"]["insecure"] is True
    cfg = load(BlueGreenConfig, STACK / "swarmshift" / "bluegreen.yml", env={})
    assert cfg.router.traefik.dynamic_dir == routes["target"]


def test_prometheus_scrapes_cadvisor_traefik_and_both_daemons(prod):
    for name in ("prometheus.yml", "prometheus.lab.yml"):
        doc = yaml.safe_load((STACK / "prometheus" / name).read_text())
        names = {job["job_name"]: [n for sd in job.get("dns_sd_configs", []) for n in sd["names"]]
                 for job in doc["scrape_configs"]}
        want = {"cadvisor": ["tasks.cadvisor"], "swarmshift-autoscaler": ["tasks.autoscaler"],
                "swarmshift-bluegreen": ["tasks.bluegreen"]}
        if name == "prometheus.yml":
            want["traefik"] = ["tasks.traefik"]
        assert {job: names[job] for job in want} == want, name
        assert doc["rule_files"] == ["alerts.yml"]
    targets = {c["target"] for c in prod["services"]["prometheus"]["configs"]}
    assert targets == {"/etc/prometheus/prometheus.yml", "/etc/prometheus/alerts.yml"}


def test_cadvisor_runs_on_every_node_and_keeps_the_labels_the_autoscaler_groups_by(prod):
    cadvisor = prod["services"]["cadvisor"]
    assert cadvisor["deploy"]["mode"] == "global"
    flags = dict(arg.lstrip("-").split("=", 1) for arg in cadvisor["command"])
    kept = flags["whitelisted_container_labels"].split(",")
    assert flags["store_container_labels"] == "false"
    assert {"com.docker.swarm.service.name", "com.docker.swarm.task.name"} <= set(kept)
    cfg = AutoscalerConfig()
    # cAdvisor turns each kept label into container_label_<label with . as _>.
    sanitised = {"container_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", k) for k in kept}
    assert {cfg.prometheus.service_label, cfg.prometheus.task_label} <= sanitised
    mounts = {m["target"]: m for m in cadvisor["volumes"]}
    assert {"/rootfs", "/var/run", "/sys", "/var/lib/docker"} <= set(mounts)
    assert all(m.get("read_only") for m in mounts.values())


def test_the_demo_app_is_labelled_for_both_daemons(prod):
    blue, green = prod["services"]["demo-blue"]["deploy"], prod["services"]["demo-green"]["deploy"]
    assert (blue["replicas"], green["replicas"]) == (1, 0)
    for color, deploy in (("blue", blue), ("green", green)):
        labels = deploy["labels"]
        assert labels["swarmshift.bluegreen.app"] == "demo" and labels["swarmshift.bluegreen.color"] == color
        assert labels["swarmshift.autoscale"] == "true" and int(labels["swarmshift.autoscale.max"]) > 1
        assert deploy["resources"]["limits"]["cpus"]  # the cpu target is a share of it
    assert {k: v for k, v in blue["labels"].items() if k != "swarmshift.bluegreen.color"} == {
        k: v for k, v in green["labels"].items() if k != "swarmshift.bluegreen.color"}


def test_grafana_provisions_prometheus_and_the_swarmshift_dashboard(prod):
    grafana = prod["services"]["grafana"]
    targets = {prod["configs"][c["source"]]["file"]: c["target"] for c in grafana["configs"]}
    assert targets == {
        "./stack/grafana/provisioning/datasources/prometheus.yml": "/etc/grafana/provisioning/datasources/prometheus.yml",
        "./stack/grafana/provisioning/dashboards/swarmshift.yml": "/etc/grafana/provisioning/dashboards/swarmshift.yml",
        "./stack/grafana/dashboards/swarmshift.json": "/var/lib/grafana/dashboards/swarmshift.json",
    }
    provider = yaml.safe_load((STACK / "grafana/provisioning/dashboards/swarmshift.yml").read_text())["providers"][0]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    [source] = yaml.safe_load((STACK / "grafana/provisioning/datasources/prometheus.yml").read_text())["datasources"]
    assert source["url"] == "http://prometheus:9090"

    dashboard = json.loads((STACK / "grafana" / "dashboards" / "swarmshift.json").read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    titles = {p["title"] for p in panels}
    assert {"Replicas per service", "Scaling events", "Active color per app", "Deploys", "Rollbacks"} <= titles
    # Every query names only metrics the daemons export, through the provisioned data source.
    exported = set()
    for telemetry in (AutoscalerTelemetry(), BlueGreenTelemetry()):
        for family in telemetry.registry.collect():
            exported |= {family.name, f"{family.name}_total", f"{family.name}_bucket", f"{family.name}_count",
                         f"{family.name}_sum"}
    exprs = [t["expr"] for p in panels for t in p["targets"]] + [a["expr"] for a in dashboard["annotations"]["list"]]
    used = {m for e in exprs for m in re.findall(r"\bswarmshift_[a-z_]+", e)}
    assert used and used <= exported, used - exported
    assert {p["datasource"]["uid"] for p in panels} == {source["uid"]}


# --- the lab variant ----------------------------------------------------------------------------


def test_the_lab_variant_is_the_stack_with_the_lab_stand_ins(prod, labvariant):
    """Only Traefik and Grafana differ, and only what the lab needs changes."""
    services = labvariant["services"]
    assert set(services) == set(prod["services"]) - {"traefik", "grafana"} | {"nginx"}
    assert services["cadvisor"]["image"] == "swarmshift-cadvisor:lab" and services["cadvisor"]["deploy"]["mode"] == "global"
    # The real cAdvisor, run exactly as the stack runs it.
    for key in ("command", "volumes"):
        assert services["cadvisor"][key] == prod["services"]["cadvisor"][key]
    # No IPVS: dnsrr endpoints everywhere; what the host reaches is published in host mode.
    assert all(svc["deploy"]["endpoint_mode"] == "dnsrr" for svc in services.values())
    published = {name for name, svc in services.items() for p in svc.get("ports", []) if p["mode"] == "host"}
    assert published == {"autoscaler", "bluegreen", "nginx", "prometheus", "alertmanager"}
    for name in DAEMONS:
        svc, real = services[name], prod["services"][name]
        assert svc["image"] == "swarmshift:lab" and svc["user"].startswith("10001:${DOCKER_GID")
        assert svc["deploy"]["update_config"]["order"] == "stop-first" and svc["deploy"]["replicas"] == 1
        assert svc["command"][:2] == real["command"][:2] and svc["secrets"][0]["source"] == "swarmshift_token"
        # Each lab stack's daemons act on that stack's services only (Swarm fills the template in).
        assert svc["environment"]["SWARMSHIFT_SELECTOR"] == (
            'com.docker.stack.namespace={{index .Service.Labels "com.docker.stack.namespace"}}')
    # The same rules and Alertmanager routing as the real stack.
    configs = labvariant["configs"]
    assert configs["prometheus_alerts"]["file"] == "../prometheus/alerts.yml"
    assert configs["alertmanager_yml"]["file"] == "../alertmanager/alertmanager.yml"
    for color in ("demo-blue", "demo-green"):
        labels = services[color]["deploy"]["labels"]
        assert labels["swarmshift.bluegreen.app"] == "demo" and labels["swarmshift.autoscale"] == "true"


def _go_requirement(module_dir: str, module: str) -> str:
    """The version lab/<module_dir>/go.mod pins for `module` (what `make lab` builds)."""
    text = (ROOT / "lab" / module_dir / "go.mod").read_text()
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(module)}\s+(v\S+)", text, re.MULTILINE)
    assert match, f"lab/{module_dir}/go.mod does not require {module}"
    return match.group(1)


@pytest.mark.parametrize(("service", "image", "module_dir", "module"), [
    ("traefik", "traefik", "traefik", "github.com/traefik/traefik/v3"),
    ("cadvisor", "gcr.io/cadvisor/cadvisor", "cadvisor", "github.com/google/cadvisor"),
])
def test_the_stack_pulls_the_versions_the_lab_builds(prod, service, image, module_dir, module):
    pulled = prod["services"][service]["image"]
    assert pulled == f"{image}:{_go_requirement(module_dir, module)}"
