"""How both daemons run: serve their HTTP API, start notifications, work until SIGTERM, then close in order."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web

from swarmshift.http import parse_listen, start, stop_event
from swarmshift.notify import Notifier


async def serve(app: web.Application, listen: str, notifier: Notifier,
                work: Callable[[asyncio.Event], Awaitable[None]],
                close: Sequence[Callable[[], Awaitable[None]]] = ()) -> None:
    """Serve `app` on `listen`, start `notifier`, and run `work(stop)`; SIGTERM or SIGINT sets `stop`.

    However `work` ends, the notifier, the HTTP server and then each of `close` are closed, in
    that order: what is closed last (the Docker client) is what the others may still use.
    """
    host, port = parse_listen(listen)
    runner = await start(app, host, port)
    await notifier.start()
    try:
        await work(stop_event())
    finally:
        await notifier.close()
        await runner.cleanup()
        for closer in close:
            await closer()
