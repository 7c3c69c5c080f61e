"""How the nginx router tests and reloads nginx: a command, a signal to a pid file, or Docker on an nginx service."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal as signals
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from bluegreen.routers.base import RouterError, duration

if TYPE_CHECKING:
    from swarmshift.swarm import SwarmAccess as Swarm

Action = Callable[[], Awaitable[None]]


def command(argv: Sequence[str], *, within: float = 10.0) -> Action:
    """An action running `argv`; RouterError with its output when it fails or overruns."""
    argv = list(argv)

    async def run() -> None:
        try:
            proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                        stderr=asyncio.subprocess.STDOUT)
        except OSError as err:
            raise RouterError(f"{argv[0]}: {err.strerror or err}") from err
        try:
            output, _ = await asyncio.wait_for(proc.communicate(), within)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise RouterError(f"{' '.join(argv)}: no answer within {duration(within)}") from None
        except asyncio.CancelledError:
            # Cancelled (SIGTERM): the router puts the old config back, so a test still running
            # would judge a file that is gone; nothing waits for its answer any more.
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            raise
        if proc.returncode != 0:
            text = output.decode(errors="replace").strip()
            raise RouterError(f"{' '.join(argv)} exited with {proc.returncode}: {text}")

    return run


def signal_pid_file(path: str | Path, sig: int = signals.SIGHUP) -> Action:
    """An action sending `sig` (SIGHUP: reload) to the nginx master whose pid is in `path`."""
    path = Path(path)

    async def send() -> None:
        try:
            pid = int(path.read_text().strip())
            os.kill(pid, sig)
        except (OSError, ValueError) as err:
            raise RouterError(f"cannot signal the nginx master in {path}: {err}") from err

    return send


async def _service_containers(swarm: Swarm, service: str) -> list[str]:
    from swarmshift.swarm import SwarmError

    try:
        found = await swarm.containers(f"com.docker.swarm.service.name={service}")
    except SwarmError as err:
        raise RouterError(f"cannot list the containers of the nginx service {service}: {err}") from err
    if not found:
        raise RouterError(f"no running container of the nginx service {service} on this node")
    return [c["Id"] for c in found]


def docker_signal(swarm: Swarm, service: str, sig: str = "HUP") -> Action:
    """An action signalling every container of the nginx Swarm service on this node (SIGHUP reloads nginx)."""
    from swarmshift.swarm import SwarmError

    async def send() -> None:
        for container in await _service_containers(swarm, service):
            try:
                await swarm.signal(container, sig)
            except SwarmError as err:
                raise RouterError(f"signal {sig} to {service} ({container[:12]}): {err}") from err

    return send


def docker_exec(swarm: Swarm, service: str, argv: Sequence[str], *, within: float = 10.0) -> Action:
    """An action running `argv` (nginx -t) in a container of the nginx service, where nginx and its files are."""
    from swarmshift.swarm import SwarmError

    argv = list(argv)

    async def run() -> None:
        container = (await _service_containers(swarm, service))[0]
        try:
            code, output = await swarm.exec(container, argv, within=within)
        except SwarmError as err:
            raise RouterError(f"{' '.join(argv)} in {service}: {err}") from err
        if code != 0:
            raise RouterError(f"{' '.join(argv)} in {service} exited with {code}: {output.strip()}")

    return run
