"""What `status` and the API show of an app: one JSON view per app, with its health and the reasons."""

from __future__ import annotations

import time
from typing import Any

from bluegreen.apps import Color
from bluegreen.observe import Reading
from bluegreen.phases import Settings, hook_gate, pending_hooks
from bluegreen.runtime import Runtime
from bluegreen.state import AppState, Phase, Release, Result, format_time


def history_view(release: Release) -> dict[str, Any]:
    """One history entry as `history` and `GET /v1/apps/{app}/history` show it."""
    return {"revision": release.revision, "image": release.image, "kind": release.kind.value,
            "result": release.outcome.value, "started": format_time(release.started),
            "ended": format_time(release.ended), "seconds": round(release.ended - release.started, 3),
            "phases": dict(release.phases), "reason": release.reason, "requested_by": release.by or None,
            "previous": release.previous or None}


def gate_view(key: str, state: AppState, settings: Settings | None) -> dict[str, Any] | None:
    """What a Paused deploy waits for: since when, when it promotes itself (if it does), and what to run."""
    if state.phase is not Phase.PAUSED:
        return None
    after = settings.auto_promotion_after if settings is not None and not settings.auto_promotion else None
    return {"paused_since": format_time(state.since),
            "auto_promotion_at": format_time(state.since + after) if after is not None else None,
            "promote": f"swarmshift bluegreen promote {key}", "abort": f"swarmshift bluegreen abort {key}"}


def canary_view(rt: Runtime, state: AppState, settings: Settings | None, now: float) -> dict[str, Any] | None:
    """A deploy in Canary: its weight, the window elapsed and remaining, and the last analysis."""
    if state.phase is not Phase.CANARY or state.deploy is None:
        return None
    policy = settings.canary if settings is not None else None
    elapsed = max(0.0, now - state.since)
    track = rt.canary if rt.canary is not None and rt.canary.key == (state.deploy.id, state.since) else None
    last = track.last if track is not None else None
    return {
        "color": state.deploy.target.value, "weight": state.deploy.percent, "since": format_time(state.since),
        "analysis": policy.analysis if policy else None, "elapsed": round(elapsed, 1),
        "remaining": round(max(0.0, policy.analysis - elapsed), 1) if policy else None,
        "last": None if last is None or track is None or track.last_at is None else {
            "at": format_time(track.last_at), "window": last.window, "requests": last.requests,
            "errors": last.errors, "error_rate": last.error_rate, "latency": last.latency, "error": last.error,
        },
        "thresholds": None if policy is None else {
            "max_error_rate": policy.max_error_rate, "max_latency": policy.max_latency,
            "latency_quantile": policy.latency_quantile, "min_requests": policy.min_requests,
            "require_traffic": policy.require_traffic,
        },
    }


def webhooks_view(rt: Runtime, state: AppState, settings: Settings | None) -> dict[str, Any]:
    """The app's webhook gates: the one it stands at and the webhooks still pending there, each done, the last round."""
    gate = hook_gate(state)
    d = state.deploy
    pending = [s.name for s in pending_hooks(settings, d, gate)] if gate and d and settings else []
    return {"gate": str(gate) if gate and pending else None, "pending": pending,
            "done": [{"webhook": name, "outcome": outcome} for name, outcome in (d.webhooks if d else ())],
            "last": rt.webhooks}


def app_view(rt: Runtime, reading: Reading | None, error: str | None = None,
             settings: Settings | None = None, now: float | None = None) -> dict[str, Any]:
    """The app as status and `GET /v1/apps/<app>` show it: health, phase, colors, routing and the last deploy.

    `broken` is true when the labels describe no app the controller can work with (or the read
    failed: `error`); such an app has only its problems, which say why, and the services refused.
    """
    refused = [{"service": service, "reason": line} for service, line in sorted(rt.refused.items())]
    if reading is None:
        problems = [*rt.problems, *([f"the app could not be read: {error}"] if error else [])]
        return {"app": rt.name, "broken": True, "health": "degraded", "degraded": problems, "problems": problems,
                "refused": refused, "request": rt.request}
    state, app = reading.loaded.state, reading.app
    wanted = state.routing()
    colors = {}
    for color in Color:
        c = reading.colors[color]
        colors[color.value] = {
            "service": c.service, "image": c.image, "replicas": c.replicas, "running": c.running,
            "unhealthy": c.unhealthy, "ready": c.ready(), "updating": c.updating, "lock": c.lock,
            "weight": reading.routed.weight(color) if reading.routed else None,
        }
    degraded = [*rt.problems]
    if rt.route_error:
        degraded.append(f"the router refused the last routing: {rt.route_error}")
    active = reading.colors[state.active]
    if not active.ready():
        degraded.append(f"{active.service} (active): {active.describe()}")
    if not state.phase.in_flight:
        if reading.routed != wanted:
            degraded.append(f"the router serves {reading.routed or 'nothing'}, not {wanted}")
        d = state.deploy
        if d is not None and d.kind.gated and state.result in (Result.ROLLED_BACK, Result.FAILED):
            degraded.append(f"the last deploy ({d.id}, {d.image}) {state.result}: {d.reason}")
    health = "degraded" if degraded else "progressing" if state.phase.in_flight else "healthy"
    d = state.deploy
    return {
        "app": app.name,
        "broken": False,
        "health": health,
        "degraded": degraded,
        "active": state.active.value,
        "phase": state.phase.value,
        "reason": rt.reason if rt.state is not None and rt.state.phase is state.phase else "",
        "since": format_time(state.since),
        "generation": state.generation,
        "result": state.result.value if state.result else None,
        "retire_at": format_time(state.retire_at) if state.retire_at else None,
        "colors": colors,
        "routing": {"wanted": str(wanted), "in_effect": str(reading.routed) if reading.routed else None},
        "deploy": None if d is None else {
            "id": d.id, "operation": d.kind.value, "source": d.source.value, "target": d.target.value,
            "image": d.image, "previous_image": d.previous_image, "started_at": format_time(d.started_at),
            "steps": list(d.steps), "step": d.step, "failures": d.failures, "reason": d.reason, "force": d.force,
            "canary": d.canary, "requested_by": d.by or None, "phases": dict(d.phases),
        },
        "revision": state.history[-1].revision if state.history else None,
        "request": rt.request,
        "route_error": rt.route_error,
        "probe": rt.probe,
        "smoke": rt.smoke,
        "gate": gate_view(rt.name, state, settings),
        "canary": canary_view(rt, state, settings, time.time() if now is None else now),
        "webhooks": webhooks_view(rt, state, settings),
        "problems": [*reading.problems, *reading.loaded.problems],
        "refused": refused,
        "app_config": {"name": app.label, "stack": app.stack, "port": app.port, "rule": str(app.rule),
                       "preview_rule": str(app.preview_rule) if app.preview_rule else None,
                       "health_path": app.health_path, "strategy": app.strategy.value},
    }
