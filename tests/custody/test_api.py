"""The HTTP face and the stack wiring: /custody/... routes, ctx.signers registered by the component."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from sleutelbos.core.settings import Settings
from sleutelbos.custody import KeyCustody
from sleutelbos.custody.api import custody_routes
from sleutelbos.stack import StackContext, build_app

from .conftest import RecordingAuditSink


def test_inventory_public_keys_usage_and_errors(custody: KeyCustody) -> None:
    signer = custody.signer_for("identity-token")
    signer.sign(b"a")
    asyncio.run(custody.rotate("identity-token"))
    client = TestClient(Starlette(routes=custody_routes(custody)))

    inventory = client.get("/custody/inventory").json()
    assert [e["version"] for e in inventory] == [1, 2]
    assert {e["state"] for e in inventory} == {"active", "deactivated"}
    assert client.get(f"/custody/keys/{signer.key_id}").json()["id"] == signer.key_id

    keys = client.get("/custody/purposes/identity-token/public-keys").json()
    assert [k["active"] for k in keys] == [True, False]
    assert keys[1]["kid"] == signer.key_id and keys[1]["alg"] == "ES256"
    spki = base64.urlsafe_b64decode(keys[1]["spki"] + "==")
    assert spki == signer.public_key().spki_der

    assert client.get("/custody/usage").json()[signer.key_id] == {"sign": 1}

    missing = client.get("/custody/keys/" + "00" * 16)
    assert missing.status_code == 404 and missing.json()["error"] == "key_not_found"
    bad = client.get("/custody/inventory?limit=0")
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_request"


def test_the_component_registers_signers_on_the_stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLEUTELBOS_CUSTODY_KEY_STORE", "software")
    sink = RecordingAuditSink()
    ctx = StackContext(settings=Settings(data_dir=tmp_path), audit_sink=sink, announce=lambda m: None)
    app = build_app(ctx, expose=("custody",))
    with TestClient(app) as client:
        assert ctx.signers is ctx.services["custody"]
        signer = ctx.signers.signer_for("audit-checkpoint")  # from the event loop's thread, via the home loop
        assert sink.events[-1].target == signer.key_id
        assert client.get("/custody/inventory").json()[0]["id"] == signer.key_id
