"""The stack's files as the tools that read them see them: promtool, amtool, the daemons' config
loaders, Grafana's provisioning, the stack file's own structure, and the lab's override merged
into it by the Docker CLI (`docker stack config`, which parses, interpolates and merges the files
without an engine; tests/lab/test_stack_file_deploys.py and test_stack_e2e.py deploy them).

promtool and amtool are Debian's (`make lab` installs prometheus and prometheus-alertmanager),
the docker CLI is the lab's; a missing one fails the test with the reason.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from autoscaler.config import AutoscalerConfig
from autoscaler.telemetry import Telemetry as AutoscalerTelemetry
from bluegreen.config import BlueGreenConfig
from bluegreen.telemetry import Telemetry as BlueGreenTelemetry
from lab import stack as lab_stack
from swarmshift.config import load
from tests.conftest import ROOT

STACK = ROOT / "stack"
PROMTOOL = os.environ.get("LAB_PROMTOOL", "/usr/bin/promtool")
AMTOOL = os.environ.get("LAB_AMTOOL", "/usr/bin/amtool")
DOCKER = os.environ.get("LAB_DOCKER", "docker")
DAEMONS = ("autoscaler", "bluegreen")
OVERRIDE = STACK / "lab" / "docker-stack.lab.yml"


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


# What `docker stack config` interpolates: DOCKER_GID and the lab's host ports (distinct values, so
# that a port in the merged file tells which variable it came from).
CONFIG_ENV = {"DOCKER_GID": "996", "CONFIG_VERSION": "t1", "DEMO_HOST": "127.0.0.1", "WEB_PORT": "18000",
              "TRAEFIK_API_PORT": "18002", "BLUEGREEN_PORT": "18003", "AUTOSCALER_PORT": "18004",
              "PROMETHEUS_PORT": "18005", "ALERTMANAGER_PORT": "18006", "GRAFANA_PORT": "18007"}


def docker_stack_config(*files: Path, env: dict[str, str] | None = None) -> dict:
    """`docker stack config -c FILE...` as the CLI merges and interpolates them, with no engine at all."""
    if not shutil.which(DOCKER):
        pytest.fail(f"the docker CLI ({DOCKER}) is missing: `make lab` installs it", pytrace=False)
    argv = [DOCKER, "stack", "config", *[arg for f in files for arg in ("-c", str(f))]]
    env = {**os.environ, **CONFIG_ENV, **(env or {}), "DOCKER_HOST": "unix:///nonexistent/docker.sock"}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)


@pytest.fixture(scope="module")
def prod_config() -> dict:
    return docker_stack_config(ROOT / "docker-stack.yml")


@pytest.fixture(scope="module")
def lab_config() -> dict:
    return docker_stack_config(ROOT / "docker-stack.yml", OVERRIDE)


# --- promtool and amtool -----------------------------------------------------------------------


def test_promtool_accepts_the_prometheus_config_and_its_rule_files():
    done = run(PROMTOOL, "check", "config", STACK / "prometheus" / "prometheus.yml")
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


def test_the_autoscaler_config_file_loads():
    cfg = load(AutoscalerConfig, STACK / "swarmshift" / "autoscaler.yml",
               env={"SWARMSHIFT_TOKEN_FILE": "/run/secrets/swarmshift_token"})
    assert cfg.effective_source == "prometheus" and cfg.prometheus.url == "http://prometheus:9090"
    assert cfg.token_file == "/run/secrets/swarmshift_token"


def test_the_bluegreen_config_file_loads():
    env = {"SWARMSHIFT_TOKEN_FILE": "/run/secrets/swarmshift_token"}
    prod = load(BlueGreenConfig, STACK / "swarmshift" / "bluegreen.yml", env=env)
    assert prod.router.kind == "traefik-file" and prod.router.traefik.api_url == "http://traefik:8080"
    assert prod.token_file == "/run/secrets/swarmshift_token" and prod.checks


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


def test_with_the_file_provider_traefik_and_the_controller_are_pinned_by_one_node_label(prod):
    # The file provider shares a named volume, which is local to a node: on a multi-node swarm both
    # services must land on the same node, and the one label that pins them is the only way they do.
    cfg = load(BlueGreenConfig, STACK / "swarmshift" / "bluegreen.yml", env={})
    assert cfg.router.kind == "traefik-file"
    traefik, bluegreen = prod["services"]["traefik"], prod["services"]["bluegreen"]
    label = [c for c in traefik["deploy"]["placement"]["constraints"] if c.startswith("node.labels.")]
    assert label == [c for c in bluegreen["deploy"]["placement"]["constraints"] if c.startswith("node.labels.")]
    assert label == ["node.labels.swarmshift.router == true"]
    # One replica each: a second Traefik elsewhere would serve a directory nobody writes.
    assert traefik["deploy"].get("replicas", 1) == bluegreen["deploy"]["replicas"] == 1
    assert traefik["deploy"].get("mode", "replicated") == "replicated"


def test_prometheus_scrapes_cadvisor_traefik_and_both_daemons(prod):
    doc = yaml.safe_load((STACK / "prometheus" / "prometheus.yml").read_text())
    names = {job["job_name"]: [n for sd in job.get("dns_sd_configs", []) for n in sd["names"]]
             for job in doc["scrape_configs"]}
    want = {"cadvisor": ["tasks.cadvisor"], "swarmshift-autoscaler": ["tasks.autoscaler"],
            "swarmshift-bluegreen": ["tasks.bluegreen"], "traefik": ["tasks.traefik"]}
    assert {job: names[job] for job in want} == want
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


# --- the lab's override -------------------------------------------------------------------------

LAB_IMAGES = {"autoscaler": "swarmshift:lab", "bluegreen": "swarmshift:lab", "traefik": "swarmshift-traefik:lab",
              "cadvisor": "swarmshift-cadvisor:lab", "prometheus": "swarmshift-prometheus:lab",
              "alertmanager": "swarmshift-alertmanager:lab", "demo-blue": "swarmshift-demo:lab",
              "demo-green": "swarmshift-demo:lab"}
# What the override adds to each daemon's environment: its per-stack scope and a shorter interval.
LAB_ENV = {"autoscaler": {"SWARMSHIFT_SELECTOR", "SWARMSHIFT_INTERVAL"},
           "bluegreen": {"SWARMSHIFT_SELECTOR", "SWARMSHIFT_VERIFICATION_WINDOW"}}
NAMESPACE_TEMPLATE = '{{index .Service.Labels "com.docker.stack.namespace"}}'


def _normalised(svc: dict) -> dict:
    """A merged service with the lists whose order means nothing sorted (the merge reorders them)."""
    out = json.loads(json.dumps(svc))
    for key in ("volumes", "configs", "secrets"):
        if key in out:
            out[key] = sorted(out[key], key=lambda item: json.dumps(item, sort_keys=True))
    return out


def test_the_lab_override_changes_only_what_the_lab_needs(prod_config, lab_config):
    """Images, dnsrr endpoints, host-mode ports, Grafana's replicas, the daemons' scope and two
    intervals; every command, mount, config, secret, network, placement, resource and label is production's."""
    assert set(lab_config["services"]) == set(prod_config["services"])
    for section in ("networks", "volumes", "configs", "secrets"):
        assert lab_config[section] == prod_config[section], section
    for name in prod_config["services"]:
        real, svc = _normalised(prod_config["services"][name]), _normalised(lab_config["services"][name])
        assert svc["deploy"].pop("endpoint_mode") == "dnsrr", name
        assert "endpoint_mode" not in real["deploy"]
        image, real_image = svc.pop("image"), real.pop("image")
        if name == "grafana":
            # Left out: its image cannot be had here, and at 0 replicas it is never pulled.
            assert (svc["deploy"].pop("replicas"), real["deploy"].pop("replicas")) == (0, 1)
            assert image == real_image
        else:
            assert image == LAB_IMAGES[name], name
        ports, real_ports = svc.pop("ports", []), real.pop("ports", [])
        assert all(p["mode"] == "host" for p in ports), name
        assert {p["target"] for p in real_ports} <= {p["target"] for p in ports}, name
        if name in LAB_ENV:
            env = svc["environment"]
            added = set(env) - set(real["environment"])
            assert added == LAB_ENV[name], name
            assert env["SWARMSHIFT_SELECTOR"] == f"com.docker.stack.namespace={NAMESPACE_TEMPLATE}"
            for key in added:
                del env[key]
        assert svc == real, name


def test_the_lab_publishes_in_host_mode_on_ports_chosen_by_variables(lab_config):
    published = {(name, p["target"]): p["published"]
                 for name, svc in lab_config["services"].items() for p in svc.get("ports", [])}
    assert published == {("traefik", 80): 18000, ("traefik", 8080): 18002, ("bluegreen", 8080): 18003,
                         ("autoscaler", 8080): 18004, ("prometheus", 9090): 18005, ("alertmanager", 9093): 18006,
                         ("grafana", 3000): 18007}
    # lab/stack.py picks a host port for each of them (Grafana's binds nothing at 0 replicas).
    variables = set(re.findall(r"\$\{(\w+_PORT)", OVERRIDE.read_text()))
    assert set(lab_stack.PORTS) == variables - {"GRAFANA_PORT"}
    assert set(lab_stack.IMAGES) == set(LAB_IMAGES.values())


def test_the_stack_publishes_its_usual_ports_without_the_variables():
    env = {var: "" for var in CONFIG_ENV if var.endswith("_PORT")}
    services = docker_stack_config(ROOT / "docker-stack.yml", env=env)["services"]
    assert [(p["target"], p["published"], p.get("mode", "ingress")) for p in services["traefik"]["ports"]] == [
        (80, 80, "ingress")]
    assert [(p["target"], p["published"]) for p in services["grafana"]["ports"]] == [(3000, 3000)]


def test_the_daemons_load_the_production_configs_with_the_lab_environment(lab_config):
    """As Swarm fills the template in for a stack named `s`."""
    def env(name: str) -> dict[str, str]:
        return {k: v.replace(NAMESPACE_TEMPLATE, "s") for k, v in lab_config["services"][name]["environment"].items()}

    autoscaler = load(AutoscalerConfig, STACK / "swarmshift" / "autoscaler.yml", env=env("autoscaler"))
    assert autoscaler.selector == "com.docker.stack.namespace=s" and autoscaler.interval == 5
    assert autoscaler.prometheus.rate_window == 60  # production's, over production's 15 s scrapes
    bluegreen = load(BlueGreenConfig, STACK / "swarmshift" / "bluegreen.yml", env=env("bluegreen"))
    assert bluegreen.selector == "com.docker.stack.namespace=s" and bluegreen.verification_window == 15
    assert bluegreen.router.kind == "traefik-file" and bluegreen.router.traefik.api_url == "http://traefik:8080"


def test_the_override_says_in_its_header_what_it_changes():
    text = OVERRIDE.read_text()
    header = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    body = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
    for name in ("SWARMSHIFT_INTERVAL", "SWARMSHIFT_VERIFICATION_WINDOW", "SWARMSHIFT_SELECTOR", "endpoint_mode: dnsrr",
                 "mode: host", "Grafana", "scrape interval"):
        assert name in header, name
    for var in set(re.findall(r"\$\{(\w+)", body)):
        assert var in header, var


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
