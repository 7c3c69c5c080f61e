"""The `swarmshift` command: global options, then one command group per daemon."""

from __future__ import annotations

import click

from swarmshift import __version__, logs


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="swarmshift")
@click.option(
    "--log-format",
    type=click.Choice(["auto", "json", "console"]),
    default="auto",
    envvar="SWARMSHIFT_LOG_FORMAT",
    show_default=True,
    help="JSON lines, or a readable console format (auto: console on a TTY).",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    envvar="SWARMSHIFT_LOG_LEVEL",
    show_default=True,
)
@click.pass_context
def cli(ctx: click.Context, log_format: str, log_level: str) -> None:
    """Autoscaling and blue-green deployments for Docker Swarm.

    Run `swarmshift autoscaler --help` or `swarmshift bluegreen --help` for the daemons.
    """
    ctx.obj = {"log_format": log_format, "log_level": log_level}
    logs.configure(log_format, log_level)  # type: ignore[arg-type]


def _register() -> None:
    from autoscaler.cli import autoscaler
    from bluegreen.cli import bluegreen

    cli.add_command(autoscaler)
    cli.add_command(bluegreen)


def main() -> None:
    _register()
    cli(prog_name="swarmshift")


if __name__ == "__main__":
    main()
