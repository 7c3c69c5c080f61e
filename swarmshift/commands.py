"""What every `swarmshift` command shares: exit codes, the daemons' run flags, config errors, logs off stdout, tables."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import click

from swarmshift import logs
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


LOG_OPTIONS = ("log_format", "log_level")


def _run_option(*names: str, env: str, help: str, **kwargs: Any) -> Callable:
    # Values stay text here and the config model checks them, so that a bad one is the same single
    # line (`command line: listen: ... (got 'x')`) as from the file or the environment.
    return click.option(*names, default=None, help=f"{help}  [env: {env}]", **kwargs)


# The flags both daemons' `run` takes, for the settings of `swarmshift.daemon.DaemonSettings`.
# A flag overrides SWARMSHIFT_<KEY>, which overrides the file's key.
RUN_OPTIONS = [
    click.option("--config", "config_path", envvar="SWARMSHIFT_CONFIG", metavar="FILE",
                 help="YAML file with the daemon's settings.  [env: SWARMSHIFT_CONFIG]"),
    _run_option("--listen", env="SWARMSHIFT_LISTEN", metavar="HOST:PORT", help="HTTP address; default 0.0.0.0:8080."),
    _run_option("--selector", env="SWARMSHIFT_SELECTOR", metavar="KEY[=VALUE]",
                help="Act only on services carrying this label; default: every one."),
    _run_option("--log-format", env="SWARMSHIFT_LOG_FORMAT", metavar="auto|json|console",
                help="JSON lines, or a readable console format; default auto (console on a TTY)."),
    _run_option("--log-level", env="SWARMSHIFT_LOG_LEVEL", metavar="debug|info|warning|error", help="Default info."),
    click.option("--dry-run/--no-dry-run", default=None,
                 help="Decide and log, write nothing (the blue-green controller refuses it).  [env: SWARMSHIFT_DRY_RUN]"),
]


def run_options(command: Callable) -> Callable:
    """Give a daemon's `run` the shared flags: --config, --listen, --selector, --log-format, --log-level, --dry-run."""
    for option in reversed(RUN_OPTIONS):
        command = option(command)
    return command


def run_flags(**flags: Any) -> dict[str, Any]:
    """The run flags as `swarmshift.config.load` takes them; `swarmshift --log-format X` counts as a flag too.

    The global log options count only when given on the command line: their environment
    variables are the config's, read by `load` in their place.
    """
    ctx = click.get_current_context(silent=True)
    root = ctx.find_root() if ctx else None
    for key in LOG_OPTIONS:
        if flags.get(key) is None and root is not None and \
                root.get_parameter_source(key) is click.core.ParameterSource.COMMANDLINE:
            flags[key] = root.params[key]
    return flags


def logs_to_stderr() -> None:
    """For commands whose stdout is their output (tables, JSON): logs go to stderr instead."""
    ctx = click.get_current_context(silent=True)
    options = (ctx.find_object(dict) if ctx else None) or {}
    logs.configure(options.get("log_format", "auto"), options.get("log_level", "info"), stream=sys.stderr)


def table(rows: Sequence[Sequence[str]], *, empty: str, notes: Sequence[str] = ()) -> str:
    """Rows (the first is the header) in aligned columns, `empty` when only the header is there, then notes."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]
    if len(rows) == 1:
        lines.append(empty)
    return "\n".join(lines + ([""] + list(notes) if notes else []))
