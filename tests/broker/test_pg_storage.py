"""PostgreSQL storage parameters that the write rate depends on (decision 0701)."""

from __future__ import annotations

import asyncpg
import orjson
import pytest

from tests.broker.conftest import BASE, Broker

DEVICES = 300  # several pages of rows, the first ones full at the default fillfactor


def device(i: int, value: float) -> dict[str, object]:
    return {"id": f"urn:ngsi-ld:Device:page-{i:04d}", "type": "Device",
            "reading": {"type": "Property", "value": value, "observedAt": "2026-11-29T08:00:00Z", "unitCode": "KWT"}}


async def pages(database_url: str) -> dict[str, int]:
    """The heap page each entity's current row version is on."""
    conn = await asyncpg.connect(database_url)  # the URL's search_path query parameter is a server setting
    try:
        rows = await conn.fetch("SELECT id, (ctid::text::point)[0]::int AS page FROM broker_entities")
        return {r["id"]: r["page"] for r in rows}
    finally:
        await conn.close()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_meter_updates_stay_on_their_page(broker: Broker, database_url: str) -> None:
    """A reading update changes no indexed column: its new row version goes on the same page (a HOT update, no index
    insert) while the page has room, and every page keeps room. With full pages it moves to the end of the table.
    (Single updates one after another do not show it: each frees its old version for the next once committed.)"""
    upsert = f"{BASE}/entityOperations/upsert"
    r = await broker.client.post(upsert, content=orjson.dumps([device(i, 0.0) for i in range(DEVICES)]),
                                 headers={"Content-Type": "application/json"})
    assert r.status_code == 201, r.text
    before = await pages(database_url)
    first_page = [eid for eid, page in before.items() if page == 0]
    assert len(first_page) > 5 and max(before.values()) > 2  # the setting matters only with several pages

    # one batch update of every row of the first page: the page's room takes the first of them (HOT); at fillfactor
    # 100 the page is full and every one moves to the end of the table
    r = await broker.client.post(upsert, content=orjson.dumps([device(int(eid[-4:]), 9.0) for eid in first_page]),
                                 headers={"Content-Type": "application/json"})
    assert r.status_code == 204, r.text
    after = await pages(database_url)
    stayed = [eid for eid in first_page if after[eid] == 0]
    assert len(stayed) >= max(1, len(first_page) // 4), f"{len(stayed)} of {len(first_page)} rows kept their page"
    r = await broker.client.get(f"{BASE}/entities/{first_page[0]}")
    assert r.json()["reading"]["value"] == 9.0
