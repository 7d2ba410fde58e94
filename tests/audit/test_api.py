"""``/audit/...`` over HTTP: entries, checkpoint, proofs, search; typed errors mapped to 4xx with a clear body."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
from audit_samples import event
from starlette.testclient import TestClient

from sleutelbos.audit import merkle
from sleutelbos.audit.checkpoint import NoteVerifier, open_note
from sleutelbos.core.settings import Settings
from sleutelbos.stack import StackContext, build_app


@pytest.fixture
def client(tmp_path: Path) -> Iterator[tuple[TestClient, StackContext]]:
    ctx = StackContext(settings=Settings(data_dir=tmp_path))
    with TestClient(build_app(ctx, expose=("audit",))) as http:
        yield http, ctx


def _b(s: str) -> bytes:
    return base64.b64decode(s)


def test_entries_checkpoint_and_proofs(client: tuple[TestClient, StackContext]) -> None:
    http, ctx = client
    assert http.get("/audit/checkpoint").status_code == 404
    log = ctx.services["audit"]
    for i in range(21):
        http.portal.call(log.record, event(i, actor="alice" if i % 2 else "bob"))  # type: ignore[union-attr]
    http.portal.call(log.checkpoint)  # type: ignore[union-attr]

    cp = http.get("/audit/checkpoint").json()
    assert cp["tree_size"] == 21
    verifier = NoteVerifier.from_vkey(cp["vkey"])
    body, _ = open_note(cp["note"], [verifier])
    assert body.root_hash == _b(cp["root_hash"])

    entry = http.get("/audit/entries/7").json()
    assert entry["index"] == 7 and entry["entry"]["actor"]["principal"] == "alice"
    listing = http.get("/audit/entries", params={"start": 5, "limit": 3}).json()
    assert [e["index"] for e in listing["entries"]] == [5, 6, 7] and listing["tree_size"] == 21

    proof = http.get("/audit/proofs/inclusion", params={"index": 7, "tree_size": 21}).json()
    merkle.verify_inclusion(7, 21, _b(proof["leaf_hash"]), [_b(h) for h in proof["proof"]], body.root_hash)
    assert _b(proof["leaf_hash"]) == _b(entry["leaf_hash"])
    cons = http.get("/audit/proofs/consistency", params={"first": 13, "second": 21}).json()
    merkle.verify_consistency(13, 21, _b(cons["first_root"]), body.root_hash, [_b(h) for h in cons["proof"]])

    found = http.get("/audit/search", params={"actor": "alice", "limit": 4}).json()
    assert [e["index"] for e in found["entries"]] == [1, 3, 5, 7] and found["next_after"] == 7
    more = http.get("/audit/search", params={"actor": "alice", "after": 7, "limit": 100}).json()
    assert [e["index"] for e in more["entries"]] == [9, 11, 13, 15, 17, 19]


@pytest.mark.parametrize(
    ("path", "params", "status", "code"),
    [
        ("/audit/entries/99", {}, 404, "not_found"),
        ("/audit/entries/x", {}, 400, "bad_parameter"),
        ("/audit/proofs/inclusion", {"index": 0, "tree_size": 50}, 409, "tree_size_beyond_log"),
        ("/audit/proofs/inclusion", {"index": 3, "tree_size": 3}, 400, "invalid_proof_request"),
        ("/audit/proofs/inclusion", {}, 400, "bad_parameter"),
        ("/audit/proofs/inclusion", {"index": "one"}, 400, "bad_parameter"),
        ("/audit/proofs/consistency", {"first": 0, "second": 2}, 400, "invalid_proof_request"),
        ("/audit/proofs/consistency", {"first": 1, "second": 5}, 409, "tree_size_beyond_log"),
        ("/audit/search", {"since": "last tuesday"}, 400, "invalid_search"),
        ("/audit/search", {"colour": "red"}, 400, "bad_parameter"),
        ("/audit/entries", {"limit": 5000}, 400, "invalid_search"),
    ],
)
def test_errors_are_typed_4xx_with_a_clear_body(
    client: tuple[TestClient, StackContext], path: str, params: dict, status: int, code: str
) -> None:
    http, ctx = client
    for i in range(3):
        http.portal.call(ctx.services["audit"].record, event(i))  # type: ignore[union-attr]
    response = http.get(path, params=params)
    assert response.status_code == status
    body = response.json()
    assert body["error"] == code and body["detail"]
