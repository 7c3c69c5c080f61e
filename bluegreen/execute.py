"""Carrying out a step: the plan's service writes, routes and notifications in order, then logs and metrics.

`execute` runs `plan(step, stored)` in the order the machine's contract needs: the first
service write makes the new state durable, then routes are applied and confirmed, then the
other color's write, then notifications. A version conflict on the first write means nothing of
the step ran.
"""

from __future__ import annotations

import time
from typing import Any

from bluegreen.apps import App, Color
from bluegreen.observe import Reading
from bluegreen.phases import Notify, Route, Step, plan
from bluegreen.routers import Router, RouterError
from bluegreen.runtime import Runtime
from bluegreen.state import Operation, Phase, Result, Routing, alerts_label, alerts_seen
from bluegreen.telemetry import Telemetry
from swarmshift import logs
from swarmshift.notify import Notifier
from swarmshift.swarm import Service, SwarmAccess, SwarmError

log = logs.get("bluegreen")


class AlertRepeat(Exception):
    """The alert weighed by this step has rolled the app back already (its key is on the services): nothing ran."""


def rolls_back(step: Step) -> bool:
    """Whether `step` begins sending traffic back: aborting a deploy, or a rollback begun at rest."""
    state = step.state
    return step.transitioned and (state.phase is Phase.ROLLING_BACK or (
        state.deploy is not None and state.deploy.kind is Operation.ROLLBACK and not step.previous.phase.in_flight))


class Executor:
    """Carries out steps on Swarm and the router, and records each (log lines, metrics, notifications)."""

    def __init__(self, swarm: SwarmAccess, router: Router, notifier: Notifier, telemetry: Telemetry) -> None:
        self.swarm = swarm
        self.router = router
        self.notifier = notifier
        self.telemetry = telemetry

    async def execute(self, rt: Runtime, reading: Reading, step: Step, *,
                       cause: str) -> tuple[dict[Color, Service], Routing | None | bool]:
        """Carry out a step in the plan's order; VersionConflict only when nothing of it ran.

        Returns the services as the writes left them, and the routing the router confirmed (None
        when the step had no route, False when one was not confirmed).
        """
        app = reading.app
        p = plan(step, reading.loaded.stored)
        services = dict(reading.services)
        extra = self._alert_labels(rt, reading, step, cause)

        def changes(write) -> dict[str, Any]:
            out = write.changes()
            if extra:
                out["labels"] = {**out.get("labels", {}), **extra}
            return out

        for write in p.first:
            services[write.color] = await self.swarm.update(services[write.color], **changes(write))
        # The state is durable from here: whatever fails below, the next tick carries on from it.
        rt.state, rt.progress = step.state, step.progress
        if step.transitioned:
            rt.reason = step.reason
        self.telemetry.show(app.name, step.state.active, step.state.phase)
        self._record(app, step, cause)
        confirmed: Routing | None | bool = None
        for route in p.routes:
            ok = await self._route(rt, app, route, step)
            confirmed = route.routing if ok and confirmed is not False else False
        for write in p.then:
            try:
                services[write.color] = await self.swarm.update(services[write.color], **changes(write))
            except SwarmError as err:
                # The state is already on the first color; the next tick writes what is missing here.
                log.warning("service_write_failed", app=app.name, service=services[write.color].name, error=str(err))
        for notice in p.notifications:
            self._notify(notice)
        return services, confirmed

    @staticmethod
    def _alert_labels(rt: Runtime, reading: Reading, step: Step, cause: str) -> dict[str, str]:
        """The seen-list label for a rollback an alert causes; AlertRepeat if that alert rolled back already.

        Checked on the services as read for this very step and written at their versions, so a
        re-sent alert, a restarted controller or a second one racing cannot roll back twice.
        """
        if cause != "alert" or rt.alert_key is None or not rolls_back(step):
            return {}
        labels = {color: svc.labels for color, svc in reading.services.items()}
        if rt.alert_key in alerts_seen(labels):
            raise AlertRepeat(f"{reading.app.name}: this alert has rolled the app back already")
        return alerts_label(labels, rt.alert_key)

    async def _route(self, rt: Runtime, app: App, route: Route, step: Step) -> bool:
        started = time.monotonic()
        try:
            await self.router.apply(app, route.routing)
            applied = time.monotonic()
            confirmed = await self.router.confirm(app, route.routing)
        except RouterError as err:
            rt.route_error = str(err)
            log.error("route_failed", app=app.name, routing=str(route.routing), phase=step.state.phase.value,
                      error=str(err), action="the previous routing stays in effect; retrying next tick")
            return False
        if confirmed:
            rt.route_error = None
        done = time.monotonic()
        # apply: handing the router the routing (nginx: write, nginx -t, reload); confirm: until it reports it.
        timing = {"seconds": round(done - started, 3), "apply_seconds": round(applied - started, 3),
                  "confirm_seconds": round(done - applied, 3)}
        if confirmed:
            self.telemetry.switch_duration.observe(done - started)
            log.info("route_applied", app=app.name, routing=str(route.routing), router=self.router.kind, **timing)
        else:
            log.warning("route_unconfirmed", app=app.name, routing=str(route.routing), router=self.router.kind,
                        **timing, action="the machine waits for the router to report it")
        return confirmed

    def _notify(self, notice: Notify) -> None:
        self.notifier.send({"type": notice.event, **notice.fields}, notice.text)

    @staticmethod
    def _record_webhooks(name: str, step: Step) -> None:
        """Log each webhook gate the step recorded as done for its deploy: it is never sent again for that deploy."""
        old, new = step.previous.deploy, step.state.deploy
        if new is None:
            return
        before = old.webhooks if old is not None and old.id == new.id else ()
        for webhook, outcome in new.webhooks[len(before):]:
            level = log.info if outcome == "passed" else log.warning
            level("webhook_recorded", app=name, deploy=new.id, webhook=webhook, outcome=outcome,
                  phase=step.previous.phase.value, generation=step.state.generation)

    def _record(self, app: App, step: Step, cause: str) -> None:
        """Log a step's transition with stable event names, and count it."""
        old, new, name = step.previous, step.state, app.name
        d = new.deploy
        for intent in step.intents:
            if isinstance(intent, Notify) and intent.event == "retire":
                log.info("color_retired", app=name, color=new.active.other.value, service=intent.fields.get("service"),
                         reason=step.reason)
        self._record_webhooks(name, step)
        if not step.transitioned:
            if step.reason and new.phase.in_flight:
                log.debug("tick", app=name, phase=new.phase.value, reason=step.reason)
            return
        fields: dict[str, Any] = {"app": name, "from": old.phase.value, "to": new.phase.value, "reason": step.reason,
                                  "deploy": d.id if d else None, "operation": d.kind.value if d else None,
                                  "active": new.active.value, "generation": new.generation}
        log.info("phase_changed", **fields)
        if d is None:
            return
        if not old.phase.in_flight and new.phase.in_flight:
            log.info("deploy_started", app=name, deploy=d.id, operation=d.kind.value, image=d.image,
                     source=d.source.value, target=d.target.value, cause=cause, requested_by=d.by or None)
            if d.kind is Operation.ROLLBACK:
                self.telemetry.rollbacks.labels(name, cause).inc()
        if old.phase is Phase.SWITCHING and new.phase in (Phase.CANARY, Phase.VERIFYING, Phase.PROGRESSING,
                                                          Phase.STABLE):
            log.info("switched", app=name, deploy=d.id, to=d.target.value, percent=d.percent, image=d.image,
                     verified=False)
        if new.phase is Phase.CANARY:
            log.info("canary_started", app=name, deploy=d.id, color=d.target.value, weight=d.percent, image=d.image)
        elif old.phase is Phase.CANARY and new.phase is Phase.SWITCHING:
            log.info("canary_passed", app=name, deploy=d.id, color=d.target.value, reason=step.reason)
        elif old.phase is Phase.CANARY and new.phase is Phase.ROLLING_BACK:
            log.error("canary_failed", app=name, deploy=d.id, color=d.target.value, reason=d.reason,
                      action="the canary weight goes back to 0 and the deploy rolls back")
        if new.phase is Phase.ROLLING_BACK:
            self.telemetry.rollbacks.labels(name, cause).inc()
            log.warning("rollback_started", app=name, deploy=d.id, to=new.active.value, reason=d.reason, cause=cause)
        elif new.phase is Phase.ROLLED_BACK:
            log.warning("rolled_back", app=name, deploy=d.id, active=new.active.value, reason=d.reason)
        elif new.phase is Phase.PAUSED:
            log.info("deploy_paused", app=name, deploy=d.id, image=d.image, target=d.target.value, reason=step.reason)
        elif new.phase is Phase.SCALING_UP:
            log.info("deploy_scaling_up", app=name, deploy=d.id, target=d.target.value, reason=step.reason)
        elif new.phase is Phase.FAILED:
            log.error("deploy_failed", app=name, deploy=d.id, active=new.active.value, reason=d.reason)
        elif new.phase is Phase.STABLE and new.result is Result.SUCCEEDED:
            log.info("deploy_stable", app=name, deploy=d.id, operation=d.kind.value, active=new.active.value,
                     image=d.image, failed_checks=d.failures)
        if not new.phase.in_flight and d.kind.gated and new.result is not None:
            self.telemetry.deploys.labels(name, new.result.value).inc()
        if new.history and new.history != old.history:
            r = new.history[-1]
            log.info("release_recorded", app=name, revision=r.revision, deploy=d.id, kind=r.kind.value, image=r.image,
                     result=r.outcome.value, seconds=round(r.ended - r.started, 3), phases=dict(r.phases),
                     requested_by=r.by or None, reason=r.reason)
