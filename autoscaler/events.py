"""The scaling event history: the last N events in memory, optionally appended to a JSONL file."""

from __future__ import annotations

import json
import os
from collections import deque
from pathlib import Path
from typing import Any

from swarmshift import logs

log = logs.get("autoscaler.events")


class EventLog:
    def __init__(self, keep: int = 200, path: str | Path | None = None) -> None:
        self._events: deque[dict[str, Any]] = deque(maxlen=keep)
        self.path = Path(path) if path else None
        if self.path and self.path.exists():
            self._load_tail()

    def _load_tail(self) -> None:
        assert self.path is not None
        with self.path.open() as f:
            for line in f:
                try:
                    self._events.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a line cut short by a crash mid-write

    def record(self, event: dict[str, Any]) -> None:
        self._events.append(event)
        if self.path is None:
            return
        try:
            # One write per line, flushed and synced: a crash loses at most the event being written.
            with self.path.open("a") as f:
                f.write(json.dumps(event, separators=(",", ":")) + "\n")
                f.flush()
                os.fsync(f.fileno())
        except OSError as err:
            log.error("events_file_write_failed", path=str(self.path), error=str(err))

    def recent(self, limit: int | None = None, service: str | None = None) -> list[dict[str, Any]]:
        events = [e for e in self._events if service is None or e.get("service") == service]
        return events[-limit:] if limit else events
