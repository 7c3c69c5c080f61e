"""The Traefik file-provider router: one YAML document per app in the watched directory, replaced atomically.

Traefik's file provider reloads the whole directory on any change. A file it cannot read (bad
YAML, a template that fails) makes it keep the provider's previous configuration whole, and a
router or service it refuses (a rule it rejects, an unknown entrypoint, a name defined twice)
is left out of what it runs while the rest of the file is served. So a document is checked
before it is written, and written by rename: Traefik (or any reader) sees the old file or the
new one, never a part. Temp files end in `.tmp`, an extension the provider skips.
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
from bluegreen.routers.base import HEADER, RouterError, write_atomic
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

    def path(self, app: str) -> Path:
        return self.dir / f"{app}.yml"

    async def _write(self, path: Path, data: bytes | None) -> None:
        try:
            if data is None:
                with contextlib.suppress(FileNotFoundError):
                    await asyncio.to_thread(os.unlink, path)
            else:
                await asyncio.to_thread(write_atomic, path, data)
        except OSError as err:
            raise RouterError(f"{path}: {err.strerror or err}") from err

    async def apply(self, app: App, routing: Routing) -> None:
        doc = self.app_document(app, routing)
        check_document(doc, rules=False)  # the app's rules were parsed at discovery
        data = render(doc, routing)
        path = self.path(app.name)
        try:
            current: bytes | None = path.read_bytes()
        except FileNotFoundError:
            current = None
        except OSError as err:
            raise RouterError(f"{path}: {err.strerror or err}") from err
        self._live[app.name] = doc
        if current == data:
            return  # already in place: a rewrite would only make Traefik reload for nothing
        if self.trials.needed(app, doc):
            trial_path = self.path(f"{app.name}{TRIAL_SUFFIX}")
            await self.trials.run(app, routing, self.app_document,
                                  lambda trial: self._write(trial_path, render(trial, routing)),
                                  lambda: self._write(trial_path, None))
        self._previous[app.name] = current
        await self._write(path, data)

    async def written(self, app: App) -> Routing | None:
        """The routing in the app's file, or None when there is no readable file."""
        try:
            text = await asyncio.to_thread(self.path(app.name).read_text)
        except OSError:
            return None
        return parse_file(text, app.name)

    async def confirm(self, app: App, routing: Routing) -> bool:
        return await self._confirm_loaded(app, routing, self._live.get(app.name), self._put_back)

    async def _put_back(self, app: App) -> None:
        previous = self._previous.pop(app.name, None)
        await self._write(self.path(app.name), previous)

    def mark_ready(self) -> None:
        """Nothing waits on start-up: Traefik reads each app's file as soon as it is written."""

    def merged(self) -> dict[str, Any]:
        """Every app file this router wrote, as one document."""
        docs = []
        for path in sorted(self.dir.glob("*.yml")):
            if path.stem.endswith(TRIAL_SUFFIX):
                continue
            text = path.read_text()
            if text.startswith(HEADER):  # other files in the directory belong to the operator
                docs.append(yaml.safe_load(text))
        return merge(docs)

    def traefik_document(self, routes: Iterable[tuple[App, Routing]]) -> dict[str, Any]:
        """What this router wrote, read from its files: what Traefik's file provider reads."""
        return self.merged()

    async def remove(self, app: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(os.unlink, self.path(app))
