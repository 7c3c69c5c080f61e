"""The scaling event history: the last N events in memory, optionally appended to a JSONL file rotated by size.

The file is written by one thread of its own, in the order the events were recorded, so that
a slow disk (each line is fsynced) never holds up the event loop, and the loop's order is the
file's order. Past `max_bytes` the file is renamed to `<file>.1` (replacing the one before) and
a new one begun: at most twice `max_bytes` on disk.
"""

from __future__ import annotations

import json
import os
import queue
import threading
from collections import deque
from pathlib import Path
from typing import Any

from swarmshift import logs

log = logs.get("autoscaler.events")

MAX_BYTES = 10 * 1024 * 1024
_STOP = object()  # tells the writer thread to finish


class EventLog:
    def __init__(self, keep: int = 200, path: str | Path | None = None, *, max_bytes: int = MAX_BYTES) -> None:
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be at least 1 (got {max_bytes})")
        self._events: deque[dict[str, Any]] = deque(maxlen=keep)
        self.path = Path(path) if path else None
        self.max_bytes = max_bytes
        self._lines: queue.Queue[Any] = queue.Queue()
        self._writer: threading.Thread | None = None
        if self.path:
            self._load_tail()

    @property
    def rotated(self) -> Path:
        assert self.path is not None
        return self.path.with_name(self.path.name + ".1")

    def _load_tail(self) -> None:
        # The rotated file first: together they hold the newest events, oldest first.
        for path in (self.rotated, self.path):
            assert path is not None
            if not path.exists():
                continue
            with path.open() as f:
                for line in f:
                    try:
                        self._events.append(json.loads(line))
                    except json.JSONDecodeError:
                        continue  # a line cut short by a crash mid-write

    def record(self, event: dict[str, Any]) -> None:
        """Keep `event` in memory at once; the file gets it from the writer thread, in order."""
        self._events.append(event)
        if self.path is None:
            return
        if self._writer is None:
            self._writer = threading.Thread(target=self._write_lines, name="events-writer", daemon=True)
            self._writer.start()
        self._lines.put(json.dumps(event, separators=(",", ":")) + "\n")

    def _write_lines(self) -> None:
        while True:
            line = self._lines.get()
            try:
                if line is _STOP:
                    return
                self._append(line)
            finally:
                self._lines.task_done()

    def _append(self, line: str) -> None:
        assert self.path is not None
        data = line.encode()
        try:
            size = self.path.stat().st_size if self.path.exists() else 0
            if size and size + len(data) > self.max_bytes:
                os.replace(self.path, self.rotated)
                log.info("events_file_rotated", path=str(self.path), rotated=str(self.rotated), bytes=size)
            # One write per line, flushed and synced: a crash loses at most the event being written.
            with self.path.open("ab") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except OSError as err:
            log.error("events_file_write_failed", path=str(self.path), error=str(err))

    def flush(self) -> None:
        """Wait until every event recorded so far is in the file (blocking: call it off the event loop)."""
        if self._writer is not None:
            self._lines.join()

    def close(self) -> None:
        """Write what is queued, then stop the writer thread (blocking: call it off the event loop)."""
        if self._writer is not None:
            self._lines.put(_STOP)
            self._writer.join()
            self._writer = None

    def recent(self, limit: int | None = None, service: str | None = None) -> list[dict[str, Any]]:
        events = [e for e in self._events if service is None or e.get("service") == service]
        return events[-limit:] if limit else events
