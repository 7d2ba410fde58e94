"""Each kind of tampering is detected with the index of the first bad entry (or the reason): in an export and in the
live store (SQLite and PostgreSQL) — edit, delete, reorder entries; edit a stored hash; bad checkpoint signature."""

from __future__ import annotations

import asyncio
import io
import sqlite3
from pathlib import Path

import asyncpg
import orjson
import pytest
from audit_samples import ORIGIN, event

from sleutelbos.audit.checkpoint import NoteVerifier
from sleutelbos.audit.export import export_log
from sleutelbos.audit.service import AuditLog
from sleutelbos.audit.software_signer import SoftwareSigner
from sleutelbos.audit.store import open_store
from sleutelbos.audit.verify import verify_export, verify_store
from sleutelbos.core.database import parse_database_url

SIZE = 40  # checkpoints at 16, 32 and 40


async def _fill(store_url: str, signer: SoftwareSigner) -> None:
    log = AuditLog(open_store(store_url), origin=ORIGIN, signer_source=lambda: signer)
    await log.start()
    for start, end in ((0, 16), (16, 32), (32, SIZE)):
        await asyncio.gather(*(log.record(event(i)) for i in range(start, end)))
        await log.checkpoint()
    await log.stop(final_checkpoint=False)


async def _export(store_url: str) -> list[dict]:
    store = open_store(store_url)
    await store.open()
    buf = io.BytesIO()
    await export_log(store, buf, ORIGIN)
    await store.close()
    return [orjson.loads(line) for line in buf.getvalue().splitlines()]


def _verify(lines: list[dict], keys: list[NoteVerifier] | None):
    return verify_export(io.BytesIO(b"\n".join(orjson.dumps(x) for x in lines) + b"\n"), keys)


def _entry_line(lines: list[dict], index: int) -> int:
    return next(n for n, x in enumerate(lines) if x["type"] == "entry" and x["index"] == index)


@pytest.fixture
async def exported(tmp_path: Path, signer: SoftwareSigner) -> list[dict]:
    url = f"sqlite:///{tmp_path / 'audit.sqlite'}"
    await _fill(url, signer)
    return await _export(url)


def test_untampered_export_verifies(exported: list[dict], vkey: NoteVerifier) -> None:
    report = _verify(exported, [vkey])
    assert report.ok, report.reason
    assert (report.entries, report.checkpoints, report.uncovered_entries) == (SIZE, 3, 0)
    assert [x["tree_size"] for x in exported if x["type"] == "checkpoint"] == [16, 32, 40]
    assert exported[0]["public_keys"][0]["vkey"] == vkey.vkey


def test_edited_entry_is_named(exported: list[dict], vkey: NoteVerifier) -> None:
    n = _entry_line(exported, 21)
    exported[n]["entry"] = exported[n]["entry"].replace('"alice"', '"mallory"')
    report = _verify(exported, [vkey])
    assert not report.ok and report.first_bad_index == 21
    assert "recorded leaf hash" in (report.reason or "")


def test_edited_entry_with_recomputed_leaf_hash_is_caught_by_the_checkpoint(
    exported: list[dict], vkey: NoteVerifier
) -> None:
    from sleutelbos.audit.merkle import leaf_hash

    n = _entry_line(exported, 21)
    exported[n]["entry"] = exported[n]["entry"].replace('"alice"', '"mallory"')
    exported[n]["leaf_hash"] = leaf_hash(exported[n]["entry"].encode()).hex()
    report = _verify(exported, [vkey])
    assert not report.ok and report.first_bad_index == 16  # the first entry the failing checkpoint alone covers
    assert "[16, 32)" in (report.reason or "")


def test_non_canonical_rewrite_is_named(exported: list[dict], vkey: NoteVerifier) -> None:
    from sleutelbos.audit.merkle import leaf_hash

    n = _entry_line(exported, 3)
    exported[n]["entry"] = exported[n]["entry"].replace(",", ", ", 1)
    exported[n]["leaf_hash"] = leaf_hash(exported[n]["entry"].encode()).hex()
    report = _verify(exported, [vkey])
    assert not report.ok and report.first_bad_index == 3 and "canonical" in (report.reason or "")


def test_deleted_entry_is_named(exported: list[dict], vkey: NoteVerifier) -> None:
    del exported[_entry_line(exported, 9)]
    report = _verify(exported, [vkey])
    assert not report.ok and report.first_bad_index == 9 and "missing or out of order" in (report.reason or "")


def test_deleted_last_entries_are_named(exported: list[dict], vkey: NoteVerifier) -> None:
    del exported[_entry_line(exported, 38) : _entry_line(exported, 39) + 1]
    report = _verify(exported, [vkey])
    assert not report.ok and report.first_bad_index == 38


def test_reordered_entries_are_named(exported: list[dict], vkey: NoteVerifier) -> None:
    a, b = _entry_line(exported, 5), _entry_line(exported, 6)
    exported[a], exported[b] = exported[b], exported[a]
    report = _verify(exported, [vkey])
    assert not report.ok and report.first_bad_index == 5


def test_reordered_and_renumbered_entries_are_caught(exported: list[dict], vkey: NoteVerifier) -> None:
    a, b = _entry_line(exported, 5), _entry_line(exported, 6)
    exported[a], exported[b] = exported[b], exported[a]
    exported[a]["index"], exported[b]["index"] = 5, 6
    report = _verify(exported, [vkey])
    assert not report.ok and report.first_bad_index == 0 and "signed root at size 16" in (report.reason or "")


def test_edited_leaf_hash_is_named(exported: list[dict], vkey: NoteVerifier) -> None:
    n = _entry_line(exported, 30)
    exported[n]["leaf_hash"] = "00" + exported[n]["leaf_hash"][2:]
    report = _verify(exported, [vkey])
    assert not report.ok and report.first_bad_index == 30


def test_bad_checkpoint_signature_is_rejected(exported: list[dict], vkey: NoteVerifier) -> None:
    n = next(i for i, x in enumerate(exported) if x["type"] == "checkpoint" and x["tree_size"] == 32)
    body, sig_line = exported[n]["note"].rsplit("\n\n", 1)
    name, b64 = sig_line.rstrip("\n").split(" ")[1:]
    import base64

    raw = bytearray(base64.b64decode(b64))
    raw[10] ^= 0x01
    exported[n]["note"] = f"{body}\n\n\u2014 {name} {base64.b64encode(bytes(raw)).decode()}\n"
    report = _verify(exported, [vkey])
    assert not report.ok and "checkpoint at size 32 rejected" in (report.reason or "")
    assert "does not verify" in (report.reason or "") and report.first_bad_index is None
    assert report.summary().startswith("FAILED: checkpoint at size 32")


def test_checkpoint_by_another_key_is_rejected(exported: list[dict], tmp_path: Path) -> None:
    other = NoteVerifier.for_public_key(ORIGIN, SoftwareSigner.load_or_create(tmp_path / "other").public_key())
    report = _verify(exported, [other])
    assert not report.ok and "not signed by any trusted key" in (report.reason or "")


def test_edited_checkpoint_root_is_rejected(exported: list[dict], vkey: NoteVerifier) -> None:
    n = next(i for i, x in enumerate(exported) if x["type"] == "checkpoint" and x["tree_size"] == 16)
    lines = exported[n]["note"].split("\n")
    lines[2] = "A" + lines[2][1:]
    exported[n]["note"] = "\n".join(lines)
    report = _verify(exported, [vkey])
    assert not report.ok and report.first_bad_index is None
    assert "checkpoint at size 16 rejected" in (report.reason or "") and "does not verify" in (report.reason or "")


def test_without_a_given_key_the_export_is_checked_against_its_own_keys(exported: list[dict]) -> None:
    report = _verify(exported, None)
    assert report.ok and "self-asserted" in report.keys_from


# --- the live store ------------------------------------------------------------------------------------


async def _sql(url: str, sql: str, *params: object) -> None:
    parsed = parse_database_url(url)
    if parsed.kind == "sqlite":
        with sqlite3.connect(str(parsed.path)) as conn:
            conn.execute(sql, params)
        return
    for i in range(len(params)):
        sql = sql.replace("?", f"${i + 1}", 1)
    conn = await asyncpg.connect(parsed.dsn)
    try:
        await conn.execute(sql, *params)
    finally:
        await conn.close()


async def _verify_live(url: str, vkey: NoteVerifier):
    store = open_store(url)
    await store.open()
    try:
        return await verify_store(store, ORIGIN, [vkey])
    finally:
        await store.close()


async def test_live_store_verifies_and_names_tampering(store_url: str, signer: SoftwareSigner, vkey) -> None:
    await _fill(store_url, signer)
    assert (await _verify_live(store_url, vkey)).ok

    # edit an entry
    await _sql(store_url, "UPDATE audit_entries SET entry = ? WHERE idx = 12", b'{"action":"nothing"}')
    report = await _verify_live(store_url, vkey)
    assert not report.ok and report.first_bad_index == 12


@pytest.mark.parametrize("kind", ["leaf_hash", "subtree", "delete", "swap", "checkpoint_root"])
async def test_live_store_tamper_kinds(
    kind: str, tmp_path: Path, signer: SoftwareSigner, vkey: NoteVerifier
) -> None:
    url = f"sqlite:///{tmp_path / 'audit.sqlite'}"
    await _fill(url, signer)
    if kind == "leaf_hash":
        await _sql(url, "UPDATE audit_entries SET leaf_hash = ? WHERE idx = 7", b"\x00" * 32)
        expected = 7
    elif kind == "subtree":  # entry 27 completes the subtrees [26,28) and [24,28)
        await _sql(url, "UPDATE audit_entries SET subtrees = ? WHERE idx = 27", b"\x01" * 64)
        expected = 26
    elif kind == "delete":
        await _sql(url, "DELETE FROM audit_entries WHERE idx = 20")
        expected = 20
    elif kind == "swap":
        await _sql(url, "UPDATE audit_entries SET idx = -1 WHERE idx = 33")
        await _sql(url, "UPDATE audit_entries SET idx = 33 WHERE idx = 34")
        await _sql(url, "UPDATE audit_entries SET idx = 34 WHERE idx = -1")
        expected = 33
    else:
        await _sql(url, "UPDATE audit_checkpoints SET root_hash = ? WHERE tree_size = 16", b"\x02" * 32)
        expected = 16
    report = await _verify_live(url, vkey)
    assert not report.ok, kind
    assert report.first_bad_index == expected, report.reason
