"""The `swarmshift bluegreen` commands."""

from __future__ import annotations

import click


@click.group()
def bluegreen() -> None:
    """Blue-green deployments: deploy to the idle color, switch Traefik or nginx, roll back."""
