"""One tick of an app: read, measure, advance and execute, again on a version conflict, chained while a step asks.

A version conflict means another writer changed a service since the read: nothing of the step
ran, so the tick reads again and advances again. A step that moved traffic is followed at once,
on what its own writes returned, without reading Docker again in between.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from bluegreen.execute import Executor
from bluegreen.observe import EarlyProbe, Observer, Reading
from bluegreen.phases import Observation, Route, Settings, Step, advance, needs
from bluegreen.runtime import Runtime
from bluegreen.state import Phase
from swarmshift import logs
from swarmshift.swarm import VersionConflict

log = logs.get("bluegreen")

ATTEMPTS = 3  # reads and re-advances after version conflicts, before a tick gives up until the next
_CHAIN = 2  # advances within one tick after a step's own writes: switch confirmed -> Verifying -> round 1


class Ticker:
    """Runs an app's ticks (the caller holds the app's lock)."""

    def __init__(self, observer: Observer, executor: Executor, settings: Settings,
                 clock: Callable[[], float] = time.time,
                 settings_for: Callable[[str], Settings] | None = None) -> None:
        self.observer = observer
        self.executor = executor
        self.settings = settings
        self.clock = clock
        # Each app's own release gates (smoke requests, auto_promotion): BlueGreenConfig.settings(key).
        self.settings_for = settings_for or (lambda app: settings)

    async def run(self, rt: Runtime, alert: str | None = None) -> list[Step]:
        """Read, measure, advance and execute (hold the app's lock around it); the steps it executed."""
        done: list[Step] = []
        for attempt in range(1, ATTEMPTS + 1):
            early = self.observer.early_probe(rt)
            reads = asyncio.ensure_future(self.observer.read(rt))
            try:
                if attempt == 1 and await self._settled_by_probe(rt, early, alert):
                    try:
                        assert rt.reading is not None
                        await self._advance(rt, rt.reading, alert, done, early, checks=False)
                        return done
                    except VersionConflict as err:  # another writer: decide again on a full read
                        log.info("version_conflict", app=rt.name, attempt=attempt, error=str(err))
                reading = await reads
                if reading is None:
                    return done
                await self._advance(rt, reading, alert if not done else None, done, early)
                return done
            except VersionConflict as err:
                log.info("version_conflict", app=rt.name, attempt=attempt, error=str(err))
            finally:
                for task in (early.task if early else None, reads):
                    if task is not None and not task.done():
                        task.cancel()
        log.warning("tick_abandoned", app=rt.name, reason=f"{ATTEMPTS} version conflicts in a row")
        return done

    async def _settled_by_probe(self, rt: Runtime, early: EarlyProbe | None, alert: str | None) -> bool:
        """Whether this tick's probe alone settles a rollback, so that it can act before the reads are back.

        In a verification window, a failed round that exceeds failure_threshold rolls back
        whatever else the tick finds; the services are then written at the versions this process
        last read and wrote, and a version conflict sends the tick back to a full read. This takes
        the time of the reads off the rollback deadline.
        """
        state, last = rt.state, rt.reading
        if early is None or alert is not None or state is None or last is None or state.deploy is None:
            return False
        if state.phase not in (Phase.VERIFYING, Phase.PROGRESSING):
            return False
        if last.loaded.state.generation != state.generation or early.key[0] != state.generation:
            return False
        probe = await early.task
        return not probe.ok and state.deploy.failures + 1 > self.settings.failure_threshold

    async def _advance(self, rt: Runtime, reading: Reading, alert: str | None, done: list[Step],
                       early: EarlyProbe | None = None, checks: bool = True) -> None:
        """Advance and execute; then again at once, on what the writes returned, while a step asks for it.

        A confirmed switch opens the verification window, and the window's first round is taken,
        without reading Docker again in between: the time from traffic moving to the first
        verdict on it is the part of the rollback deadline the controller itself adds.
        """
        for _ in range(1 + _CHAIN):
            if early is None:  # an early probe began when the tick did, which the loop set as observed_at
                rt.observed_at = time.monotonic()
            state = reading.loaded.state
            settings = self.settings_for(rt.name)
            want = needs(state, settings)
            verify = state.phase in (Phase.PROGRESSING, Phase.VERIFYING)
            probe, results, smoke, canary, hooks = await asyncio.gather(
                self.observer.probe(rt, reading, want.probe, verify, early),
                self.observer.checks(reading.app, want.checks if checks else None),
                self.observer.smoke(rt, reading, want.smoke),
                self.observer.canary(rt, reading, want.canary),
                self.observer.call_webhooks(rt, reading, want.webhooks))
            early, checks = None, True
            obs = Observation(now=self.clock(), colors=reading.colors, routed=reading.routed, probe=probe,
                              checks=results, alert=alert, smoke=smoke, canary=canary, webhooks=hooks,
                              router_up=reading.router_up)
            restarted = rt.progress.started is None and self.settings.on_restart == "rollback"
            step = advance(rt.name, state, rt.progress, obs, settings)
            services, confirmed = await self.executor.execute(rt, reading, step, cause=_cause(step, alert, restarted))
            done.append(step)
            alert = None  # it has acted, or been weighed, once
            following = None if confirmed is False else self.observer.after_writes(reading, services,
                                                                         confirmed or reading.routed)
            rt.reading = following
            if following is not None:
                rt.routed = following.routed
            if following is None or not hurry(step):
                return
            reading = following


def hurry(step: Step) -> bool:
    """Whether the next tick should come at once: after routing moved, or on entering a gate or a verification window."""
    if any(isinstance(i, Route) for i in step.intents):
        return True
    return step.transitioned and step.state.phase in (Phase.VERIFYING, Phase.PROGRESSING, Phase.SMOKE_TESTS,
                                                      Phase.CANARY, Phase.PRE_ROLLOUT, Phase.CONFIRM_PROMOTION)


def _cause(step: Step, alert: str | None, restarted: bool) -> str:
    """Why a tick changed where traffic goes: the `reason` label of the rollbacks metric."""
    if alert is not None:
        return "alert"
    if step.previous.phase is Phase.SWITCHING:
        return "router"
    if restarted and step.previous.phase.moves_traffic:
        return "restart"
    return "checks"
