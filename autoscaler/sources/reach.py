"""What a node-local metrics source (docker stats) can see of a multi-node swarm, and what that means per service; pure.

The docker source reads the stats API of the one engine the daemon talks to, so a service with
tasks on other nodes would be measured on part of its tasks only. A partial sum would under-count
a busy service (and scale it down), and the visible tasks' average may not be the service's: such
a service is held as missing data, with a reason naming the nodes, unless the operator opts in
to scaling on the visible tasks (`docker_stats.allow_partial`): the unseen tasks then count at the
visible tasks' mean, and with no visible task the service still holds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Reach:
    """The swarm as a node-local source sees it: this node, and the nodes (by name) it cannot see."""

    local: str  # this engine's node id
    unseen: tuple[str, ...] = ()  # names of the other nodes, sorted

    @property
    def partial(self) -> bool:
        return bool(self.unseen)


def reach(nodes: Iterable[tuple[str, str]], local: str) -> Reach:
    """`nodes` as (id, name) pairs and this engine's node id: the nodes the source cannot see."""
    return Reach(local=local, unseen=tuple(sorted(name or node for node, name in nodes if node != local)))


@dataclass(frozen=True)
class Coverage:
    """One service's tasks as a node-local source sees them."""

    visible: frozenset[str]  # ids of the tasks on this node
    elsewhere: tuple[str, ...] = ()  # names of the other nodes its tasks run on, sorted

    @property
    def partial(self) -> bool:
        return bool(self.elsewhere)


def coverage(task_nodes: Mapping[str, str], local: str, names: Mapping[str, str] | None = None) -> Coverage:
    """A service's tasks (task id -> node id) seen from node `local`; `names` gives node ids their names."""
    names = names or {}
    visible = frozenset(task for task, node in task_nodes.items() if node == local)
    elsewhere = tuple(sorted({names.get(node) or node for node in task_nodes.values() if node != local}))
    return Coverage(visible=visible, elsewhere=elsewhere)


def hold_reason(service: str, cover: Coverage, count: int) -> str:
    """Why a service whose tasks run on other nodes is held: what `plan` shows and the log says."""
    away = count - len(cover.visible)
    return (f"service {service}: {away} of {count} task(s) run on node(s) the docker source cannot see "
            f"({', '.join(cover.elsewhere)}); holding as missing data, since a partial sum would under-count it "
            "(use the prometheus source with cAdvisor on every node, or docker_stats.allow_partial: true)")


def partial_note(service: str, cover: Coverage, count: int) -> str:
    """What `plan` says of a service scaled on its visible tasks only (allow_partial)."""
    return (f"service {service}: measured on {len(cover.visible)} of {count} task(s) only, the others counted at "
            f"their mean; they run on {', '.join(cover.elsewhere)}, which the docker source cannot see "
            "(docker_stats.allow_partial)")
