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

The history rows are taken apart in SQL (SQLite ``json_each``, PostgreSQL ``jsonb_each``/``jsonb_array_elements``):
the database hands back one row per instance with its JSON text, and Python only brings ``observedAt`` to the stored
form (a pattern check when it already is, as the broker writes it) before the insert — no JSON parsing and
re-serialising per instance in Python, which cost as much as the notification rendering and ran on the write path's
event loop (docs/decisions/0605).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from typing import Final

from sleutelbos.broker.database import BrokerDatabase
from sleutelbos.broker.temporal.instants import instant

log = logging.getLogger("sleutelbos.broker.temporal")

_CANONICAL: Final = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")

# One row per instance of the history rows in (cursor, upper], in history and document order, without the markers
# of deleted attributes (``deletedAt`` and no ``type``).
_EXPLODE_SQLITE = (
    "SELECT h.seq, h.tenant, h.entity_id, a.key, json_extract(i.value, '$.datasetId'),"
    " json_extract(i.value, '$.observedAt'), h.modified_at, i.value"
    " FROM broker_entity_history h, json_each(CAST(h.instances AS TEXT)) a, json_each(a.value) i"
    " WHERE h.seq > ? AND h.seq <= ? AND h.instances IS NOT NULL AND a.type = 'array'"
    " AND (json_type(i.value, '$.deletedAt') IS NULL OR json_type(i.value, '$.type') IS NOT NULL)"
    " ORDER BY h.seq, a.id, i.id")
_EXPLODE_POSTGRES = (
    "SELECT h.seq, h.tenant, h.entity_id, a.key, i.value->>'datasetId', i.value->>'observedAt', h.modified_at,"
    " i.value::text"
    " FROM broker_entity_history h, jsonb_each(h.instances) WITH ORDINALITY a(key, value, n),"
    " jsonb_array_elements(a.value) WITH ORDINALITY i(value, n)"
    " WHERE h.seq > ? AND h.seq <= ? AND h.instances IS NOT NULL AND jsonb_typeof(a.value) = 'array'"
    " AND (NOT jsonb_exists(i.value, 'deletedAt') OR jsonb_exists(i.value, 'type'))"
    " ORDER BY h.seq, a.n, i.n")


def _stored_instant(value: str | None) -> str | None:
    return value if value is None or _CANONICAL.fullmatch(value) else instant(value)


INSERT = ("INSERT INTO broker_temporal_instances (history_seq, tenant, entity_id, attr, dataset_id, observed_at,"
          " modified_at, instance) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")


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
            bounds = await tx.fetch(
                "SELECT MAX(seq), COUNT(*) FROM (SELECT seq FROM broker_entity_history WHERE seq > ? ORDER BY seq"
                " LIMIT ?) s", [cursor, self.batch])
            upper, count = bounds[0]
            if not count:
                return 0
            explode = _EXPLODE_POSTGRES if self.db.dialect == "postgresql" else _EXPLODE_SQLITE
            out = [(r[0], r[1], r[2], r[3], r[4], _stored_instant(r[5]), r[6], r[7])
                   for r in await tx.fetch(explode, [cursor, upper])]
            await tx.executemany(INSERT, out)
            await tx.execute("UPDATE broker_temporal_cursor SET seq = ? WHERE name = 'history'", [int(upper)])
            return int(count)
