"""The PAP service: validate, audit, store, swap — in that order, and nothing when a step refuses."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pap_support import RecordingAuditSink, action_request_json, referencing_set, simple_policy

from sleutelbos.core.protocols import Actor, AuditEvent, AuditUnavailable
from sleutelbos.policy.service import PolicyConflict, PolicyRejected, PolicyService, UnknownDomain, UnknownPolicy
from sleutelbos.policy.store import open_store

ADMIN = Actor("alice", organisation="gridco", kind="operator")


@pytest.fixture
def audit() -> RecordingAuditSink:
    return RecordingAuditSink()


@pytest.fixture
async def service(tmp_path: Path, audit: RecordingAuditSink) -> AsyncIterator[PolicyService]:
    service = PolicyService(open_store(f"sqlite:///{tmp_path / 'policy.sqlite'}"), audit)
    await service.start()
    yield service
    await service.stop()


async def decision(service: PolicyService, domain_id: str, action: str = "read") -> str:
    answer = (await service.pdp(domain_id)).decide_json(action_request_json(action))
    return answer.split(b'"Decision":"')[1].split(b'"')[0].decode()


async def test_a_new_domain_denies_everything(service: PolicyService, audit: RecordingAuditSink) -> None:
    domain = await service.create_domain(ADMIN, "app-1")
    assert await decision(service, domain.domain_id) == "Deny"
    assert [p.policy_id for p in await service.versions(domain.domain_id, "root")] == ["root"]
    assert audit.actions() == ["policy.domain.create"]
    assert audit.events[0].actor == ADMIN and audit.events[0].target == domain.domain_id
    with pytest.raises(PolicyConflict):
        await service.create_domain(ADMIN, "app-1")


async def test_versions_and_the_root_reference(service: PolicyService, audit: RecordingAuditSink) -> None:
    d = (await service.create_domain(ADMIN, None)).domain_id
    await service.add_policy(ADMIN, d, simple_policy("p", "1.0", "Permit"))
    assert await decision(service, d) == "Deny"  # not the root yet
    view = await service.set_root(ADMIN, d, "p")
    assert view.root.version == "1.0" and await decision(service, d) == "Permit"
    # without a pinned version the root follows the latest version
    await service.add_policy(ADMIN, d, simple_policy("p", "1.10", "Deny"))
    await service.add_policy(ADMIN, d, simple_policy("p", "1.9", "Permit"))
    assert await decision(service, d) == "Deny"  # 1.10 > 1.9
    await service.set_root(ADMIN, d, "p", "1.9")
    assert await decision(service, d) == "Permit"
    assert [p.version for p in await service.versions(d, "p")] == ["1.0", "1.9", "1.10"]
    assert (await service.policy(d, "p", "latest")).version == "1.10"
    assert audit.actions() == ["policy.domain.create", "policy.version.add", "policy.root.set",
                               "policy.version.add", "policy.version.add", "policy.root.set"]
    assert audit.events[1].target == f"{d}/p/1.0" and len(audit.events[1].details["sha256"]) == 64


async def test_an_invalid_policy_is_rejected_and_not_stored(service: PolicyService, audit: RecordingAuditSink) -> None:
    d = (await service.create_domain(ADMIN, None)).domain_id
    broken = simple_policy("p").replace(b"string-equal", b"string-equals")
    with pytest.raises(PolicyRejected, match="string-equals"):
        await service.add_policy(ADMIN, d, broken)
    with pytest.raises(PolicyRejected):
        await service.add_policy(ADMIN, d, b"<Policy")
    assert await service.policy_ids(d) == ["root"]
    assert audit.actions() == ["policy.domain.create"]


async def test_changes_that_would_break_the_pdp_are_refused(service: PolicyService) -> None:
    d = (await service.create_domain(ADMIN, None)).domain_id
    # a policy set referring to a policy that is not there may be stored, but it cannot become the root
    await service.add_policy(ADMIN, d, referencing_set("set", "1.0", "missing"))
    with pytest.raises(PolicyRejected, match="missing"):
        await service.set_root(ADMIN, d, "set")
    with pytest.raises(PolicyRejected, match="matches no stored policy"):
        await service.set_root(ADMIN, d, "nothing")
    assert await decision(service, d) == "Deny"
    # once the referenced policy exists the set can be the root; then the policy cannot be deleted
    await service.add_policy(ADMIN, d, simple_policy("missing", "1.0", "Permit"))
    view = await service.set_root(ADMIN, d, "set")
    assert [(a.policy_id, a.version) for a in view.applicable] == [("set", "1.0"), ("missing", "1.0")]
    assert await decision(service, d) == "Permit"
    with pytest.raises(PolicyConflict, match="still needs it"):
        await service.delete_policy(ADMIN, d, "missing")
    # a version the root does not use can go
    await service.add_policy(ADMIN, d, simple_policy("unused", "1.0"))
    assert [p.version for p in await service.delete_policy(ADMIN, d, "unused", "1.0")] == ["1.0"]
    with pytest.raises(UnknownPolicy):
        await service.versions(d, "unused")
    with pytest.raises(PolicyConflict, match="already exists"):
        await service.add_policy(ADMIN, d, simple_policy("missing", "1.0", "Deny"))


async def test_the_audit_record_comes_before_the_change(service: PolicyService, audit: RecordingAuditSink) -> None:
    d = (await service.create_domain(ADMIN, None)).domain_id
    seen: list[tuple[str, list[str], str]] = []

    async def probe(event: AuditEvent) -> None:
        stored = [f"{p.policy_id}/{p.version}" for p in await service.store.policies(d)]
        seen.append((event.action, stored, await decision(service, d)))

    audit.probe = probe
    await service.add_policy(ADMIN, d, simple_policy("p", "1.0", "Permit"))
    await service.set_root(ADMIN, d, "p")
    # when each event was recorded, its change was neither stored nor in force
    assert seen == [("policy.version.add", ["root/0.1.0"], "Deny"),
                    ("policy.root.set", ["p/1.0", "root/0.1.0"], "Deny")]


async def test_no_change_without_the_audit_log(service: PolicyService, audit: RecordingAuditSink) -> None:
    d = (await service.create_domain(ADMIN, None)).domain_id
    await service.add_policy(ADMIN, d, simple_policy("p", "1.0", "Permit"))
    audit.failing = True
    with pytest.raises(AuditUnavailable):
        await service.set_root(ADMIN, d, "p")
    with pytest.raises(AuditUnavailable):
        await service.add_policy(ADMIN, d, simple_policy("q", "1.0"))
    with pytest.raises(AuditUnavailable):
        await service.delete_domain(ADMIN, d)
    with pytest.raises(AuditUnavailable):
        await service.create_domain(ADMIN, "other")
    assert await decision(service, d) == "Deny"
    assert await service.policy_ids(d) == ["p", "root"]
    assert [x.domain_id for x in await service.domains()] == [d]
    service.audit_sink = None  # not configured at all: refused the same way
    with pytest.raises(AuditUnavailable):
        await service.set_root(ADMIN, d, "p")


async def test_a_pdp_in_use_is_never_changed_under_a_decision(service: PolicyService) -> None:
    d = (await service.create_domain(ADMIN, None)).domain_id
    await service.add_policy(ADMIN, d, simple_policy("p", "1.0", "Permit"))
    before = service.cached_pdp(d)
    await service.set_root(ADMIN, d, "p")
    after = service.cached_pdp(d)
    assert before is not None and after is not None and before is not after
    assert b"Deny" in before.decide_json(action_request_json("read"))  # the old one still answers as it did
    assert b"Permit" in after.decide_json(action_request_json("read"))


async def test_workers_sharing_a_database_pick_up_each_others_changes(tmp_path: Path,
                                                                      audit: RecordingAuditSink) -> None:
    url = f"sqlite:///{tmp_path / 'shared.sqlite'}"
    first, second = PolicyService(open_store(url), audit), PolicyService(open_store(url), audit)
    await first.start()
    await second.start()
    try:
        d = (await first.create_domain(ADMIN, None)).domain_id
        assert await decision(second, d) == "Deny"
        await first.add_policy(ADMIN, d, simple_policy("p", "1.0", "Permit"))
        await first.set_root(ADMIN, d, "p")
        assert await decision(second, d) == "Deny"  # its compiled PDP is the one it had
        assert await second.sync() == 1
        assert await decision(second, d) == "Permit"
        # a change made by the second worker against a stale view is re-validated on the fresh one
        await second.add_policy(ADMIN, d, simple_policy("p", "2.0", "Deny"))
        await first.sync()
        assert await decision(first, d) == "Deny"
        await first.delete_domain(ADMIN, d)
        assert await second.sync() == 1
        with pytest.raises(UnknownDomain):
            await second.pdp(d)
    finally:
        await first.stop()
        await second.stop()


async def test_a_change_raced_by_another_worker_is_revalidated_and_the_log_says_so(
        tmp_path: Path, audit: RecordingAuditSink) -> None:
    url = f"sqlite:///{tmp_path / 'shared.sqlite'}"
    first = PolicyService(open_store(url), audit)
    other_audit = RecordingAuditSink()
    second = PolicyService(open_store(url), other_audit)
    await first.start()
    await second.start()
    try:
        d = (await first.create_domain(ADMIN, None)).domain_id
        raced = False

        async def race(event: AuditEvent) -> None:
            # while the first worker records its change, the second one changes the domain under it
            nonlocal raced
            if event.action == "policy.version.add" and not raced:
                raced = True
                await second.add_policy(ADMIN, d, simple_policy("q", "1.0"))

        audit.probe = race
        await first.add_policy(ADMIN, d, simple_policy("p", "1.0"))
        assert [(e.action, e.decision) for e in audit.events[1:]] == [
            ("policy.version.add", "permit"), ("policy.version.add", "failed"), ("policy.version.add", "permit")]
        assert audit.events[2].reason == "StaleRevision"
        assert await first.policy_ids(d) == ["p", "q", "root"]
    finally:
        await first.stop()
        await second.stop()
