"""The identity model: who a principal is, which organisation answers for it, and in which jurisdiction.

Organisations carry a ``kind`` and a ``country`` because the sovereignty policies are written on them; vendors also
carry the facts a tender asks about (establishment country, assembly country, the countries of their ultimate
beneficial owners). Applications, their roles and permissions and role assignments follow Keyrock's model
(an application owns roles and permissions; roles are assigned to users, organisations or clients *in* an
application). Service accounts and meters are OAuth clients of their own kind, authenticated by client credentials.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum

import iso3166

from sleutelbos.identity.errors import InvalidRequest


class OrganisationKind(StrEnum):
    OPERATOR = "operator"
    VENDOR = "vendor"
    SUPPLIER = "supplier"
    THIRD_PARTY = "third-party"
    HOUSEHOLD = "household"


class ClientType(StrEnum):
    """What an OAuth client stands for; it becomes the token's ``principal_kind``."""

    APPLICATION = "application"
    SERVICE_ACCOUNT = "service"
    METER = "meter"


class PrincipalType(StrEnum):
    """Who a role is assigned to (Keyrock assigns application roles to users and organisations; we add clients)."""

    USER = "user"
    ORGANISATION = "organisation"
    CLIENT = "client"


# Membership roles in an organisation. In an operator organisation the first three demand a TOTP second factor.
ORG_ROLE_ADMIN = "admin"
ORG_ROLE_APPROVER = "approver"
ORG_ROLE_BREAKGLASS = "breakglass-officer"
ORG_ROLE_MEMBER = "member"
ORG_ROLES = frozenset({ORG_ROLE_ADMIN, ORG_ROLE_APPROVER, ORG_ROLE_BREAKGLASS, ORG_ROLE_MEMBER})
MFA_REQUIRED_OPERATOR_ROLES = frozenset({ORG_ROLE_ADMIN, ORG_ROLE_APPROVER, ORG_ROLE_BREAKGLASS})

GRANT_AUTHORIZATION_CODE = "authorization_code"
GRANT_CLIENT_CREDENTIALS = "client_credentials"
GRANT_REFRESH_TOKEN = "refresh_token"  # noqa: S105 - a grant type name
GRANT_PASSWORD = "password"  # noqa: S105 - a grant type name
GRANT_TYPES = frozenset({GRANT_AUTHORIZATION_CODE, GRANT_CLIENT_CREDENTIALS, GRANT_REFRESH_TOKEN, GRANT_PASSWORD})

_NAME = re.compile(r"^[\w .@'&()/,+-]{1,200}$", re.UNICODE)
_USERNAME = re.compile(r"^[A-Za-z0-9._@+-]{1,100}$")
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}$")
_SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]{1,100}$")  # RFC 6749 §3.3 scope-token


def country_code(value: object, what: str = "country") -> str:
    """An ISO 3166-1 alpha-2 code, upper-case; anything else is refused with the offending value named."""
    if not isinstance(value, str) or value.upper() not in iso3166.countries_by_alpha2:
        raise InvalidRequest(f"{what} must be an ISO 3166-1 alpha-2 country code, got {value!r}")
    return value.upper()


def display_name(value: object, what: str = "name") -> str:
    if not isinstance(value, str) or not _NAME.match(value) or value != value.strip():
        raise InvalidRequest(f"{what} must be 1-200 printable characters without leading/trailing space")
    return value


def username(value: object) -> str:
    if not isinstance(value, str) or not _USERNAME.match(value):
        raise InvalidRequest("username must be 1-100 characters of A-Z a-z 0-9 . _ @ + -")
    return value


def email(value: object) -> str:
    if not isinstance(value, str) or not _EMAIL.match(value):
        raise InvalidRequest(f"email is not an e-mail address: {value!r}")
    return value


def scope_list(value: object) -> list[str]:
    """A space-delimited scope string (or a list) → its scope-tokens, duplicates dropped, order kept (§3.3)."""
    if value is None or value == "":
        return []
    items = value.split(" ") if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(s, str) and _SCOPE_TOKEN.match(s) for s in items):
        raise InvalidRequest("scope must be space-delimited scope-tokens (RFC 6749 §3.3)")
    return list(dict.fromkeys(items))


@dataclass(frozen=True)
class Organisation:
    id: str
    name: str
    kind: OrganisationKind
    country: str
    establishment_country: str | None = None
    assembly_country: str | None = None
    ubo_countries: tuple[str, ...] = ()
    enabled: bool = True
    created_at: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id, "name": self.name, "kind": str(self.kind), "country": self.country,
            "establishment_country": self.establishment_country, "assembly_country": self.assembly_country,
            "ubo_countries": list(self.ubo_countries), "enabled": self.enabled,
        }


@dataclass(frozen=True)
class User:
    id: str
    username: str
    email: str
    organisation_id: str  # home organisation: the token's ``org``
    password_hash: str = field(repr=False)
    totp_secret: str | None = field(default=None, repr=False)
    enabled: bool = True
    created_at: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id, "username": self.username, "email": self.email,
            "organisation_id": self.organisation_id, "enabled": self.enabled,
            "totp_enrolled": self.totp_secret is not None,
        }


@dataclass(frozen=True)
class Membership:
    user_id: str
    organisation_id: str
    role: str


@dataclass(frozen=True)
class Client:
    """An OAuth 2.0 client (RFC 6749 §2): an application, a service account or a meter."""

    id: str  # the client_id
    name: str
    organisation_id: str
    client_type: ClientType
    secret_hash: str = field(repr=False)
    redirect_uris: tuple[str, ...] = ()
    grant_types: tuple[str, ...] = (GRANT_CLIENT_CREDENTIALS,)
    scopes: tuple[str, ...] = ()
    serial_number: str | None = None  # meters only
    enabled: bool = True
    created_at: float = 0.0

    @property
    def password_grant_enabled(self) -> bool:
        return GRANT_PASSWORD in self.grant_types

    def as_dict(self) -> dict[str, object]:
        return {
            "client_id": self.id, "name": self.name, "organisation_id": self.organisation_id,
            "client_type": str(self.client_type), "redirect_uris": list(self.redirect_uris),
            "grant_types": list(self.grant_types), "scope": " ".join(self.scopes),
            "serial_number": self.serial_number, "enabled": self.enabled,
        }


@dataclass(frozen=True)
class Role:
    id: str
    application_id: str
    name: str

    def as_dict(self) -> dict[str, object]:
        return {"id": self.id, "application_id": self.application_id, "name": self.name}


@dataclass(frozen=True)
class Permission:
    id: str
    application_id: str
    name: str
    action: str
    resource: str

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id, "application_id": self.application_id, "name": self.name,
            "action": self.action, "resource": self.resource,
        }


@dataclass(frozen=True)
class RoleAssignment:
    id: str
    application_id: str
    role_id: str
    principal_type: PrincipalType
    principal_id: str

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id, "application_id": self.application_id, "role_id": self.role_id,
            "principal_type": str(self.principal_type), "principal_id": self.principal_id,
        }


@dataclass(frozen=True)
class AuthorizationCode:
    """RFC 6749 §4.1.2 code, stored by hash, single use, bound to client, redirect URI and PKCE challenge."""

    code_hash: str
    client_id: str
    user_id: str
    redirect_uri: str
    scope: tuple[str, ...]
    code_challenge: str
    nonce: str | None
    amr: tuple[str, ...]
    auth_time: int
    expires_at: float
    used: bool = False
    issued_jti: str | None = None
    issued_family: str | None = None


@dataclass(frozen=True)
class RefreshToken:
    """A rotating refresh token (RFC 6749 §6, OAuth 2.0 Security BCP §4.14.2): one family per original grant."""

    token_hash: str
    family_id: str
    client_id: str
    subject: str  # user id
    scope: tuple[str, ...]
    amr: tuple[str, ...]
    auth_time: int
    expires_at: float
    state: str  # active, rotated, revoked
    access_jti: str | None = None
