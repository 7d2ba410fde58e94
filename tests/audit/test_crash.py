"""A crash during append leaves the log consistent: a child appending in a loop is killed with SIGKILL; the store
reopens, verifies (entries, stored subtree hashes, checkpoints), and every acknowledged entry is there."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson

from sleutelbos.audit.checkpoint import NoteVerifier
from sleutelbos.audit.service import AuditLog
from sleutelbos.audit.software_signer import SoftwareSigner
from sleutelbos.audit.store import open_store
from sleutelbos.audit.verify import verify_store

CHILD = Path(__file__).with_name("crash_appender.py")
SRC = Path(__file__).resolve().parents[2] / "src"


def _run_and_kill(url: str, key_dir: Path, acknowledged_before_kill: int) -> list[tuple[int, int]]:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    child = subprocess.Popen([sys.executable, str(CHILD), url, str(key_dir)], stdout=subprocess.PIPE, env=env)
    acks: list[tuple[int, int]] = []
    deadline = time.monotonic() + 60
    assert child.stdout is not None
    while len(acks) < acknowledged_before_kill and time.monotonic() < deadline:
        line = child.stdout.readline()
        if not line:
            break
        index, n = line.split()
        acks.append((int(index), int(n)))
    child.send_signal(signal.SIGKILL)
    rest = child.stdout.read()  # acknowledgements already written before the kill count too
    child.wait()
    for line in rest.splitlines():
        parts = line.split()
        if len(parts) == 2:
            acks.append((int(parts[0]), int(parts[1])))
    assert len(acks) >= acknowledged_before_kill, "the child did not acknowledge enough appends"
    return acks


async def test_sigkill_during_appends_loses_no_acknowledged_entry(store_url: str, tmp_path: Path) -> None:
    key_dir = tmp_path / "crash-keys"
    acks = _run_and_kill(store_url, key_dir, 400)
    acks += _run_and_kill(store_url, key_dir, 150)  # and once more, on top of the recovered log

    signer = SoftwareSigner.load_or_create(key_dir)
    vkey = NoteVerifier.for_public_key("crash.test/audit", signer.public_key())
    store = open_store(store_url)
    await store.open()
    report = await verify_store(store, "crash.test/audit", [vkey])
    assert report.ok, report.summary()
    size = await store.tree_size()
    assert size >= max(i for i, _ in acks) + 1
    for index, n in acks:
        entry = await store.entry(index)
        assert entry is not None and orjson.loads(entry.data)["details"] == {"n": n}
    await store.close()

    log = AuditLog(open_store(store_url), origin="crash.test/audit", signer_source=lambda: signer)
    await log.start()
    # Search is exact after the crash too (on SQLite the postings may lag the entries: the tail is scanned).
    # Both children counted from 0, so a target can name an entry of each run (and an unacknowledged one).
    for index, n in acks[:: max(1, len(acks) // 25)]:
        found = await log.search(target=f"t-{n}")
        assert index in [e.index for e in found]
        assert all(orjson.loads(e.data)["details"] == {"n": n} for e in found)
    receipt = await log.record(__import__("audit_samples").event(0))
    assert receipt.index == size
    await log.stop()
