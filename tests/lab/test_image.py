"""The swarmshift image that `make lab` builds from the Dockerfile on the lab's base image."""

from __future__ import annotations

import docker.errors
import pytest

from tests.support import lab

IMAGE = "swarmshift:lab"


@pytest.fixture(scope="module")
def image(docker_client):
    try:
        return docker_client.images.get(IMAGE)
    except docker.errors.ImageNotFound:
        pytest.fail(f"{IMAGE} is missing: `make lab` builds it (lab/swarmshift-image.sh)", pytrace=False)


def test_image_is_small_non_root_and_has_a_healthcheck(image):
    config = image.attrs["Config"]
    assert config["User"] == "10001"
    assert config["Entrypoint"] == ["swarmshift"]
    assert "/healthz" in " ".join(config["Healthcheck"]["Test"])
    # The lab base is 124 MB; python:3.12-slim is about the same, and the limit there is 200 MB.
    assert image.attrs["Size"] < 200 * 1000 * 1000


def test_no_sources_tests_caches_or_compilers_in_the_image(docker_client, image):
    script = ("test ! -e /src && test ! -e /venv/bin/pip && ! command -v gcc && ! command -v cc "
              "&& test -z \"$(find / -xdev \\( -name '.git' -o -name 'tests' -path '*swarmshift*' \\) 2>/dev/null)\" "
              "&& test ! -d /root/.cache/pip && swarmshift --help >/dev/null && echo clean")
    out = docker_client.containers.run(IMAGE, ["-c", script], entrypoint="sh", remove=True, labels={lab.LABEL: lab.OWNER})
    assert out.decode().strip() == "clean"


def test_the_autoscaler_container_becomes_healthy(docker_client, image):
    container = docker_client.containers.run(
        IMAGE, ["autoscaler", "run", "--source", "docker", "--interval", "5"], detach=True, user="0",
        volumes={"/var/run/docker.sock": {"bind": "/var/run/docker.sock", "mode": "rw"}},
        labels={lab.LABEL: lab.OWNER},
        # Only this session's services: without a selector it would scale whatever another
        # session (the other lane of tests/support/lanes.py) runs with autoscale labels.
        environment={"SWARMSHIFT_SELECTOR": f"{lab.LABEL}={lab.OWNER}"},
    )
    try:
        def health():
            container.reload()
            return container.attrs["State"].get("Health", {}).get("Status") == "healthy"

        lab.wait_for("the autoscaler container to be healthy", health, 40, interval=1)
        logs = container.logs().decode()
        assert '"event": "autoscaler_started"' in logs
    finally:
        container.remove(force=True)
