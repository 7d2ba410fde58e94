"""PostgreSQL storage parameters: room on entity pages for updates (decision 0701), identifiers in byte order
whatever the database's collation (decision 0702)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import orjson
import pytest

from sleutelbos.stack import StackContext, build_app
from tests.broker.conftest import BASE, Broker, _settings
from tests.conftest import pg_scratch_database

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


@pytest.fixture(params=["sqlite", "postgresql-nl"])
def dutch_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """SQLite, or a PostgreSQL database whose default collation is Dutch (ICU ``nl-NL``), as a Dutch operator may
    create it: there ``'a' < 'B'``, where bytes say ``'B' < 'a'``."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'broker.sqlite'}"
        return
    options = " TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'nl-NL' LOCALE 'C.UTF-8'"
    with pg_scratch_database(request.getfixturevalue("pg_admin_dsn"), "sb_nl", options) as url:
        yield url


async def test_listing_order_is_byte_order_whatever_the_database_collation(
        dutch_database_url: str, tmp_path: Path) -> None:
    """Entity listings and their pages come in the ids' byte order on both stores, also on a PostgreSQL database
    created with a language collation (decision 0702)."""
    ids = [f"urn:ngsi-ld:Device:{suffix}" for suffix in ("a", "B", "b", "A", "_x", "Z9", "z1")]
    app = build_app(StackContext(settings=_settings(dutch_database_url, tmp_path)), expose=("broker",))
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://broker.test") as client:
        r = await client.post(f"{BASE}/entityOperations/create", content=orjson.dumps(
            [device(0, 1.0) | {"id": eid} for eid in ids]), headers={"Content-Type": "application/json"})
        assert r.status_code == 201, r.text
        listed = [e["id"] for e in (await client.get(f"{BASE}/entities", params={"type": "Device"})).json()]
        paged = []
        for offset in range(0, len(ids), 3):
            page = await client.get(f"{BASE}/entities", params={"type": "Device", "limit": 3, "offset": offset})
            paged += [e["id"] for e in page.json()]
    expected = sorted(ids, key=lambda eid: eid.encode())
    assert listed == expected
    assert paged == expected
