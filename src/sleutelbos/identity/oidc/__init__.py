"""OpenID Connect Core 1.0: ID tokens are minted in ``sleutelbos.identity.tokens``; the UserInfo endpoint (§5.3)
is :func:`userinfo`. Left out: the implicit and hybrid flows, request objects, dynamic registration."""

from __future__ import annotations

from typing import Any

from sleutelbos.identity.errors import InsufficientScope


async def userinfo(service: Any, claims: dict[str, Any]) -> dict[str, Any]:
    """§5.3.2: the end-user's claims for a valid access token that carries the ``openid`` scope."""
    scope = claims.get("scope", "").split()
    if "openid" not in scope or claims.get("principal_kind") != "user":
        raise InsufficientScope("userinfo needs an end-user access token with the openid scope")
    client = await service.public_client(claims.get("client_id"))
    principal = await service.user_principal(claims["sub"], client)
    body: dict[str, Any] = {
        "sub": principal.subject, "org": principal.organisation.id, "org_kind": str(principal.organisation.kind),
        "country": principal.organisation.country, "roles": list(principal.roles),
        "org_role": principal.org_role,
    }
    assert principal.user is not None
    if "profile" in scope:
        body["preferred_username"] = principal.user.username
        body["name"] = principal.user.username
    if "email" in scope:
        body["email"] = principal.user.email
    return body
