"""Keyrock-compatible token validation: ``GET /user?access_token=…[&app_id=…]``, so that an existing Wilma PEP can
use sleutelbos as its IdM (Keyrock's "OAuth2 user info" used by Wilma's ``idm.js``).

The answer has Keyrock's shape: ``id``, ``username``, ``email``, ``displayName``, ``app_id``, ``roles[{id,name}]``
(the application roles of the user in ``app_id``), ``organizations[{id,name,roles}]`` (the user's organisations with
the roles they hold in the application), plus ``isGravatarEnabled``, ``trusted_apps``, ``type``. For a client's own
token (client credentials) ``type`` is ``app`` and the roles are the client's. Invalid or revoked tokens and an
``app_id`` the token was not issued for get 401 with an OAuth ``invalid_token`` body (Wilma reads the status).
Validation is local (JWKS cached, revocation feed followed) and the profile is cached, which is what makes this
endpoint fast.
"""

from __future__ import annotations

import time
from typing import Any

from sleutelbos.identity.errors import InvalidToken
from sleutelbos.identity.models import PrincipalType


class KeyrockUserInfo:
    def __init__(self, service: Any, ttl_s: float = 5.0) -> None:
        self.service = service
        self.ttl_s = ttl_s
        self._cache: dict[tuple[str, str, str], tuple[float, dict[str, Any]]] = {}
        service.change_listeners.append(self.invalidate)

    def invalidate(self, *_args: object) -> None:
        self._cache.clear()

    async def user(self, access_token: str | None, app_id: str | None) -> dict[str, Any]:
        if not access_token:
            raise InvalidToken("access_token is required")
        claims = await self.service.validate(access_token)
        client_id = claims.get("client_id")
        if app_id is not None and app_id != client_id:
            raise InvalidToken("the token was not issued for this application (app_id)")
        key = (claims["sub"], client_id, claims.get("principal_kind", ""))
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        body = await self._profile(claims)
        self._cache[key] = (now + self.ttl_s, body)
        return body

    async def _profile(self, claims: dict[str, Any]) -> dict[str, Any]:
        store = self.service.store
        client = await self.service.public_client(claims.get("client_id"))
        if claims.get("principal_kind") != "user":
            roles = await store.roles_of([(PrincipalType.CLIENT, client.id)], None)
            return {
                "id": client.id, "username": client.name, "email": None, "displayName": client.name,
                "app_id": client.id, "type": "app", "isGravatarEnabled": False, "trusted_apps": [],
                "roles": [{"id": r.id, "name": r.name} for r in roles], "organizations": [],
                "org": claims.get("org"), "org_kind": claims.get("org_kind"), "country": claims.get("country"),
            }
        principal = await self.service.user_principal(claims["sub"], client)
        user = principal.user
        assert user is not None
        user_roles = await store.roles_of([(PrincipalType.USER, user.id)], client.id)
        organizations = []
        for m in principal.memberships:
            org = await self.service.principals.organisation(m.organisation_id)
            if org is None:
                continue
            org_roles = await store.roles_of([(PrincipalType.ORGANISATION, org.id)], client.id)
            organizations.append({
                "id": org.id, "name": org.name, "kind": str(org.kind), "country": org.country,
                "membership": m.role, "roles": [{"id": r.id, "name": r.name} for r in org_roles],
            })
        return {
            "id": user.id, "username": user.username, "email": user.email, "displayName": user.username,
            "app_id": client.id, "type": "user", "isGravatarEnabled": False, "trusted_apps": [],
            "roles": [{"id": r.id, "name": r.name} for r in user_roles], "organizations": organizations,
            "org": principal.organisation.id, "org_kind": str(principal.organisation.kind),
            "country": principal.organisation.country,
        }
