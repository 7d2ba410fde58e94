"""The component in the stack: fail-closed build, first-start bootstrap (credentials announced once, bootstrap.json
mode 0600), no re-creation on later starts; and ``sleutelbos identity create-client --json``."""

from __future__ import annotations

import contextlib
import json
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest
from typer.testing import CliRunner

from sleutelbos.cli import app as sleutelbos_cli
from sleutelbos.core.errors import ConfigurationError
from sleutelbos.core.settings import Settings
from sleutelbos.identity import cli as identity_cli
from sleutelbos.identity import component
from sleutelbos.identity.passwords import verify_client_secret
from sleutelbos.identity.store import IdentityStore
from sleutelbos.stack import StackContext, build_app, build_components

from .conftest import RecordingSink


def stack_context(data_dir: Path, sink: RecordingSink, messages: list[str]) -> StackContext:
    settings = Settings(data_dir=data_dir, operator_name="Netbeheer Zuid", operator_country="NL", port=18080)
    # the audit component registers its sink on the context; until it is merged, this recording sink stands in
    return StackContext(settings=settings, audit_sink=sink, announce=messages.append)


def test_build_refuses_without_signers(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="signers"):
        component.build(StackContext(settings=Settings(data_dir=tmp_path)))


async def test_without_audit_sink_nothing_changes_and_bootstrap_waits(softhsm_token: Any, tmp_path: Path) -> None:
    """The audit log refuses: the IdM serves, but creates nothing unaudited — not even the operator's admin."""
    messages: list[str] = []
    settings = Settings(data_dir=tmp_path / "data", operator_name="Netbeheer Zuid", port=18080)
    ctx = StackContext(settings=settings, announce=messages.append, audit_sink=RecordingSink(failing=True))
    async with running(ctx) as http:
        service = ctx.services["identity"]
        # custody itself will not generate the token key unaudited, so nothing can be signed either
        jwks = await http.get("/.well-known/jwks.json")
        assert jwks.status_code == 503 and jwks.json()["error"] == "server_error"
        assert await service.store.list_organisations() == []
    assert any("NOT created yet" in m for m in messages)
    assert not (tmp_path / "data" / "bootstrap.json").exists()


@contextlib.asynccontextmanager
async def running(ctx: StackContext) -> AsyncIterator[httpx.AsyncClient]:
    """The stack's app with its lifespan (components started and stopped) and an HTTP client on it."""
    app = build_app(ctx, expose=("identity",))
    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:18080"
    ) as http:
        yield http


async def test_first_start_bootstraps_operator_and_admin_once(softhsm_token: Any, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    sink, messages = RecordingSink(), []
    ctx = stack_context(data_dir, sink, messages)
    async with running(ctx) as http:
        discovery = (await http.get("/.well-known/openid-configuration")).json()
        assert discovery["issuer"] == "http://127.0.0.1:18080"
        jwks = (await http.get("/.well-known/jwks.json")).json()
        assert len(jwks["keys"]) == 1 and jwks["keys"][0]["alg"] == "ES256"
    announced = [m for m in messages if m.startswith("identity:")]
    assert len(announced) == 1
    path = data_dir / "bootstrap.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    creds = json.loads(path.read_text())
    assert creds["username"] == "admin" and creds["organisation_name"] == "Netbeheer Zuid"
    assert creds["password"] in announced[0] and creds["totp_secret"] in announced[0]
    assert ctx.signers is not None and ctx.signers.sovereign  # custody on the SoftHSM2 token
    assert "identity.org.create" in sink.actions() and "identity.user.create" in sink.actions()

    messages2: list[str] = []
    ctx2 = stack_context(data_dir, RecordingSink(), messages2)
    async with running(ctx2) as http:
        service = ctx2.services["identity"]
        assert (await http.get("/health")).json() == {"status": "ok"}
        orgs = await service.store.list_organisations()
        assert [o.name for o in orgs] == ["Netbeheer Zuid"]
        auth = await service.authenticate_user("admin", creds["password"], pyotp.TOTP(creds["totp_secret"]).now(),
                                               None)
        assert auth.amr == ("pwd", "otp", "mfa")
    assert not [m for m in messages2 if m.startswith("identity:")]
    assert json.loads(path.read_text()) == creds


def test_cli_create_client_prints_credentials_as_json(
    softhsm_token: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    data_dir = tmp_path / "data"
    sink = RecordingSink()

    def build_with_audit(ctx: StackContext) -> list[Any]:
        ctx.audit_sink = sink  # what the audit component registers once it is merged
        return build_components(ctx, ("identity",))

    monkeypatch.setattr(identity_cli, "_build", build_with_audit)
    monkeypatch.setenv("SLEUTELBOS_OPERATOR_NAME", "Netbeheer Zuid")
    result = CliRunner().invoke(sleutelbos_cli, [
        "identity", "create-client", "--org", "Netbeheer Zuid", "--name", "head-end", "--scope", "readings:write",
        "--scope", "meters:read", "--json", "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(out) >= {"client_id", "client_secret"} and out["scope"] == "readings:write meters:read"
    assert "identity.service.create" in sink.actions()

    async def stored() -> Any:
        store = IdentityStore()
        await store.connect(f"sqlite:///{data_dir / 'identity.sqlite'}")
        try:
            return await store.get_client(out["client_id"])
        finally:
            await store.close()

    import asyncio

    client = asyncio.run(stored())
    assert client is not None and client.name == "head-end"
    assert verify_client_secret(client.secret_hash, out["client_secret"])
    assert out["client_secret"] not in (data_dir / "identity.sqlite").read_bytes().decode("latin-1")

    unknown = CliRunner().invoke(sleutelbos_cli, [
        "identity", "create-client", "--org", "Nobody BV", "--name", "x", "--json", "--data-dir", str(data_dir)])
    assert unknown.exit_code == 2 and "no organisation" in unknown.stderr
