"""The nginx router without nginx: what it writes, and how it keeps the live file when a test or reload fails.

The same router drives Debian's real nginx in tests/lab/test_nginx_router.py.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import pytest

from bluegreen.apps import App, Color
from bluegreen.config import NginxSettings
from bluegreen.routers import RouterError
from bluegreen.routers.base import routing_in
from bluegreen.routers.nginx import NginxRouter, command, signal_pid_file
from bluegreen.state import Routing

WEB = App("web", "web-blue", "web-green", 8000, "Host(`web.example.com`) || Host(`www.example.com`)",
          preview_rule="Host(`preview.example.com`)")


class Actions:
    """Test and reload stand-ins that record their calls and fail when told."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.fail: set[str] = set()

    def action(self, name: str):
        async def run() -> None:
            self.calls.append(name)
            if name in self.fail:
                raise RouterError(f"{name} said no")
        return run


def router(tmp_path, actions: Actions, **options) -> NginxRouter:
    return NginxRouter(tmp_path, test=actions.action("test"), reload=actions.action("reload"), **options)


def test_the_config_proxies_to_the_active_color_and_serves_the_preview_from_the_other(tmp_path):
    text = router(tmp_path, Actions(), status_listen="8099", status_url="http://nginx:8099").render(
        WEB, Routing.all_to(Color.GREEN))
    assert "# routing: blue=0 green=100 preview=blue\n" in text
    main, preview, status = text.split("server {")[1:]
    assert "server_name web.example.com www.example.com;" in main
    assert "set $swarmshift_upstream web-green:8000;" in main and "proxy_pass http://$swarmshift_upstream;" in main
    assert "resolver 127.0.0.11 valid=5s ipv6=off;" in main  # names resolve per request, through Docker's DNS
    assert "keepalive_timeout 0s;" in main
    assert "proxy_next_upstream error timeout http_502 http_503 http_504;" in main
    assert "server_name preview.example.com;" in preview and "set $swarmshift_upstream web-blue:8000;" in preview
    assert "listen 8099;" in status and "server_name swarmshift-status-web;" in status
    assert 'return 200 "app=web blue=0 green=100 preview=blue\\n";' in status
    assert routing_in(text) == Routing.all_to(Color.GREEN)


@pytest.mark.parametrize("status_url", [None, "http://nginx:8099"])
def test_nginx_never_reports_its_servers_health(tmp_path, status_url):
    r = router(tmp_path, Actions(), status_listen="8099" if status_url else None, status_url=status_url)
    assert asyncio.run(r.servers_up(WEB, Color.BLUE)) is None  # a rollback never waits on it


@pytest.mark.parametrize(("app", "routing", "message"), [
    (WEB, Routing.toward(Color.GREEN, 10), "nginx cannot split traffic"),
    (App("web", "web-blue", "web-green", 8000, "Host(`w`) && PathPrefix(`/api`)"), Routing.all_to(Color.BLUE),
     "needs a rule of Host"),
    (App("web", "web-blue", "web-green", 8000, "Host(`w;evil`)"), Routing.all_to(Color.BLUE),
     "not a host name nginx takes"),
])
def test_what_nginx_cannot_express_is_refused_before_anything_is_written(tmp_path, app, routing, message):
    actions = Actions()
    with pytest.raises(RouterError, match=message):
        asyncio.run(router(tmp_path, actions).apply(app, routing))
    assert list(tmp_path.iterdir()) == [] and actions.calls == []


def test_an_upstream_address_is_checked(tmp_path):
    r = router(tmp_path, Actions(), upstream=lambda app, color: "127.0.0.1:80; evil")
    with pytest.raises(RouterError, match="not an upstream address"):
        r.render(WEB, Routing.all_to(Color.BLUE))


def test_a_good_config_is_tested_then_reloaded_and_an_unchanged_one_is_left_alone(tmp_path):
    actions = Actions()
    r = router(tmp_path, actions)

    async def scenario():
        await r.apply(WEB, Routing.all_to(Color.BLUE))
        await r.apply(WEB, Routing.all_to(Color.BLUE))
        await r.apply(WEB, Routing.all_to(Color.GREEN))
        return await r.read(WEB)

    assert asyncio.run(scenario()) == Routing.all_to(Color.GREEN)
    assert actions.calls == ["test", "reload", "test", "reload"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["web.conf"]


@pytest.mark.parametrize("failing", ["test", "reload"])
def test_a_failed_test_or_reload_puts_the_old_config_back(tmp_path, failing):
    actions = Actions()
    r = router(tmp_path, actions)
    asyncio.run(r.apply(WEB, Routing.all_to(Color.BLUE)))
    before = r.path("web").read_bytes()
    actions.fail.add(failing)
    with pytest.raises(RouterError, match=f"the old one stays in effect: {failing} said no"):
        asyncio.run(r.apply(WEB, Routing.all_to(Color.GREEN)))
    assert r.path("web").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["web.conf"]  # no backup or temp file left
    assert asyncio.run(r.read(WEB)) == Routing.all_to(Color.BLUE)
    if failing == "test":
        assert actions.calls == ["test", "reload", "test"]  # never reloaded with a refused config


def test_a_first_config_that_fails_leaves_no_routing_behind(tmp_path):
    actions = Actions()
    actions.fail.add("test")
    r = router(tmp_path, actions)
    with pytest.raises(RouterError):
        asyncio.run(r.apply(WEB, Routing.all_to(Color.BLUE)))
    assert asyncio.run(r.read(WEB)) is None


def test_a_backup_left_by_a_killed_activation_is_put_back_before_anything_else(tmp_path):
    """Killed between the swap and the test, the live file holds an untested candidate."""
    actions = Actions()
    r = router(tmp_path, actions)
    asyncio.run(r.apply(WEB, Routing.all_to(Color.BLUE)))
    tested = r.path("web").read_bytes()
    os.replace(r.path("web"), tmp_path / ".web.conf.bak")
    r.path("web").write_text("# routing: blue=0 green=100 preview=blue\nthis is not tested\n")
    assert asyncio.run(r.read(WEB)) == Routing.all_to(Color.BLUE)
    assert r.path("web").read_bytes() == tested and not (tmp_path / ".web.conf.bak").exists()


def test_removing_an_app_is_tested_and_reloaded_too(tmp_path):
    actions = Actions()
    r = router(tmp_path, actions)
    asyncio.run(r.apply(WEB, Routing.all_to(Color.BLUE)))
    asyncio.run(r.remove("web"))
    assert asyncio.run(r.read(WEB)) is None and actions.calls == ["test", "reload", "test", "reload"]


def test_command_actions_report_output_exit_code_and_timeouts():
    async def scenario():
        await command([sys.executable, "-c", "pass"])()
        results = []
        for argv, within in (([sys.executable, "-c", "import sys; print('bad line 3'); sys.exit(1)"], 5),
                             ([sys.executable, "-c", "import time; time.sleep(5)"], 0.2),
                             (["/nonexistent/nginx", "-t"], 5)):
            with pytest.raises(RouterError) as err:
                await command(argv, within=within)()
            results.append(str(err.value))
        return results

    failed, slow, missing = asyncio.run(scenario())
    assert "exited with 1: bad line 3" in failed
    assert "no answer within 200ms" in slow
    assert missing.startswith("/nonexistent/nginx: ")


def test_a_pid_file_reload_signals_that_process(tmp_path):
    got = []
    previous = signal.signal(signal.SIGUSR1, lambda *_: got.append(True))
    try:
        (tmp_path / "nginx.pid").write_text(f"{os.getpid()}\n")
        asyncio.run(signal_pid_file(tmp_path / "nginx.pid", signal.SIGUSR1)())
        with pytest.raises(RouterError, match="cannot signal the nginx master"):
            asyncio.run(signal_pid_file(tmp_path / "missing.pid")())
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert got == [True]


def test_the_router_is_built_from_settings(tmp_path):
    settings = NginxSettings(conf_dir=str(tmp_path), listen="127.0.0.1:8080", pid_file=str(tmp_path / "pid"),
                             status_listen="8099", status_url="http://127.0.0.1:8099", keepalive_timeout=15)
    r = NginxRouter.from_settings(settings)
    text = r.render(WEB, Routing.all_to(Color.BLUE))
    assert "listen 127.0.0.1:8080;" in text and "keepalive_timeout 15s;" in text and "listen 8099;" in text
    with pytest.raises(ValueError, match="needs the Swarm client"):
        NginxRouter.from_settings(NginxSettings(service="edge_nginx"))
