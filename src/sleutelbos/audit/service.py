"""The audit log service: write-ahead appends with group commit, signed checkpoints, proofs and search.

``AuditLog`` implements :class:`sleutelbos.core.AuditSink`. ``record`` canonicalises the event at once (bad input
fails before anything is queued), then waits for the single writer task, which takes everything queued so far as one
batch — all the ``record`` calls that arrived while the previous batch was committing — computes the leaf hashes and
the newly complete subtree hashes from its in-memory :class:`~sleutelbos.audit.merkle.Frontier`, and commits them in
one transaction. Each caller's future is resolved only after that commit (durable), or fails with
:class:`~sleutelbos.core.AuditUnavailable` when the store fails: the caller must then not act (fail closed).

Checkpoints (c2sp.org/tlog-checkpoint) are issued by a second task when ``checkpoint_entries`` entries have been
appended since the last one, or ``checkpoint_interval_s`` seconds have passed and the tree has grown. Before signing,
the new root is checked against the last checkpoint with an RFC 9162 consistency proof built from the store, so the
log never signs two inconsistent checkpoints (tlog-checkpoint §"Signatures"). The signer is fetched *at signing
time* from ``signer_source`` (custody's ``audit-checkpoint`` key when custody is wired, which is built after audit).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from asyncio import Future, InvalidStateError
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sleutelbos.audit.checkpoint import Checkpoint, sign_checkpoint
from sleutelbos.audit.entry import Entry, InvalidAuditEvent, LogClock, format_time, make_entry, parse_time
from sleutelbos.audit.merkle import (
    Frontier,
    ProofError,
    Subtree,
    consistency_proof_ranges,
    fold_right,
    inclusion_path_ranges,
    perfect_subtrees,
    root_from_inclusion_proof,
    roots_from_consistency_proof,
    verify_consistency,
)
from sleutelbos.audit.store import AuditStore, SearchQuery, StoreConflict, StoredCheckpoint, StoredEntry
from sleutelbos.core.errors import SleutelbosError
from sleutelbos.core.protocols import AuditEvent, AuditReceipt, AuditUnavailable, Signer

log = logging.getLogger("sleutelbos.audit")

SignerSource = Callable[[], Signer]


class EntryNotFound(SleutelbosError):
    """No entry with that index in the log."""


class TreeSizeBeyondLog(SleutelbosError):
    """A proof was asked for a tree size larger than the log."""


class InvalidProofRequest(SleutelbosError):
    """Proof parameters that no proof can exist for (negative sizes, first > second, …)."""


class InvalidSearch(SleutelbosError):
    """A search with malformed parameters."""


class CheckpointRefused(SleutelbosError):
    """The log will not sign a checkpoint (it would be inconsistent with the last one, or no signer is available)."""


@dataclass(frozen=True)
class InclusionProof:
    index: int
    tree_size: int
    leaf_hash: bytes
    root_hash: bytes
    hashes: list[bytes]


@dataclass(frozen=True)
class ConsistencyProof:
    first: int
    second: int
    first_root: bytes
    second_root: bytes
    hashes: list[bytes]


Waiters = list["asyncio.Future[AuditReceipt]"]


@dataclass(slots=True)
class _Prepared:
    """A batch hashed onto a frontier: its entries and their callers' futures (parallel lists, not pairs: one
    object fewer per append), the leaf hashes, the subtree hashes each leaf completes, the new frontier."""

    entries: list[Entry]
    futures: Waiters
    start: int
    leaves: list[bytes]
    subtrees: list[bytes]
    frontier: Frontier

    @classmethod
    def hash(cls, entries: list[Entry], futures: Waiters, base: Frontier) -> _Prepared:
        sha = hashlib.sha256
        leaves = [sha(b"\x00" + entry.data).digest() for entry in entries]  # merkle.leaf_hash, inlined
        frontier = base.copy()
        subtrees = frontier.extend(leaves)
        return cls(entries, futures, base.size, leaves, subtrees, frontier)


def _answer(futures: Waiters, receipts: list[AuditReceipt]) -> None:
    """Resolve every caller's future: in one C-level ``map`` (no Python loop per caller) in the usual case, one by
    one past a caller that was cancelled meanwhile (its future is done, and ``set_result`` refuses it)."""
    try:
        deque(map(Future.set_result, futures, receipts), maxlen=0)
    except InvalidStateError:
        for future, receipt in zip(futures, receipts, strict=True):
            if not future.done():
                future.set_result(receipt)


class AuditLog:
    """The log; ``start()`` before use, ``stop()`` to drain the writer and issue a final checkpoint."""

    def __init__(
        self,
        store: AuditStore,
        *,
        origin: str,
        signer_source: SignerSource,
        checkpoint_interval_s: float = 10.0,
        checkpoint_entries: int = 1000,
        max_batch: int = 1024,
    ) -> None:
        if checkpoint_entries < 1 or checkpoint_interval_s <= 0:
            raise ValueError("checkpoint_entries must be ≥ 1 and checkpoint_interval_s > 0")
        self.store = store
        self.origin = origin
        self.signer_source = signer_source
        self.checkpoint_interval_s = checkpoint_interval_s
        self.checkpoint_entries = checkpoint_entries
        self.max_batch = max_batch
        self._clock = LogClock()
        self._frontier = Frontier()
        self._head: tuple[int, bytes] = (0, Frontier().root())
        self._pending: list[Entry] = []  # recorded, not yet taken by the writer …
        self._waiting: Waiters = []  # … and their callers' futures, in the same order
        self._wake = asyncio.Event()
        self._checkpoint_wake = asyncio.Event()
        self._checkpoint_lock = asyncio.Lock()
        self._last_checkpoint: StoredCheckpoint | None = None
        self._writer: asyncio.Task[None] | None = None
        self._checkpointer: asyncio.Task[None] | None = None
        self._running = False
        self._loop: asyncio.AbstractEventLoop  # set by start(): record() runs only while the log runs
        self.batches = 0  # number of commits, for the benchmark's batch-size figure

    # --- lifecycle ------------------------------------------------------------------------------------

    async def start(self) -> None:
        await self.store.open()
        size, hashes = await self.store.load_tree()
        self._frontier = Frontier(size, hashes)
        self._head = (size, self._frontier.root())
        self._last_checkpoint = await self.store.latest_checkpoint()
        self._running = True
        self._loop = asyncio.get_running_loop()
        self._writer = asyncio.create_task(self._run_writer(), name="audit-writer")
        self._checkpointer = asyncio.create_task(self._run_checkpointer(), name="audit-checkpointer")

    async def stop(self, final_checkpoint: bool = True) -> None:
        if not self._running:
            return
        self._running = False
        self._wake.set()
        if self._writer is not None:
            await self._writer
        if self._checkpointer is not None:
            self._checkpoint_wake.set()  # the loop sees _running is False and returns (no cancel: see the loop)
            await self._checkpointer
        if final_checkpoint:
            try:
                await self.checkpoint()
            except Exception:
                log.exception("final audit checkpoint failed")
        await self.store.close()

    # --- AuditSink ------------------------------------------------------------------------------------

    async def record(self, event: AuditEvent) -> AuditReceipt:
        """Append ``event``; returns once it is durable (write-ahead), raises ``AuditUnavailable`` otherwise."""
        if not self._running:
            raise AuditUnavailable("the audit log is not running")
        try:
            entry = make_entry(event, self._clock.now())
        except InvalidAuditEvent as exc:
            raise AuditUnavailable(f"event cannot be logged: {exc.detail}") from exc
        future: asyncio.Future[AuditReceipt] = self._loop.create_future()
        self._pending.append(entry)
        self._waiting.append(future)
        if not self._wake.is_set():
            self._wake.set()
        return await future

    async def _run_writer(self) -> None:
        """Group commit, pipelined one deep: while batch k is in the database, batch k+1 is taken and hashed on
        top of k's (tentative) frontier; if k fails or the tree moved, k+1 is re-hashed on the real frontier."""
        inflight: asyncio.Task[bool] | None = None
        tentative = self._frontier
        while True:
            if not self._pending:
                if inflight is not None:
                    await inflight
                    inflight = None
                    continue
                if not self._running:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            if len(self._pending) <= self.max_batch:  # the usual case: take everything
                entries, futures = self._pending, self._waiting
                self._pending, self._waiting = [], []
            else:
                entries, futures = self._pending[: self.max_batch], self._waiting[: self.max_batch]
                del self._pending[: self.max_batch], self._waiting[: self.max_batch]
            prepared = _Prepared.hash(entries, futures, tentative if inflight is not None else self._frontier)
            if inflight is not None:
                ok = await inflight
                if not ok or prepared.start != self._frontier.size:
                    prepared = _Prepared.hash(entries, futures, self._frontier)
            tentative = prepared.frontier
            inflight = asyncio.create_task(self._commit(prepared))

    async def _commit(self, prepared: _Prepared) -> bool:
        """Make one batch durable and answer its callers; False (and every caller told) if the store failed."""
        try:
            for attempt in range(3):
                try:
                    await self.store.append(prepared.start, prepared.entries, prepared.leaves, prepared.subtrees)
                    break
                except StoreConflict:
                    # Another writer appended (or a commit reported as failed did land): reload and re-hash.
                    size, hashes = await self.store.load_tree()
                    self._frontier = Frontier(size, hashes)
                    prepared = _Prepared.hash(prepared.entries, prepared.futures, self._frontier)
                    log.warning("audit tree moved under the writer; reloaded", extra={"size": size, "try": attempt})
            else:
                raise StoreConflict
        except Exception as exc:  # the store failed: nobody in this batch may act
            log.error("audit append failed", extra={"error": repr(exc), "entries": len(prepared.entries)})
            failure = AuditUnavailable(f"the audit store could not make the entry durable: {exc!r}")
            for future in prepared.futures:
                if not future.done():
                    future.set_exception(failure)
            return False
        frontier = prepared.frontier
        self._frontier = frontier
        self._head = (frontier.size, frontier.root())
        self.batches += 1
        receipts = list(map(AuditReceipt, range(prepared.start, frontier.size), map(bytes.hex, prepared.leaves)))
        _answer(prepared.futures, receipts)
        last = self._last_checkpoint.tree_size if self._last_checkpoint else 0
        if frontier.size - last >= self.checkpoint_entries:
            self._checkpoint_wake.set()
        return True

    # --- checkpoints ----------------------------------------------------------------------------------

    async def _run_checkpointer(self) -> None:
        # Stopped by clearing _running and setting the event, not by cancel(): Python 3.11's wait_for can swallow a
        # cancellation that races with the event, and a checkpoint being signed should finish, not be cut off.
        loop = asyncio.get_running_loop()
        retry_at = 0.0  # after a failure (no signer, HSM away) wait an interval instead of retrying every batch
        while True:
            timeout = max(retry_at - loop.time(), 0.0) or self.checkpoint_interval_s
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._checkpoint_wake.wait()
            if not self._running:
                return
            self._checkpoint_wake.clear()
            if loop.time() < retry_at:
                continue
            try:
                await self.checkpoint()
            except Exception as exc:
                log.error("audit checkpoint not issued", extra={"error": repr(exc)})
                retry_at = loop.time() + self.checkpoint_interval_s

    async def checkpoint(self) -> StoredCheckpoint | None:
        """Sign and store a checkpoint of the current tree if it grew since the last one; return the latest."""
        async with self._checkpoint_lock:
            size, root = self._head
            last = self._last_checkpoint
            if size == 0 or (last is not None and last.tree_size >= size):
                return last
            if last is not None:
                proof = await self.consistency_proof(last.tree_size, size)
                try:
                    verify_consistency(last.tree_size, size, last.root_hash, root, proof.hashes)
                except ProofError as exc:
                    raise CheckpointRefused(
                        f"tree at size {size} is not consistent with the checkpoint at size {last.tree_size}: "
                        f"{exc.detail}"
                    ) from exc
            try:
                signer = self.signer_source()
            except Exception as exc:
                raise CheckpointRefused(f"no checkpoint signer available: {exc!r}") from exc
            note, verifier = await asyncio.to_thread(sign_checkpoint, Checkpoint(self.origin, size, root), signer)
            stored = StoredCheckpoint(size, root, note, verifier.vkey, format_time(datetime.now(UTC)))
            await self.store.add_checkpoint(stored)
            self._last_checkpoint = stored
            log.info("audit checkpoint", extra={"tree_size": size, "key": verifier.vkey.split("+")[1]})
            return stored

    async def latest_checkpoint(self) -> StoredCheckpoint | None:
        return await self.store.latest_checkpoint()

    # --- reads and proofs -----------------------------------------------------------------------------

    async def tree_size(self) -> int:
        return await self.store.tree_size()

    async def get_entry(self, index: int) -> StoredEntry:
        entry = await self.store.entry(index) if index >= 0 else None
        if entry is None:
            raise EntryNotFound(f"no audit entry with index {index}")
        return entry

    async def entries(self, start: int, limit: int) -> list[StoredEntry]:
        if start < 0 or not 1 <= limit <= 1000:
            raise InvalidSearch("start must be ≥ 0 and limit between 1 and 1000")
        return await self.store.entries(start, start + limit)

    async def _size(self, tree_size: int | None) -> int:
        if tree_size is not None and tree_size < 0:
            raise InvalidProofRequest(f"tree size {tree_size} is negative")
        if tree_size is not None and self._running and tree_size <= self._frontier.size:
            return tree_size  # committed by this writer: no need to ask the store (proofs stay one read)
        current = await self.store.tree_size()
        if tree_size is None:
            return current
        if tree_size > current:
            raise TreeSizeBeyondLog(f"tree size {tree_size} is beyond the log (size {current})")
        return tree_size

    def _known_root(self, size: int) -> bytes | None:
        """The root of the tree of ``size`` when the log holds it in memory (its head, its last checkpoint): the
        root of a size never changes, and it is what most proofs ask for (the current tree), so they need not fetch
        and fold the O(log n) frontier hashes."""
        head_size, head_root = self._head
        if size == head_size and self._running:
            return head_root
        last = self._last_checkpoint
        if last is not None and size == last.tree_size:
            return last.root_hash
        return None

    async def _proof_hashes(
        self, ranges: list[tuple[int, int]], extra: tuple[Subtree, ...] = ()
    ) -> tuple[list[bytes], dict[Subtree, bytes]]:
        """One store read for a proof: the MTH of every range (each split into its stored perfect subtrees once),
        and the hashes of the ``extra`` subtrees."""
        parts = [perfect_subtrees(a, b) for a, b in ranges]
        wanted = [st for part in parts for st in part]
        wanted.extend(extra)
        hashes = await self.store.subtree_hashes(wanted)
        folded = [hashes[part[0]] if len(part) == 1 else fold_right([hashes[st] for st in part]) for part in parts]
        return folded, hashes

    async def inclusion_proof(self, index: int, tree_size: int | None = None) -> InclusionProof:
        """RFC 9162 §2.1.3.1 audit path for entry ``index`` in the tree of ``tree_size`` (default: now)."""
        size = await self._size(tree_size)
        if not 0 <= index < size:
            raise InvalidProofRequest(f"entry {index} is not in the tree of size {size}")
        path, hashes = await self._proof_hashes(inclusion_path_ranges(index, size), ((0, index),))
        leaf = hashes[(0, index)]
        # The root: in memory for the head and the last checkpoint, else where the path leads from the leaf (the
        # same stored hashes the answer consists of), rather than fetching and folding the tree's frontier.
        root = self._known_root(size) or root_from_inclusion_proof(index, size, leaf, path)
        return InclusionProof(index, size, leaf, root, path)

    async def consistency_proof(self, first: int, second: int | None = None) -> ConsistencyProof:
        """RFC 9162 §2.1.4.1 proof that the tree at ``second`` (default: now) extends the tree at ``first``."""
        size = await self._size(second)
        if first <= 0 or first > size:
            raise InvalidProofRequest(f"no consistency proof from size {first} to size {size}: need 0 < first ≤ second")
        if first == size:  # the empty proof; both roots are the tree's root
            root = self._known_root(size)
            if root is None:
                _, hashes = await self._proof_hashes([], tuple(perfect_subtrees(0, size)))
                root = fold_right([hashes[st] for st in perfect_subtrees(0, size)])
            return ConsistencyProof(first, size, root, root, [])
        first_known, second_known = self._known_root(first), self._known_root(size)
        # A first tree whose size is a power of two is one stored subtree, and the proof leaves it out.
        single = first & (first - 1) == 0 and first_known is None
        extra = ((first.bit_length() - 1, 0),) if single else ()
        proof, hashes = await self._proof_hashes(consistency_proof_ranges(first, size), extra)
        if first_known is None or second_known is None:
            # The roots where the proof leads (RFC 9162 §2.1.4.2), from the hashes just read, rather than fetching
            # and folding both trees' frontiers.
            first_root, second_root = roots_from_consistency_proof(
                first, size, proof, first_known or (hashes[extra[0]] if single else None),
                second_too=second_known is None,
            )
            first_known, second_known = first_known or first_root, second_known or second_root
        return ConsistencyProof(first, size, first_known, second_known, proof)

    async def search(
        self,
        *,
        actor: str | None = None,
        action: str | None = None,
        target: str | None = None,
        since: str | datetime | None = None,
        until: str | datetime | None = None,
        after: int = -1,
        limit: int = 100,
    ) -> list[StoredEntry]:
        """Entries matching every given criterion, in log order after index ``after`` (for paging)."""
        if not 1 <= limit <= 1000:
            raise InvalidSearch("limit must be between 1 and 1000")

        def as_time(value: str | datetime | None) -> str | None:
            if value is None:
                return None
            try:
                return format_time(value if isinstance(value, datetime) else parse_time(value))
            except InvalidAuditEvent as exc:
                raise InvalidSearch(exc.detail) from None

        query = SearchQuery(actor, action, target, as_time(since), as_time(until), after, limit)
        return await self.store.search(query)
