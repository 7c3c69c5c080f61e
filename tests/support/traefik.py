"""A blue-green app behind the real Traefik on the lab swarm, with either provider, for lab tests and benchmarks.

Traefik (swarmshift-traefik:lab, built from its Go module by `make lab`) runs as a Swarm service
on the app's overlay network with the static configuration the stack ships (traefik/traefik.yml),
changed only in its provider:

- `file`: the watched directory is a bind mount of a temp dir; the controller runs on the host
  and writes it, reads Traefik's API back on 127.0.0.1 and probes through Traefik.
- `http`: Traefik polls the controller, which therefore runs as a Swarm service on the overlay
  (`ControllerService`), as in production; its API is published host-mode for the test.

Both of Traefik's entrypoints are published host-mode on 127.0.0.1 for the test: `web` (users'
traffic) and `traefik` (API, ping, metrics). The stack itself publishes only `web`. On the
three-node cluster (tests/cluster) Traefik is pinned to one node and both answer on that node's
address; the controller service's API answers on the address of whichever node runs it.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import yaml

from bluegreen.labels import (
    APP_LABEL,
    COLOR_LABEL,
    PORT_LABEL,
    PREVIEW_RULE_LABEL,
    RULE_LABEL,
    STATE_PREFIX,
    STRATEGY_LABEL,
)
from tests.support import lab
from tests.support.bluegreen import with_overrides
from tests.support.daemon_service import SWARMSHIFT_IMAGE, Engines, ServiceDaemon
from tests.support.load import HostLoad
from tests.support.swarmshift_proc import BlueGreenDaemon

ROOT = Path(__file__).resolve().parents[2]
SELECT = "swarmshift.test.app"  # the controller under test manages only its own app
PREVIEW_HOST = "preview.localhost"
HEALTH_INTERVAL = 1.0
HTTP_POLL_INTERVAL = "1s"


def static_config(provider: str, endpoint: str | None = None) -> dict[str, Any]:
    """traefik/traefik.yml with its provider set to `file` (as shipped) or `http` (polling `endpoint`)."""
    static = yaml.safe_load((ROOT / "traefik" / "traefik.yml").read_text())
    if provider == "http":
        static["providers"].pop("file")
        static["providers"]["http"] = {"endpoint": endpoint, "pollInterval": HTTP_POLL_INTERVAL}
    static["log"] = {"level": "INFO", "format": "json"}
    return static


class TraefikStack:
    """An app's two colors and the real Traefik on one overlay network; blue runs v1 (× 2 unless told), green is idle."""

    def __init__(self, swarm: lab.LabSwarm, tmp_path: Path, images: dict[str, str], *, provider: str = "file",
                 green: str = "v1", green_replicas: int = 0, blue_replicas: int = 2, strategy: str | None = None,
                 docker_health: bool = True, address: str = "127.0.0.1", traefik_image: str = lab.TRAEFIK_IMAGE,
                 traefik_constraints: tuple[str, ...] = (), color_constraints: tuple[str, ...] = ()) -> None:
        # On the cluster (tests/cluster): images from its registry, Traefik pinned to one node by
        # `traefik_constraints`, its ports answering on that node's `address`.
        self.swarm = swarm
        self.address = address
        self.provider = provider
        self.images = images
        self.app = f"app{uuid.uuid4().hex[:6]}"
        self.net = swarm.network("tr")
        self.workdir = tmp_path
        self.dynamic_dir = tmp_path / "dynamic"
        self.dynamic_dir.mkdir(parents=True)
        self.dynamic_dir.chmod(0o777)  # the controller service writes as uid 10001
        self.web_port, self.api_port = lab.free_port(), lab.free_port()
        self.controller_name = swarm.name("bluegreen")
        labels = {APP_LABEL: self.app, PORT_LABEL: "8000", RULE_LABEL: f"Host(`{address}`)",
                  PREVIEW_RULE_LABEL: f"Host(`{PREVIEW_HOST}`)", SELECT: self.app}
        if strategy:
            labels[STRATEGY_LABEL] = strategy
        # Each color's /health fails while the host file health/<color>/fail exists (set_health).
        self.health_dirs = {c: tmp_path / "health" / c for c in ("blue", "green")}
        for d in self.health_dirs.values():
            d.mkdir(parents=True)
            d.chmod(0o777)

        # Without Docker's own health check (docker_health=False), a task whose /health fails is
        # left running, so that only Traefik's checks react to it.
        healthcheck = None if docker_health else {"Test": ["NONE"]}

        def color(name: str, image: str, replicas: int) -> str:
            return swarm.service(name, image=image, replicas=replicas, networks=[self.net],
                                 env={"COLOR": name, "FAIL_HEALTH_FILE": "/run/health/fail"},
                                 mounts=[f"{self.health_dirs[name]}:/run/health:ro"],
                                 labels={**labels, COLOR_LABEL: name}, healthcheck=healthcheck,
                                 constraints=color_constraints).name

        self.services = {"blue": color("blue", images["v1"], blue_replicas), "green": color("green", images[green], green_replicas)}
        endpoint = f"http://{self.controller_name}:8080/v1/traefik"
        static_path = tmp_path / "traefik.yml"
        static_path.write_text(yaml.safe_dump(static_config(provider, endpoint), sort_keys=False))
        self.traefik = swarm.service(
            "traefik", image=traefik_image, networks=[self.net], constraints=traefik_constraints,
            publish={self.web_port: 80, self.api_port: 8080},
            mounts=[f"{static_path}:/etc/traefik/traefik.yml:ro", f"{self.dynamic_dir}:/etc/traefik/dynamic:ro"],
        ).name
        lab.wait_for("Traefik to answer /ping", lambda: self.get_api("/ping") is not None, 30)

    # -- the controller's configuration ---------------------------------------------------------
    def config(self, **overrides: Any) -> dict[str, Any]:
        """The controller's config: Traefik as router (file or HTTP provider) with API read-back."""
        on_host = self.provider == "file"
        base: dict[str, Any] = {
            "selector": f"{SELECT}={self.app}",
            "router": {"kind": f"traefik-{self.provider}", "traefik": {
                "dynamic_dir": str(self.dynamic_dir),
                "api_url": f"http://{self.address}:{self.api_port}" if on_host else f"http://{self.traefik}:8080",
                "entrypoints": ["web"],
                "health_interval": HEALTH_INTERVAL, "health_timeout": 0.5}},
            # On the host the controller reaches the colors only through Traefik; in a container
            # on the overlay it probes every task directly, as in the stack.
            "probe": ({"via": "router", "active_url": f"http://{self.address}:{self.web_port}", "verify_paths": ["/"]}
                      if on_host else {"via": "direct", "verify_paths": ["/"]}),
            "probe_interval": 1.0,
            "reconcile_interval": 2,
            "healthy_threshold": 2,
            "failure_threshold": 2,
            "wait_timeout": "60s",
            "precheck_timeout": "30s",
            "verification_window": "4s",
            "scale_down_delay": "10m",
        }
        return with_overrides(base, overrides)

    # -- what users and operators see -----------------------------------------------------------
    def get_api(self, path: str) -> Any:
        """GET Traefik's API (or /ping) on its address; the decoded body, or None on any failure."""
        try:
            with urllib.request.urlopen(f"http://{self.address}:{self.api_port}{path}", timeout=3) as resp:
                body = resp.read()
        except (OSError, urllib.error.HTTPError):
            return None
        try:
            return json.loads(body)
        except json.JSONDecodeError:
            return body.decode(errors="replace")

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://{self.address}:{self.api_port}/metrics", timeout=5) as resp:
            return resp.read().decode()

    def set_health(self, color: str, healthy: bool) -> None:
        """Make every task of `color` pass (or fail) its /health from the next check on."""
        flag = self.health_dirs[color] / "fail"
        if healthy:
            flag.unlink(missing_ok=True)
        else:
            flag.write_text("fail\n")

    def traefik_health(self) -> dict[str, set[str]]:
        """The server states Traefik's own health checks report per color, e.g. {"blue": {"UP"}}."""
        out: dict[str, set[str]] = {}
        for color in ("blue", "green"):
            info = self.get_api(f"/api/http/services/{self.app}-{color}@{self.provider}") or {}
            out[color] = set((info.get("serverStatus") or {}).values())
        return out

    def spec(self, color: str) -> dict:
        return self.swarm.client.api.inspect_service(self.services[color])["Spec"]

    def state(self, color: str = "blue") -> dict[str, str]:
        labels = self.spec(color).get("Labels") or {}
        return {k.removeprefix(STATE_PREFIX): v for k, v in labels.items() if k.startswith(STATE_PREFIX)}

    def load(self, rate: float = 120, seconds: float = 90, host: str | None = None, timeout: float = 5.0) -> HostLoad:
        """Users' requests through Traefik at `rate`/s. 16 workers, so that the rate holds while answers take up to
        160 ms at 100/s: with 8, a canary test's load fell to 84 req/s when a busy machine slowed answers to ~95 ms."""
        return HostLoad(self.web_port, "/", rate=rate, max_seconds=seconds, max_requests=int(rate * seconds),
                        workers=16, host=host, timeout=timeout, address=self.address)

    def serves(self, version: str, count: int = 5, host: str | None = None) -> bool:
        """Whether `count` requests in a row through Traefik all answer 200 from `version`."""
        probe = HostLoad(self.web_port, "/", rate=200, max_seconds=5, max_requests=count, workers=1, host=host,
                         address=self.address)
        result = probe.start().wait()
        return result.statuses.get(200, 0) == count and {v for _, _, v in result.bodies} == {version}


class ControllerService(ServiceDaemon, BlueGreenDaemon):
    """`swarmshift bluegreen run` as a Swarm service on the app's overlay (swarmshift:lab), its API published host-mode.

    The same surface as the host-process daemon (`api`, `status`, `wait_event`, `events`, `cli`);
    its log lines are the task containers' output (tests/support/daemon_service.py).
    """

    def __init__(self, stack: TraefikStack, config: dict[str, Any], token: str = "lab-token-0", *,
                 image: str = SWARMSHIFT_IMAGE, constraints: tuple[str, ...] = (),
                 engines: Engines | None = None) -> None:
        workdir = stack.workdir / "controller"
        BlueGreenDaemon.__init__(self, "bluegreen-service", [], workdir, lab.free_port(), token)
        self.stack = stack
        self._as_service(stack.swarm, stack.controller_name, workdir, ["bluegreen", "run"],
                         {"token_file": "/etc/swarmshift/token", **config}, networks=[stack.net], image=image,
                         constraints=constraints, engines=engines, token=token)
