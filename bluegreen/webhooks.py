"""The HTTP client of the webhook gates: one round of a gate's webhooks, each POSTed with its token or signature, its timeout and bounded retries, every attempt logged.

What a round means for the deploy is the machine's (bluegreen.phases); the payload, the
signature and the config are bluegreen.webhook_gates'. Secrets are read from their files at
each call (Docker secrets: a rotated one takes effect at once) and never logged; URLs are logged
as scheme and host only (swarmshift.logs.redact_url).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import aiohttp

from bluegreen.smoke import excerpt
from bluegreen.state import AppState, format_time
from bluegreen.webhook_gates import (
    IDEMPOTENCY_HEADER,
    ROUND_LIMIT,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Gate,
    HookResult,
    HookRound,
    Webhook,
    encode,
    idempotency_key,
    payload,
    signature,
)
from swarmshift import logs

log = logs.get("bluegreen")

MAX_BACKOFF = 10.0  # seconds between two attempts at most
_BODY_READ = 4096  # bytes of an answer read, for the log's excerpt


class SecretUnreadable(Exception):
    """A token_file or secret_file that cannot be read now: the call is not sent, and counts as failed."""


def read_secret(path: str) -> bytes:
    """A token or secret from its file, surrounding whitespace removed; SecretUnreadable when missing or empty."""
    try:
        value = Path(path).read_bytes().strip()
    except OSError as err:
        raise SecretUnreadable(f"cannot read {path}: {err.strerror or err}") from err
    if not value:
        raise SecretUnreadable(f"{path} is empty")
    return value


class WebhookCaller:
    """Calls webhook gates over one aiohttp session: `round` sends a gate's webhooks at once and waits for all."""

    def __init__(self, *, backoff: float = 1.0, clock: Callable[[], float] = time.time) -> None:
        self.backoff = backoff
        self.clock = clock  # wall clock: the payload's sent_at and the signed timestamp
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=32))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def round(self, app: str, gate: Gate, hooks: Sequence[Webhook], state: AppState) -> HookRound:
        """Each of `hooks` called once (with its retries), all at once; the round is bounded by ROUND_LIMIT."""
        done: dict[str, HookResult] = {}

        async def one(hook: Webhook) -> None:
            done[hook.name] = await self._call(app, gate, hook, state)

        started = time.monotonic()
        try:
            async with asyncio.timeout(ROUND_LIMIT):
                await asyncio.gather(*(one(hook) for hook in hooks))
        except TimeoutError:
            spent = time.monotonic() - started
            for hook in hooks:
                if hook.name not in done:
                    done[hook.name] = HookResult(hook.name, False, detail=f"the round did not finish within "
                                                                          f"{ROUND_LIMIT:g}s ({spent:.1f}s)")
        return HookRound(gate, tuple(done[hook.name] for hook in hooks))

    async def _call(self, app: str, gate: Gate, hook: Webhook, state: AppState) -> HookResult:
        assert state.deploy is not None, "a webhook gate without a deploy"
        d = state.deploy
        attempts = 1 + hook.retries
        where = logs.redact_url(hook.url)
        base = {"app": app, "gate": str(gate), "webhook": hook.name, "url": where, "deploy": d.id}
        status: int | None = None
        detail = ""
        delay = self.backoff
        for attempt in range(1, attempts + 1):
            now = self.clock()
            document = payload(app=app, gate=gate, webhook=hook.name, phase=state.phase.value, deploy_id=d.id,
                               kind=d.kind.value, source=d.source.value, target=d.target.value,
                               old_image=d.previous_image, new_image=d.image, attempt=attempt,
                               sent_at=format_time(now), metadata=hook.metadata)
            body = encode(document)
            started = time.monotonic()
            answer = ""
            try:
                headers = self._headers(hook, body, now, idempotency_key(d.id, gate, hook.name))
                log.info("webhook_sent", **base, attempt=attempt, attempts=attempts)
                async with asyncio.timeout(hook.timeout):
                    async with self._client().post(hook.url, data=body, headers=headers, allow_redirects=False,
                                                   timeout=aiohttp.ClientTimeout(total=hook.timeout)) as resp:
                        status = resp.status
                        answer = (await resp.content.read(_BODY_READ)).decode("utf-8", errors="replace")
                detail = f"HTTP {status}"
            except SecretUnreadable as err:
                status, detail = None, str(err)
            except TimeoutError:
                status, detail = None, f"no answer within {hook.timeout:g}s"
            except aiohttp.ClientConnectorError as err:
                status, detail = None, f"cannot connect: {err.os_error.strerror if err.os_error else 'refused'}"
            except (aiohttp.ClientError, ValueError) as err:
                # aiohttp's errors may quote the URL, and a URL may carry a secret.
                status, detail = None, logs.redact(str(err), hook.url) or type(err).__name__
            elapsed = {"elapsed_ms": round((time.monotonic() - started) * 1000, 1)}
            if status is not None and 200 <= status < 300:
                log.info("webhook_passed", **base, status=status, attempt=attempt, **elapsed)
                return HookResult(hook.name, True, status, detail, attempt)
            last = attempt == attempts
            action = (f"retrying in {min(delay, MAX_BACKOFF):g}s" if not last else
                      "the deploy fails" if hook.on_failure == "fail" else
                      "held: called again next tick, until gate_timeout")
            log.warning("webhook_failed", **base, status=status, error=None if status is not None else detail,
                        body=excerpt(answer, 80) if answer else None, attempt=attempt, attempts=attempts,
                        **elapsed, action=action)
            if not last:
                await asyncio.sleep(min(delay, MAX_BACKOFF))
                delay *= 2
        more = f" after {attempts} attempts" if attempts > 1 else ""
        return HookResult(hook.name, False, status, f"{detail}{more}", attempts)

    @staticmethod
    def _headers(hook: Webhook, body: bytes, now: float, key: str) -> dict[str, str]:
        timestamp = str(int(now))
        headers = {"Content-Type": "application/json", "User-Agent": "swarmshift-bluegreen",
                   TIMESTAMP_HEADER: timestamp, IDEMPOTENCY_HEADER: key}
        if hook.token_file:
            headers["Authorization"] = "Bearer " + read_secret(hook.token_file).decode("utf-8", "replace")
        if hook.secret_file:
            headers[SIGNATURE_HEADER] = signature(read_secret(hook.secret_file), timestamp, body)
        return headers
