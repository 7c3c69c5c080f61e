"""The router interface the deploy machine drives, and what every router shares: RouterError, polling, file paths and writes.

Like Flagger's routers, each proxy lives in one module and implements the same small interface;
the controller never knows which proxy it drives:

- `apply(app, routing)` makes the proxy send `routing` (weights and the preview color). It is
  idempotent, and it never leaves the proxy with a configuration it would refuse.
- `read(app)` is the routing the proxy has in effect, as well as the router can tell (Traefik's
  API when configured, else what the router wrote), or None when it has nothing for the app.
- `confirm(app, routing)` waits a bounded time until `read` reports `routing`.
- `servers_up(app, color)` is whether the proxy's own health checks have a server of that
  color up: True, False, or None when the router cannot tell (no such report, no API, the
  proxy unreachable). A rollback waits for it, so a task Swarm just rescheduled gets traffic
  only once the proxy would send it some.
- `mark_ready()` says that every app's routing has been applied since start-up: a router that
  serves one document for all apps (Traefik's HTTP provider) serves it only from then on.
- `traefik_document(routes)` is the Traefik dynamic configuration for the apps as this router
  routes them: what `GET /v1/traefik` serves.

App names come from service labels and become file names. Discovery checks them, but a router
does not rely on that: every path it writes, reads or removes is built by `confined`, which
refuses a name whose file would not be directly inside the router's directory. And a step
that must not stop halfway (a file swap, a reload already sent) runs under `finish`, so that a
cancellation (SIGTERM) waits for its end and the caller's cleanup sees a known state.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from bluegreen.apps import App, Color
from bluegreen.state import Routing
from swarmshift import logs

log = logs.get("bluegreen.routers")
T = TypeVar("T")

# The first line of every file a router writes; a file without it belongs to the operator.
HEADER = "# Managed by swarmshift (blue-green controller): rewritten on every switch; do not edit.\n"
_ROUTING_LINE = re.compile(r"^# routing: (.*)$", re.MULTILINE)

# The longest name a file may be built from, in UTF-8 bytes: NAME_MAX (255) less the most a
# router adds around it (nginx's `.<app>.conf.bak`, then write_atomic's `.` and `.XXXXXXXX.tmp`).
NAME_BYTES = 200


class RouterError(Exception):
    """The proxy could not be given the routing; its previous routing is still in effect."""


class Router(Protocol):
    kind: str

    async def apply(self, app: App, routing: Routing) -> None: ...

    async def read(self, app: App) -> Routing | None: ...

    async def confirm(self, app: App, routing: Routing) -> bool: ...

    async def servers_up(self, app: App, color: Color) -> bool | None: ...

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


def inside(directory: str | Path, path: str | Path) -> bool:
    """Whether `path`, symlinks resolved, names an entry directly inside `directory` (also resolved)."""
    try:
        return os.path.dirname(os.path.realpath(path)) == os.path.realpath(directory)
    except (OSError, ValueError):  # a NUL byte, a name the file system cannot encode
        return False


def _unfit(name: object) -> str | None:
    """Why `name` cannot be (part of) a file name in a router's directory, or None."""
    if not isinstance(name, str):
        return f"not a string ({type(name).__name__})"
    if not name:
        return "empty"
    if name.startswith("."):
        # `.`, `..`, and hidden files: the names of backups and temp files, which nginx and
        # Traefik skip; an app named like one would be overwritten by another's.
        return "starts with a dot"
    if "/" in name or "\\" in name:
        return "contains a path separator"
    if not name.isprintable():  # NUL, newline, other controls, unassigned and surrogate code points
        return "contains a character that is not printable"
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        return "is not valid UTF-8"
    if size > NAME_BYTES:
        return f"is longer than {NAME_BYTES} bytes ({size})"
    return None


def confined(directory: str | Path, name: str, *, prefix: str = "", suffix: str = "") -> Path:
    """`directory/<prefix><name><suffix>`, once it is sure to resolve to a file directly inside `directory`.

    RouterError, logged as `router_path_refused` with the name, for anything else: an empty
    name, one starting with a dot, holding a separator, a control character (NUL, newline) or
    too many bytes, and a path that resolves elsewhere (a symlink in the directory pointing out).
    `prefix` and `suffix` are the router's own (`.`, `.conf.bak`), never from a label.
    """
    directory = Path(directory)
    reason = _unfit(name)
    path = directory / f"{prefix}{name}{suffix}" if reason is None else None
    if path is not None and not inside(directory, path):
        reason = f"{path.name} resolves to {os.path.realpath(path)}, outside the directory"
    if reason is not None:
        log.warning("router_path_refused", name=name, directory=str(directory), reason=reason)
        raise RouterError(f"app name {name!r}: {reason}; no file is written, read or removed for it in {directory}")
    assert path is not None
    return path


async def finish(aw: Awaitable[T]) -> T:
    """Await `aw` to its end even when the caller is cancelled meanwhile, then raise that cancellation.

    A file swap or a reload cut off halfway leaves the proxy with a configuration that nobody
    tested or recorded, and a thread cannot be stopped from the loop at all: a restore run on
    the cancellation would race the thread still writing. So the step ends first; the caller's
    `except`/`finally` then runs with the files in a known state, and the task still ends
    cancelled. Every step run this way must bound itself (a command's own timeout).
    """
    fut = asyncio.ensure_future(aw)
    cancelled: asyncio.CancelledError | None = None
    while not fut.done():
        try:
            # wait() never cancels what it waits on: a cancellation stops only this await.
            await asyncio.wait([fut])
        except asyncio.CancelledError as err:
            cancelled = err
    if cancelled is not None:
        if not fut.cancelled():
            fut.exception()  # retrieved: the cancellation is what the caller hears
        raise cancelled
    return fut.result()


async def finish_in_thread(fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` in a thread, awaited with `finish`: cancelling the caller never leaves it running unseen.

    A plain executor future, not a task: the loop's shutdown, which cancels every task left,
    cannot cut the wait short while the thread still works.
    """
    return await finish(asyncio.get_running_loop().run_in_executor(None, functools.partial(fn, *args)))
