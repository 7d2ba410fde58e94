"""The temporal history under concurrent writers: every acknowledged change is seen by the next temporal read exactly
once — on PostgreSQL whatever order concurrent transactions commit in, without the materialiser waiting for writers in
flight (docs/decisions/0630); on SQLite with flushes of the head into chunks between the writes (0720) — and across a
restart (a cursor and what it passed commit together)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from sleutelbos.stack import StackContext, build_app
from tests.broker.conftest import BASE, Broker, _settings

JSON = {"Content-Type": "application/json"}


def meter(i: int) -> str:
    return f"urn:ngsi-ld:Device:m-{i}"


def power(value: float, minute: int) -> dict[str, Any]:
    return {"type": "Property", "value": value, "observedAt": f"2026-03-01T00:{minute:02d}:00Z"}


async def create(client: httpx.AsyncClient, i: int) -> None:
    r = await client.post(f"{BASE}/entities", content=json.dumps({"id": meter(i), "type": "Device",
                                                                   "power": power(0.0, 0)}), headers=JSON)
    assert r.status_code == 201, r.text


async def patch(client: httpx.AsyncClient, i: int, value: float, minute: int) -> None:
    r = await client.patch(f"{BASE}/entities/{meter(i)}/attrs", content=json.dumps({"power": power(value, minute)}),
                           headers=JSON)
    assert r.status_code == 204, r.text


async def values(client: httpx.AsyncClient, i: int) -> list[float]:
    r = await client.get(f"{BASE}/temporal/entities/{meter(i)}", params={"attrs": "power"})
    assert r.status_code == 200, r.text
    got = r.json().get("power", [])
    return [inst["value"] for inst in (got if isinstance(got, list) else [got])]


def materialiser(app: Any) -> Any:
    return app.state.context.services["broker.temporal"].materialiser


async def step(app: Any) -> None:
    """What follows the history in the background: a materialiser's catch-up (PostgreSQL), a flush (SQLite)."""
    m = materialiser(app)
    await (m.flush() if hasattr(m, "flush") else m.catch_up())


async def test_concurrent_writers_every_change_exactly_once(broker: Broker) -> None:
    writers, changes = 6, 12
    for i in range(writers):
        await create(broker.client, i)
    stop = asyncio.Event()

    async def follow() -> None:  # steps interleaved with the writes, as the background task and reads do
        while not stop.is_set():
            await step(broker.app)
            await asyncio.sleep(0)

    async def write(i: int) -> None:
        for n in range(1, changes + 1):
            await patch(broker.client, i, float(n), n)

    follower = asyncio.create_task(follow())
    await asyncio.gather(*(write(i) for i in range(writers)))
    stop.set()
    await follower
    for i in range(writers):
        assert sorted(await values(broker.client, i)) == [float(n) for n in range(changes + 1)]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # SQLite's one writer commits in seq order
async def test_postgres_out_of_order_commit_neither_waits_nor_skips(broker: Broker) -> None:
    """A history row whose transaction took its seq first but commits last: the catch-up does not wait for it (the
    former table lock did), takes the later row, and takes the earlier one once it commits."""
    await create(broker.client, 1)
    await create(broker.client, 2)
    dsn, _, schema = broker.database_url.partition("?search_path=")
    conn = await asyncpg.connect(dsn, server_settings={"search_path": schema})
    try:
        tx = conn.transaction()
        await tx.start()
        early = await conn.fetchval(
            "INSERT INTO broker_entity_history (tenant, entity_id, modified_at, instances)"
            " VALUES ('', $1, '2026-03-01T00:30:00.000000Z', $2::jsonb) RETURNING seq",
            meter(1), json.dumps({"https://uri.etsi.org/ngsi-ld/default-context/power": [
                # not in the stored form (the broker writes that form): the materialiser brings it there
                {"type": "Property", "value": 99.0, "observedAt": "2026-03-01T01:30:00+01:00"}]}))
        await patch(broker.client, 2, 7.0, 5)  # a later seq, committed first
        later = await conn.fetchval("SELECT last_value FROM broker_entity_history_seq_seq")
        assert later > early
        # a hang guard, not a timing assertion: the former SHARE lock waited here until the transaction ended
        await asyncio.wait_for(materialiser(broker.app).catch_up(), 30)
        assert sorted(await values(broker.client, 2)) == [0.0, 7.0]
        assert await values(broker.client, 1) == [0.0]
        await tx.commit()
    finally:
        await conn.close()
    assert sorted(await values(broker.client, 1)) == [0.0, 99.0]
    # found by its UTC time: the stored observed_at was normalized (the text as given sorts after 00:45)
    r = await broker.client.get(f"{BASE}/temporal/entities/{meter(1)}", params={
        "attrs": "power", "timerel": "between", "timeAt": "2026-03-01T00:20:00Z", "endTimeAt": "2026-03-01T00:45:00Z"})
    got = r.json()["power"]
    assert [i["value"] for i in (got if isinstance(got, list) else [got])] == [99.0]


async def test_restart_repeats_nothing_and_skips_nothing(database_url: str, tmp_path: Path) -> None:
    for round_ in range(2):
        app = build_app(StackContext(settings=_settings(database_url, tmp_path)), expose=("broker",))
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://broker.test") as client:
            if round_ == 0:
                await create(client, 1)
                await patch(client, 1, 1.0, 1)
                assert await values(client, 1) == [0.0, 1.0]
                await patch(client, 1, 2.0, 2)  # written, maybe not yet materialised when the broker stops
                if database_url.startswith("sqlite"):
                    # a history row whose observedAt is not in the stored form: the materialiser's Python path
                    conn = sqlite3.connect(database_url.removeprefix("sqlite:///"))
                    with conn:
                        conn.execute(
                            "INSERT INTO broker_entity_history (tenant, entity_id, modified_at, instances)"
                            " VALUES ('', ?, '2026-03-01T00:30:00.000000Z', ?)",
                            (meter(1), json.dumps({"https://uri.etsi.org/ngsi-ld/default-context/power": [
                                {"type": "Property", "value": 9.0, "observedAt": "2026-03-01T01:30:00+01:00"}]})))
                    conn.close()
            else:
                extra = [9.0] if database_url.startswith("sqlite") else []
                assert sorted(await values(client, 1)) == [0.0, 1.0, 2.0, *extra]
                await patch(client, 1, 3.0, 3)
                assert sorted(await values(client, 1)) == [0.0, 1.0, 2.0, 3.0, *extra]
                if extra:  # found by its UTC time: observed_at was normalized
                    r = await client.get(f"{BASE}/temporal/entities/{meter(1)}", params={
                        "attrs": "power", "timerel": "between", "timeAt": "2026-03-01T00:20:00Z",
                        "endTimeAt": "2026-03-01T00:45:00Z"})
                    got = r.json()["power"]
                    assert [i["value"] for i in (got if isinstance(got, list) else [got])] == [9.0]


async def test_observed_at_forms_brought_to_the_stored_form(broker: Broker) -> None:
    """Whole seconds and milliseconds in UTC (what meters send) are brought to the stored form in SQL, other forms by
    ``instant()`` in Python: either way a time range finds an instance by ``instant(observedAt)`` — in the head and
    in chunks (SQLite), in the materialised column (PostgreSQL)."""
    from sleutelbos.broker.temporal.instants import instant

    forms = ["2026-03-01T00:05:00Z", "2026-03-01T00:06:00.250Z", "2026-03-01T00:07:00.123456Z",
             "2026-03-01T01:08:00+01:00", "2026-03-01T00:09:00.5Z"]
    for i, observed in enumerate(forms):
        r = await broker.client.post(f"{BASE}/entities", content=json.dumps({
            "id": meter(i), "type": "Device", "power": {"type": "Property", "value": 1.0, "observedAt": observed}}),
            headers=JSON)
        assert r.status_code == 201, r.text
    for flushed in (False, True):
        if flushed:
            await step(broker.app)
        for i, observed in enumerate(forms):
            stored = instant(observed)
            assert stored is not None
            for n in range(len(forms)):  # the one-microsecond range of each form's instant holds that meter alone
                r = await broker.client.get(f"{BASE}/temporal/entities/{meter(n)}", params={
                    "attrs": "power", "timerel": "between", "timeAt": stored,
                    "endTimeAt": stored[:-2] + str(int(stored[-2]) + 1) + "Z"})
                assert r.status_code == 200, r.text
                assert ("power" in r.json()) == (n == i), (observed, n)
    assert instant(forms[0]) == "2026-03-01T00:05:00.000000Z" and instant(forms[1]) == "2026-03-01T00:06:00.250000Z"


async def create_with_mixed_forms(broker: Broker) -> None:
    """Meter 0 with four instances of one instant in four forms, datasetIds urn:ds:0-3 in that order."""
    forms = ["2026-03-01T01:05:00+01:00", "2026-03-01T00:05:00Z", "2026-03-01T01:05:00.000+01:00",
             "2026-03-01T00:05:00.000Z"]
    r = await broker.client.post(f"{BASE}/entities", content=json.dumps({
        "id": meter(0), "type": "Device", "power": [
            {"type": "Property", "value": float(n), "observedAt": observed, "datasetId": f"urn:ds:{n}"}
            for n, observed in enumerate(forms)]}), headers=JSON)
    assert r.status_code == 201, r.text


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # SQLite: ids by place (test below)
async def test_instance_ids_of_mixed_observed_at_forms_in_one_change(broker: Broker) -> None:
    """Instance ids break ties between equal instants. In one history row, the instances whose observedAt SQL brings
    to the stored form get their ids first, those normalized by ``instant()`` after them, each in document order."""
    await create_with_mixed_forms(broker)
    await materialiser(broker.app).catch_up()
    rows = await materialiser(broker.app).db.fetch(
        "SELECT dataset_id, observed_at FROM broker_temporal_instances WHERE entity_id = ? ORDER BY seq", [meter(0)])
    assert [tuple(row) for row in rows] == [(f"urn:ds:{n}", "2026-03-01T00:05:00.000000Z") for n in (1, 3, 0, 2)]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_sqlite_instances_of_equal_instants_in_document_order(broker: Broker) -> None:
    """SQLite's instance ids are places in the history row (decision 0720): equal instants come in the order the
    client sent them, whatever their form, with the same ids before and after the flush."""
    await create_with_mixed_forms(broker)
    seen = []
    for _ in range(2):
        r = await broker.client.get(f"{BASE}/temporal/entities/{meter(0)}", params={"attrs": "power"})
        seen.append([(i["datasetId"], i["instanceId"]) for i in r.json()["power"]])
        await step(broker.app)
    assert seen[0] == seen[1]
    assert [ds for ds, _ in seen[0]] == [f"urn:ds:{n}" for n in range(4)]
    assert [iid.rsplit("-", 1)[1] for _, iid in seen[0]] == ["0", "1", "2", "3"]
