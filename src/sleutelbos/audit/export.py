"""JSON Lines export of the log (format ``sleutelbos-audit-export/1``, documented in ``docs/audit.md``).

One JSON object per line:

1. ``{"type": "log", "format": …, "origin": …, "tree_size": n, "public_keys": [{"vkey": …, "algorithm": …}], …}``
2. one ``{"type": "entry", "index": i, "leaf_hash": hex, "entry": "<canonical JSON text>"}`` per entry in log
   order — the entry is kept as the exact text that was hashed, so that a verifier hashes the same bytes;
3. ``{"type": "checkpoint", "tree_size": s, "note": "<signed note>"}`` placed right after entry ``s − 1``.

The export is a snapshot: the tree size is read first and only entries and checkpoints up to it are written.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO

import orjson

from sleutelbos.audit.checkpoint import NoteVerifier
from sleutelbos.audit.entry import format_time
from sleutelbos.audit.store import AuditStore, iter_entries

FORMAT = "sleutelbos-audit-export/1"


@dataclass(frozen=True)
class ExportSummary:
    entries: int
    checkpoints: int
    public_keys: list[str]


async def export_log(store: AuditStore, out: IO[bytes], origin: str, extra_vkeys: Iterable[str] = ()) -> ExportSummary:
    """Write the log in ``store`` to ``out``; ``extra_vkeys`` adds keys not yet used by any checkpoint."""
    size = await store.tree_size()
    checkpoints = [cp for cp in await store.checkpoints() if cp.tree_size <= size]
    vkeys = list(dict.fromkeys([*(cp.vkey for cp in checkpoints), *extra_vkeys]))
    header = {
        "type": "log",
        "format": FORMAT,
        "origin": origin,
        "tree_size": size,
        "hash": "sha256",
        "exported_at": format_time(datetime.now(UTC)),
        "public_keys": [{"vkey": vkey, "algorithm": NoteVerifier.from_vkey(vkey).algorithm} for vkey in vkeys],
    }
    out.write(orjson.dumps(header) + b"\n")
    pending = iter(checkpoints)
    next_cp = next(pending, None)
    written = 0

    def flush_checkpoints(upto: int) -> None:
        nonlocal next_cp, written
        while next_cp is not None and next_cp.tree_size <= upto:
            out.write(orjson.dumps({"type": "checkpoint", "tree_size": next_cp.tree_size, "note": next_cp.note}))
            out.write(b"\n")
            written += 1
            next_cp = next(pending, None)

    flush_checkpoints(0)
    count = 0
    async for entry in iter_entries(store, 0, size):
        line = {"type": "entry", "index": entry.index, "leaf_hash": entry.leaf_hash.hex(), "entry": entry.data.decode()}
        out.write(orjson.dumps(line) + b"\n")
        count += 1
        flush_checkpoints(entry.index + 1)
    return ExportSummary(count, written, vkeys)
