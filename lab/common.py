"""Small helpers for the lab's single-node swarm, shared by `make demo` and the tests."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import docker
import docker.errors

# The demo app as `make lab` builds it from stack/demo-app.
DEMO_IMAGE = "swarmshift-demo:lab"


def free_port() -> int:
    """A TCP port nothing listens on now, for a host-mode published port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, check: Callable[[], Any], timeout: float, interval: float = 0.25) -> Any:
    """Poll `check` until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def answers(url: str) -> bool:
    """Whether GET `url` answers 200 within 3 s."""
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            return resp.status == 200
    except (OSError, urllib.error.HTTPError):
        return False


def remove_network(client: docker.DockerClient, name: str, timeout: float = 30) -> None:
    """Remove a network, waiting while the tasks of just-removed services still hold it."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.networks.get(name).remove()
            return
        except docker.errors.NotFound:
            return
        except docker.errors.APIError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def json_lines(containers) -> list[dict[str, Any]]:
    """The JSON log lines of these containers, in their order; other output is skipped."""
    out = []
    for ctr in containers:
        for line in ctr.logs().decode(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a traceback line, or output of a dependency
    return out
