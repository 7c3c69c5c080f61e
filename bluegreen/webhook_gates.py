"""Webhook gates (Flagger's pre-rollout, confirm-promotion and post-rollout): the config of each, the payload and its signature, and a round's results; pure.

The operator declares them in the controller's config (`webhooks`, or `apps.<key>.webhooks`),
never in a label: a webhook decides whether a release may go on, and labels are written by
whoever deploys. The HTTP client (bluegreen.webhooks) sends them and hands back one
`HookResult` per webhook; the machine (bluegreen.phases) decides from those, and records each
webhook that passed in the deploy's state, so that it is never sent again for that deploy.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from swarmshift.config import Duration, Strict, format_duration

MAX_WEBHOOKS = 10  # per list (`webhooks`, `apps.<key>.webhooks`): the names are stored in one state label
MAX_TIMEOUT = 30.0  # per call
MAX_RETRIES = 5  # per call, after the first attempt
MAX_GATE_TIMEOUT = 7 * 24 * 3600.0  # how long a hold may last: a chat approval over a long weekend
ROUND_LIMIT = 120.0  # seconds for all the calls of one round: it runs in a tick, which holds the app's lock
SIGNATURE_HEADER = "X-Swarmshift-Signature"
TIMESTAMP_HEADER = "X-Swarmshift-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"

_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}", re.ASCII)
_URL = re.compile(r"https?://[^/\s?#@]+(?:[/?#]\S*)?", re.ASCII)
_META_KEY = re.compile(r"[A-Za-z0-9_.-]{1,63}", re.ASCII)
_RECORD = re.compile(r"([a-z0-9][a-z0-9_.-]{0,62}):(passed|failed)", re.ASCII)


class Gate(StrEnum):
    """Where a webhook stands in a deploy."""

    PRE_ROLLOUT = "pre-rollout"  # after PreChecks and SmokeTests, before Paused and the switch
    CONFIRM_PROMOTION = "confirm-promotion"  # after pre-rollout and Paused, polled until it answers 2xx
    POST_ROLLOUT = "post-rollout"  # once the deploy is Stable on its new color


class Webhook(Strict):
    """One webhook gate of the config: where to POST, how long to wait, and what a failure does."""

    name: str
    type: Gate
    url: str = Field(repr=False)  # may carry a secret in its path or query: logs show scheme and host only
    timeout: Duration = 5.0  # per call (attempt)
    retries: int = Field(2, ge=0, le=MAX_RETRIES)  # more attempts in one round, with backoff, after a failed one
    on_failure: Literal["hold", "fail"] = "hold"
    gate_timeout: Duration = 600.0  # how long a hold may last, from the phase's start (stored: survives restarts)
    token_file: str | None = None  # sent as Authorization: Bearer <token>
    secret_file: str | None = None  # the body is signed with HMAC-SHA256 (X-Swarmshift-Signature)
    metadata: dict[str, str] = {}  # added to the payload as is

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.fullmatch(value):
            raise ValueError("expected a name of at most 63 lowercase letters, digits, '-', '_' and '.', starting "
                             "with a letter or digit")
        return value

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not _URL.fullmatch(value):
            # The value is not echoed (swarmshift.config.problems_from): a webhook URL often carries its secret.
            raise PydanticCustomError("secret_value", "expected an http:// or https:// URL with a host (the value "
                                      "is not shown: it may hold a secret)")
        return value

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > 20:
            raise ValueError("at most 20 entries")
        for key, item in value.items():
            if not _META_KEY.fullmatch(key):
                raise ValueError(f"key {key!r}: expected at most 63 letters, digits, '.', '_' and '-'")
            if len(item) > 256:
                raise ValueError(f"{key}: at most 256 characters")
        return value

    # Field validators, not one on the model: a problem then echoes the field's value, never the
    # whole webhook with its URL.
    @field_validator("timeout")
    @classmethod
    def _timeout(cls, value: float) -> float:
        if not 0 < value <= MAX_TIMEOUT:
            raise ValueError(f"must be more than 0 and at most {format_duration(MAX_TIMEOUT)}")
        return value

    @field_validator("on_failure")
    @classmethod
    def _on_failure(cls, value: str, info: ValidationInfo) -> str:
        if info.data.get("type") is Gate.CONFIRM_PROMOTION and value == "fail":
            raise ValueError("confirm-promotion is polled until it answers 2xx: on_failure must be hold (a no is "
                             "`swarmshift bluegreen abort`, or gate_timeout)")
        return value

    @field_validator("gate_timeout")
    @classmethod
    def _gate_timeout(cls, value: float, info: ValidationInfo) -> float:
        timeout = info.data.get("timeout", 0.0)
        if not timeout <= value <= MAX_GATE_TIMEOUT or value <= 0:
            raise ValueError(f"must be at least timeout ({format_duration(timeout)}) and at most "
                             f"{format_duration(MAX_GATE_TIMEOUT)}")
        return value

    @field_validator("secret_file")
    @classmethod
    def _one_secret(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value and info.data.get("token_file"):
            raise ValueError("set token_file or secret_file, not both")
        return value

    def spec(self) -> HookSpec:
        return HookSpec(self.name, self.type, self.on_failure, self.gate_timeout)


def unique_names(hooks: list[Webhook]) -> list[Webhook]:
    """The list, or ValueError when two webhooks share a name (the state records them by name)."""
    # secret_value: the problem line must not echo the list, whose URLs may carry secrets.
    if len(hooks) > MAX_WEBHOOKS:
        raise PydanticCustomError("secret_value", f"at most {MAX_WEBHOOKS} webhooks (got {len(hooks)})")
    names = [hook.name for hook in hooks]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise PydanticCustomError("secret_value", f"webhook names must be unique: {', '.join(duplicates)}")
    return hooks


@dataclass(frozen=True)
class HookSpec:
    """What the machine needs to know of a webhook: which gate, what a failure does and how long a hold lasts."""

    name: str
    gate: Gate
    on_failure: Literal["hold", "fail"]
    gate_timeout: float


@dataclass(frozen=True)
class HookCall:
    """The webhooks of one gate that a tick should call: those not recorded as done for the deploy."""

    gate: Gate
    names: tuple[str, ...]


@dataclass(frozen=True)
class HookResult:
    """What one webhook answered in a round, after its retries: passed on a 2xx, else why not."""

    name: str
    passed: bool
    status: int | None = None  # the last attempt's HTTP status; None when it got no answer
    detail: str = ""  # the last attempt's error or status, on one line
    attempts: int = 1


@dataclass(frozen=True)
class HookRound:
    gate: Gate
    results: tuple[HookResult, ...]


# --- The record in the state ----------------------------------------------------------------------


def encode_record(record: tuple[tuple[str, str], ...]) -> str | None:
    """The deploy's webhook record as one label: `name:passed,name:failed`; None when empty."""
    return ",".join(f"{name}:{outcome}" for name, outcome in record) or None


def decode_record(text: str) -> tuple[tuple[str, str], ...]:
    """The record `encode_record` wrote; ValueError for anything else."""
    out: list[tuple[str, str]] = []
    for part in text.split(",", MAX_WEBHOOKS * 3):
        match = _RECORD.fullmatch(part)
        if not match:
            raise ValueError("expected name:passed or name:failed, comma-separated")
        out.append((match.group(1), match.group(2)))
    return tuple(out)


# --- The payload and its signature ----------------------------------------------------------------


def idempotency_key(deploy_id: str, gate: Gate, name: str) -> str:
    """The same for every call of one webhook in one deploy: a receiver dedupes on it."""
    return f"{deploy_id}/{gate}/{name}"


def payload(*, app: str, gate: Gate, webhook: str, phase: str, deploy_id: str, kind: str, source: str, target: str,
            old_image: str, new_image: str, attempt: int, sent_at: str,
            metadata: Mapping[str, str] | None = None) -> dict[str, object]:
    """The JSON document POSTed to a webhook."""
    return {
        "app": app,
        "gate": str(gate),
        "webhook": webhook,
        "phase": phase,
        "deploy": deploy_id,
        "kind": kind,
        "source": source,
        "target": target,
        "old_image": old_image,
        "new_image": new_image,
        "idempotency_key": idempotency_key(deploy_id, gate, webhook),
        "attempt": attempt,
        "sent_at": sent_at,
        "metadata": dict(metadata or {}),
    }


def encode(document: Mapping[str, object]) -> bytes:
    """The exact bytes sent (and signed)."""
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """`sha256=<hex>` of HMAC-SHA256 over `<timestamp>.<body>`: the timestamp is signed, so a replay can be refused."""
    digest = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify(secret: bytes, timestamp: str, body: bytes, header: str) -> bool:
    """What a receiver does (and the tests): the header matches the body and timestamp, compared in constant time."""
    return hmac.compare_digest(signature(secret, timestamp, body).encode(), header.encode())
