"""Persistence of subscriptions and of notifications waiting for a retry (tables in ``broker.temporal.schema``).

Subscriptions and their status survive a restart; a notification whose delivery failed is written to
``broker_notifications_pending`` before the dispatcher waits to retry it, so a receiver that was down when the broker
stopped still gets it, in order, after the restart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from sleutelbos.broker.database import BrokerDatabase
from sleutelbos.broker.errors import AlreadyExists


@dataclass(frozen=True)
class StoredSubscription:
    tenant: str
    doc: dict[str, Any]
    created_at: str
    modified_at: str
    times_sent: int
    times_failed: int
    last_notification: str | None
    last_success: str | None
    last_failure: str | None


@dataclass(frozen=True)
class PendingNotification:
    seq: int
    attempts: int
    payload: dict[str, Any]


def _json(value: Any) -> Any:
    return value if isinstance(value, dict) else orjson.loads(value)


class SubscriptionStore:
    def __init__(self, db: BrokerDatabase) -> None:
        self.db = db

    async def load(self) -> list[StoredSubscription]:
        rows = await self.db.fetch(
            "SELECT tenant, doc, created_at, modified_at, times_sent, times_failed, last_notification, last_success,"
            " last_failure FROM broker_subscriptions ORDER BY created_at, id")
        return [StoredSubscription(r[0], _json(r[1]), r[2], r[3], int(r[4]), int(r[5]), r[6], r[7], r[8])
                for r in rows]

    async def insert(self, tenant: str, sub_id: str, doc: dict[str, Any], now: str) -> None:
        async with self.db.transaction() as tx:
            if await tx.fetch("SELECT 1 FROM broker_subscriptions WHERE tenant = ? AND id = ?", (tenant, sub_id)):
                raise AlreadyExists(f"subscription {sub_id} already exists")
            await tx.execute("INSERT INTO broker_subscriptions (tenant, id, doc, created_at, modified_at)"
                             " VALUES (?, ?, ?, ?, ?)", (tenant, sub_id, orjson.dumps(doc).decode(), now, now))

    async def update(self, tenant: str, sub_id: str, doc: dict[str, Any], now: str) -> None:
        await self.db.execute("UPDATE broker_subscriptions SET doc = ?, modified_at = ? WHERE tenant = ? AND id = ?",
                              (orjson.dumps(doc).decode(), now, tenant, sub_id))

    async def delete(self, tenant: str, sub_id: str) -> None:
        async with self.db.transaction() as tx:
            await tx.execute("DELETE FROM broker_subscriptions WHERE tenant = ? AND id = ?", (tenant, sub_id))
            await tx.execute("DELETE FROM broker_notifications_pending WHERE tenant = ? AND subscription_id = ?",
                             (tenant, sub_id))

    async def save_status(self, rows: list[tuple[Any, ...]]) -> None:
        """``(times_sent, times_failed, last_notification, last_success, last_failure, tenant, id)`` per row."""
        async with self.db.transaction() as tx:
            await tx.executemany(
                "UPDATE broker_subscriptions SET times_sent = ?, times_failed = ?, last_notification = ?,"
                " last_success = ?, last_failure = ? WHERE tenant = ? AND id = ?", rows)

    async def add_pending(self, tenant: str, sub_id: str, payloads: list[dict[str, Any]], now: str) -> None:
        async with self.db.transaction() as tx:
            await tx.executemany(
                "INSERT INTO broker_notifications_pending (tenant, subscription_id, created_at, payload)"
                " VALUES (?, ?, ?, ?)", [(tenant, sub_id, now, orjson.dumps(p).decode()) for p in payloads])

    async def pending(self, tenant: str, sub_id: str, limit: int = 50) -> list[PendingNotification]:
        rows = await self.db.fetch(
            "SELECT seq, attempts, payload FROM broker_notifications_pending WHERE tenant = ? AND subscription_id = ?"
            " ORDER BY seq LIMIT ?", (tenant, sub_id, limit))
        return [PendingNotification(int(r[0]), int(r[1]), _json(r[2])) for r in rows]

    async def pending_count(self, tenant: str | None = None, sub_id: str | None = None) -> int:
        if tenant is None:
            return int(await self.db.fetchval("SELECT COUNT(*) FROM broker_notifications_pending"))
        return int(await self.db.fetchval(
            "SELECT COUNT(*) FROM broker_notifications_pending WHERE tenant = ? AND subscription_id = ?",
            (tenant, sub_id)))

    async def delivered(self, seq: int) -> None:
        await self.db.execute("DELETE FROM broker_notifications_pending WHERE seq = ?", (seq,))

    async def attempted(self, seq: int) -> None:
        await self.db.execute("UPDATE broker_notifications_pending SET attempts = attempts + 1 WHERE seq = ?", (seq,))
