"""Custody's metadata store: purpose, version, NIST state and times of every key, keyed by the token object's
CKA_ID (hex). The key material is in the token; this store only says what each object is *for*.

SQLite (stdlib ``sqlite3``) in the embedded mode, PostgreSQL (``psycopg``) when configured. It is synchronous on
purpose: PKCS#11 calls block anyway, the ``SignerProvider`` protocol is synchronous, and custody must be usable
as soon as the composition root has built it (before any event loop runs a ``start()``). Schema versions go
through :func:`sleutelbos.core.database.migrate_sqlite` / ``migrate_postgres`` like every other component.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sleutelbos.core.database import DatabaseUrl, migrate_postgres, migrate_sqlite, parse_database_url
from sleutelbos.custody.audit_bridge import run_coroutine_blocking
from sleutelbos.custody.models import KeyAlgorithm, KeyRecord, KeyState

COMPONENT = "custody"

_KEYS = """
CREATE TABLE custody_keys (
    key_id TEXT PRIMARY KEY,
    series TEXT NOT NULL,
    purpose TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    version INTEGER NOT NULL,
    state TEXT NOT NULL,
    label TEXT NOT NULL,
    meter_id TEXT,
    extractable_reason TEXT,
    created_at {ts} NOT NULL,
    activated_at {ts},
    deactivated_at {ts},
    compromised_at {ts},
    destroyed_at {ts},
    details TEXT NOT NULL DEFAULT '{{}}',
    wrapped {blob},
    wrapped_by TEXT,
    UNIQUE (series, version)
);
CREATE INDEX custody_keys_purpose ON custody_keys (purpose, state);
CREATE INDEX custody_keys_meter ON custody_keys (meter_id);
CREATE TABLE custody_usage (
    key_id TEXT NOT NULL,
    operation TEXT NOT NULL,
    count BIGINT NOT NULL,
    PRIMARY KEY (key_id, operation)
);
"""

_CAMPAIGNS = """
CREATE TABLE custody_campaigns (
    campaign_id TEXT PRIMARY KEY,
    meter_group TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT NOT NULL,
    actor TEXT NOT NULL,
    total INTEGER NOT NULL,
    created_at {ts} NOT NULL,
    finished_at {ts}
);
CREATE TABLE custody_campaign_meters (
    campaign_id TEXT NOT NULL REFERENCES custody_campaigns (campaign_id),
    meter_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    state TEXT NOT NULL,
    planned TEXT,
    payload {blob},
    updated_at {ts},
    PRIMARY KEY (campaign_id, meter_id)
);
CREATE INDEX custody_campaign_meters_state ON custody_campaign_meters (campaign_id, state, position);
"""


def _migrations(kind: str) -> list[str]:
    ts = "TEXT" if kind == "sqlite" else "TIMESTAMPTZ"
    blob = "BLOB" if kind == "sqlite" else "BYTEA"
    return [_KEYS.format(ts=ts, blob=blob), _CAMPAIGNS.format(ts=ts, blob=blob)]


def utcnow() -> datetime:
    return datetime.now(UTC)


COLUMNS = (
    "key_id, series, purpose, algorithm, version, state, label, meter_id, extractable_reason, created_at, "
    "activated_at, deactivated_at, compromised_at, destroyed_at, details, wrapped, wrapped_by"
)


class KeyMetadataStore:
    """Synchronous access to ``custody_keys`` and the campaign tables on SQLite or PostgreSQL."""

    def __init__(self, url: str) -> None:
        self.url: DatabaseUrl = parse_database_url(url)
        self._lock = threading.RLock()
        self._migrate()
        if self.url.kind == "sqlite":
            path = str(self.url.path) if self.url.path else ":memory:"
            if self.url.path:
                self.url.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn: Any = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("PRAGMA busy_timeout=5000")
            self._mark = "?"
            if self.url.path is None:
                for script in _migrations("sqlite"):
                    self._conn.executescript(script)
        else:
            import psycopg

            self._conn = psycopg.connect(self.url.dsn, autocommit=True)
            self._mark = "%s"

    @property
    def kind(self) -> str:
        return self.url.kind

    def _migrate(self) -> None:
        migrations = _migrations(self.url.kind)
        if self.url.kind == "sqlite":
            if self.url.path is None:
                return  # an in-memory database is migrated on its own connection below
            self.url.path.parent.mkdir(parents=True, exist_ok=True)

            async def sqlite_migrate() -> None:
                import aiosqlite

                async with aiosqlite.connect(str(self.url.path)) as conn:
                    await migrate_sqlite(conn, COMPONENT, migrations)

            run_coroutine_blocking(sqlite_migrate)
        else:

            async def pg_migrate() -> None:
                import asyncpg

                conn = await asyncpg.connect(self.url.dsn)
                try:
                    await migrate_postgres(conn, COMPONENT, migrations)
                finally:
                    await conn.close()

            run_coroutine_blocking(pg_migrate)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # --- SQL plumbing ------------------------------------------------------------------------------------

    def _sql(self, sql: str) -> str:
        return sql.replace("?", self._mark) if self._mark != "?" else sql

    def _ts(self, value: datetime | None) -> Any:
        if value is None:
            return None
        return value.isoformat() if self.kind == "sqlite" else value

    @staticmethod
    def _parse_ts(value: Any) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, datetime):
            return value
        return datetime.fromisoformat(value)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            cur = self._conn.execute(self._sql(sql), tuple(params))
            rows = cur.fetchall() if cur.description else []
            return [tuple(r) for r in rows]

    def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        with self._lock:
            if self.kind == "sqlite":
                self._conn.executemany(sql, rows)
            else:
                with self._conn.cursor() as cur:
                    cur.executemany(self._sql(sql), rows)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic unit (``BEGIN IMMEDIATE`` on SQLite so concurrent writers queue instead of failing)."""
        with self._lock:
            if self.kind == "sqlite":
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    yield
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
                self._conn.execute("COMMIT")
            else:
                with self._conn.transaction():
                    yield

    # --- keys --------------------------------------------------------------------------------------------

    def _record(self, row: tuple[Any, ...]) -> KeyRecord:
        return KeyRecord(
            key_id=row[0], series=row[1], purpose=row[2], algorithm=KeyAlgorithm(row[3]), version=int(row[4]),
            state=KeyState(row[5]), label=row[6], meter_id=row[7], extractable_reason=row[8],
            created_at=self._parse_ts(row[9]),  # type: ignore[arg-type]
            activated_at=self._parse_ts(row[10]), deactivated_at=self._parse_ts(row[11]),
            compromised_at=self._parse_ts(row[12]), destroyed_at=self._parse_ts(row[13]),
            details=json.loads(row[14] or "{}"),
            wrapped=bytes(row[15]) if row[15] is not None else None, wrapped_by=row[16],
        )

    def _row(self, record: KeyRecord) -> tuple[Any, ...]:
        return (
            record.key_id, record.series, record.purpose, record.algorithm.value, record.version,
            record.state.value, record.label, record.meter_id, record.extractable_reason,
            self._ts(record.created_at), self._ts(record.activated_at), self._ts(record.deactivated_at),
            self._ts(record.compromised_at), self._ts(record.destroyed_at), json.dumps(record.details),
            record.wrapped, record.wrapped_by,
        )

    def insert(self, record: KeyRecord) -> None:
        self.insert_many([record])

    def set_state(self, key_id: str, state: KeyState, at: datetime) -> None:
        column = {
            KeyState.ACTIVE: "activated_at",
            KeyState.DEACTIVATED: "deactivated_at",
            KeyState.COMPROMISED: "compromised_at",
            KeyState.DESTROYED: "destroyed_at",
        }.get(state)
        if column is None:
            self.execute("UPDATE custody_keys SET state = ? WHERE key_id = ?", (state.value, key_id))
        else:
            self.execute(
                f"UPDATE custody_keys SET state = ?, {column} = ? WHERE key_id = ?",  # noqa: S608 - fixed column
                (state.value, self._ts(at), key_id),
            )

    def wrapped_by_count(self, key_id: str) -> int:
        """How many stored (not destroyed) keys exist only as blobs under ``key_id``."""
        rows = self.execute(
            "SELECT COUNT(*) FROM custody_keys WHERE wrapped_by = ? AND wrapped IS NOT NULL", (key_id,)
        )
        return int(rows[0][0])

    def forget_wrapped(self, key_id: str) -> None:
        self.execute("UPDATE custody_keys SET wrapped = NULL WHERE key_id = ?", (key_id,))

    def insert_many(self, records: Sequence[KeyRecord]) -> None:
        self.execute_many(
            f"INSERT INTO custody_keys ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608
            [self._row(r) for r in records],
        )

    def meters_with_keys(self, meter_ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(meter_ids), 500):
            chunk = list(meter_ids[start : start + 500])
            marks = ", ".join("?" for _ in chunk)
            rows = self.execute(
                f"SELECT DISTINCT meter_id FROM custody_keys WHERE meter_id IN ({marks})", chunk  # noqa: S608
            )
            found.update(r[0] for r in rows)
        return found

    def get(self, key_id: str) -> KeyRecord | None:
        rows = self.execute(f"SELECT {COLUMNS} FROM custody_keys WHERE key_id = ?", (key_id,))  # noqa: S608
        return self._record(rows[0]) if rows else None

    def series(self, series: str) -> list[KeyRecord]:
        rows = self.execute(
            f"SELECT {COLUMNS} FROM custody_keys WHERE series = ? ORDER BY version", (series,)  # noqa: S608
        )
        return [self._record(r) for r in rows]

    def by_meter(self, meter_id: str) -> list[KeyRecord]:
        rows = self.execute(
            f"SELECT {COLUMNS} FROM custody_keys WHERE meter_id = ? ORDER BY series, version",  # noqa: S608
            (meter_id,),
        )
        return [self._record(r) for r in rows]

    def by_meters(self, meter_ids: Sequence[str], *, states: Sequence[KeyState] = ()) -> dict[str, list[KeyRecord]]:
        """Several meters' records (only those in ``states`` when given) in one query per 500 meters: a campaign
        batch plans from one read, and reading only the current versions keeps that read the same size however
        many campaigns a meter has been through."""
        found: dict[str, list[KeyRecord]] = {m: [] for m in meter_ids}
        state_filter = f" AND state IN ({', '.join('?' for _ in states)})" if states else ""
        for start in range(0, len(meter_ids), 500):
            chunk = list(meter_ids[start : start + 500])
            marks = ", ".join("?" for _ in chunk)
            rows = self.execute(
                f"SELECT {COLUMNS} FROM custody_keys WHERE meter_id IN ({marks}){state_filter} "  # noqa: S608
                "ORDER BY series, version",
                [*chunk, *(s.value for s in states)],
            )
            for row in rows:
                found[row[7]].append(self._record(row))
        return found

    def latest_versions(self, meter_ids: Sequence[str]) -> dict[str, dict[str, int]]:
        """Highest version per meter and purpose, whatever its state (a new version must exceed every old one)."""
        found: dict[str, dict[str, int]] = {m: {} for m in meter_ids}
        for start in range(0, len(meter_ids), 500):
            chunk = list(meter_ids[start : start + 500])
            marks = ", ".join("?" for _ in chunk)
            rows = self.execute(
                f"SELECT meter_id, purpose, MAX(version) FROM custody_keys WHERE meter_id IN ({marks}) "  # noqa: S608
                "GROUP BY meter_id, purpose",
                chunk,
            )
            for meter_id, purpose, version in rows:
                found[meter_id][purpose] = int(version)
        return found

    def all(self, *, include_meters: bool = True, limit: int | None = None, offset: int = 0) -> list[KeyRecord]:
        where = "" if include_meters else "WHERE meter_id IS NULL"
        page = f" LIMIT {int(limit)} OFFSET {int(offset)}" if limit is not None else ""
        rows = self.execute(
            f"SELECT {COLUMNS} FROM custody_keys {where} ORDER BY series, version{page}"  # noqa: S608
        )
        return [self._record(r) for r in rows]

    # --- per-message usage counts -----------------------------------------------------------------------

    def add_usage(self, counts: dict[tuple[str, str], int]) -> None:
        with self.transaction():
            for (key_id, operation), n in counts.items():
                self.execute(
                    "INSERT INTO custody_usage (key_id, operation, count) VALUES (?, ?, ?) "
                    "ON CONFLICT (key_id, operation) DO UPDATE SET count = custody_usage.count + excluded.count",
                    (key_id, operation, n),
                )

    def usage(self) -> dict[tuple[str, str], int]:
        return {(k, op): int(n) for k, op, n in self.execute("SELECT key_id, operation, count FROM custody_usage")}
