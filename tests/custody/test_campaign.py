"""Rotation campaign: progress persisted, and a SIGKILL half-way resumes without re-keying any meter twice."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sleutelbos.custody import CampaignError, KeyState, custody_for_tests
from sleutelbos.custody.dlms_key_transfer import decode_key_transfer

from .conftest import RecordingAuditSink

WORKER = Path(__file__).with_name("campaign_worker.py")
ROOT = Path(__file__).resolve().parents[2]
METERS = [f"E{n:04d}" for n in range(24)]


def _rows(db: Path) -> dict[str, tuple[str, str | None, bytes | None]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT meter_id, state, planned, payload FROM custody_campaign_meters").fetchall()
    return {m: (s, p, bytes(b) if b is not None else None) for m, s, p, b in rows}


def test_campaign_resumes_after_sigkill_without_rekeying_twice(softhsm_token, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    sink = RecordingAuditSink()
    custody = custody_for_tests(data_dir, sink)
    asyncio.run(custody.meters.provision(METERS))
    campaign_id = asyncio.run(custody.campaigns.start("west-2026", METERS, reason="post-delivery re-key"))
    assert custody.campaigns.progress(campaign_id).pending == len(METERS)
    custody.close()

    db = data_dir / "custody.sqlite"
    audit_log = tmp_path / "child-audit.jsonl"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    child = subprocess.Popen([sys.executable, str(WORKER), str(data_dir), campaign_id, str(audit_log)], env=env)
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            keyed = sum(1 for s, _, _ in _rows(db).values() if s == "keyed")
            if keyed >= 6:
                break
            assert child.poll() is None, "the campaign worker exited before it could be killed"
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(10)
    assert child.returncode == -signal.SIGKILL

    before = _rows(db)
    keyed_before = {m: row for m, row in before.items() if row[0] == "keyed"}
    assert 6 <= len(keyed_before) < len(METERS), "the kill must land half-way for this test to mean anything"

    custody = custody_for_tests(data_dir, sink)
    try:
        progress = asyncio.run(custody.campaigns.run(campaign_id, batch_size=5))
        assert (progress.state, progress.keyed, progress.pending, progress.planned) == ("finished", 24, 0, 0)

        after = _rows(db)
        for meter_id, row in keyed_before.items():
            assert after[meter_id] == row  # keyed before the crash: untouched, same keys, same payload
        for meter_id in METERS:
            records = custody.store.by_meter(meter_id)
            by_series: dict[str, list[int]] = {}
            for record in records:
                by_series.setdefault(record.purpose, []).append(record.version)
            # exactly one new version of each transferred key, none for the master key
            assert by_series == {"dlms-master": [1], "dlms-unicast": [1, 2], "dlms-broadcast": [1, 2],
                                 "dlms-authentication": [1, 2]}
            planned = json.loads(after[meter_id][1])
            pending = custody.meters.key_set(meter_id, KeyState.PRE_ACTIVATION)
            assert {p: r.key_id for p, r in pending.items()} == {p: v["key_id"] for p, v in planned.items()}
            assert len(decode_key_transfer(custody.campaigns.payload(campaign_id, meter_id))) == 3

        # the audit trail: meters keyed by the child are never in the resumed run's batches
        rekeys = [e for e in sink.events if e.action == "custody.key.campaign-rekey"]
        resumed_meters = {m for e in rekeys for m in e.details["meters"]}
        assert resumed_meters.isdisjoint(keyed_before)
        assert resumed_meters | set(keyed_before) == set(METERS)
        child_events = [json.loads(line) for line in audit_log.read_text().splitlines()]
        child_rekeys = [e for e in child_events if e["action"] == "custody.key.campaign-rekey"]
        child_meters = [m for e in child_rekeys for m in e["details"]["meters"]]
        assert set(keyed_before) <= set(child_meters)
        assert sink.actions()[-1] == "custody.key.campaign-finish"
        with pytest.raises(CampaignError):
            custody.campaigns.progress("campaign-unknown")
    finally:
        custody.close()
