"""Runs a rotation campaign in a child process so that a test can SIGKILL it half-way (``test_campaign``).

Usage: ``python campaign_worker.py DATA_DIR CAMPAIGN_ID AUDIT_LOG``. The SoftHSM2 token comes from the
``SLEUTELBOS_PKCS11_*`` / ``SOFTHSM2_CONF`` environment. The audit sink appends one JSON line per event and
fsyncs (a durable write-ahead log), then pauses briefly so that the campaign runs long enough to be killed.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from sleutelbos.core.protocols import AuditEvent, AuditReceipt
from sleutelbos.custody import custody_for_tests


class FileAuditSink:
    def __init__(self, path: Path, pause_s: float) -> None:
        self.path = path
        self.pause_s = pause_s
        self.count = 0

    async def record(self, event: AuditEvent) -> AuditReceipt:
        with self.path.open("a") as fh:
            fh.write(json.dumps({"action": event.action, "target": event.target, "details": dict(event.details)},
                                default=str) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self.count += 1
        await asyncio.sleep(self.pause_s)
        return AuditReceipt(index=self.count, leaf_hash="00" * 32)


def main() -> None:
    data_dir, campaign_id, audit_log = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    custody = custody_for_tests(data_dir, FileAuditSink(audit_log, pause_s=0.15))
    asyncio.run(custody.campaigns.run(campaign_id, batch_size=2))


if __name__ == "__main__":
    main()
