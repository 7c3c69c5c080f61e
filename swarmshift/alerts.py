"""Incoming Alertmanager webhooks (payload version 4), validated into plain data, and the record of those that acted."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from swarmshift.config import problems_from
from swarmshift.http import HTTPProblem
from swarmshift.swarm import DockerUnavailable

R = TypeVar("R")


class Alert(BaseModel):
    # Alertmanager adds fields over time; unknown ones are ignored, the ones we act on are checked.
    model_config = ConfigDict(extra="ignore", frozen=True)

    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = {}
    startsAt: str = ""  # noqa: N815 - Alertmanager's field names
    endsAt: str = ""  # noqa: N815
    fingerprint: str = ""

    @property
    def firing(self) -> bool:
        return self.status == "firing"

    @property
    def identity(self) -> str:
        """Alertmanager's fingerprint, or a stable stand-in built from the labels."""
        return self.fingerprint or ",".join(f"{k}={v}" for k, v in sorted(self.labels.items()))


class Notification(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    version: Literal["4"]
    status: Literal["firing", "resolved"]
    receiver: str = ""
    groupKey: str = ""  # noqa: N815
    alerts: list[Alert] = Field(min_length=1)


def parse(body: Any) -> Notification:
    """The notification, or HTTPProblem 400 listing every problem with its key path."""
    try:
        return Notification.model_validate(body)
    except ValidationError as err:
        raise HTTPProblem(400, "not an Alertmanager v4 webhook payload", problems=problems_from(err, body, "body")) from err


# --- Acting once: the key of an alert and the bounded list of keys already acted on -------------
# Alertmanager re-sends a firing alert every repeat_interval and retries a failed delivery with
# the same content; both daemons keep the keys of the alerts they acted on in a label of the
# service they changed, written in the same versioned update as the change itself, so a re-sent,
# retried or concurrently delivered alert finds its key and does nothing, even after a restart.

SEEN_KEEP = 32  # keys kept per service: far more distinct alert firings than a service sees at once
_KEY_LENGTH = 12  # hex characters of a SHA-256: 48 bits, no collision among 32 keys in practice
_KEY = re.compile(rf"[0-9a-f]{{{_KEY_LENGTH}}}")


def alert_key(alert: Alert) -> str:
    """One firing of an alert, short and stable: a hash of its identity and `startsAt`.

    The same alert firing again after it resolved has a new `startsAt`, so it acts again; a
    re-send or a retry of the same firing has the same key.
    """
    raw = f"{alert.identity}\n{alert.startsAt}".encode()
    return hashlib.sha256(raw).hexdigest()[:_KEY_LENGTH]


def decode_seen(text: str | None) -> tuple[str, ...]:
    """The keys a seen-list label holds, oldest first; a damaged label keeps its well-formed keys.

    Forgiving on purpose: refusing a damaged list would make every alert of the service fail,
    and the keys that cannot be read only matter for a re-send of those very alerts.
    """
    if not text:
        return ()
    keys = [part for part in text.split(",") if _KEY.fullmatch(part)]
    # A key written twice (by hand, or by two old writers) counts once, where it was written last.
    return tuple(k for i, k in enumerate(keys) if k not in keys[i + 1:])


def encode_seen(keys: tuple[str, ...] | list[str]) -> str:
    return ",".join(keys)


def append_seen(text: str | None, key: str, keep: int = SEEN_KEEP) -> str:
    """The seen-list label with `key` added last, the oldest dropped beyond `keep`; ValueError for a bad key."""
    if not _KEY.fullmatch(key):
        raise ValueError(f"alert key must be {_KEY_LENGTH} lowercase hex characters (got {key!r})")
    if keep < 1:
        raise ValueError(f"keep must be at least 1 (got {keep})")
    keys = [k for k in decode_seen(text) if k != key] + [key]
    return encode_seen(keys[-keep:])


def seen(text: str | None, key: str) -> bool:
    return key in decode_seen(text)


async def answer_each(alerts: Sequence[Alert], cap: int, act: Callable[[Alert], Awaitable[R]],
                      refuse: Callable[[Alert, int, str, str], R], subject: Callable[[Alert], dict[str, Any]],
                      log: Any) -> list[R]:
    """One answer per alert, in order, as both daemons give them: a bad alert gets its own error, the good ones act.

    At most `cap` alerts are acted on; the rest are refused 429 without a look. For one alert,
    Docker not answering is a 503 and anything unexpected a 500 (logged as `alert_failed` with
    `subject(alert)` and the traceback); `refuse(alert, status, outcome, detail)` makes the answer.
    """
    results = []
    for index, alert in enumerate(alerts):
        if index >= cap:
            results.append(refuse(alert, 429, "rejected", f"over the cap of {cap} alerts per notification: not "
                                                          f"looked at (alert {index + 1} of {len(alerts)})"))
            continue
        try:
            results.append(await act(alert))
        except DockerUnavailable as err:
            results.append(refuse(alert, 503, "error", f"Docker does not answer: {err}"))
        except Exception as err:  # noqa: BLE001 - one alert must not spoil the others' answers
            log.exception("alert_failed", **subject(alert))
            results.append(refuse(alert, 500, "error", f"internal error: {type(err).__name__}"))
    return results
