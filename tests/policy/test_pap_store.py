"""The PAP store on SQLite and on PostgreSQL: the same behaviour, including refusals that change nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sleutelbos.policy.store import Domain, PolicyStore, StaleRevision, StoreConflict, StoredPolicy, open_store


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'policy.sqlite'}"
    return request.getfixturevalue("pg_database_url")


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[PolicyStore]:
    store = open_store(database_url)
    await store.open()
    yield store
    await store.close()


def domain(domain_id: str, external_id: str | None = None) -> Domain:
    return Domain(domain_id, external_id, "a domain", "root", None, 0, datetime.now(UTC))


ROOT = StoredPolicy("root", "0.1.0", "PolicySet", b"<PolicySet/>")


async def test_domains_are_created_found_and_deleted_with_their_policies(store: PolicyStore) -> None:
    await store.create_domain(domain("d1", "app-1"), [ROOT])
    await store.create_domain(domain("d2"), [ROOT])
    found = await store.get_domain("d1")
    assert found is not None and found.external_id == "app-1" and found.root_policy_id == "root"
    assert [d.domain_id for d in await store.list_domains("app-1")] == ["d1"]
    assert {d.domain_id for d in await store.list_domains()} == {"d1", "d2"}
    assert await store.revisions() == {"d1": 0, "d2": 0}
    assert await store.policies("d1") == [ROOT]
    assert await store.delete_domain("d1") is True
    assert await store.get_domain("d1") is None
    assert await store.policies("d1") == []
    assert await store.delete_domain("d1") is False


async def test_external_id_is_unique(store: PolicyStore) -> None:
    await store.create_domain(domain("d1", "app-1"), [ROOT])
    with pytest.raises(StoreConflict):
        await store.create_domain(domain("d2", "app-1"), [ROOT])
    assert await store.get_domain("d2") is None
    assert await store.policies("d2") == []


async def test_each_change_bumps_the_revision_and_a_stale_one_is_refused(store: PolicyStore) -> None:
    await store.create_domain(domain("d1"), [ROOT])
    p1 = StoredPolicy("p", "1.0", "Policy", b"<Policy v1/>")
    await store.add_policy("d1", p1, expected_revision=0)
    with pytest.raises(StaleRevision):
        await store.add_policy("d1", StoredPolicy("p", "2.0", "Policy", b"<Policy v2/>"), expected_revision=0)
    assert [p.version for p in await store.policies("d1") if p.policy_id == "p"] == ["1.0"]
    await store.set_root("d1", "p", "1.0", expected_revision=1)
    stored = await store.get_domain("d1")
    assert stored is not None
    assert (stored.root_policy_id, stored.root_policy_version, stored.revision) == ("p", "1.0", 2)
    with pytest.raises(StaleRevision):
        await store.set_root("d1", "root", None, expected_revision=1)


async def test_a_duplicate_version_is_refused_and_changes_nothing(store: PolicyStore) -> None:
    await store.create_domain(domain("d1"), [ROOT])
    with pytest.raises(StoreConflict):
        await store.add_policy("d1", StoredPolicy("root", "0.1.0", "PolicySet", b"<other/>"), expected_revision=0)
    assert await store.revisions() == {"d1": 0}  # the revision bump was rolled back with the insert
    assert await store.policies("d1") == [ROOT]


async def test_policy_versions_are_deleted_selectively(store: PolicyStore) -> None:
    await store.create_domain(domain("d1"), [ROOT])
    for revision, version in enumerate(("1.0", "1.1", "2.0")):
        await store.add_policy("d1", StoredPolicy("p", version, "Policy", version.encode()), revision)
    await store.delete_policies("d1", "p", ["1.0", "2.0"], expected_revision=3)
    assert [(p.policy_id, p.version, p.document) for p in await store.policies("d1")] == [
        ("p", "1.1", b"1.1"), ("root", "0.1.0", b"<PolicySet/>")
    ]
    await store.set_properties("d1", "new-external", "new description", expected_revision=4)
    stored = await store.get_domain("d1")
    assert stored is not None and (stored.external_id, stored.description) == ("new-external", "new description")


async def test_sqlite_data_survives_a_restart(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'nested' / 'policy.sqlite'}"
    store = open_store(url)
    await store.open()
    await store.create_domain(domain("d1", "app"), [ROOT])
    await store.close()
    again = open_store(url)
    await again.open()
    try:
        assert (await again.get_domain("d1")) is not None and await again.policies("d1") == [ROOT]
    finally:
        await again.close()
