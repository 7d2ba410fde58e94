"""Child process for the crash test: appends in a loop (concurrent callers, so batches are real) and prints each
acknowledged index as soon as ``record`` returns. The parent kills it with SIGKILL mid-stream."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from sleutelbos.audit.service import AuditLog
from sleutelbos.audit.software_signer import SoftwareSigner
from sleutelbos.audit.store import open_store
from sleutelbos.core.protocols import Actor, AuditEvent


async def main(url: str, key_dir: str) -> None:
    signer = SoftwareSigner.load_or_create(Path(key_dir))
    log = AuditLog(open_store(url), origin="crash.test/audit", signer_source=lambda: signer,
                   checkpoint_interval_s=0.05, checkpoint_entries=50)
    await log.start()
    counter = iter(range(10**9))

    async def caller() -> None:
        while True:
            n = next(counter)
            receipt = await log.record(AuditEvent(Actor("crash"), "test.append", f"t-{n}", details={"n": n}))
            sys.stdout.write(f"{receipt.index} {n}\n")
            sys.stdout.flush()

    await asyncio.gather(*(caller() for _ in range(16)))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
