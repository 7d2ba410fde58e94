"""Bad input: each case gets its ETSI error type with a useful detail, and changes nothing (both stores)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.broker.conftest import BASE, Broker

EID = "urn:ngsi-ld:Device:good"
GOOD = {"id": EID, "type": "Device", "power": {"type": "Property", "value": 1.0}}
ERR = "https://uri.etsi.org/ngsi-ld/errors/"

# (method, path, params, headers, body (bytes or JSON), status, error type, text expected in detail)
CASES: list[tuple[str, str, dict[str, str], dict[str, str], Any, int, str, str]] = [
    ("POST", "/entities", {}, {}, b'{"id": "urn:x", "type": ', 400, "InvalidRequest", "not valid JSON"),
    ("POST", "/entities", {}, {}, {"id": "not a uri", "type": "Device"}, 400, "BadRequestData", "URI"),
    ("POST", "/entities", {}, {}, {"id": "urn:ngsi-ld:Device:x", "type": "Device", "p": {"value": 1}}, 400,
     "BadRequestData", "has no type"),
    ("POST", "/entities", {}, {}, {"id": "urn:ngsi-ld:Device:x", "type": "Device", "p": 5}, 400,
     "BadRequestData", "normalized"),
    ("POST", "/entities", {}, {}, {"id": "urn:ngsi-ld:Device:x"}, 400, "BadRequestData", "no type"),
    ("POST", "/entities", {}, {}, {"id": "urn:ngsi-ld:Device:x", "type": "Device",
                                   "location": {"type": "GeoProperty", "value": {"type": "Point",
                                                                                 "coordinates": [500, 1]}}},
     400, "BadRequestData", "GeoJSON"),
    ("POST", "/entities", {}, {}, {"id": "urn:ngsi-ld:Device:x", "type": "Device",
                                   "location": {"type": "GeoProperty", "value": {"type": "Polygon",
                                                                                 "coordinates": [[[0, 0], [1, 1]]]}}},
     400, "BadRequestData", "Polygon"),
    ("POST", "/entities", {}, {}, {"id": "urn:ngsi-ld:Device:x", "type": "Device",
                                   "p": {"type": "Property", "value": 1, "observedAt": "yesterday"}},
     400, "BadRequestData", "observedAt"),
    ("POST", "/entities", {}, {}, {"id": "urn:ngsi-ld:Device:x", "type": "Device",
                                   "p": {"type": "Property", "value": 1, "datasetId": "no uri"}},
     400, "BadRequestData", "datasetId"),
    ("POST", "/entities", {}, {}, {"id": "urn:ngsi-ld:Device:x", "type": "Device",
                                   "r": {"type": "Relationship", "object": "not a uri"}},
     400, "BadRequestData", "URI"),
    ("POST", "/entities", {}, {}, {"id": "urn:ngsi-ld:Device:x", "type": "Device",
                                   "bad=name": {"type": "Property", "value": 1}}, 400, "BadRequestData", "4.6.2"),
    ("POST", "/entities", {}, {"Content-Type": "text/plain"}, GOOD, 415, "InvalidRequest", "Content-Type"),
    ("POST", "/entities", {}, {"Content-Type": "application/ld+json"}, GOOD, 400, "BadRequestData", "@context"),
    ("POST", "/entities", {}, {}, {**GOOD, "@context": ["https://example.org/ctx.jsonld"]}, 400,
     "BadRequestData", "Link header"),
    ("POST", "/entities", {}, {"Content-Type": "application/ld+json"},
     {"id": "urn:ngsi-ld:Device:x", "type": "Device", "@context": {"Device": 42}}, 400, "BadRequestData",
     "invalid @context"),
    ("POST", "/entities", {"options": "bogus"}, {}, GOOD, 400, "BadRequestData", "unknown query parameter"),
    ("GET", "/entities", {"type": "Device", "options": "fancy"}, {}, None, 400, "BadRequestData", "unknown option"),
    ("GET", "/entities", {"type": "Device", "q": "power>>1"}, {}, None, 400, "BadRequestData", "q"),
    ("GET", "/entities", {}, {}, None, 400, "BadRequestData", "too wide"),
    ("GET", "/entities", {"type": "Device", "limit": "5000"}, {}, None, 403, "TooManyResults", "limit"),
    ("GET", "/entities", {"type": "Device", "limit": "-1"}, {}, None, 400, "BadRequestData", "limit"),
    ("GET", "/entities", {"type": "Device"}, {"Accept": "text/html"}, None, 406, "InvalidRequest", "Accept"),
    ("GET", "/entities", {"idPattern": "(["}, {}, None, 400, "BadRequestData", "idPattern"),
    ("GET", "/entities", {"type": "Device"}, {"NGSILD-Tenant": "bad tenant!"}, None, 400, "BadRequestData",
     "NGSILD-Tenant"),
    ("GET", f"/entities/{EID}", {"options": "keyValues,concise"}, {}, None, 400, "BadRequestData", "exclude"),
    ("GET", "/entities/not-a-uri", {}, {}, None, 400, "BadRequestData", "URI"),
    ("PATCH", f"/entities/{EID}/attrs", {}, {}, {"power": {"type": "Property"}}, 400, "BadRequestData", "value"),
    ("POST", "/entityOperations/upsert", {}, {}, {"id": EID}, 400, "BadRequestData", "array"),
    ("POST", "/entityOperations/upsert", {"options": "replace,update"}, {}, [GOOD], 400, "BadRequestData",
     "exclude"),
    ("DELETE", "/entities", {}, {}, None, 400, "BadRequestData", "type"),
]


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]} {c[1]} {c[7]}" for c in CASES])
async def test_bad_input_is_rejected_and_changes_nothing(broker: Broker, case: tuple[Any, ...]) -> None:
    method, path, params, headers, body, status, error, detail = case
    assert (await broker.create(GOOD)).status_code == 201
    before = await broker.service.store.get("", EID)
    history_before = await broker.service.store.history_count("")
    content = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    h = {"Content-Type": "application/json"} if content is not None else {}
    h.update(headers)
    r = await broker.client.request(method, BASE + path, params=params, headers=h, content=content)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert problem["type"] == ERR + error
    assert detail.lower() in problem["detail"].lower(), problem["detail"]
    assert await broker.service.store.get("", EID) == before
    assert await broker.service.store.history_count("") == history_before
    r = await broker.client.get(f"{BASE}/entities", params={"type": "Device", "count": "true"})
    assert r.headers["NGSILD-Results-Count"] == "1"


async def test_body_over_the_limit_is_413(broker: Broker) -> None:
    limit = broker.app.state.context.settings.max_body_bytes
    big = {"id": "urn:ngsi-ld:Device:big", "type": "Device", "p": {"type": "Property", "value": "x" * (limit + 1)}}
    r = await broker.client.post(f"{BASE}/entities", content=json.dumps(big),
                                 headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    assert r.json()["type"] == ERR + "BadRequestData" and "limit" in r.json()["detail"]
    assert (await broker.client.get(f"{BASE}/entities/urn:ngsi-ld:Device:big")).status_code == 404


async def test_unreachable_remote_context_is_503(broker: Broker, context_server: str) -> None:
    for url in (f"{context_server}/missing/context.jsonld", f"{context_server}/slow/context.jsonld",
                "http://127.0.0.1:9/nothing.jsonld"):
        r = await broker.client.post(f"{BASE}/entities", content=json.dumps(GOOD), headers={
            "Content-Type": "application/json",
            "Link": f'<{url}>; rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"'})
        assert r.status_code == 503, url
        assert r.json()["type"] == ERR + "LdContextNotAvailable"
        assert url in r.json()["detail"]
    assert (await broker.client.get(f"{BASE}/entities/{EID}")).status_code == 404


async def test_odd_json_shapes_are_400_not_500(broker: Broker) -> None:
    assert (await broker.create(GOOD)).status_code == 201
    odd = [
        ("POST", "/entities", {"id": "urn:ngsi-ld:Device:o", "type": "Device",
                                "p": {"type": ["Property"], "value": 1}}),
        ("POST", "/entities", {"id": "urn:ngsi-ld:Device:o", "type": [["Device"]]}),
        ("POST", "/entities", {"id": ["urn:ngsi-ld:Device:o"], "type": "Device"}),
        ("POST", "/entities", [1, 2, 3]),
        ("PATCH", f"/entities/{EID}", {"power": {"type": {"x": 1}, "value": 3}}),
        ("PATCH", f"/entities/{EID}/attrs/power", {"type": [1], "value": 2}),
        ("POST", "/entityOperations/upsert", [1, "x", None, {"id": 5}]),
        ("POST", "/entityOperations/delete", [{"id": "x"}, 5]),
        ("POST", "/entityOperations/query", {"type": "Query", "entities": "Device"}),
        ("POST", "/jsonldContexts", {"@context": 5}),
    ]
    for method, path, body in odd:
        r = await broker.client.request(method, BASE + path, content=json.dumps(body),
                                        headers={"Content-Type": "application/json"})
        assert 400 <= r.status_code < 500 or r.status_code == 207, (method, path, r.status_code, r.text)
        assert r.status_code == 207 or r.headers["content-type"] == "application/problem+json"
    assert await broker.service.store.get("", EID) is not None
