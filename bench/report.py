"""Writes one benchmark's results into its own section of docs/benchmarks.md."""

from __future__ import annotations

import platform
import re
import statistics
import subprocess
import time
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
HEADER = """# Benchmarks

Each section is written by the script it names, in one run on the lab (2 cores, 24 GiB).
These machines are noisy: medians and ratios from one run are quoted, never single samples.
"""


def machine() -> str:
    engine = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"],
                            capture_output=True, text=True).stdout.strip()
    return f"{time.strftime('%Y-%m-%d')}, Python {platform.python_version()}, Docker Engine {engine or '?'}"


def update_section(name: str, body: str) -> None:
    """Replace (or append) the section between `<!-- bench:name -->` markers."""
    text = DOC.read_text() if DOC.exists() else HEADER
    block = f"<!-- bench:{name} -->\n{body.strip()}\n<!-- /bench:{name} -->"
    pattern = re.compile(rf"<!-- bench:{re.escape(name)} -->.*?<!-- /bench:{re.escape(name)} -->", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text)


def median(values) -> float:
    return statistics.median(values) if values else float("nan")


def p95(values) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))] if ordered else float("nan")
