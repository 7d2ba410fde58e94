"""``IdentityService``: the identity manager's logic, usable without HTTP (tests, CLI, other components).

It wires the store, custody's ``SignerProvider`` (token signing), the ``AuditSink`` (write-ahead audit of every
admin change), the revocation feed, and an in-process :class:`TokenVerifier` that follows the feed by push; the
HTTP layers (``api.py``, ``admin_api.py``) only parse requests and map typed errors. Grant logic lives one file per
grant under ``oauth2/rfc6749/grants/``; introspection, revocation and discovery under their RFC's folder.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from argon2 import Parameters
from argon2.profiles import RFC_9106_LOW_MEMORY

from sleutelbos.core.protocols import SYSTEM_ACTOR, Actor, AuditEvent, AuditSink, SignerProvider
from sleutelbos.identity import mfa
from sleutelbos.identity.directory import Directory
from sleutelbos.identity.errors import (
    AccessDenied,
    InsufficientScope,
    InvalidClient,
    InvalidGrant,
    InvalidToken,
    NotFound,
    ServerError,
)
from sleutelbos.identity.jose import jwk_from_public_key
from sleutelbos.identity.login_guard import LoginGuard, LoginPolicy
from sleutelbos.identity.models import (
    ORG_ROLE_ADMIN,
    Client,
    ClientType,
    OrganisationKind,
    User,
)
from sleutelbos.identity.passwords import PasswordHashing, verify_client_secret
from sleutelbos.identity.principals import PrincipalContext, PrincipalDirectory
from sleutelbos.identity.revocation_feed import RevocationFeed
from sleutelbos.identity.store import IdentityStore
from sleutelbos.identity.tokens import SIGNING_PURPOSE, TokenMinter
from sleutelbos.identity.verifier import TokenVerifier

log = logging.getLogger("sleutelbos.identity")


@dataclass(frozen=True)
class IdentityConfig:
    issuer: str
    audience: str = "sleutelbos"
    token_lifetime_s: int = 600
    refresh_token_lifetime_s: int = 14 * 24 * 3600
    code_lifetime_s: int = 60
    login_policy: LoginPolicy = field(default_factory=LoginPolicy)
    feed_poll_interval_s: float = 0.25
    password_parameters: Parameters = field(default_factory=lambda: RFC_9106_LOW_MEMORY)


@dataclass(frozen=True)
class BootstrapCredentials:
    """What the first start prints once: the operator organisation, its first admin and that admin's TOTP."""

    organisation_id: str
    organisation_name: str
    username: str
    password: str
    totp_secret: str
    totp_uri: str

    def as_dict(self) -> dict[str, str]:
        return {
            "organisation_id": self.organisation_id, "organisation_name": self.organisation_name,
            "username": self.username, "password": self.password, "totp_secret": self.totp_secret,
            "totp_uri": self.totp_uri,
        }


@dataclass(frozen=True)
class Authenticated:
    """A user who passed the password (and, where required, TOTP) check."""

    user: User
    amr: tuple[str, ...]
    auth_time: int


class IdentityService:
    def __init__(
        self, store: IdentityStore, signers: SignerProvider, audit: AuditSink, config: IdentityConfig,
    ) -> None:
        self.store = store
        self.signers = signers
        self.audit = audit
        self.config = config
        self.principals = PrincipalDirectory(store)
        self.feed = RevocationFeed(store, config.feed_poll_interval_s)
        self.minter = TokenMinter(signers, config.issuer, config.audience, config.token_lifetime_s)
        self.guard = LoginGuard(store, config.login_policy)
        self.passwords = PasswordHashing(config.password_parameters)
        self.directory = Directory(store, audit, self._changed, self.passwords)
        self.verifier = TokenVerifier(issuer=config.issuer, jwks=self.jwks_async, feed=self.feed)
        self._client_cache: dict[str, tuple[float, Client]] = {}
        self.change_listeners: list[Callable[[], None]] = [self.principals.invalidate, self._client_cache.clear]
        self.feed.subscribe(lambda _entries: self._notify())

    async def start(self) -> None:
        """Make sure the token key exists (created, audited, on our loop), then follow the feed."""
        try:
            await self.signers.prepare_signer(SIGNING_PURPOSE)
        except Exception as exc:  # nothing can be signed; issuance answers server_error until custody can
            log.error("identity token key unavailable: %s", exc)
        await self.feed.start()
        await self.verifier.start()

    async def stop(self) -> None:
        await self.verifier.stop()
        await self.feed.stop()

    async def close(self) -> None:
        await self.stop()
        await self.store.close()

    async def _changed(self) -> None:
        """After every admin change: drop caches, push new feed entries to every subscriber."""
        self._notify()
        await self.feed.publish()

    def _notify(self) -> None:
        for listener in self.change_listeners:
            listener()

    async def record(self, actor: Actor, action: str, target: str, details: dict[str, Any] | None = None) -> None:
        """Write-ahead audit for actions that are not admin changes (revocations, lockouts); fail closed."""
        try:
            await self.audit.record(AuditEvent(actor=actor, action=action, target=target, details=details or {}))
        except Exception as exc:
            raise ServerError(f"audit log unavailable, {action} not performed: {type(exc).__name__}") from exc

    # --- keys -------------------------------------------------------------------------------------------
    def jwks(self) -> dict[str, Any]:
        """RFC 7517 key set: custody's active and still-valid previous ``identity-token`` keys."""
        try:
            infos = self.signers.public_keys_for(SIGNING_PURPOSE)
        except Exception as exc:
            raise ServerError(f"custody unavailable: {type(exc).__name__}") from exc
        if not infos:
            raise ServerError("no identity-token key in custody yet: nothing is signed, nothing to verify")
        return {"keys": [jwk_from_public_key(info) for info in infos]}

    async def jwks_async(self) -> dict[str, Any]:
        """The key set as a ``TokenVerifier`` JWKS source, for verifiers in this process (the PEP)."""
        return self.jwks()

    def verifier_for(self, audience: str | None = None) -> TokenVerifier:
        """A ``TokenVerifier`` for a resource server in this process: JWKS and revocation feed taken directly
        (pushed at commit), no HTTP. Call ``await verifier.start()`` before use."""
        return TokenVerifier(issuer=self.config.issuer, audience=audience, jwks=self.jwks_async, feed=self.feed)

    # --- clients ------------------------------------------------------------------------------------------
    async def authenticate_client(self, client_id: str | None, secret: str | None) -> Client:
        """RFC 6749 §2.3.1: client_secret_basic or client_secret_post; every failure is ``invalid_client``."""
        if not client_id or not secret or len(client_id) > 100 or len(secret) > 200:
            raise InvalidClient("client authentication failed")
        now = time.monotonic()
        hit = self._client_cache.get(client_id)
        client = hit[1] if hit is not None and hit[0] > now else await self.store.get_client(client_id)
        if client is None or not verify_client_secret(client.secret_hash, secret):
            raise InvalidClient("client authentication failed")
        if not client.enabled:
            raise InvalidClient("client is disabled")
        self._client_cache[client_id] = (now + 5.0, client)
        return client

    async def public_client(self, client_id: str | None) -> Client:
        if not client_id or len(client_id) > 100:
            raise InvalidClient("unknown client")
        client = await self.store.get_client(client_id)
        if client is None or not client.enabled:
            raise InvalidClient("unknown client")
        return client

    # --- users --------------------------------------------------------------------------------------------
    async def authenticate_user(
        self, username: str | None, password: str | None, totp: str | None, source: str | None,
    ) -> Authenticated:
        """Password (Argon2id) and, where the user's roles demand it or the user enrolled, TOTP.

        Brute-force guard first; a failure of either factor counts as one failed login; the lockout is audited."""
        if not isinstance(username, str) or not username or len(username) > 100:
            raise InvalidGrant("invalid username or password")
        if not isinstance(password, str) or len(password) > 1024:
            raise InvalidGrant("invalid username or password")
        await self.guard.check(username, source)
        user = await self.store.get_user_by_username(username)
        ok = await self.passwords.verify_async(user.password_hash if user else None, password)
        amr: tuple[str, ...] = ("pwd",)
        reason = "invalid username or password"
        if ok and user is not None:
            memberships = await self.store.memberships_of(user.id)
            orgs = {m.organisation_id: await self.principals.organisation(m.organisation_id) for m in memberships}
            required = mfa.mfa_required(memberships, {k: v for k, v in orgs.items() if v is not None})
            if user.totp_secret is not None and (required or totp):
                step = mfa.matching_step(user.totp_secret, totp or "")
                if step is None or not await self.store.claim_totp_step(user.id, step):
                    ok, reason = False, "a valid, unused TOTP code is required"
                else:
                    amr = ("pwd", "otp", "mfa")
            elif required:
                ok, reason = False, "this role requires a TOTP second factor; none is enrolled"
        if not ok or user is None:
            lockout = await self.guard.failed(username, source)
            if lockout:
                await self.record(SYSTEM_ACTOR, "identity.login.lockout", f"user:{username}",
                                  {"lockout_s": lockout, "source": source})
            raise InvalidGrant(reason)
        if not user.enabled:
            raise InvalidGrant("user is disabled")
        await self.guard.succeeded(username)
        return Authenticated(user, amr, int(time.time()))

    # --- tokens -------------------------------------------------------------------------------------------
    def token_response(self, access_token: str, claims: dict[str, Any], **extra: str) -> dict[str, Any]:
        """RFC 6749 §5.1 successful response."""
        body: dict[str, Any] = {
            "access_token": access_token, "token_type": "Bearer",
            "expires_in": claims["exp"] - claims["iat"], "scope": claims["scope"],
        }
        body.update({k: v for k, v in extra.items() if v})
        return body

    async def client_principal(self, client: Client) -> PrincipalContext:
        return await self.principals.client_principal(client)

    async def user_principal(self, user_id: str, client: Client) -> PrincipalContext:
        ctx = await self.principals.user_principal(user_id, client.id)
        await self.principals.client_principal(client)  # the client and its organisation must be enabled too
        return ctx

    async def revoke_jtis(self, jtis: list[tuple[str, float]]) -> None:
        await self.store.add_revoked_jtis(jtis, time.time())
        await self.feed.publish()

    async def revoke_family(self, family_id: str) -> None:
        jtis = await self.store.revoke_family(family_id)
        horizon = time.time() + self.config.token_lifetime_s
        await self.revoke_jtis([(j, horizon) for j in jtis])

    # --- validation (introspection, userinfo, /user, admin API) ----------------------------------------------
    async def validate(self, token: str, audience: str | None = None) -> dict[str, Any]:
        return await self.verifier.verify_async(token, audience)

    async def admin_actor(self, authorization: str | None) -> Actor:
        """The admin API's caller: an operator administrator who logged in with a second factor."""
        if not authorization or not authorization.startswith("Bearer "):
            raise InvalidToken("a Bearer access token is required")
        claims = await self.validate(authorization[7:].strip())
        if claims.get("principal_kind") != "user" or claims.get("org_kind") != OrganisationKind.OPERATOR.value:
            raise InsufficientScope("the admin API is for operator administrators")
        if "otp" not in claims.get("amr", []):
            raise InsufficientScope("the admin API requires a login with a second factor (amr otp)")
        try:  # the membership as it is now, not as it was when the token was issued
            principal = await self.principals.user_principal(claims["sub"], None)
        except (InvalidGrant, AccessDenied) as exc:
            raise InvalidToken(exc.detail) from exc
        if principal.organisation.kind is not OrganisationKind.OPERATOR or principal.org_role != ORG_ROLE_ADMIN:
            raise InsufficientScope("the admin API is for operator administrators")
        return Actor(
            principal=f"user:{principal.subject}", organisation=principal.organisation.id,
            kind=str(principal.organisation.kind), country=principal.organisation.country,
        )

    # --- bootstrap ----------------------------------------------------------------------------------------
    async def bootstrap(self, operator_name: str, operator_country: str) -> BootstrapCredentials | None:
        """First start only: the operator organisation and its first administrator (with TOTP)."""
        if await self.store.count_operator_organisations() > 0:
            return None
        org = await self.directory.create_organisation(
            SYSTEM_ACTOR, {"name": operator_name, "kind": "operator", "country": operator_country}
        )
        password = secrets.token_urlsafe(18)
        user, totp_secret = await self.directory.create_user(SYSTEM_ACTOR, {
            "organisation_id": org.id, "username": "admin", "email": "admin@operator.invalid",
            "password": password, "role": ORG_ROLE_ADMIN,
        })
        assert totp_secret is not None
        return BootstrapCredentials(
            organisation_id=org.id, organisation_name=org.name, username=user.username, password=password,
            totp_secret=totp_secret, totp_uri=mfa.provisioning_uri(totp_secret, f"{user.username}@{org.name}"),
        )

    async def create_client_for(
        self, org_ref: str, name: str, scope: str, client_type: ClientType = ClientType.SERVICE_ACCOUNT,
        actor: Actor = SYSTEM_ACTOR,
    ) -> tuple[Client, str]:
        """What ``sleutelbos identity create-client`` does: find the organisation by id or name, then create."""
        org = await self.store.find_organisation(org_ref)
        if org is None:
            raise NotFound(f"no organisation with id or name {org_ref!r}")
        if not org.enabled:
            raise AccessDenied("the organisation is disabled")
        return await self.directory.create_client(
            actor, client_type, {"organisation_id": org.id, "name": name, "scope": scope},
        )

