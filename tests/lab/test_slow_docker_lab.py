"""A slow, then hung, Docker API: the controller still rolls back in time, and stays up without piling up threads.

The controller talks to the real engine through tests/support/slowdocker.py, a unix-socket
proxy that holds each response back as long as the test says. The app sits behind the real
Traefik (file provider), so a rollback needs Docker only for the state write: the probes, the
file write and Traefik's confirmation must not wait behind Docker calls.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import pytest

from tests.support import lab
from tests.support.bluegreen import release_images, wait_phase
from tests.support.slowdocker import SlowDocker
from tests.support.traefik import TraefikStack

SLOW = 0.5  # seconds each Docker response is held back while the rollback happens
PROBE_INTERVAL, FAILURE_THRESHOLD = 1.0, 2

pytestmark = pytest.mark.heavy  # a time bound, under load


@pytest.fixture(scope="module")
def images(docker_client, demo_image) -> dict[str, str]:
    return release_images(docker_client)


@pytest.fixture
def slow_docker():
    # A short path: a unix socket's path may not exceed 107 bytes, and pytest's tmp_path can.
    where = Path(tempfile.mkdtemp(prefix="ss-docker-", dir="/tmp"))
    try:
        with SlowDocker(where / "docker.sock") as proxy:
            yield proxy
    finally:
        shutil.rmtree(where, ignore_errors=True)


def threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError(f"no thread count for {pid}")


def test_a_slow_docker_api_still_lets_a_rollback_happen_in_time_and_a_hung_one_piles_up_no_threads(
    swarm, tmp_path, images, bluegreen_proc, slow_docker
):
    stack = TraefikStack(swarm, tmp_path, images, provider="file")
    daemon = bluegreen_proc(stack.config(verification_window="30s", probe_interval=PROBE_INTERVAL,
                                         failure_threshold=FAILURE_THRESHOLD, docker_timeout="5s"),
                            env={"DOCKER_HOST": slow_docker.url})
    daemon.wait_event("controller_reconciled", 60)
    lab.wait_for("Traefik to serve blue (v1)", lambda: stack.serves("v1"), 60)
    app = stack.app

    started = daemon.api("POST", f"/v1/apps/{app}/deploy", {"image": images["5xx"]})
    assert started[0] == 202, started
    load = stack.load(rate=60, seconds=120).start()  # a response every ~17 ms: the times below are that exact
    try:
        wait_phase(daemon, app, {"Verifying"}, 90)
        slow_docker.delay = SLOW  # from here every Docker answer is late
        wait_phase(daemon, app, {"RolledBack"}, 60, interval=0.5)
    finally:
        result = load.stop()
    bad = [t for t, status, _ in result.bodies if status >= 500]
    assert bad, "the failing release never got traffic"
    took = max(bad) - min(bad)
    # A verification round is one tick, and a failing one waits for five Docker answers in a row:
    # the reads (services, tasks, the containers' health) and the failure count's write (inspect,
    # update), which makes it survive a restart. Detection takes FAILURE_THRESHOLD + 1 rounds, and
    # the rollback six answers more (both colors' writes, the reads around them). The bound says
    # the rollback is only as slow as Docker's own answers: nothing else waits behind a Docker
    # call (the probes, the file write, Traefik's confirmation).
    deadline = (FAILURE_THRESHOLD + 1) * (PROBE_INTERVAL + 5 * SLOW) + 6 * SLOW + 1
    print(f"\nrollback with every Docker answer {SLOW:g}s late: {took:.2f}s from the first 5xx to the last "
          f"(deadline {deadline:g}s; {slow_docker.delayed} answers held back)")
    assert took <= deadline, f"{took:.2f}s from the first 5xx to the last"
    assert stack.serves("v1")

    # Docker hangs (longer than docker_timeout): the API still answers at once, and the timed-out
    # calls do not leave a thread each behind.
    pid = daemon.proc.pid
    before = threads(pid)
    slow_docker.delay = 60
    lab.wait_for("the controller to report Docker unavailable", lambda: daemon.events("docker_unavailable"), 30)
    worst, most = 0.0, before
    deadline_at = time.monotonic() + 20
    while time.monotonic() < deadline_at:
        asked = time.monotonic()
        status, _ = daemon.get("/healthz")
        worst = max(worst, time.monotonic() - asked)
        assert status == 200
        most = max(most, threads(pid))
        time.sleep(0.5)
    print(f"Docker hung for 20 s: /healthz at worst {worst * 1000:.0f} ms; threads {before} -> at most {most}")
    assert worst < 1.0
    assert most <= before + 8, f"threads grew from {before} to {most} while Docker hung"
    assert stack.serves("v1")  # routing untouched while Docker is gone

    slow_docker.delay = 0
    lab.wait_for("the controller to see Docker again", lambda: daemon.events("docker_recovered"), 60)
    view = daemon.status(app)
    assert (view["phase"], view["active"]) == ("RolledBack", "blue"), view
