"""The autoscaler loop: read Swarm and the metrics source, decide per service, write, record.

Per loop it makes a constant number of requests whatever the number of services: one service
list, one task list, and one query per metric (plus one per custom PromQL policy). The state
that must survive a restart (scale events, last scale time, the alerts that scaled) is in labels
written in the same service update as the replica change; writes carry the version they were
decided on. A failure while evaluating one service is logged once and never stops the others.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from autoscaler.decide import (
    Decision,
    History,
    MetricSample,
    Observation,
    cap_to_capacity,
    decide,
    decide_alert,
)
from autoscaler.events import EventLog
from autoscaler.policy import (
    ALERTS_LABEL,
    STATE_LABEL,
    PolicyFile,
    Resolved,
    capacity_problems,
    resolve,
    utilisation_base,
)
from autoscaler.sources import MetricsSource, SourceDown, Target, Usage
from autoscaler.sources.reach import Reach, coverage, hold_reason, partial_note, reach
from autoscaler.telemetry import Telemetry
from swarmshift import logs
from swarmshift.alerts import Alert, Notification, alert_key, answer_each, append_seen, seen
from swarmshift.availability import Availability
from swarmshift.config import selects
from swarmshift.labels import BLUEGREEN_LOCK_LABEL
from swarmshift.notify import Notifier
from swarmshift.numbers import whole_number
from swarmshift.swarm import (
    DockerUnavailable,
    Edit,
    NotFound,
    Service,
    SwarmAccess,
    SwarmError,
    Task,
    VersionConflict,
)

log = logs.get("autoscaler")

# The blue-green controller puts this label on both colors of an app during a deploy.
LOCK_LABEL = BLUEGREEN_LOCK_LABEL
NO_SUITABLE_NODE = "no suitable node"


def no_series_message(service: str) -> str:
    """What a source that gives no reason of its own (Usage.missing) says about a metric without data."""
    return f"no series for service {service}: is cAdvisor scraped, and are its labels kept?"


# Alerts looked at per notification: each costs Swarm reads and maybe a write, under the request.
MAX_ALERTS = 50


@dataclass
class Evaluation:
    """What one loop found and did for one in-scope service (the rows of `plan`)."""

    service: str
    replicas: int | None
    running: int
    source: str = ""
    decision: Decision | None = None
    skipped: str | None = None  # why the service was not evaluated
    problems: list[str] = field(default_factory=list)
    scaled: bool = False
    unseen_nodes: list[str] = field(default_factory=list)  # nodes with tasks of it that the source cannot see

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "service": self.service,
            "replicas": self.replicas,
            "running": self.running,
            "policy_source": self.source,
            "skipped": self.skipped,
            "problems": self.problems,
            "unseen_nodes": self.unseen_nodes,
        }
        if self.decision is not None:
            out.update(self.decision.as_dict())
            out["desired"] = self.decision.desired
        return out


@dataclass(frozen=True)
class AlertResult:
    status: int
    alert: str
    service: str | None
    outcome: str
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status, "alert": self.alert, "service": self.service,
                "outcome": self.outcome, "detail": self.detail}


class Autoscaler:
    def __init__(
        self,
        swarm: SwarmAccess,
        source: MetricsSource,
        policy_file: PolicyFile | None = None,
        *,
        telemetry: Telemetry | None = None,
        events: EventLog | None = None,
        notifier: Notifier | None = None,
        dry_run: bool = False,
        selector: str | None = None,
        clock: Callable[[], float] = time.time,
        max_alerts: int = MAX_ALERTS,
        allow_partial: bool = False,
    ) -> None:
        self.swarm = swarm
        self.source = source
        self.policy_file = policy_file
        self.telemetry = telemetry or Telemetry()
        self.events = events or EventLog()
        self.notifier = notifier or Notifier([])
        self.dry_run = dry_run
        self.selector = selector
        self.clock = clock
        self._histories: dict[str, History] = {}  # by service id; recommendations live only here
        self._reported: dict[str, tuple[str, ...]] = {}  # problems already logged, per service
        self.max_alerts = max_alerts
        # Per service, and pruned when it leaves scope (_track_scope): memory stays bounded.
        self._locks: dict[str, asyncio.Lock] = {}  # by service id
        self._recovered: set[str] = set()  # service ids whose label events were checked against the log
        self._dry_run_alerts: set[str] = set()  # a dry run writes no seen-list; bounded by _DRY_RUN_ALERTS
        self._in_scope: set[str] = set()  # names
        self._in_scope_ids: set[str] = set()
        self.source_up: bool | None = None
        self.availability = Availability("holding every service, retrying")
        # A node-local source (docker stats) on a multi-node swarm: what it cannot see, as last found.
        self.allow_partial = allow_partial  # docker_stats.allow_partial: scale on the visible tasks only
        self.reach: Reach | None = None
        self._reach_logged: tuple[str, ...] = ()
        self._partial_notes: set[str] = set()  # this loop's notes of services measured on visible tasks only
        self._unseen_tasks: dict[str, frozenset[str]] = {}  # this loop's, per service: tasks standing in for

    @property
    def docker_up(self) -> bool | None:
        return self.availability.up

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """`/readyz`: whether Swarm answered the last loop, and what the docker source cannot see."""
        ready, fields = self.availability.readiness()
        if self.reach is not None and self.reach.partial:
            fields["unseen_nodes"] = list(self.reach.unseen)
        return ready, fields

    # -- one loop ----------------------------------------------------------------------------

    async def evaluate(self, act: bool = True) -> list[Evaluation]:
        """One evaluation of every in-scope service; with act=False nothing is written or logged as scaled."""
        now = self.clock()
        services = await self.swarm.services(label=self.selector)
        tasks = await self.swarm.tasks(desired="running")
        by_service: dict[str, list[Task]] = {}
        for task in tasks:
            by_service.setdefault(task.service_id, []).append(task)

        names: dict[str, str] = {}
        self._partial_notes.clear()
        self._unseen_tasks.clear()
        if getattr(self.source, "local_only", False):  # a source without the attribute sees every node
            self.reach, names = await self._reach(tasks)

        evaluations: dict[str, Evaluation] = {}
        candidates: list[tuple[Service, Resolved, Target]] = []
        ids: set[str] = set()
        for svc in services:
            try:
                resolved = resolve(svc.name, svc.labels, self.policy_file)
                if resolved is None:
                    continue
                ids.add(svc.id)
                running = [t for t in by_service.get(svc.id, []) if t.running]
                ev = Evaluation(svc.name, svc.replicas, len(running), source=resolved.source)
                evaluations[svc.name] = ev
                target = self._target(svc, resolved, running, ev)
                if target is not None and self.reach is not None and self.reach.partial:
                    target = self._visible(svc, target, by_service.get(svc.id, []), names, ev)
            except Exception as err:  # noqa: BLE001 - one service's failure must not stop the others
                ev = evaluations.setdefault(svc.name, Evaluation(svc.name, svc.replicas, 0))
                ids.add(svc.id)
                self._failed(svc.name, "reading its policy", err, ev)
                continue
            if target is not None:
                candidates.append((svc, resolved, target))
        self._track_scope(evaluations, ids)

        usage = await self._collect([target for _, _, target in candidates])
        for svc, resolved, target in candidates:
            ev = evaluations[svc.name]
            if usage is None:
                ev.skipped = "metrics source down: holding"
                continue
            unschedulable = sum(
                1 for t in by_service.get(svc.id, []) if t.state == "pending" and NO_SUITABLE_NODE in (t.error + t.message)
            )
            try:
                await self._decide_and_act(svc, resolved, target, usage.get(svc.name, Usage()), unschedulable, ev,
                                           now, act)
            except DockerUnavailable:
                raise  # every service is held: the loop logs the outage once
            except Exception as err:  # noqa: BLE001 - one service's failure must not stop the others
                self._failed(svc.name, "deciding", err, ev)
            else:
                self._report(svc.name, (), "service_evaluation_failed")
        return list(evaluations.values())

    def _target(self, svc: Service, resolved: Resolved, running: list[Task], ev: Evaluation) -> Target | None:
        """What to measure for the service, or None (with `ev` saying why) when it is skipped."""
        skip = self._skip_reason(svc, resolved)
        if skip:
            ev.skipped, ev.problems = skip
            return None
        assert resolved.policy is not None
        policy = resolved.policy
        targets = policy.targets()
        try:
            query = policy.query_for(svc.name) if "query" in targets else None
        except ValueError as err:
            ev.skipped, ev.problems = "invalid policy", [f"service {svc.name}: {err}"]
            self._report(svc.name, ev.problems, "service_query_invalid")
            return None
        self._report(svc.name, (), "service_query_invalid")
        return Target(
            service=svc.name,
            tasks=frozenset(t.id for t in running),
            cpu_basis=utilisation_base(svc.limits.cpus, svc.reservations.cpus) or 0.0,
            memory_basis=int(utilisation_base(svc.limits.memory, svc.reservations.memory) or 0),
            cpu="cpu" in targets,
            memory="memory" in targets,
            query=query,
        )

    async def _reach(self, tasks: list[Task]) -> tuple[Reach, dict[str, str]]:
        """What the node-local source cannot see (logged once per change: `stats_partial`), and node names by id."""
        local = await self.swarm.local_node_id()
        try:
            nodes = [(n.id, n.name) for n in await self.swarm.nodes()]
        except DockerUnavailable:
            raise
        except SwarmError as err:  # a socket proxy without NODES: the tasks still name their nodes
            log.debug("nodes_unreadable", error=str(err))
            nodes = [(node, node) for node in sorted({t.node_id for t in tasks if t.node_id} | {local})]
        found = reach(nodes, local)
        if found.unseen != self._reach_logged:
            if found.unseen:
                log.warning("stats_partial", source=self.source.name, local_node=dict(nodes).get(local) or local,
                            unseen_nodes=list(found.unseen), allow_partial=self.allow_partial,
                            action="scaling services on visible tasks only" if self.allow_partial else
                            "holding every service with tasks on those nodes as missing data")
            else:
                log.info("stats_partial_cleared", source=self.source.name)
            self._reach_logged = found.unseen
        return found, dict(nodes)

    def _visible(self, svc: Service, target: Target, tasks: list[Task], names: dict[str, str],
                 ev: Evaluation) -> Target | None:
        """The target cut to what a node-local source sees; None (held, `ev` saying why) when tasks run elsewhere."""
        assert self.reach is not None
        placed = {t.id: t.node_id for t in tasks if t.node_id}
        cover = coverage(placed, self.reach.local, names)
        if not cover.partial:
            self._report(svc.name, (), "service_stats_partial")
            return target
        ev.unseen_nodes = list(cover.elsewhere)
        if self.allow_partial:
            note = partial_note(svc.name, cover, len(placed))
            self._partial_notes.add(note)
            ev.problems.append(note)
            self._report(svc.name, [note], "service_stats_partial", level="warning")
            # The unseen tasks count at the visible tasks' mean: a partial sum would under-count.
            self._unseen_tasks[svc.name] = target.tasks - cover.visible
            return target
        reason = hold_reason(svc.name, cover, len(placed))
        ev.skipped, ev.problems = f"missing data: tasks on {', '.join(cover.elsewhere)}: holding", [reason]
        self._report(svc.name, [reason], "service_stats_partial", level="warning")
        return None

    def _failed(self, service: str, doing: str, err: Exception, ev: Evaluation | None) -> None:
        """A bug or a surprise while evaluating one service: hold it, say so once, go on with the others."""
        problem = f"service {service}: evaluation failed while {doing}: {type(err).__name__}: {err}"
        if ev is not None:
            ev.skipped, ev.decision, ev.scaled = "evaluation failed: holding", None, False
            ev.problems.append(problem)
        key = f"{service}#service_evaluation_failed"
        if self._reported.get(key) != (problem,):
            log.error("service_evaluation_failed", service=service, error=problem, action="holding this service",
                      exc_info=err)
        self._reported[key] = (problem,)

    def _skip_reason(self, svc: Service, resolved: Resolved) -> tuple[str, list[str]] | None:
        if not resolved.ok:
            self._report(svc.name, resolved.problems)
            return "invalid policy", list(resolved.problems)
        assert resolved.policy is not None
        problems = capacity_problems(resolved, svc.limits, svc.reservations)
        if svc.replicas is None:
            problems.append(f"service {svc.name}: a global service has no replica count to scale")
        if problems:
            self._report(svc.name, problems)
            return "invalid policy", problems
        self._report(svc.name, ())
        if LOCK_LABEL in svc.labels:
            return f"locked by the blue-green controller ({svc.labels[LOCK_LABEL]})", []
        if svc.updating:
            assert svc.update_status is not None
            return f"Swarm {svc.update_status.state.replace('_', ' ')} in progress", []
        return None

    def _report(self, service: str, problems: Iterable[str], event: str = "service_policy_invalid",
                level: str = "error") -> None:
        """Log a service's problems of one kind once, not every loop, and say when they are gone."""
        problems = tuple(problems)
        key = f"{service}#{event}"
        before = self._reported.get(key, ())
        if problems == before:
            return
        self._reported[key] = problems
        if problems:
            getattr(log, level)(event, service=service, problems=list(problems))
        elif before:
            log.info(f"{event}_cleared", service=service)

    def _track_scope(self, evaluations: dict[str, Evaluation], ids: set[str]) -> None:
        """Forget what is kept per service for those no longer in scope (removed, opted out, out of the selector)."""
        scope = set(evaluations)
        for gone in self._in_scope - scope:
            self.telemetry.forget(gone)
        for key in [k for k in self._reported if k.split("#", 1)[0] not in scope]:
            del self._reported[key]
        for gone_id in self._in_scope_ids - ids:
            self._histories.pop(gone_id, None)
            self._recovered.discard(gone_id)
            lock = self._locks.get(gone_id)
            if lock is not None and not lock.locked():
                del self._locks[gone_id]
        self._in_scope, self._in_scope_ids = scope, ids
        self.telemetry.services.set(len(scope))

    async def _collect(self, targets: list[Target]) -> dict[str, Usage] | None:
        if not targets:
            return {}
        try:
            usage = await self.source.collect(targets)
        except SourceDown as err:
            if self.source_up is not False:  # log once per outage, not every loop
                log.error("metrics_source_down", source=self.source.name, error=str(err), action="holding every service")
            self.source_up = False
            self.telemetry.source_up.set(0)
            return None
        if self.source_up is False:
            log.info("metrics_source_recovered", source=self.source.name)
        self.source_up = True
        self.telemetry.source_up.set(1)
        return usage

    def _observe(self, svc: Service, resolved: Resolved, target: Target, usage: Usage, ev: Evaluation) -> Observation:
        assert resolved.policy is not None
        samples = []
        no_series = []
        for metric, goal in resolved.policy.targets().items():
            if metric == "query":
                if usage.query_error:
                    ev.problems.append(f"service {svc.name}: query: {usage.query_error}")
                samples.append(MetricSample("query", goal, total=usage.query))
                continue
            values = usage.cpu if metric == "cpu" else usage.memory
            unseen = self._unseen_tasks.get(svc.name)
            if unseen and values:
                mean = sum(values.values()) / len(values)
                values = {**dict.fromkeys(unseen, mean), **values}
            missing = tuple(sorted(target.tasks - set(values)))
            if target.tasks and not values:
                no_series.append(metric)
            samples.append(MetricSample(metric, goal, values=tuple(values[t] for t in sorted(values)), missing=missing))
        # Each source knows why it has nothing (the docker source's first CPU sample, say); the
        # default message is about cAdvisor, which only the Prometheus source reads.
        reasons = list(dict.fromkeys(usage.missing.get(m) or no_series_message(svc.name) for m in no_series))
        ev.problems.extend(reasons)
        # The note of a service measured on its visible tasks only has its own event (service_stats_partial).
        self._report(svc.name, [p for p in ev.problems if p not in self._partial_notes], "service_metrics_missing")
        return Observation(svc.name, svc.replicas or 0, tuple(samples), running=len(target.tasks))

    def _history(self, svc: Service, now: float) -> History:
        """Memory's recommendations, with the scale events and last scale time from the service label."""
        saved = self._saved_history(svc)
        known = self._histories.get(svc.id)
        if known is None:
            if saved and svc.id not in self._recovered:
                self._recovered.add(svc.id)
                self._recover_events(svc.name, saved)
            return History.after_restart(svc.replicas or 0, now, saved)
        return replace(known, events=saved.events, last_scale_at=saved.last_scale_at) if saved else known

    def _recover_events(self, service: str, saved: History) -> None:
        """Record scales the state label knows and the event log does not.

        A daemon killed between its replica write and its event record leaves the scale on the
        service but not in the log; the label is the truth, so the next daemon fills the gap.
        """
        logged = [
            (e.get("from"), e.get("to"), _epoch(e.get("at", "")))
            for e in self.events.recent(service=service)
        ]
        for scale in saved.events:
            if any(f == scale.before and t == scale.after and abs(at - scale.at) < 2 for f, t, at in logged):
                continue
            event = {
                "service": service, "from": scale.before, "to": scale.after,
                "direction": "up" if scale.after > scale.before else "down", "reason": "recovered",
                "detail": "read back from the service's state label: the daemon that scaled stopped before logging it",
                "metrics": [], "at": _iso(scale.at), "policy_source": "", "dry_run": False, "recovered": True,
            }
            log.info("scale_event_recovered", **{k: v for k, v in event.items() if k != "at"}, at=event["at"])
            self.events.record(event)

    def _saved_history(self, svc: Service) -> History | None:
        text = svc.labels.get(STATE_LABEL)
        if not text:
            return None
        try:
            return History.decode(text)
        except ValueError as err:
            self._report(svc.name, [str(err)], "service_state_label_invalid")
            return None

    async def _decide_and_act(
        self, svc: Service, resolved: Resolved, target: Target, usage: Usage, unschedulable: int,
        ev: Evaluation, now: float, act: bool,
    ) -> None:
        assert resolved.policy is not None
        policy = resolved.policy
        observation = self._observe(svc, resolved, target, usage, ev)
        history = self._history(svc, now)
        decision = cap_to_capacity(decide(observation, policy, history, now), unschedulable)
        ev.decision = decision
        self._export(decision)
        if decision.reason == "capacity" and act:
            log.warning("scale_capped_by_capacity", service=svc.name, replicas=decision.current,
                        unschedulable=unschedulable, detail=decision.detail)
        if not act:
            return
        if not decision.changed or self.dry_run:
            if decision.changed:  # dry run: say what would happen, change nothing
                self._scaled(decision, resolved.source, dry_run=True)
            else:
                log.debug("service_held", service=svc.name, replicas=decision.current,
                          reason=str(decision.reason), detail=decision.detail)
            self._histories[svc.id] = history.record(replace(decision, desired=decision.current), now, policy)
            return

        def redecide(fresh: Service, fresh_history: History) -> Decision:
            # Another writer (a second daemon, an operator) changed the service since the list:
            # decide again on what is there now, never write the stale decision.
            if fresh.version == svc.version:
                return decision
            fresh_obs = replace(observation, current=fresh.replicas or 0)
            return cap_to_capacity(decide(fresh_obs, policy, fresh_history, now), unschedulable)

        written = await self._write(svc, redecide, now, policy)
        if written is None or isinstance(written, str):
            ev.skipped = "locked or updating since it was read"
            return
        ev.decision, ev.scaled = written
        if ev.scaled:
            self._scaled(ev.decision, resolved.source, dry_run=False)

    async def _write(self, read: Service, decide_on: Callable[[Service, History], Decision], now: float,
                     policy, alert: str | None = None) -> tuple[Decision, bool] | str | None:
        """Write a decision at the version it was made on; re-read and re-decide on a conflict.

        Returns the decision that stands and whether it was written; None when the service was
        found locked or updating (nothing was decided). `read` is the service as the caller saw it.

        `alert` is the key of the alert asking (swarmshift.alerts.alert_key): one the service's
        seen-list holds returns "repeat" and writes nothing, and a scale it makes adds the key to
        the list in the same update, so that no re-send, retry or second daemon scales again.
        """
        tried: list[_Attempt] = []  # the attempts made, for when the write fails

        def attempt(fresh: Service) -> Edit[_Attempt]:
            if alert is not None and seen(fresh.labels.get(ALERTS_LABEL), alert):
                return Edit(_Attempt(None, repeat=True))
            if LOCK_LABEL in fresh.labels or fresh.updating:
                return Edit(_Attempt(None))
            history = self._history(fresh, now)  # the state label, decoded once per attempt
            decision = decide_on(fresh, history)
            if not decision.changed:
                tried.append(_Attempt(decision, history, fresh.id))
                return Edit(replace(tried[-1], history=_held(history, decision, now, policy)))
            new_history = history.record(decision, now, policy)
            tried.append(_Attempt(decision, new_history, fresh.id, written=True))
            labels = {STATE_LABEL: new_history.encode()}
            if alert is not None:
                labels[ALERTS_LABEL] = append_seen(fresh.labels.get(ALERTS_LABEL), alert)
            return Edit(tried[-1], {"replicas": decision.desired, "labels": labels})

        lock = self._locks.setdefault(read.id, asyncio.Lock())
        async with lock:
            try:
                done = await self.swarm.modify(read.id, attempt)
            except DockerUnavailable:
                raise  # no quorum or no engine: nothing was written, and the loop holds every service
            except (VersionConflict, NotFound, SwarmError) as err:
                log.warning("scale_write_failed", service_id=read.id, error=str(err))
                if not tried:
                    return None
                # Nothing was written: the last attempt's decision stands, held.
                last = tried[-1]
                done = replace(last, written=False, history=_held(last.history, last.decision, now, policy))
        if done.repeat:
            return "repeat"
        if done.decision is None:
            return None
        self._histories[done.service_id] = done.history
        return done.decision, done.written

    def _export(self, decision: Decision) -> None:
        t = self.telemetry
        t.current.labels(decision.service).set(decision.current)
        t.desired.labels(decision.service).set(decision.desired)
        for m in decision.metrics:
            t.metric_target.labels(decision.service, m.metric).set(m.target)
            if m.value is not None:
                t.metric_value.labels(decision.service, m.metric).set(m.value)

    def _scaled(self, decision: Decision, policy_source: str, *, dry_run: bool, alert: str | None = None) -> None:
        event = {
            **decision.as_dict(),
            "at": _iso(self.clock()),
            "policy_source": policy_source,
            "dry_run": dry_run,
        }
        if alert:
            event["alert"] = alert
        log.info("service_scaled", **{k: v for k, v in event.items() if k != "at"})
        self.events.record(event)
        if not dry_run:
            self.telemetry.scale_events.labels(decision.service, decision.direction).inc()
        verb = "would scale" if dry_run else "scaled"
        self.notifier.send(
            {"type": "service_scaled", **event},
            f"swarmshift: {verb} {decision.service} from {decision.current} to {decision.desired} "
            f"({decision.reason}: {decision.detail})",
        )

    # -- the loop ----------------------------------------------------------------------------

    async def run(self, interval: float, stop: asyncio.Event) -> None:
        """Evaluate every `interval` seconds until `stop` is set; no failure ends the loop."""
        while not stop.is_set():
            started = time.monotonic()
            try:
                await self.evaluate(act=True)
                self.availability.answered()
            except DockerUnavailable as err:  # NoQuorum and NotManager included: logged once per outage
                self.availability.failed(err)
            except Exception:  # noqa: BLE001 - the loop must survive anything one evaluation does
                log.exception("loop_failed")
            elapsed = time.monotonic() - started
            self.telemetry.loop_duration.observe(elapsed)
            log.debug("loop_done", seconds=round(elapsed, 4), docker_requests=self.swarm.calls,
                      metrics_requests=self.source.requests)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=max(0.0, interval - elapsed))

    # -- alerts ------------------------------------------------------------------------------

    async def on_alerts(self, notification: Notification) -> list[AlertResult]:
        """One result per alert, in order: a bad alert gets its own error, and the good ones still act.

        At most `max_alerts` are looked at; the rest are answered 429 without any Swarm call.
        """
        def subject(alert: Alert) -> dict[str, Any]:
            return {"alert": alert.labels.get("alertname", alert.identity), "service": alert.labels.get("service")}

        def refuse(alert: Alert, status: int, outcome: str, detail: str) -> AlertResult:
            return AlertResult(status, subject(alert)["alert"], subject(alert)["service"], outcome, detail)

        return await answer_each(notification.alerts, self.max_alerts, self._on_alert, refuse, subject, log)

    async def _on_alert(self, alert: Alert) -> AlertResult:
        name = alert.labels.get("alertname", alert.identity)
        action = alert.labels.get("swarmshift_action")
        service_name = alert.labels.get("service")
        if action is None:
            return AlertResult(200, name, service_name, "ignored", "no swarmshift_action label")
        if not alert.firing:
            log.info("alert_resolved", alert=name, service=service_name, action=action)
            return AlertResult(200, name, service_name, "resolved", "resolved alerts are logged, not acted on")
        if action not in ("scale_up", "scale_down"):
            return AlertResult(422, name, service_name, "rejected",
                               f"swarmshift_action must be scale_up or scale_down (got {action!r})")
        if not service_name:
            return AlertResult(422, name, None, "rejected", "the alert has no service label")
        step_text = alert.labels.get("step", "1")
        try:
            step = whole_number(step_text, minimum=1, digits=4)
        except ValueError:
            return AlertResult(422, name, service_name, "rejected", f"step must be a whole number >= 1 (got {step_text!r})")
        try:
            svc = await self.swarm.service(service_name)
        except NotFound:
            return AlertResult(404, name, service_name, "rejected", f"no service named {service_name!r}")
        resolved = resolve(svc.name, svc.labels, self.policy_file) if selects(self.selector, svc.labels) else None
        if resolved is None or not resolved.ok:
            why = "is not opted in to autoscaling" if resolved is None else "has an invalid policy: " + "; ".join(resolved.problems)
            return AlertResult(422, name, svc.name, "rejected", f"service {svc.name} {why}")
        assert resolved.policy is not None
        policy = resolved.policy
        now = self.clock()
        key = alert_key(alert)
        repeat = AlertResult(200, name, svc.name, "repeat",
                             "this alert (same fingerprint and startsAt) has already scaled the service")
        # The cheap check first; the one that counts is in the write, at the version written.
        if seen(svc.labels.get(ALERTS_LABEL), key) or (self.dry_run and key in self._dry_run_alerts):
            return repeat
        if LOCK_LABEL in svc.labels or svc.updating:
            return AlertResult(409, name, svc.name, "held", "the service is being deployed or updated")

        def alert_decision(fresh: Service, history: History) -> Decision:
            return decide_alert(action, step, fresh.replicas or 0, policy, history, now, service=fresh.name)

        if self.dry_run:
            decision = alert_decision(svc, self._history(svc, now))
            if decision.changed:
                self._scaled(decision, resolved.source, dry_run=True, alert=name)
                self._dry_run_alerts.add(key)
                while len(self._dry_run_alerts) > _DRY_RUN_ALERTS:
                    self._dry_run_alerts.pop()
            return AlertResult(200, name, svc.name, "dry_run", decision.detail)
        written = await self._write(svc, alert_decision, now, policy, alert=key)
        if written == "repeat":
            return repeat
        if written is None or isinstance(written, str):
            return AlertResult(409, name, svc.name, "held", "the service is being deployed or updated")
        decision, scaled = written
        if scaled:
            self._export(decision)
            self._scaled(decision, resolved.source, dry_run=False, alert=name)
            return AlertResult(200, name, svc.name, "scaled", decision.detail)
        log.info("alert_held", alert=name, service=svc.name, reason=str(decision.reason), detail=decision.detail)
        return AlertResult(200, name, svc.name, "held", f"{decision.reason}: {decision.detail}")


_DRY_RUN_ALERTS = 1000  # keys a dry-run daemon remembers in memory, where a real one writes a label


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def _epoch(text: str) -> float:
    try:
        return calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ"))
    except ValueError:
        return 0.0


def _held(history: History, decision: Decision, now: float, policy) -> History:
    """The history with `decision` recorded as held: the replicas stay as they are."""
    return history.record(replace(decision, desired=decision.current), now, policy)


@dataclass(frozen=True)
class _Attempt:
    """One read-decide-write attempt of `Autoscaler._write`: what `Swarm.modify` hands back."""

    decision: Decision | None  # None: the service was locked or updating, or the alert a repeat
    history: History | None = None  # what memory keeps for the service after this attempt
    service_id: str = ""
    written: bool = False
    repeat: bool = False  # the alert asking is in the service's seen-list: it has scaled already
