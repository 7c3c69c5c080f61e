"""Whether the Swarm API answers, as one daemon last found it, with each change of condition logged once.

Both daemons hold everything while Swarm does not answer and retry at their own pace; this is
where they say so. The conditions are `ok`, `docker_unavailable` (the engine does not answer),
`no_quorum` (the managers have no leader) and `not_manager` (the engine was demoted). Entering
one logs its event once (`docker_unavailable`, `swarm_no_quorum`, `swarm_not_manager`), leaving
it logs its end (`docker_recovered`, `swarm_quorum_restored`, `swarm_manager_restored`), so a
quorum loss of an hour is two log lines, whatever the number of loops or apps. `/readyz` and the
status views read `view()`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from swarmshift import logs
from swarmshift.swarm import DockerUnavailable, NoQuorum, NotManager

log = logs.get("swarmshift.availability")

OK = "ok"
DOCKER_UNAVAILABLE = "docker_unavailable"
NO_QUORUM = "no_quorum"
NOT_MANAGER = "not_manager"

_STARTS = {DOCKER_UNAVAILABLE: "docker_unavailable", NO_QUORUM: "swarm_no_quorum", NOT_MANAGER: "swarm_not_manager"}
_ENDS = {DOCKER_UNAVAILABLE: "docker_recovered", NO_QUORUM: "swarm_quorum_restored",
         NOT_MANAGER: "swarm_manager_restored"}


def condition_of(err: DockerUnavailable) -> str:
    if isinstance(err, NoQuorum):
        return NO_QUORUM
    if isinstance(err, NotManager):
        return NOT_MANAGER
    return DOCKER_UNAVAILABLE


class Availability:
    """One daemon's view of Swarm: `failed(err)` when a call found it away, `answered()` when one went through."""

    def __init__(self, action: str, clock: Callable[[], float] = time.time) -> None:
        self.action = action  # what the daemon does meanwhile, in the log line: "holding every service, retrying"
        self.clock = clock
        self.condition: str | None = None  # None: no call has been made yet
        self.error = ""
        self.since: float | None = None  # when the present condition began (clock seconds)

    @property
    def up(self) -> bool | None:
        return None if self.condition is None else self.condition == OK

    def failed(self, err: DockerUnavailable, **fields: Any) -> None:
        condition = condition_of(err)
        self.error = str(err)
        if condition == self.condition:
            return
        if self.condition not in (None, OK):
            self._ended(**fields)
        self.condition, self.since = condition, self.clock()
        log.error(_STARTS[condition], error=self.error, action=self.action, **fields)

    def answered(self) -> None:
        if self.condition not in (None, OK):
            self._ended()
        if self.condition != OK:
            self.condition, self.since, self.error = OK, self.clock(), ""

    def _ended(self, **fields: Any) -> None:
        assert self.condition is not None and self.since is not None
        log.info(_ENDS[self.condition], seconds=round(self.clock() - self.since, 1), **fields)

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """For `/readyz`: ready once a Swarm call has gone through, and while they do."""
        return self.condition == OK, self.view()

    def view(self) -> dict[str, Any]:
        """What `/readyz` and the status views show: the condition, since when, and the error that said so."""
        out: dict[str, Any] = {"swarm": self.condition or "unknown"}
        if self.condition not in (None, OK):
            out["error"] = self.error
            out["since"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.since or 0))
        return out
