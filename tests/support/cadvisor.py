"""A cAdvisor stand-in that serves container metrics read from the real cgroups of running containers.

THIS IS A TEST STAND-IN, NOT PART OF SWARMSHIFT. The lab cannot get a cAdvisor image, so the lab
tests point Prometheus at this instead. Run it as

    python -m tests.support.cadvisor --listen 127.0.0.1:PORT [--percpu]

It copies what the product relies on from cAdvisor (google/cadvisor, metrics/prometheus.go):
metric names, HELP and TYPE; the label names `id` (the cgroup path, `/docker/<full id>` with
cgroupfs), `name` (without the leading slash), `image` (the container's Config.Image) and
`container_label_<label>` with every character outside [a-zA-Z0-9_] replaced by `_`; every series
carries the union of label names over all containers, empty where a container lacks one; usage
samples carry their read time as an explicit timestamp, so, as with cAdvisor, they linger in
Prometheus for its 5-minute lookback after a container is gone, while spec series vanish at once.

CPU is `cpu="total"`, as cAdvisor exports it on cgroup v2 or with `--disable_metrics=percpu`.
`--percpu` exports `cpu00`, `cpu01`, ... instead, as cAdvisor does on cgroup v1 by default, so
queries must sum over `cpu` rather than pick `cpu="total"`.

It exports a subset of cAdvisor's metrics, for running Docker containers and the root cgroup only
(cAdvisor with `--docker_only`). Docker is listed at most every REFRESH seconds; the cgroup
counters are read afresh on every scrape.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import docker
import docker.errors
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily, Metric

CGROUP_ROOT = Path("/sys/fs/cgroup")
REFRESH = 2.0
# cAdvisor reports a memory limit above 2^62 as 0 ("unlimited"); the kernel rounds "no limit" to
# values just under 2^63.
MAX_MEMORY = 1 << 62
_INVALID_LABEL_CHARS = re.compile(r"[^a-zA-Z0-9_]")


def sanitize_label(name: str) -> str:
    return _INVALID_LABEL_CHARS.sub("_", name)


# ---------------------------------------------------------------------------------------------
# cgroups


@dataclass(frozen=True)
class Cgroup:
    """Where one container's counters live: its cgroup path and the directories to read."""

    path: str  # cAdvisor's `id`, e.g. /docker/<id>
    cpu: Path
    cpuacct: Path  # == cpu on cgroup v2
    memory: Path


@dataclass
class Reading:
    """One read of a cgroup; None where the kernel has no such file (e.g. memory at the v2 root)."""

    cpu_seconds: float | None = None
    per_cpu_seconds: list[float] = field(default_factory=list)
    cfs_periods: int | None = None
    cfs_throttled_periods: int | None = None
    cfs_throttled_seconds: float | None = None
    cpu_period: int | None = None
    cpu_quota: int = 0  # 0 = no quota, as cAdvisor reports it
    cpu_shares: int | None = None
    memory_usage: int | None = None
    memory_working_set: int | None = None
    memory_limit: int | None = None


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _read_int(path: Path) -> int | None:
    text = _read(path)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _read_keyed(path: Path) -> dict[str, int]:
    """A flat-keyed cgroup file such as memory.stat or cpu.stat."""
    out: dict[str, int] = {}
    for line in (_read(path) or "").splitlines():
        key, _, value = line.partition(" ")
        if value.isdigit():
            out[key] = int(value)
    return out


def _working_set(usage: int | None, inactive_file: int | None) -> int | None:
    # cAdvisor: usage minus inactive file pages, floored at 0 (libcontainer handler setMemoryStats).
    if usage is None:
        return None
    if inactive_file is None:
        return usage
    return max(usage - inactive_file, 0)


def _memory_limit(value: int | None) -> int | None:
    return None if value is None else (0 if value > MAX_MEMORY else value)


class CgroupV1:
    """cgroup v1: one hierarchy per controller, as in this lab (Docker with the cgroupfs driver)."""

    def locate(self, container_id: str, pid: int) -> Cgroup | None:
        paths = _proc_cgroup_paths(pid)
        cpu = paths.get("cpu")
        if cpu and (CGROUP_ROOT / "cpu" / cpu.lstrip("/")).is_dir():
            return self._cgroup(cpu, paths.get("cpuacct", cpu), paths.get("memory", cpu))
        for candidate in (f"/docker/{container_id}", f"/system.slice/docker-{container_id}.scope"):
            if (CGROUP_ROOT / "cpu" / candidate.lstrip("/")).is_dir():
                return self._cgroup(candidate, candidate, candidate)
        return None

    def root(self) -> Cgroup:
        return self._cgroup("/", "/", "/")

    def _cgroup(self, cpu: str, cpuacct: str, memory: str) -> Cgroup:
        return Cgroup(
            path=cpu,
            cpu=CGROUP_ROOT / "cpu" / cpu.lstrip("/"),
            cpuacct=CGROUP_ROOT / "cpuacct" / cpuacct.lstrip("/"),
            memory=CGROUP_ROOT / "memory" / memory.lstrip("/"),
        )

    def read(self, cg: Cgroup, percpu: bool) -> Reading | None:
        usage_ns = _read_int(cg.cpuacct / "cpuacct.usage")
        if usage_ns is None:
            return None  # the container went away since it was listed
        r = Reading(cpu_seconds=usage_ns / 1e9)
        if percpu:
            r.per_cpu_seconds = [int(v) / 1e9 for v in (_read(cg.cpuacct / "cpuacct.usage_percpu") or "").split()]
        r.cpu_period = _read_int(cg.cpu / "cpu.cfs_period_us")
        quota = _read_int(cg.cpu / "cpu.cfs_quota_us")
        r.cpu_quota = quota if quota and quota > 0 else 0
        r.cpu_shares = _read_int(cg.cpu / "cpu.shares")
        stat = _read_keyed(cg.cpu / "cpu.stat")
        if "nr_periods" in stat:
            r.cfs_periods = stat["nr_periods"]
            r.cfs_throttled_periods = stat.get("nr_throttled", 0)
            r.cfs_throttled_seconds = stat.get("throttled_time", 0) / 1e9
        r.memory_usage = _read_int(cg.memory / "memory.usage_in_bytes")
        r.memory_working_set = _working_set(
            r.memory_usage, _read_keyed(cg.memory / "memory.stat").get("total_inactive_file")
        )
        r.memory_limit = _memory_limit(_read_int(cg.memory / "memory.limit_in_bytes"))
        return r


class CgroupV2:
    """cgroup v2: one unified hierarchy (systemd `docker-<id>.scope` or cgroupfs `docker/<id>`)."""

    def locate(self, container_id: str, pid: int) -> Cgroup | None:
        path = _proc_cgroup_paths(pid).get("")
        candidates = [path] if path else []
        candidates += [f"/system.slice/docker-{container_id}.scope", f"/docker/{container_id}"]
        for candidate in candidates:
            d = CGROUP_ROOT / candidate.lstrip("/")
            if (d / "cpu.stat").exists():
                return Cgroup(path=candidate, cpu=d, cpuacct=d, memory=d)
        return None

    def root(self) -> Cgroup:
        return Cgroup(path="/", cpu=CGROUP_ROOT, cpuacct=CGROUP_ROOT, memory=CGROUP_ROOT)

    def read(self, cg: Cgroup, percpu: bool) -> Reading | None:
        stat = _read_keyed(cg.cpu / "cpu.stat")
        if "usage_usec" not in stat:
            return None
        # cgroup v2 has no per-CPU usage, so cAdvisor reports cpu="total" here whatever its flags.
        r = Reading(cpu_seconds=stat["usage_usec"] / 1e6)
        if "nr_periods" in stat:
            r.cfs_periods = stat["nr_periods"]
            r.cfs_throttled_periods = stat.get("nr_throttled", 0)
            r.cfs_throttled_seconds = stat.get("throttled_usec", 0) / 1e6
        cpu_max = (_read(cg.cpu / "cpu.max") or "").split()
        if len(cpu_max) == 2:
            r.cpu_quota = int(cpu_max[0]) if cpu_max[0] != "max" else 0
            r.cpu_period = int(cpu_max[1])
        weight = _read_int(cg.cpu / "cpu.weight")
        if weight:
            # cAdvisor maps the v2 weight back onto v1 shares (convertCPUWeightToCPULimit).
            r.cpu_shares = 2 + ((weight - 1) * 262142) // 9999
        r.memory_usage = _read_int(cg.memory / "memory.current")
        r.memory_working_set = _working_set(
            r.memory_usage, _read_keyed(cg.memory / "memory.stat").get("inactive_file")
        )
        memory_max = _read(cg.memory / "memory.max")
        if memory_max is not None:
            r.memory_limit = 0 if memory_max == "max" else _memory_limit(int(memory_max))
        return r


def _proc_cgroup_paths(pid: int) -> dict[str, str]:
    """Controller -> cgroup path of a process, from the host's view of /proc/<pid>/cgroup.

    Reading the container's own cgroup finds it whatever the cgroup driver or parent is; the
    unified (v2) entry has the controller name "".
    """
    out: dict[str, str] = {}
    if pid <= 0:
        return out
    for line in (_read(Path(f"/proc/{pid}/cgroup")) or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        for controller in controllers.split(","):
            out[controller] = path
    return out


def detect_cgroups() -> CgroupV1 | CgroupV2:
    return CgroupV2() if (CGROUP_ROOT / "cgroup.controllers").exists() else CgroupV1()


def _machine_memory() -> int | None:
    # cAdvisor gives the root cgroup the machine's memory capacity as its limit.
    for line in (_read(Path("/proc/meminfo")) or "").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return None


# ---------------------------------------------------------------------------------------------
# Docker


@dataclass(frozen=True)
class Container:
    cgroup: Cgroup
    labels: dict[str, str]  # Prometheus label name -> value: id, name, image, container_label_*


class ContainerIndex:
    """The running containers, listed from Docker at most every REFRESH seconds."""

    def __init__(self, client: docker.DockerClient, cgroups: CgroupV1 | CgroupV2) -> None:
        self._client = client
        self._cgroups = cgroups
        self._lock = threading.Lock()
        self._known: dict[str, Container] = {}
        self._listed_at = float("-inf")
        self.error = False

    def current(self) -> list[Container]:
        with self._lock:
            if time.monotonic() - self._listed_at >= REFRESH:
                self._refresh()
            return list(self._known.values())

    def _refresh(self) -> None:
        try:
            running = {c["Id"] for c in self._client.api.containers()}
            # A container's labels, image and pid never change, so each is inspected only once.
            known = {cid: c for cid, c in self._known.items() if cid in running}
            for cid in running - known.keys():
                container = self._describe(cid)
                if container:
                    known[cid] = container
        except docker.errors.DockerException:
            self.error = True  # keep the last list: its cgroups are still read fresh
            return
        self._known = known
        self._listed_at = time.monotonic()
        self.error = False

    def _describe(self, cid: str) -> Container | None:
        try:
            attrs = self._client.api.inspect_container(cid)
        except docker.errors.NotFound:
            return None
        cgroup = self._cgroups.locate(cid, attrs["State"].get("Pid") or 0)
        if cgroup is None:
            return None
        labels = {"id": cgroup.path, "name": attrs["Name"].lstrip("/"), "image": attrs["Config"]["Image"]}
        container_labels = dict(attrs["Config"].get("Labels") or {})
        if attrs.get("RestartCount"):  # cAdvisor's docker handler adds this one itself
            container_labels["restartcount"] = str(attrs["RestartCount"])
        # Sorted so that, when two labels sanitise alike, the same one wins every time.
        for key, value in sorted(container_labels.items()):
            labels.setdefault("container_label_" + sanitize_label(key), value)
        return Container(cgroup=cgroup, labels=labels)


# ---------------------------------------------------------------------------------------------
# Exposition


class ContainerCollector:
    """A prometheus_client collector producing cAdvisor's container series on every scrape."""

    def __init__(self, index: ContainerIndex, cgroups: CgroupV1 | CgroupV2, percpu: bool = False) -> None:
        self._index = index
        self._cgroups = cgroups
        self._percpu = percpu
        self._root_memory = _machine_memory()

    def collect(self) -> Iterator[Metric]:
        root = Container(cgroup=self._cgroups.root(), labels={"id": "/"})
        containers = [root, *self._index.current()]
        base = sorted({name for c in containers for name in c.labels})
        out = _Families(base)

        for c in containers:
            r = self._cgroups.read(c.cgroup, self._percpu)
            if r is None:
                continue
            if c is root and r.memory_limit is not None:
                r.memory_limit = self._root_memory
            now = time.time()
            labels = c.labels

            # Spec series carry no timestamp, so Prometheus marks them stale as soon as they go.
            if r.cpu_period is not None:
                out.gauge("container_spec_cpu_period", "CPU period of the container.", labels, r.cpu_period)
            if r.cpu_quota:
                out.gauge("container_spec_cpu_quota", "CPU quota of the container.", labels, r.cpu_quota)
            if r.cpu_shares is not None:
                out.gauge("container_spec_cpu_shares", "CPU share of the container.", labels, r.cpu_shares)
            if r.memory_limit is not None:
                out.gauge("container_spec_memory_limit_bytes", "Memory limit for the container.",
                          labels, r.memory_limit)

            out.gauge("container_last_seen", "Last time a container was seen by the exporter",
                      labels, int(now), now)
            per_cpu = [(f"cpu{i:02d}", v) for i, v in enumerate(r.per_cpu_seconds) if v > 0]
            if not per_cpu and r.cpu_seconds:
                per_cpu = [("total", r.cpu_seconds)]
            for cpu, seconds in per_cpu:
                out.counter("container_cpu_usage_seconds_total", "Cumulative cpu time consumed in seconds.",
                            {**labels, "cpu": cpu}, seconds, now)
            if r.cpu_quota and r.cfs_periods is not None:
                out.counter("container_cpu_cfs_periods_total", "Number of elapsed enforcement period intervals.",
                            labels, r.cfs_periods, now)
                out.counter("container_cpu_cfs_throttled_periods_total", "Number of throttled period intervals.",
                            labels, r.cfs_throttled_periods, now)
                out.counter("container_cpu_cfs_throttled_seconds_total",
                            "Total time duration the container has been throttled.",
                            labels, r.cfs_throttled_seconds, now)
            if r.memory_usage is not None:
                out.gauge("container_memory_usage_bytes",
                          "Current memory usage in bytes, including all memory regardless of when it was accessed",
                          labels, r.memory_usage, now)
                out.gauge("container_memory_working_set_bytes", "Current working set in bytes.",
                          labels, r.memory_working_set, now)

        yield from out.families()
        error = GaugeMetricFamily("container_scrape_error",
                                  "1 if there was an error while getting container metrics, 0 otherwise")
        error.add_metric([], 1 if self._index.error else 0)
        yield error


class _Families:
    """Metric families in first-use order; every series carries all base label names, like cAdvisor."""

    def __init__(self, base: list[str]) -> None:
        self._base = base
        self._families: dict[str, tuple[Metric, list[str]]] = {}

    def gauge(self, name: str, doc: str, labels: dict[str, str], value: float, ts: float | None = None) -> None:
        self._add(GaugeMetricFamily, name, doc, labels, value, ts)

    def counter(self, name: str, doc: str, labels: dict[str, str], value: float, ts: float | None = None) -> None:
        self._add(CounterMetricFamily, name, doc, labels, value, ts)

    def _add(self, kind, name, doc, labels, value, ts) -> None:
        if name not in self._families:
            names = sorted({*self._base, *labels})
            self._families[name] = (kind(name, doc, labels=names), names)
        family, names = self._families[name]
        family.add_metric([labels.get(n, "") for n in names], value, timestamp=ts)

    def families(self) -> list[Metric]:
        # Families without samples are never created, so, as with cAdvisor, no bare HELP lines.
        return [family for family, _ in self._families.values()]


def make_server(listen: str, collector: ContainerCollector) -> ThreadingHTTPServer:
    host, _, port = listen.rpartition(":")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt, *args):  # a line per 1-second scrape would drown the test logs
            pass

        def do_GET(self):  # noqa: N802 (http.server's naming)
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                body, ctype, status = generate_latest(registry), CONTENT_TYPE_LATEST, 200
            elif path == "/healthz":
                body, ctype, status = b"ok", "text/plain", 200
            else:
                body, ctype, status = b"not found\n", "text/plain", 404
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer((host, int(port)), Handler)
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="cAdvisor stand-in for swarmshift's lab tests (not the product)")
    parser.add_argument("--listen", required=True, help="host:port to serve /metrics on, e.g. 127.0.0.1:9338")
    parser.add_argument("--percpu", action="store_true", help="cpu00, cpu01, ... instead of cpu=\"total\"")
    args = parser.parse_args(argv)

    cgroups = detect_cgroups()
    index = ContainerIndex(docker.from_env(timeout=10), cgroups)
    server = make_server(args.listen, ContainerCollector(index, cgroups, percpu=args.percpu))
    print(f"cadvisor stand-in ({type(cgroups).__name__}) serving http://{args.listen}/metrics", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


if __name__ == "__main__":
    main()
