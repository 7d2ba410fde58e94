"""The same behaviour on SQLite (embedded) and PostgreSQL (scaled): schema migration, the main flows, uniqueness,
and refresh-token rotation under concurrent presentation."""

from __future__ import annotations

import asyncio

import pytest

from sleutelbos.core.protocols import SYSTEM_ACTOR
from sleutelbos.identity.errors import Conflict, InvalidToken
from sleutelbos.identity.models import ClientType
from sleutelbos.identity.store import IdentityStore

from .conftest import World, open_service


async def login(world: World, scope: str = "openid meters:read") -> dict:
    code, verifier = await world.authorize("vera", world.vendor_password, scope=scope)
    response = await world.token({"grant_type": "authorization_code", "code": code,
                                  "redirect_uri": world.redirect_uri, "code_verifier": verifier})
    assert response.status_code == 200, response.text
    return response.json()


async def test_grants_rotation_replay_and_disable(any_world: World) -> None:
    w = any_world
    first = await login(w)
    second = (await w.token({"grant_type": "refresh_token", "refresh_token": first["refresh_token"]})).json()
    assert (await w.service.validate(second["access_token"]))["sub"] == w.vendor_user_id
    replay = await w.token({"grant_type": "refresh_token", "refresh_token": first["refresh_token"]})
    assert replay.json()["error"] == "invalid_grant"
    with pytest.raises(InvalidToken, match="revoked"):
        await w.service.validate(second["access_token"])
    cid, secret = await w.service_account()
    token = (await w.token({"grant_type": "client_credentials"}, (cid, secret))).json()["access_token"]
    await w.service.directory.set_organisation_enabled(SYSTEM_ACTOR, w.vendor_id, False)
    with pytest.raises(InvalidToken, match="disabled"):
        await w.service.validate(token)
    page = await w.service.feed.since(0)
    assert [e.type for e in page.entries][-1] == "principal" and page.entries[-1].value == f"org:{w.vendor_id}"


async def test_roles_and_keyrock_user_on_both_stores(any_world: World) -> None:
    w = any_world
    d = w.service.directory
    role = await d.create_role(SYSTEM_ACTOR, w.app_id, {"name": "viewer"})
    await d.assign_role(SYSTEM_ACTOR, w.app_id, {"role_id": role.id, "principal_type": "organisation",
                                                  "principal_id": w.vendor_id})
    token = await login(w, "meters:read")
    body = (await w.http.get("/user", params={"access_token": token["access_token"], "app_id": w.app_id})).json()
    assert body["organizations"][0]["roles"] == [{"id": role.id, "name": "viewer"}]
    assert (await w.service.validate(token["access_token"]))["roles"] == ["viewer"]
    with pytest.raises(Conflict):
        await d.create_role(SYSTEM_ACTOR, w.app_id, {"name": "viewer"})
    with pytest.raises(Conflict):
        await d.create_client(SYSTEM_ACTOR, ClientType.SERVICE_ACCOUNT, {
            "organisation_id": w.operator_id, "name": "Console"})


async def test_concurrent_presentations_of_one_refresh_token(any_world: World) -> None:
    """Two requests racing with the same refresh token: at most one rotation wins, the other is a replay."""
    w = any_world
    first = await login(w, "meters:read")
    results = await asyncio.gather(*[
        w.token({"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}) for _ in range(4)
    ])
    codes = sorted(r.status_code for r in results)
    assert codes.count(200) <= 1 and codes.count(400) >= 3
    for r in results:
        if r.status_code == 200:  # the winner's tokens die with the family the losers' replay revoked
            with pytest.raises(InvalidToken, match="revoked"):
                await w.service.validate(r.json()["access_token"])
            successor = await w.token({"grant_type": "refresh_token", "refresh_token": r.json()["refresh_token"]})
            assert successor.json()["error"] == "invalid_grant"


async def test_schema_migrates_once_and_data_survives_reopen(database_url: str, signers, sink) -> None:
    service = await open_service(database_url, signers, sink)
    creds = await service.bootstrap("Operator BV", "NL")
    assert creds is not None
    await service.close()
    again = await open_service(database_url, signers, sink)
    try:
        assert await again.bootstrap("Operator BV", "NL") is None  # later starts do not re-create
        orgs = await again.store.list_organisations()
        assert [(o.name, o.kind.value, o.country) for o in orgs] == [("Operator BV", "operator", "NL")]
        version = await again.store.db.fetchone(
            "SELECT MAX(version) FROM schema_migrations WHERE component = 'identity'")
        assert version is not None and version[0] == 1
    finally:
        await again.close()


async def test_store_refuses_use_before_connect() -> None:
    with pytest.raises(RuntimeError, match="before connect"):
        await IdentityStore().list_organisations()
