"""Entity persistence: one interface (:class:`EntityStore`), SQLite and PostgreSQL implementations."""

from __future__ import annotations

from sleutelbos.broker.store.base import (
    DEFAULT_TENANT,
    EntityChange,
    EntityFilter,
    EntityStore,
    HistoryRow,
    SqlCondition,
    StoreTransaction,
)
from sleutelbos.core.database import parse_database_url

__all__ = [
    "DEFAULT_TENANT",
    "EntityChange",
    "EntityFilter",
    "EntityStore",
    "HistoryRow",
    "SqlCondition",
    "StoreTransaction",
    "open_store",
]


def open_store(url: str, sqlite_synchronous: str = "NORMAL") -> EntityStore:
    """The store for a database URL (not yet opened: ``await store.open()``)."""
    parsed = parse_database_url(url)
    if parsed.kind == "sqlite":
        from sleutelbos.broker.store.sqlite import SqliteEntityStore

        return SqliteEntityStore(parsed.path, synchronous=sqlite_synchronous)
    from sleutelbos.broker.store.postgres import PostgresEntityStore

    return PostgresEntityStore(parsed.dsn)
