"""The `swarmshift` command: global options, then one command group per daemon."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

import click

from swarmshift import __version__, logs
from swarmshift.config import ConfigError

# Exit codes shared by every command (the blue-green CLI adds 1 for a failed deploy and 3 for
# an unreachable controller).
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3


@contextlib.contextmanager
def config_errors() -> Iterator[None]:
    """Print each config problem on its own line to stderr and exit with code 2."""
    try:
        yield
    except ConfigError as err:
        for line in err.problems:
            click.echo(line, err=True)
        sys.exit(EXIT_USAGE)


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


def logs_to_stderr() -> None:
    """For commands whose stdout is their output (tables, JSON): logs go to stderr instead."""
    ctx = click.get_current_context(silent=True)
    options = (ctx.find_object(dict) if ctx else None) or {}
    logs.configure(options.get("log_format", "auto"), options.get("log_level", "info"), stream=sys.stderr)


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
