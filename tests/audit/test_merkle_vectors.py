"""Every transparency-dev inclusion and consistency vector in ../shared/conformance/merkle, against our verifier —
including the corrupted proofs (``wantErr``) that must be rejected — and our proof *generation* against the
happy-path proofs for the trees built from the vectors' leaves."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from sleutelbos.audit import merkle

VECTORS = Path(__file__).resolve().parents[2].parent / "shared" / "conformance" / "merkle"
LEAVES = [bytes.fromhex(h) for h in ("", "00", "10", "2021", "3031", "40414243", "5051525354555657",
                                     "606162636465666768696a6b6c6d6e6f")]
LEAF_HASHES = [merkle.leaf_hash(x) for x in LEAVES]


def _files(kind: str) -> list[Path]:
    return sorted((VECTORS / kind).rglob("*.json"))


def _b64(s: str) -> bytes:
    return base64.b64decode(s)


def _mth(a: int, b: int) -> bytes:
    return merkle.root_of(LEAF_HASHES[a:b])


def test_vectors_are_present() -> None:
    assert len(_files("inclusion")) > 90 and len(_files("consistency")) > 60
    assert merkle.root_of(LEAF_HASHES).hex() == "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"


@pytest.mark.parametrize("path", _files("inclusion"), ids=lambda p: str(p.relative_to(VECTORS)))
def test_inclusion_vector(path: Path) -> None:
    v = json.loads(path.read_text())
    proof = [_b64(p) for p in v["proof"] or []]
    if v["wantErr"]:
        with pytest.raises(merkle.ProofError):
            merkle.verify_inclusion(v["leafIdx"], v["treeSize"], _b64(v["leafHash"]), proof, _b64(v["root"]))
        return
    merkle.verify_inclusion(v["leafIdx"], v["treeSize"], _b64(v["leafHash"]), proof, _b64(v["root"]))
    if v["treeSize"] <= len(LEAVES) and _b64(v["root"]) == _mth(0, v["treeSize"]):
        ranges = merkle.inclusion_path_ranges(v["leafIdx"], v["treeSize"])
        assert [_mth(a, b) for a, b in ranges] == proof


@pytest.mark.parametrize("path", _files("consistency"), ids=lambda p: str(p.relative_to(VECTORS)))
def test_consistency_vector(path: Path) -> None:
    v = json.loads(path.read_text())
    proof = [_b64(p) for p in v["proof"] or []]
    args = (v["size1"], v["size2"], _b64(v["root1"]), _b64(v["root2"]), proof)
    if v["wantErr"]:
        with pytest.raises(merkle.ProofError):
            merkle.verify_consistency(*args)
        return
    merkle.verify_consistency(*args)
    if v["size1"] > 0 and v["size2"] <= len(LEAVES) and _b64(v["root2"]) == _mth(0, v["size2"]):
        ranges = merkle.consistency_proof_ranges(v["size1"], v["size2"])
        assert [_mth(a, b) for a, b in ranges] == proof


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 8, 9, 31, 64, 65, 100])
def test_generated_proofs_verify_for_every_leaf_and_size(size: int) -> None:
    leaves = [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(size)]
    root = merkle.root_of(leaves)
    frontier = merkle.Frontier()
    stored: dict[tuple[int, int], bytes] = {}
    for i, leaf in enumerate(leaves):
        stored[(0, i)] = leaf
        completed = frontier.append(leaf)
        for level in range(1, len(completed) // 32 + 1):
            index = ((i + 1) >> level) - 1
            assert merkle.completing_leaf(level, index) == i
            stored[(level, index)] = completed[(level - 1) * 32 : level * 32]
    assert frontier.root() == root
    for m in range(size):
        ranges = merkle.inclusion_path_ranges(m, size)
        proof = merkle.hash_ranges(ranges, {st: stored[st] for st in merkle.subtrees_of(ranges)})
        merkle.verify_inclusion(m, size, leaves[m], proof, root)
    for first in range(1, size + 1):
        ranges = merkle.consistency_proof_ranges(first, size)
        proof = merkle.hash_ranges(ranges, stored)
        merkle.verify_consistency(first, size, merkle.root_of(leaves[:first]), root, proof)


def test_flipped_bit_in_a_generated_proof_is_rejected() -> None:
    leaves = [merkle.leaf_hash(bytes([i])) for i in range(13)]
    root = merkle.root_of(leaves)
    ranges = merkle.inclusion_path_ranges(6, 13)
    proof = [merkle.root_of(leaves[a:b]) for a, b in ranges]
    merkle.verify_inclusion(6, 13, leaves[6], proof, root)
    for i in range(len(proof)):
        bad = list(proof)
        bad[i] = bytes([bad[i][0] ^ 0x01]) + bad[i][1:]
        with pytest.raises(merkle.ProofError, match="different root"):
            merkle.verify_inclusion(6, 13, leaves[6], bad, root)


def test_frontier_extend_is_append_for_every_leaf() -> None:
    """The writer's batch form gives the same completed subtrees and frontier as one append per leaf, from any
    starting size (batches start wherever the previous one ended)."""
    leaves = [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(300)]
    one = merkle.Frontier()
    expected = [one.append(leaf) for leaf in leaves]
    for cut in (0, 1, 7, 64, 255, 256, 299):
        batched = merkle.Frontier()
        got = batched.extend(leaves[:cut])
        got += batched.extend(leaves[cut:])
        assert got == expected and batched.size == 300 and batched.root() == one.root()
        assert merkle.perfect_subtrees(0, 300) == merkle.Frontier.subtrees_for(300)
    again = merkle.Frontier()
    again.extend(leaves[:37])
    again.append(leaves[37])  # the two forms can be mixed on one frontier
    assert again.extend(leaves[38:]) == expected[38:] and again.root() == one.root()


@pytest.mark.parametrize(
    ("start", "end"), [(0, 1), (0, 13), (5, 6), (8, 13), (16, 100), (96, 97), (1 << 20, (1 << 20) + 77)]
)
def test_perfect_subtrees_cover_the_range_with_aligned_maximal_pieces(start: int, end: int) -> None:
    parts = merkle.perfect_subtrees(start, end)
    position = start
    for level, index in parts:
        assert index << level == position  # contiguous and aligned
        position += 1 << level
    assert position == end


def test_roots_from_a_consistency_proof() -> None:
    """What the log answers as a consistency proof's roots: where the proof leads, for every pair of sizes."""
    leaves = [merkle.leaf_hash(bytes([i])) for i in range(40)]
    for second in range(2, 41):
        root2 = merkle.root_of(leaves[:second])
        for first in range(1, second):
            ranges = merkle.consistency_proof_ranges(first, second)
            proof = [merkle.root_of(leaves[a:b]) for a, b in ranges]
            root1 = merkle.root_of(leaves[:first])
            power_of_two = first & (first - 1) == 0
            given = root1 if power_of_two else None
            assert merkle.roots_from_consistency_proof(first, second, proof, given) == (root1, root2)
            assert merkle.roots_from_consistency_proof(first, second, proof, given, second_too=False)[0] == root1
            if power_of_two:
                with pytest.raises(merkle.ProofError, match="power of two"):
                    merkle.roots_from_consistency_proof(first, second, proof)
