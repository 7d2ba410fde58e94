"""Revocation: RFC 7009 endpoint, the revocation feed, a TokenVerifier refusing a revoked token within 1 s (pushed
in process, and polled over HTTP), disabling an organisation, introspection (RFC 7662)."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
from pathlib import Path

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette

from sleutelbos.core.protocols import SYSTEM_ACTOR
from sleutelbos.identity import api
from sleutelbos.identity.errors import InvalidToken
from sleutelbos.identity.verifier import TokenVerifier

from .conftest import ISSUER, World, open_service, seed_world

VERIFIER_PROCESS = str(Path(__file__).with_name("verifier_process.py"))
SRC = str(Path(__file__).resolve().parents[2] / "src")


async def client_token(world: World, org_id: str | None = None) -> tuple[str, str, str]:
    cid, secret = await world.service_account(org_id)
    response = await world.token({"grant_type": "client_credentials"}, (cid, secret))
    assert response.status_code == 200
    return response.json()["access_token"], cid, secret


async def refused_within(verifier: TokenVerifier, token: str, limit_s: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < limit_s:
        try:
            verifier.verify(token)
        except InvalidToken:
            return time.monotonic() - start
        await asyncio.sleep(0.01)
    pytest.fail(f"token still accepted {limit_s} s after revocation")


async def test_revoked_token_refused_by_http_polling_verifier_within_one_second(world: World) -> None:
    token, cid, secret = await client_token(world)
    app = Starlette(routes=api.routes(world.service))
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ISSUER)
    verifier = TokenVerifier(issuer=ISSUER, audience="sleutelbos", jwks=f"{ISSUER}/.well-known/jwks.json",
                             feed=f"{ISSUER}/oauth2/revocations", poll_interval_s=0.25, http=http)
    await verifier.start()
    try:
        assert verifier.verify(token)["sub"] == cid
        revoked = await world.http.post("/oauth2/revoke", data={"token": token, "token_type_hint": "access_token"},
                                        headers=world.basic(cid, secret))
        assert revoked.status_code == 200
        took = await refused_within(verifier, token, 1.0)
        assert took < 1.0
        with pytest.raises(InvalidToken, match="revoked"):
            verifier.verify(token)
    finally:
        await verifier.stop()
        await http.aclose()


async def test_revoked_token_refused_by_in_process_verifier_at_once(world: World) -> None:
    token, cid, secret = await client_token(world)
    verifier = world.service.verifier_for()
    await verifier.start()
    try:
        verifier.verify(token)
        await world.http.post("/oauth2/revoke", data={"token": token}, headers=world.basic(cid, secret))
        with pytest.raises(InvalidToken, match="revoked"):
            verifier.verify(token)  # pushed at commit, before the revoke call returned
    finally:
        await verifier.stop()
    assert world.sink.events[-1].action == "identity.token.revoke"


async def test_a_client_may_not_revoke_another_clients_token(world: World) -> None:
    token, _cid, _secret = await client_token(world)
    other_id, other_secret = await world.service_account()
    response = await world.http.post("/oauth2/revoke", data={"token": token}, headers=world.basic(other_id,
                                                                                               other_secret))
    assert response.status_code == 400 and response.json()["error"] == "unauthorized_client"
    assert (await world.service.validate(token))["sub"] == _cid


async def test_revoking_garbage_is_200_and_changes_nothing(world: World) -> None:
    before = (await world.service.feed.since(0)).cursor
    response = await world.http.post("/oauth2/revoke", data={"token": "not-a-token"}, headers=world.basic())
    assert response.status_code == 200
    assert (await world.service.feed.since(0)).cursor == before
    bad_hint = await world.http.post("/oauth2/revoke", data={"token": "x", "token_type_hint": "id_token"},
                                     headers=world.basic())
    assert bad_hint.status_code == 400 and bad_hint.json()["error"] == "unsupported_token_type"


async def test_revoking_a_refresh_token_revokes_its_family(world: World) -> None:
    code, verifier = await world.authorize("vera", world.vendor_password)
    first = (await world.token({"grant_type": "authorization_code", "code": code,
                                "redirect_uri": world.redirect_uri, "code_verifier": verifier})).json()
    r = await world.http.post("/oauth2/revoke", data={"token": first["refresh_token"],
                                                      "token_type_hint": "refresh_token"}, headers=world.basic())
    assert r.status_code == 200
    with pytest.raises(InvalidToken, match="revoked"):
        await world.service.validate(first["access_token"])
    refresh = await world.token({"grant_type": "refresh_token", "refresh_token": first["refresh_token"]})
    assert refresh.status_code == 400 and refresh.json()["error"] == "invalid_grant"


async def test_disabling_an_organisation_revokes_all_its_tokens_and_refuses_new_ones(world: World) -> None:
    svc_token, cid, secret = await client_token(world, world.vendor_id)
    code, verifier = await world.authorize("vera", world.vendor_password)
    user = (await world.token({"grant_type": "authorization_code", "code": code,
                               "redirect_uri": world.redirect_uri, "code_verifier": verifier})).json()
    operator_token, _, _ = await client_token(world, world.operator_id)
    watcher = TokenVerifier(issuer=ISSUER, jwks=world.service.jwks_async, feed=world.service.feed)
    await watcher.start()

    def snapshot(event):  # at audit time the organisation must still be enabled: write-ahead
        return world.service.store.get_organisation(world.vendor_id)

    world.sink.probe = snapshot
    await world.service.directory.set_organisation_enabled(SYSTEM_ACTOR, world.vendor_id, False)
    assert world.sink.events[-1].action == "identity.org.disable" and world.sink.probed[-1].enabled is True

    for token in (svc_token, user["access_token"]):
        with pytest.raises(InvalidToken, match=f"org:{world.vendor_id} is disabled"):
            watcher.verify(token)
    assert watcher.verify(operator_token)["org_kind"] == "operator"  # others untouched
    again = await world.token({"grant_type": "client_credentials"}, (cid, secret))
    assert again.status_code == 401 and again.json()["error"] == "invalid_client"
    assert "disabled" in again.json()["error_description"]
    refresh = await world.token({"grant_type": "refresh_token", "refresh_token": user["refresh_token"]})
    assert refresh.status_code == 400 and refresh.json()["error"] == "invalid_grant"
    keyrock = await world.http.get("/user", params={"access_token": user["access_token"]})
    assert keyrock.status_code == 401

    # re-enabling lets new tokens through, old ones stay refused
    await world.service.directory.set_organisation_enabled(SYSTEM_ACTOR, world.vendor_id, True)
    await asyncio.sleep(1.05)  # iat has one-second resolution
    fresh = await world.token({"grant_type": "client_credentials"}, (cid, secret))
    assert fresh.status_code == 200
    assert watcher.verify(fresh.json()["access_token"])["sub"] == cid
    with pytest.raises(InvalidToken, match="revoked"):
        watcher.verify(svc_token)
    await watcher.stop()


async def test_operator_organisation_cannot_be_disabled(world: World) -> None:
    from sleutelbos.identity.errors import Conflict

    with pytest.raises(Conflict):
        await world.service.directory.set_organisation_enabled(SYSTEM_ACTOR, world.operator_id, False)


async def test_disabling_a_user_or_client_revokes_their_tokens(world: World) -> None:
    token, cid, _ = await client_token(world)
    await world.service.directory.set_client_enabled(SYSTEM_ACTOR, cid, False)
    with pytest.raises(InvalidToken, match=f"client:{cid} is disabled"):
        await world.service.validate(token)
    code, verifier = await world.authorize("vera", world.vendor_password)
    user = (await world.token({"grant_type": "authorization_code", "code": code,
                               "redirect_uri": world.redirect_uri, "code_verifier": verifier})).json()
    await world.service.directory.set_user_enabled(SYSTEM_ACTOR, world.vendor_user_id, False)
    with pytest.raises(InvalidToken, match=r"user:.* is disabled"):
        await world.service.validate(user["access_token"])


async def test_feed_endpoint_lists_entries_since_a_cursor(world: World) -> None:
    start = (await world.http.get("/oauth2/revocations", params={"since": 0})).json()
    token, cid, secret = await client_token(world)
    await world.http.post("/oauth2/revoke", data={"token": token}, headers=world.basic(cid, secret))
    await world.service.directory.set_organisation_enabled(SYSTEM_ACTOR, world.vendor_id, False)
    page = (await world.http.get("/oauth2/revocations", params={"since": start["cursor"]})).json()
    claims = world.service.verifier.revocations  # state the in-process verifier built from the same feed
    assert [e["type"] for e in page["entries"]] == ["jti", "principal"]
    jti_entry, org_entry = page["entries"]
    assert jti_entry["jti"] in claims.revoked_jtis and jti_entry["exp"] > time.time()
    assert org_entry == {"seq": page["cursor"], "type": "principal", "principal": f"org:{world.vendor_id}",
                         "disabled": True, "revoked_before": org_entry["revoked_before"]}
    empty = (await world.http.get("/oauth2/revocations", params={"since": page["cursor"]})).json()
    assert empty == {"cursor": page["cursor"], "more": False, "entries": []}


async def test_introspection(world: World) -> None:
    token, cid, _ = await client_token(world)
    active = (await world.http.post("/oauth2/introspect", data={"token": token}, headers=world.basic())).json()
    assert active["active"] is True and active["sub"] == cid and active["client_id"] == cid
    assert active["org_kind"] == "vendor" and active["token_type"] == "Bearer" and active["iss"] == ISSUER
    code, verifier = await world.authorize("vera", world.vendor_password)
    user = (await world.token({"grant_type": "authorization_code", "code": code,
                               "redirect_uri": world.redirect_uri, "code_verifier": verifier})).json()
    rt = (await world.http.post("/oauth2/introspect", data={"token": user["refresh_token"],
                                                            "token_type_hint": "refresh_token"},
                                headers=world.basic())).json()
    assert rt["active"] is True and rt["token_type"] == "refresh_token" and rt["sub"] == world.vendor_user_id
    unauth = await world.http.post("/oauth2/introspect", data={"token": token})
    assert unauth.status_code == 401 and unauth.json()["error"] == "invalid_client"


async def test_disabling_an_organisation_reaches_members_whose_home_is_elsewhere(world: World) -> None:
    """A consultant at home in the operator but also member of the vendor: the tokens that could carry roles held
    through the vendor are revoked, and new ones no longer carry those roles."""
    d = world.service.directory
    user, _ = await d.create_user(SYSTEM_ACTOR, {
        "organisation_id": world.operator_id, "username": "cora", "email": "cora@op.example",
        "password": "consultant-pass-1", "role": "member"})
    await d.set_membership(SYSTEM_ACTOR, user.id, world.vendor_id, "member")
    role = await d.create_role(SYSTEM_ACTOR, world.app_id, {"name": "vendor-support"})
    await d.assign_role(SYSTEM_ACTOR, world.app_id, {"role_id": role.id, "principal_type": "organisation",
                                                      "principal_id": world.vendor_id})
    code, verifier = await world.authorize("cora", "consultant-pass-1")
    token = (await world.token({"grant_type": "authorization_code", "code": code,
                                "redirect_uri": world.redirect_uri, "code_verifier": verifier})).json()
    assert "vendor-support" in (await world.service.validate(token["access_token"]))["roles"]
    await d.set_organisation_enabled(SYSTEM_ACTOR, world.vendor_id, False)
    with pytest.raises(InvalidToken, match=f"user:{user.id}"):
        await world.service.validate(token["access_token"])
    await asyncio.sleep(1.05)  # iat has one-second resolution
    code, verifier = await world.authorize("cora", "consultant-pass-1")
    fresh = (await world.token({"grant_type": "authorization_code", "code": code,
                                "redirect_uri": world.redirect_uri, "code_verifier": verifier})).json()
    claims = await world.service.validate(fresh["access_token"])
    assert claims["org_kind"] == "operator" and "vendor-support" not in claims["roles"]


async def test_revocation_reaches_a_verifier_in_another_process_within_one_second(
    sqlite_url: str, signers, sink,
) -> None:
    """The IdM served over real HTTP; a separate process follows its feed; revoke, and time the refusal."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    issuer = f"http://127.0.0.1:{port}"  # the verifier checks iss: the issuer is this server's own URL
    service = await open_service(sqlite_url, signers, sink, issuer=issuer)
    world = await seed_world(service, sink, signers)
    server = uvicorn.Server(uvicorn.Config(Starlette(routes=api.routes(service)), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off"))
    serving = asyncio.create_task(server.serve())
    proc = None
    try:
        for _ in range(500):
            if server.started:
                break
            await asyncio.sleep(0.02)
        token, cid, secret = await client_token(world)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, VERIFIER_PROCESS, issuer, token, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONPATH": SRC})
        assert proc.stdout is not None and proc.stderr is not None
        first = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().strip()
        assert first == "accepted", (await proc.stderr.read()).decode()[-3000:]
        revoked_at = time.time()
        response = await world.http.post("/oauth2/revoke", data={"token": token}, headers=world.basic(cid, secret))
        assert response.status_code == 200
        line = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode().split(" ", 2)
        assert line[0] == "refused" and line[2].strip() == "token revoked"
        assert float(line[1]) - revoked_at < 1.0
    finally:
        if proc is not None and proc.returncode is None:
            proc.kill()
        if proc is not None:
            await proc.wait()
        server.should_exit = True
        await serving
        await world.http.aclose()
        await service.close()


async def test_members_of_a_disabled_organisation_cannot_log_in(world: World) -> None:
    await world.service.directory.set_organisation_enabled(SYSTEM_ACTOR, world.vendor_id, False)
    params = {"response_type": "code", "client_id": world.app_id, "redirect_uri": world.redirect_uri,
              "code_challenge": "A" * 43, "code_challenge_method": "S256", "state": "s1"}
    response = await world.http.post("/oauth2/authorize", data={**params, "username": "vera",
                                                               "password": world.vendor_password, "consent": "allow"})
    assert response.status_code == 302
    location = response.headers["location"]
    assert "error=access_denied" in location and "code=" not in location and "state=s1" in location
