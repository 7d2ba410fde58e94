"""What every identity HTTP route shares: bounded body reading, form/JSON parsing that refuses ambiguity, and the
mapping of typed errors to the OAuth 2.0 error body (RFC 6749 §5.2, RFC 6750 §3) — never a stack trace, never a
partial result."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.requests import Request
from starlette.responses import Response

from sleutelbos.core.protocols import AuditUnavailable
from sleutelbos.identity.errors import IdentityError, InvalidRequest, LoginThrottled, RequestTooLarge, ServerError

log = logging.getLogger("sleutelbos.identity.http")

FORM_LIMIT = 16 * 1024
JSON_LIMIT = 64 * 1024
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def error_response(exc: IdentityError) -> Response:
    headers = dict(NO_STORE)
    if exc.error in ("invalid_token", "insufficient_scope"):
        headers["WWW-Authenticate"] = f'Bearer error="{exc.error}"'
    elif exc.error == "invalid_client":
        headers["WWW-Authenticate"] = 'Basic realm="sleutelbos"'
    if isinstance(exc, LoginThrottled):
        headers["Retry-After"] = str(exc.retry_after)
    return json_response({"error": exc.error, "error_description": exc.detail}, exc.status, headers)


Handler = Callable[[Request], Awaitable[Response]]


def oauth_errors(handler: Handler) -> Handler:
    """Run ``handler``; typed errors become standard error bodies, anything else a 500 ``server_error``."""

    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except IdentityError as exc:
            return error_response(exc)
        except AuditUnavailable as exc:
            return error_response(ServerError(f"audit log unavailable: {exc.detail}"))
        except Exception:
            log.exception("identity request failed", extra={"path": request.url.path})
            return error_response(ServerError("internal error; nothing was changed or issued"))

    wrapped.__name__ = handler.__name__
    wrapped.__doc__ = handler.__doc__
    return wrapped


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise RequestTooLarge(f"request body larger than {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise RequestTooLarge(f"request body larger than {limit} bytes")
    return bytes(body)


def parse_params(raw: str) -> dict[str, str]:
    """``application/x-www-form-urlencoded`` (or a query string) with every parameter at most once (§3.1, §3.2)."""
    try:
        pairs = parse_qsl(raw, keep_blank_values=True, strict_parsing=False, errors="strict", max_num_fields=50)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest("malformed form encoding or too many parameters") from exc
    params: dict[str, str] = {}
    for key, value in pairs:
        if key in params:
            raise InvalidRequest(f"parameter {key!r} given more than once")
        if "\x00" in value or len(value) > 8192:
            raise InvalidRequest(f"parameter {key!r} is malformed or too long")
        if value != "":
            params[key] = value
    return params


async def read_form(request: Request) -> dict[str, str]:
    ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        raise InvalidRequest("content type must be application/x-www-form-urlencoded")
    body = await read_body(request, FORM_LIMIT)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest("request body is not UTF-8") from exc
    return parse_params(text)


def query_params(request: Request) -> dict[str, str]:
    if len(request.url.query) > FORM_LIMIT:
        raise RequestTooLarge("query string too long")
    return parse_params(request.url.query)


async def read_json(request: Request) -> dict[str, Any]:
    ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if ctype != "application/json":
        raise InvalidRequest("content type must be application/json")
    body = await read_body(request, JSON_LIMIT)
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"request body is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidRequest("request body must be a JSON object")
    return data
