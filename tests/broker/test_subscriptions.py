"""Subscriptions (clause 5.8) on SQLite and PostgreSQL: CRUD with every member, status, HTTP notifications to a real
receiver with triggers, watchedAttributes, q, formats, showChanges, throttling, periodic, expiry and pause; bad input
answers its ETSI error and stores nothing."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.broker.conftest import BASE, Broker
from tests.broker.receivers import HttpReceiver

CORE = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld"
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    r = HttpReceiver().start()
    yield r
    r.stop()


def meter(n: int, power: float = 1.0, **extra: Any) -> dict[str, Any]:
    return {"id": f"urn:ngsi-ld:Device:m{n}", "type": "Device",
            "power": {"type": "Property", "value": power, "observedAt": "2026-01-01T00:00:00Z"}, **extra}


def subscription(uri: str, **members: Any) -> dict[str, Any]:
    notification = members.pop("notification", {})
    endpoint = notification.pop("endpoint", {})
    return {"type": "Subscription", "entities": [{"type": "Device"}],
            "notification": {"endpoint": {"uri": uri, **endpoint}, **notification}, **members}


async def subscribe(broker: Broker, body: dict[str, Any], headers: dict[str, str] | None = None) -> str:
    r = await broker.client.post(f"{BASE}/subscriptions", content=json.dumps(body), headers=headers or JSON)
    assert r.status_code == 201, r.text
    return r.headers["Location"].rsplit("/", 1)[1]


async def patch_power(broker: Broker, n: int, value: float) -> None:
    r = await broker.client.patch(f"{BASE}/entities/urn:ngsi-ld:Device:m{n}/attrs",
                                  content=json.dumps({"power": {"type": "Property", "value": value}}), headers=JSON)
    assert r.status_code == 204, r.text


async def test_crud_with_every_member_and_status(broker: Broker, receiver: HttpReceiver) -> None:
    expires = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = subscription(
        receiver.url, id="urn:ngsi-ld:Subscription:full", subscriptionName="meters", description="all of them",
        entities=[{"type": "Device", "idPattern": "^urn:ngsi-ld:Device:m"}, {"type": "Device", "id": "urn:x:1"}],
        watchedAttributes=["power"], notificationTrigger=["attributeUpdated", "entityCreated"], q="power>0",
        throttling=0, expiresAt=expires, isActive=True, lang="nl",
        notification={"attributes": ["power"], "format": "keyValues", "showChanges": False, "sysAttrs": False,
                      "endpoint": {"accept": "application/json",
                                   "receiverInfo": [{"key": "X-Tenant-Key", "value": "abc"}],
                                   "notifierInfo": [{"key": "MQTT-QoS", "value": "1"}]}})
    sub_id = await subscribe(broker, body)
    assert sub_id == "urn:ngsi-ld:Subscription:full"
    got = (await broker.client.get(f"{BASE}/subscriptions/{sub_id}")).json()
    for key in ("subscriptionName", "description", "entities", "watchedAttributes", "notificationTrigger", "q",
                "throttling", "expiresAt", "lang"):
        assert got[key] == body[key], key
    assert got["status"] == "active" and got["isActive"] is True
    assert got["notification"]["format"] == "keyValues"
    assert got["notification"]["endpoint"]["receiverInfo"] == [{"key": "X-Tenant-Key", "value": "abc"}]
    assert got["notification"]["timesSent"] == 0

    listed = (await broker.client.get(f"{BASE}/subscriptions?count=true")).json()
    assert [s["id"] for s in listed] == [sub_id]

    await broker.create(meter(1, 5.0))
    notified = await receiver.wait_for(1)
    assert notified == [{"id": "urn:ngsi-ld:Device:m1", "type": "Device", "power": 5.0}]
    request = receiver.received[0]
    assert request["headers"]["X-Tenant-Key"] == "abc"
    assert request["headers"]["Content-Type"] == "application/json"
    assert CORE in request["headers"]["Link"]
    assert request["body"]["type"] == "Notification" and request["body"]["subscriptionId"] == sub_id
    assert request["body"]["id"].startswith("urn:ngsi-ld:Notification:") and request["body"]["notifiedAt"]

    await asyncio.sleep(1.2)  # the status is flushed once a second
    got = (await broker.client.get(f"{BASE}/subscriptions/{sub_id}")).json()
    assert got["notification"]["timesSent"] == 1 and got["notification"]["lastSuccess"]
    assert got["notification"]["lastNotification"] <= got["notification"]["lastSuccess"]  # sent, then answered
    assert got["notification"]["status"] == "ok"

    r = await broker.client.patch(f"{BASE}/subscriptions/{sub_id}",
                                  content=json.dumps({"isActive": False, "subscriptionName": "paused"}), headers=JSON)
    assert r.status_code == 204, r.text
    got = (await broker.client.get(f"{BASE}/subscriptions/{sub_id}")).json()
    assert got["status"] == "paused" and got["subscriptionName"] == "paused" and got["q"] == "power>0"
    await patch_power(broker, 1, 7.0)
    await asyncio.sleep(0.3)
    assert len(receiver.entities()) == 1  # paused: nothing sent

    assert (await broker.client.delete(f"{BASE}/subscriptions/{sub_id}")).status_code == 204
    assert (await broker.client.get(f"{BASE}/subscriptions/{sub_id}")).status_code == 404
    assert (await broker.client.delete(f"{BASE}/subscriptions/{sub_id}")).status_code == 404


async def test_triggers_watched_attributes_and_q(broker: Broker, receiver: HttpReceiver) -> None:
    await subscribe(broker, subscription(receiver.url, watchedAttributes=["power"], q="power>10",
                                         notification={"format": "normalized"}))
    await broker.create(meter(1, 5.0))  # power 5: q does not hold
    await broker.create(meter(2, 50.0))  # created, q holds → attributeCreated
    notified = await receiver.wait_for(1)
    assert [e["id"] for e in notified] == ["urn:ngsi-ld:Device:m2"]
    assert notified[0]["power"]["value"] == 50.0 and notified[0]["power"]["type"] == "Property"
    assert receiver.bodies()[0]["triggerReason"] == "attributeCreated"
    # an unwatched attribute changes: nothing
    r = await broker.client.post(f"{BASE}/entities/urn:ngsi-ld:Device:m2/attrs",
                                 content=json.dumps({"name": {"type": "Property", "value": "x"}}), headers=JSON)
    assert r.status_code == 204
    await patch_power(broker, 1, 20.0)  # now q holds for m1 → attributeUpdated
    notified = await receiver.wait_for(2)
    assert [e["id"] for e in notified] == ["urn:ngsi-ld:Device:m2", "urn:ngsi-ld:Device:m1"]
    assert receiver.bodies()[-1]["triggerReason"] == "attributeUpdated"


async def test_entity_created_and_deleted_triggers(broker: Broker, receiver: HttpReceiver) -> None:
    await subscribe(broker, subscription(receiver.url, notificationTrigger=["entityCreated", "entityDeleted"]))
    await broker.create(meter(1))
    await patch_power(broker, 1, 3.0)  # not a trigger here
    assert (await broker.client.delete(f"{BASE}/entities/urn:ngsi-ld:Device:m1")).status_code == 204
    notified = await receiver.wait_for(2)
    assert [b["triggerReason"] for b in receiver.bodies()] == ["entityCreated", "entityDeleted"]
    assert notified[1]["id"] == "urn:ngsi-ld:Device:m1" and notified[1]["type"] == "Device"
    assert "deletedAt" in notified[1]


async def test_show_changes_concise_and_ld_json(broker: Broker, receiver: HttpReceiver) -> None:
    await subscribe(broker, subscription(receiver.url, notification={
        "format": "concise", "showChanges": True, "endpoint": {"accept": "application/ld+json"}}))
    await broker.create(meter(1, 1.0))
    await patch_power(broker, 1, 2.0)
    notified = await receiver.wait_for(2)
    assert notified[0]["power"] == {"value": 1.0, "observedAt": "2026-01-01T00:00:00Z"}
    assert notified[1]["power"] == {"value": 2.0, "previousValue": 1.0}
    body = receiver.bodies()[0]
    assert body["@context"] == CORE
    assert receiver.received[0]["headers"]["Content-Type"] == "application/ld+json"
    assert "Link" not in receiver.received[0]["headers"]


async def test_throttling_groups_notifications(broker: Broker, receiver: HttpReceiver) -> None:
    await subscribe(broker, subscription(receiver.url, throttling=1))
    await broker.create(meter(1))
    await receiver.wait_for(1)
    for v in range(2, 6):
        await patch_power(broker, 1, float(v))
    notified = await receiver.wait_for(5, within=5)
    bodies = receiver.bodies()
    assert len(bodies) == 2  # the first, then the four updates together after the throttling second
    assert [e["power"]["value"] for e in notified] == [1.0, 2.0, 3.0, 4.0, 5.0]  # in commit order
    assert bodies[1]["notifiedAt"] > bodies[0]["notifiedAt"]


async def test_periodic_time_interval(broker: Broker, receiver: HttpReceiver) -> None:
    await broker.create(meter(1, 4.0))
    await broker.create(meter(2, 9.0))
    await subscribe(broker, subscription(receiver.url, timeInterval=0.5, q="power>5"))
    await patch_power(broker, 2, 9.5)  # periodic subscriptions do not fire on changes
    notified = await receiver.wait_for(2, within=5)
    assert {e["id"] for e in notified} == {"urn:ngsi-ld:Device:m2"}
    assert len(receiver.bodies()) >= 2


async def test_expired_subscription_stops(broker: Broker, receiver: HttpReceiver) -> None:
    expires = (datetime.now(UTC) + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    sub_id = await subscribe(broker, subscription(receiver.url, expiresAt=expires))
    await broker.create(meter(1))
    await receiver.wait_for(1)
    await asyncio.sleep(1.2)
    await patch_power(broker, 1, 8.0)
    await asyncio.sleep(0.3)
    assert len(receiver.entities()) == 1
    got = (await broker.client.get(f"{BASE}/subscriptions/{sub_id}")).json()
    assert got["status"] == "expired"


async def test_tenants_are_separate(broker: Broker, receiver: HttpReceiver) -> None:
    await subscribe(broker, subscription(receiver.url), headers={**JSON, "NGSILD-Tenant": "supplier"})
    await broker.create(meter(1))
    await broker.create(meter(2), headers={"NGSILD-Tenant": "supplier"})
    notified = await receiver.wait_for(1)
    await asyncio.sleep(0.2)
    assert [e["id"] for e in receiver.entities()] == ["urn:ngsi-ld:Device:m2"] == [e["id"] for e in notified]
    assert (await broker.client.get(f"{BASE}/subscriptions")).json() == []


@pytest.mark.parametrize(("change", "needle"), [
    ({"notification": {"endpoint": {"uri": "ftp://example.org/x"}}}, "http(s):// or mqtt(s)://"),
    ({"notification": {"endpoint": {"uri": "mqtt://broker.example"}}}, "topic"),
    ({"q": "power>>"}, "q"),
    ({"throttling": -1}, "throttling"),
    ({"timeInterval": 5, "watchedAttributes": ["power"]}, "timeInterval"),
    ({"notificationTrigger": ["sometimes"]}, "notificationTrigger"),
    ({"type": "Subscriptions"}, "type"),
    ({"entities": [{"id": "urn:x"}]}, "type"),
    ({"notification": {"format": "verbose", "endpoint": {"uri": "http://x"}}}, "format"),
    ({"notification": {"endpoint": {"uri": "http://x", "accept": "text/plain"}}}, "accept"),
    ({"notification": {"endpoint": {"uri": "mqtt://h/t", "notifierInfo": [{"key": "MQTT-QoS", "value": "3"}]}}},
     "MQTT-QoS"),
    ({"notification": {"endpoint": {"uri": "mqtt://h/t",
                                    "notifierInfo": [{"key": "MQTT-Version", "value": "mqtt4"}]}}}, "MQTT-Version"),
    ({"notification": {"endpoint": {"uri": "http://x", "receiverInfo": [{"key": "Content-Length", "value": "0"}]}}},
     "frames the request"),
    ({"notification": {"endpoint": {"uri": "http://x",
                                    "receiverInfo": [{"key": "transfer-encoding", "value": "chunked"}]}}},
     "frames the request"),
    ({"expiresAt": "2001-01-01T00:00:00Z"}, "past"),
    ({"expiresAt": "tomorrow"}, "expiresAt"),
    ({"isActive": "yes"}, "isActive"),
    ({"unknownMember": 1}, "unknownMember"),
])
async def test_bad_input_stores_nothing(broker: Broker, receiver: HttpReceiver, change: dict[str, Any],
                                        needle: str) -> None:
    body = subscription(receiver.url)
    change = copy.deepcopy(change)
    if "notification" in change:
        body["notification"] = change.pop("notification")
    body.update(change)
    r = await broker.client.post(f"{BASE}/subscriptions", content=json.dumps(body), headers=JSON)
    assert r.status_code == 400, r.text
    problem = r.json()
    assert problem["type"] == "https://uri.etsi.org/ngsi-ld/errors/BadRequestData"
    assert needle in problem["detail"]
    assert (await broker.client.get(f"{BASE}/subscriptions")).json() == []


async def test_patch_with_bad_input_changes_nothing(broker: Broker, receiver: HttpReceiver) -> None:
    sub_id = await subscribe(broker, subscription(receiver.url, throttling=2))
    r = await broker.client.patch(f"{BASE}/subscriptions/{sub_id}", content=json.dumps({"throttling": -3}),
                                  headers=JSON)
    assert r.status_code == 400 and "throttling" in r.json()["detail"]
    assert (await broker.client.get(f"{BASE}/subscriptions/{sub_id}")).json()["throttling"] == 2
    r = await broker.client.post(f"{BASE}/subscriptions", content=json.dumps(subscription(receiver.url, id=sub_id)),
                                 headers=JSON)
    assert r.status_code == 409


async def test_geo_query_selects_by_location(broker: Broker, receiver: HttpReceiver) -> None:
    utrecht, amsterdam = [5.1214, 52.0907], [4.9041, 52.3676]
    await subscribe(broker, subscription(receiver.url, geoQ={
        "georel": "near;maxDistance==5000", "geometry": "Point", "coordinates": utrecht}))
    for n, where in ((1, amsterdam), (2, [5.13, 52.09])):
        location = {"type": "GeoProperty", "value": {"type": "Point", "coordinates": where}}
        await broker.create(meter(n, location=location))
    notified = await receiver.wait_for(1)
    await asyncio.sleep(0.2)
    assert [e["id"] for e in receiver.entities()] == ["urn:ngsi-ld:Device:m2"] == [e["id"] for e in notified]
    r = await broker.client.post(f"{BASE}/subscriptions", headers=JSON, content=json.dumps(
        subscription(receiver.url, geoQ={"georel": "near;maxDistance==5000", "geometry": "Point",
                                         "coordinates": [500, 52]})))
    assert r.status_code == 400, r.text


async def test_sys_attrs_and_lang(broker: Broker, receiver: HttpReceiver) -> None:
    await subscribe(broker, subscription(receiver.url, lang="nl", notification={"sysAttrs": True,
                                                                                "attributes": ["name"]}))
    await broker.create(meter(1, name={"type": "LanguageProperty", "languageMap": {"nl": "meter", "en": "meter EN"}}))
    notified = await receiver.wait_for(1)
    assert "createdAt" in notified[0] and "modifiedAt" in notified[0]
    assert "power" not in notified[0]
    assert "meter EN" not in json.dumps(notified[0]) and "meter" in json.dumps(notified[0]["name"])
