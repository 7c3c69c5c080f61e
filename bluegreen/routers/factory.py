"""Picks the router a config names, and says what it needs: the only place that knows every proxy."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from bluegreen.routers.base import Router

if TYPE_CHECKING:
    from bluegreen.apps import App
    from bluegreen.config import RouterSettings
    from swarmshift.swarm import Swarm


def build(settings: RouterSettings, *, swarm: Swarm | None = None) -> Router:
    """The router `settings.kind` names. The nginx router needs `swarm` when it drives an nginx service."""
    t = settings.traefik
    if settings.kind in ("traefik-file", "traefik-http"):
        from bluegreen.routers.traefik_api import TraefikAPI
        from bluegreen.routers.traefik_file import TraefikFileRouter
        from bluegreen.routers.traefik_http import TraefikHTTPRouter

        provider = "file" if settings.kind == "traefik-file" else "http"
        api = TraefikAPI(t.api_url, provider=provider) if t.api_url else None
        common = dict(entrypoints=tuple(t.entrypoints), health_interval=t.health_interval,
                      health_timeout=t.health_timeout, api=api, confirm_timeout=t.confirm_seconds(settings.kind),
                      priority=t.priority)
        if settings.kind == "traefik-file":
            return TraefikFileRouter(t.dynamic_dir, **common)  # type: ignore[arg-type]
        return TraefikHTTPRouter(**common)  # type: ignore[arg-type]
    if settings.kind == "nginx":
        from bluegreen.routers.nginx import NginxRouter
        from bluegreen.routers.traefik_doc import merged_document

        # With nginx, GET /v1/traefik serves the document a Traefik would need for the same routing.
        traefik_document = functools.partial(merged_document, entrypoints=tuple(t.entrypoints),
                                              health_interval=t.health_interval, health_timeout=t.health_timeout,
                                              priority=t.priority)
        return NginxRouter.from_settings(settings.nginx, swarm=swarm, traefik_document=traefik_document)
    raise ValueError(f"unknown router kind {settings.kind!r}")


def directory(settings: RouterSettings) -> tuple[str, str] | None:
    """The config key and the directory the router writes its files to, or None for a router that writes none."""
    if settings.kind == "traefik-file":
        return "router.traefik.dynamic_dir", settings.traefik.dynamic_dir
    if settings.kind == "nginx":
        return "router.nginx.conf_dir", settings.nginx.conf_dir
    return None


def app_problems(settings: RouterSettings, app: App) -> list[str]:
    """What keeps a well-labelled app from being routed by the router `settings.kind` names."""
    if settings.kind == "nginx":
        from bluegreen.routers.nginx import app_problems as nginx_problems

        return nginx_problems(app)
    return []
