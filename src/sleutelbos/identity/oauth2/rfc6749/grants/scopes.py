"""Scope negotiation (RFC 6749 §3.3): requested ⊆ registered; nothing requested → everything registered."""

from __future__ import annotations

from sleutelbos.identity.errors import InvalidRequest, InvalidScope
from sleutelbos.identity.models import Client, scope_list


def granted_scope(client: Client, requested: str | None, allow_openid: bool) -> list[str]:
    try:
        wanted = scope_list(requested)
    except InvalidRequest as exc:
        raise InvalidScope(exc.detail) from exc
    if not wanted:
        wanted = [s for s in client.scopes if allow_openid or s != "openid"]
    if "openid" in wanted and not allow_openid:
        raise InvalidScope("openid needs an end-user: use the authorization code grant")
    extra = [s for s in wanted if s not in client.scopes]
    if extra:
        raise InvalidScope(f"scope not registered for this client: {' '.join(extra)}")
    return wanted
