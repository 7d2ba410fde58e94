"""Batch worker processes (``broker_batch_workers``, decision 0730) on a real SQLite file: the batch operations give
what they give in the broker's own process — the batch tests of ``test_batch_and_query`` run here again through the
workers — and what only a second process on the file can break holds: further types and tenants the broker's process
learns, a stale cache in a worker, notifications of the workers' writes, single updates of the broker's process
between the workers' transactions, the same ProblemDetails for a bad body, and a worker that dies."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sleutelbos.broker.batch_workers import BatchWorkers
from sleutelbos.broker.component import _batch_workers
from sleutelbos.broker.entity import now_iso
from sleutelbos.broker.store import open_store
from sleutelbos.broker.store.sqlite import SqliteEntityStore
from tests.broker.conftest import BASE, Broker
from tests.broker.receivers import HttpReceiver
from tests.broker.test_batch_and_query import (  # noqa: F401 — collected again here, through the workers
    ids_of,
    meter,
    test_batch_create_partial_207,
    test_batch_update_merge_delete,
    test_batch_upsert_replace_and_update,
    test_post_query_and_purge,
)
from tests.broker.test_subscriptions import subscribe, subscription

JSON = {"Content-Type": "application/json"}


@pytest.fixture
def database_url(tmp_path: Path) -> Iterator[str]:
    yield f"sqlite:///{tmp_path / 'broker.sqlite'}"


@pytest.fixture
def broker_settings() -> dict[str, Any]:
    return {"broker_batch_workers": 2}


def workers_of(broker: Broker) -> BatchWorkers:
    return broker.app.state.context.services["broker.batch_workers"]  # type: ignore[no-any-return]


async def upsert(broker: Broker, entities: list[dict[str, Any]], **kw: Any) -> Any:
    return await broker.client.post(f"{BASE}/entityOperations/upsert", content=json.dumps(entities),
                                    headers={**JSON, **kw.pop("headers", {})}, **kw)


async def test_json_batches_go_to_the_workers_ld_json_stays(broker: Broker) -> None:
    workers = workers_of(broker)
    assert len(workers.pids()) == 2 and os.getpid() not in workers.pids()
    start = now_iso()
    r = await upsert(broker, [meter(i, float(i)) for i in range(50)])
    assert r.status_code == 201 and len(r.json()) == 50
    assert workers.batches == 1
    ld = [{**meter(1, 7.5), "@context": "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld"}]
    r = await broker.client.post(f"{BASE}/entityOperations/upsert", content=json.dumps(ld),
                                 headers={"Content-Type": "application/ld+json"})
    assert r.status_code == 204, r.text
    assert workers.batches == 1  # ld+json: the broker's own process
    r = await broker.client.get(f"{BASE}/entities/urn:ngsi-ld:Device:m001", params={"options": "keyValues"})
    assert r.json()["power"] == 7.5
    assert await broker.service.store.history_count("", "urn:ngsi-ld:Device:m001") == 2
    # the workers' rows (built before the write lock) carry the creation time the stored entity had
    url = f"{BASE}/entities/urn:ngsi-ld:Device:m002"
    created = (await broker.client.get(url, params={"options": "sysAttrs"})).json()["createdAt"]
    r = await upsert(broker, [meter(2, 20.0)])
    assert r.status_code == 204
    doc = (await broker.client.get(url, params={"options": "sysAttrs"})).json()
    assert start <= created == doc["createdAt"] < doc["modifiedAt"] and doc["power"]["value"] == 20.0


async def test_a_worker_takes_apart_the_body_with_the_request_context(broker: Broker, sdm_context_url: str) -> None:
    link = f'<{sdm_context_url}>; rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"'
    body = [{"id": "urn:ngsi-ld:Device:sdm1", "type": "Device", "serialNumber": {"type": "Property", "value": "A"}}]
    r = await upsert(broker, body, headers={"Link": link})
    assert r.status_code == 201, r.text
    stored = await broker.service.get("", "urn:ngsi-ld:Device:sdm1")
    assert "https://smartdatamodels.org/dataModel.Device/serialNumber" in stored
    assert stored["type"] == ["https://smartdatamodels.org/dataModel.Device/Device"]


@pytest.mark.parametrize("workers", [0, 2])
async def test_bad_bodies_answer_the_same_problem_in_either_process(tmp_path: Path, workers: int) -> None:
    from tests.broker.test_notifications import running_broker

    async with running_broker(f"sqlite:///{tmp_path / 'b.sqlite'}", tmp_path, broker_batch_workers=workers) as b:
        cases = [(b"[1, {", 400, "InvalidRequest", "not valid JSON"),
                 (b'{"id": "urn:x:1"}', 400, "BadRequestData", "JSON array"),
                 (b'[{"id": "urn:x:1", "type": "T", "@context": []}]', 400, "BadRequestData", "Link header"),
                 (json.dumps([meter(i, 1.0) for i in range(10_001)]).encode(), 400, "BadRequestData", "at most")]
        for raw, status, kind, detail in cases:
            r = await b.client.post(f"{BASE}/entityOperations/upsert", content=raw, headers=JSON)
            assert r.status_code == status, r.text
            problem = r.json()
            assert problem["type"].endswith(kind) and detail in problem["detail"], problem
        r = await b.client.post(f"{BASE}/entityOperations/upsert", content=json.dumps(
            [meter(1, 1.0), {"id": "urn:x:2", "type": "T", "bad": {"value": 1}}]), headers=JSON)
        assert r.status_code == 207
        assert r.json()["success"] == ["urn:ngsi-ld:Device:m001"]
        assert r.json()["errors"][0]["entityId"] == "urn:x:2"
        assert await ids_of(b, type="T") == []


async def test_further_types_and_tenants_made_by_a_worker_are_known(broker: Broker) -> None:
    r = await upsert(broker, [{**meter(1, 1.0), "type": ["Device", "Meter"]}], headers={"NGSILD-Tenant": "north"})
    assert r.status_code == 201, r.text
    r = await broker.client.get(f"{BASE}/entities", params={"type": "Meter"}, headers={"NGSILD-Tenant": "north"})
    assert r.status_code == 200 and [e["id"] for e in r.json()] == ["urn:ngsi-ld:Device:m001"]


async def test_a_worker_with_a_stale_cache_still_drops_further_types(broker: Broker) -> None:
    # written by the broker's own process: the workers' caches do not know the further type
    r = await broker.create({**meter(1, 1.0), "type": ["Device", "Meter"]})
    assert r.status_code == 201
    assert await ids_of(broker, type="Meter") == ["urn:ngsi-ld:Device:m001"]
    r = await upsert(broker, [meter(1, 2.0)])  # replaced by a worker: now only a Device
    assert r.status_code == 204
    assert await ids_of(broker, type="Meter") == []
    assert await ids_of(broker, type="Device") == ["urn:ngsi-ld:Device:m001"]


async def test_the_workers_writes_are_notified(broker: Broker) -> None:
    receiver = HttpReceiver().start()
    try:
        await subscribe(broker, subscription(receiver.url, watchedAttributes=["power"],
                                             notification={"format": "keyValues"}))
        r = await upsert(broker, [meter(i, 10.0 + i) for i in range(5)])
        assert r.status_code == 201
        notified = await receiver.wait_for(5)
        got = {e["id"]: e["power"] for e in notified}
        assert got == {f"urn:ngsi-ld:Device:m{i:03d}": 10.0 + i for i in range(5)}
        assert workers_of(broker).batches == 1
    finally:
        receiver.stop()


async def test_single_updates_of_the_broker_between_the_workers_batches(broker: Broker) -> None:
    n = 400
    r = await upsert(broker, [meter(i, 0.0) for i in range(n)])
    assert r.status_code == 201

    async def batches() -> None:
        for round_ in range(1, 9):
            r = await upsert(broker, [{**meter(i, float(round_)), "serialNumber": {"type": "Property",
                                                                                   "value": f"R{round_}"}}
                                      for i in range(n)])
            assert r.status_code == 204, r.text

    async def patches() -> None:
        for k in range(120):
            r = await broker.client.patch(f"{BASE}/entities/urn:ngsi-ld:Device:m{k % n:03d}/attrs",
                                          content=json.dumps({"voltage": {"type": "Property", "value": k}}),
                                          headers=JSON)
            assert r.status_code in (204, 207), r.text

    await asyncio.gather(batches(), batches(), patches())
    docs = (await broker.client.get(f"{BASE}/entities", params={"type": "Device", "limit": 1000,
                                                                  "options": "keyValues"})).json()
    assert len(docs) == n and all(d["serialNumber"] == "R8" for d in docs)
    # every write is in the history: 1 creation + 16 batch passes per meter; the patches of an existing attribute
    history = await broker.service.store.history_count("")
    assert history >= n * 17


async def test_a_worker_that_dies_is_replaced(broker: Broker) -> None:
    workers = workers_of(broker)
    os.kill(workers.pids()[0], signal.SIGKILL)
    await asyncio.sleep(0.3)
    r = await upsert(broker, [meter(1, 1.0)])
    assert r.status_code in (201, 500), r.text
    if r.status_code == 500:
        assert "send it again" in r.json()["detail"]
    r = await upsert(broker, [meter(1, 2.0)])
    assert r.status_code in (201, 204), r.text
    assert workers.restarts == 1 and len(workers.pids()) >= 1
    r = await broker.client.get(f"{BASE}/entities/urn:ngsi-ld:Device:m001", params={"options": "keyValues"})
    assert r.json()["power"] == 2.0


async def test_the_flush_moves_the_head_while_the_workers_write(tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    """The flusher (in the broker's process) deletes flushed rows from the head while two workers commit batches
    to the same file: every update stays readable exactly once, and no flush step fails on the other processes'
    commits."""
    import sqlite3

    from tests.broker.test_notifications import running_broker

    n, rounds = 300, 10
    async with running_broker(f"sqlite:///{tmp_path / 'broker.sqlite'}", tmp_path, broker_batch_workers=2,
                              broker_temporal_bucket_seconds=0) as b:
        conn = sqlite3.connect(tmp_path / "broker.sqlite")
        conn.execute("ATTACH DATABASE ? AS temporal", (str(tmp_path / "broker-temporal.sqlite"),))

        def buckets() -> int:
            return int(conn.execute("SELECT COUNT(*) FROM broker_temporal_buckets").fetchone()[0])

        written = [0, 0]

        async def writer(half: int) -> None:
            # at least ``rounds``, and on until the flusher (every 0.25 s) has made two buckets meanwhile: on a fast
            # machine ten rounds can end before its second flush
            round_ = 0
            while round_ < rounds or (buckets() < 2 and round_ < 600):
                body = [{**meter(i, float(round_)), "power": {
                    "type": "Property", "value": float(round_),
                    "observedAt": f"2026-11-28T{round_ // 60:02d}:{round_ % 60:02d}:00Z"}} for i in range(half, n, 2)]
                r = await b.client.post(f"{BASE}/entityOperations/upsert", content=json.dumps(body), headers=JSON)
                assert r.status_code in (201, 204), r.text
                round_ += 1
            written[half] = round_

        try:
            await asyncio.gather(writer(0), writer(1))
            assert buckets() > 1
            for _ in range(200):  # the flusher's timer: until every flushed row has left the head
                left = conn.execute(
                    "SELECT COUNT(*) FROM broker_entity_history WHERE entity_id <> '' AND seq <="
                    " (SELECT COALESCE(MAX(seq_hi), 0) FROM broker_temporal_buckets)").fetchone()[0]
                if left == 0:
                    break
                await asyncio.sleep(0.1)
            assert left == 0
        finally:
            conn.close()
        for i in (0, 1, n - 1):
            r = await b.client.get(f"{BASE}/temporal/entities/urn:ngsi-ld:Device:m{i:03d}",
                                   params={"attrs": "power", "options": "temporalValues"})
            assert r.status_code == 200, r.text
            values = sorted(v[0] for v in r.json()["power"]["values"])
            assert values == [float(x) for x in range(written[i % 2])]
    assert "failed" not in caplog.text


async def test_staged_rows_give_way_to_what_the_transaction_reads(tmp_path: Path) -> None:
    """A row staged before the lock with a creation time that is no longer true (the entity was deleted, or
    created, by another writer in between) is built again in the transaction."""
    from sleutelbos.broker.context import ContextStore
    from sleutelbos.broker.service import BatchResult, BrokerService, creation
    from sleutelbos.broker.validation import expand_entity

    store = SqliteEntityStore(tmp_path / "b.sqlite", checkpoints=False)
    await store.open()
    try:
        service = BrokerService(store, ContextStore())
        ctx = service.contexts.core

        def entities(power: float, stamp: str) -> list[dict[str, Any]]:
            return [expand_entity(meter(i, power), ctx, stamp) for i in range(2)]

        first = entities(1.0, "2026-11-01T00:00:00Z")
        await service.batch_upsert("", first, BatchResult())
        batch = entities(2.0, now_iso())
        with store.staging("", batch, [creation(e) for e in batch]):
            await service.delete("", "urn:ngsi-ld:Device:m000")  # after staging, before the batch's lock
            result = await service.batch_upsert("", batch, BatchResult())
        assert result.created == ["urn:ngsi-ld:Device:m000"]
        gone, kept = [await service.get("", f"urn:ngsi-ld:Device:m00{i}") for i in range(2)]
        assert gone["createdAt"] == batch[0]["createdAt"] != "2026-11-01T00:00:00Z"
        assert kept["createdAt"] == "2026-11-01T00:00:00Z"
        assert await store.history_count("") == 2 + 1 + 2
    finally:
        await store.close()


def test_no_workers_without_a_sqlite_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert _batch_workers(SqliteEntityStore(None), 2, None) is None  # type: ignore[arg-type]
    assert "for a SQLite file" in caplog.text
    # PostgreSQL (a store object only: nothing connects)
    assert _batch_workers(open_store("postgresql://nobody@127.0.0.1:1/none"), 2, None) is None  # type: ignore[arg-type]
    assert _batch_workers(SqliteEntityStore(tmp_path / "b.sqlite"), 0, None) is None  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="SQLite file"):
        BatchWorkers(SqliteEntityStore(None), 2)
