"""PostgreSQL: the attribute history is natively partitioned by month (``modified_at``) and the retention setting drops
whole partitions older than it, leaving recent history and the temporal API intact."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from tests.broker.test_notifications import running_broker

from sleutelbos.broker.temporal.partitions import HistoryPartitions

OLD_ROW = ("INSERT INTO broker_attribute_instances (tenant, entity_id, attr, dataset_id, observed_at, modified_at,"
           " deleted, instance) VALUES ('', 'urn:ngsi-ld:Device:old', 'https://example.org/power', NULL, ?, ?, FALSE,"
           " '{\"type\": \"Property\", \"value\": 1}'::jsonb)")


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_partitions_and_retention(database_url: str, tmp_path: Path) -> None:
    async with running_broker(database_url, tmp_path, broker_temporal_retention_days=400) as broker:
        temporal = broker.app.state.context.services["broker.temporal"]
        db = temporal.db
        assert await db.fetchval("SELECT COUNT(*) FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid"
                                 " WHERE c.relname = 'broker_attribute_instances'") == 1
        this_month = f"broker_attribute_instances_p{datetime.now(UTC):%Y%m}"
        assert this_month in await temporal.partitions.existing()

        made = await temporal.partitions.ensure_months(date(2020, 1, 1), date(2020, 3, 31))
        assert made == [f"broker_attribute_instances_p2020{m:02d}" for m in (1, 2, 3)]
        for month in (1, 2, 3):
            stamp = f"2020-{month:02d}-15T00:00:00.000000Z"
            await db.execute(OLD_ROW, [stamp, stamp])
        r = await broker.client.post("/ngsi-ld/v1/temporal/entities", headers={"Content-Type": "application/json"},
                                     content=json.dumps({"id": "urn:ngsi-ld:Device:new", "type": "Device", "power": [
                                         {"type": "Property", "value": 5, "observedAt": "2026-01-01T00:00:00Z"}]}))
        assert r.status_code == 201
        assert await db.fetchval("SELECT COUNT(*) FROM broker_attribute_instances_p202002") == 1

        dropped = await HistoryPartitions(db, 400).drop_expired(date(2021, 4, 15))
        assert dropped == [f"broker_attribute_instances_p2020{m:02d}" for m in (1, 2)]  # March ended < 400 days ago
        assert await db.fetchval("SELECT COUNT(*) FROM broker_attribute_instances WHERE entity_id ="
                                 " 'urn:ngsi-ld:Device:old'") == 1
        await temporal.partitions.maintain()  # with today's date: every 2020 month is past the retention
        assert not [p for p in await temporal.partitions.existing() if p.startswith("broker_attribute_instances_p2020")]
        assert await db.fetchval("SELECT COUNT(*) FROM broker_attribute_instances WHERE entity_id ="
                                 " 'urn:ngsi-ld:Device:old'") == 0
        got = (await broker.client.get("/ngsi-ld/v1/temporal/entities/urn:ngsi-ld:Device:new")).json()
        assert [i["value"] for i in got["power"]] == [5]
