"""`make demo`: the whole job on a single-node swarm, ending with a short report of what happened and when.

It deploys the production stack, docker-stack.yml, with the lab's override
(stack/lab/docker-stack.lab.yml: locally built images, dnsrr endpoints and host-mode ports, no
Grafana, shorter daemon intervals; the override's header says why) by `docker stack deploy`;
drives CPU load through Traefik on 127.0.0.1 until the autoscaler service scales the demo app up;
deploys a v2 with the operator CLI that goes live through a blue→green switch under client
traffic; deploys a broken v3 that its smoke requests stop on the preview route before the switch,
so no user request reaches it; and prints the times.
The stack stays up afterwards so it can be looked at; `make demo-down` removes everything the
demo made.

It imports nothing from tests/: lab/stack.py and lab/load.py are shared with the tests instead.
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

from lab.common import wait_for
from lab.load import HostLoad, LoadResult
from lab.stack import (
    RELEASES,
    LabStack,
    StackError,
    derived_image,
    image_version,
    missing_images,
    remove_router_label,
    remove_stack,
    stacks_labelled,
)

DEMO = "swarmshift.demo"
STACK = "swarmshift-demo"
APP = f"{STACK}_demo"  # the demo app's key in the controller: the stack scopes the app label
WORKDIR = Path(os.environ.get("SWARMSHIFT_DEMO_DIR", "/tmp/swarmshift-demo"))
# Present while the router label on the node is the demo's doing, so `make demo-down` takes it off.
ROUTER_MARK = WORKDIR / "router-label-added"
STARTED = time.time()


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def clock(at: float) -> str:
    return f"{at - STARTED:6.1f}s"


def event_time(event: dict) -> float:
    return datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()


def down(client: docker.DockerClient) -> list[str]:
    """Remove the demo's stack (with its secrets), its release images, the router label if the demo
    put it on the node, and its work directory."""
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
    if ROUTER_MARK.exists():
        try:
            remove_router_label(client)
        except docker.errors.APIError as err:
            problems.append(f"node label swarmshift.router: {err}")
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


def weights(stack: LabStack) -> str:
    """What Traefik's API says it has loaded for the app: `swarmshift-demo_demo-green 100, ...`."""
    answer = stack.traefik_api(f"/api/http/services/{APP}@file") or {}
    services = (answer.get("weighted") or {}).get("services") or []
    return ", ".join(f"{s['name']} {s.get('weight', 1)}" for s in services) or "nothing"


def main() -> int:
    client = connect()
    leftovers = down(client)
    if leftovers:
        say(f"could not remove an earlier demo completely: {leftovers}")
    missing = missing_images(client)
    if missing:
        say(f"missing images {', '.join(missing)}: run `make lab` (make demo runs it first)")
        return 1
    traefik = image_version(client, "swarmshift-traefik:lab", "version").split()[-1]
    cadvisor = image_version(client, "swarmshift-cadvisor:lab", "--version").split()[2]
    prometheus = image_version(client, "swarmshift-prometheus:lab", "--version").split()[2]
    alertmanager = image_version(client, "swarmshift-alertmanager:lab", "--version").split()[2]
    say("The demo deploys the production stack, docker-stack.yml, with the lab's override")
    say("(stack/lab/docker-stack.lab.yml). No registry can be reached here, so `make lab` built every image:")
    say(f"the real Traefik {traefik} and cAdvisor {cadvisor} from their released Go modules, Prometheus")
    say(f"{prometheus} and Alertmanager {alertmanager} from Debian's packages, swarmshift:lab for both daemons.")
    say("Grafana is left out (0 replicas): its image cannot be had here; its dashboard is in stack/grafana/.")
    say("No IPVS either: every service uses dnsrr endpoints and host-mode ports, reached on 127.0.0.1.")
    say("Shorter than production: the autoscaler's loop (5s, not 15s) and the verification window (15s, not 1m).")
    images = {name: derived_image(client, tag, env) for name, (tag, env) in RELEASES.items()}
    say(f"images: the demo app v1 (swarmshift-demo:lab), {images['v2']} and {images['v3-broken']}"
        " (answers 5xx on / while its health check passes)")

    stack = LabStack(client, STACK, {}, WORKDIR)
    say(f"{stack.command()}   (DEMO_HOST=127.0.0.1, host ports picked now)")
    try:
        stack.deploy()
    except StackError as err:
        say(str(err))
        return 1
    if stack.router_label_added:
        ROUTER_MARK.write_text("the demo put swarmshift.router=true on this node\n")
        say("docker node update --label-add swarmshift.router=true <this node>   (Traefik and the controller)")
    ready = stack.wait_ready(180)
    t_ready = time.time()
    count = len(client.api.services(filters={"label": f"com.docker.stack.namespace={STACK}"}))
    say(f"docker stack deploy {STACK}: {count} services, Traefik serving v1 (blue) on {stack.web_url} in {ready:.0f}s")
    say(f"  controller {stack.bluegreen_url}, autoscaler {stack.autoscaler_url}, Traefik API {stack.traefik_api_url}, "
        f"Prometheus {stack.prometheus_url}, Alertmanager {stack.alertmanager_url}")

    # 1. Load through Traefik until the autoscaler scales the active color up.
    blue = stack.service("demo-blue")
    say("load: /burn through Traefik, about 0.8 cores against a 0.5-CPU task whose target is 60 % "
        "(Prometheus scrapes cAdvisor every 15s, rate() over 1m)")
    t_load = time.time()
    with HostLoad(stack.ports["WEB_PORT"], "/burn?ms=100", rate=8, max_seconds=150, max_requests=1200, workers=8):
        wait_for("the autoscaler to scale demo-blue up",
                 lambda: stack.events("autoscaler", "service_scaled", service=blue, direction="up"), 150, interval=1)
    [scaled, *_] = stack.events("autoscaler", "service_scaled", service=blue, direction="up")
    cpu = next(m for m in scaled["metrics"] if m["metric"] == "cpu")
    say(f"autoscaler: {blue} {scaled['from']} -> {scaled['to']} replicas ({scaled['detail']}); load stopped")
    wait_for("the new replicas to run", lambda: stack.running(blue) >= scaled["to"], 60, interval=0.5)

    # 2. v2 through a blue→green switch, under client traffic: not one request may fail.
    say(f"swarmshift bluegreen deploy demo --image {images['v2']} --wait   (20 req/s through Traefik meanwhile)")
    t_v2 = time.time()
    load = HostLoad(stack.ports["WEB_PORT"], "/", rate=20, max_seconds=150, max_requests=3000, workers=4).start()
    v2 = stack.cli("deploy", "demo", "--image", images["v2"], "--wait", "--timeout", "120")
    v2_result = load.stop()
    t_v2_done = time.time()
    print(v2.stdout.rstrip(), flush=True)
    if v2.returncode != 0:
        say(f"the v2 deploy did not end Stable (exit {v2.returncode}): {v2.stderr.strip()}")
        return 1
    if v2_result.failed:
        say(f"clients saw failures during the v2 deploy: {served(v2_result)}")
        return 1
    v2_switch = stack.events("bluegreen", "switched", app=APP)[-1]
    v2_weights = weights(stack)

    # 3. A broken v3 (5xx on / while its health check passes): the smoke requests catch it on the
    # preview route, before the switch, so no user request reaches it.
    say(f"swarmshift bluegreen deploy demo --image {images['v3-broken']} --wait   (20 req/s through Traefik)")
    t_v3 = time.time()
    load = HostLoad(stack.ports["WEB_PORT"], "/", rate=20, max_seconds=150, max_requests=3000, workers=4).start()
    v3 = stack.cli("deploy", "demo", "--image", images["v3-broken"], "--wait", "--timeout", "120")
    v3_result = load.stop()
    print(v3.stdout.rstrip(), flush=True)
    v3_phases = [e["to"] for e in stack.events("bluegreen", "phase_changed", app=APP)]
    v3_phases = v3_phases[len(v3_phases) - 1 - v3_phases[::-1].index("Preparing"):] if "Preparing" in v3_phases else []
    if v3.returncode != 1 or "Failed" not in v3.stdout or "SmokeTests" not in v3_phases:
        say(f"the broken v3 was not stopped by its smoke requests (exit {v3.returncode}, phases {v3_phases}): "
            f"{v3.stderr.strip()}")
        return 1
    if v3_result.failed or {v for _, _, v in v3_result.bodies} != {"v2"}:
        say(f"clients saw something other than v2 during the v3 deploy: {served(v3_result)}")
        return 1
    [smoke_failed, *_] = stack.events("bluegreen", "smoke_failed", app=APP)
    [v3_failed, *_] = stack.events("bluegreen", "deploy_failed", app=APP)
    now = stack.serves() or {}
    status = stack.cli("status")

    print("\nswarmshift demo report", flush=True)
    print("=" * 76)
    print("  docker-stack.yml + stack/lab/docker-stack.lab.yml; times from the start of the demo (after `make lab`)")
    print(f"  Traefik {traefik} and cAdvisor {cadvisor} (built from their Go modules), Prometheus {prometheus} and")
    print(f"  Alertmanager {alertmanager} (Debian's); Grafana left out: its image cannot be had here")
    print(f"  {clock(t_ready)}  stack deployed: both daemons, Traefik, Prometheus, Alertmanager and cAdvisor")
    print("           as Swarm services; Traefik routes 127.0.0.1 to demo-blue (v1)")
    print(f"  {clock(t_load)}  CPU load through Traefik on demo-blue starts")
    print(f"  {clock(event_time(scaled))}  autoscaler scales {blue} {scaled['from']} -> {scaled['to']} "
          f"(cpu {cpu['value']:.0f}% of the limit vs target {cpu['target']:.0f}%), "
          f"{event_time(scaled) - t_load:.1f}s after the load began")
    print(f"  {clock(t_v2)}  deploy v2 requested")
    print(f"  {clock(event_time(v2_switch))}  Traefik switched to {v2_switch['to']} (v2), "
          f"{event_time(v2_switch) - t_v2:.1f}s after the request; Traefik's API: {v2_weights}")
    print(f"  {clock(t_v2_done)}  v2 Stable after its verification window; clients saw: {served(v2_result)}"
          f" ({v2_result.failed} failed)")
    print(f"  {clock(t_v3)}  deploy of the broken v3 requested")
    print(f"  {clock(event_time(smoke_failed))}  stopped at the SmokeTests gate, before the switch: "
          f"{smoke_failed['method']} {smoke_failed['path']} on the preview route answered {smoke_failed['status']}")
    print(f"           (expected {smoke_failed['expected']}); phases: {' -> '.join(v3_phases)}")
    print(f"  {clock(event_time(v3_failed))}  deploy Failed, {event_time(v3_failed) - t_v3:.1f}s after the request; "
          f"traffic never left {v3_failed['active']} (v2)")
    print(f"           clients saw: {served(v3_result)} ({v3_result.failed} failed user requests)")
    print(f"  now: Traefik serves {now.get('version')} from {now.get('color')} ({weights(stack)}); "
          "`swarmshift bluegreen status`:")
    for line in status.stdout.rstrip().splitlines()[:2]:
        print(f"    {line}")
    print(f"  total: {time.time() - STARTED:.0f}s")
    print("=" * 76)
    print(f"The stack stays up. Try:  export SWARMSHIFT_CONTROLLER={stack.bluegreen_url} "
          f"SWARMSHIFT_TOKEN_FILE={WORKDIR / 'token'}")
    print(f"                         .venv/bin/swarmshift bluegreen status;  curl {stack.web_url}/")
    print("`make demo-down` removes everything the demo made.", flush=True)
    return 0


def connect() -> docker.DockerClient:
    client = docker.from_env(timeout=30)
    client.ping()  # no engine at all: let the error speak (`make lab` starts one on Debian)
    swarm_ready(client)
    return client


if __name__ == "__main__":
    if sys.argv[1:] == ["--down"]:
        problems = down(docker.from_env(timeout=30))
        print("demo: removed" if not problems else f"demo: could not remove: {problems}")
        sys.exit(1 if problems else 0)
    sys.exit(main())
