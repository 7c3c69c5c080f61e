"""The `swarmshift` command: global options, then one command group per daemon."""

from __future__ import annotations

import click

from swarmshift import __version__, logs
from swarmshift.commands import EXIT_USAGE


def _log_option(name: str, env: str, choices: tuple[str, ...], default: str, help: str) -> click.Option:
    return click.option(name, default=default, envvar=env, show_default=True, metavar="|".join(choices),
                        help=f"{help}  [env: {env}]")


LOG_FORMATS = ("auto", "json", "console")
LOG_LEVELS = ("debug", "info", "warning", "error")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="swarmshift")
@_log_option("--log-format", "SWARMSHIFT_LOG_FORMAT", LOG_FORMATS, "auto",
             "JSON lines, or a readable console format (auto: console on a TTY).")
@_log_option("--log-level", "SWARMSHIFT_LOG_LEVEL", LOG_LEVELS, "info", "The lowest level logged.")
@click.pass_context
def cli(ctx: click.Context, log_format: str, log_level: str) -> None:
    """Autoscaling and blue-green deployments for Docker Swarm.

    Run `swarmshift autoscaler --help` or `swarmshift bluegreen --help` for the daemons.
    """
    # Checked here rather than by click.Choice: a bad value is one line naming where it came from
    # and the value, exit 2, as every config problem is.
    for key, value, allowed in (("log_format", log_format, LOG_FORMATS), ("log_level", log_level, LOG_LEVELS)):
        if value not in allowed:
            source = ctx.get_parameter_source(key)
            where = f"SWARMSHIFT_{key.upper()}" if source is click.core.ParameterSource.ENVIRONMENT else "command line"
            click.echo(f"{where}: {key}: expected one of {', '.join(allowed)} (got {value!r})", err=True)
            ctx.exit(EXIT_USAGE)
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
