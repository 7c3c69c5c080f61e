"""Logging format and the CLI's shape."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from datetime import datetime

from swarmshift import logs


def test_json_lines_with_timestamp_level_and_event():
    out = io.StringIO()
    logs.configure("json", "info", stream=out)
    log = logs.get()
    log.info("service_scaled", service="web", to=3)
    log.debug("hidden")
    log.warning("docker_retry", attempt=2)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["event"] for line in lines] == ["service_scaled", "docker_retry"]
    assert lines[0]["level"] == "info" and lines[0]["service"] == "web" and lines[0]["to"] == 3
    assert datetime.fromisoformat(lines[0]["timestamp"].replace("Z", "+00:00")).tzinfo is not None


def test_console_format_is_readable():
    out = io.StringIO()
    logs.configure("console", "debug", stream=out)
    logs.get().debug("hold", service="web")
    text = out.getvalue()
    assert "hold" in text and "service" in text and "web" in text
    assert not text.lstrip().startswith("{")


def swarmshift(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    exe = os.path.join(os.path.dirname(sys.executable), "swarmshift")
    return subprocess.run([exe, *args], capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=60)


def test_help_for_each_daemon():
    for args in ([], ["autoscaler"], ["bluegreen"]):
        result = swarmshift(*args, "--help")
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("Usage: swarmshift")
    assert "autoscaler" in swarmshift("--help").stdout and "bluegreen" in swarmshift("--help").stdout


def test_unknown_command_is_a_usage_error():
    result = swarmshift("frobnicate")
    assert result.returncode == 2
    assert "No such command" in result.stderr


def test_run_refuses_a_bad_config_file_with_one_line_per_problem(tmp_path):
    path = tmp_path / "policy.yml"
    path.write_text("interval: soon\nlisten: nowhere\ndefaults:\n  cpu: 0\nservices:\n  web:\n    max: ten\n    cooldwn: 5s\n")
    result = swarmshift("autoscaler", "run", "--config", str(path))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"{path}: listen: expected HOST:PORT such as 0.0.0.0:8080 (got 'nowhere')",  # the shared run settings first
        f"{path}: interval: expected a duration such as 30s, 5m or 1h30m (got 'soon')",
        f"{path}: defaults.cpu: must be in (0, 100] (got 0)",
        f"{path}: services.web.max: Input should be a valid integer, unable to parse string as an integer (got 'ten')",
        f"{path}: services.web.cooldwn: unknown key (got '5s')",
    ]


def test_flags_are_validated_like_the_file():
    result = swarmshift("autoscaler", "run", "--interval", "0.5", "--listen", "127.0.0.1:1")
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["command line: interval: must be at least 1s (got '0.5')"]
