"""Custody's HTTP face, read-only for now: ``GET /custody/inventory`` (JSON array, one object per key, the same
fields as ``sleutelbos custody inventory --json``), ``GET /custody/keys/{id}``, ``GET /custody/purposes/{purpose}
/public-keys`` (the verification keys of a purpose, active and still-valid previous versions, SPKI in base64url)
and ``GET /custody/usage`` (per-message operation counts).

Control operations (generate, rotate, destroy, campaigns) are deliberately not exposed over HTTP yet: they need
the policy enforcement point's authorisation in front of them, which comes with the ``pep`` component; until
then operators use the CLI on the host. Errors map to ``{"error": code, "detail": …}`` with the error's status.
"""

from __future__ import annotations

import base64

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from sleutelbos.custody.errors import CustodyError, InvalidKeyRequest
from sleutelbos.custody.service import KeyCustody


def _error(exc: CustodyError) -> JSONResponse:
    return JSONResponse({"error": exc.code, "detail": exc.detail}, status_code=exc.status)


def custody_routes(custody: KeyCustody) -> list[BaseRoute]:
    async def inventory(request: Request) -> JSONResponse:
        try:
            limit = int(request.query_params.get("limit", "1000"))
            offset = int(request.query_params.get("offset", "0"))
            if not (0 < limit <= 10000 and offset >= 0):
                raise ValueError
        except ValueError:
            return _error(InvalidKeyRequest("limit must be 1..10000 and offset ≥ 0"))
        try:
            entries = custody.inventory(limit=limit, offset=offset)
        except CustodyError as exc:
            return _error(exc)
        return JSONResponse([e.as_dict() for e in entries])

    async def key(request: Request) -> JSONResponse:
        try:
            record = custody.record(request.path_params["key_id"])
            return JSONResponse(custody.inventory_entry(record).as_dict())
        except CustodyError as exc:
            return _error(exc)

    async def public_keys(request: Request) -> JSONResponse:
        try:
            keys = custody.public_keys_for(request.path_params["purpose"])
        except CustodyError as exc:
            return _error(exc)
        return JSONResponse([
            {"kid": k.key_id, "alg": k.algorithm, "active": k.active,
             "spki": base64.urlsafe_b64encode(k.spki_der).rstrip(b"=").decode()}
            for k in keys
        ])

    async def usage(request: Request) -> JSONResponse:
        try:
            return JSONResponse(custody.usage())
        except CustodyError as exc:
            return _error(exc)

    return [
        Route("/custody/inventory", inventory),
        Route("/custody/keys/{key_id}", key),
        Route("/custody/purposes/{purpose}/public-keys", public_keys),
        Route("/custody/usage", usage),
    ]
