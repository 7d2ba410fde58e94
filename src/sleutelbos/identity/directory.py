"""Administrative changes to the identity model, each written to the audit log BEFORE it takes effect.

Every method validates its input completely first (a typed error, nothing changed), then awaits
``AuditSink.record`` with the change's facts, and only when that returned applies the change. If the sink raises,
the change does not happen (fail closed, ARCHITECTURE "write-ahead audit"). Disabling an organisation is what
break-glass does to vendors: it is one transaction that flips the flag, revokes the refresh tokens of its members
and clients, and appends the principal to the revocation feed, which is then pushed to every verifier.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from sleutelbos.core.protocols import Actor, AuditEvent, AuditSink
from sleutelbos.identity import mfa
from sleutelbos.identity.errors import Conflict, InvalidRequest, NotFound, ServerError
from sleutelbos.identity.models import (
    GRANT_AUTHORIZATION_CODE,
    GRANT_CLIENT_CREDENTIALS,
    GRANT_PASSWORD,
    GRANT_REFRESH_TOKEN,
    GRANT_TYPES,
    MFA_REQUIRED_OPERATOR_ROLES,
    ORG_ROLES,
    Client,
    ClientType,
    Membership,
    Organisation,
    OrganisationKind,
    Permission,
    PrincipalType,
    Role,
    RoleAssignment,
    User,
    country_code,
    display_name,
    email,
    scope_list,
    username,
)
from sleutelbos.identity.passwords import MIN_PASSWORD_LENGTH, PasswordHashing, new_client_secret
from sleutelbos.identity.store import IdentityStore

_REDIRECT_MAX = 10


def _redirect_uris(value: object) -> tuple[str, ...]:
    """Absolute https URIs (http only for loopback, RFC 8252 §7.3), no fragment (RFC 6749 §3.1.2)."""
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > _REDIRECT_MAX:
        raise InvalidRequest(f"redirect_uris must be a list of at most {_REDIRECT_MAX} URIs")
    out: list[str] = []
    for uri in value:
        if not isinstance(uri, str) or len(uri) > 2000:
            raise InvalidRequest("redirect URI must be a string of at most 2000 characters")
        parts = urlsplit(uri)
        loopback = parts.hostname in ("127.0.0.1", "localhost", "::1")
        if parts.fragment or not parts.netloc or not (parts.scheme == "https" or (parts.scheme == "http" and loopback)):
            raise InvalidRequest(f"redirect URI {uri!r} must be absolute https (http only on loopback), no fragment")
        out.append(uri)
    return tuple(dict.fromkeys(out))


def _password(value: object) -> str:
    if not isinstance(value, str) or not (MIN_PASSWORD_LENGTH <= len(value) <= 1024):
        raise InvalidRequest(f"password must be {MIN_PASSWORD_LENGTH}-1024 characters")
    return value


def _enum(enum: Any, value: object, what: str) -> Any:
    try:
        return enum(value)
    except ValueError as exc:
        raise InvalidRequest(f"{what} must be one of {', '.join(e.value for e in enum)}, got {value!r}") from exc


def _opt_country(value: object, what: str) -> str | None:
    return None if value is None else country_code(value, what)


class Directory:
    """Organisations, users, clients, roles, permissions and role assignments: the admin API's logic."""

    def __init__(
        self, store: IdentityStore, audit: AuditSink, on_change: Callable[[], Awaitable[None]],
        passwords: PasswordHashing,
    ) -> None:
        self.store = store
        self.passwords = passwords
        self.audit = audit
        self._on_change = on_change

    async def _record(self, actor: Actor, action: str, target: str, details: dict[str, Any] | None = None) -> None:
        try:
            await self.audit.record(AuditEvent(actor=actor, action=action, target=target, details=details or {}))
        except Exception as exc:
            raise ServerError(f"audit log unavailable, {action} not performed: {type(exc).__name__}") from exc

    # --- organisations ----------------------------------------------------------------------------------
    async def create_organisation(self, actor: Actor, body: dict[str, Any]) -> Organisation:
        kind = _enum(OrganisationKind, body.get("kind"), "kind")
        ubo = body.get("ubo_countries", [])
        if not isinstance(ubo, list) or len(ubo) > 50:
            raise InvalidRequest("ubo_countries must be a list of ISO 3166-1 alpha-2 codes")
        vendor_facts = (body.get("establishment_country"), body.get("assembly_country"), ubo)
        if kind is not OrganisationKind.VENDOR and any(vendor_facts):
            raise InvalidRequest("establishment/assembly/UBO countries are tender facts of vendors only")
        org = Organisation(
            id=str(uuid.uuid4()), name=display_name(body.get("name")), kind=kind,
            country=country_code(body.get("country")),
            establishment_country=_opt_country(body.get("establishment_country"), "establishment_country"),
            assembly_country=_opt_country(body.get("assembly_country"), "assembly_country"),
            ubo_countries=tuple(dict.fromkeys(country_code(c, "ubo_countries[]") for c in ubo)),
            created_at=time.time(),
        )
        if await self.store.find_organisation(org.name) is not None:
            raise Conflict(f"organisation named {org.name!r} already exists")
        await self._record(actor, "identity.org.create", org.id, org.as_dict())
        await self.store.add_organisation(org)
        return org

    async def organisation(self, org_id: str) -> Organisation:
        org = await self.store.get_organisation(org_id)
        if org is None:
            raise NotFound(f"no organisation {org_id!r}")
        return org

    async def update_organisation(self, actor: Actor, org_id: str, body: dict[str, Any]) -> Organisation:
        org = await self.organisation(org_id)
        allowed = {"name", "country", "establishment_country", "assembly_country", "ubo_countries"}
        unknown = set(body) - allowed
        if unknown:
            raise InvalidRequest(f"cannot change {', '.join(sorted(unknown))} (kind is fixed at creation)")
        vendor = org.kind is OrganisationKind.VENDOR
        if not vendor and any(body.get(k) for k in ("establishment_country", "assembly_country", "ubo_countries")):
            raise InvalidRequest("establishment/assembly/UBO countries are tender facts of vendors only")
        ubo = body.get("ubo_countries", list(org.ubo_countries))
        if not isinstance(ubo, list):
            raise InvalidRequest("ubo_countries must be a list")
        updated = Organisation(
            id=org.id, name=display_name(body.get("name", org.name)), kind=org.kind,
            country=country_code(body.get("country", org.country)),
            establishment_country=_opt_country(
                body.get("establishment_country", org.establishment_country), "establishment_country"),
            assembly_country=_opt_country(body.get("assembly_country", org.assembly_country), "assembly_country"),
            ubo_countries=tuple(dict.fromkeys(country_code(c, "ubo_countries[]") for c in ubo)),
            enabled=org.enabled, created_at=org.created_at,
        )
        await self._record(actor, "identity.org.update", org.id, {"before": org.as_dict(), "after": updated.as_dict()})
        await self.store.update_organisation(updated)
        await self._on_change()
        return updated

    async def set_organisation_enabled(self, actor: Actor, org_id: str, enabled: bool) -> Organisation:
        org = await self.organisation(org_id)
        if not enabled and org.kind is OrganisationKind.OPERATOR:
            raise Conflict("the operator organisation cannot be disabled")
        if org.enabled == enabled:
            return org
        action = "identity.org.enable" if enabled else "identity.org.disable"
        await self._record(actor, action, org.id, {"name": org.name, "kind": str(org.kind), "country": org.country})
        await self.store.set_organisation_enabled(org.id, enabled, time.time())
        await self._on_change()
        return await self.organisation(org_id)

    # --- users ------------------------------------------------------------------------------------------
    async def create_user(self, actor: Actor, body: dict[str, Any]) -> tuple[User, str | None]:
        """Returns the user and, when its role demands a second factor, the TOTP secret (shown once)."""
        org = await self.organisation(str(body.get("organisation_id")))
        role = body.get("role", "member")
        if role not in ORG_ROLES:
            raise InvalidRequest(f"role must be one of {', '.join(sorted(ORG_ROLES))}")
        needs_totp = org.kind is OrganisationKind.OPERATOR and role in MFA_REQUIRED_OPERATOR_ROLES
        secret = mfa.new_secret() if needs_totp or body.get("totp") is True else None
        user = User(
            id=str(uuid.uuid4()), username=username(body.get("username")), email=email(body.get("email")),
            organisation_id=org.id, password_hash=await self.passwords.hash_async(_password(body.get("password"))),
            totp_secret=secret, created_at=time.time(),
        )
        if await self.store.get_user_by_username(user.username) is not None:
            raise Conflict(f"user {user.username!r} already exists")
        await self._record(actor, "identity.user.create", user.id, {**user.as_dict(), "role": role})
        await self.store.add_user(user, role)
        await self._on_change()
        return user, secret

    async def user(self, user_id: str) -> User:
        user = await self.store.get_user(user_id)
        if user is None:
            raise NotFound(f"no user {user_id!r}")
        return user

    async def enrol_totp(self, actor: Actor, user_id: str) -> str:
        user = await self.user(user_id)
        secret = mfa.new_secret()
        await self._record(actor, "identity.user.totp.enrol", user.id, {"username": user.username})
        await self.store.set_totp_secret(user.id, secret)
        await self._on_change()
        return secret

    async def set_password(self, actor: Actor, user_id: str, password: object) -> None:
        """A new password; every token issued to the user until now is refused (via the feed)."""
        user = await self.user(user_id)
        new_hash = await self.passwords.hash_async(_password(password))
        await self._record(actor, "identity.user.password.set", user.id, {"username": user.username})
        await self.store.update_user(user.id, user.email, new_hash)
        await self.store.revoke_principal_tokens(f"user:{user.id}", time.time())
        await self._on_change()

    async def set_user_enabled(self, actor: Actor, user_id: str, enabled: bool) -> User:
        user = await self.user(user_id)
        if user.enabled == enabled:
            return user
        await self._record(actor, "identity.user.enable" if enabled else "identity.user.disable", user.id,
                           {"username": user.username})
        await self.store.set_user_enabled(user.id, enabled, time.time())
        await self._on_change()
        return await self.user(user_id)

    async def set_membership(self, actor: Actor, user_id: str, org_id: str, role: object) -> Membership:
        user = await self.user(user_id)
        org = await self.organisation(org_id)
        if role not in ORG_ROLES:
            raise InvalidRequest(f"role must be one of {', '.join(sorted(ORG_ROLES))}")
        if org.kind is OrganisationKind.OPERATOR and role in MFA_REQUIRED_OPERATOR_ROLES and not user.totp_secret:
            raise Conflict(f"role {role!r} in the operator organisation requires TOTP: enrol the user first")
        membership = Membership(user.id, org.id, str(role))
        await self._record(actor, "identity.membership.set", user.id, {"organisation_id": org.id, "role": role})
        await self.store.set_membership(membership)
        await self._on_change()
        return membership

    # --- clients: applications, service accounts, meters ----------------------------------------------------
    async def create_client(
        self, actor: Actor, client_type: ClientType, body: dict[str, Any],
    ) -> tuple[Client, str]:
        """Returns the client and its secret (shown once; only a digest is kept)."""
        org = await self.organisation(str(body.get("organisation_id")))
        name = display_name(body.get("name"))
        scopes = tuple(scope_list(body.get("scope", "")))
        serial = None
        if client_type is ClientType.APPLICATION:
            grants = body.get("grant_types", [GRANT_AUTHORIZATION_CODE, GRANT_REFRESH_TOKEN])
            if not isinstance(grants, list) or not set(grants) <= GRANT_TYPES or not grants:
                raise InvalidRequest(f"grant_types must be a non-empty subset of {', '.join(sorted(GRANT_TYPES))}")
            if body.get("password_grant") is True and GRANT_PASSWORD not in grants:
                grants = [*grants, GRANT_PASSWORD]
            redirect_uris = _redirect_uris(body.get("redirect_uris", []))
            if GRANT_AUTHORIZATION_CODE in grants and not redirect_uris:
                raise InvalidRequest("an application with the authorization_code grant needs redirect_uris")
        else:
            grants = [GRANT_CLIENT_CREDENTIALS]
            redirect_uris = ()
            if body.get("redirect_uris") or body.get("grant_types") or body.get("password_grant"):
                raise InvalidRequest(f"a {client_type.value} client uses client_credentials only")
            if client_type is ClientType.METER:
                serial = body.get("serial_number")
                if not isinstance(serial, str) or not 1 <= len(serial) <= 64 or not serial.isprintable():
                    raise InvalidRequest("a meter needs serial_number (1-64 printable characters)")
        secret, digest = new_client_secret()
        client = Client(
            id=str(uuid.uuid4()), name=name, organisation_id=org.id, client_type=client_type, secret_hash=digest,
            redirect_uris=redirect_uris, grant_types=tuple(dict.fromkeys(grants)), scopes=scopes,
            serial_number=serial, created_at=time.time(),
        )
        if any(c.name == name and c.organisation_id == org.id for c in await self.store.list_clients()):
            raise Conflict(f"client named {name!r} already exists in this organisation")
        await self._record(actor, f"identity.{client_type.value}.create", client.id, client.as_dict())
        await self.store.add_client(client)
        await self._on_change()
        return client, secret

    async def client(self, client_id: str, client_type: ClientType | None = None) -> Client:
        client = await self.store.get_client(client_id)
        if client is None or (client_type is not None and client.client_type is not client_type):
            raise NotFound(f"no {client_type.value if client_type else 'client'} {client_id!r}")
        return client

    async def update_application(self, actor: Actor, client_id: str, body: dict[str, Any]) -> Client:
        client = await self.client(client_id, ClientType.APPLICATION)
        unknown = set(body) - {"redirect_uris", "grant_types", "scope", "password_grant"}
        if unknown:
            raise InvalidRequest(f"cannot change {', '.join(sorted(unknown))}")
        grants = list(body.get("grant_types", client.grant_types))
        if not set(grants) <= GRANT_TYPES or not grants:
            raise InvalidRequest(f"grant_types must be a non-empty subset of {', '.join(sorted(GRANT_TYPES))}")
        if "password_grant" in body:
            grants = [g for g in grants if g != GRANT_PASSWORD] + ([GRANT_PASSWORD] if body["password_grant"] else [])
        redirect_uris = _redirect_uris(body["redirect_uris"]) if "redirect_uris" in body else client.redirect_uris
        updated = Client(
            id=client.id, name=client.name, organisation_id=client.organisation_id, client_type=client.client_type,
            secret_hash=client.secret_hash, redirect_uris=redirect_uris, grant_types=tuple(dict.fromkeys(grants)),
            scopes=tuple(scope_list(body["scope"])) if "scope" in body else client.scopes,
            serial_number=client.serial_number, enabled=client.enabled, created_at=client.created_at,
        )
        await self._record(actor, "identity.application.update", client.id,
                           {"before": client.as_dict(), "after": updated.as_dict()})
        await self.store.update_client(updated)
        await self._on_change()
        return updated

    async def set_client_enabled(self, actor: Actor, client_id: str, enabled: bool) -> Client:
        client = await self.client(client_id)
        if client.enabled == enabled:
            return client
        kind = client.client_type.value
        await self._record(actor, f"identity.{kind}.{'enable' if enabled else 'disable'}", client.id,
                           {"name": client.name})
        await self.store.set_client_enabled(client.id, enabled, time.time())
        await self._on_change()
        return await self.client(client_id)

    # --- roles and permissions (per application, Keyrock's model) ------------------------------------------
    async def create_role(self, actor: Actor, app_id: str, body: dict[str, Any]) -> Role:
        app = await self.client(app_id, ClientType.APPLICATION)
        role = Role(id=str(uuid.uuid4()), application_id=app.id, name=display_name(body.get("name")))
        if any(r.name == role.name for r in await self.store.list_roles(app.id)):
            raise Conflict(f"role {role.name!r} already exists in this application")
        await self._record(actor, "identity.role.create", role.id, role.as_dict())
        await self.store.add_role(role)
        await self._on_change()
        return role

    async def role(self, app_id: str, role_id: str) -> Role:
        role = await self.store.get_role(role_id)
        if role is None or role.application_id != app_id:
            raise NotFound(f"no role {role_id!r} in application {app_id!r}")
        return role

    async def delete_role(self, actor: Actor, app_id: str, role_id: str) -> None:
        role = await self.role(app_id, role_id)
        await self._record(actor, "identity.role.delete", role.id, role.as_dict())
        await self.store.delete_role(role.id)
        await self._on_change()

    async def create_permission(self, actor: Actor, app_id: str, body: dict[str, Any]) -> Permission:
        app = await self.client(app_id, ClientType.APPLICATION)
        action, resource = body.get("action"), body.get("resource")
        if not isinstance(action, str) or not 1 <= len(action) <= 20 or not action.isalpha():
            raise InvalidRequest("action must be an HTTP verb-like word (1-20 letters), e.g. GET")
        if not isinstance(resource, str) or not 1 <= len(resource) <= 500 or not resource.isprintable():
            raise InvalidRequest("resource must be 1-500 printable characters")
        perm = Permission(
            id=str(uuid.uuid4()), application_id=app.id, name=display_name(body.get("name")),
            action=action.upper(), resource=resource,
        )
        if any(p.name == perm.name for p in await self.store.list_permissions(app.id)):
            raise Conflict(f"permission {perm.name!r} already exists in this application")
        await self._record(actor, "identity.permission.create", perm.id, perm.as_dict())
        await self.store.add_permission(perm)
        return perm

    async def grant_permission(self, actor: Actor, app_id: str, role_id: str, permission_id: str) -> None:
        role = await self.role(app_id, role_id)
        perm = await self.store.get_permission(permission_id)
        if perm is None or perm.application_id != app_id:
            raise NotFound(f"no permission {permission_id!r} in application {app_id!r}")
        if any(p.id == perm.id for p in await self.store.permissions_of_role(role.id)):
            raise Conflict("the role already has this permission")
        await self._record(actor, "identity.role.permission.grant", role.id, {"permission_id": perm.id})
        await self.store.grant_permission(role.id, perm.id)

    async def assign_role(self, actor: Actor, app_id: str, body: dict[str, Any]) -> RoleAssignment:
        role = await self.role(app_id, str(body.get("role_id")))
        ptype = _enum(PrincipalType, body.get("principal_type"), "principal_type")
        pid = str(body.get("principal_id"))
        if ptype is PrincipalType.USER:
            await self.user(pid)
        elif ptype is PrincipalType.ORGANISATION:
            await self.organisation(pid)
        else:
            await self.client(pid)
        assignment = RoleAssignment(str(uuid.uuid4()), app_id, role.id, ptype, pid)
        if any(a.role_id == role.id and a.principal_type is ptype and a.principal_id == pid
               for a in await self.store.list_assignments(app_id)):
            raise Conflict("this role is already assigned to this principal")
        await self._record(actor, "identity.role.assign", role.id, assignment.as_dict())
        await self.store.add_assignment(assignment)
        await self._on_change()
        return assignment

    async def unassign_role(self, actor: Actor, app_id: str, assignment_id: str) -> None:
        assignment = await self.store.get_assignment(assignment_id)
        if assignment is None or assignment.application_id != app_id:
            raise NotFound(f"no role assignment {assignment_id!r} in application {app_id!r}")
        await self._record(actor, "identity.role.unassign", assignment.role_id, assignment.as_dict())
        await self.store.delete_assignment(assignment.id)
        await self._on_change()
