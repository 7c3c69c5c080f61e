"""Both daemons' `run`: the same flags for the same settings, flag over environment over file, one line per bad value.

The daemons are not started: `_serve` is replaced by a stand-in that records the config `run`
resolved, so the tests need no Docker.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from swarmshift import cli as swarmshift_cli
from swarmshift.commands import EXIT_USAGE

SHARED = ["--config", "--listen", "--selector", "--log-format", "--log-level", "--dry-run"]
DAEMONS = ["autoscaler", "bluegreen"]


@pytest.fixture
def served(monkeypatch):
    """The configs `run` would have served with, one per invocation."""
    got: list = []

    async def fake_serve(cfg, *args):
        got.append(cfg)

    monkeypatch.setattr("autoscaler.cli._serve", fake_serve)
    monkeypatch.setattr("bluegreen.cli._serve", fake_serve)
    swarmshift_cli._register()
    return got


def invoke(daemon: str, *args: str, env: dict[str, str] | None = None, before: tuple[str, ...] = ()):
    return CliRunner().invoke(swarmshift_cli.cli, [*before, daemon, "run", *args], env=env or {},
                              prog_name="swarmshift")


def config_file(tmp_path, daemon: str, **keys: str) -> str:
    path = tmp_path / f"{daemon}.yml"
    lines = [f"{key}: {value!r}" for key, value in keys.items()]
    if daemon == "bluegreen":  # a directory the traefik-file router can write, as `run` checks
        lines.append(f"router: {{traefik: {{dynamic_dir: {str(tmp_path)!r}}}}}")
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.mark.parametrize("daemon", DAEMONS)
def test_both_runs_take_the_shared_flags(served, daemon):
    result = invoke(daemon, "--help")
    assert result.exit_code == 0
    for flag in SHARED:
        assert flag in result.output, (daemon, flag)
    for env in ("SWARMSHIFT_CONFIG", "SWARMSHIFT_LISTEN", "SWARMSHIFT_SELECTOR", "SWARMSHIFT_LOG_FORMAT",
                "SWARMSHIFT_LOG_LEVEL", "SWARMSHIFT_DRY_RUN"):
        assert env in result.output.replace("\n", " ").replace("  ", " ") or env in result.output, (daemon, env)


@pytest.mark.parametrize("daemon", DAEMONS)
@pytest.mark.parametrize(("key", "flag", "values"), [
    ("listen", "--listen", ("127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003")),
    ("selector", "--selector", ("stack=file", "stack=env", "stack=flag")),
    ("log_format", "--log-format", ("console", "json", "console")),
    ("log_level", "--log-level", ("debug", "warning", "error")),
])
def test_a_flag_overrides_the_environment_which_overrides_the_file(served, tmp_path, daemon, key, flag, values):
    in_file, in_env, on_line = values
    path = config_file(tmp_path, daemon, **{key: in_file})
    env_name = f"SWARMSHIFT_{key.upper()}"
    assert invoke(daemon, "--config", path).exit_code == 0
    assert invoke(daemon, "--config", path, env={env_name: in_env}).exit_code == 0
    assert invoke(daemon, "--config", path, flag, on_line, env={env_name: in_env}).exit_code == 0
    assert [getattr(cfg, key) for cfg in served] == [in_file, in_env, on_line]


@pytest.mark.parametrize("daemon", DAEMONS)
def test_the_global_log_flag_counts_as_a_flag_and_runs_own_wins(served, tmp_path, daemon):
    path = config_file(tmp_path, daemon)
    env = {"SWARMSHIFT_LOG_FORMAT": "console"}
    assert invoke(daemon, "--config", path, env=env, before=("--log-format", "json")).exit_code == 0
    assert invoke(daemon, "--config", path, "--log-format", "console", before=("--log-format", "json")).exit_code == 0
    assert invoke(daemon, "--config", path, env=env).exit_code == 0  # the group's default is not a flag
    assert [cfg.log_format for cfg in served] == ["json", "console", "console"]


@pytest.mark.parametrize("daemon", DAEMONS)
@pytest.mark.parametrize(("args", "env", "file_keys", "line"), [
    (("--listen", "nowhere"), {}, {}, "command line: listen: expected HOST:PORT such as 0.0.0.0:8080 (got 'nowhere')"),
    ((), {"SWARMSHIFT_LISTEN": "host:99999"}, {},
     "SWARMSHIFT_LISTEN: listen: expected HOST:PORT such as 0.0.0.0:8080 (got 'host:99999')"),
    ((), {}, {"listen": "x"}, "{file}: listen: expected HOST:PORT such as 0.0.0.0:8080 (got 'x')"),
    (("--selector", "a b"), {}, {}, "command line: selector: expected a label KEY or KEY=VALUE (got 'a b')"),
    (("--log-format", "xml"), {}, {}, "command line: log_format: Input should be 'auto', 'json' or 'console' (got 'xml')"),
    ((), {"SWARMSHIFT_LOG_LEVEL": "loud"}, {},
     "SWARMSHIFT_LOG_LEVEL: log_level: expected one of debug, info, warning, error (got 'loud')"),
])
def test_a_bad_value_is_one_line_naming_the_key_and_the_value(served, tmp_path, daemon, args, env, file_keys, line):
    path = config_file(tmp_path, daemon, **file_keys)
    result = invoke(daemon, "--config", path, *args, env=env)
    assert result.exit_code == EXIT_USAGE, result.output
    assert result.stderr.strip().splitlines() == [line.format(file=path)]
    assert served == []


def test_the_autoscaler_dry_run_from_flag_env_or_file_and_no_dry_run_wins(served, tmp_path):
    path = config_file(tmp_path, "autoscaler")
    assert invoke("autoscaler", "--config", path, "--dry-run").exit_code == 0
    assert invoke("autoscaler", "--config", path, env={"SWARMSHIFT_DRY_RUN": "true"}).exit_code == 0
    assert invoke("autoscaler", "--config", path, "--no-dry-run", env={"SWARMSHIFT_DRY_RUN": "true"}).exit_code == 0
    assert invoke("autoscaler", "--config", config_file(tmp_path, "autoscaler", dry_run="yes")).exit_code == 0
    assert [cfg.dry_run for cfg in served] == [True, True, False, True]


@pytest.mark.parametrize(("args", "env", "where"), [
    (("--dry-run",), {}, "command line"),
    ((), {"SWARMSHIFT_DRY_RUN": "true"}, "SWARMSHIFT_DRY_RUN"),
])
def test_the_controller_refuses_a_dry_run_and_says_why(served, tmp_path, args, env, where):
    result = invoke("bluegreen", "--config", config_file(tmp_path, "bluegreen"), *args, env=env)
    assert result.exit_code == EXIT_USAGE
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"{where}: dry_run: the blue-green controller has no dry run: each phase starts from")
    assert line.endswith("(got True)") or line.endswith("(got 'true')")
    assert served == []
    assert invoke("bluegreen", "--config", config_file(tmp_path, "bluegreen"), "--no-dry-run").exit_code == 0


def test_a_missing_config_file_is_one_line(served, tmp_path):
    for daemon in DAEMONS:
        result = invoke(daemon, "--config", str(tmp_path / "missing.yml"))
        assert result.exit_code == EXIT_USAGE
        assert result.stderr.strip().splitlines() == [f"{tmp_path / 'missing.yml'}: cannot read: No such file or directory"]
