"""Offline verification of an export (or of the live store), naming the first entry that does not hold.

What is checked, in log order:

- entry indices run 0, 1, 2, … with none missing or moved (deletion and reordering);
- each entry's bytes are canonical JSON and hash (RFC 9162 leaf hash) to the recorded ``leaf_hash`` (an edit of the
  entry, or of its stored hash);
- each checkpoint is placed at its tree size, comes from the log's origin, is signed by a trusted key (``--key``, or
  the keys the export names — self-asserted, reported as such), and its root equals the root recomputed from the
  entries. Consecutive checkpoints are then consistent by construction (both roots are recomputed from one sequence of
  leaves); on the live store an RFC 9162 consistency proof from the stored subtree hashes is also verified for every
  consecutive pair, and every stored subtree hash is compared with the recomputed one.

When an entry *and* its leaf hash were both rewritten, only the checkpoints can tell: the first checkpoint whose root
does not match is reported, with the first entry it alone covers (the entry right after the previous good
checkpoint) — the altered entry lies between the two, since signed roots are the only trusted data in an export.
Entries after the last checkpoint are verified for their hashes but no signature covers them; the report says how many.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

import orjson

from sleutelbos.audit.checkpoint import CheckpointError, NoteVerifier, open_note
from sleutelbos.audit.entry import NonCanonicalEntry, check_canonical
from sleutelbos.audit.export import FORMAT
from sleutelbos.audit.merkle import Frontier, ProofError, leaf_hash, verify_consistency
from sleutelbos.audit.store import AuditStore, iter_entries
from sleutelbos.core.errors import SleutelbosError


class VerificationFailure(SleutelbosError):
    """The log does not verify; ``index`` is the first entry that does not hold (None for a header/key problem)."""

    def __init__(self, index: int | None, detail: str) -> None:
        super().__init__(detail)
        self.index = index


@dataclass
class VerificationReport:
    ok: bool
    entries: int = 0
    checkpoints: int = 0
    uncovered_entries: int = 0
    keys_from: str = "given"
    first_bad_index: int | None = None
    reason: str | None = None

    def summary(self) -> str:
        if self.ok:
            text = (
                f"OK: {self.entries} entries, {self.checkpoints} checkpoints verified "
                f"(keys: {self.keys_from})"
            )
            if self.uncovered_entries:
                text += f"; {self.uncovered_entries} entries after the last checkpoint are not yet signed"
            return text
        if self.first_bad_index is None:
            return f"FAILED: {self.reason}"
        return f"FAILED at entry {self.first_bad_index}: {self.reason}"


class LogVerifier:
    """Streaming verifier: feed entries and checkpoints in log order, then ``finish``."""

    def __init__(self, origin: str, verifiers: list[NoteVerifier]) -> None:
        self.origin = origin
        self.verifiers = verifiers
        self.frontier = Frontier()
        self.last_good_checkpoint = 0
        self.checkpoints = 0
        self.completed = b""  # the subtree hashes the last entry completed

    def entry(self, index: int, data: bytes, recorded_leaf_hash: bytes) -> None:
        expected = self.frontier.size
        if index != expected:
            raise VerificationFailure(
                expected, f"entry {expected} is missing or out of order (the next entry says index {index})"
            )
        try:
            check_canonical(data)
        except NonCanonicalEntry as exc:
            raise VerificationFailure(index, exc.detail) from None
        computed = leaf_hash(data)
        if computed != recorded_leaf_hash:
            raise VerificationFailure(index, "the entry does not hash to its recorded leaf hash (entry or hash edited)")
        self.completed = self.frontier.append(computed)

    def checkpoint(self, tree_size: int, note: str) -> None:
        if tree_size != self.frontier.size:
            raise VerificationFailure(
                min(tree_size, self.frontier.size),
                f"checkpoint of size {tree_size} follows entry {self.frontier.size - 1}: entries are missing or moved",
            )
        if not self.verifiers:
            raise VerificationFailure(None, "no public key to verify checkpoints with (pass --key)")
        try:
            body, _ = open_note(note, self.verifiers)
        except CheckpointError as exc:  # the checkpoint itself is bad, not an entry
            raise VerificationFailure(None, f"checkpoint at size {tree_size} rejected: {exc.detail}") from None
        if body.origin != self.origin:
            raise VerificationFailure(None, f"checkpoint at size {tree_size} is from origin {body.origin!r}")
        if body.tree_size != tree_size:
            raise VerificationFailure(
                None, f"checkpoint line says size {tree_size} but its signed note says {body.tree_size}"
            )
        if body.root_hash != self.frontier.root():
            raise VerificationFailure(
                self.last_good_checkpoint,
                f"the signed root at size {tree_size} does not match the entries: an entry in "
                f"[{self.last_good_checkpoint}, {tree_size}) was altered together with its leaf hash",
            )
        self.last_good_checkpoint = tree_size
        self.checkpoints += 1

    def finish(self, claimed_size: int | None) -> VerificationReport:
        if claimed_size is not None and claimed_size != self.frontier.size:
            raise VerificationFailure(
                self.frontier.size, f"the log says {claimed_size} entries but {self.frontier.size} are present"
            )
        if self.checkpoints == 0 and self.frontier.size:
            raise VerificationFailure(0, "no signed checkpoint covers any entry")
        return VerificationReport(
            ok=True,
            entries=self.frontier.size,
            checkpoints=self.checkpoints,
            uncovered_entries=self.frontier.size - self.last_good_checkpoint,
        )


def _lines(handle: IO[bytes]) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, raw in enumerate(handle, start=1):
        if not raw.strip():
            continue
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise VerificationFailure(None, f"line {number} is not JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise VerificationFailure(None, f"line {number} is not a JSON object")
        yield number, doc


def verify_export(handle: IO[bytes], trusted: list[NoteVerifier] | None = None) -> VerificationReport:
    """Verify an export read from ``handle``; ``trusted`` keys, else the keys the export itself names."""
    try:
        return _verify_export(handle, trusted)
    except VerificationFailure as exc:
        return VerificationReport(ok=False, first_bad_index=exc.index, reason=exc.detail)


def _verify_export(handle: IO[bytes], trusted: list[NoteVerifier] | None) -> VerificationReport:
    lines = _lines(handle)
    first = next(lines, None)
    if first is None or first[1].get("type") != "log" or first[1].get("format") != FORMAT:
        raise VerificationFailure(None, f"the first line is not a {FORMAT} header")
    header = first[1]
    keys_from = "given"
    if trusted is None:
        try:
            trusted = [NoteVerifier.from_vkey(k["vkey"]) for k in header.get("public_keys", [])]
        except (CheckpointError, KeyError, TypeError) as exc:
            raise VerificationFailure(None, f"the export's public keys are malformed: {exc}") from None
        keys_from = "the export's own header (self-asserted; pass --key to check against a key you trust)"
    verifier = LogVerifier(str(header.get("origin", "")), trusted)
    for number, doc in lines:
        kind = doc.get("type")
        try:
            if kind == "entry":
                index, data, recorded = doc["index"], doc["entry"].encode(), bytes.fromhex(doc["leaf_hash"])
                if not isinstance(index, int):
                    raise TypeError("index is not an integer")
                verifier.entry(index, data, recorded)
            elif kind == "checkpoint":
                verifier.checkpoint(int(doc["tree_size"]), str(doc["note"]))
            else:
                raise VerificationFailure(verifier.frontier.size, f"line {number} has unknown type {kind!r}")
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise VerificationFailure(verifier.frontier.size, f"line {number} is malformed: {exc!r}") from None
    report = verifier.finish(header.get("tree_size"))
    report.keys_from = keys_from
    return report


async def verify_store(
    store: AuditStore, origin: str, trusted: list[NoteVerifier] | None = None
) -> VerificationReport:
    """Verify the live store: entries, every stored subtree hash, checkpoints and their consistency proofs."""
    try:
        return await _verify_store(store, origin, trusted)
    except VerificationFailure as exc:
        return VerificationReport(ok=False, first_bad_index=exc.index, reason=exc.detail)
    except SleutelbosError as exc:  # e.g. a stored subtree hash that a proof needs is gone
        return VerificationReport(ok=False, reason=exc.detail)


async def _verify_store(store: AuditStore, origin: str, trusted: list[NoteVerifier] | None) -> VerificationReport:
    from sleutelbos.audit.service import AuditLog

    checkpoints = await store.checkpoints()
    size = await store.tree_size()
    keys_from = "given"
    if trusted is None:
        trusted = [NoteVerifier.from_vkey(v) for v in dict.fromkeys(cp.vkey for cp in checkpoints)]
        keys_from = "the store's own checkpoints (self-asserted; pass --key to check against a key you trust)"
    verifier = LogVerifier(origin, trusted)
    pending = iter(checkpoints)
    next_cp = next(pending, None)

    async for row in iter_entries(store, 0, size):
        verifier.entry(row.index, row.data, row.leaf_hash)
        if len(row.subtrees) != len(verifier.completed):
            raise VerificationFailure(
                row.index, "the row holds the subtree hashes of another position: entries were moved or reordered"
            )
        if row.subtrees != verifier.completed:
            level = next(
                (lvl for lvl in range(1, 64) if row.subtrees[(lvl - 1) * 32 : lvl * 32]
                 != verifier.completed[(lvl - 1) * 32 : lvl * 32]),
                1,
            )
            first = row.index + 1 - (1 << level)
            raise VerificationFailure(
                first, f"stored subtree hash for entries [{first}, {row.index + 1}) does not match the entries"
            )
        while next_cp is not None and next_cp.tree_size == verifier.frontier.size:
            verifier.checkpoint(next_cp.tree_size, next_cp.note)
            next_cp = next(pending, None)
    if next_cp is not None:
        raise VerificationFailure(size, f"a checkpoint of size {next_cp.tree_size} is beyond the log (size {size})")
    report = verifier.finish(size)
    # RFC 9162 consistency proofs between consecutive checkpoints, served from the stored subtree hashes.
    reader = AuditLog(store, origin=origin, signer_source=_no_signer)
    for older, newer in itertools.pairwise(checkpoints):
        proof = await reader.consistency_proof(older.tree_size, newer.tree_size)
        try:
            verify_consistency(older.tree_size, newer.tree_size, older.root_hash, newer.root_hash, proof.hashes)
        except ProofError as exc:
            raise VerificationFailure(
                older.tree_size,
                f"checkpoints at {older.tree_size} and {newer.tree_size} are inconsistent: {exc.detail}",
            ) from None
    report.keys_from = keys_from
    return report


def _no_signer() -> Any:
    raise SleutelbosError("verification never signs")
