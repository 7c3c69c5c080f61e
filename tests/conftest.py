"""Fixtures over the real lab: Docker Swarm, Prometheus, Alertmanager and the demo image.

Tests under tests/unit are marked `unit` and touch no Docker; tests under tests/lab are marked
`lab`. A lab test that cannot reach the lab fails with the reason; it never skips.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support import lab

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"

pytest_plugins = ["tests.support.fixtures_prom", "tests.support.swarmshift_proc"]


def pytest_collection_modifyitems(config, items):
    for item in items:
        parts = Path(str(item.fspath)).relative_to(ROOT / "tests").parts
        if parts[0] == "unit":
            item.add_marker(pytest.mark.unit)
            if getattr(getattr(item, "obj", None), "is_hypothesis_test", False):
                item.add_marker(pytest.mark.fuzz)
        elif parts[0] == "lab":
            item.add_marker(pytest.mark.lab)
        elif parts[0] == "cluster":
            item.add_marker(pytest.mark.cluster)
    # The heavy cluster tests run last (stable order otherwise): in `make test` they share the heavy
    # lane, and the light ones open the beside lane, so the two lanes' cluster tests, which take
    # turns on the one cluster, come minutes apart (tests/support/lanes.py).
    items.sort(key=lambda item: bool(item.get_closest_marker("cluster") and item.get_closest_marker("heavy")))


_lab_error: str | None = None
_cleaned = False


@pytest.fixture(scope="session")
def docker_client():
    """The lab engine. Leftovers of earlier, killed runs are removed once, before the first test."""
    global _lab_error, _cleaned
    if _lab_error:
        pytest.fail(_lab_error, pytrace=False)
    try:
        client = lab.connect()
    except lab.LabUnavailable as err:
        _lab_error = f"the lab is not up: {err}"
        pytest.fail(_lab_error, pytrace=False)
    if not _cleaned:
        _cleaned = True
        removed = lab.remove_leftovers(client)
        if removed:
            print(f"\nlab: removed leftovers of killed runs: {', '.join(removed)}")
    yield client
    client.close()


@pytest.fixture
def swarm(docker_client, request):
    """Create uniquely named, labelled services and networks; all are removed after the test."""
    s = lab.LabSwarm(docker_client, prefix=request.node.name[:12].replace("_", "").lower())
    yield s
    s.close()


@pytest.fixture(scope="session")
def demo_image(docker_client) -> str:
    """The demo app image that `make lab` builds from stack/demo-app on the lab base image."""
    import docker.errors

    try:
        docker_client.images.get(lab.DEMO_IMAGE)
    except docker.errors.ImageNotFound:
        try:
            docker_client.images.get(lab.BASE_IMAGE)
        except docker.errors.ImageNotFound:
            pytest.fail(f"neither {lab.DEMO_IMAGE} nor the base {lab.BASE_IMAGE} exists: run `make lab`", pytrace=False)
        docker_client.images.build(
            path=str(ROOT / "stack" / "demo-app"), tag=lab.DEMO_IMAGE, buildargs={"BASE_IMAGE": lab.BASE_IMAGE}
        )
    return lab.DEMO_IMAGE


@pytest.fixture
def knob():
    """A hand-turned gauge (`swarmshift_test_load{service=...}`) for Prometheus to scrape."""
    from tests.support.knob import Knob

    k = Knob()
    yield k
    k.close()


@pytest.fixture
def webhook():
    """A webhook receiver on 127.0.0.1 that records every POST."""
    from tests.support.receiver import WebhookReceiver

    receiver = WebhookReceiver()
    yield receiver
    receiver.close()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return SHARED


def shared_file(name: str) -> Path:
    """A file from ../shared. On a user's clone it is absent, and only that check is skipped."""
    path = SHARED / name
    if not path.exists():
        if os.environ.get("CI"):
            pytest.fail(f"../shared/{name} is missing in CI", pytrace=False)
        pytest.skip(f"../shared/{name} is not beside this clone")
    return path
