"""Notification delivery on SQLite and PostgreSQL: retries with backoff recorded in the status, a receiver that is
down then up gets everything in order, a slow receiver does not hold back another subscription, a garbage answer
does not hurt, per-entity order under interleaved updates; and the restart test — subscriptions and history
survive, a receiver that was down when the broker stopped gets the notifications after the restart."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from sleutelbos.core.settings import load_settings
from sleutelbos.stack import StackContext, build_app
from tests.broker.conftest import BASE, Broker
from tests.broker.receivers import HttpReceiver
from tests.broker.test_subscriptions import JSON, meter, patch_power, subscribe, subscription


@contextlib.asynccontextmanager
async def running_broker(database_url: str, tmp_path: Path, **settings: Any) -> AsyncIterator[Broker]:
    values = {"data_dir": tmp_path, "broker_database_url": database_url, "mqtt_port": None,
              "broker_notification_retry_base_s": 0.1, "broker_notification_retry_max_s": 0.4,
              "broker_notification_timeout_s": 2.0, **settings}
    app = build_app(StackContext(settings=load_settings(**values)), expose=("broker",))
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://broker.test") as client:
        yield Broker(client, app, database_url)


async def status(broker: Broker, sub_id: str) -> dict[str, Any]:
    await asyncio.sleep(1.1)  # the dispatcher flushes its counters once a second
    return (await broker.client.get(f"{BASE}/subscriptions/{sub_id}")).json()["notification"]


async def test_down_receiver_is_retried_in_order_and_recorded(database_url: str, tmp_path: Path) -> None:
    receiver = HttpReceiver()  # not started: connection refused
    async with running_broker(database_url, tmp_path) as broker:
        sub_id = await subscribe(broker, subscription(receiver.url))
        await broker.create(meter(1, 1.0))
        for v in (2.0, 3.0):
            await patch_power(broker, 1, v)
        await asyncio.sleep(0.5)
        failed = await status(broker, sub_id)
        assert failed["timesFailed"] >= 2 and failed["timesSent"] == 0
        assert failed["status"] == "failed" and "lastFailure" in failed and "lastSuccess" not in failed
        assert await broker.app.state.context.services["broker.subscriptions"].store.pending_count() >= 1
        receiver.start()
        try:
            notified = await receiver.wait_for(3)
            assert [e["power"]["value"] for e in notified] == [1.0, 2.0, 3.0]
            await patch_power(broker, 1, 4.0)  # and new ones follow, after the backlog
            notified = await receiver.wait_for(4)
            assert [e["power"]["value"] for e in notified] == [1.0, 2.0, 3.0, 4.0]
            ok = await status(broker, sub_id)
            assert ok["status"] == "ok" and ok["timesSent"] >= 2 and ok["lastSuccess"] > ok["lastFailure"]
            assert await broker.app.state.context.services["broker.subscriptions"].store.pending_count() == 0
        finally:
            receiver.stop()


async def test_slow_receiver_does_not_hold_back_others(database_url: str, tmp_path: Path) -> None:
    slow, fast = HttpReceiver().start(), HttpReceiver().start()
    slow.delay_s = 1.5
    try:
        async with running_broker(database_url, tmp_path, broker_notification_timeout_s=5.0) as broker:
            await subscribe(broker, subscription(slow.url))
            await subscribe(broker, subscription(fast.url))
            await broker.create(meter(1, 0.0))
            for v in range(1, 21):
                await patch_power(broker, 1, float(v))
            notified = await fast.wait_for(21)
            # the fast receiver has everything while the slow one is still on its first or second request
            assert [e["power"]["value"] for e in notified] == [float(v) for v in range(21)]
            assert len(slow.bodies()) <= 1
            await slow.wait_for(21, within=15)
    finally:
        slow.stop()
        fast.stop()


async def test_garbage_and_error_answers(database_url: str, tmp_path: Path) -> None:
    garbage = HttpReceiver().start()
    garbage.garbage = True
    refusing = HttpReceiver().start()
    refusing.status = 500
    try:
        async with running_broker(database_url, tmp_path) as broker:
            ok_id = await subscribe(broker, subscription(garbage.url))
            bad_id = await subscribe(broker, subscription(refusing.url))
            await broker.create(meter(1, 1.0))
            await garbage.wait_for(1)
            assert (await broker.client.get(f"{BASE}/entities/urn:ngsi-ld:Device:m1")).status_code == 200
            await asyncio.sleep(0.5)
            assert (await status(broker, ok_id))["timesSent"] == 1
            bad = await status(broker, bad_id)
            assert bad["timesFailed"] >= 2 and bad["timesSent"] == 0  # retried with backoff
    finally:
        garbage.stop()
        refusing.stop()


async def test_per_entity_order_under_interleaved_updates(database_url: str, tmp_path: Path) -> None:
    receiver = HttpReceiver().start()
    try:
        async with running_broker(database_url, tmp_path) as broker:
            await subscribe(broker, subscription(receiver.url, notification={"format": "keyValues"}))
            for n in range(5):
                await broker.create(meter(n, 0.0))

            async def writer(n: int) -> None:
                for v in range(1, 31):
                    await patch_power(broker, n, float(v))

            await asyncio.gather(*(writer(n) for n in range(5)))
            notified = await receiver.wait_for(5 * 31)
            for n in range(5):
                seen = [e["power"] for e in notified if e["id"] == f"urn:ngsi-ld:Device:m{n}"]
                assert seen == [float(v) for v in range(31)]
    finally:
        receiver.stop()


async def test_restart_keeps_subscriptions_history_and_retries(database_url: str, tmp_path: Path) -> None:
    receiver = HttpReceiver()  # down while the first broker runs
    async with running_broker(database_url, tmp_path) as broker:
        sub_id = await subscribe(broker, subscription(receiver.url, subscriptionName="survives"))
        r = await broker.client.post(f"{BASE}/temporal/entities", headers=JSON, content=json.dumps(
            {"id": "urn:ngsi-ld:Device:m1", "type": "Device", "power": [
                {"type": "Property", "value": float(v), "observedAt": f"2026-01-01T00:{v:02d}:00Z"}
                for v in range(10)]}))
        assert r.status_code == 201
        await patch_power(broker, 1, 100.0)
        await asyncio.sleep(0.5)
        assert (await status(broker, sub_id))["timesFailed"] >= 1
    receiver.start()
    try:
        async with running_broker(database_url, tmp_path) as broker:
            got = (await broker.client.get(f"{BASE}/subscriptions/{sub_id}")).json()
            assert got["subscriptionName"] == "survives" and got["notification"]["timesFailed"] >= 1
            notified = await receiver.wait_for(2)
            assert [e["power"]["value"] for e in notified] == [9.0, 100.0]
            history = (await broker.client.get(f"{BASE}/temporal/entities/urn:ngsi-ld:Device:m1",
                                               params={"timeproperty": "modifiedAt"})).json()
            assert [i["value"] for i in history["power"]] == [*map(float, range(10)), 100.0]
            await patch_power(broker, 1, 101.0)  # and the subscription keeps working
            notified = await receiver.wait_for(3)
            assert notified[-1]["power"]["value"] == 101.0
    finally:
        receiver.stop()


async def test_receiver_closing_connections_or_answering_long(database_url: str, tmp_path: Path) -> None:
    """The HTTP sender's kept-alive connections: a receiver that closes every connection after its answer, and one
    whose answer is longer than the sender reads (the connection is then dropped), still get every notification,
    none counted as failed."""
    closing, talkative = HttpReceiver().start(), HttpReceiver().start()
    closing.close_connections = True
    talkative.big_answer = 200_000
    try:
        async with running_broker(database_url, tmp_path) as broker:
            ids = [await subscribe(broker, subscription(r.url)) for r in (closing, talkative)]
            for n in range(1, 4):
                await broker.create(meter(n, float(n)))
            for r in (closing, talkative):
                assert [e["id"] for e in await r.wait_for(3)] == [f"urn:ngsi-ld:Device:m{n}" for n in range(1, 4)]
            for sub_id in ids:
                got = await status(broker, sub_id)
                assert got["timesSent"] >= 1 and got["timesFailed"] == 0
    finally:
        closing.stop()
        talkative.stop()


async def test_one_batch_matched_per_entity(database_url: str, tmp_path: Path) -> None:
    """One transaction with entities of different shapes (types, attributes created or updated): the matcher works
    out each shape once, yet idPattern, q and type still decide per entity, and each subscription gets its own."""
    by_pattern, by_q, by_type = HttpReceiver().start(), HttpReceiver().start(), HttpReceiver().start()
    try:
        async with running_broker(database_url, tmp_path) as broker:
            await subscribe(broker, subscription(by_pattern.url, entities=[{"type": "Device", "idPattern": "m[12]$"}]))
            await subscribe(broker, subscription(by_q.url, q="power>2"))
            await subscribe(broker, subscription(by_type.url, entities=[{"type": "Room"}]))
            batch = [meter(n, float(n)) for n in range(1, 5)]
            batch.append({"id": "urn:ngsi-ld:Room:r1", "type": "Room", "power": {"type": "Property", "value": 9}})
            r = await broker.client.post(f"{BASE}/entityOperations/upsert", content=json.dumps(batch), headers=JSON)
            assert r.status_code == 201, r.text
            assert [e["id"] for e in await by_pattern.wait_for(2)] == ["urn:ngsi-ld:Device:m1", "urn:ngsi-ld:Device:m2"]
            assert [e["id"] for e in await by_q.wait_for(2)] == ["urn:ngsi-ld:Device:m3", "urn:ngsi-ld:Device:m4"]
            assert [e["id"] for e in await by_type.wait_for(1)] == ["urn:ngsi-ld:Room:r1"]
            update = [meter(n, 10.0) for n in (1, 3)]
            update[0]["name"] = {"type": "Property", "value": "new attribute"}  # m1: another shape (created)
            r = await broker.client.post(f"{BASE}/entityOperations/upsert?options=update", content=json.dumps(update),
                                         headers=JSON)
            assert r.status_code == 204, r.text
            assert [e["id"] for e in (await by_pattern.wait_for(3))[2:]] == ["urn:ngsi-ld:Device:m1"]
            assert [e["id"] for e in (await by_q.wait_for(4))[2:]] == ["urn:ngsi-ld:Device:m1", "urn:ngsi-ld:Device:m3"]
            reasons = [b.get("triggerReason") for b in by_q.bodies()[1:]]
            assert set(reasons) <= {"attributeCreated", "attributeUpdated", None}
            await asyncio.sleep(0.3)
            assert len(by_type.entities()) == 1
    finally:
        for r in (by_pattern, by_q, by_type):
            r.stop()
