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


def open_store(url: str, sqlite_synchronous: str = "NORMAL", sqlite_page_size: int | None = None) -> EntityStore:
    """The store for a database URL (not yet opened: ``await store.open()``); ``sqlite_page_size``: of a new SQLite
    file (None: the store's default)."""
    parsed = parse_database_url(url)
    if parsed.kind == "sqlite":
        from sleutelbos.broker.store.sqlite import STORE_PAGE_SIZE, SqliteEntityStore

        return SqliteEntityStore(parsed.path, synchronous=sqlite_synchronous,
                                 page_size=sqlite_page_size or STORE_PAGE_SIZE)
    from sleutelbos.broker.store.postgres import PostgresEntityStore

    return PostgresEntityStore(parsed.dsn)
