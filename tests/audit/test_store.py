"""The log on both stores (SQLite and real PostgreSQL): appends, group commit, reopen, proofs, search, fail closed."""

from __future__ import annotations

import asyncio

import pytest
from audit_samples import ORIGIN, event

from sleutelbos.audit import merkle
from sleutelbos.audit.checkpoint import open_note
from sleutelbos.audit.service import AuditLog, InvalidProofRequest, InvalidSearch, TreeSizeBeyondLog
from sleutelbos.audit.store import open_store
from sleutelbos.core.protocols import Actor, AuditEvent, AuditUnavailable


async def test_concurrent_records_coalesce_into_few_durable_batches(audit_log: AuditLog) -> None:
    receipts = await asyncio.gather(*(audit_log.record(event(i)) for i in range(600)))
    assert sorted(r.index for r in receipts) == list(range(600))
    assert audit_log.batches < 20  # group commit: one transaction for many callers
    assert await audit_log.tree_size() == 600
    stored = await audit_log.get_entry(receipts[17].index)
    assert stored.leaf_hash.hex() == receipts[17].leaf_hash
    assert merkle.leaf_hash(stored.data) == stored.leaf_hash
    doc = orjson_loads(stored.data)
    assert doc["actor"] == {"principal": "alice", "organisation": "Operator", "kind": "operator", "country": "NL"}
    assert set(doc) == {"time", "actor", "action", "target", "decision", "reason", "request_id", "details"}


def orjson_loads(data: bytes) -> dict:
    import orjson

    return orjson.loads(data)


async def test_entry_is_canonical_json(audit_log: AuditLog) -> None:
    receipt = await audit_log.record(event(1))
    data = (await audit_log.get_entry(receipt.index)).data
    assert b" " not in data.replace(b"\xc3\xbcn\xc3\xafcode \xe2\x9c\x93", b"")  # no insignificant whitespace
    assert "ünïcode ✓".encode() in data  # UTF-8, not \\u escapes
    assert data.index(b'"action"') < data.index(b'"actor"') < data.index(b'"decision"') < data.index(b'"details"')


async def test_proofs_verify_against_a_signed_checkpoint(audit_log: AuditLog, vkey) -> None:
    for i in range(0, 300, 50):
        await asyncio.gather(*(audit_log.record(event(j)) for j in range(i, i + 50)))
    first = await audit_log.checkpoint()
    await asyncio.gather(*(audit_log.record(event(j)) for j in range(300, 437)))
    second = await audit_log.checkpoint()
    assert first is not None and second is not None and (first.tree_size, second.tree_size) == (300, 437)
    body, _ = open_note(second.note, [vkey])
    assert body.root_hash == second.root_hash and body.tree_size == 437
    for index in (0, 1, 255, 256, 299, 436):
        proof = await audit_log.inclusion_proof(index, 437)
        assert proof.root_hash == second.root_hash
        merkle.verify_inclusion(index, 437, proof.leaf_hash, proof.hashes, body.root_hash)
        assert len(proof.hashes) <= 9  # ⌈log2 437⌉
    old = await audit_log.inclusion_proof(42, 300)
    merkle.verify_inclusion(42, 300, old.leaf_hash, old.hashes, first.root_hash)
    for size in (1, 2, 3, 64, 299, 300):
        c = await audit_log.consistency_proof(size, 437)
        merkle.verify_consistency(size, 437, c.first_root, second.root_hash, c.hashes)
    c = await audit_log.consistency_proof(300, 437)
    merkle.verify_consistency(300, 437, first.root_hash, second.root_hash, c.hashes)


async def test_flipped_bit_in_a_served_proof_is_rejected(audit_log: AuditLog) -> None:
    await asyncio.gather(*(audit_log.record(event(j)) for j in range(77)))
    cp = await audit_log.checkpoint()
    assert cp is not None
    proof = await audit_log.inclusion_proof(33, 77)
    bad = [bytearray(h) for h in proof.hashes]
    bad[2][5] ^= 0x10
    with pytest.raises(merkle.ProofError, match="different root"):
        merkle.verify_inclusion(33, 77, proof.leaf_hash, [bytes(b) for b in bad], cp.root_hash)
    c = await audit_log.consistency_proof(10, 77)
    flipped = [bytearray(h) for h in c.hashes]
    flipped[-1][0] ^= 0x01
    with pytest.raises(merkle.ProofError):
        merkle.verify_consistency(10, 77, c.first_root, cp.root_hash, [bytes(b) for b in flipped])


async def test_tree_size_beyond_the_log_and_impossible_proofs_are_refused(audit_log: AuditLog) -> None:
    await asyncio.gather(*(audit_log.record(event(j)) for j in range(10)))
    with pytest.raises(TreeSizeBeyondLog, match="beyond the log"):
        await audit_log.inclusion_proof(3, 11)
    with pytest.raises(TreeSizeBeyondLog):
        await audit_log.consistency_proof(5, 99)
    with pytest.raises(InvalidProofRequest):
        await audit_log.inclusion_proof(10, 10)
    with pytest.raises(InvalidProofRequest):
        await audit_log.consistency_proof(0, 5)
    with pytest.raises(InvalidProofRequest):
        await audit_log.consistency_proof(6, 5)


async def test_reopen_continues_the_same_tree(store_url: str, signer) -> None:
    log = AuditLog(open_store(store_url), origin=ORIGIN, signer_source=lambda: signer)
    await log.start()
    await asyncio.gather(*(log.record(event(i)) for i in range(45)))
    await log.stop()  # issues a final checkpoint
    log = AuditLog(open_store(store_url), origin=ORIGIN, signer_source=lambda: signer)
    await log.start()
    receipt = await log.record(event(45))
    assert receipt.index == 45
    cp = await log.checkpoint()
    assert cp is not None and cp.tree_size == 46
    leaves = [merkle.leaf_hash((await log.get_entry(i)).data) for i in range(46)]
    assert merkle.root_of(leaves) == cp.root_hash
    await log.stop()


async def test_two_writers_on_one_store_stay_consistent(store_url: str, signer) -> None:
    """A second writer (another process in the scaled mode) finds the size moved and reloads its frontier."""
    a = AuditLog(open_store(store_url), origin=ORIGIN, signer_source=lambda: signer)
    b = AuditLog(open_store(store_url), origin=ORIGIN, signer_source=lambda: signer)
    await a.start()
    await b.start()
    for round_ in range(3):
        await asyncio.gather(*(a.record(event(i)) for i in range(5)))
        await asyncio.gather(*(b.record(event(100 + i + round_)) for i in range(4)))
    assert await a.tree_size() == 27
    proof = await a.inclusion_proof(20)
    leaves = [merkle.leaf_hash((await a.get_entry(i)).data) for i in range(27)]
    merkle.verify_inclusion(20, 27, leaves[20], proof.hashes, merkle.root_of(leaves))
    await a.stop(final_checkpoint=False)
    await b.stop(final_checkpoint=False)


async def test_search_by_actor_action_target_and_time(audit_log: AuditLog) -> None:
    await asyncio.gather(*(audit_log.record(event(i, actor="alice")) for i in range(5)))
    await audit_log.record(event(5, actor="bob", action="policy.root.set", target="domain-1"))
    marker = (await audit_log.get_entry(5)).time
    vendor = (event(i, actor="vendor-x", action="access.grant.approve") for i in range(6, 9))
    await asyncio.gather(*(audit_log.record(e) for e in vendor))
    assert [e.index for e in await audit_log.search(actor="alice")] == [0, 1, 2, 3, 4]
    assert [e.index for e in await audit_log.search(action="policy.root.set")] == [5]
    assert [e.index for e in await audit_log.search(action="access.*")] == [6, 7, 8]
    assert [e.index for e in await audit_log.search(action="access.")] == [6, 7, 8]
    assert [e.index for e in await audit_log.search(target="domain-1", actor="bob")] == [5]
    assert [e.index for e in await audit_log.search(target="domain-1", actor="alice")] == []
    assert [e.index for e in await audit_log.search(since=marker)] == [5, 6, 7, 8]
    assert [e.index for e in await audit_log.search(until=marker)] == [0, 1, 2, 3, 4]
    page = await audit_log.search(actor="alice", limit=2)
    assert [e.index for e in page] == [0, 1]
    assert [e.index for e in await audit_log.search(actor="alice", after=page[-1].index, limit=2)] == [2, 3]
    with pytest.raises(InvalidSearch):
        await audit_log.search(since="yesterday")
    with pytest.raises(InvalidSearch):
        await audit_log.search(limit=0)


async def test_bad_event_is_refused_before_anything_is_written(audit_log: AuditLog) -> None:
    bad = AuditEvent(actor=Actor("alice"), action="x.y", target="t", details={"when": object()})
    with pytest.raises(AuditUnavailable, match="cannot be logged"):
        await audit_log.record(bad)
    with pytest.raises(AuditUnavailable):
        await audit_log.record(AuditEvent(actor=Actor("alice"), action="", target="t"))
    assert await audit_log.tree_size() == 0


async def test_store_failure_fails_closed_and_the_log_recovers(audit_log: AuditLog) -> None:
    await audit_log.record(event(0))
    real_append = audit_log.store.append

    async def broken(*args: object, **kwargs: object) -> None:
        raise OSError("disk gone")

    audit_log.store.append = broken  # type: ignore[method-assign]
    results = await asyncio.gather(*(audit_log.record(event(i)) for i in range(1, 6)), return_exceptions=True)
    assert all(isinstance(r, AuditUnavailable) for r in results)
    assert await audit_log.tree_size() == 1
    audit_log.store.append = real_append  # type: ignore[method-assign]
    receipt = await audit_log.record(event(6))
    assert receipt.index == 1


async def test_record_after_stop_is_refused(store_url: str, signer) -> None:
    log = AuditLog(open_store(store_url), origin=ORIGIN, signer_source=lambda: signer)
    await log.start()
    await log.stop()
    with pytest.raises(AuditUnavailable, match="not running"):
        await log.record(event(0))


async def test_a_cancelled_caller_does_not_stop_its_batch_being_answered(audit_log: AuditLog) -> None:
    """The writer answers a whole batch at once; one caller cancelled while its batch commits must neither lose the
    others their receipts nor keep its own entry out of the log (it was queued: it is written, just not awaited)."""
    tasks = [asyncio.create_task(audit_log.record(event(i))) for i in range(20)]
    await asyncio.sleep(0)  # every record() has queued its entry
    tasks[7].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[7], asyncio.CancelledError)
    receipts = [r for i, r in enumerate(results) if i != 7]
    indexes = sorted(r.index for r in receipts)
    assert len(set(indexes)) == 19
    assert await audit_log.tree_size() == 20
    for r in receipts:
        stored = await audit_log.get_entry(r.index)
        assert merkle.leaf_hash(stored.data).hex() == r.leaf_hash
