"""Batch operations (clause 5.6.7-5.6.10, 5.6.20) with 207 partial results, and query (5.7.2) with every parameter,
on both stores."""

from __future__ import annotations

import re
from typing import Any

from tests.broker.conftest import BASE, Broker


def meter(n: int, power: float, *, kind: str = "Device", **extra: Any) -> dict[str, Any]:
    return {"id": f"urn:ngsi-ld:{kind}:m{n:03d}", "type": kind,
            "power": {"type": "Property", "value": power, "unitCode": "KWT", "observedAt": "2026-11-28T12:00:00Z"},
            "serialNumber": {"type": "Property", "value": f"SN{n:03d}"},
            "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [5.0 + n / 100, 52.0]}},
            **extra}


async def ids_of(broker: Broker, **params: Any) -> list[str]:
    r = await broker.client.get(f"{BASE}/entities", params=params)
    assert r.status_code == 200, r.text
    return [e["id"] for e in r.json()]


async def test_batch_create_partial_207(broker: Broker) -> None:
    await broker.create(meter(1, 1.0))
    r = await broker.client.post(f"{BASE}/entityOperations/create", json=[
        meter(1, 9.0), meter(2, 2.0), {"id": "not a uri", "type": "Device"}, meter(3, 3.0),
        {"id": "urn:ngsi-ld:Device:x", "type": "Device", "bad": {"value": 1}}])
    assert r.status_code == 207
    body = r.json()
    assert body["success"] == ["urn:ngsi-ld:Device:m002", "urn:ngsi-ld:Device:m003"]
    errors = {e["entityId"]: e["error"]["type"].rsplit("/", 1)[1] for e in body["errors"]}
    assert errors == {"urn:ngsi-ld:Device:m001": "AlreadyExists", "not a uri": "BadRequestData",
                      "urn:ngsi-ld:Device:x": "BadRequestData"}
    assert await ids_of(broker, type="Device") == [f"urn:ngsi-ld:Device:m00{i}" for i in (1, 2, 3)]
    got = (await broker.client.get(f"{BASE}/entities/urn:ngsi-ld:Device:m001")).json()
    assert got["power"]["value"] == 1.0  # the rejected duplicate changed nothing

    r = await broker.client.post(f"{BASE}/entityOperations/create", json=[meter(4, 4.0)])
    assert r.status_code == 201 and r.json() == ["urn:ngsi-ld:Device:m004"]


async def test_batch_upsert_replace_and_update(broker: Broker) -> None:
    r = await broker.client.post(f"{BASE}/entityOperations/upsert", json=[meter(1, 1.0), meter(2, 2.0)])
    assert r.status_code == 201 and sorted(r.json()) == ["urn:ngsi-ld:Device:m001", "urn:ngsi-ld:Device:m002"]
    first = (await broker.client.get(f"{BASE}/entities/urn:ngsi-ld:Device:m001",
                                     params={"options": "sysAttrs"})).json()
    # replace (default): attributes not sent disappear; createdAt is kept
    r = await broker.client.post(f"{BASE}/entityOperations/upsert", json=[
        {"id": "urn:ngsi-ld:Device:m001", "type": "Device", "power": {"type": "Property", "value": 5.0}}])
    assert r.status_code == 204
    got = (await broker.client.get(f"{BASE}/entities/urn:ngsi-ld:Device:m001", params={"options": "sysAttrs"})).json()
    assert "serialNumber" not in got and got["power"]["value"] == 5.0
    assert got["createdAt"] == first["createdAt"] and got["modifiedAt"] > first["modifiedAt"]
    # update: attributes merged in
    r = await broker.client.post(f"{BASE}/entityOperations/upsert", params={"options": "update"}, json=[
        {"id": "urn:ngsi-ld:Device:m002", "type": "Device", "power": {"type": "Property", "value": 7.0}},
        {"id": "urn:ngsi-ld:Device:bad", "type": "Device", "power": {"type": "Nonsense", "value": 7.0}}])
    assert r.status_code == 207
    assert r.json()["success"] == ["urn:ngsi-ld:Device:m002"]
    got = (await broker.client.get(f"{BASE}/entities/urn:ngsi-ld:Device:m002")).json()
    assert got["power"]["value"] == 7.0 and got["serialNumber"]["value"] == "SN002"
    # every change is in the history: 2 creations, 1 replacement, 1 update
    assert await broker.service.store.history_count("") == 4


async def test_batch_update_merge_delete(broker: Broker) -> None:
    await broker.client.post(f"{BASE}/entityOperations/create", json=[meter(i, float(i)) for i in range(1, 4)])
    r = await broker.client.post(f"{BASE}/entityOperations/update", json=[
        {"id": "urn:ngsi-ld:Device:m001", "power": {"type": "Property", "value": 10.0}},
        {"id": "urn:ngsi-ld:Device:m999", "power": {"type": "Property", "value": 10.0}}])
    assert r.status_code == 207
    assert r.json()["errors"][0]["error"]["type"].endswith("ResourceNotFound")
    r = await broker.client.post(f"{BASE}/entityOperations/update", params={"options": "noOverwrite"}, json=[
        {"id": "urn:ngsi-ld:Device:m001", "power": {"type": "Property", "value": 99.0},
         "extra": {"type": "Property", "value": "x"}}])
    assert r.status_code == 204
    got = (await broker.client.get(f"{BASE}/entities/urn:ngsi-ld:Device:m001")).json()
    assert got["power"]["value"] == 10.0 and got["extra"]["value"] == "x"

    r = await broker.client.post(f"{BASE}/entityOperations/merge", json=[
        {"id": "urn:ngsi-ld:Device:m002", "serialNumber": None, "power": {"type": "Property", "value": 20.0}}])
    assert r.status_code == 204
    got = (await broker.client.get(f"{BASE}/entities/urn:ngsi-ld:Device:m002")).json()
    assert "serialNumber" not in got and got["power"] == {"type": "Property", "value": 20.0, "unitCode": "KWT",
                                                           "observedAt": "2026-11-28T12:00:00Z"}

    r = await broker.client.post(f"{BASE}/entityOperations/delete",
                                 json=["urn:ngsi-ld:Device:m001", "urn:ngsi-ld:Device:m404", "nope"])
    assert r.status_code == 207
    assert r.json()["success"] == ["urn:ngsi-ld:Device:m001"]
    assert len(r.json()["errors"]) == 2
    r = await broker.client.post(f"{BASE}/entityOperations/delete", json=["urn:ngsi-ld:Device:m002"])
    assert r.status_code == 204
    assert await ids_of(broker, type="Device") == ["urn:ngsi-ld:Device:m003"]


async def test_query_types_ids_patterns_attrs(broker: Broker) -> None:
    await broker.client.post(f"{BASE}/entityOperations/create", json=[
        meter(1, 1.0), meter(2, 2.0), meter(3, 3.0, kind="DeviceOperation"),
        {"id": "urn:ngsi-ld:Device:multi", "type": ["Device", "Meter"], "other": {"type": "Property", "value": 1}}])
    assert await ids_of(broker, type="DeviceOperation") == ["urn:ngsi-ld:DeviceOperation:m003"]
    assert len(await ids_of(broker, type="Device,DeviceOperation")) == 4
    assert len(await ids_of(broker, type="Device|DeviceOperation")) == 4
    assert await ids_of(broker, type="(Device;Meter)") == ["urn:ngsi-ld:Device:multi"]
    assert await ids_of(broker, type="Meter") == ["urn:ngsi-ld:Device:multi"]
    assert await ids_of(broker, type="Device", id="urn:ngsi-ld:Device:m002,urn:ngsi-ld:Device:multi") == [
        "urn:ngsi-ld:Device:m002", "urn:ngsi-ld:Device:multi"]
    assert await ids_of(broker, idPattern="^urn:ngsi-ld:Device:m00[12]$") == [
        "urn:ngsi-ld:Device:m001", "urn:ngsi-ld:Device:m002"]
    assert await ids_of(broker, attrs="other") == ["urn:ngsi-ld:Device:multi"]
    r = await broker.client.get(f"{BASE}/entities", params={"type": "Device", "attrs": "power", "limit": 1})
    assert set(r.json()[0]) == {"id", "type", "power"}
    # counts and empty pages on a type some entity has as a further type (the stores' second, wider statement)
    for params, count, ids in (({"type": "Meter", "count": "true"}, "1", ["urn:ngsi-ld:Device:multi"]),
                               ({"type": "Meter", "count": "true", "limit": 0}, "1", []),
                               ({"type": "Device", "count": "true", "limit": 1}, "3", ["urn:ngsi-ld:Device:m001"]),
                               ({"type": "Meter", "count": "true", "offset": 5}, "1", [])):
        r = await broker.client.get(f"{BASE}/entities", params=params)
        assert r.headers["NGSILD-Results-Count"] == count and [e["id"] for e in r.json()] == ids, params


async def test_query_q_and_geo(broker: Broker) -> None:
    await broker.client.post(f"{BASE}/entityOperations/create", json=[meter(i, float(i)) for i in range(1, 6)])
    assert await ids_of(broker, type="Device", q="power>3") == ["urn:ngsi-ld:Device:m004", "urn:ngsi-ld:Device:m005"]
    assert await ids_of(broker, type="Device", q="power==2..3;serialNumber!=\"SN003\"") == [
        "urn:ngsi-ld:Device:m002"]
    assert await ids_of(broker, type="Device", q="serialNumber~=SN00[15]|power==2") == [
        "urn:ngsi-ld:Device:m001", "urn:ngsi-ld:Device:m002", "urn:ngsi-ld:Device:m005"]
    assert await ids_of(broker, type="Device", q="power.observedAt>=2026-11-28T00:00:00Z;power<2") == [
        "urn:ngsi-ld:Device:m001"]
    assert await ids_of(broker, q="power.unitCode==\"KWT\"", type="Device", limit=2) == [
        "urn:ngsi-ld:Device:m001", "urn:ngsi-ld:Device:m002"]


async def test_pagination_count_and_links(broker: Broker) -> None:
    await broker.client.post(f"{BASE}/entityOperations/create", json=[meter(i, float(i)) for i in range(1, 8)])
    r = await broker.client.get(f"{BASE}/entities", params={"type": "Device", "limit": 3, "count": "true"})
    assert r.headers["NGSILD-Results-Count"] == "7"
    assert [e["id"] for e in r.json()] == [f"urn:ngsi-ld:Device:m00{i}" for i in (1, 2, 3)]
    assert 'rel="next"' in r.headers["Link"] and "offset=3" in r.headers["Link"]
    assert 'rel="prev"' not in r.headers["Link"]
    r = await broker.client.get(f"{BASE}/entities", params={"type": "Device", "limit": 3, "offset": 6})
    assert [e["id"] for e in r.json()] == ["urn:ngsi-ld:Device:m007"]
    assert 'rel="prev"' in r.headers["Link"] and 'rel="next"' not in r.headers["Link"]
    r = await broker.client.get(f"{BASE}/entities", params={"type": "Device", "limit": 0, "count": "true"})
    assert r.json() == [] and r.headers["NGSILD-Results-Count"] == "7"


async def test_page_links_lead_through_the_same_query(broker: Broker) -> None:
    """Following ``rel="next"`` from the first page visits every entity of the query once, in order, with the query's
    other parameters (an encoded ``q``, ``count``) kept as sent; ``rel="prev"`` leads back."""
    await broker.client.post(f"{BASE}/entityOperations/create", json=[meter(i, float(i)) for i in range(1, 8)])
    r = await broker.client.get(f"{BASE}/entities", params={"type": "Device", "q": "power>=2;power<=6", "count": "true",
                                                            "limit": 2, "offset": 0})
    seen, pages = [], []
    while True:
        assert r.status_code == 200, r.text
        assert r.headers["NGSILD-Results-Count"] == "5"
        seen += [e["id"] for e in r.json()]
        links = dict((rel, url) for url, rel in re.findall(r'<([^>]*)>; rel="(\w+)"', r.headers.get("Link", "")))
        pages.append(links)
        if "next" not in links:
            break
        assert "q=power%3E%3D2%3Bpower%3C%3D6" in links["next"] and links["next"].endswith("&limit=2")
        r = await broker.client.get(links["next"])
    assert seen == [f"urn:ngsi-ld:Device:m00{i}" for i in range(2, 7)]
    assert len(pages) == 3 and "prev" not in pages[0]
    back = await broker.client.get(pages[-1]["prev"])
    assert [e["id"] for e in back.json()] == ["urn:ngsi-ld:Device:m004", "urn:ngsi-ld:Device:m005"]


async def test_post_query_and_purge(broker: Broker) -> None:
    await broker.client.post(f"{BASE}/entityOperations/create", json=[
        meter(1, 1.0), meter(2, 2.0), meter(3, 3.0, kind="DeviceOperation")])
    r = await broker.client.post(f"{BASE}/entityOperations/query", json={
        "type": "Query", "entities": [{"type": "Device"}], "q": "power>1", "attrs": ["power"]})
    assert r.status_code == 200
    assert [(e["id"], set(e)) for e in r.json()] == [("urn:ngsi-ld:Device:m002", {"id", "type", "power"})]
    r = await broker.client.delete(f"{BASE}/entities", params={"type": "Device"})
    assert r.status_code == 204
    assert await ids_of(broker, type="Device,DeviceOperation") == ["urn:ngsi-ld:DeviceOperation:m003"]


async def test_discovery(broker: Broker, examples: dict[str, Any], sdm_context_url: str) -> None:
    for name in ("Device", "DeviceOperation", "SmartMeteringObservation"):
        assert (await broker.create(examples[name])).status_code == 201
    h = {"Link": f'<{sdm_context_url}>; rel="http://www.w3.org/ns/json-ld#context"'}
    r = await broker.client.get(f"{BASE}/types", headers=h)
    assert r.json()["typeList"] == ["Device", "DeviceOperation", "SmartMeteringObservation"]
    r = await broker.client.get(f"{BASE}/types", params={"details": "true"}, headers=h)
    device = next(t for t in r.json() if t["typeName"] == "Device")
    assert device["id"] == "https://smartdatamodels.org/dataModel.Device/Device"
    assert "serialNumber" in device["attributeNames"]
    r = await broker.client.get(f"{BASE}/types/DeviceOperation", headers=h)
    info = r.json()
    assert info["entityCount"] == 1
    details = {a["attributeName"]: a["attributeTypes"] for a in info["attributeDetails"]}
    assert details["device"] == ["Relationship"] and details["status"] == ["Property"]
    r = await broker.client.get(f"{BASE}/attributes", headers=h)
    assert "totalConsumption" in r.json()["attributeList"]
    r = await broker.client.get(f"{BASE}/attributes/location", headers=h)
    assert r.json()["attributeTypes"] == ["GeoProperty"] and r.json()["typeNames"] == ["SmartMeteringObservation"]
    r = await broker.client.get(f"{BASE}/attributes", params={"details": "true"}, headers=h)
    assert any(a["attributeName"] == "dataProvider" and a["attributeCount"] == 2 for a in r.json())
    assert (await broker.client.get(f"{BASE}/types/Nothing", headers=h)).status_code == 404


async def test_geo_queries(broker: Broker) -> None:
    # m001..m005 at lon 5.01..5.05, lat 52.0 (about 685 m apart); one polygon-located entity
    await broker.client.post(f"{BASE}/entityOperations/create", json=[meter(i, float(i)) for i in range(1, 6)] + [
        {"id": "urn:ngsi-ld:Device:area", "type": "Device", "location": {"type": "GeoProperty", "value": {
            "type": "Polygon", "coordinates": [[[5.0, 51.99], [5.025, 51.99], [5.025, 52.01], [5.0, 52.01],
                                                [5.0, 51.99]]]}}}])

    async def geo(**params: Any) -> list[str]:
        return await ids_of(broker, type="Device", **params)

    assert await geo(georel="near;maxDistance==800", geometry="Point", coordinates="[5.01,52.0]") == [
        "urn:ngsi-ld:Device:area", "urn:ngsi-ld:Device:m001", "urn:ngsi-ld:Device:m002"]
    assert await geo(georel="near;minDistance==2100", geometry="Point", coordinates="[5.01,52.0]") == [
        "urn:ngsi-ld:Device:m005"]
    box = "[[[5.015,51.9],[5.045,51.9],[5.045,52.1],[5.015,52.1],[5.015,51.9]]]"
    assert await geo(georel="within", geometry="Polygon", coordinates=box) == [
        "urn:ngsi-ld:Device:m002", "urn:ngsi-ld:Device:m003", "urn:ngsi-ld:Device:m004"]
    assert await geo(georel="intersects", geometry="Polygon", coordinates=box) == [
        "urn:ngsi-ld:Device:area", "urn:ngsi-ld:Device:m002", "urn:ngsi-ld:Device:m003", "urn:ngsi-ld:Device:m004"]
    assert await geo(georel="contains", geometry="Point", coordinates="[5.01,52.0]") == [
        "urn:ngsi-ld:Device:area", "urn:ngsi-ld:Device:m001"]
    assert await geo(georel="overlaps", geometry="Polygon", coordinates=box) == ["urn:ngsi-ld:Device:area"]
    assert await geo(georel="equals", geometry="Point", coordinates="[5.03,52.0]") == ["urn:ngsi-ld:Device:m003"]
    assert "urn:ngsi-ld:Device:m001" in await geo(georel="disjoint", geometry="Polygon", coordinates=box)
    line = "[[5.0,52.0],[5.02,52.0]]"
    assert await geo(georel="intersects", geometry="LineString", coordinates=line) == [
        "urn:ngsi-ld:Device:area", "urn:ngsi-ld:Device:m001", "urn:ngsi-ld:Device:m002"]
    r = await broker.client.get(f"{BASE}/entities", params={"georel": "within", "geometry": "Polygon",
                                                           "coordinates": "[[[0,0],[1,1]]]"})
    assert r.status_code == 400 and "Polygon" in r.json()["detail"]
    r = await broker.client.get(f"{BASE}/entities", params={"georel": "nearby", "geometry": "Point",
                                                           "coordinates": "[5,52]"})
    assert r.status_code == 400 and "georel" in r.json()["detail"]


async def test_scope_query(broker: Broker) -> None:
    await broker.client.post(f"{BASE}/entityOperations/create", json=[
        meter(1, 1.0, scope="/nl/utrecht/centrum"), meter(2, 2.0, scope=["/nl/gelderland", "/ops/fieldwork"]),
        meter(3, 3.0)])
    assert await ids_of(broker, type="Device", scopeQ="/nl/utrecht/#") == ["urn:ngsi-ld:Device:m001"]
    assert await ids_of(broker, type="Device", scopeQ="/nl/+") == ["urn:ngsi-ld:Device:m002"]
    assert await ids_of(broker, scopeQ="/ops/fieldwork,/nl/utrecht/centrum") == [
        "urn:ngsi-ld:Device:m001", "urn:ngsi-ld:Device:m002"]
    got = (await broker.client.get(f"{BASE}/entities/urn:ngsi-ld:Device:m002")).json()
    assert got["scope"] == ["/nl/gelderland", "/ops/fieldwork"]
