"""`make demo`: the whole job on a single-node swarm, ending with a short report of what happened and when.

It deploys the stack (the lab variant, stack/lab/docker-stack.lab.yml: every image built locally,
since no registry can be reached here) with `docker stack deploy`; drives CPU load from a container
on the stack's overlay network until the autoscaler service scales the demo app up; deploys a v2
with the operator CLI that goes live through a blue→green switch; deploys a broken v3 that the
controller rolls back on its own; and prints the times. The stack stays up afterwards so it can be
looked at; `make demo-down` removes everything the demo made.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import docker
import docker.errors

from tests.support import lab
from tests.support.load import HostLoad, LoadResult, OverlayLoad
from tests.support.stack import (
    RELEASES,
    LabStack,
    derived_image,
    missing_images,
    remove_stack,
    stacks_labelled,
)

DEMO = "swarmshift.demo"
STACK = "swarmshift-demo"
WORKDIR = Path(os.environ.get("SWARMSHIFT_DEMO_DIR", "/tmp/swarmshift-demo"))
STARTED = time.time()


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def clock(at: float) -> str:
    return f"{at - STARTED:6.1f}s"


def event_time(event: dict) -> float:
    return datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()


def down(client: docker.DockerClient) -> list[str]:
    """Remove every stack, container and image the demo made (and a killed demo's load container)."""
    problems = []
    for name in stacks_labelled(client, DEMO) | {STACK}:
        problems += remove_stack(client, name)
    for ctr in client.containers.list(all=True, filters={"label": DEMO}):
        ctr.remove(force=True)
    for tag, _ in RELEASES.values():
        try:
            client.images.remove(tag)
        except docker.errors.ImageNotFound:
            pass
        except docker.errors.APIError as err:
            problems.append(f"image {tag}: {err}")
    shutil.rmtree(WORKDIR, ignore_errors=True)
    return problems


def swarm_ready(client: docker.DockerClient) -> None:
    """A single-node swarm, initialised here if the engine is not a manager yet (`make lab` does it too)."""
    if client.info().get("Swarm", {}).get("ControlAvailable"):
        return
    say("docker swarm init (single node)")
    subprocess.run(["docker", "swarm", "init", "--advertise-addr", "127.0.0.1"], check=True, capture_output=True)


def served(result: LoadResult) -> str:
    versions: dict[str, int] = {}
    for _, status, version in result.bodies:
        key = f"{version or '?'} {status}"
        versions[key] = versions.get(key, 0) + 1
    seen = [f"{n}× {k}" for k, n in sorted(versions.items())]
    seen += [f"{n}× {error}" for error, n in sorted(result.errors.items())]
    return ", ".join(seen)


def main() -> int:
    client = connect()
    leftovers = down(client)
    if leftovers:
        say(f"could not remove an earlier demo completely: {leftovers}")
    say("Where no registry can be reached, as here, the demo builds every image locally and deploys the lab")
    say("variant of the stack (stack/lab/docker-stack.lab.yml). Said plainly: nginx (swarmshift-nginx:lab)")
    say("replaces Traefik, the cAdvisor stand-in (tests/support/cadvisor.py, real cgroup counters under")
    say("cAdvisor's metric names) replaces cAdvisor, Prometheus and Alertmanager are Debian's packages, and")
    say("Grafana is omitted (its dashboard is in stack/grafana/). Both swarmshift daemons run as Swarm services.")
    missing = missing_images(client)
    if missing:
        say(f"missing images {', '.join(missing)}: run `make lab` (make demo runs it first)")
        return 1
    images = {name: derived_image(client, tag, env) for name, (tag, env) in RELEASES.items()}
    say(f"images: swarmshift:lab for both daemons, the demo app v1, {images['v2']} and {images['v3-broken']}"
        " (answers 5xx on / while its health check passes)")

    stack = LabStack(client, STACK, {DEMO: "1"}, WORKDIR)
    stack.deploy()
    ready = stack.wait_ready(120)
    t_ready = time.time()
    count = len(client.api.services(filters={"label": f"com.docker.stack.namespace={STACK}"}))
    say(f"docker stack deploy {STACK}: {count} services up and nginx serving v1 (blue) in {ready:.0f}s")
    say(f"  controller {stack.bluegreen_url}, autoscaler {stack.autoscaler_url}, app {stack.web_url}, "
        f"Prometheus {stack.prometheus_url}")

    # 1. Load until the autoscaler scales the active color up.
    blue = stack.service("demo-blue")
    say("load: /burn from a container on the stack's edge network, about 0.8 cores against a 0.5-CPU task "
        "whose target is 50 %")
    t_load = time.time()
    with OverlayLoad(client, stack.network("edge"), blue, "/burn?ms=100", rate=8, max_seconds=90, max_requests=720,
                     labels={DEMO: "1"}):
        lab.wait_for("the autoscaler to scale demo-blue up",
                     lambda: stack.events("autoscaler", "service_scaled", service=blue, direction="up"), 90, interval=1)
    [scaled, *_] = stack.events("autoscaler", "service_scaled", service=blue, direction="up")
    cpu = next(m for m in scaled["metrics"] if m["metric"] == "cpu")
    say(f"autoscaler: {blue} {scaled['from']} -> {scaled['to']} replicas ({scaled['detail']}); load stopped")
    lab.wait_for("the new replicas to run", lambda: stack.running(blue) >= scaled["to"], 60, interval=0.5)

    # 2. v2 through a blue→green switch, under client traffic.
    say(f"swarmshift bluegreen deploy demo --image {images['v2']} --wait   (20 req/s through nginx meanwhile)")
    t_v2 = time.time()
    load = HostLoad(stack.ports["WEB_PORT"], "/", rate=20, max_seconds=120, max_requests=2400, workers=4).start()
    v2 = stack.cli("deploy", "demo", "--image", images["v2"], "--wait", "--timeout", "120")
    v2_result = load.stop()
    t_v2_done = time.time()
    print(v2.stdout.rstrip(), flush=True)
    if v2.returncode != 0:
        say(f"the v2 deploy did not end Stable (exit {v2.returncode}): {v2.stderr.strip()}")
        return 1
    v2_switch = stack.events("bluegreen", "switched", app="demo")[-1]

    # 3. A broken v3: it goes live on blue, fails its checks and is rolled back by the controller.
    say(f"swarmshift bluegreen deploy demo --image {images['v3-broken']} --wait   (20 req/s through nginx)")
    t_v3 = time.time()
    load = HostLoad(stack.ports["WEB_PORT"], "/", rate=20, max_seconds=120, max_requests=2400, workers=4).start()
    v3 = stack.cli("deploy", "demo", "--image", images["v3-broken"], "--wait", "--timeout", "120")
    v3_result = load.stop()
    print(v3.stdout.rstrip(), flush=True)
    if v3.returncode != 1 or "RolledBack" not in v3.stdout:
        say(f"the broken v3 was not rolled back (exit {v3.returncode}): {v3.stderr.strip()}")
        return 1
    v3_switch = stack.events("bluegreen", "switched", app="demo")[-1]
    [rollback_start, *_] = stack.events("bluegreen", "rollback_started", app="demo")
    [rolled_back, *_] = stack.events("bluegreen", "rolled_back", app="demo")
    now = stack.serves() or {}
    status = stack.cli("status")

    print("\nswarmshift demo report", flush=True)
    print("=" * 72)
    print("  times from the start of the demo (after `make lab`)")
    print(f"  {clock(t_ready)}  stack deployed: both daemons, nginx, Prometheus, Alertmanager and the")
    print("           cAdvisor stand-in as Swarm services; demo-blue serves v1")
    print(f"  {clock(t_load)}  CPU load on demo-blue starts")
    print(f"  {clock(event_time(scaled))}  autoscaler scales {blue} {scaled['from']} -> {scaled['to']} "
          f"(cpu {cpu['value']:.0f}% of the limit vs target {cpu['target']:.0f}%), "
          f"{event_time(scaled) - t_load:.1f}s after the load began")
    print(f"  {clock(t_v2)}  deploy v2 requested")
    print(f"  {clock(event_time(v2_switch))}  nginx switched to {v2_switch['to']} (v2), "
          f"{event_time(v2_switch) - t_v2:.1f}s after the request")
    print(f"  {clock(t_v2_done)}  v2 Stable after its verification window; clients saw: {served(v2_result)}"
          f" ({v2_result.failed} failed)")
    print(f"  {clock(t_v3)}  deploy of the broken v3 requested")
    print(f"  {clock(event_time(v3_switch))}  nginx switched to {v3_switch['to']} (the broken v3)")
    print(f"  {clock(event_time(rollback_start))}  failed checks: rollback started, "
          f"{event_time(rollback_start) - event_time(v3_switch):.1f}s after the switch")
    print(f"  {clock(event_time(rolled_back))}  rolled back: traffic on {rolled_back['active']} (v2) again, "
          f"{event_time(rolled_back) - event_time(v3_switch):.1f}s after the switch")
    print(f"           clients saw: {served(v3_result)}")
    print(f"  now: nginx serves {now.get('version')} from {now.get('color')}; `swarmshift bluegreen status`:")
    for line in status.stdout.rstrip().splitlines()[:2]:
        print(f"    {line}")
    print(f"  total: {time.time() - STARTED:.0f}s")
    print("=" * 72)
    print(f"The stack stays up. Try:  export SWARMSHIFT_CONTROLLER={stack.bluegreen_url} "
          f"SWARMSHIFT_TOKEN_FILE={WORKDIR / 'token'}")
    print("                         .venv/bin/swarmshift bluegreen status;  curl " + stack.web_url + "/")
    print("`make demo-down` removes everything the demo made.", flush=True)
    return 0


def connect() -> docker.DockerClient:
    client = docker.from_env(timeout=30)
    client.ping()  # no engine at all: let the error speak (`make lab` starts one on Debian)
    swarm_ready(client)
    return lab.connect()


if __name__ == "__main__":
    if sys.argv[1:] == ["--down"]:
        problems = down(docker.from_env(timeout=30))
        print("demo: removed" if not problems else f"demo: could not remove: {problems}")
        sys.exit(1 if problems else 0)
    sys.exit(main())
