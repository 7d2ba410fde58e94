"""HTTP routes under ``/audit/…`` (JSON). Thin: parse, call :class:`~sleutelbos.audit.service.AuditLog`, map errors.

- ``GET /audit/entries?start=&limit=`` — entries in log order
- ``GET /audit/entries/{index}`` — one entry with its leaf hash
- ``GET /audit/checkpoint`` — the latest signed checkpoint (the note text, and its fields)
- ``GET /audit/proofs/inclusion?index=&tree_size=`` — RFC 9162 §2.1.3 audit path
- ``GET /audit/proofs/consistency?first=&second=`` — RFC 9162 §2.1.4 consistency proof
- ``GET /audit/search?actor=&action=&target=&since=&until=&after=&limit=`` — search

Hashes are base64 (as in checkpoints and the transparency-dev vectors). Errors are
``{"error": "<code>", "detail": "<what was wrong>"}`` with 400 (bad parameter), 404 (no such entry / checkpoint),
409 (tree size beyond the log), 503 (store unavailable).
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from sleutelbos.audit.service import (
    AuditLog,
    EntryNotFound,
    InvalidProofRequest,
    InvalidSearch,
    TreeSizeBeyondLog,
)
from sleutelbos.audit.store import AuditStoreError, StoredEntry
from sleutelbos.core.errors import SleutelbosError
from sleutelbos.core.protocols import AuditUnavailable

_ERRORS: list[tuple[type[SleutelbosError], int, str]] = [
    (EntryNotFound, 404, "not_found"),
    (TreeSizeBeyondLog, 409, "tree_size_beyond_log"),
    (InvalidProofRequest, 400, "invalid_proof_request"),
    (InvalidSearch, 400, "invalid_search"),
    (AuditUnavailable, 503, "audit_unavailable"),
    (AuditStoreError, 503, "audit_store_error"),
]


class BadParameter(SleutelbosError):
    pass


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def _b64(h: bytes) -> str:
    return base64.b64encode(h).decode()


def _int(request: Request, name: str, default: int | None = None) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise BadParameter(f"query parameter {name!r} must be an integer, got {raw!r}") from None


def _entry(e: StoredEntry) -> dict[str, Any]:
    return {"index": e.index, "leaf_hash": _b64(e.leaf_hash), "entry": orjson.loads(e.data)}


Handler = Callable[[Request], Awaitable[Response]]


def _guard(handler: Handler) -> Handler:
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except BadParameter as exc:
            return _json({"error": "bad_parameter", "detail": exc.detail}, 400)
        except SleutelbosError as exc:
            for kind, status, code in _ERRORS:
                if isinstance(exc, kind):
                    return _json({"error": code, "detail": exc.detail}, status)
            return _json({"error": "bad_request", "detail": exc.detail}, 400)

    return wrapped


def routes(audit: AuditLog) -> list[BaseRoute]:
    async def list_entries(request: Request) -> Response:
        start, limit = _int(request, "start", 0), _int(request, "limit", 100)
        assert start is not None and limit is not None
        rows = await audit.entries(start, limit)
        return _json({"tree_size": await audit.tree_size(), "entries": [_entry(e) for e in rows]})

    async def get_entry(request: Request) -> Response:
        raw = request.path_params["index"]
        if not raw.isdigit():
            raise BadParameter(f"entry index must be a non-negative integer, got {raw!r}")
        return _json(_entry(await audit.get_entry(int(raw))))

    async def checkpoint(request: Request) -> Response:
        latest = await audit.latest_checkpoint()
        if latest is None:
            raise EntryNotFound("no checkpoint has been issued yet")
        return _json(
            {
                "origin": audit.origin,
                "tree_size": latest.tree_size,
                "root_hash": _b64(latest.root_hash),
                "issued_at": latest.issued_at,
                "vkey": latest.vkey,
                "note": latest.note,
            }
        )

    async def inclusion(request: Request) -> Response:
        index = _int(request, "index")
        if index is None:
            raise BadParameter("query parameter 'index' is required")
        proof = await audit.inclusion_proof(index, _int(request, "tree_size"))
        return _json(
            {
                "index": proof.index,
                "tree_size": proof.tree_size,
                "leaf_hash": _b64(proof.leaf_hash),
                "root_hash": _b64(proof.root_hash),
                "proof": [_b64(h) for h in proof.hashes],
            }
        )

    async def consistency(request: Request) -> Response:
        first = _int(request, "first")
        if first is None:
            raise BadParameter("query parameter 'first' is required")
        proof = await audit.consistency_proof(first, _int(request, "second"))
        return _json(
            {
                "first": proof.first,
                "second": proof.second,
                "first_root": _b64(proof.first_root),
                "second_root": _b64(proof.second_root),
                "proof": [_b64(h) for h in proof.hashes],
            }
        )

    async def search(request: Request) -> Response:
        q = request.query_params
        unknown = set(q.keys()) - {"actor", "action", "target", "since", "until", "after", "limit"}
        if unknown:
            raise BadParameter(f"unknown search parameters: {', '.join(sorted(unknown))}")
        rows = await audit.search(
            actor=q.get("actor"),
            action=q.get("action"),
            target=q.get("target"),
            since=q.get("since"),
            until=q.get("until"),
            after=_int(request, "after", -1),  # type: ignore[arg-type]
            limit=_int(request, "limit", 100),  # type: ignore[arg-type]
        )
        return _json({"entries": [_entry(e) for e in rows], "next_after": rows[-1].index if rows else None})

    return [
        Route("/audit/entries", _guard(list_entries), methods=["GET"]),
        Route("/audit/entries/{index}", _guard(get_entry), methods=["GET"]),
        Route("/audit/checkpoint", _guard(checkpoint), methods=["GET"]),
        Route("/audit/proofs/inclusion", _guard(inclusion), methods=["GET"]),
        Route("/audit/proofs/consistency", _guard(consistency), methods=["GET"]),
        Route("/audit/search", _guard(search), methods=["GET"]),
    ]
