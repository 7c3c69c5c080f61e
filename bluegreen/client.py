"""The operator CLI's side of the controller API: JSON over HTTP with the bearer token, and its failures."""

from __future__ import annotations

import http.client
import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8080"


class ControllerUnreachable(Exception):
    """No answer from the controller (refused, timed out, no route): exit code 3."""


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def error(self) -> str:
        """The controller's own words for a refusal, with each listed problem."""
        if isinstance(self.body, dict) and "error" in self.body:
            lines = [str(self.body["error"])]
            lines += [f"  {p}" for p in self.body.get("problems") or []]
            return "\n".join(lines)
        return f"HTTP {self.status}: {str(self.body)[:300]}"


def token_from_env(env: dict[str, str] | None = None) -> str | None:
    """SWARMSHIFT_TOKEN, else the contents of SWARMSHIFT_TOKEN_FILE; ValueError when the file is unreadable."""
    env = dict(os.environ) if env is None else env
    if env.get("SWARMSHIFT_TOKEN"):
        return env["SWARMSHIFT_TOKEN"].strip()
    path = env.get("SWARMSHIFT_TOKEN_FILE")
    if not path:
        return None
    try:
        return Path(path).read_text().strip() or None
    except OSError as err:
        raise ValueError(f"SWARMSHIFT_TOKEN_FILE: cannot read {path}: {err.strerror or err}") from err


class ControllerClient:
    def __init__(self, url: str = DEFAULT_URL, token: str | None = None, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def request(self, method: str, path: str, body: Any = None) -> Answer:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.url}{path}", data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return Answer(resp.status, _decode(resp.read()))
        except urllib.error.HTTPError as err:
            return Answer(err.code, _decode(err.read()))
        except (TimeoutError, urllib.error.URLError, OSError, http.client.HTTPException) as err:
            reason = getattr(err, "reason", None) or err
            raise ControllerUnreachable(f"cannot reach the controller at {self.url}: {reason}") from err

    def get(self, path: str) -> Answer:
        return self.request("GET", path)


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return raw.decode(errors="replace")
