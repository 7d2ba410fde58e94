"""Monthly partitions of the attribute history on PostgreSQL, and retention (ARCHITECTURE: "native partitioning of
the temporal tables").

``broker_temporal_instances`` is ``PARTITION BY RANGE (modified_at)`` (migration in :mod:`.schema`); partitions are
named ``broker_temporal_instances_pYYYYMM`` and hold ``[first of month, first of next month)`` in the broker's text
timestamps. :meth:`HistoryPartitions.maintain` creates the partitions from last month to three months ahead, so that
writes never fall in the DEFAULT partition in normal running, and with a retention of N days drops every partition
whose month ended more than N days ago — one ``DROP TABLE`` instead of deleting rows. Rows older than the oldest
partition (a bulk load of old readings) stay in DEFAULT until :meth:`ensure_months` is asked to cover them before
the load. SQLite has no partitions: retention there is not applied.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, date, datetime, timedelta

from sleutelbos.broker.database import BrokerDatabase

log = logging.getLogger("sleutelbos.broker.temporal")
TABLES = ("broker_temporal_instances", "broker_entity_history")
_NAME = re.compile(r"^(broker_temporal_instances|broker_entity_history)_p(\d{4})(\d{2})$")


def _month_start(d: date) -> date:
    return d.replace(day=1)


def _next_month(d: date) -> date:
    return (d.replace(day=28) + timedelta(days=4)).replace(day=1)


class HistoryPartitions:
    def __init__(self, db: BrokerDatabase, retention_days: int | None) -> None:
        self.db = db
        self.retention_days = retention_days

    async def existing(self) -> list[str]:
        rows = await self.db.fetch(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname IN ('broker_temporal_instances',"
            " 'broker_entity_history')"
            " AND p.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())")
        return sorted(r[0] for r in rows)

    async def ensure_months(self, first: date, last: date) -> list[str]:
        """Create the monthly partitions covering ``[first, last]`` that do not exist yet."""
        have = set(await self.existing())
        made = []
        month = _month_start(first)
        while month <= last:
            for table in TABLES:
                name = f"{table}_p{month:%Y%m}"
                if name not in have:
                    upper = _next_month(month)
                    await self.db.execute(
                        f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF {table}"
                        f" FOR VALUES FROM ('{month.isoformat()}') TO ('{upper.isoformat()}')")
                    made.append(name)
            month = _next_month(month)
        return made

    async def drop_expired(self, today: date | None = None) -> list[str]:
        """Drop the partitions whose whole month is older than the retention; returns their names."""
        if self.retention_days is None:
            return []
        horizon = (today or datetime.now(UTC).date()) - timedelta(days=self.retention_days)
        dropped = []
        for name in await self.existing():
            match = _NAME.match(name)
            if match is None:
                continue
            month = date(int(match.group(2)), int(match.group(3)), 1)
            if _next_month(month) <= horizon:
                await self.db.execute(f"DROP TABLE {name}")
                dropped.append(name)
        if dropped:
            log.info("history partitions dropped by retention", extra={"partitions": dropped})
        return dropped

    async def maintain(self) -> None:
        today = datetime.now(UTC).date()
        try:
            await self.ensure_months(_month_start(today) - timedelta(days=1), today + timedelta(days=92))
        except Exception:  # rows for a new month already in DEFAULT: leave them there, keep running
            log.exception("could not create history partitions")
        await self.drop_expired(today)
