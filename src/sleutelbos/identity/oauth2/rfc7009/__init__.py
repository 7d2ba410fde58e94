"""RFC 7009 token revocation for authenticated clients.

An access token is revoked by its ``jti`` (listed in the revocation feed until it expires, so every verifier that
follows the feed refuses it within a second); a refresh token revokes its whole family and the access tokens
issued with it (§2.1: "SHOULD also invalidate all access tokens based on the same authorization grant"). A client
may revoke only its own tokens (§2.1). An invalid or unknown token is answered with 200 (§2.2), nothing changed.
The revocation is audited before it takes effect.
"""

from __future__ import annotations

from typing import Any

from sleutelbos.core.protocols import Actor
from sleutelbos.identity.errors import InvalidToken, UnauthorizedClient, UnsupportedTokenType
from sleutelbos.identity.jose import parse_compact
from sleutelbos.identity.models import Client
from sleutelbos.identity.passwords import bearer_digest

HINTS = ("access_token", "refresh_token")


async def revoke(service: Any, caller: Client, token: str | None, hint: str | None) -> None:
    if hint is not None and hint not in HINTS:
        raise UnsupportedTokenType(f"token_type_hint {hint!r} is not supported")
    if not token or len(token) > 8192:
        return
    actor = Actor(principal=f"client:{caller.id}", organisation=caller.organisation_id, kind=str(caller.client_type))
    stored = await service.store.get_refresh_token(bearer_digest(token))
    if stored is not None:
        if stored.client_id != caller.id:
            raise UnauthorizedClient("the token was issued to another client")
        await service.record(actor, "identity.token.revoke", stored.family_id, {"type": "refresh_token"})
        await service.revoke_family(stored.family_id)
        return
    try:
        parse_compact(token)
        claims = await service.validate(token)
    except InvalidToken:
        return
    if claims.get("client_id") != caller.id:
        raise UnauthorizedClient("the token was issued to another client")
    await service.record(actor, "identity.token.revoke", claims["jti"], {"type": "access_token", "sub": claims["sub"]})
    await service.revoke_jtis([(claims["jti"], float(claims["exp"]))])
