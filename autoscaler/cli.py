"""The `swarmshift autoscaler` commands."""

from __future__ import annotations

import click


@click.group()
def autoscaler() -> None:
    """Scale Swarm services from CPU, memory or any PromQL, within each service's policy."""
