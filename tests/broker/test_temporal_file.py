"""SQLite database files keep the temporal tables in a file of their own (docs/decisions/0710), now the buckets of
history chunks (0720): the migration from a data directory of the versions before (the instances in the store's file,
then in the temporal file; and the crash window between the two files' migrations), the flush's write step and the
entity writes on separate writer locks, and ``DELETE /temporal/entities/{id}`` across the two files with a crash
between its two commits. The shared in-memory database keeps one database."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite
import httpx
import pytest

from sleutelbos.broker.store.sqlite import (
    MIGRATIONS,
    SCALARS_MIGRATIONS,
    STORE_PAGE_SIZE,
    TEMPORAL_PAGE_SIZE,
    SqliteEntityStore,
    temporal_path,
)
from sleutelbos.core.database import migrate_sqlite
from sleutelbos.stack import StackContext, build_app
from tests.broker.conftest import BASE, _settings
from tests.broker.test_temporal_materialiser import create, meter, patch

CHUNK_TABLES = {"broker_temporal_buckets", "broker_temporal_chunks"}
INSTANCE_TABLES = {"broker_temporal_instances", "broker_temporal_cursor"}

JSON = {"Content-Type": "application/json"}
POWER = "https://uri.etsi.org/ngsi-ld/default-context/power"


def reading(value: float, minute: int) -> dict[str, Any]:
    return {"type": "Property", "value": value, "observedAt": f"2026-03-01T00:{minute:02d}:00.000000Z"}


@asynccontextmanager
async def running(url: str, tmp_path: Path, **settings: Any) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    app = build_app(StackContext(settings=_settings(url, tmp_path, **settings)), expose=("broker",))
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://broker.test") as client:
        yield client, app.state.context.services["broker.temporal"]


async def instances(client: httpx.AsyncClient, i: int) -> list[tuple[str, float]]:
    """(instanceId, value) of the meter's power instances in time order; [] when the meter has no evolution."""
    r = await client.get(f"{BASE}/temporal/entities/{meter(i)}", params={"attrs": "power"})
    if r.status_code == 404:
        return []
    assert r.status_code == 200, r.text
    got = r.json().get("power", [])
    return [(inst["instanceId"], inst["value"]) for inst in (got if isinstance(got, list) else [got])]


def tables(path: Path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        conn.close()


def history_rows(path: Path, entity_id: str) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM broker_entity_history WHERE entity_id = ?",
                                (entity_id,)).fetchone()[0])
    finally:
        conn.close()


async def previous_version(path: Path) -> None:
    """A data directory as the previous schema version left it (broker versions 1-3: the temporal tables in the
    store's file): meter 1 with three history rows, the first two materialised (instance ids 10 and 11, the first
    modified through the temporal API since: value 5.0 instead of 0.0), the cursor after them."""
    async with aiosqlite.connect(path, isolation_level=None) as conn:
        await conn.execute("PRAGMA journal_mode=WAL")
        assert await migrate_sqlite(conn, "broker", MIGRATIONS) == 3
        await migrate_sqlite(conn, "broker_scalars", SCALARS_MIGRATIONS)
    entity = {"id": meter(1), "type": ["https://uri.etsi.org/ngsi-ld/default-context/Device"],
              "createdAt": "2026-03-01T00:00:00.000000Z", "modifiedAt": "2026-03-01T00:02:00.000000Z",
              POWER: [reading(2.0, 2)]}
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("INSERT INTO broker_entities (tenant, id, type, types, created_at, modified_at, doc)"
                     " VALUES ('', ?, ?, ?, ?, ?, ?)", (meter(1), entity["type"][0], json.dumps(entity["type"]),
                                                        entity["createdAt"], entity["modifiedAt"], json.dumps(entity)))
        for seq in (1, 2, 3):
            conn.execute("INSERT INTO broker_entity_history (seq, tenant, entity_id, modified_at, instances)"
                         " VALUES (?, '', ?, ?, ?)", (seq, meter(1), f"2026-03-01T00:0{seq - 1}:00.000000Z",
                                                      json.dumps({POWER: [reading(float(seq - 1), seq - 1)]})))
        for seq, history_seq, value in ((10, 1, 5.0), (11, 2, 1.0)):
            inst = reading(value, history_seq - 1)
            conn.execute("INSERT INTO broker_temporal_instances (seq, history_seq, tenant, entity_id, attr,"
                         " observed_at, modified_at, instance) VALUES (?, ?, '', ?, ?, ?, ?, ?)",
                         (seq, history_seq, meter(1), POWER, inst["observedAt"], inst["observedAt"],
                          json.dumps(inst)))
        conn.execute("UPDATE broker_temporal_cursor SET seq = 2")
    conn.close()


# the materialised instances (the modified value survives) in bucket 1, the row past the old cursor in the head; the
# instance ids in the form of the chunks (decision 0720): history row, attribute, place
EXPECTED_AFTER_MIGRATION = [("urn:ngsi-ld:Instance:1-0-0", 5.0), ("urn:ngsi-ld:Instance:2-0-0", 1.0),
                            ("urn:ngsi-ld:Instance:3-0-0", 2.0)]


async def test_previous_version_moves_instances_and_cursor_into_the_temporal_file(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = tmp_path / "broker.sqlite"
    await previous_version(db)
    caplog.set_level(logging.INFO, logger="sleutelbos.broker.store")
    caplog.set_level(logging.INFO, logger="sleutelbos.broker.temporal")
    async with running(f"sqlite:///{db}", tmp_path) as (client, _):
        # the operator sees the one-off copy (it can take minutes on a large history) start and end
        moves = [r.getMessage() for r in caplog.records if r.name == "sleutelbos.broker.store"]
        assert moves[0] == "moving the temporal instances of broker.sqlite into broker-temporal.sqlite as history" \
            " chunks (once, before the broker serves)"
        assert moves[1].startswith("temporal history in broker-temporal.sqlite after ")
        left = [r.getMessage() for r in caplog.records if r.name == "sleutelbos.broker.temporal"]
        assert "2 history rows already in buckets leave the head (before the broker serves)" in left
        # copied, not rebuilt from the history (the modified value survives), into bucket 1 up to the old cursor (rows
        # 1-2 not taken twice), and the history row past the cursor in the head
        assert await instances(client, 1) == EXPECTED_AFTER_MIGRATION
        await patch(client, 1, 3.0, 3)
        assert [v for _, v in await instances(client, 1)] == [5.0, 1.0, 2.0, 3.0]
    conn = sqlite3.connect(db)  # the rows bucket 1 holds left the head when the flusher started
    assert conn.execute("SELECT COUNT(*) FROM broker_entity_history WHERE seq <= 2").fetchone()[0] == 0
    conn.close()
    assert temporal_path(db) == tmp_path / "broker-temporal.sqlite"
    assert tables(temporal_path(db)) >= CHUNK_TABLES
    assert not INSTANCE_TABLES & (tables(db) | tables(temporal_path(db)))
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT MAX(version) FROM schema_migrations WHERE component = 'broker'").fetchone()[0] == 5
    conn.close()
    conn = sqlite3.connect(temporal_path(db))
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    versions = conn.execute("SELECT version FROM schema_migrations WHERE component = 'broker_temporal'").fetchall()
    assert versions == [(1,), (2,)]
    conn.close()


async def test_a_new_data_directory_moves_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="sleutelbos.broker.store")
    async with running(f"sqlite:///{tmp_path / 'broker.sqlite'}", tmp_path) as (client, _):
        await create(client, 1)
        assert [v for _, v in await instances(client, 1)] == [0.0]
    assert not [r for r in caplog.records if r.name == "sleutelbos.broker.store"]
    assert tables(tmp_path / "broker-temporal.sqlite") >= CHUNK_TABLES


def pragma(path: Path, name: str) -> Any:
    """The value of ``PRAGMA name`` of a SQLite file, read on a connection of its own."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(f"PRAGMA {name}").fetchone()[0]
    finally:
        conn.close()


def page_size(path: Path) -> int:
    return int(pragma(path, "page_size"))


async def test_new_files_get_16_kib_pages_and_an_older_file_keeps_its_own(tmp_path: Path) -> None:
    """Decision 0760: a new data directory's two files have 16 KiB pages; a store file created before (4 KiB, SQLite's
    default) keeps its pages — SQLite cannot change them in WAL mode — and serves as before; the setting
    ``broker_sqlite_page_size`` chooses the size of a new store file."""
    new = tmp_path / "new" / "broker.sqlite"
    async with running(f"sqlite:///{new}", tmp_path / "new") as (client, _):
        await create(client, 1)
    assert (page_size(new), page_size(temporal_path(new))) == (STORE_PAGE_SIZE, TEMPORAL_PAGE_SIZE) == (16384, 16384)
    old = tmp_path / "old" / "broker.sqlite"
    old.parent.mkdir()
    await previous_version(old)
    assert page_size(old) == 4096
    async with running(f"sqlite:///{old}", tmp_path / "old") as (client, _):
        await patch(client, 1, 3.0, 3)
        assert [v for _, v in await instances(client, 1)] == [5.0, 1.0, 2.0, 3.0]
    assert page_size(old) == 4096
    # an operator who wants the cheaper single update chooses the size for a new data directory
    chosen = tmp_path / "chosen" / "broker.sqlite"
    async with running(f"sqlite:///{chosen}", tmp_path / "chosen", broker_sqlite_page_size=4096) as (client, _):
        await create(client, 1)
        assert [v for _, v in await instances(client, 1)] == [0.0]
    assert page_size(chosen) == 4096


def test_a_page_size_sqlite_would_ignore_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="page_size must be a power of two"):
        SqliteEntityStore(tmp_path / "broker.sqlite", page_size=10000)
    with pytest.raises(ValueError, match="broker_sqlite_page_size"):
        _settings(f"sqlite:///{tmp_path / 'broker.sqlite'}", tmp_path, broker_sqlite_page_size=1000)


async def test_migration_crash_after_the_copy_before_the_drop(tmp_path: Path) -> None:
    """The copy into the temporal file (and its conversion into bucket 1) committed, the store's file not yet
    migrated (a crash between the two files' migrations): the next start does not copy again and drops the old
    tables."""
    db = tmp_path / "broker.sqlite"
    await previous_version(db)
    await SqliteEntityStore(db)._migrate_temporal_file()
    assert "broker_temporal_instances" in tables(db) and tables(temporal_path(db)) >= CHUNK_TABLES
    async with running(f"sqlite:///{db}", tmp_path) as (client, _):
        assert await instances(client, 1) == EXPECTED_AFTER_MIGRATION
    assert "broker_temporal_instances" not in tables(db)


async def test_a_lost_temporal_file_keeps_the_head(tmp_path: Path) -> None:
    """The temporal file holds the flushed history alone (the store's file deletes the rows it flushed): losing it
    loses the buckets, not the head — the history since the last flush — nor the entities."""
    db = tmp_path / "broker.sqlite"
    url = f"sqlite:///{db}"
    async with running(url, tmp_path) as (client, temporal):
        await create(client, 1)
        assert await temporal.materialiser.flush() == 1
        await patch(client, 1, 1.0, 1)
        assert [v for _, v in await instances(client, 1)] == [0.0, 1.0]
    for suffix in ("", "-wal", "-shm"):
        Path(f"{temporal_path(db)}{suffix}").unlink(missing_ok=True)  # noqa: ASYNC240 - a test's setup
    async with running(url, tmp_path) as (client, _):
        assert [v for _, v in await instances(client, 1)] == [1.0]
        assert (await client.get(f"{BASE}/entities/{meter(1)}")).json()["power"]["value"] == 1.0
        await patch(client, 1, 2.0, 2)
        assert [v for _, v in await instances(client, 1)] == [1.0, 2.0]


async def test_write_step_and_entity_writes_take_separate_writer_locks(tmp_path: Path) -> None:
    """The flush's write step does not wait for the store's writer lock, and the entity writes do not wait for a
    transaction holding the temporal file's."""
    db = tmp_path / "broker.sqlite"
    async with running(f"sqlite:///{db}", tmp_path) as (client, temporal):
        flusher = temporal.materialiser
        await create(client, 1)
        await patch(client, 1, 1.0, 1)
        # the background task waits; an entity writer holds the store's lock; the write step's own lock
        async with flusher._lock, temporal.db.store._lock, temporal.db.temporal_lock:
            # a hang guard: the write step reads the store's file, it does not write it
            assert await asyncio.wait_for(flusher._on_thread(flusher._write_step), 10) == 2
        # a writer of the temporal file holding its SQLite lock (as the write step does while it commits): the
        # entity writes and reads go on; the store's connection does not even have the file attached
        other = sqlite3.connect(temporal_path(db), isolation_level=None)
        try:
            async with flusher._lock, temporal.db.temporal_lock:  # no step of ours meanwhile
                other.execute("BEGIN IMMEDIATE")
                other.execute("UPDATE broker_temporal_buckets SET seq_hi = seq_hi")
                await asyncio.wait_for(patch(client, 1, 2.0, 2), 5)
                r = await client.get(f"{BASE}/entities/{meter(1)}")
                assert r.json()["power"]["value"] == 2.0
        finally:
            if other.in_transaction:
                other.execute("ROLLBACK")
            other.close()
        assert [v for _, v in await instances(client, 1)] == [0.0, 1.0, 2.0]


async def test_delete_temporal_entity_crash_between_the_two_files(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """``DELETE /temporal/entities/{id}`` deletes the chunks (temporal file) first, then the head rows (store's
    file). Failing between the two commits leaves the head's part of the evolution, and the repeated request
    completes."""
    from sleutelbos.broker.temporal.chunks import ChunkedHistory

    db = tmp_path / "broker.sqlite"
    url = f"sqlite:///{db}"
    async with running(url, tmp_path) as (client, temporal):
        for i in (1, 2):
            await create(client, i)
        await temporal.materialiser.flush()
        for i in (1, 2):
            await patch(client, i, 1.0, 1)
        assert len(await instances(client, 1)) == 2

        async def crash(self: ChunkedHistory, *args: Any) -> int:
            raise RuntimeError("crash between the two commits")

        monkeypatch.setattr(ChunkedHistory, "_delete_head", crash)
        r = await client.delete(f"{BASE}/temporal/entities/{meter(1)}")
        assert r.status_code == 500  # the failure logged, the client told the delete did not complete
        monkeypatch.undo()
        assert [v for _, v in await instances(client, 1)] == [1.0]  # the head's part
    assert history_rows(db, meter(1)) == 2  # the head row, and the core's record of the entity's deletion
    async with running(url, tmp_path) as (client, _):
        assert [v for _, v in await instances(client, 1)] == [1.0]
        assert [v for _, v in await instances(client, 2)] == [0.0, 1.0]
        r = await client.delete(f"{BASE}/temporal/entities/{meter(1)}")
        assert r.status_code == 204, r.text
        assert await instances(client, 1) == []
    assert history_rows(db, meter(1)) == 0


async def test_instance_modification_writes_only_the_temporal_file(tmp_path: Path) -> None:
    """Modifying and deleting flushed instances is a transaction of the temporal file: it does not wait for an entity
    writer holding the store's lock."""
    db = tmp_path / "broker.sqlite"
    async with running(f"sqlite:///{db}", tmp_path) as (client, temporal):
        await create(client, 1)
        await patch(client, 1, 1.0, 1)
        await temporal.materialiser.flush()
        (first, _), (second, _) = await instances(client, 1)
        async with temporal.db.store._lock:
            r = await asyncio.wait_for(client.patch(
                f"{BASE}/temporal/entities/{meter(1)}/attrs/power/{first}",
                content=json.dumps({"type": "Property", "value": 7.0}), headers=JSON), 5)
            assert r.status_code == 204, r.text
            r = await asyncio.wait_for(client.delete(f"{BASE}/temporal/entities/{meter(1)}/attrs/power/{second}"), 5)
            assert r.status_code == 204, r.text
        assert await instances(client, 1) == [(first, 7.0)]


async def test_in_memory_database_keeps_one_database(tmp_path: Path) -> None:
    async with running("sqlite:///:memory:", tmp_path) as (client, temporal):
        assert not temporal.db.temporal_apart
        await create(client, 1)
        await patch(client, 1, 1.0, 1)
        assert await temporal.materialiser.flush() == 2
        await patch(client, 1, 2.0, 2)
        assert [v for _, v in await instances(client, 1)] == [0.0, 1.0, 2.0]
        assert (await client.delete(f"{BASE}/temporal/entities/{meter(1)}")).status_code == 204
        assert await instances(client, 1) == []
    assert not list(tmp_path.glob("*temporal*"))  # noqa: ASYNC240 - a test's check


@pytest.mark.parametrize("url", ["file", "sqlite:///:memory:"])
async def test_deleting_the_latest_history_does_not_hand_its_seq_out_again(url: str, tmp_path: Path) -> None:
    """SQLite's history ``seq`` is a rowid (largest + 1): ``DELETE /temporal/entities/{id}`` of the entity with the
    latest history rows, after the cursor passed them, used to give the next change a ``seq`` the cursor was
    already past — never materialised. So does the flush, whose rows leave the head. A keeper row holds the
    largest ``seq``."""
    url = f"sqlite:///{tmp_path / 'broker.sqlite'}" if url == "file" else url
    async with running(url, tmp_path) as (client, temporal):
        await create(client, 1)
        await create(client, 2)
        await create(client, 3)
        assert await temporal.materialiser.flush() == 3
        assert await temporal.store.history_count("") == 0  # flushed; the keeper row is no entity's history
        await patch(client, 1, 1.0, 1)  # a seq after the cursor: in the head
        assert (await client.delete(f"{BASE}/temporal/entities/{meter(1)}")).status_code == 204
        await patch(client, 2, 1.0, 1)
        assert [v for _, v in await instances(client, 2)] == [0.0, 1.0]
        assert await instances(client, 1) == []
        assert await temporal.store.history_count("") == 1


async def test_cursor_past_the_history_after_lost_commits(tmp_path: Path) -> None:
    """The store's file lost its last commits (a power loss with ``synchronous=NORMAL``) while the temporal file
    kept the flush that took them: the cursor is past the largest history ``seq``. The next start keeps that
    ``seq`` taken, so that new changes come after the cursor and are seen."""
    db = tmp_path / "broker.sqlite"
    url = f"sqlite:///{db}"
    async with running(url, tmp_path) as (client, temporal):
        await create(client, 1)
        await patch(client, 1, 1.0, 1)
        await patch(client, 1, 2.0, 2)
        await temporal.materialiser.flush()
        assert [v for _, v in await instances(client, 1)] == [0.0, 1.0, 2.0]
    conn = sqlite3.connect(db)
    with conn:  # the commits of the store's file since the first change, gone (the keeper row at seq 3 too)
        conn.execute("DELETE FROM broker_entity_history WHERE seq > 1")
    conn.close()
    async with running(url, tmp_path) as (client, _):
        await patch(client, 1, 3.0, 3)
        assert [v for _, v in await instances(client, 1)] == [0.0, 1.0, 2.0, 3.0]
