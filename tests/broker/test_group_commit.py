"""Group commit of the SQLite store's write transactions (decision 0740) on a real SQLite file: writes ready in the
same turn of the event loop commit together; a failed member takes only its own writes back; a failed COMMIT fails
every member and keeps none of their writes; a member cancelled while it waits still has its write committed and the
code after its transaction run; anything else that takes the writer lock finds the group committed."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sleutelbos.broker.context import ContextStore
from sleutelbos.broker.entity import now_iso
from sleutelbos.broker.store.group_commit import LONE_GROUPS
from sleutelbos.broker.store.sqlite import SqliteEntityStore
from sleutelbos.broker.validation import expand_entity
from tests.broker.test_batch_and_query import meter


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteEntityStore]:
    s = SqliteEntityStore(tmp_path / "b.sqlite", checkpoints=False)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


def entity(i: int) -> dict[str, object]:
    return expand_entity(meter(i, float(i)), ContextStore().core, now_iso())


def stored_ids(store: SqliteEntityStore) -> set[str]:
    """The ids committed to the file, as another connection sees them."""
    assert store.path is not None
    conn = sqlite3.connect(store.path)
    try:
        return {r[0] for r in conn.execute("SELECT id FROM broker_entities")}
    finally:
        conn.close()


async def write(store: SqliteEntityStore, i: int, *, fail: bool = False) -> None:
    async with store.transaction("") as tx:
        await tx.upsert([entity(i)])
        if fail:
            raise RuntimeError("this member fails after its write")


@pytest.fixture
def grouping(store: SqliteEntityStore) -> SqliteEntityStore:
    """The store with its commits deferred to the loop's turn, as under concurrent writers."""
    store._groups.deferring = True
    return store


async def test_writes_ready_together_commit_together(grouping: SqliteEntityStore) -> None:
    store = grouping
    groups = store._groups
    commits, members = groups.commits, groups.members
    await asyncio.gather(*(write(store, i) for i in range(20)))
    assert groups.members - members == 20
    assert groups.commits - commits == 1  # all twenty were ready in the same turn of the loop
    assert len(stored_ids(store)) == 20
    await write(store, 20)  # alone: a group of one
    assert groups.commits - commits == 2
    assert len(stored_ids(store)) == 21


async def test_the_deferral_adapts_to_lone_and_concurrent_writers(store: SqliteEntityStore) -> None:
    """A lone client's writes come in turns of the loop of their own (its requests one after the other): each
    commits as it leaves. Two commits in one turn mean writers at once: groups form from then on, until
    LONE_GROUPS groups in a row are of one member again."""
    groups = store._groups
    assert not groups.deferring
    deferred = groups.deferred
    for i in range(20):
        await write(store, i)
        assert f"urn:ngsi-ld:Device:m{i:03d}" in stored_ids(store)
        await asyncio.sleep(0)  # the client's next request: a later turn
    assert groups.deferred == deferred and not groups.deferring
    commits = groups.commits
    await asyncio.gather(*(write(store, 100 + i) for i in range(20)))  # the second commit of the turn switches
    assert groups.deferring
    assert groups.commits - commits == 3  # two at once, then the other eighteen in one group
    for i in range(LONE_GROUPS):
        assert groups.deferring
        await write(store, 200 + i)
        await asyncio.sleep(0)
    assert not groups.deferring
    assert len(stored_ids(store)) == 20 + 20 + LONE_GROUPS


async def test_a_failed_member_takes_back_only_its_own_writes(grouping: SqliteEntityStore) -> None:
    store = grouping
    results = await asyncio.gather(write(store, 0), write(store, 1, fail=True), write(store, 2),
                                   return_exceptions=True)
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], RuntimeError)
    assert stored_ids(store) == {"urn:ngsi-ld:Device:m000", "urn:ngsi-ld:Device:m002"}
    # the group's first member has no savepoint (it is alone while it runs): its failure rolls back the transaction,
    # and the next write opens a new group
    commits = store._groups.commits
    results = await asyncio.gather(write(store, 3, fail=True), write(store, 4), return_exceptions=True)
    assert isinstance(results[0], RuntimeError) and results[1] is None
    assert stored_ids(store) == {"urn:ngsi-ld:Device:m000", "urn:ngsi-ld:Device:m002", "urn:ngsi-ld:Device:m004"}
    assert store._groups.commits == commits + 1


async def test_a_failed_commit_fails_every_member_and_keeps_none(grouping: SqliteEntityStore) -> None:
    store = grouping
    """A deferred foreign key is checked at COMMIT: one member's violating row fails the whole group."""
    assert store._writer is not None
    store._writer.execute("CREATE TABLE t_parent (id INTEGER PRIMARY KEY)")
    store._writer.execute("CREATE TABLE t_child (parent INTEGER REFERENCES t_parent (id) DEFERRABLE INITIALLY"
                          " DEFERRED)")
    store._writer.execute("PRAGMA foreign_keys = ON")

    async def violate() -> None:
        async with store.transaction("") as tx:
            tx.conn.execute("INSERT INTO t_child VALUES (42)")  # type: ignore[attr-defined]

    results = await asyncio.gather(write(store, 0), violate(), write(store, 1), return_exceptions=True)
    assert all(isinstance(r, sqlite3.IntegrityError) for r in results), results
    assert stored_ids(store) == set()
    assert not store._writer.in_transaction
    await write(store, 3)  # the writer goes on
    assert stored_ids(store) == {"urn:ngsi-ld:Device:m003"}


async def test_a_member_cancelled_while_it_waits_is_committed_and_its_caller_goes_on(
        grouping: SqliteEntityStore) -> None:
    """The caller's code right after its transaction (the change feed's notifications) runs; the cancellation
    comes at its next ``await``."""
    store = grouping
    after: list[str] = []
    hold = asyncio.Event()
    holding = asyncio.Event()

    async def member() -> None:
        await write(store, 0)
        after.append("published")  # what the change feed does right after the transaction
        await asyncio.sleep(0)
        after.append("not reached")

    async def holder() -> None:  # a later member inside its transaction keeps the group from committing
        async with store.transaction("") as tx:
            await tx.upsert([entity(1)])
            holding.set()
            await hold.wait()

    waiting = asyncio.create_task(member())
    holds = asyncio.create_task(holder())
    await holding.wait()
    assert not waiting.done() and stored_ids(store) == set()  # waiting for the group's commit
    waiting.cancel()
    await asyncio.sleep(0.01)
    assert not waiting.done()  # still waiting: the group has not committed
    hold.set()
    await holds
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert after == ["published"]
    assert stored_ids(store) == {"urn:ngsi-ld:Device:m000", "urn:ngsi-ld:Device:m001"}


async def test_the_writer_lock_commits_the_open_group(grouping: SqliteEntityStore) -> None:
    store = grouping
    """The temporal flusher's steps take the writer lock to work on the writer connection or on the file's write
    lock through a connection of their own: they find the group's writes committed."""
    seen: list[tuple[bool, set[str]]] = []

    async def flush_step() -> None:
        async with store._lock:
            assert store._writer is not None
            seen.append((store._writer.in_transaction, stored_ids(store)))

    await asyncio.gather(write(store, 0), flush_step())
    assert seen == [(False, {"urn:ngsi-ld:Device:m000"})]
