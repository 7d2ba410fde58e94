"""Single-entity read-modify-writes (``EntityStore.update_entity``, decision 0514) lose no update under concurrency.

PostgreSQL runs them optimistically: the document is read without a transaction and written back by one statement
only if the row's version is still the one read. These tests write between that read and that statement on purpose
(from another thread, on another connection, while the change function runs), so that they fail if the version
check is gone; and they run many concurrent PATCHes of one entity through the API on both stores.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from sleutelbos.broker.entity import Entity
from sleutelbos.broker.notifications.changes import Change, ObservedStore
from sleutelbos.broker.store import EntityStore, HistoryRow, open_store
from sleutelbos.broker.store.base import update_in_transaction
from tests.broker.conftest import BASE, Broker

EID = "urn:ngsi-ld:Device:contended"
NOW = "2026-11-29T00:00:00.000000Z"
ATTRS = 12
ROUNDS = 4


def prop(value: Any) -> list[dict[str, Any]]:
    return [{"type": "Property", "value": value, "createdAt": NOW, "modifiedAt": NOW}]


def set_attr(attr: str, value: Any) -> Callable[[Entity], HistoryRow]:
    """A change that sets one attribute (as ``update_attrs`` does) and says so in its history row."""

    def change(entity: Entity) -> HistoryRow:
        entity[attr] = prop(value)
        entity["modifiedAt"] = NOW
        return HistoryRow(entity["id"], NOW, {attr: prop(value)})

    return change


def write_from_elsewhere(database_url: str, attr: str, value: Any) -> None:
    """``attr`` := ``value`` through a second store on its own connections and event loop, in another thread; the
    caller (the first store's change function, on the first store's loop) blocks until it has committed."""

    async def write() -> None:
        other = open_store(database_url)
        await other.open()
        try:
            assert await other.update_entity("", EID, set_attr(attr, value))
        finally:
            await other.close()

    thread = threading.Thread(target=asyncio.run, args=(write(),))
    thread.start()
    thread.join(30)
    assert not thread.is_alive()


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[EntityStore]:
    s = open_store(database_url)
    await s.open()
    async with s.transaction("") as tx:
        entity = {"id": EID, "type": ["https://example.org/Device"], "createdAt": NOW, "modifiedAt": NOW}
        await tx.upsert([entity])
        await tx.history([HistoryRow(EID, NOW, {})])
    try:
        yield s
    finally:
        await s.close()


def interleaving(database_url: str, times: int, attr: str, value: Any) -> tuple[Callable[[Entity], HistoryRow],
                                                                                 list[Entity]]:
    """A change setting ``attr`` := ``value`` which, on each of its first ``times`` calls, first has another writer
    set ``other-<n>`` on the same entity — after the store read the entity, before it writes it back."""
    seen: list[Entity] = []

    def change(entity: Entity) -> HistoryRow:
        seen.append(dict(entity))
        if len(seen) <= times:
            write_from_elsewhere(database_url, f"https://example.org/other-{len(seen)}", len(seen))
        return set_attr(attr, value)(entity)

    return change, seen


# SQLite runs the change inside its write transaction: no other write can come in between
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_write_between_read_and_update_is_not_lost(store: EntityStore, database_url: str) -> None:
    change, seen = interleaving(database_url, 1, "https://example.org/mine", "mine")
    assert await store.update_entity("", EID, change)
    entity = await store.get("", EID)
    assert entity is not None
    assert entity["https://example.org/other-1"][0]["value"] == 1  # the other write, kept
    assert entity["https://example.org/mine"][0]["value"] == "mine"
    assert len(seen) == 2  # applied again to a fresh read, which holds the other write
    assert "https://example.org/other-1" not in seen[0] and "https://example.org/other-1" in seen[1]
    assert await store.history_count("", EID) == 3  # creation, the other write, this one: no history of the try


# only PostgreSQL has the optimistic path
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_repeated_conflicts_end_in_the_locking_transaction(store: EntityStore, database_url: str) -> None:
    tries = store.OPTIMISTIC_TRIES  # type: ignore[attr-defined]
    change, seen = interleaving(database_url, tries, "https://example.org/mine", "mine")
    assert await store.update_entity("", EID, change)
    entity = await store.get("", EID)
    assert entity is not None
    assert [entity[f"https://example.org/other-{n}"][0]["value"] for n in range(1, tries + 1)] == \
        list(range(1, tries + 1))
    assert entity["https://example.org/mine"][0]["value"] == "mine"
    assert len(seen) == tries + 1
    assert await store.history_count("", EID) == 1 + tries + 1


async def test_missing_entity_and_no_op(store: EntityStore) -> None:
    called: list[Entity] = []
    assert not await store.update_entity("", "urn:ngsi-ld:Device:none", lambda e: called.append(e))  # type: ignore
    assert called == []
    assert await store.update_entity("", EID, lambda e: None)  # nothing to write: nothing written
    assert await store.history_count("", EID) == 1


async def test_a_type_change_updates_the_type_index(store: EntityStore) -> None:
    """Types changed by an update leave the optimistic statement (which does not touch them) for the upsert."""

    def add_type(entity: Entity) -> HistoryRow:
        entity["type"] = [*entity["type"], "https://example.org/Meter"]
        return HistoryRow(EID, NOW, {})

    assert await store.update_entity("", EID, add_type)
    from sleutelbos.broker.store import EntityFilter

    found, _ = await store.query("", EntityFilter(type_groups=[["https://example.org/Meter"]]))
    assert [e["id"] for e in found] == [EID]


async def test_concurrent_patches_of_one_entity_lose_nothing(broker: Broker) -> None:
    """Many clients PATCH different attributes of one entity at once: every attribute ends with the last value its
    client wrote, and every PATCH has its history row."""
    body: dict[str, Any] = {"id": EID, "type": "Device"}
    body.update({f"a{i}": {"type": "Property", "value": -1} for i in range(ATTRS)})
    assert (await broker.create(body)).status_code == 201

    async def client(i: int) -> None:
        for n in range(ROUNDS):
            r = await broker.client.patch(f"{BASE}/entities/{EID}/attrs",
                                          json={f"a{i}": {"type": "Property", "value": n}})
            assert r.status_code == 204, r.text

    await asyncio.gather(*(client(i) for i in range(ATTRS)))
    got = (await broker.client.get(f"{BASE}/entities/{EID}", params={"options": "keyValues"})).json()
    assert {f"a{i}": got[f"a{i}"] for i in range(ATTRS)} == {f"a{i}": ROUNDS - 1 for i in range(ATTRS)}
    assert await broker.service.store.history_count("", EID) == 1 + ATTRS * ROUNDS


async def test_concurrent_partial_updates_and_appends_lose_nothing(broker: Broker) -> None:
    """The same for the other single-entity writes that share the path: partial attribute update (5.6.4), append
    (5.6.3), merge (5.6.17)."""
    body: dict[str, Any] = {"id": EID, "type": "Device"}
    body.update({f"p{i}": {"type": "Property", "value": -1} for i in range(ATTRS)})
    assert (await broker.create(body)).status_code == 201

    async def client(i: int) -> None:
        for n in range(ROUNDS):
            r = await broker.client.patch(f"{BASE}/entities/{EID}/attrs/p{i}", json={"value": n})
            assert r.status_code == 204, r.text
            r = await broker.client.post(f"{BASE}/entities/{EID}/attrs",
                                         json={f"n{i}": {"type": "Property", "value": n}})
            assert r.status_code == 204, r.text
            r = await broker.client.patch(f"{BASE}/entities/{EID}", json={f"m{i}": {"type": "Property", "value": n}},
                                          headers={"Content-Type": "application/merge-patch+json"})
            assert r.status_code == 204, r.text

    await asyncio.gather(*(client(i) for i in range(ATTRS)))
    got = (await broker.client.get(f"{BASE}/entities/{EID}", params={"options": "keyValues"})).json()
    for prefix in "pnm":
        assert {f"{prefix}{i}": got.get(f"{prefix}{i}") for i in range(ATTRS)} == \
            {f"{prefix}{i}": ROUNDS - 1 for i in range(ATTRS)}
    assert await broker.service.store.history_count("", EID) == 1 + 3 * ATTRS * ROUNDS


class Listener:
    """A change-feed listener that observes every tenant and keeps what it is given."""

    def __init__(self) -> None:
        self.published: list[list[Change]] = []

    def observes(self, tenant: str) -> bool:
        return True

    def wants_previous(self, tenant: str) -> bool:
        return True

    def publish(self, changes: list[Change]) -> None:
        self.published.append(changes)


async def test_the_change_feed_sees_an_update_as_from_a_transaction(store: EntityStore) -> None:
    """``ObservedStore.update_entity`` (the store's own way) publishes what the same change publishes when it runs
    in an observed transaction: two identical entities, each change applied to one each way."""
    listener = Listener()
    observed = ObservedStore(store, listener)
    twin = "urn:ngsi-ld:Device:twin"
    async with store.transaction("") as tx:
        await tx.upsert([{**(await store.get("", EID) or {}), "id": twin}])

    def same(fast: Change, slow: Change) -> None:
        def plain(c: Change) -> tuple[Any, ...]:
            return ({**(c.previous or {}), "id": "-"}, {**(c.entity or {}), "id": "-"}, c.attrs, c.created,
                    c.deleted, c.at)

        assert plain(fast) == plain(slow)

    for value, (fast, slow) in ((1, (EID, twin)), (2, (twin, EID))):
        await observed.update_entity("", fast, set_attr("https://example.org/a", value))
        await update_in_transaction(observed, "", slow, set_attr("https://example.org/a", value))
        [fast_change], [slow_change] = listener.published[-2:]
        same(fast_change, slow_change)
        assert fast_change.entity_id == fast and slow_change.entity_id == slow
        assert fast_change.attrs == {"https://example.org/a": "attributeUpdated" if value == 2 else "attributeCreated"}
    assert fast_change.previous["https://example.org/a"][0]["value"] == 1  # type: ignore[index]
    await observed.update_entity("", EID, lambda e: None)
    await update_in_transaction(observed, "", EID, lambda e: None)
    assert listener.published[-2:] == [[], []]


# only PostgreSQL has the optimistic path
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_the_change_feed_records_the_try_that_was_written(store: EntityStore, database_url: str) -> None:
    listener = Listener()
    change, _ = interleaving(database_url, 1, "https://example.org/mine", "mine")
    assert await ObservedStore(store, listener).update_entity("", EID, change)
    [[c]] = listener.published
    assert c.previous is not None and "https://example.org/other-1" in c.previous  # the fresh read, not the first
    assert c.entity is not None and c.entity["https://example.org/other-1"][0]["value"] == 1
    assert c.attrs == {"https://example.org/mine": "attributeCreated"}


async def test_an_error_of_the_change_keeps_the_connections(store: EntityStore) -> None:
    """A change that raises (a PATCH of a missing attribute: ResourceNotFound) writes nothing; on PostgreSQL the
    lean connection it read on is kept, not dropped as broken (that would cost a reconnect per such request)."""
    from sleutelbos.broker.errors import ResourceNotFound

    def missing(entity: Entity) -> HistoryRow:
        raise ResourceNotFound("no such attribute")

    readers = getattr(store, "readers", None)
    await store.get("", EID)  # a lean connection opened and idle
    before = list(readers._idle) if readers else []
    for _ in range(3):
        with pytest.raises(ResourceNotFound):
            await store.update_entity("", EID, missing)
    assert await store.history_count("", EID) == 1
    if readers:
        assert before and all(not c.is_closed() for c in before)
        assert readers._open == len(before)


async def test_concurrent_replaces_keep_created_at_and_the_type(broker: Broker) -> None:
    """PUT /entities/{id} (5.6.18) shares the path: replaces racing each other each write a whole entity, keep the
    creation time, take the stored type when the body has none, and each has its history row."""
    assert (await broker.create({"id": EID, "type": "Device", "a": {"type": "Property", "value": 0}})).status_code \
        == 201
    created = (await broker.client.get(f"{BASE}/entities/{EID}", params={"options": "sysAttrs"})).json()["createdAt"]

    async def put(i: int) -> None:
        r = await broker.client.put(f"{BASE}/entities/{EID}", json={"a": {"type": "Property", "value": i}})
        assert r.status_code == 204, r.text

    await asyncio.gather(*(put(i) for i in range(1, 13)))
    got = (await broker.client.get(f"{BASE}/entities/{EID}", params={"options": "sysAttrs"})).json()
    assert got["createdAt"] == created and got["type"] == "Device" and got["a"]["value"] in range(1, 13)
    assert await broker.service.store.history_count("", EID) == 13
