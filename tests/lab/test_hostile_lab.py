"""Hostile labels next to a normal app, through the real Traefik: no service can hurt another.

Anyone who can deploy a stack writes service labels. Here a set of hostile services sits beside
a normal app, all visible to one controller (Traefik's file provider, the controller on the
host writing the directory Traefik watches): names that try to leave that directory, rules
that try to capture every request or the normal app's host, numbers that do not parse, a rule
nested too deep, a bad state label, a third service claiming the normal app's color, and an app
of the same name in another stack. The normal app must deploy, switch and roll back as usual,
nothing may be written outside the directory, and each hostile app shows as broken with its
reason.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bluegreen.labels import APP_LABEL, COLOR_LABEL, PORT_LABEL, RULE_LABEL
from tests.support import lab
from tests.support.bluegreen import release_images
from tests.support.traefik import SELECT, TraefikStack

STACK_LABEL = "com.docker.stack.namespace"


@pytest.fixture(scope="module")
def images(docker_client, demo_image) -> dict[str, str]:
    return release_images(docker_client)


def hostile_apps(app: str) -> dict[str, tuple[dict[str, str], str]]:
    """Each hostile app's labels (both colors get them) and a phrase its reason must hold."""
    nested = "(" * 300 + "Host(`nested.localhost`)" + ")" * 300
    plain = {PORT_LABEL: "8000"}
    return {
        "escape": ({APP_LABEL: "../../escape", RULE_LABEL: "Host(`escape.localhost`)", **plain}, APP_LABEL),
        "newline": ({APP_LABEL: "evil\n", RULE_LABEL: "Host(`evil.localhost`)", **plain}, APP_LABEL),
        "catchall": ({APP_LABEL: "catchall", RULE_LABEL: "PathPrefix(`/`)", **plain}, app),
        "thief": ({APP_LABEL: "thief", RULE_LABEL: "Host(`127.0.0.1`) && PathPrefix(`/`)", **plain}, app),
        "superscript": ({APP_LABEL: "superscript", RULE_LABEL: "Host(`sup.localhost`)", PORT_LABEL: "8²"}, PORT_LABEL),
        "fullwidth": ({APP_LABEL: "fullwidth", RULE_LABEL: "Host(`fw.localhost`)", PORT_LABEL: "８０００"}, PORT_LABEL),
        "nested": ({APP_LABEL: "nested", RULE_LABEL: nested, **plain}, RULE_LABEL),
        "badstate": ({APP_LABEL: "badstate", RULE_LABEL: "Host(`state.localhost`)",
                      "swarmshift.bluegreen.state.generation": "²", **plain}, "generation"),
    }


def tree(root: Path, skip: tuple[Path, ...]) -> dict[str, float]:
    """Every file under `root` (outside `skip`) with its modification time."""
    found = {}
    for base, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if Path(base, d) not in skip]
        for name in files:
            path = Path(base, name)
            found[str(path)] = path.lstat().st_mtime
    return found


def test_hostile_services_break_only_themselves_and_the_normal_app_deploys_switches_and_rolls_back(
    swarm, tmp_path, images, bluegreen_proc
):
    stack = TraefikStack(swarm, tmp_path, images, provider="file")
    app = stack.app
    hostile = hostile_apps(app)
    for stem, (labels, _) in hostile.items():
        for color in ("blue", "green"):
            swarm.service(f"{stem}-{color}", image=images["v1"], replicas=0, wait=False,
                          labels={**labels, COLOR_LABEL: color, SELECT: app})
    # A third service claiming the normal app's green: refused, the app keeps its own green.
    normal = swarm.client.api.inspect_service(stack.services["green"])["Spec"]["Labels"]
    third = swarm.service("third", image=images["v1"], replicas=0, wait=False, labels=dict(normal)).name
    # The normal app's name in another stack: a different app, which collides with nothing.
    other_stack = f"other{app[-6:]}"
    for color in ("blue", "green"):
        swarm.service(f"scoped-{color}", image=images["v1"], replicas=0, wait=False, labels={
            APP_LABEL: app, COLOR_LABEL: color, PORT_LABEL: "8000", RULE_LABEL: "Host(`other.localhost`)",
            STACK_LABEL: other_stack, SELECT: app})

    basetemp = tmp_path.parent.parent
    workdirs = (stack.dynamic_dir, tmp_path / "bluegreen", tmp_path / "health")
    before = tree(basetemp, workdirs)

    daemon = bluegreen_proc(stack.config())
    daemon.wait_event("controller_reconciled", 60)  # one bad service never holds the start-up
    lab.wait_for("Traefik to serve blue (v1)", lambda: stack.serves("v1"), 60)

    status, listed = daemon.api("GET", "/v1/apps")
    assert status == 200, listed
    views = {view["app"]: view for view in listed["apps"]}
    scoped = f"{other_stack}_{app}"
    assert not views[app].get("broken") and not views[scoped].get("broken"), (views[app], views[scoped])
    assert third in str(views[app].get("refused")), views[app]
    reasons = {key: " ".join(view.get("problems") or []) for key, view in views.items() if view.get("broken")}
    for stem, (labels, phrase) in hostile.items():
        found = [text for key, text in reasons.items() if key == labels[APP_LABEL] or stem in text]
        assert found and phrase in found[0], f"{stem}: {reasons}"
    # Each is reported once, not on every tick.
    assert len(daemon.events("app_invalid", app="catchall")) == 1

    # The normal app: deploy (a switch to green), switch back, and roll back to v2.
    done = daemon.cli("deploy", app, "--image", images["v2"], "--wait", "--timeout", "90")
    assert done.returncode == 0, done.stdout + done.stderr
    assert stack.serves("v2")
    done = daemon.cli("switch", app, "--wait", "--timeout", "60")
    assert done.returncode == 0, done.stdout + done.stderr
    assert stack.serves("v1")
    done = daemon.cli("rollback", app, "--wait", "--timeout", "60")
    assert done.returncode == 0, done.stdout + done.stderr
    assert stack.serves("v2")

    # Only the two valid apps have a file, and Traefik routes nothing else of ours.
    assert sorted(p.name for p in stack.dynamic_dir.iterdir()) == sorted([f"{app}.yml", f"{scoped}.yml"])
    routers = {r["name"] for r in stack.get_api("/api/http/routers") or []}
    ours = {name.split("@")[0] for name in routers if name.endswith("@file")}
    assert ours == {app, f"{app}-preview", scoped}, routers
    # Nothing outside the directory was written or removed.
    assert tree(basetemp, workdirs) == before
    assert not list(basetemp.glob("**/escape*"))
