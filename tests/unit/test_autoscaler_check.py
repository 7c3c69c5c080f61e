"""`swarmshift autoscaler check` refuses what could never work: min 0, free-form PromQL in labels, bad templates."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

import autoscaler.cli as cli
from tests.support.memory import MemorySwarm

MIN_0 = ("must be at least 1: a service scaled to 0 has no tasks to measure, so it would never come back")


def check(tmp_path, monkeypatch, config: str, **labels: str):
    swarm = MemorySwarm()
    swarm.add("web", image="web:1", labels={"swarmshift.autoscale": "true", "swarmshift.autoscale.max": "3",
                                            **{f"swarmshift.autoscale.{k}": v for k, v in labels.items()}})
    monkeypatch.setattr(cli, "Swarm", lambda *a, **k: swarm)
    path = tmp_path / "autoscaler.yml"
    path.write_text(config)
    return CliRunner().invoke(cli.autoscaler, ["check", "--config", str(path)])


@pytest.mark.parametrize(("config", "labels", "expected"), [
    pytest.param("", {"cpu": "50", "min": "0"},
                 f"service web: label swarmshift.autoscale.min: {MIN_0} (got '0')", id="label-min-0"),
    pytest.param("defaults: {min: 0}\n", {"cpu": "50"}, f": defaults.min: {MIN_0} (got 0)", id="file-min-0"),
    pytest.param("queries: {rps: 'sum(x)'}\n", {"query": "sum(up)", "query.target": "1"},
                 "free-form PromQL in a label is refused unless the config sets allow_label_queries: true",
                 id="free-form-label-query"),
    pytest.param("queries: {'r p s': 'sum(x)'}\n", {"cpu": "50"}, "queries: 'r p s': a query name is",
                 id="bad-template-name"),
])
def test_check_refuses(tmp_path, monkeypatch, config, labels, expected):
    result = check(tmp_path, monkeypatch, config, **labels)
    assert result.exit_code == 2, result.output
    assert expected in result.output


def test_check_accepts_a_named_query(tmp_path, monkeypatch):
    result = check(tmp_path, monkeypatch, "queries: {rps: 'sum(x{service=\"{{service}}\"})'}\n",
                   query="rps", **{"query.target": "1"})
    assert result.exit_code == 0, result.output
    assert "ok: 1 service(s) in scope" in result.output
