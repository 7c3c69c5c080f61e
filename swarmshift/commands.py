"""What every `swarmshift` command shares: exit codes, printing config errors, logs kept off stdout, tables."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Sequence

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
