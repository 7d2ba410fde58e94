"""RFC 6749 §4.4 client credentials: a client (service account, meter, application) acting for itself.

No refresh token is issued (§4.4.3). The token names the client (``sub`` = ``client_id``), its organisation's kind
and country, the roles assigned to the client, ``amr: ["client_secret"]``.
"""

from __future__ import annotations

from typing import Any

from sleutelbos.identity.models import Client
from sleutelbos.identity.oauth2.rfc6749.grants.scopes import granted_scope
from sleutelbos.identity.tokens import AMR_CLIENT_SECRET


async def grant(service: Any, client: Client, form: dict[str, str], source: str | None) -> dict[str, Any]:
    scope = granted_scope(client, form.get("scope"), allow_openid=False)
    principal = await service.client_principal(client)
    token, claims = service.minter.access_token(principal, client.id, scope, (AMR_CLIENT_SECRET,))
    return service.token_response(token, claims)
