"""The Traefik file-provider router: one YAML document per app in the watched directory, replaced atomically.

Traefik's file provider reloads the whole directory on any change. A file it cannot read (bad
YAML, a template that fails) makes it keep the provider's previous configuration whole, and a
router or service it refuses (a rule it rejects, an unknown entrypoint, a name defined twice)
is left out of what it runs while the rest of the file is served. So a document is checked
before it is written, and written by rename: Traefik (or any reader) sees the old file or the
new one, never a part. Temp files end in `.tmp`, an extension the provider skips.

Every file name is built from the app's name by `confined`, which refuses one that would leave
the directory. A cancelled apply (SIGTERM) leaves no trial file behind, and the routing file
whole: each write runs to its end (`finish_in_thread`) before the cancellation goes on, and the
trial is withdrawn in a `finally` that covers its own publication. A trial file left by a
killed controller is removed by the app's next apply.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from bluegreen.apps import App
from bluegreen.routers.base import HEADER, RouterError, confined, finish_in_thread, inside, write_atomic
from bluegreen.routers.traefik_api import TraefikAPI, TraefikRouter
from bluegreen.routers.traefik_doc import (
    DEFAULT_PRIORITY,
    TRIAL_SUFFIX,
    check_document,
    merge,
    parse_file,
    render,
)
from bluegreen.state import Routing


class TraefikFileRouter(TraefikRouter):
    kind = "traefik-file"

    def __init__(self, dynamic_dir: str | Path, *, entrypoints: Iterable[str] = ("web",), health_interval: float = 5.0,
                 health_timeout: float = 2.0, api: TraefikAPI | None = None, confirm_timeout: float = 10.0,
                 priority: int = DEFAULT_PRIORITY) -> None:
        super().__init__(entrypoints=entrypoints, health_interval=health_interval, health_timeout=health_timeout,
                         api=api, confirm_timeout=confirm_timeout, priority=priority)
        self.dir = Path(dynamic_dir)
        self._previous: dict[str, bytes | None] = {}  # the file before the last write, to put back
        self._live: dict[str, dict[str, Any]] = {}  # the document last written per app
        # One file operation per app at a time: a cancelled apply whose write is still finishing
        # would otherwise bring the file back after a remove that ran beside it.
        self._locks: dict[str, asyncio.Lock] = {}

    def path(self, app: str) -> Path:
        """The app's file; RouterError for a name whose file would not be directly in the directory."""
        return confined(self.dir, app, suffix=".yml")

    def trial_path(self, app: str) -> Path:
        return confined(self.dir, app, suffix=f"{TRIAL_SUFFIX}.yml")

    def _lock(self, app: str) -> asyncio.Lock:
        return self._locks.setdefault(app, asyncio.Lock())

    async def _write(self, path: Path, data: bytes | None) -> None:
        """Replace (or, for None, remove) `path`, to the end even if cancelled meanwhile."""
        try:
            await finish_in_thread(_replace, path, data)
        except OSError as err:
            raise RouterError(f"{path}: {err.strerror or err}") from err

    async def apply(self, app: App, routing: Routing) -> None:
        doc = self.app_document(app, routing)
        check_document(doc, rules=False)  # the app's rules were parsed at discovery
        data = render(doc, routing)
        path, trial_path = self.path(app.name), self.trial_path(app.name)
        async with self._lock(app.name):
            try:
                current = await asyncio.to_thread(_content, path)
            except OSError as err:
                raise RouterError(f"{path}: {err.strerror or err}") from err
            # No trial of the app runs while its lock is held, so one on disk was left by a
            # controller killed mid-trial: Traefik still loads it.
            await self._write(trial_path, None)
            if current == data:
                self._live[app.name] = doc
                return  # already in place: a rewrite would only make Traefik reload for nothing
            if self.trials.needed(app, doc):
                await self.trials.run(app, routing, self.app_document,
                                      lambda trial: self._write(trial_path, render(trial, routing)),
                                      lambda: self._write(trial_path, None))
            self._previous[app.name] = current
            self._live[app.name] = doc
            await self._write(path, data)

    async def written(self, app: App) -> Routing | None:
        """The routing in the app's file, or None when there is no readable file."""
        path = self.path(app.name)
        try:
            text = await asyncio.to_thread(path.read_text)
        except OSError:
            return None
        return parse_file(text, app.name)

    async def confirm(self, app: App, routing: Routing) -> bool:
        return await self._confirm_loaded(app, routing, self._live.get(app.name), self._put_back)

    async def _put_back(self, app: App) -> None:
        path = self.path(app.name)
        async with self._lock(app.name):
            await self._write(path, self._previous.pop(app.name, None))

    def mark_ready(self) -> None:
        """Nothing waits on start-up: Traefik reads each app's file as soon as it is written."""

    def merged(self) -> dict[str, Any]:
        """Every app file this router wrote, as one document."""
        docs = []
        for path in sorted(self.dir.glob("*.yml")):
            if path.stem.endswith(TRIAL_SUFFIX) or path.name.startswith(".") or not inside(self.dir, path):
                continue  # a trial, a hidden file, or a symlink pointing out of the directory
            try:
                text = path.read_text()
            except OSError:
                continue  # removed since the listing, or not a file
            if text.startswith(HEADER):  # other files in the directory belong to the operator
                docs.append(yaml.safe_load(text))
        return merge(docs)

    def traefik_document(self, routes: Iterable[tuple[App, Routing]]) -> dict[str, Any]:
        """What this router wrote, read from its files: what Traefik's file provider reads."""
        return self.merged()

    async def remove(self, app: str) -> None:
        path, trial_path = self.path(app), self.trial_path(app)
        async with self._lock(app):
            await self._write(path, None)
            await self._write(trial_path, None)


def _content(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _replace(path: Path, data: bytes | None) -> None:
    if data is None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    else:
        write_atomic(path, data)
