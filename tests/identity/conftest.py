"""Fixtures for the identity tests: a signer provider, a recording audit sink, services and an HTTP client.

Tokens are signed by custody's real ``SignerProvider`` on a SoftHSM2 token (one per module, or one per test where
keys are rotated, destroyed or closed); the
identity code itself sees only the ``SignerProvider`` protocol. ``AttackerKey`` is the one software key here: the
key a forger signs with, which custody never issued.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import secrets
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pyotp
import pytest
from argon2 import Parameters, Type
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from starlette.applications import Starlette

from sleutelbos.core.protocols import SYSTEM_ACTOR as _SYSTEM
from sleutelbos.core.protocols import AuditEvent, AuditReceipt, AuditUnavailable, PublicKeyInfo
from sleutelbos.custody import KeyCustody, custody_for_tests
from sleutelbos.identity import api
from sleutelbos.identity.login_guard import LoginPolicy
from sleutelbos.identity.models import ClientType
from sleutelbos.identity.service import IdentityConfig, IdentityService
from sleutelbos.identity.store import IdentityStore
from tests.conftest import SoftHsmToken, missing_part, softhsm_module

ISSUER = "https://idm.test"
# Still Argon2id, with a small memory cost so the suite stays fast; production uses RFC 9106's 64 MiB profile.
TEST_ARGON2ID = Parameters(type=Type.ID, version=19, salt_len=16, hash_len=32, time_cost=1, memory_cost=8192,
                           parallelism=1)


class AttackerKey:
    """A P-256 key custody never issued: what an attacker signs forged tokens with (unknown ``kid``)."""

    def __init__(self, purpose: str, version: int) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._key_id = f"{purpose}-v{version}-{uuid.uuid4().hex[:8]}"

    @property
    def key_id(self) -> str:
        return self._key_id

    @property
    def algorithm(self) -> str:
        return "ES256"

    @property
    def sovereign(self) -> bool:
        return False

    def sign(self, message: bytes, encoding: str = "raw") -> bytes:
        r, s = decode_dss_signature(self._key.sign(message, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def public_key(self) -> PublicKeyInfo:
        spki = self._key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return PublicKeyInfo(self._key_id, "ES256", spki, True)


def public_key_of(signers: Any, kid: str) -> ec.EllipticCurvePublicKey:
    """The verification key custody publishes for ``kid``."""
    info = next(k for k in signers.public_keys_for("identity-token") if k.key_id == kid)
    key = serialization.load_der_public_key(info.spki_der)
    assert isinstance(key, ec.EllipticCurvePublicKey)
    return key


@dataclass
class RecordingSink:
    """An ``AuditSink`` that keeps events; ``probe`` runs at record time (to see the state BEFORE the change);
    ``failing`` makes it raise ``AuditUnavailable`` as a real sink does when it cannot make an event durable."""

    events: list[AuditEvent] = field(default_factory=list)
    failing: bool = False
    probe: Callable[[AuditEvent], Any] | None = None
    probed: list[Any] = field(default_factory=list)

    async def record(self, event: AuditEvent) -> AuditReceipt:
        if self.failing:
            raise AuditUnavailable("audit log down (test)")
        if self.probe is not None:
            result = self.probe(event)
            if hasattr(result, "__await__"):
                result = await result
            self.probed.append(result)
        self.events.append(event)
        return AuditReceipt(len(self.events) - 1, hashlib.sha256(repr(event).encode()).hexdigest())

    def actions(self) -> list[str]:
        return [e.action for e in self.events]


@pytest.fixture(scope="module")
def module_custody(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeyCustody]:
    """Custody's real ``SignerProvider`` on a SoftHSM2 token made for this test module (as ``softhsm_token`` makes
    one per test): tokens are signed inside the HSM. One token per module because creating the token and its
    first key costs ~0.8 s; modules that rotate, destroy or close keys use :func:`fresh_custody` instead."""
    module, util = softhsm_module(), shutil.which("softhsm2-util")
    if module is None or util is None:
        missing_part("SoftHSM2 (Debian package softhsm2)")
    workdir = tmp_path_factory.mktemp("identity-softhsm")
    (workdir / "tokens").mkdir()
    conf = workdir / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {workdir / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
    label, pin = "identity-test", secrets.token_hex(4)
    subprocess.run([util, "--init-token", "--free", "--label", label, "--pin", pin, "--so-pin", pin],
                   check=True, capture_output=True, env={**os.environ, "SOFTHSM2_CONF": str(conf)})
    token = SoftHsmToken(module, conf, label, pin, pin)  # type: ignore[arg-type]
    with pytest.MonkeyPatch.context() as patch:
        for key, value in token.env().items():
            patch.setenv(key, value)
        custody = custody_for_tests(workdir / "custody", RecordingSink())
        assert custody.sovereign
        asyncio.run(custody.prepare_signer("identity-token"))
        yield custody
        custody.close()


@pytest.fixture
def fresh_custody(softhsm_token: Any, tmp_path: Path) -> Iterator[KeyCustody]:
    """Custody on a fresh SoftHSM2 token for one test (``softhsm_token``), for tests that change its keys."""
    custody = custody_for_tests(tmp_path / "custody", RecordingSink())
    assert custody.sovereign
    yield custody
    custody.close()


@pytest.fixture
def signers(module_custody: KeyCustody) -> KeyCustody:
    return module_custody


@pytest.fixture
def sink() -> RecordingSink:
    return RecordingSink()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'identity.sqlite'}"
    return request.getfixturevalue("pg_database_url")


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'identity.sqlite'}"


def make_config(**overrides: Any) -> IdentityConfig:
    defaults: dict[str, Any] = {
        "issuer": ISSUER, "token_lifetime_s": 600,
        "login_policy": LoginPolicy(threshold=3, base_lockout_s=2.0, max_lockout_s=60, per_source_limit=50),
        "password_parameters": TEST_ARGON2ID,
    }
    return IdentityConfig(**{**defaults, **overrides})


async def open_service(url: str, signers: Any, sink: Any, **overrides: Any) -> IdentityService:
    store = IdentityStore()
    await store.connect(url)
    service = IdentityService(store, signers, sink, make_config(**overrides))
    await service.start()
    return service


@dataclass
class World:
    """A seeded identity manager: an operator with an MFA admin, a vendor with a user, an application."""

    service: IdentityService
    sink: RecordingSink
    signers: Any
    http: httpx.AsyncClient
    operator_id: str
    admin_username: str
    admin_password: str
    admin_totp: str
    vendor_id: str
    app_id: str
    app_secret: str
    vendor_user_id: str
    vendor_password: str = "vendor-password-123"
    redirect_uri: str = "https://app.example/callback"

    def totp_code(self, secret: str | None = None, offset_steps: int = 0) -> str:
        return pyotp.TOTP(secret or self.admin_totp).at(time.time() + 30 * offset_steps)

    def basic(self, client_id: str | None = None, secret: str | None = None) -> dict[str, str]:
        raw = f"{client_id or self.app_id}:{secret or self.app_secret}".encode()
        return {"Authorization": "Basic " + base64.b64encode(raw).decode()}

    async def token(self, form: dict[str, str], client: tuple[str, str] | None = None) -> httpx.Response:
        cid, sec = client or (self.app_id, self.app_secret)
        return await self.http.post("/oauth2/token", data=form, headers=self.basic(cid, sec))

    async def service_account(self, org_id: str | None = None, scope: str = "meters:read") -> tuple[str, str]:
        client, secret = await self.service.create_client_for(
            org_id or self.vendor_id, f"svc-{uuid.uuid4().hex[:6]}", scope, ClientType.SERVICE_ACCOUNT)
        return client.id, secret

    async def authorize(self, username: str, password: str, totp: str | None = None, scope: str = "openid profile",
                        verifier: str | None = None, nonce: str | None = "n-1") -> tuple[str, str]:
        """Run the login page flow; returns (code, code_verifier)."""
        verifier = verifier or base64.urlsafe_b64encode(uuid.uuid4().bytes * 2).decode().rstrip("=")
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
        params = {
            "response_type": "code", "client_id": self.app_id, "redirect_uri": self.redirect_uri, "scope": scope,
            "state": "st-1", "code_challenge": challenge, "code_challenge_method": "S256",
        }
        if nonce:
            params["nonce"] = nonce
        page = await self.http.get("/oauth2/authorize", params=params)
        assert page.status_code == 200, page.text
        form = {**params, "username": username, "password": password, "consent": "allow"}
        if totp:
            form["totp"] = totp
        response = await self.http.post("/oauth2/authorize", data=form)
        assert response.status_code == 302, response.text
        query = parse_qs(urlsplit(response.headers["location"]).query)
        assert query["state"] == ["st-1"] and query["iss"] == [ISSUER]
        return query["code"][0], verifier

    async def admin_token(self) -> str:
        code, verifier = await self.authorize(self.admin_username, self.admin_password, self.totp_code())
        response = await self.token({"grant_type": "authorization_code", "code": code,
                                     "redirect_uri": self.redirect_uri, "code_verifier": verifier})
        assert response.status_code == 200, response.text
        return response.json()["access_token"]


async def seed_world(service: IdentityService, sink: RecordingSink, signers: Any) -> World:
    creds = await service.bootstrap("Netbeheer Test", "NL")
    assert creds is not None
    vendor = await service.directory.create_organisation(
        _SYSTEM, {"name": "Meterco", "kind": "vendor", "country": "DE", "establishment_country": "DE",
                  "assembly_country": "CN", "ubo_countries": ["CN", "DE"]})
    app_client, app_secret = await service.directory.create_client(_SYSTEM, ClientType.APPLICATION, {
        "organisation_id": creds.organisation_id, "name": "Console", "scope": "openid profile email meters:read",
        "redirect_uris": ["https://app.example/callback"],
        "grant_types": ["authorization_code", "refresh_token", "client_credentials"],
    })
    user, _ = await service.directory.create_user(_SYSTEM, {
        "organisation_id": vendor.id, "username": "vera", "email": "vera@meterco.example",
        "password": "vendor-password-123", "role": "member"})
    app = Starlette(routes=api.routes(service))
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=("10.0.0.1", 1234)),
                             base_url=ISSUER, follow_redirects=False)
    return World(service, sink, signers, http, creds.organisation_id, creds.username, creds.password,
                 creds.totp_secret, vendor.id, app_client.id, app_secret, user.id)




@pytest.fixture
async def world(sqlite_url: str, signers: KeyCustody, sink: RecordingSink) -> AsyncIterator[World]:
    service = await open_service(sqlite_url, signers, sink)
    w = await seed_world(service, sink, signers)
    yield w
    await w.http.aclose()
    await service.close()


@pytest.fixture
async def any_world(database_url: str, signers: KeyCustody, sink: RecordingSink) -> AsyncIterator[World]:
    """The same world on SQLite and on PostgreSQL."""
    service = await open_service(database_url, signers, sink)
    w = await seed_world(service, sink, signers)
    yield w
    await w.http.aclose()
    await service.close()
