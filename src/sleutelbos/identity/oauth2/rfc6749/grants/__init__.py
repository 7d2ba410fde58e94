"""Token endpoint grants (RFC 6749 §4, §6), one module each, dispatched on ``grant_type``."""

from __future__ import annotations

from typing import Any

from sleutelbos.identity.errors import (
    AccessDenied,
    InvalidClient,
    InvalidGrant,
    UnauthorizedClient,
    UnsupportedGrantType,
)
from sleutelbos.identity.models import Client
from sleutelbos.identity.oauth2.rfc6749.grants import (
    authorization_code,
    client_credentials,
    password,
    refresh_token,
)

GRANTS = {
    "authorization_code": authorization_code.grant,
    "client_credentials": client_credentials.grant,
    "refresh_token": refresh_token.grant,
    "password": password.grant,
}


async def token(service: Any, client: Client, form: dict[str, str], source: str | None) -> dict[str, Any]:
    grant_type = form.get("grant_type")
    handler = GRANTS.get(grant_type or "")
    if handler is None:
        raise UnsupportedGrantType(f"grant_type {grant_type!r} is not supported")
    if grant_type not in client.grant_types:
        raise UnauthorizedClient(f"this client may not use the {grant_type} grant")
    try:
        return await handler(service, client, form, source)
    except AccessDenied as exc:  # a disabled organisation, in the token endpoint's own vocabulary (§5.2)
        if grant_type == "client_credentials":
            raise InvalidClient(exc.detail) from exc
        raise InvalidGrant(exc.detail) from exc
