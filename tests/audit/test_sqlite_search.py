"""SQLite search postings filled after the commit (docs/decisions/0104): a search answers exactly — the same entries
as a filter over the whole log — whether its matches lie below the postings' mark, above it (the unindexed tail
scanned directly), or on both sides; a log written before the postings existed (schema 1) is brought forward."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import orjson
from audit_samples import ORIGIN, event

from sleutelbos.audit.service import AuditLog
from sleutelbos.audit.software_signer import SoftwareSigner
from sleutelbos.audit.store import StoredEntry
from sleutelbos.audit.store_sqlite import SqliteAuditStore
from sleutelbos.core.protocols import AuditEvent

ACTORS = ["alice", "bob", "carol"]
ACTIONS = ["custody.key.generate", "custody.key.destroy", "policy.root.set", "access.grant.approve"]


def _event(i: int) -> AuditEvent:
    return event(i, actor=ACTORS[i % 3], action=ACTIONS[i % 4], target=f"meter-{i % 7}")


def _indexed(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT indexed FROM audit_search_state").fetchone()[0])


def _expected(entries: list[StoredEntry], **q: object) -> list[int]:
    """The search answer by brute force over every entry."""
    out = []
    for e in entries:
        if q.get("actor") is not None and e.actor != q["actor"]:
            continue
        if q.get("target") is not None and e.target != q["target"]:
            continue
        action = q.get("action")
        if isinstance(action, str):
            if action.endswith("*") or action.endswith("."):
                if not e.action.startswith(action.rstrip("*")):
                    continue
            elif e.action != action:
                continue
        if q.get("since") is not None and e.time < str(q["since"]):
            continue
        if q.get("until") is not None and e.time >= str(q["until"]):
            continue
        if e.index <= int(q.get("after", -1)):  # type: ignore[call-overload]
            continue
        out.append(e.index)
    return out[: int(q.get("limit", 100))]  # type: ignore[call-overload]


QUERIES: list[dict[str, object]] = [
    {"actor": "alice"},
    {"actor": "bob", "limit": 7},
    {"actor": "bob", "after": 40, "limit": 5},
    {"target": "meter-3"},
    {"target": "meter-3", "actor": "carol"},
    {"target": "meter-3", "actor": "carol", "action": "custody.*"},
    {"action": "custody.*", "limit": 1000},
    {"action": "custody.", "after": 100, "limit": 20},
    {"action": "policy.root.set", "actor": "alice"},
    {"action": "access.grant.approve", "target": "meter-0", "limit": 1000},
    {"actor": "nobody"},
    {"target": "meter-1", "after": 150},
]


async def _check_all(log: AuditLog, entries: list[StoredEntry]) -> None:
    middle = entries[len(entries) // 2].time
    for q in [*QUERIES, {"actor": "alice", "since": middle}, {"target": "meter-2", "until": middle, "limit": 1000}]:
        got = [e.index for e in await log.search(**q)]  # type: ignore[arg-type]
        assert got == _expected(entries, **q), q
        assert all(orjson.loads(e.data)["actor"]["principal"] == e.actor for e in await log.search(**q))  # type: ignore[arg-type]


async def test_search_is_exact_across_the_postings_mark(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite"
    signer = SoftwareSigner.load_or_create(tmp_path / "keys")
    # Postings every 64 entries, never on a timer: the unindexed tail is always there to be scanned.
    store = SqliteAuditStore(path, index_lag=64, index_delay_s=3600)
    log = AuditLog(store, origin=ORIGIN, signer_source=lambda: signer, checkpoint_interval_s=3600,
                   checkpoint_entries=10**9)
    await log.start()
    seen_marks = set()
    for start in range(0, 230, 23):
        await asyncio.gather(*(log.record(_event(i)) for i in range(start, start + 23)))
        entries = await log.entries(0, 1000)
        mark = _indexed(path)
        seen_marks.add(mark)
        assert mark <= len(entries)
        await _check_all(log, entries)
    assert len(seen_marks) > 2 and 0 < _indexed(path) < 230  # both parts were exercised, mark moving
    await log.stop(final_checkpoint=False)
    assert _indexed(path) == 230  # a short tail is indexed on close, so the next open starts complete

    again = AuditLog(SqliteAuditStore(path), origin=ORIGIN, signer_source=lambda: signer)
    await again.start()
    await _check_all(again, await again.entries(0, 1000))
    await again.stop(final_checkpoint=False)


async def test_postings_catch_up_after_appends_stop(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite"
    signer = SoftwareSigner.load_or_create(tmp_path / "keys")
    log = AuditLog(SqliteAuditStore(path, index_lag=10**6, index_delay_s=0.01), origin=ORIGIN,
                   signer_source=lambda: signer)
    await log.start()
    await asyncio.gather(*(log.record(_event(i)) for i in range(40)))
    for _ in range(200):
        if _indexed(path) == 40:
            break
        await asyncio.sleep(0.01)
    assert _indexed(path) == 40
    assert [e.index for e in await log.search(target="meter-5")] == [5, 12, 19, 26, 33]
    await log.stop(final_checkpoint=False)


async def test_a_schema_1_log_is_brought_forward(tmp_path: Path) -> None:
    """A data directory from before the postings: per-commit indexes, no postings tables. It opens, searches stay
    exact at once (the whole log is the unindexed tail), and the postings are filled in the background."""
    path = tmp_path / "audit.sqlite"
    signer = SoftwareSigner.load_or_create(tmp_path / "keys")
    log = AuditLog(SqliteAuditStore(path), origin=ORIGIN, signer_source=lambda: signer)
    await log.start()
    await asyncio.gather(*(log.record(_event(i)) for i in range(150)))
    await log.stop(final_checkpoint=False)
    with sqlite3.connect(path) as conn:  # back to schema 1, as an older sleutelbos left it
        conn.executescript(
            """
            DROP TABLE audit_search_actor; DROP TABLE audit_search_action; DROP TABLE audit_search_target;
            DROP TABLE audit_search_state;
            CREATE INDEX audit_entries_actor ON audit_entries (actor, idx);
            CREATE INDEX audit_entries_action ON audit_entries (action, idx);
            CREATE INDEX audit_entries_target ON audit_entries (target, idx);
            DELETE FROM schema_migrations WHERE component = 'audit' AND version = 2;
            """
        )

    store = SqliteAuditStore(path)
    log = AuditLog(store, origin=ORIGIN, signer_source=lambda: signer)
    await log.start()
    entries = await log.entries(0, 1000)
    assert len(entries) == 150
    await _check_all(log, entries)
    await log.stop(final_checkpoint=False)
    assert _indexed(path) == 150
    with sqlite3.connect(path) as conn:
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert "audit_entries_actor" not in indexes and "audit_entries_time" in indexes
        assert conn.execute("SELECT count(*) FROM audit_search_target").fetchone()[0] == 150


async def test_a_failing_postings_run_never_fails_an_append(tmp_path: Path) -> None:
    """The postings are derived data written after the commit: if writing them fails, appends are still durable
    and acknowledged, and searches stay exact by scanning the entries the postings do not cover."""
    path = tmp_path / "audit.sqlite"
    signer = SoftwareSigner.load_or_create(tmp_path / "keys")
    log = AuditLog(SqliteAuditStore(path, index_lag=16, index_delay_s=3600), origin=ORIGIN,
                   signer_source=lambda: signer)
    await log.start()
    await asyncio.gather(*(log.record(_event(i)) for i in range(20)))
    await log.stop(final_checkpoint=False)
    assert _indexed(path) == 20
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON audit_search_target BEGIN SELECT RAISE(ABORT, 'disk says no'); END"
        )

    log = AuditLog(SqliteAuditStore(path, index_lag=16, index_delay_s=3600), origin=ORIGIN,
                   signer_source=lambda: signer)
    await log.start()
    receipts = [await log.record(_event(i)) for i in range(20, 60)]
    assert [r.index for r in receipts] == list(range(20, 60))
    assert _indexed(path) == 20  # every postings run failed and rolled back
    await _check_all(log, await log.entries(0, 1000))
    await log.stop(final_checkpoint=False)
