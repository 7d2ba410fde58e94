"""PostgreSQL: the temporal tables (the core's history and its per-attribute materialisation) are natively partitioned
by month (``modified_at``) and the retention setting drops whole partitions older than it, leaving recent history and
the temporal API intact."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from sleutelbos.broker.temporal.partitions import HistoryPartitions
from tests.broker.test_notifications import running_broker

OLD_ROW = ("INSERT INTO broker_entity_history (tenant, entity_id, modified_at, deleted, instances) VALUES"
           " ('', 'urn:ngsi-ld:Device:old', ?, FALSE, jsonb_build_object('https://example.org/power',"
           " jsonb_build_array(jsonb_build_object('type', 'Property', 'value', 1, 'observedAt', ?::text))))")
TABLES = ("broker_entity_history", "broker_temporal_instances")


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_partitions_and_retention(database_url: str, tmp_path: Path) -> None:
    async with running_broker(database_url, tmp_path, broker_temporal_retention_days=400) as broker:
        temporal = broker.app.state.context.services["broker.temporal"]
        db = temporal.db
        assert await db.fetchval("SELECT COUNT(*) FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid"
                                 " WHERE c.relname IN ('broker_attribute_instances', 'broker_entity_history',"
                                 " 'broker_temporal_instances')") == 2
        for table in TABLES:
            assert f"{table}_p{datetime.now(UTC):%Y%m}" in await temporal.partitions.existing()

        made = await temporal.partitions.ensure_months(date(2020, 1, 1), date(2020, 3, 31))
        assert sorted(made) == sorted(f"{t}_p2020{m:02d}" for m in (1, 2, 3) for t in TABLES)
        for month in (1, 2, 3):
            stamp = f"2020-{month:02d}-15T00:00:00.000000Z"
            await db.execute(OLD_ROW, [stamp, stamp])
        old = await broker.client.get("/ngsi-ld/v1/temporal/entities/urn:ngsi-ld:Device:old")
        assert [i["observedAt"] for i in old.json()["https://example.org/power"]] == [
            f"2020-{m:02d}-15T00:00:00.000000Z" for m in (1, 2, 3)]
        r = await broker.client.post("/ngsi-ld/v1/temporal/entities", headers={"Content-Type": "application/json"},
                                     content=json.dumps({"id": "urn:ngsi-ld:Device:new", "type": "Device", "power": [
                                         {"type": "Property", "value": 5, "observedAt": "2026-01-01T00:00:00Z"}]}))
        assert r.status_code == 201
        for table in TABLES:
            assert await db.fetchval(f"SELECT COUNT(*) FROM {table}_p202002") == 1  # noqa: S608

        dropped = await HistoryPartitions(db, 400).drop_expired(date(2021, 4, 15))
        assert sorted(dropped) == sorted(f"{t}_p2020{m:02d}" for m in (1, 2) for t in TABLES)  # March: < 400 days
        for table in TABLES:
            assert await db.fetchval(f"SELECT COUNT(*) FROM {table} WHERE entity_id = 'urn:ngsi-ld:Device:old'") == 1  # noqa: S608
        await temporal.partitions.maintain()  # with today's date: every 2020 month is past the retention
        assert not [p for p in await temporal.partitions.existing() if "_p2020" in p]
        for table in TABLES:
            assert await db.fetchval(f"SELECT COUNT(*) FROM {table} WHERE entity_id = 'urn:ngsi-ld:Device:old'") == 0  # noqa: S608
        got = (await broker.client.get("/ngsi-ld/v1/temporal/entities/urn:ngsi-ld:Device:new")).json()
        assert [i["value"] for i in got["power"]] == [5]
