"""A blue-green app behind a real nginx service on the lab swarm, for lab tests and benchmarks.

Blue runs v1 × 2 and green is idle; nginx runs as a Swarm service on the apps' overlay network,
published host-mode on 127.0.0.1 (its main port and the status port that tells what it has
loaded), with its conf dir a bind mount of a temp dir the controller writes. Everything is made
through a `LabSwarm`, so it is labelled and removed after.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from bluegreen.labels import APP_LABEL, COLOR_LABEL, PORT_LABEL, PREVIEW_RULE_LABEL, RULE_LABEL, STATE_PREFIX
from lab import stack as lab_stack
from tests.support import lab
from tests.support.load import HostLoad

ROOT = Path(__file__).resolve().parents[2]
NGINX_IMAGE = "swarmshift-nginx:lab"
SELECT = "swarmshift.test.app"  # the controller under test manages only its own app
PROBE_INTERVAL = 1.0
FAILURE_THRESHOLD = 2


def derived_image(client, tag: str, env: dict[str, str]) -> str:
    """A demo image with other defaults baked in (a deploy changes only the image), labelled as the suite's."""
    return lab_stack.derived_image(client, tag, env, labels={lab.LABEL: "image"})


def release_images(client) -> dict[str, str]:
    """v1 (the demo image), v2, a release whose health never passes, and one that passes health but serves 5xx."""
    return {
        "v1": lab.DEMO_IMAGE,
        "v2": derived_image(client, "swarmshift-bluegreen-test:v2", {"APP_VERSION": "v2"}),
        "sick": derived_image(client, "swarmshift-bluegreen-test:sick", {"APP_VERSION": "v-sick", "FAIL_HEALTH": "1"}),
        "5xx": derived_image(client, "swarmshift-bluegreen-test:5xx", {"APP_VERSION": "v-5xx", "ERROR_RATE": "1"}),
    }


def nginx_image(client) -> str:
    """The router image `make lab` builds from lab/nginx on the lab base image (built here if missing)."""
    import docker.errors

    try:
        client.images.get(NGINX_IMAGE)
    except docker.errors.ImageNotFound:
        client.images.build(path=str(ROOT / "lab" / "nginx"), tag=NGINX_IMAGE, rm=True,
                            buildargs={"BASE_IMAGE": lab.BASE_IMAGE})
    return NGINX_IMAGE


class Stack:
    """An app's two colors and an nginx router on one overlay network; blue runs v1 × 2, green is idle."""

    def __init__(self, swarm: lab.LabSwarm, tmp_path: Path, images: dict[str, str], nginx_image: str,
                 green: str = "v1", green_replicas: int = 0) -> None:
        self.swarm = swarm
        self.app = f"app{uuid.uuid4().hex[:6]}"
        self.net = swarm.network("bg")
        self.conf_dir = tmp_path / "nginx-conf"
        self.conf_dir.mkdir(parents=True)
        self.port, self.status_port = lab.free_port(), lab.free_port()
        self.nginx = swarm.service("nginx", image=nginx_image, networks=[self.net],
                                   publish={self.port: 80, self.status_port: 8099},
                                   mounts=[f"{self.conf_dir}:/etc/nginx/swarmshift:ro"]).name
        labels = {APP_LABEL: self.app, PORT_LABEL: "8000", RULE_LABEL: "Host(`127.0.0.1`)",
                  PREVIEW_RULE_LABEL: "Host(`preview.localhost`)", SELECT: self.app}
        self.services = {
            "blue": swarm.service("blue", image=images["v1"], replicas=2, networks=[self.net], env={"COLOR": "blue"},
                                  labels={**labels, COLOR_LABEL: "blue"}).name,
            "green": swarm.service("green", image=images[green], replicas=green_replicas, networks=[self.net],
                                   env={"COLOR": "green"}, labels={**labels, COLOR_LABEL: "green"}).name,
        }
        self.images = images

    def config(self, **overrides) -> dict:
        base = {
            "selector": f"{SELECT}={self.app}",
            "router": {"kind": "nginx", "nginx": {
                "service": self.nginx, "conf_dir": str(self.conf_dir), "listen": "80", "status_listen": "8099",
                "status_url": f"http://127.0.0.1:{self.status_port}"}},
            "probe": {"via": "router", "active_url": f"http://127.0.0.1:{self.port}", "verify_paths": ["/"]},
            "probe_interval": PROBE_INTERVAL,
            "reconcile_interval": 2,
            "healthy_threshold": 2,
            "failure_threshold": FAILURE_THRESHOLD,
            "wait_timeout": "60s",
            "precheck_timeout": "30s",
            "verification_window": "4s",
            "scale_down_delay": "10m",
        }
        return with_overrides(base, overrides)

    def spec(self, color: str) -> dict:
        return self.swarm.client.api.inspect_service(self.services[color])["Spec"]

    def state(self, color: str = "blue") -> dict[str, str]:
        labels = self.spec(color).get("Labels") or {}
        return {k.removeprefix(STATE_PREFIX): v for k, v in labels.items() if k.startswith(STATE_PREFIX)}

    def load(self, rate: float = 120, seconds: float = 90) -> HostLoad:
        return HostLoad(self.port, "/", rate=rate, max_seconds=seconds, max_requests=int(rate * seconds), workers=8)

    def serves(self, version: str, count: int = 5) -> bool:
        """Whether `count` requests in a row through nginx all answer 200 from `version`."""
        probe = HostLoad(self.port, "/", rate=200, max_seconds=5, max_requests=count, workers=1).start()
        result = probe.wait()
        return result.statuses.get(200, 0) == count and {v for _, _, v in result.bodies} == {version}


def with_overrides(base: dict, overrides: dict) -> dict:
    """A controller config: `base` with `overrides`, a mapping merged one level deep."""
    out = dict(base)
    for key, value in overrides.items():
        out[key] = {**out[key], **value} if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def wait_phase(daemon, app: str, phases: set[str], timeout: float, *, operation: str | None = None,
               interval: float = 0.2) -> dict:
    """The app's status once its phase is one of `phases` (in operation `operation`'s deploy, if given)."""
    def reached() -> dict | None:
        view = daemon.status(app)
        if operation is not None and (view.get("deploy") or {}).get("id") != operation:
            return None
        return view if view.get("phase") in phases else None

    return lab.wait_for(f"{app} to reach {sorted(phases)}", reached, timeout, interval=interval)
