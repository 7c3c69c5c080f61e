"""Smoke tests of a release before any user sees it: the requests an app's config lists, and the verdict on each answer.

The operator declares them in the controller's config (`smoke`, or `apps.<key>.smoke`), never in
a label: a smoke list decides whether a release may take traffic, and labels are written by
whoever deploys. The prober (bluegreen.probe) sends them to the idle color and hands back an
`Answer` per request; everything here is pure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from pydantic import Field, field_validator, model_validator

from swarmshift.config import Duration, Strict, format_duration

MAX_REQUESTS = 20  # per app: a tick holds the app's lock while they run, one after the other
MAX_TIMEOUT = 30.0
EXCERPT = 120  # characters of a failing answer's body kept for the log, `status` and the deploy's reason
READ_LIMIT = 64 * 1024  # bytes of an answer read to look for `body`; a bigger page is cut there
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

# An absolute path with an optional query, without what a shell, a log line or a config template would misread.
_PATH = re.compile(r"/[A-Za-z0-9._~!$&'()*+,=:@%/?-]{0,511}", re.ASCII)
_STATUS = re.compile(r"([1-5])xx|([1-5][0-9]{2})(?:-([1-5][0-9]{2}))?", re.ASCII)


def parse_status(text: str) -> tuple[int, int]:
    """An expected status range: `200`, `200-299` or `2xx`; ValueError for anything else."""
    match = _STATUS.fullmatch(text.strip())
    if not match:
        raise ValueError(f"expected a status such as 200, 200-299 or 2xx (got {text!r})")
    if match.group(1):
        low = int(match.group(1)) * 100
        return low, low + 99
    low = int(match.group(2))
    high = int(match.group(3)) if match.group(3) else low
    if high < low:
        raise ValueError(f"the range {text!r} ends below where it starts")
    return low, high


class SmokeRequest(Strict):
    """One request a release must answer as expected before it takes traffic."""

    path: str
    method: str = "GET"
    status: str = "200-299"  # 200, 200-299 or 2xx
    body: str | None = Field(None, min_length=1, max_length=200)  # a substring the answer must contain
    max_latency: Duration | None = None  # an upper bound on the time to the whole answer
    timeout: Duration = 5.0

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not _PATH.fullmatch(value):
            raise ValueError("expected an absolute path of at most 512 characters such as /checkout?item=1 "
                             "(letters, digits and -._~!$&'()*+,=:@%/?)")
        return value

    @field_validator("method")
    @classmethod
    def _method(cls, value: str) -> str:
        if value.upper() not in METHODS:
            raise ValueError(f"expected one of {', '.join(METHODS)}")
        return value.upper()

    @field_validator("status", mode="before")
    @classmethod
    def _status(cls, value: object) -> str:
        # YAML reads `status: 200` as a number.
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            raise ValueError("expected a status such as 200, 200-299 or 2xx")
        parse_status(value)
        return value.strip()

    @model_validator(mode="after")
    def _times(self) -> SmokeRequest:
        if not 0 < self.timeout <= MAX_TIMEOUT:
            raise ValueError(f"timeout must be more than 0 and at most {format_duration(MAX_TIMEOUT)}")
        if self.max_latency is not None and not 0 < self.max_latency < self.timeout:
            raise ValueError("max_latency must be more than 0 and less than timeout")
        if self.method == "HEAD" and self.body is not None:
            raise ValueError("a HEAD answer has no body to look for body in")
        return self

    @property
    def statuses(self) -> tuple[int, int]:
        return parse_status(self.status)

    def describe(self) -> str:
        return f"{self.method} {self.path}"

    def expects(self) -> str:
        parts = [f"status {self.status}"]
        if self.body is not None:
            parts.append(f"a body containing {self.body!r}")
        if self.max_latency is not None:
            parts.append(f"within {format_duration(self.max_latency)}")
        return ", ".join(parts)


class SmokeOutcome(StrEnum):
    PASSED = "passed"
    FAILED = "failed"  # the release answered one request wrongly (or not at all): it never takes traffic
    UNREACHABLE = "unreachable"  # no path to the idle color (no preview route, the router down): tried again


@dataclass(frozen=True)
class Answer:
    """What one smoke request got: a status, or the error that stopped it; the time and the start of the body."""

    latency: float  # seconds
    status: int | None = None
    body: str = ""  # at most READ_LIMIT bytes, decoded
    error: str | None = None
    unreachable: bool = False  # the error means no path to the color, not a wrong answer


@dataclass(frozen=True)
class Verdict:
    request: SmokeRequest
    target: str  # where it went: the preview route, or a task's address
    answer: Answer
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    def line(self) -> str:
        """One line for the log, `status` and the deploy's reason: the request, what it got, why that fails."""
        a = self.answer
        got = f"HTTP {a.status}" if a.status is not None else (a.error or "no answer")
        text = f"{self.request.describe()} on {self.target}: {got} in {a.latency * 1000:.0f} ms"
        if self.problems:
            text += f" ({'; '.join(self.problems)})"
        if a.status is not None and not self.ok:
            text += f"; body: {excerpt(a.body)!r}"
        return text


def excerpt(body: str, limit: int = EXCERPT) -> str:
    """The start of a body on one line, printable, at most `limit` characters."""
    flat = "".join(ch if ch.isprintable() else " " for ch in body)
    flat = " ".join(flat.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def evaluate(request: SmokeRequest, target: str, answer: Answer) -> Verdict:
    """The verdict on one answer: every expectation the request names that the answer does not meet."""
    problems: list[str] = []
    if answer.status is None:
        problems.append(f"expected {request.expects()}")
    else:
        low, high = request.statuses
        if not low <= answer.status <= high:
            problems.append(f"expected status {request.status}")
        if request.body is not None and request.body not in answer.body:
            problems.append(f"the body does not contain {request.body!r}")
        if request.max_latency is not None and answer.latency > request.max_latency:
            problems.append(f"slower than max_latency {format_duration(request.max_latency)}")
    return Verdict(request, target, answer, tuple(problems))


@dataclass(frozen=True)
class SmokeRound:
    """Every smoke request of a release, in order, up to the first that failed."""

    outcome: SmokeOutcome
    verdicts: tuple[Verdict, ...] = ()
    detail: str = ""  # why, when no request could be sent

    @property
    def failing(self) -> Verdict | None:
        return next((v for v in self.verdicts if not v.ok), None)

    def summary(self) -> str:
        failing = self.failing
        if failing is not None:
            return failing.line()
        if self.detail:
            return self.detail
        return f"{len(self.verdicts)} smoke request(s) answered as expected"


def judge(verdicts: list[Verdict]) -> SmokeRound:
    """The round's outcome: unreachable if a request found no path, failed if one was answered wrongly."""
    for verdict in verdicts:
        if verdict.answer.unreachable:
            return SmokeRound(SmokeOutcome.UNREACHABLE, tuple(verdicts), verdict.line())
        if not verdict.ok:
            return SmokeRound(SmokeOutcome.FAILED, tuple(verdicts))
    return SmokeRound(SmokeOutcome.PASSED, tuple(verdicts))
