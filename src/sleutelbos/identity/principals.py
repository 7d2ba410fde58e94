"""Who a token is about: a user or a client, with the organisation that answers for it and its roles.

Token issuance and ``/user`` look these facts up on every request, so they are cached per principal and the cache
is dropped whole on every change this worker makes and on every revocation-feed entry (which is how other workers'
disables reach us); ``ttl_s`` bounds what a worker can miss of another's role changes (roles are not in the feed).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sleutelbos.identity.errors import AccessDenied, InvalidClient, InvalidGrant
from sleutelbos.identity.models import Client, Membership, Organisation, PrincipalType, Role, User
from sleutelbos.identity.store import IdentityStore


@dataclass(frozen=True)
class PrincipalContext:
    """The facts a token carries about its subject."""

    subject: str
    kind: str  # "user", or the client type: application, service, meter
    organisation: Organisation
    roles: tuple[str, ...]  # application roles (Keyrock's sense)
    user: User | None = None
    client: Client | None = None
    memberships: tuple[Membership, ...] = ()
    org_role: str | None = None  # a user's membership role in its home organisation (admin, approver, …)


class PrincipalDirectory:
    def __init__(self, store: IdentityStore, ttl_s: float = 5.0) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self._cache: dict[tuple[str, str, str | None], tuple[float, PrincipalContext]] = {}
        self._orgs: dict[str, tuple[float, Organisation]] = {}

    def invalidate(self, *_args: object) -> None:
        self._cache.clear()
        self._orgs.clear()

    async def organisation(self, org_id: str) -> Organisation | None:
        hit = self._orgs.get(org_id)
        now = time.monotonic()
        if hit is not None and hit[0] > now:
            return hit[1]
        org = await self.store.get_organisation(org_id)
        if org is not None:
            self._orgs[org_id] = (now + self.ttl_s, org)
        return org

    async def client_principal(self, client: Client) -> PrincipalContext:
        """A client acting for itself (client credentials): refused when it or its organisation is disabled."""
        key = ("client", client.id, None)
        hit = self._cache.get(key)
        now = time.monotonic()
        if hit is not None and hit[0] > now:
            return hit[1]
        if not client.enabled:
            raise InvalidClient("client is disabled")
        org = await self.organisation(client.organisation_id)
        if org is None or not org.enabled:
            raise AccessDenied("the client's organisation is disabled")
        roles = await self.store.roles_of([(PrincipalType.CLIENT, client.id)], None)
        ctx = PrincipalContext(
            subject=client.id, kind=str(client.client_type), organisation=org,
            roles=tuple(sorted({r.name for r in roles})), client=client,
        )
        self._cache[key] = (now + self.ttl_s, ctx)
        return ctx

    async def user_principal(self, user_id: str, application_id: str | None) -> PrincipalContext:
        """A user, as seen by one application: the application's roles assigned to the user or to any of the
        user's (enabled) organisations (Keyrock's rule), and, apart, the membership role in the home organisation
        — kept apart so that an application role that happens to be called "admin" is never an operator admin."""
        key = ("user", user_id, application_id)
        hit = self._cache.get(key)
        now = time.monotonic()
        if hit is not None and hit[0] > now:
            return hit[1]
        user = await self.store.get_user(user_id)
        if user is None or not user.enabled:
            raise InvalidGrant("user unknown or disabled")
        org = await self.organisation(user.organisation_id)
        if org is None or not org.enabled:
            raise AccessDenied("the user's organisation is disabled")
        memberships = tuple(await self.store.memberships_of(user_id))
        principals = [(PrincipalType.USER, user_id)]
        for m in memberships:  # roles held through a disabled organisation do not count
            member_of = await self.organisation(m.organisation_id)
            if member_of is not None and member_of.enabled:
                principals.append((PrincipalType.ORGANISATION, m.organisation_id))
        app_roles: list[Role] = await self.store.roles_of(principals, application_id) if application_id else []
        org_role = next((m.role for m in memberships if m.organisation_id == user.organisation_id), None)
        ctx = PrincipalContext(
            subject=user.id, kind="user", organisation=org, roles=tuple(sorted({r.name for r in app_roles})),
            user=user, memberships=memberships, org_role=org_role,
        )
        self._cache[key] = (now + self.ttl_s, ctx)
        return ctx
