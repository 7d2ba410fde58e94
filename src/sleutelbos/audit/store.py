"""Persistence of the log: entries, stored subtree hashes, checkpoints — on SQLite or PostgreSQL.

Layout (both databases):

- ``audit_entries``: one row per leaf — index, the canonical entry bytes, its RFC 9162 leaf hash, the hashes of the
  perfect subtrees this leaf completes (``subtrees``: heights 1…t concatenated, see
  :class:`sleutelbos.audit.merkle.Frontier`), and the fields a search needs (time, actor principal, action, target,
  decision), each searchable field indexed with the index. A subtree hash is written once, in its completing leaf's
  row, and never updated; any proof range decomposes into O(log n) stored subtrees, so an inclusion or consistency
  proof is one O(log n) point read by primary key. An append is one row per entry: the entry, its leaf hash and the
  subtree hashes it completes are in, or none of them.
- ``audit_log_state``: one row with the tree size. Every append batch moves it from the size the writer expected to
  the new size in the same transaction as the batch's rows: that is the atomicity of a batch (all of its entries,
  or none) and the guard against two writers (a second writer finds the size moved and reloads).
- ``audit_checkpoints``: every signed checkpoint (tree size, root, the signed note, the verifier key).

Left out: tiles (c2sp.org/tlog-tiles) — a static-file presentation of the same hashes that could be generated from
the stored subtree hashes if a read-only mirror is wanted.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from sleutelbos.audit.entry import Entry
from sleutelbos.audit.merkle import HASH_SIZE, Subtree
from sleutelbos.core.database import parse_database_url
from sleutelbos.core.errors import SleutelbosError

COMPONENT = "audit"


class AuditStoreError(SleutelbosError):
    """The store is missing data it must have (a subtree hash, an entry) — a sign of corruption or tampering."""


class StoreConflict(Exception):
    """The tree size in the store is not the one the writer expected: another writer appended, or a commit whose
    outcome was unknown did succeed. The writer reloads its frontier and retries."""


@dataclass(frozen=True)
class StoredEntry:
    index: int
    time: str
    actor: str
    action: str
    target: str
    decision: str
    data: bytes
    leaf_hash: bytes
    subtrees: bytes = b""  # hashes of the subtrees this leaf completes, heights 1…t, 32 bytes each


@dataclass(frozen=True)
class StoredCheckpoint:
    tree_size: int
    root_hash: bytes
    note: str
    vkey: str
    issued_at: str


@dataclass(frozen=True)
class SearchQuery:
    """Exact matches on actor principal, action (or an action prefix ending in ``.``/``*``), target; a time window
    ``[since, until)`` in canonical RFC 3339 text; results in log order after index ``after``."""

    actor: str | None = None
    action: str | None = None
    target: str | None = None
    since: str | None = None
    until: str | None = None
    after: int = -1
    limit: int = 100


class AuditStore(Protocol):
    kind: str

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def load_tree(self) -> tuple[int, list[bytes]]:
        """Tree size and the hashes of its frontier subtrees (``Frontier.subtrees_for(size)``)."""

    async def append(
        self, old_size: int, entries: Sequence[Entry], leaf_hashes: Sequence[bytes], subtrees: Sequence[bytes]
    ) -> None:
        """Atomically add entries ``old_size…`` with their leaf hashes and completed subtree hashes, or nothing;
        raises :class:`StoreConflict` if the stored size is not ``old_size``."""

    async def tree_size(self) -> int: ...

    async def entry(self, index: int) -> StoredEntry | None: ...

    async def entries(self, start: int, end: int) -> list[StoredEntry]: ...

    async def subtree_hashes(self, subtrees: Sequence[Subtree]) -> dict[Subtree, bytes]:
        """Hashes of perfect subtrees (level 0 = leaf hashes); raises :class:`AuditStoreError` if any is missing."""

    async def add_checkpoint(self, checkpoint: StoredCheckpoint) -> None: ...

    async def latest_checkpoint(self) -> StoredCheckpoint | None: ...

    async def checkpoints(self) -> list[StoredCheckpoint]: ...

    async def search(self, query: SearchQuery) -> list[StoredEntry]: ...


async def iter_entries(store: AuditStore, start: int = 0, end: int | None = None, chunk: int = 5000) -> AsyncIterator[
    StoredEntry
]:
    """Every entry from ``start`` in log order, read in chunks."""
    stop = await store.tree_size() if end is None else end
    position = start
    while position < stop:
        rows = await store.entries(position, min(stop, position + chunk))
        if not rows:
            return
        for row in rows:
            yield row
        position = rows[-1].index + 1


def open_store(url: str) -> AuditStore:
    """The store for a database URL (``sqlite:///…`` or ``postgresql://…``); call ``await store.open()``."""
    parsed = parse_database_url(url)
    if parsed.kind == "sqlite":
        from sleutelbos.audit.store_sqlite import SqliteAuditStore

        return SqliteAuditStore(parsed.path)
    from sleutelbos.audit.store_postgres import PostgresAuditStore

    return PostgresAuditStore(parsed.dsn)


def rows_for(subtrees: Sequence[Subtree]) -> list[int]:
    """The entry rows that hold the given subtree hashes (a leaf's own row, or its completing leaf's)."""
    return sorted({((idx + 1) << level) - 1 for level, idx in subtrees})  # completing_leaf; level 0 is idx itself


def pick_subtrees(subtrees: Sequence[Subtree], rows: dict[int, tuple[bytes, bytes]]) -> dict[Subtree, bytes]:
    """Extract subtree hashes from ``rows`` (index → (leaf hash, completed subtrees blob)); raises
    :class:`AuditStoreError` naming what is missing. On every proof's path, hence the inlined arithmetic."""
    out: dict[Subtree, bytes] = {}
    get = rows.get
    missing: list[Subtree] = []
    for st in subtrees:
        level, idx = st
        row = get(((idx + 1) << level) - 1)  # completing_leaf(level, idx)
        if row is not None:
            if level == 0:
                out[st] = row[0]
                continue
            blob = row[1]
            if len(blob) >= level * HASH_SIZE:
                out[st] = blob[(level - 1) * HASH_SIZE : level * HASH_SIZE]
                continue
        missing.append(st)
    if missing:
        raise AuditStoreError(f"stored subtree hashes missing for {missing[:4]} (level, index)")
    return out


def action_bounds(action: str) -> tuple[str, str] | None:
    """An action prefix query (``custody.`` or ``custody.*``) as a half-open text range, else None (exact)."""
    if action.endswith("*"):
        prefix = action[:-1]
    elif action.endswith("."):
        prefix = action
    else:
        return None
    return prefix, prefix + "\U0010ffff"
