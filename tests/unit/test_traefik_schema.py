"""Every Traefik document swarmshift writes or serves validates against the official JSON schemas."""

from __future__ import annotations

import asyncio
import copy
import json
import threading
import time

import jsonschema
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from bluegreen.apps import App, Color
from bluegreen.routers import RouterError
from bluegreen.routers.traefik_api import Trials, loaded_routing
from bluegreen.routers.traefik_doc import (
    DEFAULT_PRIORITY,
    MAX_PRIORITY,
    check_document,
    document,
    merge,
    parse_file,
    render,
    routing_of,
    shape,
)
from bluegreen.routers.traefik_file import TraefikFileRouter
from bluegreen.routers.traefik_http import TraefikHTTPRouter
from bluegreen.state import Routing
from tests.conftest import ROOT, shared_file
from tests.support.fuzz import fuzz

WEB = App("web", "web-blue", "web-green", 8000, "Host(`web.example.com`)",
          preview_rule="Host(`preview.web.example.com`)")
API = App("api", "api-v-blue", "api-v-green", 9000, "Host(`api.example.com`) && PathPrefix(`/v2`)",
          health_path="/healthz")


@pytest.fixture(scope="module")
def dynamic_schema():
    schema = json.loads(shared_file("schemas/traefik-v3-file-provider.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def routings() -> list[tuple[str, Routing]]:
    cases = [("stable-blue", Routing.all_to(Color.BLUE)), ("switched-green", Routing.all_to(Color.GREEN))]
    for target in Color:
        cases += [(f"progressive-{target}-{p}", Routing.toward(target, p)) for p in (10, 50, 100)]
    cases.append(("preview-on-active", Routing(blue=100, green=0, preview=Color.BLUE)))
    return cases


@pytest.mark.parametrize("app", [WEB, API], ids=["with-preview", "without-preview"])
@pytest.mark.parametrize(("name", "routing"), routings(), ids=[n for n, _ in routings()])
def test_every_generated_document_validates(dynamic_schema, app, name, routing):
    doc = document(app, routing, entrypoints=("web", "websecure"), health_interval=0.5, health_timeout=0.25)
    dynamic_schema.validate(doc)
    check_document(doc)
    weights = {c["name"]: c["weight"] for c in doc["http"]["services"][app.name]["weighted"]["services"]}
    # Only the colors that take traffic are children: a weight-0 child can make Traefik hang.
    assert weights == {f"{app.name}-{c}": routing.weight(c) for c in Color if routing.weight(c)}
    # The weighted health check needs one on every child, or Traefik refuses the service.
    for color in Color:
        lb = doc["http"]["services"][f"{app.name}-{color}"]["loadBalancer"]
        assert lb["healthCheck"] == {"path": app.health_path, "interval": "500ms", "timeout": "250ms"}
        assert lb["servers"] == [{"url": f"http://{app.service(color)}:{app.port}"}]
    assert ("web-preview" in doc["http"]["routers"]) == (app.preview_rule is not None)


def test_the_http_provider_document_merges_apps_and_validates(dynamic_schema):
    router = TraefikHTTPRouter()

    async def scenario():
        await router.apply(WEB, Routing.toward(Color.GREEN, 50))
        await router.apply(API, Routing.all_to(Color.BLUE))
        with pytest.raises(RouterError, match="not rebuilt"):
            router.document()
        router.mark_ready()
        return router.document()

    doc = asyncio.run(scenario())
    dynamic_schema.validate(doc)
    check_document(doc)
    assert set(doc["http"]["routers"]) == {"web", "web-preview", "api"}
    assert set(doc["http"]["services"]) == {"web", "web-blue", "web-green", "api", "api-blue", "api-green"}
    # The same generator as the file provider: each app's part is exactly its file document.
    alone = document(WEB, Routing.toward(Color.GREEN, 50))
    for section in ("routers", "services"):
        for key, value in alone["http"][section].items():
            assert doc["http"][section][key] == value


def test_the_file_router_serves_its_files_as_one_document(tmp_path, dynamic_schema):
    router = TraefikFileRouter(tmp_path)
    (tmp_path / "operator.yml").write_text("http: {routers: {}}\n")  # not ours: left out

    async def scenario():
        await router.apply(WEB, Routing.all_to(Color.GREEN))
        await router.apply(API, Routing.toward(Color.BLUE, 10))

    asyncio.run(scenario())
    doc = router.merged()
    dynamic_schema.validate(doc)
    assert doc == merge([document(API, Routing.toward(Color.BLUE, 10)), document(WEB, Routing.all_to(Color.GREEN))])


def test_merging_refuses_a_name_two_apps_would_share():
    with pytest.raises(RouterError, match="two apps"):
        merge([document(WEB, Routing.all_to(Color.BLUE)), document(WEB, Routing.all_to(Color.GREEN))])


def _mutations():
    base = document(WEB, Routing.toward(Color.BLUE, 10))  # both colors are weighted children

    def mutate(fn):
        doc = copy.deepcopy(base)
        fn(doc)
        return doc

    services = lambda d: d["http"]["services"]  # noqa: E731
    return {
        "rule that does not parse": mutate(lambda d: d["http"]["routers"]["web"].update(rule="Host(`x`")),
        "a Go template in the rule": mutate(lambda d: d["http"]["routers"]["web"].update(rule="Host(`{{.X}}`)")),
        "unknown matcher": mutate(lambda d: d["http"]["routers"]["web"].update(rule="Hots(`x`)")),
        "dangling router service": mutate(lambda d: d["http"]["routers"]["web"].update(service="nope")),
        "no entrypoints": mutate(lambda d: d["http"]["routers"]["web"].update(entryPoints=[])),
        "weights not adding to 100": mutate(lambda d: services(d)["web"]["weighted"]["services"][0].update(weight=50)),
        "a listed child of weight 0": mutate(lambda d: services(d)["web"]["weighted"]["services"].append(
            {"name": "web-blue", "weight": 0})),
        "negative weight": mutate(lambda d: services(d)["web"]["weighted"]["services"][0].update(weight=-1)),
        "unknown weighted child": mutate(lambda d: services(d)["web"]["weighted"]["services"][1].update(name="x")),
        "child without health check": mutate(lambda d: services(d)["web-green"]["loadBalancer"].pop("healthCheck")),
        "server url without port": mutate(lambda d: services(d)["web-blue"]["loadBalancer"].update(
            servers=[{"url": "http://web-blue"}])),
        "port out of range": mutate(lambda d: services(d)["web-blue"]["loadBalancer"].update(
            servers=[{"url": "http://web-blue:70000"}])),
        "newer loadBalancer key": mutate(lambda d: services(d)["web-blue"].update(failover={})),
        "serversTransports section": mutate(lambda d: d["http"].update(serversTransports={})),
        "no priority (ranked by rule length)": mutate(lambda d: d["http"]["routers"]["web"].pop("priority")),
        "priority 0 (ranked by rule length)": mutate(lambda d: d["http"]["routers"]["web"].update(priority=0)),
        "priority in Traefik's reserved range": mutate(lambda d: d["http"]["routers"]["web"].update(
            priority=2**31 - 1)),
        "priority not a number": mutate(lambda d: d["http"]["routers"]["web"].update(priority="10")),
    }


@pytest.mark.parametrize("name", list(_mutations()))
def test_a_broken_document_is_never_handed_to_traefik(name):
    with pytest.raises(RouterError, match="invalid document"):
        check_document(_mutations()[name])


def test_the_static_config_validates():
    schema = json.loads(shared_file("schemas/traefik-v3.json").read_text())
    static = yaml.safe_load((ROOT / "traefik" / "traefik.yml").read_text())
    jsonschema.Draft7Validator(schema).validate(static)
    assert static["entryPoints"]["web"]["address"] == ":80"
    assert static["providers"]["file"] == {"directory": "/etc/traefik/dynamic", "watch": True}
    # The API, ping and metrics share the internal entrypoint, which the stack does not publish.
    internal = static["entryPoints"]["traefik"]["address"]
    assert internal == ":8080" and static["api"]["insecure"] is True
    assert static["ping"]["entryPoint"] == static["metrics"]["prometheus"]["entryPoint"] == "traefik"


def test_a_reader_polling_the_directory_during_200_switches_never_sees_a_partial_file(tmp_path, dynamic_schema):
    """Traefik reads the directory whenever it changes; it must only ever find whole, valid documents."""
    router = TraefikFileRouter(tmp_path, health_interval=1, health_timeout=0.5)
    asyncio.run(router.apply(WEB, Routing.all_to(Color.BLUE)))
    stop = threading.Event()
    seen: dict[str, int] = {"reads": 0, "blue": 0, "green": 0}
    problems: list[str] = []

    def reader() -> None:
        while not stop.is_set():
            for path in tmp_path.iterdir():
                if path.suffix not in (".yml", ".yaml"):
                    continue  # what Traefik's file provider skips (our temp files end in .tmp)
                try:
                    doc = yaml.safe_load(path.read_text())
                    dynamic_schema.validate(doc)
                    check_document(doc)
                except FileNotFoundError:
                    problems.append(f"{path.name} vanished")
                except Exception as err:  # noqa: BLE001 - any failure to read is the bug we look for
                    problems.append(f"{path.name}: {type(err).__name__}: {err}")
                    continue
                seen["reads"] += 1
                weights = doc["http"]["services"]["web"]["weighted"]["services"]
                seen[weights[0]["name"].rsplit("-", 1)[1]] += 1

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()

    async def switches() -> list[float]:
        durations = []
        for i in range(200):
            started = time.perf_counter()
            await router.apply(WEB, Routing.all_to(Color.GREEN if i % 2 == 0 else Color.BLUE))
            durations.append(time.perf_counter() - started)
            await asyncio.sleep(0.001)  # let the reader in between writes as well as during them
        return durations

    try:
        durations = asyncio.run(switches())
    finally:
        stop.set()
        thread.join(timeout=10)
    assert problems == []
    assert seen["reads"] > 200 and seen["blue"] and seen["green"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["web.yml"]  # no temp file left behind
    durations.sort()
    print(f"\ntraefik-file write+fsync+rename: median {durations[100] * 1000:.2f} ms, "
          f"p95 {durations[190] * 1000:.2f} ms over 200 switches; {seen['reads']} reads")


# --- priorities ----------------------------------------------------------------------------------

LONG = App("grab", "grab-blue", "grab-green", 80, "PathPrefix(`/`) || Host(`x`) && Path(`/" + "a" * 200 + "`)",
           preview_rule="Host(`preview.grab.example.com`)")


def priorities(doc) -> dict[str, int]:
    return {name: router["priority"] for name, router in doc["http"]["routers"].items()}


def test_every_router_carries_a_priority_that_does_not_depend_on_its_rule_length(dynamic_schema):
    doc = merge([document(WEB, Routing.all_to(Color.BLUE)), document(API, Routing.all_to(Color.BLUE)),
                 document(LONG, Routing.all_to(Color.BLUE))])
    dynamic_schema.validate(doc)
    check_document(doc)
    p = DEFAULT_PRIORITY
    # Traefik would rank grab's 230-character catch-all above web and api by length; not with these.
    assert priorities(doc) == {"web": p, "web-preview": p + 1, "api": p, "grab": p, "grab-preview": p + 1}
    assert priorities(document(WEB, Routing.all_to(Color.BLUE), priority=7)) == {"web": 7, "web-preview": 8}


def test_the_configured_priority_reaches_every_router(tmp_path):
    from bluegreen.config import BlueGreenConfig
    from bluegreen.routers import build

    config = BlueGreenConfig.model_validate({"router": {"traefik": {"priority": 500, "dynamic_dir": str(tmp_path)}}})
    for kind in ("traefik-file", "traefik-http", "nginx"):
        router = build(config.router.model_copy(update={"kind": kind}))
        if kind == "nginx":
            doc = router.traefik_document([(WEB, Routing.all_to(Color.BLUE))])
        else:
            doc = router.app_document(WEB, Routing.all_to(Color.BLUE))
        assert priorities(doc) == {"web": 500, "web-preview": 501}, kind
    assert BlueGreenConfig().router.traefik.priority == DEFAULT_PRIORITY


class JudgingAPI:
    """Traefik's API as far as a trial needs it: it records the document it judged, and accepts it."""

    def __init__(self) -> None:
        self.judged: list[dict] = []

    async def judge(self, doc, within: float) -> None:
        self.judged.append(doc)


def test_trial_routers_outrank_the_live_ones(dynamic_schema):
    router = TraefikHTTPRouter(priority=100)
    api = JudgingAPI()
    trials = Trials(api, within=1)  # type: ignore[arg-type]
    published: list[dict] = []

    async def publish(doc) -> None:
        published.append(doc)

    async def withdraw() -> None:
        pass

    asyncio.run(trials.run(WEB, Routing.all_to(Color.BLUE), router.app_document, publish, withdraw))
    [trial] = api.judged
    assert published == [trial]
    dynamic_schema.validate(trial)
    # Narrowed by a header only the controller sends, the trial wins exactly the controller's own
    # requests: above the live main (100) and preview (101) routers.
    assert priorities(trial) == {"web-trial": 102, "web-trial-preview": 103}
    assert all("X-Swarmshift-Trial" in r["rule"] for r in trial["http"]["routers"].values())


def test_documents_with_priorities_read_back():
    routing = Routing.toward(Color.GREEN, 10)
    doc = document(WEB, routing, priority=42)
    assert routing_of(doc, "web") == routing
    assert parse_file(render(doc, routing).decode(), "web") == routing
    # Traefik's API answers with the priority among the router's fields.
    live = doc["http"]["routers"]["web-preview"]
    preview = {**live, "service": f"{live['service']}@file", "status": "enabled"}
    service = {**doc["http"]["services"]["web"], "status": "enabled"}
    assert loaded_routing("web", service, preview) == routing
    # A new priority is a new shape: Traefik is asked to try it before it goes live.
    assert shape(doc) == shape(document(WEB, Routing.toward(Color.GREEN, 50), priority=42))
    assert shape(doc) != shape(document(WEB, routing, priority=43))


@fuzz
@given(st.integers(1, MAX_PRIORITY), st.booleans(), st.sampled_from([r for _, r in routings()]),
       st.sampled_from(["Host(`a.example.com`)", "PathPrefix(`/`) || Host(`x`) && Path(`/long`)",
                        "HostRegexp(`^.+$`) && !Header(`X`, `1`)"]))
def test_fuzz_documents_with_any_priority_validate(dynamic_schema, priority, preview, routing, rule):
    app = App("fz", "fz-blue", "fz-green", 8000, rule, preview_rule="Host(`p.example.com`)" if preview else None)
    router = TraefikHTTPRouter(priority=priority)
    for trial in (False, True):
        doc = router.app_document(app, routing, trial=trial)
        dynamic_schema.validate(doc)
        check_document(doc)
