"""The three-node lab cluster of `make cluster` (lab/cluster.sh) for the cluster tests: its engines, its images and its node failures.

Each node is a real Docker Engine in network namespaces of the lab's own (node N at 10.210.0.1N,
engine at /run/swarmshift-cluster/nodeN.sock); all three are managers. Services are made through
a `LabSwarm` on a live manager, so they carry the suite's label and are removed after; images are
pulled by every node from the cluster's registry by tag. `stop(n)` kills node N outright, as a
machine dies (its engine and every process of it, containers included); `start(n)` boots it again.
"""

from __future__ import annotations

import contextlib
import fcntl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import requests

from tests.support import lab

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "lab" / "cluster.sh"
SOCKETS = Path("/run/swarmshift-cluster")
REGISTRY = "10.210.0.1:5000"
NODES = (1, 2, 3)
LOCK = SOCKETS / "tests.lock"


class ClusterUnavailable(RuntimeError):
    pass


def node_ip(n: int) -> str:
    return f"10.210.0.1{n}"


def socket_url(n: int) -> str:
    return f"unix://{SOCKETS}/node{n}.sock"


def image(name: str) -> str:
    """A lab image as every node pulls it: from the cluster's registry, by tag."""
    return f"{REGISTRY}/{name}"


def publish(local: str) -> str:
    """Push an image of the host engine (a test's derived release) to the registry, as lab/cluster.sh does; its tag there."""
    done = subprocess.run(["skopeo", "copy", "-q", "--dest-tls-verify=false", f"docker-daemon:{local}",
                           f"docker://{image(local)}"], capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise ClusterUnavailable(f"skopeo could not push {local} to {REGISTRY}: {done.stderr.strip()}")
    return image(local)


@contextlib.contextmanager
def turn() -> Iterator[None]:
    """The cluster to oneself: an exclusive lock across processes (the lanes of `make test`), waited for."""
    if not SOCKETS.is_dir():
        raise ClusterUnavailable(f"the three-node cluster is not up (no {SOCKETS}): run `make cluster`")
    with open(LOCK, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class Cluster:
    """The cluster's engines, by node number."""

    def __init__(self) -> None:
        self._clients: dict[int, docker.DockerClient] = {}

    def client(self, n: int) -> docker.DockerClient:
        if n not in self._clients:
            self._clients[n] = docker.DockerClient(base_url=socket_url(n), timeout=20)
        return self._clients[n]

    def answers(self, n: int) -> bool:
        try:
            self.client(n).ping()
            return True
        except (docker.errors.DockerException, requests.exceptions.RequestException, OSError):
            return False

    def managers(self) -> dict[str, str]:
        """hostname -> `Ready Leader` / `Ready Reachable` / `Down Unreachable`, from a node that answers."""
        for n in NODES:
            with contextlib.suppress(docker.errors.DockerException, requests.exceptions.RequestException, OSError):
                return {node["Description"]["Hostname"]: f"{node['Status']['State']} "
                        f"{(node.get('ManagerStatus') or {}).get('Reachability', '-')}"
                        f"{' leader' if (node.get('ManagerStatus') or {}).get('Leader') else ''}"
                        for node in self.client(n).api.nodes()}
        raise ClusterUnavailable("no node of the cluster answers")

    def healthy(self) -> bool:
        try:
            states = self.managers()
        except ClusterUnavailable:
            return False
        return len(states) == 3 and all(s.startswith("ready reachable") for s in states.values())

    def stop(self, n: int) -> None:
        """Kill node N as a machine dies: its engine, containerd, shims and tasks, at once."""
        self._clients.pop(n, None)
        _run("stop", n)

    def start(self, *ns: int) -> None:
        """Boot these nodes again on their data roots, all at once; they rejoin the swarm by themselves.

        At once, since a manager's engine answers only once its raft has a leader (or after some
        20 s): booted one by one after a quorum loss, the first waits out that time alone.
        """
        _run("start", *ns)
        for n in ns:
            self._clients.pop(n, None)

    def heal(self, timeout: float = 90) -> None:
        """Every node started, active (not paused) and the three managers Ready and reachable again."""
        down = [n for n in NODES if not self.answers(n)]
        if down:
            self.start(*down)
        lab.wait_for("three Ready, reachable managers", self.healthy, timeout, interval=1)
        for node in self.client(1).api.nodes():
            if node["Spec"].get("Availability") != "active":
                self.set_availability(node["Description"]["Hostname"], "active")

    def engines(self) -> list[tuple[str, docker.DockerClient]]:
        """(address, client) of every node whose engine answers now."""
        return [(node_ip(n), self.client(n)) for n in NODES if self.answers(n)]

    def node_of(self, hostname: str) -> int:
        return int(hostname.removeprefix("ssc-node"))

    def set_availability(self, hostname: str, availability: str, manager: int = 1) -> None:
        """`docker node update --availability active|pause|drain`: paused, a node keeps its tasks and gets no new one."""
        api = self.client(manager).api
        [node] = [n for n in api.nodes() if n["Description"]["Hostname"] == hostname]
        api.update_node(node["ID"], node["Version"]["Index"], {**node["Spec"], "Availability": availability})

    def heartbeat(self) -> float:
        """Swarm's dispatcher heartbeat, in seconds: a node is marked down after some three of them are missed."""
        return self.client(1).api.inspect_swarm()["Spec"]["Dispatcher"]["HeartbeatPeriod"] / 1e9

    def set_heartbeat(self, seconds: float) -> None:
        """`docker swarm update --dispatcher-heartbeat` (the CLI, which keeps the rest of the swarm's spec)."""
        done = subprocess.run(["docker", "-H", socket_url(1), "swarm", "update", "--dispatcher-heartbeat",
                               f"{seconds:g}s"], capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise ClusterUnavailable(f"docker swarm update --dispatcher-heartbeat {seconds:g}s: {done.stderr.strip()}")

    def tasks_by_node(self, service: str, manager: int = 1) -> dict[str, int]:
        """Running tasks of `service` per node hostname."""
        api = self.client(manager).api
        names = {node["ID"]: node["Description"]["Hostname"] for node in api.nodes()}
        out: dict[str, int] = {}
        for task in api.tasks(filters={"service": service, "desired-state": "running"}):
            if task["Status"]["State"] == "running":
                host = names.get(task.get("NodeID", ""), "?")
                out[host] = out.get(host, 0) + 1
        return out

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()


def _run(action: str, *ns: int) -> None:
    """`lab/cluster.sh ACTION N` for each node, concurrently."""
    procs = {n: subprocess.Popen(["sh", str(SCRIPT), action, str(n)], stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True) for n in ns}
    failed = []
    for n, proc in procs.items():
        try:
            out, _ = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        if proc.returncode != 0:
            failed.append(f"lab/cluster.sh {action} {n} (exit {proc.returncode}): {out.strip()}")
    if failed:
        raise ClusterUnavailable("; ".join(failed))


def connect() -> Cluster:
    """The cluster, once its three managers answer; ClusterUnavailable (with how to fix it) otherwise."""
    cluster = Cluster()
    deadline = time.monotonic() + 30
    while not cluster.healthy():
        if time.monotonic() > deadline:
            try:
                states = cluster.managers()
            except ClusterUnavailable as err:
                states = str(err)
            raise ClusterUnavailable(f"the three-node cluster is not up ({states}): run `make cluster`")
        time.sleep(1)
    return cluster
