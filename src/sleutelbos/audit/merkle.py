"""RFC 9162 §2.1 Merkle Tree Hash, inclusion proofs (§2.1.3) and consistency proofs (§2.1.4).

What is here, in the RFC's own terms:

- ``leaf_hash`` / ``node_hash``: MTH of one entry is SHA-256(0x00 ‖ d), of an inner node SHA-256(0x01 ‖ l ‖ r)
  (§2.1.1); the empty tree's hash is SHA-256 of the empty string.
- ``inclusion_path_ranges`` / ``consistency_proof_ranges``: the PATH (§2.1.3.1) and PROOF/SUBPROOF (§2.1.4.1)
  algorithms, written to return *which* subtrees ``D[a:b]`` the proof consists of, rather than their hashes, so that
  a store can fetch exactly those hashes — each such range is a handful of stored perfect subtrees
  (``perfect_subtrees``), which is what makes a proof O(log n) reads.
- ``verify_inclusion`` / ``verify_consistency``: the verification algorithms of §2.1.3.2 and §2.1.4.2, raising
  :class:`ProofError` with the reason instead of returning a boolean.
- ``Frontier``: the compact range of a growing tree (the perfect subtrees that make up ``D[0:n]``), used by the
  writer to compute the new stored subtree hashes of a batch and the root without reading anything back.

Left out: other hash algorithms than SHA-256 (RFC 9162 allows a log to choose), and the TLS presentation of proofs
(§4); proofs travel as lists of hashes.

Where subtree hashes live: leaf ``c`` *completes* the perfect subtrees of heights 1…t that end at it (t = the
number of trailing one bits of c). ``Frontier.append`` returns their hashes, lowest first, concatenated; a store
keeps that blob in leaf c's own row, so a subtree ``(level, index)`` is found in the row of
``completing_leaf(level, index)`` at offset ``(level − 1)·32``. Every entry row then carries on average one subtree
hash, and an append is one row per entry.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence

from sleutelbos.core.errors import SleutelbosError

HASH_SIZE = 32
_sha256 = hashlib.sha256
EMPTY_ROOT = _sha256(b"").digest()

Range = tuple[int, int]
"""A half-open leaf range ``D[a:b]``."""

Subtree = tuple[int, int]
"""A perfect, aligned subtree: ``(level, index)`` covers leaves ``[index·2^level, (index+1)·2^level)``."""


class ProofError(SleutelbosError):
    """A proof does not verify, or the proof request is impossible; ``detail`` says which check failed."""


def leaf_hash(entry: bytes) -> bytes:
    """MTH({d}) = SHA-256(0x00 ‖ d) — RFC 9162 §2.1.1."""
    return _sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 ‖ MTH(left) ‖ MTH(right)) — RFC 9162 §2.1.1."""
    return _sha256(b"\x01" + left + right).digest()


def completing_leaf(level: int, index: int) -> int:
    """The leaf whose append completes the perfect subtree ``(level, index)``: its last leaf."""
    return ((index + 1) << level) - 1


def _largest_power_of_two_below(n: int) -> int:
    """k of §2.1.1: the largest power of two smaller than n (n ≥ 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def perfect_subtrees(start: int, end: int) -> list[Subtree]:
    """Split ``D[start:end]`` into maximal aligned perfect subtrees, left to right (largest first).

    For the ranges that RFC 9162 proofs consist of (``start`` a multiple of the largest power of two that fits),
    the MTH of the range is the right fold of these subtrees' hashes (:func:`fold_right`).
    """
    out: list[Subtree] = []
    while start < end:
        # The largest power of two that both divides start (alignment) and fits in what is left; both are powers
        # of two, so it is the smaller of the two — one bit_length instead of halving in a loop (proofs call this
        # for every range).
        rest = end - start
        size = start & -start
        if not size or size > rest:
            size = 1 << (rest.bit_length() - 1)
        level = size.bit_length() - 1
        out.append((level, start >> level))
        start += size
    return out


def fold_right(hashes: Sequence[bytes]) -> bytes:
    """MTH of a range from the hashes of its :func:`perfect_subtrees`, combined from the right."""
    if not hashes:
        return EMPTY_ROOT
    acc = hashes[-1]
    for h in reversed(hashes[:-1]):
        acc = node_hash(h, acc)
    return acc


def inclusion_path_ranges(index: int, size: int) -> list[Range]:
    """PATH(m, D[n]) of RFC 9162 §2.1.3.1 as leaf ranges, from the leaf's sibling up to the root's child."""
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is not in a tree of size {size}")
    path: list[Range] = []
    lo, hi, m = 0, size, index
    while hi - lo > 1:
        k = _largest_power_of_two_below(hi - lo)
        if m < k:
            path.append((lo + k, hi))
            hi = lo + k
        else:
            path.append((lo, lo + k))
            lo, m = lo + k, m - k
    path.reverse()
    return path


def consistency_proof_ranges(first: int, second: int) -> list[Range]:
    """PROOF(m, D[n]) = SUBPROOF(m, D[n], true) of RFC 9162 §2.1.4.1 as leaf ranges, in proof order."""
    if not 0 < first <= second:
        raise ProofError(f"no consistency proof from size {first} to size {second}: need 0 < first ≤ second")
    out: list[Range] = []
    lo, hi, m, whole = 0, second, first, True
    while True:
        n = hi - lo
        if m == n:
            if not whole:
                out.append((lo, hi))
            break
        k = _largest_power_of_two_below(n)
        if m <= k:
            out.append((lo + k, hi))
            hi = lo + k
        else:
            out.append((lo, lo + k))
            lo, m, whole = lo + k, m - k, False
    # SUBPROOF appends on the way back up the recursion: the deepest subtree comes first.
    return out[::-1]


def subtrees_of(ranges: Iterable[Range]) -> list[Subtree]:
    """Every stored subtree needed to hash ``ranges`` (deduplicated, in no particular order)."""
    seen: dict[Subtree, None] = {}
    for a, b in ranges:
        for st in perfect_subtrees(a, b):
            seen[st] = None
    return list(seen)


def hash_ranges(ranges: Sequence[Range], subtree_hashes: Mapping[Subtree, bytes]) -> list[bytes]:
    """The MTH of each range, from the hashes of its perfect subtrees."""
    return [fold_right([subtree_hashes[st] for st in perfect_subtrees(a, b)]) for a, b in ranges]


def _check_proof_hashes(proof: Sequence[bytes]) -> None:
    for i, p in enumerate(proof):
        if len(p) != HASH_SIZE:
            raise ProofError(f"proof element {i} is {len(p)} bytes, not a {HASH_SIZE}-byte SHA-256 hash")


def root_from_inclusion_proof(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """The root that ``proof`` leads to from ``leaf`` at ``index`` in a tree of ``size`` (§2.1.3.2 steps 1–5)."""
    if size <= 0 or index < 0 or index >= size:
        raise ProofError(f"leaf index {index} is beyond the tree size {size}")
    _check_proof_hashes(proof)
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise ProofError("inclusion proof is longer than the path to the root")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion proof is shorter than the path to the root")
    return r


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes) -> None:
    """RFC 9162 §2.1.3.2; raises :class:`ProofError` unless ``leaf`` is at ``index`` in the tree with ``root``."""
    if len(leaf) != HASH_SIZE:
        raise ProofError(f"leaf hash is {len(leaf)} bytes, not {HASH_SIZE}")
    computed = root_from_inclusion_proof(index, size, leaf, proof)
    if computed != root:
        raise ProofError("inclusion proof leads to a different root hash")


def verify_consistency(first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]) -> None:
    """RFC 9162 §2.1.4.2; raises :class:`ProofError` unless the tree at ``second`` extends the one at ``first``.

    As in the RFC (which requires 0 < first), a consistency check from the empty tree is refused: it proves
    nothing. Equal sizes need an empty proof and equal roots.
    """
    if first <= 0:
        raise ProofError("a consistency proof needs first > 0: any tree extends the empty tree")
    if first > second:
        raise ProofError(f"first size {first} is greater than second size {second}")
    if first == second:
        if proof:
            raise ProofError("sizes are equal but the proof is not empty")
        if first_root != second_root:
            raise ProofError("sizes are equal but the root hashes differ")
        return
    if not proof:
        raise ProofError("empty consistency proof for different sizes")
    fr, sr = roots_from_consistency_proof(first, second, proof, first_root)
    if fr != first_root:
        raise ProofError("consistency proof does not lead to the first root hash")
    if sr != second_root:
        raise ProofError("consistency proof does not lead to the second root hash")


def roots_from_consistency_proof(
    first: int, second: int, proof: Sequence[bytes], first_root: bytes | None = None, *, second_too: bool = True
) -> tuple[bytes, bytes]:
    """The first and second roots that ``proof`` leads to (§2.1.4.2 steps 2–7), for 0 < first < second.

    When ``first`` is an exact power of two, the proof leaves out the first tree (it is a single subtree), so its
    root must be passed in; it is then returned as given. A log uses this to answer a proof's roots from the proof
    hashes it has fetched anyway, instead of fetching and folding the trees' frontiers. With ``second_too=False``
    the second root is not computed (half the hashing; the second value returned is then meaningless).
    """
    if not 0 < first < second:
        raise ProofError(f"no consistency proof roots for sizes {first} → {second}: need 0 < first < second")
    _check_proof_hashes(proof)
    path = list(proof)
    if first & (first - 1) == 0:  # step 2: first is an exact power of two
        if first_root is None:
            raise ProofError(f"the root of the first tree (size {first}, a power of two) is not in the proof")
        path.insert(0, first_root)
    if not path:
        raise ProofError("empty consistency proof for different sizes")
    fn, sn = first - 1, second - 1
    while fn & 1:  # step 4
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof is longer than needed")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            if second_too:
                sr = node_hash(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        elif second_too:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("consistency proof is shorter than needed")
    return fr, sr


class Frontier:
    """The compact range ``D[0:n]``: the hashes of its perfect subtrees, largest (leftmost) first.

    ``append`` adds one leaf and returns the hashes of the subtrees it completes — exactly what a store keeps with
    that leaf — so that stored subtree hashes are written once, with their leaf, and never updated.
    """

    __slots__ = ("_hashes", "_levels", "size")

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        expected = [lvl for lvl in range(size.bit_length() - 1, -1, -1) if size >> lvl & 1]
        if len(hashes) != len(expected):
            raise ValueError(f"a tree of size {size} has {len(expected)} frontier subtrees, got {len(hashes)}")
        self.size = size
        self._levels = expected
        self._hashes = list(hashes)

    @staticmethod
    def subtrees_for(size: int) -> list[Subtree]:
        """The perfect subtrees of ``D[0:size]``, left to right: the frontier a store must load on open."""
        return perfect_subtrees(0, size)

    def copy(self) -> Frontier:
        f = Frontier.__new__(Frontier)
        f.size, f._levels, f._hashes = self.size, list(self._levels), list(self._hashes)
        return f

    def append(self, leaf: bytes) -> bytes:
        """Add one leaf hash; return the hashes of the subtrees it completes (heights 1…t), concatenated."""
        levels, hashes = self._levels, self._hashes
        level, h = 0, leaf
        completed = b""
        while levels and levels[-1] == level:
            levels.pop()
            h = _sha256(b"\x01" + hashes.pop() + h).digest()
            level += 1
            completed += h
        levels.append(level)
        hashes.append(h)
        self.size += 1
        return completed

    def extend(self, leaves: Iterable[bytes]) -> list[bytes]:
        """:meth:`append` for a batch — what the writer does for every entry, so written as one loop: leaf ``c``
        completes as many subtrees as ``c`` has trailing one bits, which are the frontier's last ones."""
        levels, hashes, sha = self._levels, self._hashes, _sha256
        size = self.size
        out: list[bytes] = []
        for leaf in leaves:
            t = (size ^ (size + 1)).bit_length() - 1
            h = leaf
            if t:
                completed = b""
                for _ in range(t):
                    h = sha(b"\x01" + hashes.pop() + h).digest()
                    completed += h
                del levels[-t:]
                out.append(completed)
            else:
                out.append(b"")
            levels.append(t)
            hashes.append(h)
            size += 1
        self.size = size
        return out

    def root(self) -> bytes:
        """MTH(D[0:n]) — the right fold of the frontier."""
        return fold_right(self._hashes)


def root_of(leaves: Iterable[bytes]) -> bytes:
    """MTH of a whole list of leaf hashes (reference computation for tests and offline verification)."""
    f = Frontier()
    for leaf in leaves:
        f.append(leaf)
    return f.root()
