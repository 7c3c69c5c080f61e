"""The routers' file names: every file written, read or removed is directly inside the router's directory.

Discovery checks app names, but the routers do not rely on it: these tests hand them names that
got past it (set on a built App, the way a bug upstream would) and symlinks planted in their
directory, and check the whole tmp tree before and after.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st

from bluegreen.apps import App, Color
from bluegreen.routers import RouterError
from bluegreen.routers.base import HEADER, NAME_BYTES, confined, inside
from bluegreen.routers.nginx import NginxRouter
from bluegreen.routers.traefik_file import TraefikFileRouter
from bluegreen.state import Routing
from tests.support.fuzz import fuzz

WEB = App("web", "web-blue", "web-green", 8000, "Host(`web.example.com`)")

HOSTILE = [
    "../x", "a/../../etc/passwd", "/etc/passwd", "x\n", "x\nserver { }", "a\x00b", "", ".", "..", ".hidden",
    "a\\b", "tab\there", "x" * (NAME_BYTES + 1), "\u2028", "\ud800",
]


def named(app: App, name: str) -> App:
    """`app` under `name`, however App or discovery would check it: what a router must still refuse."""
    app = App(app.name, app.blue_service, app.green_service, app.port, app.rule)
    object.__setattr__(app, "name", name)
    return app


def tree(root: Path) -> dict[str, bytes | str]:
    """Every entry under `root`: file contents, symlink targets, directories."""
    out: dict[str, bytes | str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                out[rel] = "-> " + os.readlink(path)
            elif path.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = path.read_bytes()
    return out


@pytest.fixture
def layout(tmp_path):
    """tmp/routes (the router's directory) beside tmp/outside/victim (what must never be touched)."""
    (tmp_path / "routes").mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "victim.yml").write_bytes(b"operator's file\n")
    (tmp_path / "outside" / "victim.conf").write_bytes(b"operator's file\n")
    return tmp_path


@pytest.mark.parametrize("name", HOSTILE)
def test_a_hostile_name_is_refused_and_logged(tmp_path, name):
    with structlog.testing.capture_logs() as logs, pytest.raises(RouterError, match="app name"):
        confined(tmp_path, name, suffix=".yml")
    assert [(e["event"], e["name"]) for e in logs] == [("router_path_refused", name)]


def test_a_good_name_maps_to_its_file(tmp_path):
    assert confined(tmp_path, "web", suffix=".yml") == tmp_path / "web.yml"
    assert confined(tmp_path, "web", prefix=".", suffix=".conf.bak") == tmp_path / ".web.conf.bak"
    assert confined(tmp_path, "x" * NAME_BYTES, suffix=".conf") == tmp_path / ("x" * NAME_BYTES + ".conf")


def test_a_symlink_in_the_directory_pointing_out_is_refused(layout):
    routes = layout / "routes"
    (routes / "web.yml").symlink_to(layout / "outside" / "victim.yml")
    (routes / "inner.yml").symlink_to(routes / "web2.yml")  # stays in the directory: fine
    with structlog.testing.capture_logs() as logs, pytest.raises(RouterError, match="outside the directory"):
        confined(routes, "web", suffix=".yml")
    assert logs[0]["event"] == "router_path_refused" and logs[0]["name"] == "web"
    assert confined(routes, "inner", suffix=".yml") == routes / "inner.yml"


def test_a_directory_reached_through_a_symlink_is_still_inside(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert confined(tmp_path / "link", "web", suffix=".yml") == tmp_path / "link" / "web.yml"


@pytest.mark.parametrize("kind", ["traefik-file", "nginx"])
@pytest.mark.parametrize("name", HOSTILE)
def test_a_router_writes_reads_and_removes_nothing_for_a_hostile_name(layout, name, kind):
    calls = []

    async def action():
        calls.append("called")

    routes = layout / "routes"
    router = TraefikFileRouter(routes) if kind == "traefik-file" else NginxRouter(routes, test=action, reload=action)
    before = tree(layout)

    async def scenario():
        for call in (router.apply(named(WEB, name), Routing.all_to(Color.BLUE)), router.read(named(WEB, name)),
                     router.remove(name)):
            with pytest.raises(RouterError):
                await call

    asyncio.run(scenario())
    assert tree(layout) == before and calls == []  # nginx is never tested nor reloaded for a refused name


def test_the_traefik_file_router_never_follows_a_planted_symlink(layout):
    routes = layout / "routes"
    (routes / "web.yml").symlink_to(layout / "outside" / "victim.yml")
    (routes / "web-trial.yml").symlink_to(layout / "outside" / "victim.yml")
    # Outside, a file that looks like one of ours: read through the symlink, GET /v1/traefik would serve it.
    (layout / "outside" / "managed.yml").write_text(HEADER + "http: {routers: {stolen: {rule: Host(`x`)}}}\n")
    (routes / "other.yml").symlink_to(layout / "outside" / "managed.yml")
    router = TraefikFileRouter(routes)
    before = tree(layout)

    async def scenario():
        for call in (router.apply(WEB, Routing.all_to(Color.BLUE)), router.read(WEB), router.remove("web")):
            with pytest.raises(RouterError, match="outside the directory"):
                await call

    asyncio.run(scenario())
    assert tree(layout) == before
    # The symlink named other.yml is not read into GET /v1/traefik.
    assert router.merged() == {"http": {"routers": {}, "services": {}}}


@pytest.mark.parametrize("planted", ["web.conf", ".web.conf.bak"])
def test_the_nginx_router_never_follows_a_planted_symlink(layout, planted):
    """A backup symlink would be renamed over the live file by the recovery: nginx would then read the target."""
    routes = layout / "routes"
    (routes / planted).symlink_to(layout / "outside" / "victim.conf")
    calls = []

    async def action():
        calls.append("called")

    router = NginxRouter(routes, test=action, reload=action)
    before = tree(layout)

    async def scenario():
        for call in (router.apply(WEB, Routing.all_to(Color.BLUE)), router.read(WEB), router.remove("web")):
            with pytest.raises(RouterError, match="outside the directory"):
                await call

    asyncio.run(scenario())
    assert tree(layout) == before and calls == []


@fuzz
@given(name=st.one_of(
    st.text(),
    st.text(alphabet=st.sampled_from(["a", ".", "/", "\\", "\n", "\x00", "-", " ", "é", "\u2028"]), max_size=12),
    st.lists(st.sampled_from(["..", ".", "etc", "passwd", "", "x"]), max_size=6).map("/".join),
), prefix=st.sampled_from(["", "."]), suffix=st.sampled_from([".yml", "-trial.yml", ".conf", ".conf.bak"]))
def test_fuzz_a_name_maps_inside_the_directory_or_is_refused(tmp_path, name, prefix, suffix):
    routes = tmp_path / "routes"
    routes.mkdir(exist_ok=True)
    try:
        path = confined(routes, name, prefix=prefix, suffix=suffix)
    except RouterError:
        return
    assert path.parent == routes and inside(routes, path)
    assert os.path.dirname(os.path.realpath(path)) == os.path.realpath(routes)
    assert path.name == f"{prefix}{name}{suffix}" and not name.startswith(".")


@fuzz
@given(name=st.text(alphabet=st.characters(codec="utf-8", exclude_characters="/\\"), min_size=1, max_size=30),
       target=st.sampled_from(["outside/victim.yml", "routes/other.yml", "routes", "..", "/etc/passwd", "outside"]))
def test_fuzz_a_planted_symlink_is_followed_only_when_it_stays_in_the_directory(tmp_path_factory, name, target):
    root = tmp_path_factory.mktemp("planted")
    (root / "routes").mkdir()
    (root / "outside").mkdir()
    try:
        path = confined(root / "routes", name, suffix=".yml")
    except RouterError:
        return  # refused on the name alone
    path.symlink_to(target if target.startswith("/") else root / target)
    stays = os.path.realpath(path).startswith(str(root / "routes") + os.sep)
    try:
        assert confined(root / "routes", name, suffix=".yml") == path and stays
    except RouterError:
        assert not stays
