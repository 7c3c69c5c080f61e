"""A router's activation cancelled (SIGTERM) at any point leaves the last good configuration live, and no stray file.

Each await point is hit on purpose: an action or a file write is made to block, the activation
is cancelled there, and then the directory is read. A sweep then cancels at times spread over a
whole activation and checks the same invariants every time.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest

from bluegreen.apps import App, Color
from bluegreen.routers import RouterError
from bluegreen.routers import nginx as nginx_module
from bluegreen.routers import traefik_file as traefik_file_module
from bluegreen.routers.base import finish, finish_in_thread
from bluegreen.routers.nginx import NginxRouter
from bluegreen.routers.traefik_api import TraefikAPI
from bluegreen.routers.traefik_doc import parse_file
from bluegreen.routers.traefik_file import TraefikFileRouter
from bluegreen.routers.traefik_http import TraefikHTTPRouter
from bluegreen.state import Routing

WEB = App("web", "web-blue", "web-green", 8000, "Host(`web.example.com`)")
BLUE, GREEN = Routing.all_to(Color.BLUE), Routing.all_to(Color.GREEN)


def names(directory) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


async def until(check, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "the activation never got there"
        await asyncio.sleep(0.005)


async def cancelled(task: asyncio.Task) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# --- finish: the primitive -------------------------------------------------------------------


def test_finish_lets_the_step_end_then_raises_the_cancellation():
    ended = []

    async def step():
        await asyncio.sleep(0.05)
        ended.append("step")
        return "result"

    async def caller():
        try:
            await finish(step())
        finally:
            ended.append("cleanup")  # after the step, never beside it

    async def scenario():
        task = asyncio.create_task(caller())
        await asyncio.sleep(0.01)
        for _ in range(3):  # cancelled again and again: still one end, then the cancellation
            task.cancel()
            await asyncio.sleep(0)
        await cancelled(task)
        return await finish(step())

    assert asyncio.run(scenario()) == "result"
    assert ended == ["step", "cleanup", "step"]


def test_finish_in_thread_waits_for_the_thread_when_cancelled():
    release, done = threading.Event(), []

    def blocking():
        release.wait(5)
        done.append(True)

    async def scenario():
        task = asyncio.create_task(finish_in_thread(blocking))
        await asyncio.sleep(0.02)
        task.cancel()
        await asyncio.sleep(0.05)
        assert not task.done()  # still waiting for the thread, which no cancellation can stop
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert done == [True]

    asyncio.run(scenario())


# --- nginx ---------------------------------------------------------------------------------


class Nginx:
    """Test and reload actions that block until told, and record what the live file held when each ended."""

    def __init__(self, tmp_path) -> None:
        self.live = tmp_path / "web.conf"
        self.block: set[str] = set()
        self.fail: set[str] = set()
        self.started: list[str] = []
        self.ended: list[tuple[str, bytes]] = []
        self.gate = asyncio.Event()
        self.router = NginxRouter(tmp_path, test=self.action("test"), reload=self.action("reload"))

    def action(self, name: str):
        async def run() -> None:
            self.started.append(name)
            await asyncio.sleep(0)
            if name in self.block:
                await self.gate.wait()
            if name in self.fail:
                raise RouterError(f"{name} said no")
            self.ended.append((name, self.live.read_bytes()))
        return run

    @property
    def running(self) -> bytes | None:
        """What nginx runs: the file as it was at the last successful reload."""
        reloads = [content for name, content in self.ended if name == "reload"]
        return reloads[-1] if reloads else None


def start_blue(tmp_path) -> tuple[Nginx, bytes]:
    nginx = Nginx(tmp_path)
    asyncio.run(nginx.router.apply(WEB, BLUE))
    return nginx, nginx.live.read_bytes()


def test_nginx_cancelled_during_its_test_puts_the_old_config_back(tmp_path):
    nginx, blue = start_blue(tmp_path)
    nginx.block.add("test")

    async def scenario():
        task = asyncio.create_task(nginx.router.apply(WEB, GREEN))
        await until(lambda: nginx.started[-1:] == ["test"] and len(nginx.started) == 3)
        assert nginx.live.read_bytes() != blue  # the candidate is in place, untested
        await cancelled(task)

    asyncio.run(scenario())
    assert nginx.live.read_bytes() == blue and names(tmp_path) == ["web.conf"]
    assert nginx.started == ["test", "reload", "test"]  # never reloaded with the candidate
    assert asyncio.run(nginx.router.read(WEB)) == BLUE


def test_nginx_cancelled_while_the_swap_is_written_waits_for_it_then_puts_the_old_config_back(tmp_path, monkeypatch):
    nginx, blue = start_blue(tmp_path)
    swapping, release = threading.Event(), threading.Event()
    real = NginxRouter._swap_in

    def slow_swap(self, live, backup, data):
        swapped = real(self, live, backup, data)
        swapping.set()
        release.wait(5)
        return swapped

    monkeypatch.setattr(NginxRouter, "_swap_in", slow_swap)

    async def scenario():
        task = asyncio.create_task(nginx.router.apply(WEB, GREEN))
        await until(swapping.is_set)
        task.cancel()
        await asyncio.sleep(0.05)
        assert not task.done()  # a restore now would race the swap still writing
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert nginx.live.read_bytes() == blue and names(tmp_path) == ["web.conf"]
    assert nginx.started == ["test", "reload"]  # the candidate was never even tested


@pytest.mark.parametrize("reload_fails", [False, True])
def test_nginx_cancelled_during_the_reload_lets_it_end_and_keeps_what_nginx_runs(tmp_path, reload_fails):
    nginx, blue = start_blue(tmp_path)
    nginx.block.add("reload")

    async def scenario():
        task = asyncio.create_task(nginx.router.apply(WEB, GREEN))
        await until(lambda: len(nginx.started) == 4)
        task.cancel()
        await asyncio.sleep(0.05)
        assert not task.done()  # the reload is sent: the file must end up as what nginx runs
        if reload_fails:
            nginx.fail.add("reload")
        nginx.gate.set()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert names(tmp_path) == ["web.conf"]
    assert nginx.live.read_bytes() == nginx.running == (blue if reload_fails else nginx.live.read_bytes())
    assert asyncio.run(nginx.router.read(WEB)) == (BLUE if reload_fails else GREEN)


def test_nginx_cancelled_while_reading_back_finishes_the_recovery_before_the_next_swap(tmp_path, monkeypatch):
    """`read` puts back a backup a killed activation left; cancelled, it must not go on beside the next activation."""
    nginx, blue = start_blue(tmp_path)
    (tmp_path / ".web.conf.bak").write_bytes(blue)
    nginx.live.write_text("# routing: blue=0 green=100 preview=blue\nnever tested\n")
    recovering, release = threading.Event(), threading.Event()
    real = nginx_module._recover

    def slow_recover(live, backup):
        if not recovering.is_set():  # only the read's recovery is slow
            recovering.set()
            release.wait(5)
        real(live, backup)

    monkeypatch.setattr(nginx_module, "_recover", slow_recover)

    async def scenario():
        reader = asyncio.create_task(nginx.router.read(WEB))
        await until(recovering.is_set)
        reader.cancel()
        applier = asyncio.create_task(nginx.router.apply(WEB, GREEN))
        await asyncio.sleep(0.05)
        assert nginx.started == ["test", "reload"]  # the next activation waits for the recovery's end
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await reader
        await applier

    asyncio.run(scenario())
    assert names(tmp_path) == ["web.conf"]
    assert nginx.live.read_bytes() == nginx.running and asyncio.run(nginx.router.read(WEB)) == GREEN


def test_nginx_cancelled_at_any_moment_keeps_the_file_nginx_runs(tmp_path):
    """A sweep: the activation cancelled at times spread over its whole length, checked every time."""
    (tmp_path / "probe").mkdir()
    probe, _ = start_blue(tmp_path / "probe")
    started = time.monotonic()
    asyncio.run(probe.router.apply(WEB, GREEN))
    length = time.monotonic() - started
    outcomes = set()
    for i in range(40):
        directory = tmp_path / f"run{i}"
        directory.mkdir()
        nginx, blue = start_blue(directory)

        async def scenario(nginx=nginx, delay=length * i / 30):
            task = asyncio.create_task(nginx.router.apply(WEB, GREEN))
            asyncio.get_running_loop().call_later(delay, task.cancel)
            try:
                await task
                return "applied"
            except asyncio.CancelledError:
                return "cancelled"

        outcomes.add(asyncio.run(scenario()))
        assert names(directory) == ["web.conf"], f"run {i}"
        assert nginx.live.read_bytes() == nginx.running, f"run {i}: the live file is not what nginx runs"
    assert "cancelled" in outcomes


# --- Traefik's file provider -------------------------------------------------------------------


@pytest.fixture
def silent_traefik():
    """A Traefik API that takes the connection and never answers: the trial's judgement hangs."""
    server = socket.create_server(("127.0.0.1", 0), backlog=64)
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    server.close()


def routes_with_blue(tmp_path) -> bytes:
    asyncio.run(TraefikFileRouter(tmp_path).apply(WEB, BLUE))
    return (tmp_path / "web.yml").read_bytes()


def test_traefik_cancelled_while_its_trial_is_judged_withdraws_the_trial(tmp_path, silent_traefik):
    blue = routes_with_blue(tmp_path)

    async def scenario():
        router = TraefikFileRouter(tmp_path, api=TraefikAPI(silent_traefik, timeout=30))
        try:
            task = asyncio.create_task(router.apply(WEB, GREEN))
            await until((tmp_path / "web-trial.yml").exists)
            await asyncio.sleep(0.05)  # judging now
            await cancelled(task)
        finally:
            await router.close()

    asyncio.run(scenario())
    assert names(tmp_path) == ["web.yml"] and (tmp_path / "web.yml").read_bytes() == blue


def test_traefik_http_cancelled_while_its_trial_is_judged_serves_no_trial(silent_traefik):
    async def scenario():
        router = TraefikHTTPRouter(api=TraefikAPI(silent_traefik, provider="http", timeout=30))
        try:
            await router.apply(WEB, BLUE)  # before mark_ready: no trial
            router.mark_ready()
            task = asyncio.create_task(router.apply(WEB, GREEN))
            await until(lambda: "web-trial" in router.document()["http"]["routers"])
            await cancelled(task)
            return router.document(), await router.written(WEB)
        finally:
            await router.close()

    doc, written = asyncio.run(scenario())
    assert sorted(doc["http"]["routers"]) == ["web"] and written == BLUE


def block_writes_to(monkeypatch, name: str):
    """Make the router's write (not removal) of the file `name` block in its thread until released."""
    writing, release = threading.Event(), threading.Event()
    real = traefik_file_module._replace

    def slow(path, data):
        if path.name == name and data is not None:
            writing.set()
            release.wait(5)
        real(path, data)

    monkeypatch.setattr(traefik_file_module, "_replace", slow)
    return writing, release


def test_traefik_cancelled_while_its_trial_is_published_withdraws_it_once_written(tmp_path, monkeypatch,
                                                                                  silent_traefik):
    blue = routes_with_blue(tmp_path)
    writing, release = block_writes_to(monkeypatch, "web-trial.yml")

    async def scenario():
        router = TraefikFileRouter(tmp_path, api=TraefikAPI(silent_traefik, timeout=30))
        try:
            task = asyncio.create_task(router.apply(WEB, GREEN))
            await until(writing.is_set)
            task.cancel()
            await asyncio.sleep(0.05)
            release.set()
            with pytest.raises(asyncio.CancelledError):
                await task
        finally:
            await router.close()

    asyncio.run(scenario())
    assert names(tmp_path) == ["web.yml"] and (tmp_path / "web.yml").read_bytes() == blue


def test_traefik_cancelled_while_the_routing_file_is_written_leaves_it_whole(tmp_path, monkeypatch):
    routes_with_blue(tmp_path)
    writing, release = block_writes_to(monkeypatch, "web.yml")
    router = TraefikFileRouter(tmp_path)

    async def scenario():
        task = asyncio.create_task(router.apply(WEB, GREEN))
        await until(writing.is_set)
        task.cancel()
        await asyncio.sleep(0.05)
        assert not task.done()
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert names(tmp_path) == ["web.yml"]
    assert parse_file((tmp_path / "web.yml").read_text(), "web") == GREEN  # the whole new file, which was checked


def test_traefik_removing_an_app_whose_cancelled_apply_still_writes_waits_for_the_write(tmp_path, monkeypatch):
    """The controller cancels an app's loop and removes its routing at once: the file must not come back."""
    routes_with_blue(tmp_path)
    writing, release = block_writes_to(monkeypatch, "web.yml")
    router = TraefikFileRouter(tmp_path)

    async def scenario():
        task = asyncio.create_task(router.apply(WEB, GREEN))
        await until(writing.is_set)
        task.cancel()
        remove = asyncio.create_task(router.remove("web"))
        await asyncio.sleep(0.05)
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        await remove

    asyncio.run(scenario())
    assert names(tmp_path) == []


def test_traefik_removes_a_trial_file_a_killed_controller_left(tmp_path):
    routes_with_blue(tmp_path)
    (tmp_path / "web-trial.yml").write_text("http: {}\n")
    asyncio.run(TraefikFileRouter(tmp_path).apply(WEB, BLUE))
    assert names(tmp_path) == ["web.yml"]


@pytest.mark.parametrize("with_api", [False, True])
def test_traefik_cancelled_at_any_moment_leaves_one_whole_routing_file_and_no_trial(tmp_path, silent_traefik,
                                                                                    with_api):
    length = 0.02
    outcomes = set()
    for i in range(30):
        directory = tmp_path / f"run{i}"
        directory.mkdir()
        blue = routes_with_blue(directory)

        async def scenario(directory=directory, delay=length * i / 25):
            api = TraefikAPI(silent_traefik, timeout=30) if with_api else None
            router = TraefikFileRouter(directory, api=api)
            task = asyncio.create_task(router.apply(WEB, GREEN))
            asyncio.get_running_loop().call_later(delay, task.cancel)
            try:
                await task
                return "applied"
            except asyncio.CancelledError:
                return "cancelled"
            finally:
                await router.close()

        outcomes.add(asyncio.run(scenario()))
        assert names(directory) == ["web.yml"], f"run {i}"
        written = parse_file((directory / "web.yml").read_text(), "web")
        assert written in (BLUE, GREEN), f"run {i}"
        if with_api:  # the judgement never ends: the routing never changes
            assert (directory / "web.yml").read_bytes() == blue, f"run {i}"
    assert "cancelled" in outcomes
