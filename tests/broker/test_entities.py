"""Entity and attribute operations (clause 5.6 / 6.4-6.7) on both stores, with the Smart Data Model examples."""

from __future__ import annotations

import json
from typing import Any

from tests.broker.conftest import BASE, Broker


def link(url: str) -> dict[str, str]:
    return {"Link": f'<{url}>; rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"'}


async def test_create_and_retrieve_sdm_device(broker: Broker, examples: dict[str, Any], sdm_context_url: str) -> None:
    device = examples["Device"]
    r = await broker.create(device)
    assert r.status_code == 201, r.text
    assert r.headers["Location"] == f"{BASE}/entities/{device['id']}"

    r = await broker.client.get(f"{BASE}/entities/{device['id']}", headers=link(sdm_context_url))
    assert r.status_code == 200
    body = r.json()
    assert body["type"] == "Device"
    assert body["serialNumber"] == {"type": "Property", "value": "9845A"}
    assert body["refDeviceModel"]["object"] == "urn:ngsi-ld:DeviceModel:myDevice-wastecontainer-sensor-345"
    assert "createdAt" not in body
    assert sdm_context_url in r.headers["Link"]

    # without the SDM context the same entity comes back with full IRIs
    r = await broker.client.get(f"{BASE}/entities/{device['id']}")
    body = r.json()
    assert body["type"] == "https://smartdatamodels.org/dataModel.Device/Device"
    assert "https://smartdatamodels.org/dataModel.Device/serialNumber" in body

    # JSON-LD in, JSON-LD out: @context in the body
    r = await broker.client.get(f"{BASE}/entities/{device['id']}",
                                headers={**link(sdm_context_url), "Accept": "application/ld+json"})
    assert r.headers["content-type"].startswith("application/ld+json")
    assert r.json()["@context"] == sdm_context_url


async def test_create_twice_is_409_and_unchanged(broker: Broker, examples: dict[str, Any]) -> None:
    op = examples["DeviceOperation"]
    assert (await broker.create(op)).status_code == 201
    changed = {**op, "status": {"type": "Property", "value": "finished"}}
    r = await broker.create(changed)
    assert r.status_code == 409
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"] == "https://uri.etsi.org/ngsi-ld/errors/AlreadyExists"
    got = await broker.client.get(f"{BASE}/entities/{op['id']}", headers=link(op["@context"][0]))
    assert got.json()["status"]["value"] == "ongoing"


async def test_sys_attrs_and_key_values(broker: Broker, examples: dict[str, Any], sdm_context_url: str) -> None:
    obs = examples["SmartMeteringObservation"]
    await broker.create(obs)
    r = await broker.client.get(f"{BASE}/entities/{obs['id']}", params={"options": "sysAttrs"},
                                headers=link(sdm_context_url))
    body = r.json()
    assert body["createdAt"].endswith("Z") and body["modifiedAt"] >= body["createdAt"]
    assert "createdAt" in body["totalConsumption"]
    r = await broker.client.get(f"{BASE}/entities/{obs['id']}", params={"options": "keyValues"},
                                headers=link(sdm_context_url))
    kv = r.json()
    assert kv["totalConsumption"] == 7.0
    assert kv["location"] == {"type": "Point", "coordinates": [-103.9904, 39.7564]}
    assert kv["refDevice"] == "urn:ngsi-ld:Device:7a0708f6-9668-11e8-8f77-abc2b62ebaac"


async def test_attrs_pick_omit(broker: Broker, examples: dict[str, Any], sdm_context_url: str) -> None:
    obs = examples["SmartMeteringObservation"]
    await broker.create(obs)
    h = link(sdm_context_url)
    r = await broker.client.get(f"{BASE}/entities/{obs['id']}", params={"attrs": "totalConsumption"}, headers=h)
    assert set(r.json()) == {"id", "type", "totalConsumption"}
    r = await broker.client.get(f"{BASE}/entities/{obs['id']}", params={"pick": "id,powerFactor"}, headers=h)
    assert set(r.json()) == {"id", "powerFactor"}
    r = await broker.client.get(f"{BASE}/entities/{obs['id']}", params={"omit": "location,address"}, headers=h)
    assert "location" not in r.json() and "address" not in r.json() and "powerFactor" in r.json()


async def test_append_update_and_no_overwrite(broker: Broker) -> None:
    meter = {"id": "urn:ngsi-ld:Device:meter-1", "type": "Device",
             "firmwareVersion": {"type": "Property", "value": "1.0"}}
    await broker.create(meter)
    url = f"{BASE}/entities/{meter['id']}/attrs"
    r = await broker.client.post(url, json={"firmwareVersion": {"type": "Property", "value": "2.0"},
                                            "batteryLevel": {"type": "Property", "value": 0.5}},
                                 params={"options": "noOverwrite"})
    assert r.status_code == 207
    assert r.json()["notUpdated"][0]["attributeName"] == "firmwareVersion"
    got = (await broker.client.get(f"{BASE}/entities/{meter['id']}")).json()
    assert got["firmwareVersion"]["value"] == "1.0" and got["batteryLevel"]["value"] == 0.5

    r = await broker.client.post(url, json={"firmwareVersion": {"type": "Property", "value": "2.0"}})
    assert r.status_code == 204
    r = await broker.client.patch(url, json={"firmwareVersion": {"type": "Property", "value": "2.1"},
                                             "nope": {"type": "Property", "value": 1}})
    assert r.status_code == 207
    got = (await broker.client.get(f"{BASE}/entities/{meter['id']}")).json()
    assert got["firmwareVersion"]["value"] == "2.1" and "nope" not in got


async def test_dataset_ids_partial_update_and_delete(broker: Broker) -> None:
    meter = {"id": "urn:ngsi-ld:Device:meter-2", "type": "Device",
             "power": [{"type": "Property", "value": 1.0, "unitCode": "KWT", "observedAt": "2026-01-01T00:00:00Z"},
                       {"type": "Property", "value": 2.0, "datasetId": "urn:ngsi-ld:Dataset:phase2"}]}
    await broker.create(meter)
    attr = f"{BASE}/entities/{meter['id']}/attrs/power"
    r = await broker.client.patch(attr, json={"value": 2.5, "datasetId": "urn:ngsi-ld:Dataset:phase2"})
    assert r.status_code == 204, r.text
    got = (await broker.client.get(f"{BASE}/entities/{meter['id']}")).json()
    by_ds = {i.get("datasetId"): i for i in got["power"]}
    assert by_ds["urn:ngsi-ld:Dataset:phase2"]["value"] == 2.5
    assert by_ds[None]["value"] == 1.0 and by_ds[None]["unitCode"] == "KWT"

    r = await broker.client.get(f"{BASE}/entities/{meter['id']}", params={"datasetId": "urn:ngsi-ld:Dataset:phase2"})
    assert r.json()["power"]["value"] == 2.5

    r = await broker.client.delete(attr, params={"datasetId": "urn:ngsi-ld:Dataset:phase2"})
    assert r.status_code == 204
    got = (await broker.client.get(f"{BASE}/entities/{meter['id']}")).json()
    assert got["power"]["value"] == 1.0
    r = await broker.client.delete(attr, params={"datasetId": "urn:ngsi-ld:Dataset:phase2"})
    assert r.status_code == 404

    await broker.client.post(f"{BASE}/entities/{meter['id']}/attrs", json={
        "power": {"type": "Property", "value": 3.0, "datasetId": "urn:ngsi-ld:Dataset:phase3"}})
    r = await broker.client.delete(attr, params={"deleteAll": "true"})
    assert r.status_code == 204
    got = (await broker.client.get(f"{BASE}/entities/{meter['id']}")).json()
    assert "power" not in got


async def test_put_attr_replace_entity_merge_and_delete(broker: Broker) -> None:
    eid = "urn:ngsi-ld:Device:meter-3"
    await broker.create({"id": eid, "type": "Device", "a": {"type": "Property", "value": 1},
                         "b": {"type": "Property", "value": {"x": 1, "y": 2}, "unitCode": "C62"}})
    r = await broker.client.put(f"{BASE}/entities/{eid}/attrs/a", json={"type": "Property", "value": 10})
    assert r.status_code == 204
    r = await broker.client.put(f"{BASE}/entities/{eid}/attrs/zzz", json={"type": "Property", "value": 10})
    assert r.status_code == 404

    # merge: b's value replaced, its unitCode kept; a deleted with NGSI-LD null; c added
    r = await broker.client.patch(f"{BASE}/entities/{eid}", json={
        "a": "urn:ngsi-ld:null", "b": {"type": "Property", "value": {"x": 5}},
        "c": {"type": "Relationship", "object": "urn:ngsi-ld:Building:1"}})
    assert r.status_code == 204, r.text
    got = (await broker.client.get(f"{BASE}/entities/{eid}")).json()
    assert "a" not in got
    assert got["b"] == {"type": "Property", "value": {"x": 5}, "unitCode": "C62"}
    assert got["c"]["object"] == "urn:ngsi-ld:Building:1"

    r = await broker.client.put(f"{BASE}/entities/{eid}", json={"type": "Device",
                                                                 "d": {"type": "Property", "value": True}})
    assert r.status_code == 204
    got = (await broker.client.get(f"{BASE}/entities/{eid}", params={"options": "sysAttrs"})).json()
    assert set(got) == {"id", "type", "d", "createdAt", "modifiedAt"}

    assert (await broker.client.delete(f"{BASE}/entities/{eid}")).status_code == 204
    assert (await broker.client.get(f"{BASE}/entities/{eid}")).status_code == 404
    assert (await broker.client.delete(f"{BASE}/entities/{eid}")).status_code == 404


async def test_attribute_kinds_round_trip(broker: Broker) -> None:
    entity = {
        "id": "urn:ngsi-ld:Device:kinds", "type": "Device",
        "name": {"type": "LanguageProperty", "languageMap": {"nl": "meter", "en": "meter EN"}},
        "config": {"type": "JsonProperty", "json": {"a": [1, 2], "b": None}},
        "readings": {"type": "ListProperty", "valueList": [1, 2, 3]},
        "peers": {"type": "ListRelationship", "objectList": ["urn:ngsi-ld:Device:a", "urn:ngsi-ld:Device:b"]},
        "category": {"type": "VocabProperty", "vocab": "meter"},
        "installedBy": {"type": "Relationship", "object": "urn:ngsi-ld:Person:1",
                        "since": {"type": "Property", "value": "2020-01-01"}},
        "location": {"type": "GeoProperty", "value": {"type": "Polygon", "coordinates": [
            [[5.0, 52.0], [5.1, 52.0], [5.1, 52.1], [5.0, 52.0]]]}},
    }
    assert (await broker.create(entity)).status_code == 201
    got = (await broker.client.get(f"{BASE}/entities/{entity['id']}")).json()
    for key in ("name", "config", "readings", "peers", "category", "installedBy", "location"):
        assert got[key] == entity[key], key
    stored = await broker.service.store.get("", entity["id"])
    assert stored["https://uri.etsi.org/ngsi-ld/default-context/category"][0]["vocab"] == \
        "https://uri.etsi.org/ngsi-ld/default-context/meter"
    r = await broker.client.get(f"{BASE}/entities/{entity['id']}", params={"lang": "en", "options": "keyValues"})
    assert r.json()["name"] == "meter EN"


async def test_history_instances_written_with_each_write(broker: Broker) -> None:
    eid = "urn:ngsi-ld:Device:hist"
    await broker.create({"id": eid, "type": "Device", "p": {"type": "Property", "value": 1}})
    await broker.client.patch(f"{BASE}/entities/{eid}/attrs", json={"p": {"type": "Property", "value": 2}})
    await broker.client.patch(f"{BASE}/entities/{eid}/attrs/p", json={"value": 3})
    assert await broker.service.store.history_count("", eid) == 3
    await broker.client.delete(f"{BASE}/entities/{eid}")
    assert await broker.service.store.history_count("", eid) == 4


async def test_tenants(broker: Broker) -> None:
    eid = "urn:ngsi-ld:Device:t1"
    r = await broker.client.get(f"{BASE}/entities/{eid}", headers={"NGSILD-Tenant": "stedin"})
    assert r.status_code == 404
    assert r.json()["type"].endswith("NonexistentTenant")
    r = await broker.create({"id": eid, "type": "Device"}, headers={"NGSILD-Tenant": "stedin"})
    assert r.status_code == 201
    assert (await broker.client.get(f"{BASE}/entities/{eid}", headers={"NGSILD-Tenant": "stedin"})).status_code == 200
    assert (await broker.client.get(f"{BASE}/entities/{eid}")).status_code == 404
    r = await broker.client.get(f"{BASE}/entities", params={"type": "Device"}, headers={"NGSILD-Tenant": "enexis"})
    assert r.status_code == 404 and r.json()["type"].endswith("NonexistentTenant")


async def test_ld_json_entity_id_with_inline_context(broker: Broker) -> None:
    entity = {"id": "urn:ngsi-ld:Device:inline", "type": "Meter", "reading": {"type": "Property", "value": 1},
              "@context": [{"Meter": "https://example.org/Meter", "reading": "https://example.org/reading"}]}
    r = await broker.client.post(f"{BASE}/entities", content=json.dumps(entity),
                                 headers={"Content-Type": "application/ld+json"})
    assert r.status_code == 201
    stored = await broker.service.store.get("", entity["id"])
    assert stored["type"] == ["https://example.org/Meter"]
    assert "https://example.org/reading" in stored


async def test_concise_and_ld_json_list(broker: Broker) -> None:
    eid = "urn:ngsi-ld:Device:concise"
    await broker.create({"id": eid, "type": "Device", "a": {"type": "Property", "value": 1},
                         "b": {"type": "Property", "value": 2, "unitCode": "KWH"},
                         "r": {"type": "Relationship", "object": "urn:ngsi-ld:X:1"}})
    got = (await broker.client.get(f"{BASE}/entities/{eid}", params={"options": "concise"})).json()
    assert got == {"id": eid, "type": "Device", "a": 1, "b": {"value": 2, "unitCode": "KWH"},
                   "r": {"object": "urn:ngsi-ld:X:1"}}
    r = await broker.client.get(f"{BASE}/entities", params={"type": "Device"},
                                headers={"Accept": "application/ld+json"})
    assert r.headers["content-type"] == "application/ld+json"
    assert r.json()[0]["@context"] == "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld"
    assert "Link" not in r.headers or "json-ld#context" not in r.headers["Link"]
