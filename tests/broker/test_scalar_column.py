"""The SQLite store's scalar column (decision 0555): written with every entity, read by `q` first, and a row that
has none (written before the column existed) still answered from its document."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import orjson
import pytest

from tests.broker.conftest import BASE

V = "https://uri.etsi.org/ngsi-ld/default-context/"


def _meter(i: int, power: float) -> dict:
    return {"id": f"urn:ngsi-ld:Device:m{i}", "type": "Device",
            "activePowerImport": {"type": "Property", "value": power, "unitCode": "KWT"},
            "owner": {"type": "Relationship", "object": "urn:ngsi-ld:Organization:o"},
            "readings": [{"type": "Property", "value": 1}, {"type": "Property", "value": 2, "datasetId": "urn:d:2"}]}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_scalar_column_is_written_and_read(broker) -> None:
    r = await broker.client.post(f"{BASE}/entityOperations/upsert",
                                 content=orjson.dumps([_meter(i, i * 1.5) for i in range(4)]),
                                 headers={"Content-Type": "application/json"})
    assert r.status_code == 201, r.text
    path = Path(broker.database_url.split("///", 1)[1])
    conn = sqlite3.connect(path)
    scalars = orjson.loads(conn.execute("SELECT scalars FROM broker_entities WHERE id = 'urn:ngsi-ld:Device:m2'")
                           .fetchone()[0])
    # only the one-Property-with-a-scalar attributes: not the Relationship, not the two-instance Property
    assert scalars == {V + "activePowerImport": 3.0}

    async def ids(q: str) -> list[str]:
        r = await broker.client.get(f"{BASE}/entities", params={"type": "Device", "q": q})
        assert r.status_code == 200, r.text
        return sorted(e["id"].rsplit("m", 1)[1] for e in r.json())

    assert await ids("activePowerImport>2") == ["2", "3"]
    assert await ids("readings==2") == ["0", "1", "2", "3"]
    assert await ids("owner==urn:ngsi-ld:Organization:o;activePowerImport<1") == ["0"]
    # rows written before the column existed have NULL there: the document answers, with the same result
    conn.execute("UPDATE broker_entities SET scalars = NULL WHERE id IN ('urn:ngsi-ld:Device:m1', "
                 "'urn:ngsi-ld:Device:m3')")
    conn.commit()
    conn.close()
    assert await ids("activePowerImport>2") == ["2", "3"]
    assert await ids("activePowerImport<=1.5") == ["0", "1"]


async def test_upsert_changing_types_keeps_the_type_index(broker) -> None:
    """A stored entity's row is updated in place when its types and creation time are unchanged (decision 0516):
    an upsert or update that changes its type, or its further types, must still move it in the type index — queries
    by the old type stop finding it, by the new one find it — whether it is alone or in a batch with unchanged ones."""
    json_headers = {"Content-Type": "application/json"}

    async def upsert(entities: list[dict], options: str | None = None) -> None:
        params = {"options": options} if options else {}
        r = await broker.client.post(f"{BASE}/entityOperations/upsert", content=orjson.dumps(entities),
                                     headers=json_headers, params=params)
        assert r.status_code in (201, 204), r.text

    async def of_type(t: str) -> list[str]:
        r = await broker.client.get(f"{BASE}/entities", params={"type": t, "limit": 100})
        assert r.status_code == 200, r.text
        return sorted(e["id"].rsplit("m", 1)[1] for e in r.json())

    await upsert([_meter(i, 1.0) for i in range(3)])
    moved = {**_meter(1, 2.0), "type": "Meter"}
    await upsert([_meter(0, 2.0), moved, _meter(2, 2.0)])  # a batch: two unchanged, one changing type
    assert await of_type("Device") == ["0", "2"]
    assert await of_type("Meter") == ["1"]
    await upsert([{**_meter(2, 3.0), "type": ["Device", "Gauge"]}])  # alone, a further type added
    assert await of_type("Gauge") == ["2"]
    assert await of_type("Device") == ["0", "2"]
    await upsert([{**_meter(2, 4.0), "type": "Device"}])  # replaced: the further type goes
    assert await of_type("Gauge") == []
    await upsert([{"id": "urn:ngsi-ld:Device:m0", "type": "Meter",
                   "activePowerImport": {"type": "Property", "value": 9.0}}], options="update")
    assert await of_type("Meter") == ["0", "1"]  # options=update merges the types: m0 is both now
    assert await of_type("Device") == ["0", "2"]
    r = await broker.client.get(f"{BASE}/entities", params={"type": "Device", "q": "activePowerImport>5"})
    assert [e["id"] for e in r.json()] == ["urn:ngsi-ld:Device:m0"]
