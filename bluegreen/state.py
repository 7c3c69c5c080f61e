"""The deploy state: routing (with its one text codec), phases, deploys, and the state kept in labels.

Where the state lives, and why it survives anything:

- Both colors carry the full state (`AppState.to_labels()`), each copy stamped with a
  generation number that grows by one on every change. The copy with the highest generation
  is authoritative (`choose_state`). The controller writes one color and then the other, so a
  kill between the two writes leaves one newer copy, which wins.
- A state change is written to Swarm *before* its side effects run (see `bluegreen.phases`),
  and a side effect that changes a service travels in the same service update as the state.
- `docker stack deploy` of one color's stack replaces that service's labels: the other color
  still holds the state, and the controller writes it back. When both copies are gone,
  `infer_state` rebuilds a Stable state from what is observable: the routing the proxy has
  loaded, else the only color with replicas, else blue.

Nothing here does I/O.
"""

from __future__ import annotations

import json
import math
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum

from bluegreen.apps import App, Color
from bluegreen.labels import (
    DEPLOY_PREFIX,
    IDLE_LOCK,
    K_ACTIVE,
    K_ALERTS,
    K_DEPLOY_BY,
    K_DEPLOY_CANARY,
    K_DEPLOY_FAILURES,
    K_DEPLOY_FORCE,
    K_DEPLOY_ID,
    K_DEPLOY_IMAGE,
    K_DEPLOY_KIND,
    K_DEPLOY_PHASES,
    K_DEPLOY_POST_ROLLOUT,
    K_DEPLOY_PREVIOUS,
    K_DEPLOY_REASON,
    K_DEPLOY_SOURCE,
    K_DEPLOY_STARTED,
    K_DEPLOY_STEP,
    K_DEPLOY_STEPS,
    K_DEPLOY_WEBHOOKS,
    K_GENERATION,
    K_HISTORY,
    K_PHASE,
    K_RESULT,
    K_RETIRE_AT,
    K_SINCE,
    STATE_KEYS,
    problem,
)
from bluegreen.webhook_gates import decode_record, encode_record
from swarmshift.alerts import append_seen, decode_seen
from swarmshift.numbers import whole_number

_REASON_MAX = 400  # labels are not a log: keep the reason readable in `docker service inspect`
# ASCII digits and fullmatch: `\d` takes any Unicode digit, `$` a trailing newline.
_ROUTING = re.compile(r"blue=([0-9]{1,3}) green=([0-9]{1,3}) preview=(blue|green)", re.ASCII)
_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?Z", re.ASCII)


@dataclass(frozen=True)
class Routing:
    """What a router sends where: percent weights of the app's rule, and the color its preview rule serves."""

    blue: int
    green: int
    preview: Color

    def __post_init__(self) -> None:
        if not (0 <= self.blue <= 100 and 0 <= self.green <= 100 and self.blue + self.green == 100):
            raise ValueError(f"weights must be 0-100 and add up to 100 (got blue={self.blue} green={self.green})")

    @classmethod
    def all_to(cls, color: Color) -> Routing:
        """All traffic to `color`; the preview rule serves the other one."""
        return cls.toward(color, 100, preview=color.other)

    @classmethod
    def toward(cls, target: Color, percent: int, preview: Color | None = None) -> Routing:
        """`percent` of the traffic to `target`, the rest to the other color; preview on `target` unless told."""
        rest = 100 - percent
        blue, green = (percent, rest) if target is Color.BLUE else (rest, percent)
        return cls(blue=blue, green=green, preview=target if preview is None else preview)

    def weight(self, color: Color) -> int:
        return self.blue if color is Color.BLUE else self.green

    @property
    def single(self) -> Color | None:
        """The color that takes all traffic, if one does."""
        return Color.BLUE if self.blue == 100 else Color.GREEN if self.green == 100 else None

    def __str__(self) -> str:
        """The routing's one text form, which `parse` reads back: `blue=100 green=0 preview=green`."""
        return f"blue={self.blue} green={self.green} preview={self.preview}"

    @classmethod
    def parse(cls, text: str) -> Routing:
        """The routing `str(routing)` wrote; ValueError for any other text."""
        match = _ROUTING.fullmatch(text.strip())
        if not match:
            raise ValueError(f"not a routing such as blue=100 green=0 preview=green (got {text!r})")
        return cls(blue=int(match.group(1)), green=int(match.group(2)), preview=Color(match.group(3)))




class Phase(StrEnum):
    """Where an app is. `status` prints these; the deploy flow goes top to bottom."""

    STABLE = "Stable"  # all traffic on the active color, nothing in flight
    PREPARING = "Preparing"  # idle color gets the new image and the active color's replica count
    WAITING = "Waiting"  # for every task of the idle color to run and be Docker-healthy
    PRECHECKS = "PreChecks"  # healthy_threshold probes in a row, plus PromQL checks, before any traffic
    SMOKE_TESTS = "SmokeTests"  # the config's smoke requests, sent to the idle color before any traffic
    PRE_ROLLOUT = "PreRollout"  # the pre-rollout webhooks, until each answers 2xx (or fails, or gate_timeout)
    PAUSED = "Paused"  # auto_promotion off: waits for promote, abort or auto_promotion_after (from `since`)
    CONFIRM_PROMOTION = "ConfirmPromotion"  # the confirm-promotion webhooks, polled until each answers 2xx
    SCALING_UP = "ScalingUp"  # preview_replicas: the idle color goes to the active count, then is waited for
    SWITCHING = "Switching"  # the router is told the new weights; left when it confirms them
    CANARY = "Canary"  # canary.weight % on the new color, analysed from Traefik's metrics for canary.analysis (from `since`)
    PROGRESSING = "Progressing"  # progressive mode: verifying a partial weight step
    VERIFYING = "Verifying"  # all traffic on the new color, under verification
    ROLLING_BACK = "RollingBack"  # traffic returns to the previous color
    ROLLED_BACK = "RolledBack"  # the deploy failed after traffic moved; traffic is back
    FAILED = "Failed"  # the deploy failed before traffic moved; the active color was never touched

    @property
    def in_flight(self) -> bool:
        return self not in (Phase.STABLE, Phase.ROLLED_BACK, Phase.FAILED)

    @property
    def moves_traffic(self) -> bool:
        """Phases whose routing sends traffic toward the deploy's target color."""
        return self in (Phase.SWITCHING, Phase.CANARY, Phase.PROGRESSING, Phase.VERIFYING)


class Operation(StrEnum):
    DEPLOY = "deploy"  # a new image to the idle color
    SWITCH = "switch"  # move traffic to the other color as it is
    ROLLBACK = "rollback"  # return to the previous color
    UNDO = "undo"  # an earlier release's image, deployed through the same gates as a deploy

    @property
    def gated(self) -> bool:
        """Whether a person's promotion gate applies: a release someone chose, not a rollback already asked for."""
        return self in (Operation.DEPLOY, Operation.UNDO)


class Result(StrEnum):
    SUCCEEDED = "succeeded"
    ROLLED_BACK = "rolled-back"
    FAILED = "failed"


@dataclass(frozen=True)
class Deploy:
    """One operation on an app: the current one while in flight, else the last one."""

    id: str
    kind: Operation
    source: Color  # held the traffic when the operation started
    image: str  # what the target color runs (for a switch: what it ran already)
    previous_image: str  # what the source color runs
    started_at: float
    steps: tuple[int, ...] = (100,)  # percent of traffic on the target per step; the last is 100
    step: int = 0
    failures: int = 0  # failed verification rounds so far; stored, so a restart never forgets one
    reason: str = ""  # why it failed or was rolled back
    force: bool = False  # a forced switch skips the health gate and the verification
    canary: bool = False  # the first step (steps[0]) is a canary: analysed in Canary, not verified in Progressing
    # The webhook gates done for this deploy, in order: (name, "passed" or "failed"); stored, so a
    # restarted controller never sends one again (bluegreen.webhook_gates).
    webhooks: tuple[tuple[str, str], ...] = ()
    # Armed when the deploy went Stable with post-rollout webhooks configured: only then are they
    # called, so a webhook added to the config later is never sent for an old release.
    post_rollout: bool = False

    def webhook_done(self, name: str) -> bool:
        return any(done == name for done, _ in self.webhooks)
    by: str = ""  # who asked: the request's `by` (the CLI sends $USER), `alert:<name>`; "" unknown
    phases: tuple[tuple[str, float], ...] = ()  # seconds spent in each phase left so far, in order

    @property
    def target(self) -> Color:
        return self.source.other

    @property
    def percent(self) -> int:
        return self.steps[self.step]


@dataclass(frozen=True)
class AppState:
    """Everything the controller must know about an app to continue after a restart."""

    active: Color  # the color of record: verified, and where traffic rests outside a switch
    phase: Phase = Phase.STABLE
    since: float = 0.0  # when the phase began (wall clock, seconds since the epoch)
    generation: int = 0
    deploy: Deploy | None = None
    result: Result | None = None  # of the last finished operation
    retire_at: float | None = None  # when the color without traffic (active.other) is scaled to 0
    history: tuple[Release, ...] = ()  # the last HISTORY_MAX finished operations, oldest first

    def routing(self) -> Routing:
        """The routing this state calls for; regenerating it is always safe."""
        if self.phase.moves_traffic and self.deploy is not None:
            d = self.deploy
            # The preview serves the color under test while it shares traffic, then the idle one.
            return Routing.toward(d.target, d.percent, preview=d.target if d.percent < 100 else d.source)
        # Outside a switch the preview serves the color without traffic: before a switch that is
        # the color being deployed, so people can try it; after a rollback, the failed one.
        return Routing.all_to(self.active)

    def locks(self) -> dict[Color, str | None]:
        """The autoscaler lock each color should carry."""
        if self.phase.in_flight and self.deploy is not None:
            return {Color.BLUE: self.deploy.id, Color.GREEN: self.deploy.id}
        return {self.active: None, self.active.other: IDLE_LOCK}

    def to_labels(self) -> dict[str, str | None]:
        """Every state label, with None for the absent ones so that a write removes stale values."""
        labels: dict[str, str | None] = dict.fromkeys(STATE_KEYS)
        labels[K_GENERATION] = str(self.generation)
        labels[K_ACTIVE] = self.active.value
        labels[K_PHASE] = self.phase.value
        labels[K_SINCE] = format_time(self.since)
        labels[K_HISTORY] = encode_history(self.history)
        if self.result is not None:
            labels[K_RESULT] = self.result.value
        if self.retire_at is not None:
            labels[K_RETIRE_AT] = format_time(self.retire_at)
        if self.deploy is not None:
            d = self.deploy
            labels.update({
                K_DEPLOY_ID: d.id,
                K_DEPLOY_KIND: d.kind.value,
                K_DEPLOY_SOURCE: d.source.value,
                K_DEPLOY_IMAGE: d.image,
                K_DEPLOY_PREVIOUS: d.previous_image,
                K_DEPLOY_STARTED: format_time(d.started_at),
                K_DEPLOY_STEPS: ",".join(str(s) for s in d.steps),
                K_DEPLOY_STEP: str(d.step),
                K_DEPLOY_FAILURES: str(d.failures),
                K_DEPLOY_FORCE: "true" if d.force else "false",
                K_DEPLOY_REASON: _one_line(d.reason) or None,
                K_DEPLOY_CANARY: "true" if d.canary else None,
                K_DEPLOY_WEBHOOKS: encode_record(d.webhooks),
                K_DEPLOY_POST_ROLLOUT: "true" if d.post_rollout else None,
                K_DEPLOY_BY: requester(d.by) or None,
                K_DEPLOY_PHASES: encode_phases(d.phases),
            })
        return labels

    @classmethod
    def from_labels(cls, labels: Mapping[str, str], service: str) -> tuple[AppState | None, list[str]]:
        """The state stored on one service: (None, []) when it has none, (None, problems) when it is bad."""
        present = {k: v for k, v in labels.items() if k in STATE_KEYS}
        if not present:
            return None, []
        reader = _LabelReader(present, service)
        generation = reader.integer(K_GENERATION, required=True, minimum=0)
        active = reader.enum(K_ACTIVE, Color, required=True)
        phase = reader.enum(K_PHASE, Phase, required=True)
        since = reader.time(K_SINCE, required=True)
        result = reader.enum(K_RESULT, Result)
        retire_at = reader.time(K_RETIRE_AT)
        deploy = None
        if any(k.startswith(DEPLOY_PREFIX) for k in present):
            steps = reader.steps(K_DEPLOY_STEPS)
            step = reader.integer(K_DEPLOY_STEP, required=True, minimum=0)
            if steps is not None and step is not None and step >= len(steps):
                reader.problems.append(problem(service, K_DEPLOY_STEP, f"beyond the {len(steps)} steps",
                                                present[K_DEPLOY_STEP]))
            deploy_fields = dict(
                id=reader.text(K_DEPLOY_ID),
                kind=reader.enum(K_DEPLOY_KIND, Operation, required=True),
                source=reader.enum(K_DEPLOY_SOURCE, Color, required=True),
                image=reader.text(K_DEPLOY_IMAGE),
                previous_image=reader.text(K_DEPLOY_PREVIOUS),
                started_at=reader.time(K_DEPLOY_STARTED, required=True),
                steps=steps,
                step=step,
                failures=reader.integer(K_DEPLOY_FAILURES, required=True, minimum=0),
                reason=present.get(K_DEPLOY_REASON, ""),
                force=reader.boolean(K_DEPLOY_FORCE),
                canary=reader.boolean(K_DEPLOY_CANARY),
                webhooks=reader.webhooks(K_DEPLOY_WEBHOOKS),
                post_rollout=reader.boolean(K_DEPLOY_POST_ROLLOUT),
                # Bookkeeping for the history, read leniently: a damaged value is no reason to stop a deploy.
                by=requester(present.get(K_DEPLOY_BY, "")),
                phases=decode_phases(present.get(K_DEPLOY_PHASES)),
            )
            if not reader.problems:
                deploy = Deploy(**deploy_fields)  # type: ignore[arg-type]
        if phase is not None and phase.in_flight and deploy is None and not reader.problems:
            reader.problems.append(problem(service, K_PHASE, "a deploy phase without the deploy's labels",
                                            present[K_PHASE]))
        if reader.problems:
            return None, reader.problems
        assert generation is not None and active is not None and phase is not None and since is not None
        history, _ = decode_history(present.get(K_HISTORY))
        return cls(active=active, phase=phase, since=since, generation=generation, deploy=deploy,
                   result=result, retire_at=retire_at, history=history), []

    def evolve(self, **changes: object) -> AppState:
        """A copy with `changes` and the next generation: every change to the state is a new generation."""
        return replace(self, generation=self.generation + 1, **changes)  # type: ignore[arg-type]


class _LabelReader:
    """Reads typed values from state labels, collecting one problem line per bad label."""

    def __init__(self, labels: Mapping[str, str], service: str) -> None:
        self.labels, self.service = labels, service
        self.problems: list[str] = []

    def _raw(self, key: str, required: bool) -> str | None:
        value = self.labels.get(key)
        if value is None and required:
            self.problems.append(problem(self.service, key, "missing: the other state labels are present"))
        return value

    def text(self, key: str) -> str | None:
        value = self._raw(key, True)
        if value == "":
            self.problems.append(problem(self.service, key, "empty", value))
        return value

    def integer(self, key: str, *, required: bool = False, minimum: int = 0) -> int | None:
        value = self._raw(key, required)
        if value is None:
            return None
        try:
            return whole_number(value, minimum=minimum)
        except ValueError:
            self.problems.append(problem(self.service, key, f"expected a whole number >= {minimum}", value))
            return None

    def enum(self, key: str, kind: type[StrEnum], *, required: bool = False):  # noqa: ANN201 - the enum given
        value = self._raw(key, required)
        if value is None:
            return None
        try:
            return kind(value)
        except ValueError:
            self.problems.append(problem(self.service, key, f"expected one of {', '.join(kind)}", value))
            return None

    def time(self, key: str, *, required: bool = False) -> float | None:
        value = self._raw(key, required)
        if value is None:
            return None
        try:
            return parse_time(value)
        except ValueError:
            self.problems.append(problem(self.service, key, "expected a UTC time such as 2025-01-31T12:00:00.000Z",
                                          value))
            return None

    def boolean(self, key: str) -> bool:
        value = self._raw(key, False)
        if value in (None, "false"):
            return False
        if value == "true":
            return True
        self.problems.append(problem(self.service, key, "expected true or false", value))
        return False

    def webhooks(self, key: str) -> tuple[tuple[str, str], ...]:
        value = self._raw(key, False)
        if value is None:
            return ()
        try:
            return decode_record(value)
        except ValueError as err:
            self.problems.append(problem(self.service, key, str(err), value))
            return ()

    def steps(self, key: str) -> tuple[int, ...] | None:
        value = self._raw(key, True)
        if value is None:
            return None
        try:
            steps = tuple(whole_number(part, minimum=1, maximum=100) for part in value.split(",", 100))
            validate_steps(steps)
        except ValueError as err:
            message = str(err) if "step" in str(err) else "expected percentages such as 10,50,100"
            self.problems.append(problem(self.service, key, message, value))
            return None
        return steps


def validate_steps(steps: tuple[int, ...] | list[int]) -> None:
    """Weight steps rise strictly within 1-100 and end at 100, or ValueError."""
    if not steps:
        raise ValueError("at least one step is needed")
    if any(not 1 <= s <= 100 for s in steps) or list(steps) != sorted(set(steps)):
        raise ValueError("steps must rise strictly, each from 1 to 100")
    if steps[-1] != 100:
        raise ValueError("the last step must be 100")


def format_time(ts: float) -> str:
    """UTC with milliseconds: readable in `docker service inspect`, exact enough for a state."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(round(ts * 1000)) % 1000:03d}Z"


def parse_time(text: str) -> float:
    """The time `format_time` wrote (ISO 8601 in UTC, ASCII digits); ValueError for anything else."""
    if not _TIME.fullmatch(text):
        raise ValueError("expected a UTC time such as 2025-01-31T12:00:00.000Z")
    return round(datetime.fromisoformat(text[:-1] + "+00:00").timestamp(), 3)


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _REASON_MAX else text[: _REASON_MAX - 1] + "…"


def new_deploy_id(app: str, now: float, token: str | None = None) -> str:
    """A deploy id that says what and when: `web-20250131T120000-3fa2`."""
    stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%dT%H%M%S")
    return f"{app}-{stamp}-{token or secrets.token_hex(2)}"


def alerts_seen(labels: Mapping[Color, Mapping[str, str]]) -> tuple[str, ...]:
    """The keys of the alerts that rolled the app back, from both colors (`docker stack deploy` may wipe one)."""
    keys: dict[str, None] = {}
    for color in Color:
        keys.update(dict.fromkeys(decode_seen(labels.get(color, {}).get(K_ALERTS))))
    return tuple(keys)


def alerts_label(labels: Mapping[Color, Mapping[str, str]], key: str) -> dict[str, str]:
    """The label that records alert `key` as acted on, for the write that carries out its rollback."""
    return {K_ALERTS: append_seen(",".join(alerts_seen(labels)), key)}


def choose_state(stored: Mapping[Color, AppState | None]) -> AppState | None:
    """The authoritative copy: the highest generation (blue's on a tie, which only a split brain makes)."""
    copies = [(state.generation, color is Color.BLUE, state) for color, state in stored.items() if state is not None]
    if not copies:
        return None
    return max(copies, key=lambda c: (c[0], c[1]))[2]


def infer_state(replicas: Mapping[Color, int], routed: Routing | None, now: float) -> tuple[AppState, str]:
    """A Stable state for an app whose state labels are gone on both colors, and why this color.

    The loaded routing is the best witness, since it is what users get; then the only color
    with replicas; then blue. Nothing moves: the state describes what already is.
    """
    if routed is not None and routed.single is not None:
        active, why = routed.single, f"the router sends all traffic to {routed.single}"
    elif replicas.get(Color.BLUE, 0) > 0 and replicas.get(Color.GREEN, 0) == 0:
        active, why = Color.BLUE, "only blue has replicas"
    elif replicas.get(Color.GREEN, 0) > 0 and replicas.get(Color.BLUE, 0) == 0:
        active, why = Color.GREEN, "only green has replicas"
    else:
        active, why = Color.BLUE, "no routing and no single color with replicas: blue by convention"
    return AppState(active=active, phase=Phase.STABLE, since=now, generation=1), why


@dataclass(frozen=True)
class Loaded:
    """An app's state as reconciliation finds it in Swarm."""

    state: AppState
    stored: dict[Color, int | None]  # the generation each color holds now (None: no usable copy)
    problems: list[str]  # bad state labels, one line each
    adopted: str | None = None  # why the state was inferred, when neither color held a usable copy
    history_problem: str | None = None  # why the chosen copy's history was unreadable (and reset)


def load_state(app: App, labels: Mapping[Color, Mapping[str, str]], replicas: Mapping[Color, int],
               routed: Routing | None, now: float) -> Loaded:
    """The authoritative state of `app` from both colors' labels, inferred when both copies are gone."""
    copies: dict[Color, AppState | None] = {}
    problems: list[str] = []
    for color in Color:
        state, bad = AppState.from_labels(labels.get(color, {}), app.service(color))
        copies[color] = state
        problems.extend(bad)
    stored = {color: state.generation if state else None for color, state in copies.items()}
    chosen = choose_state(copies)
    if chosen is not None:
        color = next(c for c in Color if copies[c] is chosen)
        _, bad_history = decode_history(labels.get(color, {}).get(K_HISTORY))
        note = f"{app.service(color)}: {K_HISTORY}: {bad_history}; the history starts again" if bad_history else None
        return Loaded(chosen, stored, problems, history_problem=note)
    inferred, why = infer_state(replicas, routed, now)
    return Loaded(inferred, stored, problems, adopted=why)


# --- History: the app's last releases, on the services -----------------------------------------

HISTORY_MAX = 10  # entries kept: the label stays a few KiB
_HISTORY_CHARS = 32_000  # more than HISTORY_MAX bounded entries can take: a longer value is not read
_HISTORY_REASON = 160
_BY_MAX = 64
_IMAGE_MAX = 512
_PHASE_NAMES = frozenset(p.value for p in Phase if p.in_flight)
_ENTRY_KEYS = {"rev", "image", "kind", "result", "start", "end", "phases", "reason", "by", "prev"}


class Outcome(StrEnum):
    """How a finished operation ended, as its history entry says."""

    SUCCEEDED = "Succeeded"
    FAILED = "Failed"  # before the switch: a gate or a timeout
    ROLLED_BACK = "RolledBack"  # after traffic moved
    ABORTED = "Aborted"  # by request (abort, or a rollback before the switch)


@dataclass(frozen=True)
class Release:
    """One finished deploy, switch, rollback or undo: an entry of the app's history."""

    revision: int  # grows by one per entry, per app
    image: str  # what the operation's target color ran
    kind: Operation
    outcome: Outcome
    started: float
    ended: float
    phases: tuple[tuple[str, float], ...] = ()  # seconds per phase, in order
    reason: str = ""  # why it failed or was rolled back, short
    by: str = ""  # who asked
    previous: str = ""  # what the active color ran before it: where an undo of the first release goes

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"rev": self.revision, "image": self.image, "kind": self.kind.value,
                                  "result": self.outcome.value, "start": format_time(self.started),
                                  "end": format_time(self.ended)}
        if self.phases:
            out["phases"] = {name: seconds for name, seconds in self.phases}
        if self.reason:
            out["reason"] = self.reason
        if self.by:
            out["by"] = self.by
        if self.previous:
            out["prev"] = self.previous
        return out

    @classmethod
    def from_json(cls, raw: object) -> Release:
        """The entry `to_json` wrote; ValueError naming what is wrong with anything else."""
        if not isinstance(raw, dict):
            raise ValueError("an entry is not an object")
        unknown = set(raw) - _ENTRY_KEYS
        if unknown:
            raise ValueError(f"unknown key {sorted(unknown)[0]!r}")
        rev = raw.get("rev")
        if type(rev) is not int or not 1 <= rev <= 10**9:
            raise ValueError("rev: expected a whole number from 1")
        image = _bounded_text(raw.get("image"), "image", _IMAGE_MAX, required=True)
        try:
            kind, outcome = Operation(raw.get("kind")), Outcome(raw.get("result"))
        except ValueError as err:
            raise ValueError(f"kind or result: {err}") from None
        started, ended = (parse_time(_bounded_text(raw.get(k), k, 30, required=True)) for k in ("start", "end"))
        phases = raw.get("phases", {})
        if not isinstance(phases, dict) or len(phases) > len(_PHASE_NAMES):
            raise ValueError("phases: expected an object of phase: seconds")
        timed = []
        for name, seconds in phases.items():
            if name not in _PHASE_NAMES or type(seconds) not in (int, float) or not 0 <= seconds <= 10**9:
                raise ValueError(f"phases: bad entry {str(name)[:40]!r}")
            timed.append((name, float(seconds)))
        return cls(revision=rev, image=image, kind=kind, outcome=outcome, started=started, ended=ended,
                   phases=tuple(timed), reason=_bounded_text(raw.get("reason", ""), "reason", _HISTORY_REASON),
                   by=_bounded_text(raw.get("by", ""), "by", _BY_MAX),
                   previous=_bounded_text(raw.get("prev", ""), "prev", _IMAGE_MAX))


def _bounded_text(value: object, key: str, limit: int, required: bool = False) -> str:
    if not isinstance(value, str) or len(value) > limit or (required and not value) or not value.isprintable():
        raise ValueError(f"{key}: expected printable text of at most {limit} characters")
    return value


def encode_history(history: tuple[Release, ...]) -> str | None:
    """The history label's value: compact JSON, oldest first; None (no label) when empty."""
    if not history:
        return None
    return json.dumps([r.to_json() for r in history[-HISTORY_MAX:]], separators=(",", ":"), ensure_ascii=True)


def decode_history(text: str | None) -> tuple[tuple[Release, ...], str | None]:
    """The history a label holds, and None; or an empty history and why the label could not be read.

    Never raises: a damaged history must not break the app, it only starts again.
    """
    if text is None or text == "":
        return (), None
    if len(text) > _HISTORY_CHARS:
        return (), f"longer than {_HISTORY_CHARS} characters"
    try:
        raw = json.loads(text)
        if not isinstance(raw, list) or len(raw) > HISTORY_MAX:
            raise ValueError(f"expected a list of at most {HISTORY_MAX} entries")
        history = tuple(Release.from_json(entry) for entry in raw)
    except (ValueError, RecursionError) as err:
        return (), f"not a history ({str(err)[:120]})"
    revisions = [r.revision for r in history]
    if revisions != sorted(set(revisions)):
        return (), "not a history (revisions must rise)"
    return history, None


def record(history: tuple[Release, ...], deploy: Deploy, outcome: Outcome, ended: float) -> tuple[Release, ...]:
    """The history with `deploy` appended as the next revision, keeping the last HISTORY_MAX."""
    reason = "" if outcome is Outcome.SUCCEEDED else _one_line(deploy.reason)
    if len(reason) > _HISTORY_REASON:
        reason = reason[: _HISTORY_REASON - 1] + "…"
    image, previous = (text if len(text) <= _IMAGE_MAX else text[: _IMAGE_MAX - 1] + "…"
                       for text in (deploy.image, deploy.previous_image or ""))
    entry = Release(revision=next_revision(history), image=image, kind=deploy.kind, outcome=outcome,
                    started=deploy.started_at, ended=ended, phases=deploy.phases, reason=reason,
                    by=requester(deploy.by), previous=previous)
    return (*history, entry)[-HISTORY_MAX:]


def next_revision(history: tuple[Release, ...]) -> int:
    return max((r.revision for r in history), default=0) + 1


def requester(text: str) -> str:
    """Who asked, as stored: one printable line of at most 64 characters."""
    text = "".join(ch for ch in " ".join(text.split()) if ch.isprintable())
    return text if len(text) <= _BY_MAX else text[: _BY_MAX - 1] + "…"


def add_phase_time(phases: tuple[tuple[str, float], ...], phase: Phase, seconds: float) -> tuple[tuple[str, float], ...]:
    """`phases` with `seconds` more spent in `phase` (a phase entered twice adds up), at millisecond precision."""
    seconds = round(max(0.0, seconds), 3)
    if any(name == phase.value for name, _ in phases):
        return tuple((name, round(s + seconds, 3) if name == phase.value else s) for name, s in phases)
    return (*phases, (phase.value, seconds))


def encode_phases(phases: tuple[tuple[str, float], ...]) -> str | None:
    return ",".join(f"{name}={_seconds(value)}" for name, value in phases) or None


def _seconds(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".")


def decode_phases(text: str | None) -> tuple[tuple[str, float], ...]:
    """The phase times `encode_phases` wrote; empty for anything else (they are bookkeeping, not state)."""
    if not text or len(text) > 1000:
        return ()
    out = []
    for part in text.split(","):
        name, _, value = part.partition("=")
        try:
            seconds = float(value) if re.fullmatch(r"[0-9]{1,10}(?:\.[0-9]{1,3})?", value, re.ASCII) else math.nan
        except ValueError:
            return ()
        if name not in _PHASE_NAMES or math.isnan(seconds) or any(n == name for n, _ in out):
            return ()
        out.append((name, seconds))
    return tuple(out)
