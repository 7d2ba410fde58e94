"""RFC 6749 §4.3 resource owner password credentials — only for applications that enabled it (off by default;
kept for Keyrock compatibility). The brute-force guard applies as on the login page. A user whose role demands a
second factor must add the non-standard ``totp`` parameter; otherwise the grant is refused."""

from __future__ import annotations

from typing import Any

from sleutelbos.identity.models import Client
from sleutelbos.identity.oauth2.rfc6749.grants.issue import issue_for_user
from sleutelbos.identity.oauth2.rfc6749.grants.scopes import granted_scope


async def grant(service: Any, client: Client, form: dict[str, str], source: str | None) -> dict[str, Any]:
    scope = granted_scope(client, form.get("scope"), allow_openid=True)
    auth = await service.authenticate_user(form.get("username"), form.get("password"), form.get("totp"), source)
    response, _jti, _family = await issue_for_user(service, client, auth.user.id, scope, auth.amr, auth.auth_time)
    return response
