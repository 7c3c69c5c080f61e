"""A slow Docker engine for lab tests: a unix-socket proxy to Docker's API that holds responses back on demand.

    with SlowDocker(tmp_path / "docker.sock") as proxy:
        swarm = Swarm(base_url=proxy.url)        # the daemons' client, pointed at the proxy
        proxy.delay = 5.0                        # from now on each response waits 5 s
        proxy.only = r"^GET /services"           # ...but only those to requests like this one
        ...
        proxy.delay = 0                          # the engine is fast again

It forwards bytes both ways unchanged. HTTP is not parsed beyond the first line of a request
chunk: each chunk a client sends that starts a request whose first line matches `only` (every
chunk, when `only` is None) marks the connection, and the next chunk Docker sends back on it is
held `delay` seconds (the value when that chunk arrives) before it and all that follows go on.
Docker's client sends one request at a time on a kept-alive connection, so that is each
response's first chunk. The first line is matched with the API version left out of the path:
`GET /v1.45/services?status=1 HTTP/1.1` is matched as `GET /services?status=1`.

The proxy runs its own event loop in a background thread, so the test's loop (or none) and the
code under test are free to block on Docker as they would on a slow engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import threading
from pathlib import Path

DOCKER_SOCKET = "/var/run/docker.sock"
CHUNK = 64 * 1024

_REQUEST_LINE = re.compile(rb"([A-Z]{1,20}) ([!-~]{1,8192}) HTTP/\d\.\d\r?")  # a target is visible ASCII (RFC 9112)
_API_VERSION = re.compile(r"^/v\d+(?:\.\d+)?(?=/|\?|$)")


def request_line(chunk: bytes) -> str | None:
    """`METHOD target` from the first line of an HTTP request in `chunk`, the API version left out; else None."""
    match = _REQUEST_LINE.fullmatch(chunk.split(b"\n", 1)[0])
    if match is None:
        return None
    target = _API_VERSION.sub("", match.group(2).decode("ascii")) or "/"
    return f"{match.group(1).decode('ascii')} {target}"


class _Connection:
    def __init__(self) -> None:
        self.hold = False  # a request went up since the last response chunk came down


class SlowDocker:
    """Forwards clients on `path` to Docker's socket (`upstream`), holding responses back `delay` seconds.

    `delay` and `only` may be set at any time, from any thread. `seen` lists the request lines
    that went through, `delayed` counts the responses held back.
    """

    def __init__(self, path: str | Path, *, upstream: str | Path = DOCKER_SOCKET, delay: float = 0.0,
                 only: str | re.Pattern[str] | None = None) -> None:
        self.path = Path(path)
        self.upstream = Path(upstream)
        self.delay = delay
        self.only = only
        self.seen: list[str] = []
        self.delayed = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task] = set()

    @property
    def url(self) -> str:
        """The proxy as a Docker `base_url` (DOCKER_HOST)."""
        return f"unix://{self.path}"

    @property
    def only(self) -> re.Pattern[str] | None:
        return self._only

    @only.setter
    def only(self, pattern: str | re.Pattern[str] | None) -> None:
        self._only = re.compile(pattern) if isinstance(pattern, str) else pattern

    def start(self) -> SlowDocker:
        if self._thread is not None:
            raise RuntimeError(f"the proxy on {self.path} is already running")
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name=f"slowdocker {self.path.name}", daemon=True)
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._open(), loop).result(10)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Close the socket and every connection through it, and end the thread; safe to call twice."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        if not thread.is_alive():
            loop.close()
        self._loop = self._thread = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def __enter__(self) -> SlowDocker:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- in the proxy's own loop ---------------------------------------------------------------

    async def _open(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)  # a socket file left by an earlier run would make bind fail
        self._server = await asyncio.start_unix_server(self._accepted, path=str(self.path))

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _accepted(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            try:
                docker_reader, docker_writer = await asyncio.open_unix_connection(str(self.upstream))
            except OSError:
                return  # no engine: the client sees the connection closed, as with a dead socket
            conn = _Connection()
            requests = asyncio.create_task(self._requests(client_reader, docker_writer, conn))
            try:
                await self._responses(docker_reader, client_writer, conn)
            finally:
                requests.cancel()
                await asyncio.gather(requests, return_exceptions=True)
                docker_writer.close()
        finally:
            client_writer.close()
            self._tasks.discard(task)

    async def _requests(self, reader: asyncio.StreamReader, docker: asyncio.StreamWriter, conn: _Connection) -> None:
        """Client to Docker. At the client's EOF, Docker gets an EOF too and answers what it still owes."""
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(CHUNK):
                line = request_line(data)
                if line is not None:
                    self.seen.append(line)
                only = self._only
                if only is None or (line is not None and only.search(line)):
                    conn.hold = True  # before forwarding: the answer cannot overtake it
                docker.write(data)
                await docker.drain()
            if docker.can_write_eof():
                docker.write_eof()

    async def _responses(self, docker: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: _Connection) -> None:
        """Docker to client, the first chunk after each marked request held back; ends when Docker closes."""
        with contextlib.suppress(ConnectionError):
            while data := await docker.read(CHUNK):
                if conn.hold:
                    conn.hold = False
                    delay = self.delay
                    if delay > 0:
                        self.delayed += 1
                        await asyncio.sleep(delay)
                writer.write(data)
                await writer.drain()
