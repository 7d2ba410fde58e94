# ruff: noqa: S608 - SQL is assembled only from the column-list constants below; every value is a placeholder
"""Persistence of the identity model on SQLite (embedded) or PostgreSQL (scaled), one schema for both.

What is stored: organisations, users (Argon2id hashes, TOTP secrets), memberships, OAuth clients (secret digests),
Keyrock-style roles/permissions/assignments, authorization codes and refresh tokens (by SHA-256 digest only, never
the bearer value), the revocation feed (an append-only sequence: revoked ``jti``s and disabled/enabled principals,
whose sequence number is the feed's cursor), and failed-login counters. Access tokens themselves are not stored:
they are self-contained JWTs, refused by ``jti`` or by principal through the feed.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from sleutelbos.identity.database import Database, Executor, open_database
from sleutelbos.identity.errors import Conflict
from sleutelbos.identity.models import (
    AuthorizationCode,
    Client,
    ClientType,
    Membership,
    Organisation,
    OrganisationKind,
    Permission,
    PrincipalType,
    RefreshToken,
    Role,
    RoleAssignment,
    User,
)

_SCHEMA_V1 = """
CREATE TABLE identity_organisations (
  id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, kind TEXT NOT NULL, country TEXT NOT NULL,
  establishment_country TEXT, assembly_country TEXT, ubo_countries TEXT NOT NULL DEFAULT '[]',
  enabled INTEGER NOT NULL DEFAULT 1, created_at {REAL} NOT NULL);
CREATE TABLE identity_users (
  id TEXT PRIMARY KEY, username TEXT NOT NULL UNIQUE, email TEXT NOT NULL,
  organisation_id TEXT NOT NULL REFERENCES identity_organisations(id),
  password_hash TEXT NOT NULL, totp_secret TEXT, totp_last_step BIGINT NOT NULL DEFAULT 0,
  enabled INTEGER NOT NULL DEFAULT 1, created_at {REAL} NOT NULL);
CREATE TABLE identity_memberships (
  user_id TEXT NOT NULL REFERENCES identity_users(id) ON DELETE CASCADE,
  organisation_id TEXT NOT NULL REFERENCES identity_organisations(id), role TEXT NOT NULL,
  PRIMARY KEY (user_id, organisation_id));
CREATE TABLE identity_clients (
  id TEXT PRIMARY KEY, name TEXT NOT NULL, organisation_id TEXT NOT NULL REFERENCES identity_organisations(id),
  client_type TEXT NOT NULL, secret_hash TEXT NOT NULL, redirect_uris TEXT NOT NULL DEFAULT '[]',
  grant_types TEXT NOT NULL DEFAULT '[]', scopes TEXT NOT NULL DEFAULT '[]', serial_number TEXT,
  enabled INTEGER NOT NULL DEFAULT 1, created_at {REAL} NOT NULL, UNIQUE (organisation_id, name));
CREATE TABLE identity_roles (
  id TEXT PRIMARY KEY, application_id TEXT NOT NULL REFERENCES identity_clients(id) ON DELETE CASCADE,
  name TEXT NOT NULL, UNIQUE (application_id, name));
CREATE TABLE identity_permissions (
  id TEXT PRIMARY KEY, application_id TEXT NOT NULL REFERENCES identity_clients(id) ON DELETE CASCADE,
  name TEXT NOT NULL, action TEXT NOT NULL, resource TEXT NOT NULL, UNIQUE (application_id, name));
CREATE TABLE identity_role_permissions (
  role_id TEXT NOT NULL REFERENCES identity_roles(id) ON DELETE CASCADE,
  permission_id TEXT NOT NULL REFERENCES identity_permissions(id) ON DELETE CASCADE,
  PRIMARY KEY (role_id, permission_id));
CREATE TABLE identity_role_assignments (
  id TEXT PRIMARY KEY, application_id TEXT NOT NULL REFERENCES identity_clients(id) ON DELETE CASCADE,
  role_id TEXT NOT NULL REFERENCES identity_roles(id) ON DELETE CASCADE,
  principal_type TEXT NOT NULL, principal_id TEXT NOT NULL, UNIQUE (role_id, principal_type, principal_id));
CREATE INDEX identity_role_assignments_principal ON identity_role_assignments (principal_type, principal_id);
CREATE TABLE identity_authorization_codes (
  code_hash TEXT PRIMARY KEY, client_id TEXT NOT NULL, user_id TEXT NOT NULL, redirect_uri TEXT NOT NULL,
  scope TEXT NOT NULL, code_challenge TEXT NOT NULL, nonce TEXT, amr TEXT NOT NULL, auth_time BIGINT NOT NULL,
  expires_at {REAL} NOT NULL, used INTEGER NOT NULL DEFAULT 0, issued_jti TEXT, issued_family TEXT);
CREATE TABLE identity_refresh_tokens (
  token_hash TEXT PRIMARY KEY, family_id TEXT NOT NULL, client_id TEXT NOT NULL, subject TEXT NOT NULL,
  scope TEXT NOT NULL, amr TEXT NOT NULL, auth_time BIGINT NOT NULL, expires_at {REAL} NOT NULL,
  state TEXT NOT NULL, access_jti TEXT, created_at {REAL} NOT NULL);
CREATE INDEX identity_refresh_tokens_family ON identity_refresh_tokens (family_id);
CREATE INDEX identity_refresh_tokens_subject ON identity_refresh_tokens (subject);
CREATE INDEX identity_refresh_tokens_client ON identity_refresh_tokens (client_id);
CREATE TABLE identity_revocations (
  seq {SERIAL}, kind TEXT NOT NULL, value TEXT NOT NULL, expires_at {REAL}, revoked_before {REAL},
  disabled INTEGER NOT NULL DEFAULT 1, at {REAL} NOT NULL);
CREATE INDEX identity_revocations_value ON identity_revocations (kind, value);
CREATE TABLE identity_login_failures (
  subject TEXT PRIMARY KEY, failures INTEGER NOT NULL, locked_until {REAL} NOT NULL, last_failure {REAL} NOT NULL);
"""

MIGRATIONS: dict[str, list[str]] = {
    "sqlite": [_SCHEMA_V1.format(REAL="REAL", SERIAL="INTEGER PRIMARY KEY AUTOINCREMENT")],
    "postgresql": [_SCHEMA_V1.format(REAL="DOUBLE PRECISION", SERIAL="BIGSERIAL PRIMARY KEY")],
}

_ORG_COLS = "id, name, kind, country, establishment_country, assembly_country, ubo_countries, enabled, created_at"
_USER_COLS = "id, username, email, organisation_id, password_hash, totp_secret, enabled, created_at"
_CLIENT_COLS = (
    "id, name, organisation_id, client_type, secret_hash, redirect_uris, grant_types, scopes, serial_number,"
    " enabled, created_at"
)
_CODE_COLS = (
    "code_hash, client_id, user_id, redirect_uri, scope, code_challenge, nonce, amr, auth_time, expires_at, used,"
    " issued_jti, issued_family"
)
_RT_COLS = "token_hash, family_id, client_id, subject, scope, amr, auth_time, expires_at, state, access_jti"


def _j(value: Any) -> str:
    return orjson.dumps(list(value)).decode()


def _l(value: str) -> tuple[str, ...]:
    return tuple(orjson.loads(value))


def _org(row: tuple[Any, ...]) -> Organisation:
    return Organisation(
        id=row[0], name=row[1], kind=OrganisationKind(row[2]), country=row[3], establishment_country=row[4],
        assembly_country=row[5], ubo_countries=_l(row[6]), enabled=bool(row[7]), created_at=row[8],
    )


def _user(row: tuple[Any, ...]) -> User:
    return User(
        id=row[0], username=row[1], email=row[2], organisation_id=row[3], password_hash=row[4],
        totp_secret=row[5], enabled=bool(row[6]), created_at=row[7],
    )


def _client(row: tuple[Any, ...]) -> Client:
    return Client(
        id=row[0], name=row[1], organisation_id=row[2], client_type=ClientType(row[3]), secret_hash=row[4],
        redirect_uris=_l(row[5]), grant_types=_l(row[6]), scopes=_l(row[7]), serial_number=row[8],
        enabled=bool(row[9]), created_at=row[10],
    )


def _code(row: tuple[Any, ...]) -> AuthorizationCode:
    return AuthorizationCode(
        code_hash=row[0], client_id=row[1], user_id=row[2], redirect_uri=row[3], scope=_l(row[4]),
        code_challenge=row[5], nonce=row[6], amr=_l(row[7]), auth_time=int(row[8]), expires_at=row[9],
        used=bool(row[10]), issued_jti=row[11], issued_family=row[12],
    )


def _rt(row: tuple[Any, ...]) -> RefreshToken:
    return RefreshToken(
        token_hash=row[0], family_id=row[1], client_id=row[2], subject=row[3], scope=_l(row[4]), amr=_l(row[5]),
        auth_time=int(row[6]), expires_at=row[7], state=row[8], access_jti=row[9],
    )


def _is_unique_violation(exc: Exception) -> bool:
    text = f"{type(exc).__name__} {exc}".lower()
    return "unique" in text or "uniqueviolation" in text


class IdentityStore:
    """Every read and write the identity service makes; no policy decisions live here."""

    def __init__(self, db: Database | None = None) -> None:
        self._db = db

    @property
    def db(self) -> Database:
        if self._db is None:
            raise RuntimeError("identity store used before connect()")
        return self._db

    async def connect(self, url: str) -> None:
        """Open the database and bring its schema forward (the component calls this in ``start``)."""
        self._db = await open_database(url, "identity", MIGRATIONS)

    async def close(self) -> None:
        await self.db.close()

    async def _insert(self, ex: Executor, sql: str, *args: Any, what: str) -> None:
        try:
            await ex.execute(sql, *args)
        except Exception as exc:
            if _is_unique_violation(exc):
                raise Conflict(f"{what} already exists") from exc
            raise

    # --- organisations ----------------------------------------------------------------------------------
    async def add_organisation(self, org: Organisation) -> None:
        await self._insert(
            self.db, f"INSERT INTO identity_organisations ({_ORG_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            org.id, org.name, str(org.kind), org.country, org.establishment_country, org.assembly_country,
            _j(org.ubo_countries), int(org.enabled), org.created_at, what=f"organisation named {org.name!r}",
        )

    async def update_organisation(self, org: Organisation) -> None:
        try:
            await self.db.execute(
                "UPDATE identity_organisations SET name=?, country=?, establishment_country=?, assembly_country=?,"
                " ubo_countries=? WHERE id=?",
                org.name, org.country, org.establishment_country, org.assembly_country, _j(org.ubo_countries), org.id,
            )
        except Exception as exc:
            if _is_unique_violation(exc):
                raise Conflict(f"organisation named {org.name!r} already exists") from exc
            raise

    async def get_organisation(self, org_id: str) -> Organisation | None:
        row = await self.db.fetchone(f"SELECT {_ORG_COLS} FROM identity_organisations WHERE id = ?", org_id)
        return _org(row) if row else None

    async def find_organisation(self, ref: str) -> Organisation | None:
        """By id or by name (the CLI's ``--org`` takes either)."""
        row = await self.db.fetchone(
            f"SELECT {_ORG_COLS} FROM identity_organisations WHERE id = ? OR name = ?", ref, ref
        )
        return _org(row) if row else None

    async def list_organisations(self) -> list[Organisation]:
        rows = await self.db.fetchall(f"SELECT {_ORG_COLS} FROM identity_organisations ORDER BY created_at, id")
        return [_org(r) for r in rows]

    async def count_operator_organisations(self) -> int:
        row = await self.db.fetchone("SELECT COUNT(*) FROM identity_organisations WHERE kind = 'operator'")
        return int(row[0]) if row else 0

    async def set_organisation_enabled(self, org_id: str, enabled: bool, at: float) -> None:
        """Flip the flag and append the principal event to the feed, in one transaction."""
        async with self.db.transaction() as tx:
            await tx.execute("UPDATE identity_organisations SET enabled = ? WHERE id = ?", int(enabled), org_id)
            await self._principal_event(tx, f"org:{org_id}", disabled=not enabled, at=at)
            if not enabled:
                # members whose home is elsewhere: their tokens may carry roles held through this organisation
                others = await tx.fetchall(
                    "SELECT m.user_id FROM identity_memberships m JOIN identity_users u ON u.id = m.user_id"
                    " WHERE m.organisation_id = ? AND u.organisation_id != ?", org_id, org_id,
                )
                for (user_id,) in others:
                    await self._revoke_tokens_before(tx, f"user:{user_id}", at)
                await tx.execute(
                    "UPDATE identity_refresh_tokens SET state = 'revoked' WHERE state != 'revoked' AND ("
                    " client_id IN (SELECT id FROM identity_clients WHERE organisation_id = ?) OR"
                    " subject IN (SELECT user_id FROM identity_memberships WHERE organisation_id = ?)"
                    " OR subject IN (SELECT id FROM identity_users WHERE organisation_id = ?))",
                    org_id, org_id, org_id,
                )

    # --- users ------------------------------------------------------------------------------------------
    async def add_user(self, user: User, role: str) -> None:
        async with self.db.transaction() as tx:
            await self._insert(
                tx, f"INSERT INTO identity_users ({_USER_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                user.id, user.username, user.email, user.organisation_id, user.password_hash, user.totp_secret,
                int(user.enabled), user.created_at, what=f"user {user.username!r}",
            )
            await tx.execute(
                "INSERT INTO identity_memberships (user_id, organisation_id, role) VALUES (?, ?, ?)",
                user.id, user.organisation_id, role,
            )

    async def get_user(self, user_id: str) -> User | None:
        row = await self.db.fetchone(f"SELECT {_USER_COLS} FROM identity_users WHERE id = ?", user_id)
        return _user(row) if row else None

    async def get_user_by_username(self, name: str) -> User | None:
        row = await self.db.fetchone(f"SELECT {_USER_COLS} FROM identity_users WHERE username = ?", name)
        return _user(row) if row else None

    async def list_users(self, organisation_id: str | None = None) -> list[User]:
        if organisation_id is None:
            rows = await self.db.fetchall(f"SELECT {_USER_COLS} FROM identity_users ORDER BY username")
        else:
            rows = await self.db.fetchall(
                f"SELECT {_USER_COLS} FROM identity_users WHERE id IN"
                " (SELECT user_id FROM identity_memberships WHERE organisation_id = ?) ORDER BY username",
                organisation_id,
            )
        return [_user(r) for r in rows]

    async def update_user(self, user_id: str, email: str, password_hash: str) -> None:
        await self.db.execute(
            "UPDATE identity_users SET email = ?, password_hash = ? WHERE id = ?", email, password_hash, user_id
        )

    async def set_totp_secret(self, user_id: str, secret: str | None) -> None:
        await self.db.execute(
            "UPDATE identity_users SET totp_secret = ?, totp_last_step = 0 WHERE id = ?", secret, user_id
        )

    async def claim_totp_step(self, user_id: str, step: int) -> bool:
        """Record ``step`` as used; False if it (or a later one) was used already — one code, one login."""
        count = await self.db.execute(
            "UPDATE identity_users SET totp_last_step = ? WHERE id = ? AND totp_last_step < ?", step, user_id, step
        )
        return count == 1

    async def set_user_enabled(self, user_id: str, enabled: bool, at: float) -> None:
        async with self.db.transaction() as tx:
            await tx.execute("UPDATE identity_users SET enabled = ? WHERE id = ?", int(enabled), user_id)
            await self._principal_event(tx, f"user:{user_id}", disabled=not enabled, at=at)
            if not enabled:
                await tx.execute(
                    "UPDATE identity_refresh_tokens SET state = 'revoked' WHERE subject = ? AND state != 'revoked'",
                    user_id,
                )

    async def memberships_of(self, user_id: str) -> list[Membership]:
        rows = await self.db.fetchall(
            "SELECT user_id, organisation_id, role FROM identity_memberships WHERE user_id = ?"
            " ORDER BY organisation_id",
            user_id,
        )
        return [Membership(*r) for r in rows]

    async def set_membership(self, membership: Membership) -> None:
        async with self.db.transaction() as tx:
            await tx.execute(
                "DELETE FROM identity_memberships WHERE user_id = ? AND organisation_id = ?",
                membership.user_id, membership.organisation_id,
            )
            await tx.execute(
                "INSERT INTO identity_memberships (user_id, organisation_id, role) VALUES (?, ?, ?)",
                membership.user_id, membership.organisation_id, membership.role,
            )

    async def remove_membership(self, user_id: str, organisation_id: str) -> int:
        return await self.db.execute(
            "DELETE FROM identity_memberships WHERE user_id = ? AND organisation_id = ?", user_id, organisation_id
        )

    # --- clients ----------------------------------------------------------------------------------------
    async def add_client(self, client: Client) -> None:
        await self._insert(
            self.db, f"INSERT INTO identity_clients ({_CLIENT_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            client.id, client.name, client.organisation_id, str(client.client_type), client.secret_hash,
            _j(client.redirect_uris), _j(client.grant_types), _j(client.scopes), client.serial_number,
            int(client.enabled), client.created_at, what=f"client named {client.name!r} in this organisation",
        )

    async def update_client(self, client: Client) -> None:
        await self.db.execute(
            "UPDATE identity_clients SET redirect_uris = ?, grant_types = ?, scopes = ?, secret_hash = ? WHERE id = ?",
            _j(client.redirect_uris), _j(client.grant_types), _j(client.scopes), client.secret_hash, client.id,
        )

    async def get_client(self, client_id: str) -> Client | None:
        row = await self.db.fetchone(f"SELECT {_CLIENT_COLS} FROM identity_clients WHERE id = ?", client_id)
        return _client(row) if row else None

    async def list_clients(self, client_type: ClientType | None = None) -> list[Client]:
        if client_type is None:
            rows = await self.db.fetchall(f"SELECT {_CLIENT_COLS} FROM identity_clients ORDER BY created_at, id")
        else:
            rows = await self.db.fetchall(
                f"SELECT {_CLIENT_COLS} FROM identity_clients WHERE client_type = ? ORDER BY created_at, id",
                str(client_type),
            )
        return [_client(r) for r in rows]

    async def set_client_enabled(self, client_id: str, enabled: bool, at: float) -> None:
        async with self.db.transaction() as tx:
            await tx.execute("UPDATE identity_clients SET enabled = ? WHERE id = ?", int(enabled), client_id)
            await self._principal_event(tx, f"client:{client_id}", disabled=not enabled, at=at)
            if not enabled:
                await tx.execute(
                    "UPDATE identity_refresh_tokens SET state = 'revoked' WHERE client_id = ? AND state != 'revoked'",
                    client_id,
                )

    # --- roles, permissions, assignments (Keyrock's model) -------------------------------------------------
    async def add_role(self, role: Role) -> None:
        await self._insert(
            self.db, "INSERT INTO identity_roles (id, application_id, name) VALUES (?, ?, ?)",
            role.id, role.application_id, role.name, what=f"role {role.name!r} in this application",
        )

    async def get_role(self, role_id: str) -> Role | None:
        row = await self.db.fetchone("SELECT id, application_id, name FROM identity_roles WHERE id = ?", role_id)
        return Role(*row) if row else None

    async def list_roles(self, application_id: str) -> list[Role]:
        rows = await self.db.fetchall(
            "SELECT id, application_id, name FROM identity_roles WHERE application_id = ? ORDER BY name",
            application_id,
        )
        return [Role(*r) for r in rows]

    async def delete_role(self, role_id: str) -> int:
        return await self.db.execute("DELETE FROM identity_roles WHERE id = ?", role_id)

    async def add_permission(self, perm: Permission) -> None:
        await self._insert(
            self.db,
            "INSERT INTO identity_permissions (id, application_id, name, action, resource) VALUES (?, ?, ?, ?, ?)",
            perm.id, perm.application_id, perm.name, perm.action, perm.resource,
            what=f"permission {perm.name!r} in this application",
        )

    async def get_permission(self, perm_id: str) -> Permission | None:
        row = await self.db.fetchone(
            "SELECT id, application_id, name, action, resource FROM identity_permissions WHERE id = ?", perm_id
        )
        return Permission(*row) if row else None

    async def list_permissions(self, application_id: str) -> list[Permission]:
        rows = await self.db.fetchall(
            "SELECT id, application_id, name, action, resource FROM identity_permissions"
            " WHERE application_id = ? ORDER BY name", application_id,
        )
        return [Permission(*r) for r in rows]

    async def grant_permission(self, role_id: str, permission_id: str) -> None:
        await self._insert(
            self.db, "INSERT INTO identity_role_permissions (role_id, permission_id) VALUES (?, ?)",
            role_id, permission_id, what="this permission on this role",
        )

    async def permissions_of_role(self, role_id: str) -> list[Permission]:
        rows = await self.db.fetchall(
            "SELECT p.id, p.application_id, p.name, p.action, p.resource FROM identity_permissions p"
            " JOIN identity_role_permissions rp ON rp.permission_id = p.id WHERE rp.role_id = ? ORDER BY p.name",
            role_id,
        )
        return [Permission(*r) for r in rows]

    async def add_assignment(self, assignment: RoleAssignment) -> None:
        await self._insert(
            self.db,
            "INSERT INTO identity_role_assignments (id, application_id, role_id, principal_type, principal_id)"
            " VALUES (?, ?, ?, ?, ?)",
            assignment.id, assignment.application_id, assignment.role_id, str(assignment.principal_type),
            assignment.principal_id, what="this role assignment",
        )

    async def get_assignment(self, assignment_id: str) -> RoleAssignment | None:
        row = await self.db.fetchone(
            "SELECT id, application_id, role_id, principal_type, principal_id FROM identity_role_assignments"
            " WHERE id = ?", assignment_id,
        )
        return RoleAssignment(row[0], row[1], row[2], PrincipalType(row[3]), row[4]) if row else None

    async def delete_assignment(self, assignment_id: str) -> int:
        return await self.db.execute("DELETE FROM identity_role_assignments WHERE id = ?", assignment_id)

    async def list_assignments(self, application_id: str) -> list[RoleAssignment]:
        rows = await self.db.fetchall(
            "SELECT id, application_id, role_id, principal_type, principal_id FROM identity_role_assignments"
            " WHERE application_id = ? ORDER BY id", application_id,
        )
        return [RoleAssignment(r[0], r[1], r[2], PrincipalType(r[3]), r[4]) for r in rows]

    async def roles_of(self, principals: list[tuple[PrincipalType, str]], application_id: str | None) -> list[Role]:
        """Application roles held by any of ``principals`` (a user and their organisations, or a client);
        in one application, or in every application when ``application_id`` is None."""
        if not principals:
            return []
        cond = " OR ".join("(a.principal_type = ? AND a.principal_id = ?)" for _ in principals)
        args: list[Any] = [x for p in principals for x in (str(p[0]), p[1])]
        sql = (
            "SELECT DISTINCT r.id, r.application_id, r.name FROM identity_roles r"
            f" JOIN identity_role_assignments a ON a.role_id = r.id WHERE ({cond})"
        )
        if application_id is not None:
            sql += " AND r.application_id = ?"
            args.append(application_id)
        rows = await self.db.fetchall(sql + " ORDER BY r.name", *args)
        return [Role(*r) for r in rows]

    # --- authorization codes ------------------------------------------------------------------------------
    async def add_code(self, code: AuthorizationCode) -> None:
        await self.db.execute(
            f"INSERT INTO identity_authorization_codes ({_CODE_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            code.code_hash, code.client_id, code.user_id, code.redirect_uri, _j(code.scope), code.code_challenge,
            code.nonce, _j(code.amr), code.auth_time, code.expires_at, int(code.used), None, None,
        )

    async def consume_code(self, code_hash: str) -> tuple[AuthorizationCode | None, bool]:
        """Mark the code used; returns (code, first_use). A second presentation returns first_use False."""
        async with self.db.transaction() as tx:
            row = await tx.fetchone(
                f"SELECT {_CODE_COLS} FROM identity_authorization_codes WHERE code_hash = ? FOR UPDATE", code_hash
            )
            if row is None:
                return None, False
            code = _code(row)
            if not code.used:
                await tx.execute("UPDATE identity_authorization_codes SET used = 1 WHERE code_hash = ?", code_hash)
            return code, not code.used

    async def record_code_issue(self, code_hash: str, jti: str, family: str | None) -> None:
        await self.db.execute(
            "UPDATE identity_authorization_codes SET issued_jti = ?, issued_family = ? WHERE code_hash = ?",
            jti, family, code_hash,
        )

    # --- refresh tokens -------------------------------------------------------------------------------------
    async def add_refresh_token(self, token: RefreshToken, ex: Executor | None = None) -> None:
        await (ex or self.db).execute(
            f"INSERT INTO identity_refresh_tokens ({_RT_COLS}, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            token.token_hash, token.family_id, token.client_id, token.subject, _j(token.scope), _j(token.amr),
            token.auth_time, token.expires_at, token.state, token.access_jti, time.time(),
        )

    async def get_refresh_token(self, token_hash: str) -> RefreshToken | None:
        row = await self.db.fetchone(f"SELECT {_RT_COLS} FROM identity_refresh_tokens WHERE token_hash = ?", token_hash)
        return _rt(row) if row else None

    async def rotate_refresh_token(self, token_hash: str, successor: RefreshToken) -> tuple[RefreshToken | None, bool]:
        """Atomically mark ``token_hash`` rotated and store ``successor``; returns (old, rotated_now).
        If the old one was not active (already rotated or revoked) nothing is written and rotated_now is False."""
        async with self.db.transaction() as tx:
            row = await tx.fetchone(
                f"SELECT {_RT_COLS} FROM identity_refresh_tokens WHERE token_hash = ? FOR UPDATE", token_hash
            )
            if row is None:
                return None, False
            old = _rt(row)
            if old.state != "active":
                return old, False
            await tx.execute("UPDATE identity_refresh_tokens SET state = 'rotated' WHERE token_hash = ?", token_hash)
            await self.add_refresh_token(successor, tx)
            return old, True

    async def revoke_family(self, family_id: str) -> list[str]:
        """Revoke every refresh token of the family; returns the access ``jti``s issued alongside them."""
        async with self.db.transaction() as tx:
            rows = await tx.fetchall(
                "SELECT access_jti FROM identity_refresh_tokens WHERE family_id = ? AND access_jti IS NOT NULL",
                family_id,
            )
            await tx.execute("UPDATE identity_refresh_tokens SET state = 'revoked' WHERE family_id = ?", family_id)
        return [r[0] for r in rows]

    # --- revocation feed ------------------------------------------------------------------------------------
    async def add_revoked_jtis(self, jtis: list[tuple[str, float]], at: float) -> None:
        if not jtis:
            return
        async with self.db.transaction() as tx:
            for jti, exp in jtis:
                await tx.execute(
                    "INSERT INTO identity_revocations (kind, value, expires_at, revoked_before, disabled, at)"
                    " VALUES ('jti', ?, ?, NULL, 1, ?)", jti, exp, at,
                )

    async def _principal_event(self, tx: Executor, principal: str, disabled: bool, at: float) -> None:
        """Disabling refuses tokens issued up to now; re-enabling keeps refusing those issued up to the disable
        (none were issued in between), so that a token minted just after re-enabling is accepted."""
        revoked_before = at
        if not disabled:
            row = await tx.fetchone(
                "SELECT MAX(revoked_before) FROM identity_revocations WHERE kind = 'principal' AND value = ?",
                principal,
            )
            if row is not None and row[0] is not None:
                revoked_before = float(row[0])
        await tx.execute(
            "INSERT INTO identity_revocations (kind, value, expires_at, revoked_before, disabled, at)"
            " VALUES ('principal', ?, NULL, ?, ?, ?)", principal, revoked_before, int(disabled), at,
        )

    async def revoke_principal_tokens(self, principal: str, at: float) -> None:
        """Refuse every token of ``principal`` issued up to ``at`` without disabling it (e.g. after a password
        reset): a principal event with ``disabled`` false and ``revoked_before`` = at."""
        async with self.db.transaction() as tx:
            await self._revoke_tokens_before(tx, principal, at)

    async def _revoke_tokens_before(self, tx: Executor, principal: str, at: float) -> None:
        await tx.execute(
            "INSERT INTO identity_revocations (kind, value, expires_at, revoked_before, disabled, at)"
            " SELECT 'principal', ?, NULL, ?, COALESCE((SELECT disabled FROM identity_revocations"
            " WHERE kind = 'principal' AND value = ? ORDER BY seq DESC LIMIT 1), 0), ?",
            principal, at, principal, at,
        )

    async def revocations_since(self, cursor: int, limit: int = 1000) -> list[tuple[Any, ...]]:
        """Feed entries after ``cursor``: (seq, kind, value, expires_at, revoked_before, disabled, at)."""
        return await self.db.fetchall(
            "SELECT seq, kind, value, expires_at, revoked_before, disabled, at FROM identity_revocations"
            " WHERE seq > ? ORDER BY seq LIMIT ?", cursor, limit,
        )

    async def principal_states(self) -> list[tuple[Any, ...]]:
        """The latest event for every principal: what a verifier starting from cursor 0 must know."""
        return await self.db.fetchall(
            "SELECT seq, kind, value, expires_at, revoked_before, disabled, at FROM identity_revocations r"
            " WHERE kind = 'principal' AND seq = (SELECT MAX(seq) FROM identity_revocations r2"
            " WHERE r2.kind = 'principal' AND r2.value = r.value) ORDER BY seq"
        )

    async def is_jti_revoked(self, jti: str) -> bool:
        row = await self.db.fetchone(
            "SELECT 1 FROM identity_revocations WHERE kind = 'jti' AND value = ? LIMIT 1", jti
        )
        return row is not None

    # --- brute-force guard ------------------------------------------------------------------------------------
    async def login_failures(self, subject: str) -> tuple[int, float]:
        row = await self.db.fetchone(
            "SELECT failures, locked_until FROM identity_login_failures WHERE subject = ?", subject
        )
        return (int(row[0]), float(row[1])) if row else (0, 0.0)

    async def set_login_failures(self, subject: str, failures: int, locked_until: float, at: float) -> None:
        async with self.db.transaction() as tx:
            await tx.execute("DELETE FROM identity_login_failures WHERE subject = ?", subject)
            await tx.execute(
                "INSERT INTO identity_login_failures (subject, failures, locked_until, last_failure)"
                " VALUES (?, ?, ?, ?)", subject, failures, locked_until, at,
            )

    async def clear_login_failures(self, subject: str) -> None:
        await self.db.execute("DELETE FROM identity_login_failures WHERE subject = ?", subject)
