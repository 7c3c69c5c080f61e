"""Outgoing webhook notifications: queued, sent in the background, never delaying the caller.

Each event is POSTed as JSON to every configured URL, with a Slack-compatible `text` field
added, so the same list can hold generic receivers and Slack incoming webhooks.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Sequence
from typing import Any

import aiohttp
from pydantic import Field

from swarmshift import logs
from swarmshift.config import CommaList, Duration, Strict

log = logs.get("swarmshift.notify")


class NotifySettings(Strict):
    """The `notify:` section both daemons share."""

    # Webhook URLs often embed their token (Slack's do): kept out of repr() and every log line.
    webhooks: CommaList = Field([], repr=False)
    timeout: Duration = 5.0
    retries: int = Field(3, ge=1, le=10)


class Notifier:
    def __init__(
        self,
        urls: Sequence[str],
        *,
        timeout: float = 5.0,
        retries: int = 3,
        backoff: float = 1.0,
        queue_size: int = 1000,
    ) -> None:
        self.urls = list(urls)
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=queue_size)
        self._worker: asyncio.Task | None = None
        self._session: aiohttp.ClientSession | None = None
        self.sent = 0
        self.failed = 0

    @classmethod
    def from_settings(cls, settings: NotifySettings) -> Notifier:
        return cls(settings.webhooks, timeout=settings.timeout, retries=settings.retries)

    def send(self, event: dict[str, Any], text: str) -> None:
        """Queue `event` for every receiver; returns at once. A full queue drops the oldest."""
        if not self.urls:
            return
        if self._queue.full():
            dropped = self._queue.get_nowait()
            log.warning("notification_dropped", reason="queue full", event_type=dropped.get("type"))
        self._queue.put_nowait({**event, "text": text})

    async def start(self) -> None:
        if self.urls and self._worker is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
            self._worker = asyncio.create_task(self._run(), name="notifier")

    async def close(self, drain: float = 2.0) -> None:
        """Give queued notifications up to `drain` seconds, then stop."""
        if self._worker is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), timeout=drain)
        self._worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._worker
        if self._session is not None:
            await self._session.close()
        self._worker = None

    async def _run(self) -> None:
        while True:
            payload = await self._queue.get()
            try:
                await asyncio.gather(*(self._deliver(url, payload) for url in self.urls))
            finally:
                self._queue.task_done()

    async def _deliver(self, url: str, payload: dict[str, Any]) -> None:
        assert self._session is not None
        delay = self.backoff
        for attempt in range(1, self.retries + 1):
            try:
                async with self._session.post(url, json=payload) as resp:
                    if resp.status < 300:
                        self.sent += 1
                        return
                    problem = f"HTTP {resp.status}"
            except (aiohttp.ClientError, TimeoutError, ValueError) as err:
                # aiohttp's errors may quote the URL they failed on, token and all.
                problem = logs.redact(str(err), url) or type(err).__name__
            if attempt < self.retries:
                await asyncio.sleep(delay + random.uniform(0, delay / 2))
                delay *= 2
        self.failed += 1
        log.warning("notification_failed", url=logs.redact_url(url), error=problem, attempts=self.retries)
