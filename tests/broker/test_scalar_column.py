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
