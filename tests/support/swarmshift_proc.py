"""Run swarmshift's own daemons as real processes for lab tests, and read their JSON logs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import lab
from tests.support.fixtures_prom import Daemon

SWARMSHIFT = os.path.join(os.path.dirname(sys.executable), "swarmshift")


class SwarmshiftDaemon(Daemon):
    """`swarmshift <args>` with JSON logs at debug level in a file; `events(name)` parses them."""

    def __init__(self, name: str, args: list[str], workdir: Path, port: int) -> None:
        super().__init__(name, [SWARMSHIFT, "--log-format", "json", "--log-level", "debug", *args],
                         workdir / f"{name}.log")
        self.url = f"http://127.0.0.1:{port}"
        self.port = port

    def start(self) -> None:
        super().start()
        self.wait_http(f"{self.url}/healthz")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as when a node dies."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def lines(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a traceback line, or output of a dependency
        return out

    def events(self, name: str, **match: Any) -> list[dict[str, Any]]:
        return [e for e in self.lines() if e.get("event") == name and all(e.get(k) == v for k, v in match.items())]

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        return self.request("GET", path, headers=headers)

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None, timeout: float = 10) -> tuple[int, bytes]:
        req = urllib.request.Request(f"{self.url}{path}", data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def metric(self, name: str, **labels: str) -> float | None:
        """One sample from the daemon's /metrics, or None when the series is absent."""
        status, body = self.get("/metrics")
        assert status == 200
        want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))  # the exposition sorts them
        series = f"{name}{{{want}}}" if want else name
        for line in body.decode().splitlines():
            if line.startswith(series + " "):
                return float(line.split()[-1])
        return None


def start_autoscaler(workdir: Path, config: dict[str, Any], *flags: str, name: str = "autoscaler",
                     env: dict | None = None, started: list | None = None) -> SwarmshiftDaemon:
    """Start `swarmshift autoscaler run` on a free port of 127.0.0.1 in `workdir`, scaling only this run's services."""
    port = lab.free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "config.yml"
    # Only this run's services: another suite (or the stack test's own autoscaler) may share the swarm.
    config = {"listen": f"127.0.0.1:{port}", "selector": f"{lab.LABEL}={lab.OWNER}", **config}
    path.write_text(yaml.safe_dump(config))
    daemon = SwarmshiftDaemon(name, ["autoscaler", "run", "--config", str(path), *flags], workdir, port)
    if env:
        daemon.argv = ["env", *(f"{k}={v}" for k, v in env.items()), *daemon.argv]
    if started is not None:
        started.append(daemon)  # stopped by the caller, even when it does not answer
    daemon.start()
    return daemon


@pytest.fixture
def autoscaler_proc(tmp_path) -> Iterator:
    """A factory: `autoscaler_proc(config: dict, *flags, name=...)` starts `swarmshift autoscaler run`."""
    started: list[SwarmshiftDaemon] = []

    def start(config: dict[str, Any], *flags: str, name: str = "autoscaler", env: dict | None = None) -> SwarmshiftDaemon:
        return start_autoscaler(tmp_path / name, config, *flags, name=name, env=env, started=started)

    yield start
    for daemon in started:
        daemon.stop()


class BlueGreenDaemon(SwarmshiftDaemon):
    """`swarmshift bluegreen run` with its token; `api` calls it, `cli` runs the operator CLI against it."""

    def __init__(self, name: str, args: list[str], workdir: Path, port: int, token: str) -> None:
        super().__init__(name, args, workdir, port)
        self.token = token
        self.started_at: list[float] = []

    def start(self) -> None:
        self.started_at.append(time.time())
        super().start()

    def api(self, method: str, path: str, body: Any = None, token: str | None = "",
            timeout: float = 10) -> tuple[int, Any]:
        """A JSON request with the daemon's token (or `token`; None sends none); (status, decoded body)."""
        headers = {"Content-Type": "application/json"}
        token = self.token if token == "" else token
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        data = json.dumps(body).encode() if body is not None else None
        status, raw = self.request(method, path, data, headers, timeout)
        try:
            return status, json.loads(raw) if raw else None
        except json.JSONDecodeError:
            return status, raw.decode(errors="replace")

    def status(self, app: str) -> dict[str, Any]:
        code, body = self.api("GET", f"/v1/apps/{app}")
        assert code == 200, f"GET /v1/apps/{app}: {code} {body}"
        return body

    def wait_event(self, name: str, timeout: float, since: int = 0, **match: Any) -> dict[str, Any]:
        """The first `name` event (after the first `since` lines) matching `match`; fails with the log tail."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.lines()[since:]:
                if event.get("event") == name and all(event.get(k) == v for k, v in match.items()):
                    return event
            time.sleep(0.02)
        pytest.fail(f"no {name} {match} within {timeout:.0f}s; log tail:\n{self.log_tail(40)}", pytrace=False)

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """`swarmshift bluegreen <args>` against this daemon, with its token from the environment."""
        env = {**os.environ, "SWARMSHIFT_CONTROLLER": self.url, "SWARMSHIFT_TOKEN": self.token}
        return subprocess.run([SWARMSHIFT, "bluegreen", *args], capture_output=True, text=True, env=env,
                              timeout=timeout)


def event_time(event: dict[str, Any]) -> float:
    """A JSON log line's timestamp as seconds since the epoch."""
    return datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()


def start_bluegreen(workdir: Path, config: dict[str, Any], *, name: str = "bluegreen",
                    token: str = "lab-token-0", env: dict[str, str] | None = None) -> BlueGreenDaemon:
    """Start `swarmshift bluegreen run` on a free port of 127.0.0.1, with a token file, in `workdir`."""
    port = lab.free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    token_file = workdir / "token"
    token_file.write_text(token + "\n")
    path = workdir / "config.yml"
    path.write_text(yaml.safe_dump({"listen": f"127.0.0.1:{port}", "token_file": str(token_file), **config}))
    daemon = BlueGreenDaemon(name, ["bluegreen", "run", "--config", str(path)], workdir, port, token)
    if env:
        daemon.argv = ["env", *(f"{k}={v}" for k, v in env.items()), *daemon.argv]
    daemon.config_path = path
    daemon.token_file = token_file
    daemon.start()
    return daemon


@pytest.fixture
def bluegreen_proc(tmp_path) -> Iterator:
    """A factory: `bluegreen_proc(config: dict, name=...)` starts `swarmshift bluegreen run` with a token file.

    `.kill()` is SIGKILL; `.start()` again restarts it on the same port, config and log.
    """
    started: list[BlueGreenDaemon] = []

    def start(config: dict[str, Any], *, name: str = "bluegreen", token: str = "lab-token-0",
              env: dict[str, str] | None = None) -> BlueGreenDaemon:
        daemon = start_bluegreen(tmp_path / name, config, name=name, token=token, env=env)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.stop()
