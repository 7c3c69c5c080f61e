"""The `swarmshift autoscaler` commands: run, check and plan."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import click

from autoscaler.config import AutoscalerConfig
from autoscaler.events import EventLog
from autoscaler.loop import Autoscaler, Evaluation
from autoscaler.policy import PolicyFile, capacity_problems, load_policy_file, resolve, scope_warning
from autoscaler.sources import MetricsSource
from autoscaler.sources.dockerstats import DockerStatsSource
from autoscaler.sources.prometheus import PrometheusSource
from autoscaler.telemetry import Telemetry
from swarmshift import logs
from swarmshift.commands import (
    EXIT_FAILED,
    EXIT_USAGE,
    config_errors,
    logs_to_stderr,
    run_flags,
    run_options,
    table,
)
from swarmshift.config import ConfigError, load, read_yaml
from swarmshift.daemon import require_manager, serve
from swarmshift.http import TokenFile, load_token
from swarmshift.notify import Notifier
from swarmshift.prometheus import Prometheus
from swarmshift.swarm import DockerUnavailable, Swarm

log = logs.get("autoscaler")

config_option = click.option(
    "--config", "config_path", type=click.Path(dir_okay=False), envvar="SWARMSHIFT_CONFIG",
    help="YAML file with daemon settings, `defaults:` and `services:` policies.  [env: SWARMSHIFT_CONFIG]",
)
prometheus_option = click.option(
    "--prometheus", "prometheus_url", envvar="SWARMSHIFT_PROMETHEUS_URL", metavar="URL",
    help="Prometheus base URL; without one the Docker stats source is used.  [env: SWARMSHIFT_PROMETHEUS_URL]",
)
source_option = click.option(
    "--source", type=click.Choice(["auto", "prometheus", "docker"]), default=None,
    help="Where CPU and memory use come from (default auto: prometheus when a URL is set).  [env: SWARMSHIFT_SOURCE]",
)


def load_config(config_path: str | None, **flags: Any) -> tuple[AutoscalerConfig, PolicyFile]:
    """The daemon settings and the policy file, or ConfigError with every problem of both."""
    prometheus_url = flags.pop("prometheus_url", None)
    if prometheus_url:
        flags["prometheus"] = {"url": prometheus_url}
    problems: list[str] = []
    cfg = policy_file = None
    try:
        cfg = load(AutoscalerConfig, config_path, flags=flags)
    except ConfigError as err:
        problems += err.problems
    raw = cfg.model_dump() if cfg else _raw_policies(config_path)
    if raw is not None:
        try:
            policy_file = load_policy_file(
                {"defaults": raw.get("defaults") or {}, "services": raw.get("services") or {}}, config_path or "config",
                queries=cfg.queries if cfg else None, allow_label_queries=cfg.allow_label_queries if cfg else False,
            )
        except ConfigError as err:
            problems += [p for p in err.problems if p not in problems]
    if cfg and cfg.source == "prometheus" and not cfg.prometheus.url:
        problems.append("config: source: 'prometheus' needs prometheus.url (or --prometheus) (got None)")
    if problems:
        raise ConfigError(problems)
    assert cfg is not None and policy_file is not None
    return cfg, policy_file


def _raw_policies(config_path: str | None) -> dict[str, Any] | None:
    """The file's policy sections even when its daemon settings are invalid, so `check` reports both."""
    if not config_path:
        return {}
    try:
        data = read_yaml(config_path)
    except ConfigError:
        return None  # already reported by load()
    return {k: v for k, v in data.items() if k in ("defaults", "services") and isinstance(v, dict)}


def make_source(cfg: AutoscalerConfig, swarm: Swarm) -> MetricsSource:
    if cfg.effective_source == "docker":
        return DockerStatsSource(swarm, interval=cfg.interval)
    p = cfg.prometheus
    assert p.url is not None
    return PrometheusSource(
        Prometheus(p.url, timeout=p.timeout),
        window=f"{round(p.rate_window * 1000)}ms",
        service_label=p.service_label,
        task_label=p.task_label,
        cpu_query=p.cpu_query,
        memory_query=p.memory_query,
    )


@click.group()
def autoscaler() -> None:
    """Scale Swarm services from CPU, memory or any PromQL, within each service's policy.

    Services opt in with the deploy label swarmshift.autoscale=true and declare at least
    swarmshift.autoscale.max and a target (cpu, memory or query); see the README for every key.
    """


@autoscaler.command()
@run_options
@prometheus_option
@source_option
@click.option("--interval", type=str, default=None, help="Seconds (or 30s, 1m) between evaluations; default 15.  [env: SWARMSHIFT_INTERVAL]")
@click.option("--events-file", default=None, help="Append scaling events here as JSON lines.  [env: SWARMSHIFT_EVENTS_FILE]")
def run(config_path, listen, selector, log_format, log_level, dry_run, prometheus_url, source, interval,
        events_file) -> None:
    """Run the autoscaler daemon: evaluate every interval, serve /healthz, /metrics, /v1/events, /v1/alerts."""
    with config_errors():
        cfg, policy_file = load_config(config_path, **run_flags(
            listen=listen, selector=selector, log_format=log_format, log_level=log_level, dry_run=dry_run,
            prometheus_url=prometheus_url, source=source, interval=interval, events_file=events_file))
        token = load_token(cfg.token_file)
    logs.configure(cfg.log_format, cfg.log_level)
    asyncio.run(_serve(cfg, policy_file, token))


async def _serve(cfg: AutoscalerConfig, policy_file: PolicyFile, token: TokenFile | None) -> None:
    from autoscaler.api import make_app

    swarm = Swarm(timeout=cfg.docker_timeout)
    notifier = Notifier.from_settings(cfg.notify)
    events = EventLog(cfg.events_kept, cfg.events_file, max_bytes=cfg.events_max_bytes)
    scaler = Autoscaler(
        swarm, make_source(cfg, swarm), policy_file,
        telemetry=Telemetry(), events=events, notifier=notifier,
        dry_run=cfg.dry_run, selector=cfg.selector, max_alerts=cfg.max_alerts_per_request,
        allow_partial=cfg.docker_stats.allow_partial,
    )

    async def close_events() -> None:
        await asyncio.to_thread(events.close)  # the lines still queued reach the file

    async def work(stop: asyncio.Event) -> None:
        if token is None:
            log.warning("alerts_disabled", reason="no token_file configured: POST /v1/alerts answers 401")
        await require_manager(swarm)
        log.info("autoscaler_started", source=scaler.source.name, interval=cfg.interval, listen=cfg.listen,
                 dry_run=cfg.dry_run, events_file=cfg.events_file)
        try:
            await scaler.run(cfg.interval, stop)
        finally:
            log.info("autoscaler_stopping")

    await serve(make_app(scaler, token), cfg.listen, notifier, work, close=[close_events, swarm.close])


async def reach_of(swarm: Swarm) -> list[str]:
    """The nodes a docker stats source on this engine cannot see (names), for `check`."""
    from autoscaler.sources.reach import reach

    local = await swarm.local_node_id()
    return list(reach([(n.id, n.name) for n in await swarm.nodes()], local).unseen)


@autoscaler.command()
@config_option
def check(config_path) -> None:
    """Validate the policy file and the labels of every opted-in service; exit 2 on any problem."""
    logs_to_stderr()
    with config_errors():
        cfg, policy_file = load_config(config_path)
    try:
        services, unseen = asyncio.run(_check_reads(cfg))
    except DockerUnavailable as err:
        click.echo(f"cannot list services: {err}", err=True)
        sys.exit(EXIT_FAILED)
    if unseen:
        click.echo(f"warning: {partial_warning(unseen, cfg.docker_stats.allow_partial)}", err=True)
    problems: list[str] = []
    checked = 0
    for svc in services:
        warning = scope_warning(svc.name, svc.labels, policy_file)
        if warning:
            click.echo(f"warning: {warning}", err=True)
        resolved = resolve(svc.name, svc.labels, policy_file)
        if resolved is None:
            continue
        checked += 1
        problems += list(resolved.problems) + capacity_problems(resolved, svc.limits, svc.reservations)
    for name in policy_file.unmatched(s.name for s in services):
        click.echo(f"warning: {config_path}: services.{name}: matches no service", err=True)
    for line in problems:
        click.echo(line, err=True)
    if problems:
        sys.exit(EXIT_USAGE)
    click.echo(f"ok: {checked} service(s) in scope, no problems")


async def _check_reads(cfg: AutoscalerConfig) -> tuple[list, list[str]]:
    swarm = Swarm(timeout=cfg.docker_timeout)
    try:
        services = await swarm.services(label=cfg.selector)
        return services, (await reach_of(swarm) if cfg.effective_source == "docker" else [])
    finally:
        await swarm.close()


def partial_warning(unseen: list[str], allow_partial: bool) -> str:
    """What `check` and `plan` say when the docker source cannot see every node."""
    then = ("services with tasks there are scaled on their visible tasks only (docker_stats.allow_partial)"
            if allow_partial else "services with tasks there are held as missing data")
    return (f"the docker source sees only this node's containers; it cannot see node(s) {', '.join(unseen)}: "
            f"{then}. Use the prometheus source, with cAdvisor on every node, on a multi-node swarm")


@autoscaler.command()
@config_option
@prometheus_option
@source_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def plan(config_path, prometheus_url, source, as_json) -> None:
    """Run one evaluation and change nothing: per service, metrics against targets and the replicas wanted."""
    logs_to_stderr()
    with config_errors():
        cfg, policy_file = load_config(config_path, prometheus_url=prometheus_url, source=source)
    try:
        evaluations, unseen = asyncio.run(_plan(cfg, policy_file))
    except DockerUnavailable as err:
        click.echo(f"cannot read the swarm: {err}", err=True)
        sys.exit(EXIT_FAILED)
    if unseen:
        click.echo(f"warning: {partial_warning(unseen, cfg.docker_stats.allow_partial)}", err=True)
    if as_json:
        click.echo(json.dumps([e.as_dict() for e in evaluations], indent=2))
    else:
        click.echo(render_plan(evaluations))


async def _plan(cfg: AutoscalerConfig, policy_file: PolicyFile) -> tuple[list[Evaluation], list[str]]:
    """One evaluation, and the nodes the source cannot see (none but with the docker source on several nodes)."""
    swarm = Swarm(timeout=cfg.docker_timeout)
    scaler = Autoscaler(swarm, make_source(cfg, swarm), policy_file, selector=cfg.selector,
                        allow_partial=cfg.docker_stats.allow_partial)
    try:
        if scaler.source.name == "docker":
            # CPU from Docker stats is the counter's increase between two reads.
            await scaler.evaluate(act=False)
            await asyncio.sleep(1.0)
        evaluations = await scaler.evaluate(act=False)
        return evaluations, list(scaler.reach.unseen) if scaler.reach else []
    finally:
        await swarm.close()


def _metric_cell(m: dict[str, Any]) -> str:
    value = "<none>" if m["value"] is None else f"{m['value']:.0f}"
    unit = "%" if m["metric"] in ("cpu", "memory") else ""
    return f"{m['metric']} {value}{unit}/{m['target']:g}{unit}"


def render_plan(evaluations: list[Evaluation]) -> str:
    """A table like `kubectl get hpa`, then the problems found, one per line."""
    rows = [("SERVICE", "REPLICAS", "METRICS", "DESIRED", "REASON", "POLICY")]
    notes = []
    for e in sorted(evaluations, key=lambda e: e.service):
        d = e.as_dict()
        replicas = f"{e.running}/{e.replicas if e.replicas is not None else '-'}"
        if e.decision is None:
            rows.append((e.service, replicas, "-", "-", e.skipped or "-", e.source))
            if e.unseen_nodes:
                notes.append(f"{e.service}: unseen nodes: {', '.join(e.unseen_nodes)}")
        else:
            metrics = ", ".join(_metric_cell(m) for m in d["metrics"]) or "-"
            rows.append((e.service, replicas, metrics, str(e.decision.desired), str(e.decision.reason), e.source))
            notes.append(f"{e.service}: {e.decision.detail}")
        notes += e.problems
    return table(rows, empty="(no service is in scope: label one with swarmshift.autoscale=true)", notes=notes)

