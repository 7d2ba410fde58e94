"""RFC 7662 token introspection for authenticated clients.

Access tokens are checked exactly as a resource server checks them (:class:`TokenVerifier`, revocation included);
refresh tokens by digest. Anything invalid, expired, revoked, or not ours answers ``{"active": false}`` and nothing
more (§2.2). Left out: restricting which clients may introspect which tokens (any authenticated, enabled client may).
"""

from __future__ import annotations

import time
from typing import Any

from sleutelbos.identity.errors import InvalidToken
from sleutelbos.identity.models import Client
from sleutelbos.identity.passwords import bearer_digest

_CLAIMS = ("scope", "client_id", "username", "exp", "iat", "nbf", "sub", "aud", "iss", "jti",
           "org", "org_kind", "country", "roles", "org_role", "amr", "acr", "principal_kind")


async def introspect(service: Any, caller: Client, token: str | None, hint: str | None) -> dict[str, Any]:
    if not token or len(token) > 8192:
        return {"active": False}
    if hint != "refresh_token":
        try:
            claims = await service.validate(token)
        except InvalidToken:
            claims = None
        if claims is not None:
            return {"active": True, "token_type": "Bearer", **{k: claims[k] for k in _CLAIMS if k in claims}}
    stored = await service.store.get_refresh_token(bearer_digest(token))
    if stored is None or stored.state != "active" or stored.expires_at < time.time():
        return {"active": False}
    return {
        "active": True, "token_type": "refresh_token", "client_id": stored.client_id, "sub": stored.subject,
        "scope": " ".join(stored.scope), "exp": int(stored.expires_at), "iss": service.config.issuer,
    }
