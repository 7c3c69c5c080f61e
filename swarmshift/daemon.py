"""How both daemons run: the settings their `run` shares, serving the API, work until SIGTERM, closing in order."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Literal

from aiohttp import web

from swarmshift import logs
from swarmshift.commands import EXIT_FAILED
from swarmshift.config import LabelSelector, Strict
from swarmshift.http import ListenAddress, parse_listen, start, stop_event
from swarmshift.notify import Notifier
from swarmshift.swarm import DockerUnavailable, NotManager, Swarm

log = logs.get("swarmshift.daemon")


class DaemonSettings(Strict):
    """The settings both daemons' `run` takes under the same names: file key, `--flag` and SWARMSHIFT_<KEY>.

    Each daemon's config extends this; `swarmshift.commands.run_options` gives `run` the flags.
    """

    listen: ListenAddress = "0.0.0.0:8080"
    token_file: str | None = None
    # Only services that also carry this label (KEY or KEY=VALUE): one daemon per stack, team or
    # environment. Unset: every opted-in service or app in the swarm.
    selector: LabelSelector | None = None
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    dry_run: bool = False  # decide and log, write nothing (the controller refuses it: see bluegreen.config)


async def require_manager(swarm: Swarm) -> None:
    """Exit (1) with `swarm_not_manager` unless the engine is a swarm manager.

    An engine that does not answer yet is not an error here: the daemon starts and its loop retries.
    """
    try:
        await swarm.check_manager()
    except NotManager as err:
        log.error("swarm_not_manager", error=str(err), action="exiting: the daemons need a swarm manager's API")
        raise SystemExit(EXIT_FAILED) from err
    except DockerUnavailable as err:
        log.warning("docker_unavailable_at_start", error=str(err), action="starting; the loop retries")


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
