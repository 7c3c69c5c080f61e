"""The router interface the deploy machine drives, and what every router shares: RouterError, polling, file writes.

Like Flagger's routers, each proxy lives in one module and implements the same small interface;
the controller never knows which proxy it drives:

- `apply(app, routing)` makes the proxy send `routing` (weights and the preview color). It is
  idempotent, and it never leaves the proxy with a configuration it would refuse.
- `read(app)` is the routing the proxy has in effect, as well as the router can tell (Traefik's
  API when configured, else what the router wrote), or None when it has nothing for the app.
- `confirm(app, routing)` waits a bounded time until `read` reports `routing`.
- `mark_ready()` says that every app's routing has been applied since start-up: a router that
  serves one document for all apps (Traefik's HTTP provider) serves it only from then on.
- `traefik_document(routes)` is the Traefik dynamic configuration for the apps as this router
  routes them: what `GET /v1/traefik` serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

from bluegreen.apps import App
from bluegreen.state import Routing

# The first line of every file a router writes; a file without it belongs to the operator.
HEADER = "# Managed by swarmshift (blue-green controller): rewritten on every switch; do not edit.\n"
_ROUTING_LINE = re.compile(r"^# routing: (.*)$", re.MULTILINE)


class RouterError(Exception):
    """The proxy could not be given the routing; its previous routing is still in effect."""


class Router(Protocol):
    kind: str

    async def apply(self, app: App, routing: Routing) -> None: ...

    async def read(self, app: App) -> Routing | None: ...

    async def confirm(self, app: App, routing: Routing) -> bool: ...

    def mark_ready(self) -> None: ...

    def traefik_document(self, routes: Iterable[tuple[App, Routing]]) -> dict[str, Any]: ...

    async def remove(self, app: str) -> None: ...

    async def close(self) -> None: ...


async def poll_until(read: Callable[[], Awaitable[Routing | None]], want: Routing, within: float,
                     interval: float = 0.1) -> bool:
    """Call `read()` until it returns `want` or `within` seconds pass; at least once."""
    deadline = time.monotonic() + within
    while True:
        if await read() == want:
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(min(interval, max(0.0, deadline - time.monotonic())))


def duration(seconds: float) -> str:
    """A duration as Go (Traefik) and nginx read it: `5s`, `500ms`."""
    ms = round(seconds * 1000)
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def routing_comment(routing: Routing) -> str:
    """The comment line that records a file's routing, which `routing_in` reads back."""
    return f"# routing: {routing}"


def routing_in(text: str) -> Routing | None:
    """The routing recorded in a file this package wrote, or None."""
    match = _ROUTING_LINE.search(text)
    if not match:
        return None
    try:
        return Routing.parse(match.group(1))
    except ValueError:
        return None


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace `path` with `data` so that readers see the old content or the new, never a part.

    The temp file sits in the same directory (rename is atomic only within a file system) and
    ends in `.tmp`, which Traefik's file provider skips. Data and directory are fsynced, so a
    crash right after the rename cannot bring back the old file or an empty one.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        # mkstemp creates 0600; the proxy reading the file may run as another user.
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
