"""Config loading: file plus environment, secrets from files, one line per problem."""

from __future__ import annotations

import pytest
from pydantic import Field

from swarmshift.config import ConfigError, Duration, Strict, format_duration, load, parse_duration


class Notify(Strict):
    urls: list[str] = []
    timeout: Duration = 5


class Sample(Strict):
    interval: Duration = 15
    prometheus_url: str | None = None
    token: str | None = None
    replicas: int = Field(1, ge=0)
    notify: Notify = Notify()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("5m", 300), ("1h30m", 5400), ("250ms", 0.25), ("90", 90), (12, 12), (1.5, 1.5), ("2d", 172800)],
)
def test_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5x", "m5", "-3", "5m3", True, None, "nan", "1h 30m"])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_format_duration_round_trips():
    for seconds in (0, 15, 90, 300, 3600, 0.5):
        assert parse_duration(format_duration(seconds)) == seconds


def test_file_then_environment(tmp_path):
    path = tmp_path / "c.yml"
    path.write_text("interval: 30s\nnotify:\n  urls: [http://a]\n  timeout: 2s\n")
    cfg = load(Sample, path, env={"SWARMSHIFT_INTERVAL": "5", "SWARMSHIFT_NOTIFY__TIMEOUT": "1m", "OTHER": "x"})
    assert cfg.interval == 5
    assert cfg.notify.urls == ["http://a"] and cfg.notify.timeout == 60


def test_secrets_come_from_files(tmp_path):
    secret = tmp_path / "token"
    secret.write_text("s3cret\n")
    cfg = load(Sample, None, env={"SWARMSHIFT_TOKEN_FILE": str(secret)})
    assert cfg.token == "s3cret"
    with pytest.raises(ConfigError) as err:
        load(Sample, None, env={"SWARMSHIFT_TOKEN_FILE": str(tmp_path / "absent")})
    assert err.value.problems == [f"SWARMSHIFT_TOKEN_FILE: cannot read {tmp_path / 'absent'}: No such file or directory"]


def test_variables_for_other_commands_are_not_errors():
    cfg = load(Sample, None, env={"SWARMSHIFT_CONTROLLER": "http://x", "SWARMSHIFT_LOG_FORMAT": "json"})
    assert cfg == Sample()


def test_every_problem_is_one_line_naming_file_key_and_value(tmp_path):
    path = tmp_path / "bad.yml"
    path.write_text("interval: soon\nreplicas: -1\nnotfy: {}\nnotify:\n  timeout: 1x\n  extra: 1\n")
    with pytest.raises(ConfigError) as err:
        load(Sample, path, env={})
    assert sorted(err.value.problems) == sorted([
        f"{path}: interval: expected a duration such as 30s, 5m or 1h30m (got 'soon')",
        f"{path}: replicas: Input should be greater than or equal to 0 (got -1)",
        f"{path}: notfy: unknown key (got {{}})",
        f"{path}: notify.timeout: expected a duration such as 30s, 5m or 1h30m (got '1x')",
        f"{path}: notify.extra: unknown key (got 1)",
    ])


def test_environment_problems_name_the_variable():
    with pytest.raises(ConfigError) as err:
        load(Sample, None, env={"SWARMSHIFT_REPLICAS": "many"})
    assert err.value.problems == [
        "SWARMSHIFT_REPLICAS: replicas: Input should be a valid integer, unable to parse string as an integer (got 'many')"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("interval: [1\n", "{path}:2:1: invalid YAML: "),
        ("- a\n- b\n", "{path}: <top>: expected a mapping of keys (got list)"),
    ],
)
def test_unreadable_files(tmp_path, text, expected):
    path = tmp_path / "c.yml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load(Sample, path, env={})
    assert err.value.problems[0].startswith(expected.format(path=path))


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError) as err:
        load(Sample, tmp_path / "nope.yml", env={})
    assert err.value.problems == [f"{tmp_path / 'nope.yml'}: cannot read: No such file or directory"]


def test_empty_file_is_the_defaults(tmp_path):
    path = tmp_path / "c.yml"
    path.write_text("# nothing\n")
    assert load(Sample, path, env={}) == Sample()


@pytest.mark.parametrize(
    ("selector", "labels", "selected"),
    [
        (None, {}, True),
        ("team", {"team": "a"}, True),
        ("team=a", {"team": "a"}, True),
        ("team=a", {"team": "b"}, False),
        ("team", {"other": "a"}, False),
        ("team=", {"team": ""}, True),
    ],
)
def test_label_selectors(selector, labels, selected):
    from swarmshift.config import selects

    assert selects(selector, labels) is selected


def test_a_bad_selector_is_a_config_error():
    from autoscaler.config import AutoscalerConfig

    with pytest.raises(ConfigError) as err:
        load(AutoscalerConfig, None, env={"SWARMSHIFT_SELECTOR": "has space"})
    assert err.value.problems == ["SWARMSHIFT_SELECTOR: selector: expected a label KEY or KEY=VALUE (got 'has space')"]
