"""The per-attribute materialisation of the core's history (docs/decisions/0600): every attribute instance of every
``broker_entity_history`` row becomes one ``broker_temporal_instances`` row, so that temporal queries are index range
scans per ``(entity, attribute, time)`` and aggregation is plain SQL ``GROUP BY``.

It runs off the write path — the core keeps writing one history row per entity change (decision 0502) — and follows
the history by ``seq`` from the position kept in ``broker_temporal_cursor``: a background task catches up a few
times a second, and every temporal read catches up first, so a client reads its own writes. Each step runs in the
store's write transaction (cursor move and inserted rows commit together, so a crash repeats nothing and skips
nothing). On PostgreSQL the step first takes ``LOCK TABLE broker_entity_history IN SHARE MODE``: it waits for the
writers in flight, so no history row with a smaller ``seq`` can commit after the cursor has passed it (sequence
values are handed out in order but committed out of order); on SQLite the single writer gives that for free.
Instances recorded as deleted (``deletedAt``) and whole-entity deletions are not instances and are not materialised.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import orjson

from sleutelbos.broker.database import BrokerDatabase
from sleutelbos.broker.temporal.instants import instant

log = logging.getLogger("sleutelbos.broker.temporal")

INSERT = ("INSERT INTO broker_temporal_instances (history_seq, tenant, entity_id, attr, dataset_id, observed_at,"
          " modified_at, instance) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")


def instance_rows(seq: int, tenant: str, entity_id: str, modified_at: str, instances: Any) -> list[tuple[Any, ...]]:
    """The ``broker_temporal_instances`` rows of one history row."""
    if instances is None:
        return []
    doc = orjson.loads(instances) if isinstance(instances, str | bytes) else instances
    out = []
    for attr, items in doc.items():
        for inst in items:
            if "deletedAt" in inst and "type" not in inst:
                continue
            out.append((seq, tenant, entity_id, attr, inst.get("datasetId"), instant(inst.get("observedAt")),
                        modified_at, orjson.dumps(inst).decode()))
    return out

_ISSUED = ("SELECT (SELECT seq FROM broker_temporal_cursor WHERE name = 'history'),"
           " (SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM broker_entity_history_seq_seq)")


class HistoryMaterialiser:
    def __init__(self, db: BrokerDatabase, batch: int = 500, interval_s: float = 0.25) -> None:
        self.db = db
        self.batch = batch
        self.interval_s = interval_s
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._follow(), name="temporal materialiser")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _follow(self) -> None:
        while True:
            try:
                await self.catch_up()
            except Exception:
                log.exception("temporal materialisation step failed")
            await asyncio.sleep(self.interval_s)

    async def catch_up(self) -> int:
        """Materialise every history row written so far; returns how many history rows were read."""
        async with self._lock:
            total = 0
            while True:
                if self.db.dialect == "postgresql" and total == 0:
                    # Cheap first look: the history's sequence bounds every seq handed out so far, so when it is
                    # not past the cursor nothing can be waiting — no scan of the history's partitions per read.
                    cursor, issued = (await self.db.fetch(_ISSUED))[0]
                    if issued <= cursor:
                        return total
                rows = await self.db.fetch("SELECT (SELECT seq FROM broker_temporal_cursor WHERE name = 'history'),"
                                           " (SELECT MAX(seq) FROM broker_entity_history)")
                cursor, latest = rows[0]
                if latest is None or latest <= cursor:
                    return total
                done = await self._step()
                total += done
                if done == 0:
                    return total
                await asyncio.sleep(0)  # short steps, and the write path runs between them

    async def _step(self) -> int:
        async with self.db.transaction() as tx:
            if self.db.dialect == "postgresql":
                await tx.execute("LOCK TABLE broker_entity_history IN SHARE MODE")
            cursor = (await tx.fetch("SELECT seq FROM broker_temporal_cursor WHERE name = 'history'"))[0][0]
            rows = await tx.fetch(
                "SELECT seq, tenant, entity_id, modified_at, instances FROM broker_entity_history WHERE seq > ?"
                " ORDER BY seq LIMIT ?", [cursor, self.batch])
            if not rows:
                return 0
            out = [r for row in rows for r in instance_rows(int(row[0]), row[1], row[2], row[3], row[4])]
            await tx.executemany(INSERT, out)
            await tx.execute("UPDATE broker_temporal_cursor SET seq = ? WHERE name = 'history'", [int(rows[-1][0])])
            return len(rows)
