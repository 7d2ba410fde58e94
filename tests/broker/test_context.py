"""JSON-LD @context handling (clauses 5.5.7, 6.3.5) and the /jsonldContexts API (clause 5.13)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sleutelbos.broker.context import ContextStore, context_from_link_header
from sleutelbos.broker.errors import BadRequestData, LdContextNotAvailable
from tests.broker.conftest import BASE, Broker


async def test_core_context_is_bundled_and_never_fetched() -> None:
    fetched: list[str] = []

    async def fetcher(url: str, timeout_s: float) -> Any:
        fetched.append(url)
        raise LdContextNotAvailable("offline")

    store = ContextStore(fetcher=fetcher)
    for url in ("https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld",
                "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld",
                ["https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.6.jsonld", {"a": "https://x.org/a"}]):
        ctx = await store.compile(url)
        assert ctx.expand_term("location") == "https://uri.etsi.org/ngsi-ld/location"
        assert ctx.expand_term("unknownThing") == "https://uri.etsi.org/ngsi-ld/default-context/unknownThing"
    assert fetched == []


async def test_remote_context_fetched_once_and_compiled_once(sdm_context_url: str) -> None:
    calls: list[str] = []
    store = ContextStore(fetch_timeout_s=2, allow_private_networks=True)
    original = store._fetcher

    async def counting(url: str, timeout_s: float) -> Any:
        calls.append(url)
        return await original(url, timeout_s)

    store._fetcher = counting
    first = await store.compile(sdm_context_url)
    second = await store.compile(sdm_context_url)
    assert first is second
    assert calls == [sdm_context_url]
    iri = "https://smartdatamodels.org/dataModel.Device/serialNumber"
    assert first.expand_term("serialNumber") == iri and first.compact_iri(iri) == "serialNumber"
    assert first.expand_term("ngsi-ld:foo") == "https://uri.etsi.org/ngsi-ld/foo"
    assert first.expand_term("https://example.org/x") == "https://example.org/x"


async def test_core_terms_cannot_be_redefined() -> None:
    store = ContextStore()
    ctx = await store.compile({"location": "https://example.org/myLocation", "temp": "https://example.org/t"})
    assert ctx.expand_term("location") == "https://uri.etsi.org/ngsi-ld/location"
    assert ctx.expand_term("temp") == "https://example.org/t"


def test_link_header_parsing() -> None:
    rel = 'rel="http://www.w3.org/ns/json-ld#context"'
    assert context_from_link_header(f'<https://a.org/c.jsonld>; {rel}; type="application/ld+json"') == \
        "https://a.org/c.jsonld"
    assert context_from_link_header('<https://a.org/x>; rel="next"') is None
    with pytest.raises(BadRequestData):
        context_from_link_header(f"<https://a.org/1>; {rel}, <https://a.org/2>; {rel}")
    with pytest.raises(BadRequestData):
        context_from_link_header(f"<relative.jsonld>; {rel}")


async def test_jsonld_contexts_api(broker: Broker, sdm_context_url: str) -> None:
    # a remote context used by a request becomes a Cached entry
    entity = {"id": "urn:ngsi-ld:Device:c1", "type": "Device", "@context": sdm_context_url}
    r = await broker.client.post(f"{BASE}/entities", content=json.dumps(entity),
                                 headers={"Content-Type": "application/ld+json"})
    assert r.status_code == 201
    r = await broker.client.get(f"{BASE}/jsonldContexts")
    assert sdm_context_url in r.json()
    r = await broker.client.get(f"{BASE}/jsonldContexts", params={"details": "true", "kind": "Cached"})
    cached = next(e for e in r.json() if e["url"] == sdm_context_url)
    assert cached["kind"] == "Cached" and cached["numberOfHits"] >= 1

    # add a hosted one, use it by its URL, serve it, delete it
    doc = {"@context": {"reading": "https://example.org/meter/reading", "Meter": "https://example.org/Meter"}}
    r = await broker.client.post(f"{BASE}/jsonldContexts", json=doc)
    assert r.status_code == 201
    url = r.headers["Location"]
    local_id = url.rsplit("/", 1)[1]
    r = await broker.client.get(f"{BASE}/jsonldContexts/{local_id}")
    assert r.status_code == 200 and r.json() == doc
    r = await broker.client.post(f"{BASE}/entities", content=json.dumps(
        {"id": "urn:ngsi-ld:Meter:1", "type": "Meter", "reading": {"type": "Property", "value": 3}}),
        headers={"Content-Type": "application/json",
                 "Link": f'<{url}>; rel="http://www.w3.org/ns/json-ld#context"'})
    assert r.status_code == 201, r.text
    stored = await broker.service.store.get("", "urn:ngsi-ld:Meter:1")
    assert stored["type"] == ["https://example.org/Meter"] and "https://example.org/meter/reading" in stored
    r = await broker.client.get(f"{BASE}/jsonldContexts", params={"kind": "Hosted"})
    assert r.json() == [url]

    assert (await broker.client.delete(f"{BASE}/jsonldContexts/{local_id}")).status_code == 204
    assert (await broker.client.get(f"{BASE}/jsonldContexts/{local_id}")).status_code == 404
    r = await broker.client.post(f"{BASE}/jsonldContexts", json={"not": "a context"})
    assert r.status_code == 400
    r = await broker.client.delete(f"{BASE}/jsonldContexts/ngsi-ld-core-context-v1.8")
    assert r.status_code == 400


async def test_hosted_context_survives_restart(database_url: str, tmp_path: Any) -> None:
    import httpx

    from sleutelbos.core.settings import load_settings
    from sleutelbos.stack import StackContext, build_app

    doc = {"@context": {"kwh": "https://example.org/kwh"}}
    locations = []
    for _ in range(2):
        settings = load_settings(data_dir=tmp_path, broker_database_url=database_url)
        app = build_app(StackContext(settings=settings), expose=("broker",))
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            if not locations:
                r = await client.post(f"{BASE}/jsonldContexts", json=doc)
                locations.append(r.headers["Location"])
            else:
                r = await client.get(f"{BASE}/jsonldContexts/{locations[0].rsplit('/', 1)[1]}")
                assert r.status_code == 200 and r.json() == doc


async def test_cache_of_fetched_contexts_is_bounded() -> None:
    async def fetcher(url: str, timeout_s: float) -> Any:
        return {"@context": {"t": f"{url}#t"}}

    store = ContextStore(fetcher=fetcher, max_cached=3)
    for i in range(6):
        ctx = await store.compile(f"https://example.org/{i}.jsonld")
        assert ctx.expand_term("t") == f"https://example.org/{i}.jsonld#t"
    assert len([e for e in store.list("Cached") if e.url.startswith("https://example.org/")]) <= 3
    assert "https://example.org/5.jsonld" in [e.url for e in store.list("Cached")]


async def test_private_network_contexts_refused_by_default(sdm_context_url: str) -> None:
    store = ContextStore(fetch_timeout_s=2)
    for url in (sdm_context_url, "http://10.1.2.3/ctx.jsonld", "http://localhost:9/ctx.jsonld",
                "http://169.254.169.254/latest/meta-data"):
        with pytest.raises(LdContextNotAvailable) as caught:
            await store.compile(url)
        assert "private or local network" in caught.value.detail
    allowed = ContextStore(fetch_timeout_s=2, allow_private_networks=True)
    assert (await allowed.compile(sdm_context_url)).expand_term("serialNumber").startswith("https://smartdatamodels")
