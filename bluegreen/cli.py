"""The `swarmshift bluegreen` commands: the controller daemon (run), the label check, and the operator CLI.

The operator commands talk to a running controller over its API (`--controller URL` or
SWARMSHIFT_CONTROLLER; the token from SWARMSHIFT_TOKEN or SWARMSHIFT_TOKEN_FILE). Their exit
codes mean something, so CI can gate on them: 0 success, 1 the operation failed or was refused
(a deploy rolled back, a switch to an unhealthy color), 2 bad usage or config, 3 the
controller could not be reached.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from bluegreen import routers
from bluegreen.app_check import check_app_labels, unmatched_gates
from bluegreen.apps import Color
from bluegreen.client import DEFAULT_URL, Answer, ControllerClient, ControllerUnreachable, token_from_env
from bluegreen.config import BlueGreenConfig
from bluegreen.state import Phase, Result
from bluegreen.webhooks import SecretUnreadable, read_secret
from swarmshift import logs
from swarmshift.commands import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    config_errors,
    run_flags,
    run_options,
    table,
)
from swarmshift.config import ConfigError, load
from swarmshift.daemon import require_manager, serve
from swarmshift.http import TokenFile, load_token
from swarmshift.notify import Notifier
from swarmshift.swarm import DockerUnavailable, Swarm

log = logs.get("bluegreen")

IN_FLIGHT = {phase.value for phase in Phase if phase.in_flight}

config_option = click.option(
    "--config", "config_path", type=click.Path(dir_okay=False), envvar="SWARMSHIFT_CONFIG",
    help="YAML file with the controller's settings.  [env: SWARMSHIFT_CONFIG]",
)
controller_option = click.option(
    "--controller", "controller_url", envvar="SWARMSHIFT_CONTROLLER", default=DEFAULT_URL, show_default=True,
    metavar="URL", help="The controller's API.  [env: SWARMSHIFT_CONTROLLER]",
)


@click.group()
def bluegreen() -> None:
    """Blue-green deployments: deploy to the idle color, switch Traefik or nginx, roll back.

    An app is two services labelled swarmshift.bluegreen.app=<app> and
    swarmshift.bluegreen.color=blue|green. `run` is the controller daemon; status, deploy,
    switch, rollback, promote, abort, undo and history talk to it. Exit codes: 0 success, 1 failed or refused, 2 bad usage or
    config, 3 controller unreachable.
    """


# --- the daemon --------------------------------------------------------------------------------


def load_config(config_path: str | None, **flags: Any) -> BlueGreenConfig:
    """The controller's settings: the file, overridden by SWARMSHIFT_* variables, then by `flags`."""
    return load(BlueGreenConfig, config_path, flags=flags)


def _startup_problems(cfg: BlueGreenConfig) -> tuple[TokenFile | None, list[str]]:
    """What the file cannot say is wrong until the daemon looks: the token and the router's directory."""
    problems: list[str] = []
    token = None
    try:
        token = load_token(cfg.token_file)
    except ConfigError as err:
        problems += err.problems
    for key, path in cfg.webhook_files():
        try:
            read_secret(path)
        except SecretUnreadable as err:
            problems.append(f"config: {key}: {err} (got {path!r})")
    written = routers.directory(cfg.router)
    if written is not None:
        key, directory = written
        if not Path(directory).is_dir() or not os.access(directory, os.W_OK | os.X_OK):
            problems.append(f"config: {key}: not a directory the controller can write (got {directory!r})")
    return token, problems


@bluegreen.command()
@run_options
def run(config_path, listen, selector, log_format, log_level, dry_run) -> None:
    """Run the controller: reconcile every app, serve the API, /healthz, /metrics and /v1/traefik.

    --dry-run is refused (exit 2): each phase of a deploy starts from the state the one before
    wrote on the services, so a controller that writes nothing would never leave the first step.
    """
    with config_errors():
        cfg = load_config(config_path, **run_flags(listen=listen, selector=selector, log_format=log_format,
                                                   log_level=log_level, dry_run=dry_run))
        token, problems = _startup_problems(cfg)
        if problems:
            raise ConfigError(problems)
    logs.configure(cfg.log_format, cfg.log_level)
    asyncio.run(_serve(cfg, token))


async def _serve(cfg: BlueGreenConfig, token: TokenFile | None) -> None:
    from bluegreen.analysis import PrometheusAnalyst
    from bluegreen.api import make_app
    from bluegreen.controller import Controller
    from bluegreen.observe import Checks
    from bluegreen.probe import Prober

    swarm = Swarm(timeout=cfg.docker_timeout)
    router = routers.build(cfg.router, swarm=swarm)
    notifier = Notifier.from_settings(cfg.notify)
    controller = Controller(swarm, router, cfg, prober=Prober(cfg.probe, timeout=cfg.probe_timeout_seconds),
                            checks=Checks.from_config(cfg), notifier=notifier,
                            analyst=PrometheusAnalyst.from_config(cfg))

    async def work(stop: asyncio.Event) -> None:
        if token is None:
            log.warning("operations_disabled", reason="no token_file configured: deploy, switch, rollback and alerts "
                                                      "answer 401")
        await require_manager(swarm)
        log.info("controller_started", router=router.kind, probe_via=cfg.probe.via, listen=cfg.listen,
                 probe_interval=cfg.probe_interval, failure_threshold=cfg.failure_threshold,
                 rollback_deadline=cfg.rollback_deadline)
        starting = asyncio.create_task(controller.start())
        stopping = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if starting.done() and starting.exception() is not None:
                log.error("controller_start_failed", error=str(starting.exception()))
                raise SystemExit(EXIT_FAILED)
            await stopping
        finally:
            log.info("controller_stopping")
            for task in (starting, stopping):
                task.cancel()
            await controller.stop()

    await serve(make_app(controller, token), cfg.listen, notifier, work, close=[router.close, swarm.close])


@bluegreen.command()
@config_option
def check(config_path) -> None:
    """Validate the config and the labels of every app; one line per problem, exit 2 on any."""
    with config_errors():
        cfg = load_config(config_path)
    try:
        services = asyncio.run(_labelled_services(cfg))
    except DockerUnavailable as err:
        click.echo(f"cannot list services: {err}", err=True)
        sys.exit(EXIT_FAILED)
    from bluegreen.apps import app_key, discover, scope_of
    from bluegreen.labels import APP_LABEL

    problems = check_app_labels(services, cfg)
    for line in problems:
        click.echo(line, err=True)
    if problems:
        sys.exit(EXIT_USAGE)
    apps = discover(services, cfg.app_defaults()).apps
    keys = {app_key(s.labels[APP_LABEL], scope_of(s.labels)) for s in services if s.labels.get(APP_LABEL)}
    for line in unmatched_gates(cfg, keys):
        click.echo(f"note: {line}")
    click.echo(f"ok: {len(apps)} app(s) of {len(keys)} labelled, no problems")


async def _labelled_services(cfg: BlueGreenConfig) -> list:
    swarm = Swarm(timeout=cfg.docker_timeout)
    try:
        # Every service: one with stray blue-green labels but no app label is a problem too.
        return [s for s in await swarm.services()
                if any(k.startswith("swarmshift.bluegreen.") for k in s.labels) and cfg.selects(s.labels)]
    finally:
        await swarm.close()


# --- the operator CLI --------------------------------------------------------------------------


def _client(controller_url: str) -> ControllerClient:
    try:
        token = token_from_env()
    except ValueError as err:
        _fail(str(err), EXIT_USAGE)
    return ControllerClient(controller_url, token)


def _fail(message: str, code: int) -> None:
    click.echo(message, err=True)
    sys.exit(code)


def _call(client: ControllerClient, method: str, path: str, body: Any = None) -> Answer:
    """One request; exits with the code its failure means."""
    try:
        answer = client.request(method, path, body if body is not None or method == "GET" else {})
    except ControllerUnreachable as err:
        _fail(str(err), EXIT_UNREACHABLE)
    if answer.ok:
        return answer
    if answer.status == 401:
        _fail(f"the controller refused the token (HTTP 401): set SWARMSHIFT_TOKEN or SWARMSHIFT_TOKEN_FILE\n"
              f"{answer.error()}", EXIT_USAGE)
    if answer.status in (400, 404):
        _fail(answer.error(), EXIT_USAGE)
    _fail(answer.error(), EXIT_FAILED)  # refused (409, 422) or the controller failed (5xx)
    raise AssertionError("unreachable")


def _app_path(app: str) -> str:
    if not app or "/" in app:
        _fail(f"not an app name: {app!r}", EXIT_USAGE)
    return f"/v1/apps/{app}"


@bluegreen.command()
@click.argument("app", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the controller's JSON instead of a table.")
@controller_option
def status(app, as_json, controller_url) -> None:
    """Per app: the active color, both images and replica counts, health, phase and the last result.

    Exits 1 when any app is degraded (its active color is not fully up, the router does not
    serve what the state says, its labels are broken, or its last deploy failed or was rolled
    back), so CI can gate on it.
    """
    client = _client(controller_url)
    body = _call(client, "GET", _app_path(app) if app else "/v1/apps").body
    apps = [body] if app else body["apps"]
    if as_json:
        click.echo(json.dumps(body, indent=2))
    else:
        click.echo(render_status(apps, [] if app else body.get("unattached", [])))
    sys.exit(EXIT_FAILED if any(a.get("health") == "degraded" for a in apps) else EXIT_OK)


def _color_cell(view: dict[str, Any], color: str) -> str:
    c = view["colors"][color]
    weight = f" {c['weight']}%" if c.get("weight") else ""
    return f"{c['image']} {c['running']}/{c['replicas']}{weight}"


def render_status(apps: list[dict[str, Any]], unattached: list[str] = ()) -> str:
    """A table like `argo rollouts list`, then the reasons for each degraded app, then services that name no app."""
    rows = [("APP", "ACTIVE", "PHASE", "HEALTH", "BLUE", "GREEN", "LAST")]
    notes = []
    for view in apps:
        if "colors" not in view:
            phase = "Broken" if view.get("broken") else "-"
            rows.append((view["app"], "-", phase, view["health"], "-", "-", "-"))
        else:
            d = view.get("deploy")
            last = f"{d['operation']} {view['result'] or d['id']}" if d else "-"
            rows.append((view["app"], view["active"], view["phase"], view["health"], _color_cell(view, "blue"),
                         _color_cell(view, "green"), last))
        notes += [f"{view['app']}: {line}" for line in view.get("degraded", [])]
        notes += [f"{view['app']}: {r['reason']}" for r in view.get("refused", [])]
        gate = view.get("gate")
        if gate:
            notes.append(f"{view['app']}: {gate_line(view)}")
        elif view.get("canary"):
            notes.append(f"{view['app']}: {canary_line(view['canary'])}")
        elif view.get("phase") in IN_FLIGHT and view.get("reason"):
            notes.append(f"{view['app']}: {view['phase']}: {view['reason']}")
        hooks = view.get("webhooks") or {}
        if hooks.get("gate") == "post-rollout":
            notes.append(f"{view['app']}: post-rollout webhook(s) pending: {', '.join(hooks['pending'])}")
    notes += [f"(no app) {line}" for line in unattached]
    return table(rows, empty="(no app: label two services swarmshift.bluegreen.app=<app>, …color=blue and …color=green)",
                 notes=notes)


def gate_line(view: dict[str, Any]) -> str:
    """What a Paused deploy waits for, and the commands that end the wait."""
    gate, d = view["gate"], view.get("deploy") or {}
    line = (f"Paused since {gate['paused_since']} before switching to {d.get('target', 'the new color')} "
            f"({d.get('image', '?')}): run `{gate['promote']}` to go on, or `{gate['abort']}` to fail the deploy")
    if gate.get("auto_promotion_at"):
        line += f"; it promotes itself at {gate['auto_promotion_at']}"
    return line


def canary_line(canary: dict[str, Any]) -> str:
    """A canary's weight, how much of its window is left, and what its last analysis read."""
    line = f"Canary: {canary['weight']}% on {canary['color']} since {canary['since']}, {canary['elapsed']:g}s"
    line += f" of {canary['analysis']:g}s" if canary.get("analysis") is not None else ""
    last = canary.get("last")
    if last and last.get("error"):
        line += f"; last analysis: {last['error']}"
    elif last:
        rate = f"{last['error_rate']:.3f}" if last.get("error_rate") is not None else "-"
        line += f"; last analysis: {last['requests']:g} requests, error rate {rate}"
        if last.get("latency") is not None:
            line += f", latency {last['latency'] * 1000:.0f} ms"
    return line


def _interactive() -> bool:
    return sys.stdout.isatty()


def _wait(client: ControllerClient, app: str, deploy_id: str | None, timeout: float | None) -> int:
    """Follow the operation to its end: per-phase lines on a TTY; 0 only if it ended Stable."""
    tty = _interactive()
    started = time.monotonic()
    seen: tuple[str, str] | None = None
    unreachable_since: float | None = None
    while True:
        try:
            answer = client.get(_app_path(app))
            unreachable_since = None
        except ControllerUnreachable as err:
            # A controller restarting (a new task, a kill) picks the deploy up from Swarm: keep following.
            unreachable_since = unreachable_since or time.monotonic()
            if time.monotonic() - unreachable_since > 60:
                _fail(f"{err} (for 60s while waiting)", EXIT_UNREACHABLE)
            time.sleep(1)
            continue
        if not answer.ok:
            _fail(answer.error(), EXIT_FAILED)
        view = answer.body
        d = view.get("deploy") or {}
        if deploy_id is not None and d.get("id") != deploy_id:
            _fail(f"{app}: another operation ({d.get('id')}) replaced {deploy_id}", EXIT_FAILED)
        now = (view.get("phase", "?"), view.get("reason", ""))
        if tty and now != seen and now[0] != (seen or ("", ""))[0]:
            click.echo(f"{time.monotonic() - started:6.1f}s  {now[0]:<11}  {now[1]}")
        if view.get("gate") and now[0] != (seen or ("", ""))[0]:
            click.echo(f"{app}: {gate_line(view)}", err=True)  # a CI log shows what the wait is for
        seen = now
        if view.get("phase") not in IN_FLIGHT and "colors" in view:
            ok = view["phase"] == Phase.STABLE and view.get("result") == Result.SUCCEEDED
            outcome = Phase.STABLE.value if ok else f"{view['phase']} ({view.get('result')})"
            detail = "" if ok else f": {d.get('reason', '')}"
            click.echo(f"{app}: {d.get('operation', 'operation')} {deploy_id or ''} ended {outcome}; "
                       f"traffic on {view['active']}{detail}")
            return EXIT_OK if ok else EXIT_FAILED
        if timeout is not None and time.monotonic() - started > timeout:
            _fail(f"{app}: still {view.get('phase')} after {timeout:g}s", EXIT_FAILED)
        time.sleep(0.5)


def _default_by() -> str:
    return (os.environ.get("USER") or os.environ.get("LOGNAME") or "")[:64]


by_option = click.option("--by", default=_default_by, show_default="$USER", metavar="NAME",
                         help="Who asks, as the history records it.")
wait_option = click.option("--wait", is_flag=True, help="Follow the operation to its end; exit 0 only if it ends Stable.")
timeout_option = click.option("--timeout", type=float, default=None, metavar="SECONDS",
                              help="With --wait: give up (exit 1) after this long.")


def _started(app: str, body: dict[str, Any]) -> str | None:
    d = body.get("deploy") or {}
    click.echo(f"{app}: {d.get('operation', 'operation')} {d.get('id', '')} started: {body.get('phase')}"
               + (f", {d.get('image')} on {d.get('target')}" if d.get("image") else ""))
    return d.get("id")


@bluegreen.command()
@click.argument("app")
@click.option("--image", required=True, help="The image the idle color gets.")
@by_option
@wait_option
@timeout_option
@controller_option
def deploy(app, image, by, wait, timeout, controller_url) -> None:
    """Deploy IMAGE to APP's idle color; with --wait, follow it (per phase on a TTY) to its end."""
    client = _client(controller_url)
    answer = _call(client, "POST", f"{_app_path(app)}/deploy", _with_by({"image": image}, by))
    deploy_id = _started(app, answer.body)
    sys.exit(_wait(client, app, deploy_id, timeout) if wait else EXIT_OK)


@bluegreen.command()
@click.argument("app")
@click.option("--to", type=click.Choice([c.value for c in Color]), default=None, help="Default: the other color.")
@click.option("--force", is_flag=True, help="Skip the health check of the target and the verification.")
@by_option
@wait_option
@timeout_option
@controller_option
def switch(app, to, force, by, wait, timeout, controller_url) -> None:
    """Move APP's traffic to the other color; refused (exit 1) when it is unhealthy, unless --force."""
    client = _client(controller_url)
    body: dict[str, Any] = _with_by({"force": force}, by)
    if to:
        body["to"] = to
    answer = _call(client, "POST", f"{_app_path(app)}/switch", body)
    deploy_id = _started(app, answer.body)
    sys.exit(_wait(client, app, deploy_id, timeout) if wait else EXIT_OK)


def _with_by(body: dict[str, Any], by: str | None) -> dict[str, Any]:
    return {**body, "by": by.strip()} if by and by.strip() else body


@bluegreen.command()
@click.argument("app")
@by_option
@wait_option
@timeout_option
@controller_option
def rollback(app, by, wait, timeout, controller_url) -> None:
    """Return APP to its previous color: abort a deploy in flight, or go back to the last release."""
    client = _client(controller_url)
    answer = _call(client, "POST", f"{_app_path(app)}/rollback", _with_by({}, by))
    deploy_id = _started(app, answer.body)
    if not wait:
        sys.exit(EXIT_OK)
    code = _wait(client, app, deploy_id, timeout)
    with contextlib.suppress(Exception):
        view = client.get(_app_path(app)).body
        # Aborting a deploy ends it RolledBack or Failed by design: that is this command succeeding.
        if view.get("phase") in (Phase.ROLLED_BACK, Phase.FAILED) and (view.get("deploy") or {}).get("id") == deploy_id:
            code = EXIT_OK
    sys.exit(code)


@bluegreen.command()
@click.argument("app")
@wait_option
@timeout_option
@controller_option
def promote(app, wait, timeout, controller_url) -> None:
    """Go on with APP's Paused deploy: switch to the new color and verify it; refused (exit 1) unless Paused."""
    client = _client(controller_url)
    body = _call(client, "POST", f"{_app_path(app)}/promote").body
    d = body.get("deploy") or {}
    click.echo(f"{app}: {d.get('operation', 'deploy')} {d.get('id', '')} promoted: {body.get('phase')}, "
               f"{d.get('image')} on {d.get('target')}")
    sys.exit(_wait(client, app, d.get("id"), timeout) if wait else EXIT_OK)


@bluegreen.command()
@click.argument("app")
@controller_option
def abort(app, controller_url) -> None:
    """Fail APP's deploy before its switch, leaving traffic where it is; refused (exit 1) once traffic moved."""
    client = _client(controller_url)
    body = _call(client, "POST", f"{_app_path(app)}/abort").body
    d = body.get("deploy") or {}
    click.echo(f"{app}: {d.get('operation', 'deploy')} {d.get('id', '')} aborted: {body.get('phase')}; traffic stays "
               f"on {body.get('active')}")
    sys.exit(EXIT_OK)


@bluegreen.command()
@click.argument("app")
@click.option("--to", "revision", type=click.IntRange(min=1), default=None, metavar="REVISION",
              help="The revision to go back to (see `history`). Default: the last successful release whose image "
                   "is not the one running.")
@by_option
@wait_option
@timeout_option
@controller_option
def undo(app, revision, by, wait, timeout, controller_url) -> None:
    """Deploy an earlier release of APP through the same gates as a deploy; refused (exit 1) when there is none."""
    client = _client(controller_url)
    body = _with_by({} if revision is None else {"revision": revision}, by)
    answer = _call(client, "POST", f"{_app_path(app)}/undo", body)
    deploy_id = _started(app, answer.body)
    sys.exit(_wait(client, app, deploy_id, timeout) if wait else EXIT_OK)


@bluegreen.command()
@click.argument("app")
@click.option("--json", "as_json", is_flag=True, help="Print the controller's JSON instead of a table.")
@controller_option
def history(app, as_json, controller_url) -> None:
    """APP's last releases, newest first: revision, kind, image, result, when, how long each phase took, who asked."""
    client = _client(controller_url)
    body = _call(client, "GET", f"{_app_path(app)}/history").body
    if as_json:
        click.echo(json.dumps(body, indent=2))
    else:
        click.echo(render_history(body))
    sys.exit(EXIT_OK)


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{minutes}m{rest:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def render_history(body: dict[str, Any]) -> str:
    """A table like `argo rollouts history`, newest first, then why each failed release failed."""
    rows = [("REV", "KIND", "IMAGE", "RESULT", "STARTED", "TOOK", "PHASES", "BY")]
    notes = []
    for r in body.get("releases", []):
        phases = " ".join(f"{name} {_duration(seconds)}" for name, seconds in (r.get("phases") or {}).items())
        rows.append((str(r["revision"]), r["kind"], r["image"], r["result"], r["started"],
                     _duration(r.get("seconds", 0)), phases or "-", r.get("requested_by") or "-"))
        if r.get("reason"):
            notes.append(f"rev {r['revision']} {r['result']}: {r['reason']}")
    if body.get("problem"):
        notes.append(f"note: {body['problem']}")
    return table(rows, empty=f"(no release recorded yet for {body.get('app', 'the app')})", notes=notes)
