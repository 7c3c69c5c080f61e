"""Pytest fixtures that run the real Prometheus, Alertmanager and cAdvisor.

- `cadvisor` (session): the real cAdvisor (swarmshift-cadvisor:lab, built from its Go modules by
  `make lab`) as a global Swarm service with the flags docker-stack.yml ships; `.address` is the
  host-mode port on 127.0.0.1.
- `prometheus` (per test): Debian's /usr/bin/prometheus scraping cAdvisor every second, with
  its config rewritten and hot-reloaded as a test adds targets, rules or an Alertmanager.
- `alertmanager` (per test): a factory, `alertmanager(config_dict)`, for real Alertmanagers.

Every process is ended at teardown, whatever the test did. A missing binary fails the test with
the reason; nothing here skips.
"""

from __future__ import annotations

import ctypes
import datetime as dt
import json
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import lab

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_BIN = os.environ.get("LAB_PROMETHEUS", "/usr/bin/prometheus")
ALERTMANAGER_BIN = os.environ.get("LAB_ALERTMANAGER", "/usr/bin/prometheus-alertmanager")
START_TIMEOUT = 30.0
HTTP_TIMEOUT = 5.0


# ---------------------------------------------------------------------------------------------
# Child processes


def _die_with_parent() -> None:
    # If pytest is killed outright, no teardown runs; the kernel then ends the daemons for us.
    PR_SET_PDEATHSIG = 1  # noqa: N806 (the kernel's name)
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Daemon:
    """One child process, its output kept in a log file so that failures can quote it."""

    def __init__(self, name: str, argv: list[str], log: Path, cwd: Path | None = None) -> None:
        self.name = name
        self.argv = argv
        self.log = log
        self.cwd = cwd
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        # The death signal follows the forking *thread*: a daemon started from a worker thread
        # would be killed when that thread ends, so only the main thread asks for it.
        on_main = threading.current_thread() is threading.main_thread()
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=self.cwd, preexec_fn=_die_with_parent if on_main else None,
            )

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        self.proc = None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def wait_http(self, url: str, timeout: float = START_TIMEOUT) -> None:
        """Wait until `url` answers 200; fail with the log if the process dies or time runs out."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if not self.running:
                code = self.proc.returncode if self.proc else None
                pytest.fail(f"{self.name} exited ({code}) before {url} answered:\n{self.log_tail()}",
                            pytrace=False)
            try:
                with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT) as resp:
                    if resp.status == 200:
                        return
            except OSError as err:  # refused, or an HTTPError such as 503 while starting
                last = str(err)
            time.sleep(0.2)
        pytest.fail(f"{self.name} did not answer {url} within {timeout:.0f}s ({last}):\n{self.log_tail()}",
                    pytrace=False)


def _require(binary: str, what: str) -> None:
    if not os.access(binary, os.X_OK):
        pytest.fail(f"{what} binary {binary} is missing: install Debian's package (see `make lab`)",
                    pytrace=False)


def _http(method: str, url: str, body: Any = None) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


# ---------------------------------------------------------------------------------------------
# cAdvisor


class Cadvisor:
    """The real cAdvisor as a global Swarm service; Prometheus on the host scrapes `address`."""

    def __init__(self, address: str, service: str) -> None:
        self.address = address
        self.url = f"http://{address}"
        self.service = service


def start_cadvisor(client, args: list[str], stem: str = "cadvisor") -> Cadvisor:
    """Run swarmshift-cadvisor:lab with `args` as a labelled global service on a host-mode port."""
    return Cadvisor(*lab.cadvisor_service(client, args, stem=stem))


@pytest.fixture(scope="session")
def cadvisor(docker_client) -> Iterator[Cadvisor]:
    """The real cAdvisor with the flags docker-stack.yml ships, for the whole session."""
    c = start_cadvisor(docker_client, lab.stack_cadvisor_args())
    try:
        yield c
    finally:
        lab.remove_service(docker_client, c.service)


# ---------------------------------------------------------------------------------------------
# Prometheus


class Prometheus:
    """A real Prometheus whose config this object owns; changes are applied with POST /-/reload."""

    def __init__(self, workdir: Path, port: int, scrape_interval: str = "1s", host: str = "127.0.0.1") -> None:
        # `host`: 127.0.0.1, or the host's address on the cluster's bridge (10.210.0.1), where a
        # daemon running as a service on a node reaches it.
        self.scrape_interval = scrape_interval
        self.address = f"{host}:{port}"
        self.url = f"http://{self.address}"
        self.workdir = workdir
        self.config_path = workdir / "prometheus.yml"
        self.rules_dir = workdir / "rules"
        self.rules_dir.mkdir(parents=True, exist_ok=True)
        self._targets: dict[str, tuple[str, list[str]]] = {}  # job -> (metrics path, addresses)
        self._alertmanager: str | None = None
        self._write_config()
        self.daemon = Daemon("prometheus", [
            PROMETHEUS_BIN,
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address={self.address}",
            "--web.enable-lifecycle",
            # Each reload empties the notifier's Alertmanager list for up to 5 s (discovery is
            # throttled), and an alert sent into that gap would wait the default 1 m to be resent.
            "--rules.alert.resend-delay=1s",
        ], workdir / "prometheus.log")

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Start (or restart, on the same port and storage) and wait until /-/ready."""
        if not self.daemon.running:
            self.daemon.start()
        self.daemon.wait_http(f"{self.url}/-/ready")

    def stop(self) -> None:
        self.daemon.stop()

    def reload(self) -> None:
        """Apply the config file now; a config Prometheus rejects fails the test with its reason."""
        if not self.daemon.running:
            return  # read at the next start
        status, body = _http("POST", f"{self.url}/-/reload")
        if status != 200:
            pytest.fail(f"prometheus rejected its config ({status}): {body.decode(errors='replace')}\n"
                        f"{self.config_path.read_text()}", pytrace=False)

    # -- configuration ---------------------------------------------------------------------
    def add_target(self, job: str, address: str, metrics_path: str = "/metrics") -> None:
        path, addresses = self._targets.setdefault(job, (metrics_path, []))
        if path != metrics_path:
            raise ValueError(f"job {job!r} already scrapes {path}; use another job name for {metrics_path}")
        addresses.append(address)
        self._write_config()
        self.reload()

    def add_rules(self, yaml_text: str) -> Path:
        """Add a rule file (Prometheus' `groups:` format); returns its path."""
        path = self.rules_dir / f"rules-{len(list(self.rules_dir.glob('*.yml'))):02d}.yml"
        path.write_text(yaml_text)
        self.reload()
        return path

    def set_alertmanager(self, url: str, timeout: float = 15.0) -> None:
        """Send alerts to the Alertmanager at `url`; returns once Prometheus lists it as active."""
        self._alertmanager = url
        self._write_config()
        self.reload()
        if self.daemon.running:
            lab.wait_for(f"prometheus to list alertmanager {url}", lambda: self._alertmanager_active(url), timeout)

    def _alertmanager_active(self, url: str) -> bool:
        status, body = _http("GET", f"{self.url}/api/v1/alertmanagers")
        active = json.loads(body)["data"]["activeAlertmanagers"] if status == 200 else []
        return any(a["url"].startswith(url.rstrip("/") + "/") for a in active)

    def _write_config(self) -> None:
        config: dict[str, Any] = {
            "global": {"scrape_interval": self.scrape_interval,
                       "scrape_timeout": "1s" if self.scrape_interval == "1s" else "10s",
                       "evaluation_interval": "1s"},
            "rule_files": [str(self.rules_dir / "*.yml")],
            "scrape_configs": [
                {"job_name": job, "metrics_path": path, "static_configs": [{"targets": addresses}]}
                for job, (path, addresses) in self._targets.items()
            ],
        }
        if self._alertmanager:
            am = urllib.parse.urlsplit(self._alertmanager)
            config["alerting"] = {"alertmanagers": [{
                "scheme": am.scheme or "http",
                "path_prefix": am.path or "/",
                "static_configs": [{"targets": [am.netloc]}],
            }]}
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    # -- queries ---------------------------------------------------------------------------
    def query(self, promql: str) -> list[dict]:
        """An instant query; for a vector, a list of {"metric": {...}, "value": [ts, "v"]}.

        Raises OSError (URLError) while Prometheus is down, AssertionError if it rejects the query.
        """
        status, body = _http("GET", f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
        reply = json.loads(body or b"{}")
        if status != 200 or reply.get("status") != "success":
            raise AssertionError(f"query {promql!r} failed ({status}): {reply.get('error', body[:200])}")
        return reply["data"]["result"]

    def value(self, promql: str) -> float | None:
        """The one sample's value of a query expected to return at most one series."""
        result = self.query(promql)
        assert len(result) <= 1, f"{promql!r} returned {len(result)} series: {result}"
        return float(result[0]["value"][1]) if result else None

    def wait_query(self, promql: str, predicate: Callable[[list[dict]], Any], timeout: float = 30.0) -> list[dict]:
        """Poll until `predicate(result)` is truthy; returns that result."""
        found: list[list[dict]] = []

        def check():
            result = self.query(promql)
            found[:] = [result]
            return predicate(result)

        lab.wait_for(f"{promql!r} to satisfy the predicate", check, timeout, interval=0.5)
        return found[0]

    def close(self) -> None:
        self.daemon.stop()


@pytest.fixture
def prometheus(cadvisor, tmp_path) -> Iterator[Prometheus]:
    """A fresh real Prometheus on 127.0.0.1 whose job `cadvisor` scrapes the real cAdvisor every second."""
    _require(PROMETHEUS_BIN, "Prometheus")
    prom = Prometheus(tmp_path / "prometheus", lab.free_port())
    try:
        prom.add_target("cadvisor", cadvisor.address)
        prom.start()
        yield prom
    finally:
        prom.close()


# ---------------------------------------------------------------------------------------------
# Alertmanager


def post_alert(url: str, labels: dict[str, str], annotations: dict[str, str] | None = None,
               ends_in: float | None = None) -> None:
    """Hand an alert straight to an Alertmanager's v2 API, as Prometheus would."""
    now = dt.datetime.now(dt.UTC)
    alert: dict[str, Any] = {"labels": labels, "annotations": annotations or {}, "startsAt": now.isoformat()}
    if ends_in is not None:
        alert["endsAt"] = (now + dt.timedelta(seconds=ends_in)).isoformat()
    status, body = _http("POST", f"{url.rstrip('/')}/api/v2/alerts", [alert])
    if status != 200:
        raise AssertionError(f"alertmanager refused the alert ({status}): {body.decode(errors='replace')}")


class Alertmanager:
    """A real Alertmanager with gossip off and its own storage."""

    def __init__(self, workdir: Path, port: int, config: dict) -> None:
        self.address = f"127.0.0.1:{port}"
        self.url = f"http://{self.address}"
        self.config_path = workdir / "alertmanager.yml"
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.daemon = Daemon("alertmanager", [
            ALERTMANAGER_BIN,
            f"--config.file={self.config_path}",
            f"--storage.path={workdir / 'data'}",
            f"--web.listen-address={self.address}",
            f"--web.external-url={self.url}",
            "--cluster.listen-address=",  # empty: no gossip, no cluster port to clash over
        ], workdir / "alertmanager.log")

    def start(self) -> None:
        self.daemon.start()
        self.daemon.wait_http(f"{self.url}/-/ready")

    def post_alert(self, labels: dict[str, str], annotations: dict[str, str] | None = None,
                   ends_in: float | None = None) -> None:
        post_alert(self.url, labels, annotations, ends_in)

    def alerts(self) -> list[dict]:
        status, body = _http("GET", f"{self.url}/api/v2/alerts")
        assert status == 200, f"GET /api/v2/alerts: {status} {body[:200]!r}"
        return json.loads(body)

    def close(self) -> None:
        self.daemon.stop()


@pytest.fixture
def alertmanager(tmp_path) -> Iterator[Callable[[dict], Alertmanager]]:
    """A factory: `alertmanager(config_dict)` starts a real Alertmanager and waits until it is ready."""
    _require(ALERTMANAGER_BIN, "Alertmanager")
    started: list[Alertmanager] = []

    def start(config: dict) -> Alertmanager:
        am = Alertmanager(tmp_path / f"alertmanager-{len(started)}", lab.free_port(), config)
        started.append(am)
        am.start()
        return am

    try:
        yield start
    finally:
        for am in started:
            am.close()
