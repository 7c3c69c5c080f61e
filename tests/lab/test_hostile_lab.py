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

from bluegreen.labels import APP_LABEL, COLOR_LABEL, PORT_LABEL, PREVIEW_RULE_LABEL, RULE_LABEL
from tests.support import lab
from tests.support.bluegreen import release_images
from tests.support.traefik import SELECT, TraefikStack

STACK_LABEL = "com.docker.stack.namespace"


@pytest.fixture(scope="module")
def images(docker_client, demo_image) -> dict[str, str]:
    return release_images(docker_client)


def hostile_apps(app: str) -> dict[str, tuple[dict[str, str], str]]:
    """Each hostile app's labels (both colors get them) and a phrase its reason must hold.

    Each has a preview rule of its own, so that its one hostile label is its only problem.
    """
    nested = "(" * 300 + "Host(`nested.localhost`)" + ")" * 300

    def labels(name: str, rule: str, port: str = "8000") -> dict[str, str]:
        preview = "".join(c for c in name if c.isascii() and c.isalnum())
        return {APP_LABEL: name, RULE_LABEL: rule, PORT_LABEL: port,
                PREVIEW_RULE_LABEL: f"Host(`preview-{preview}.localhost`)"}

    return {
        "escape": (labels("../../escape", "Host(`escape.localhost`)"), APP_LABEL),
        "newline": (labels("evil\n", "Host(`evil.localhost`)"), APP_LABEL),
        "catchall": (labels("catchall", "PathPrefix(`/`)"), f"overlaps app {app}'s"),
        "thief": (labels("thief", "Host(`127.0.0.1`) && PathPrefix(`/`)"), f"overlaps app {app}'s"),
        "superscript": (labels("superscript", "Host(`sup.localhost`)", port="8²"), PORT_LABEL),
        "fullwidth": (labels("fullwidth", "Host(`fw.localhost`)", port="８０００"), PORT_LABEL),
        "nested": (labels("nested", nested), "more than 16 deep"),
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
    for color in ("blue", "green"):
        swarm.service(f"badstate-{color}", image=images["v1"], replicas=0, wait=False, labels={
            APP_LABEL: "badstate", COLOR_LABEL: color, PORT_LABEL: "8000", RULE_LABEL: "Host(`state.localhost`)",
            PREVIEW_RULE_LABEL: "Host(`preview.state.localhost`)", "swarmshift.bluegreen.state.generation": "²",
            SELECT: app})
    # A third service claiming the normal app's green: refused, the app keeps its own green.
    normal = swarm.client.api.inspect_service(stack.services["green"])["Spec"]["Labels"]
    third = swarm.service("third", image=images["v1"], replicas=0, wait=False, labels=dict(normal)).name
    # The normal app's name in another stack: a different app, which collides with nothing.
    other_stack = f"other{app[-6:]}"
    for color in ("blue", "green"):
        swarm.service(f"scoped-{color}", image=images["v1"], replicas=0, wait=False, labels={
            APP_LABEL: app, COLOR_LABEL: color, PORT_LABEL: "8000", RULE_LABEL: "Host(`other.localhost`)",
            PREVIEW_RULE_LABEL: "Host(`preview.other.localhost`)", STACK_LABEL: other_stack, SELECT: app})

    basetemp = tmp_path.parent  # this session's temp root: ../../ from the router directory lands here
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
    # A broken app is listed with its reasons; a service whose app name is no name belongs to no
    # app, and is listed on its own.
    reasons = [" ".join(view["problems"]) for view in views.values() if view.get("broken")]
    reasons += listed["unattached"]
    for stem, (_, phrase) in hostile.items():
        found = [text for text in reasons if f"-{stem}-" in text or f"app {stem}:" in text]
        assert found and phrase in " ".join(found), f"{stem}: {found or reasons}"
    assert sorted(key for key, view in views.items() if view.get("broken")) == sorted(
        ["catchall", "thief", "superscript", "fullwidth", "nested"])
    # A state label that does not parse is the controller's own state gone bad: the app's state is
    # read from what the router has in effect instead, written back whole, and the problem logged once.
    invalid = daemon.events("app_invalid", app="badstate")
    assert len(invalid) == 1 and "generation" in " ".join(invalid[0]["problems"]), invalid
    generations = {svc.attrs["Spec"]["Labels"].get("swarmshift.bluegreen.state.generation")
                   for svc in swarm.client.services.list(filters={"label": f"{APP_LABEL}=badstate"})}
    assert len(generations) == 1 and generations.pop().isascii(), generations
    # Each is reported when its problems change, not on every tick (checked again at the end).
    reported = len(daemon.events("app_invalid"))

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

    # Only the valid apps have a file, and Traefik routes nothing else of ours.
    valid = [app, scoped, "badstate"]
    assert sorted(p.name for p in stack.dynamic_dir.iterdir()) == sorted(f"{key}.yml" for key in valid)
    routers = {r["name"] for r in stack.get_api("/api/http/routers") or []}
    ours = {name.split("@")[0] for name in routers if name.endswith("@file")}
    assert ours == {name for key in valid for name in (key, f"{key}-preview")}, routers
    assert len(daemon.events("app_invalid")) == reported
    # Nothing outside the directory was written or removed.
    assert tree(basetemp, workdirs) == before
    assert not list(basetemp.glob("**/escape*"))
