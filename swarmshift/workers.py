"""A small fixed pool of threads for blocking calls that may hang (Docker's), with a cap on the calls in flight.

`asyncio.to_thread` runs everything on the loop's default executor: a hung Docker engine would
fill it with calls that never return, and the file writes, DNS lookups and Prometheus queries
queued behind them would wait too. Each call timed out on the loop also leaves its thread
running, so the threads would pile up without bound. Here at most `size` calls are in flight at
once, each on a thread of this pool only; a call that finds every thread busy waits for one at
most until its deadline, then fails with `Saturated` instead of queueing.

The threads are daemon threads, unlike `ThreadPoolExecutor`'s, which the interpreter joins at
exit: a call stuck in a socket read must not hold the process up after SIGTERM. `close` lets
them go without waiting.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
_Job = tuple[concurrent.futures.Future, Callable[[], Any]]


class Saturated(Exception):
    """Every worker is busy (stuck, or closed) and none came free before the call's deadline."""


class Workers:
    def __init__(self, size: int, *, name: str = "swarmshift-docker") -> None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ValueError(f"workers: expected a whole number of threads, at least 1 (got {size!r})")
        self.size = size
        self.name = name
        self._lock = threading.Lock()
        self._busy = 0  # calls handed to a thread and not yet returned (or dropped while queued)
        self._threads: list[threading.Thread] = []
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._waiting: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._closed = False

    @property
    def busy(self) -> int:
        return self._busy

    @property
    def threads(self) -> int:
        return len(self._threads)

    async def run(self, fn: Callable[[], T], within: float) -> T:
        """`fn()` on a worker within `within` seconds, the wait for a free worker included.

        Saturated when no worker came free in time; TimeoutError when `fn` did not return in
        time (its thread stays busy until it does: a thread cannot be stopped).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        await self._acquire(loop, deadline)
        job: concurrent.futures.Future[T] = concurrent.futures.Future()
        try:
            self._submit((job, fn))
        except BaseException:
            self._release()
            raise
        return await asyncio.wait_for(asyncio.wrap_future(job), max(0.0, deadline - loop.time()))

    async def _acquire(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        while True:
            with self._lock:
                if self._closed:
                    raise Saturated(f"the {self.name} workers are closed")
                if self._busy < self.size:
                    self._busy += 1
                    return
                woken: asyncio.Future[None] = loop.create_future()
                self._waiting.append((loop, woken))
            try:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise TimeoutError
                await asyncio.wait_for(woken, remaining)
            except TimeoutError:
                raise Saturated(f"all {self.size} {self.name} workers are still busy with calls that have "
                                "not returned") from None
            finally:
                with self._lock, contextlib.suppress(ValueError):
                    self._waiting.remove((loop, woken))

    def _submit(self, job: _Job) -> None:
        with self._lock:
            # One thread per call in flight at most: a queued call always has a thread coming for it.
            if len(self._threads) < self._busy:
                thread = threading.Thread(target=self._work, name=f"{self.name}-{len(self._threads)}", daemon=True)
                self._threads.append(thread)
                thread.start()
        self._jobs.put(job)

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            future, fn = job
            if not future.set_running_or_notify_cancel():  # the caller gave up while it was queued
                self._release()
                continue
            # The worker is released before the caller hears the outcome: a caller that calls
            # again straight away finds it free.
            try:
                result = fn()
            except BaseException as err:  # noqa: BLE001 - the caller gets it, on the loop
                self._release()
                future.set_exception(err)
            else:
                self._release()
                future.set_result(result)

    def _release(self) -> None:
        with self._lock:
            self._busy -= 1
            waiting, self._waiting = self._waiting, []
        for loop, woken in waiting:  # each checks again: one gets the thread, the others wait on
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits there any more
                loop.call_soon_threadsafe(_wake, woken)

    def close(self) -> None:
        """Refuse new calls and let the threads end once their calls return; never waits for them."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            threads, waiting, self._waiting = len(self._threads), self._waiting, []
        for _ in range(threads):
            self._jobs.put(None)
        for loop, woken in waiting:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_wake, woken)


def _wake(woken: asyncio.Future[None]) -> None:
    if not woken.done():
        woken.set_result(None)
