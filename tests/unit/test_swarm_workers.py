"""Docker calls on a bounded pool of their own: a hung engine neither piles up threads nor starves other blocking work.

`Swarm._call` is given a blocking callable of our own that hangs until released, standing in
for an SDK call to an engine that does not answer; no Docker is involved.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from bluegreen.routers.base import write_atomic
from swarmshift.swarm import DockerUnavailable, Swarm
from swarmshift.workers import Saturated, Workers


class Hang:
    """A blocking call that returns only once released; counts the threads inside it."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.inside = 0
        self.threads: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self) -> str:
        with self._lock:
            self.inside += 1
            self.threads.add(threading.current_thread().name)
        self.release.wait(30)
        with self._lock:
            self.inside -= 1
        return "answered"


async def until(check, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "never happened"
        await asyncio.sleep(0.01)


def docker_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("swarmshift-docker")]


def test_hung_calls_never_take_more_threads_than_the_pool():
    swarm = Swarm(timeout=10, retries=1, workers=4)
    hang = Hang()
    before = threading.active_count()

    async def scenario():
        calls = [asyncio.create_task(swarm._call(f"hung {i}", hang)) for i in range(20)]
        await until(lambda: hang.inside == 4)
        await asyncio.sleep(0.2)  # the 16 others wait for a worker; none gets a thread of its own
        peak = threading.active_count() - before, hang.inside, len(docker_threads())
        hang.release.set()
        results = await asyncio.gather(*calls)
        await swarm.close()
        return peak, results

    (new_threads, inside, named), results = asyncio.run(scenario())
    assert new_threads <= 4 and inside == 4 and named == 4
    assert results == ["answered"] * 20  # the waiting ones ran once a worker came free, within their timeout
    assert all(name.startswith("swarmshift-docker") for name in hang.threads)


def test_other_blocking_work_goes_on_while_every_docker_worker_hangs(tmp_path):
    swarm = Swarm(timeout=10, retries=1, workers=2)
    hang = Hang()

    async def scenario():
        calls = [asyncio.create_task(swarm._call(f"hung {i}", hang)) for i in range(30)]
        await until(lambda: hang.inside == 2)
        started = time.monotonic()
        # A router's file write and any other to_thread work use the default executor, never Docker's.
        await asyncio.wait_for(asyncio.to_thread(write_atomic, tmp_path / "web.yml", b"routing\n"), 2)
        await asyncio.wait_for(asyncio.gather(*(asyncio.to_thread(sum, range(10)) for _ in range(20))), 2)
        took = time.monotonic() - started
        hang.release.set()
        await asyncio.gather(*calls)
        await swarm.close()
        return took

    assert asyncio.run(scenario()) < 1.0
    assert (tmp_path / "web.yml").read_bytes() == b"routing\n"


def test_a_call_while_every_worker_hangs_fails_with_docker_unavailable_within_its_timeout():
    swarm = Swarm(timeout=0.3, retries=3, backoff=0.01, workers=2)
    hang = Hang()

    async def scenario():
        stuck = [asyncio.create_task(swarm._call(f"hung {i}", hang, within=30)) for i in range(2)]
        await until(lambda: hang.inside == 2)
        started = time.monotonic()
        with pytest.raises(DockerUnavailable, match="all 2 swarmshift-docker workers are still busy"):
            await swarm._call("services", lambda: "never run")
        took = time.monotonic() - started
        calls = swarm.calls
        hang.release.set()
        await asyncio.gather(*stuck)
        await swarm.close()
        return took, calls

    took, calls = asyncio.run(scenario())
    assert 1.2 <= took < 2.0  # its timeout (0.3 s plus the second every call gets), not three of them
    assert calls == 3  # two hung calls and one attempt: no retry waits for the same threads


def test_a_hung_call_still_times_out_and_is_retried_on_a_free_worker():
    swarm = Swarm(timeout=0.1, retries=2, backoff=0.01, workers=3)
    hang = Hang()
    attempts = []

    def hangs_once():
        attempts.append(threading.current_thread().name)
        if len(attempts) == 1:
            return hang()
        return "answered"

    async def scenario():
        started = time.monotonic()
        result = await swarm._call("inspect", hangs_once, within=0.1)
        took = time.monotonic() - started
        hang.release.set()
        await swarm.close()
        return result, took

    result, took = asyncio.run(scenario())
    assert result == "answered" and 1.1 <= took < 2.0 and len(set(attempts)) == 2


def test_close_does_not_wait_for_hung_calls_and_refuses_new_ones():
    swarm = Swarm(timeout=10, retries=1, workers=2)
    hang = Hang()

    async def scenario():
        stuck = [asyncio.create_task(swarm._call(f"hung {i}", hang)) for i in range(2)]
        await until(lambda: hang.inside == 2)
        started = time.monotonic()
        await asyncio.wait_for(swarm.close(), 1)
        closed_in = time.monotonic() - started
        with pytest.raises(DockerUnavailable, match="closed"):
            await swarm._call("services", lambda: "never run")
        hang.release.set()
        await asyncio.gather(*stuck)  # the calls in flight still get their answer
        return closed_in

    assert asyncio.run(scenario()) < 0.5
    deadline = time.monotonic() + 5
    while docker_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert docker_threads() == []  # once their calls returned, the threads ended


def test_workers_run_calls_and_pass_their_errors_back():
    workers = Workers(2, name="swarmshift-docker-test")

    def fails():
        raise ValueError("from the thread")

    async def scenario():
        assert await workers.run(lambda: 42, 1) == 42
        with pytest.raises(ValueError, match="from the thread"):
            await workers.run(fails, 1)
        assert workers.busy == 0 and workers.threads == 1  # one call at a time needs one thread
        workers.close()
        with pytest.raises(Saturated, match="closed"):
            await workers.run(lambda: 42, 1)

    asyncio.run(scenario())


@pytest.mark.parametrize("size", [0, -1, 1.5, True, "4"])
def test_a_pool_size_must_be_a_positive_whole_number(size):
    with pytest.raises(ValueError, match=rf"workers: expected a whole number of threads, at least 1 \(got {size!r}\)"):
        Workers(size)
