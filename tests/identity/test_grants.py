"""Every grant, end to end over HTTP (ASGI): authorization code + PKCE, client credentials, refresh rotation,
password grant only where enabled; claims of every token kind."""

from __future__ import annotations

import time

import jwt as pyjwt

from sleutelbos.core.protocols import SYSTEM_ACTOR
from sleutelbos.identity.models import ClientType

from .conftest import ISSUER, World, public_key_of


def decode(world: World, token: str, audience: str = "sleutelbos") -> dict:
    """Verify with an independent library (PyJWT) against the custody public key named by the kid."""
    kid = pyjwt.get_unverified_header(token)["kid"]
    key = public_key_of(world.signers, kid)
    return pyjwt.decode(token, key, algorithms=["ES256"], audience=audience, issuer=ISSUER)


async def test_client_credentials_token_carries_org_facts(world: World) -> None:
    cid, secret = await world.service_account()
    response = await world.token({"grant_type": "client_credentials", "scope": "meters:read"}, (cid, secret))
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 600 and "refresh_token" not in body
    header = pyjwt.get_unverified_header(body["access_token"])
    assert header == {"alg": "ES256", "kid": world.signers.signer_for("identity-token").key_id, "typ": "at+jwt"}
    claims = decode(world, body["access_token"])
    assert claims["sub"] == cid and claims["client_id"] == cid
    assert claims["aud"] == ["sleutelbos", cid]
    assert claims["org"] == world.vendor_id and claims["org_kind"] == "vendor" and claims["country"] == "DE"
    assert claims["scope"] == "meters:read" and claims["roles"] == [] and claims["principal_kind"] == "service"
    assert claims["amr"] == ["client_secret"] and claims["acr"] == "urn:sleutelbos:acr:client"
    assert claims["exp"] - claims["iat"] == 600 and abs(claims["iat"] - time.time()) < 5
    assert len(claims["jti"]) == 36


async def test_client_credentials_with_post_auth_and_unregistered_scope(world: World) -> None:
    cid, secret = await world.service_account()
    ok = await world.http.post("/oauth2/token", data={
        "grant_type": "client_credentials", "client_id": cid, "client_secret": secret})
    assert ok.status_code == 200 and decode(world, ok.json()["access_token"])["scope"] == "meters:read"
    bad = await world.http.post("/oauth2/token", data={
        "grant_type": "client_credentials", "client_id": cid, "client_secret": secret, "scope": "firmware:push"})
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_scope"


async def test_meter_client_is_a_device_principal(world: World) -> None:
    meter, secret = await world.service.directory.create_client(SYSTEM_ACTOR, ClientType.METER, {
        "organisation_id": world.operator_id, "name": "E0025-0001", "serial_number": "E0025-0001",
        "scope": "readings:write"})
    response = await world.token({"grant_type": "client_credentials"}, (meter.id, secret))
    claims = decode(world, response.json()["access_token"])
    assert claims["principal_kind"] == "meter" and claims["org_kind"] == "operator"
    assert claims["scope"] == "readings:write"


async def test_authorization_code_with_pkce_issues_access_refresh_and_id_token(world: World) -> None:
    code, verifier = await world.authorize("vera", world.vendor_password, scope="openid profile email")
    response = await world.token({"grant_type": "authorization_code", "code": code,
                                  "redirect_uri": world.redirect_uri, "code_verifier": verifier})
    assert response.status_code == 200, response.text
    body = response.json()
    claims = decode(world, body["access_token"])
    assert claims["sub"] == world.vendor_user_id and claims["principal_kind"] == "user"
    assert claims["org_kind"] == "vendor" and claims["roles"] == [] and claims["org_role"] == "member"
    assert claims["amr"] == ["pwd"] and claims["acr"] == "urn:sleutelbos:acr:pwd"
    assert claims["username"] == "vera" and claims["scope"] == "openid profile email"
    id_token = decode(world, body["id_token"], audience=world.app_id)
    assert id_token["nonce"] == "n-1" and id_token["azp"] == world.app_id
    assert id_token["preferred_username"] == "vera" and id_token["email"] == "vera@meterco.example"
    assert abs(id_token["auth_time"] - time.time()) < 5 and id_token["at_hash"]
    assert pyjwt.get_unverified_header(body["id_token"])["typ"] == "JWT"
    assert body["refresh_token"]


async def test_operator_admin_login_needs_totp_and_token_says_mfa(world: World) -> None:
    token = await world.admin_token()
    claims = decode(world, token)
    assert claims["amr"] == ["pwd", "otp", "mfa"] and claims["acr"] == "urn:sleutelbos:acr:mfa"
    assert claims["org_kind"] == "operator" and claims["country"] == "NL" and claims["org_role"] == "admin"


async def test_refresh_rotates_and_the_new_token_works(world: World) -> None:
    code, verifier = await world.authorize("vera", world.vendor_password, scope="meters:read")
    first = (await world.token({"grant_type": "authorization_code", "code": code,
                                "redirect_uri": world.redirect_uri, "code_verifier": verifier})).json()
    second = await world.token({"grant_type": "refresh_token", "refresh_token": first["refresh_token"]})
    assert second.status_code == 200, second.text
    rotated = second.json()
    assert rotated["refresh_token"] != first["refresh_token"]
    assert decode(world, rotated["access_token"])["sub"] == world.vendor_user_id
    third = await world.token({"grant_type": "refresh_token", "refresh_token": rotated["refresh_token"]})
    assert third.status_code == 200


async def test_refresh_may_only_narrow_scope(world: World) -> None:
    code, verifier = await world.authorize("vera", world.vendor_password, scope="meters:read profile")
    first = (await world.token({"grant_type": "authorization_code", "code": code,
                                "redirect_uri": world.redirect_uri, "code_verifier": verifier})).json()
    wider = await world.token({"grant_type": "refresh_token", "refresh_token": first["refresh_token"],
                               "scope": "meters:read email"})
    assert wider.status_code == 400 and wider.json()["error"] == "invalid_scope"
    narrower = await world.token({"grant_type": "refresh_token", "refresh_token": first["refresh_token"],
                                  "scope": "meters:read"})
    assert narrower.status_code == 200 and decode(world, narrower.json()["access_token"])["scope"] == "meters:read"


async def test_password_grant_refused_unless_enabled_for_the_application(world: World) -> None:
    form = {"grant_type": "password", "username": "vera", "password": world.vendor_password}
    refused = await world.token(form)
    assert refused.status_code == 400 and refused.json()["error"] == "unauthorized_client"
    await world.service.directory.update_application(SYSTEM_ACTOR, world.app_id, {"password_grant": True})
    allowed = await world.token(form)
    assert allowed.status_code == 200, allowed.text
    assert decode(world, allowed.json()["access_token"])["sub"] == world.vendor_user_id


async def test_password_grant_for_mfa_role_requires_totp(world: World) -> None:
    await world.service.directory.update_application(SYSTEM_ACTOR, world.app_id, {"password_grant": True})
    form = {"grant_type": "password", "username": "admin", "password": world.admin_password}
    without = await world.token(form)
    assert without.status_code == 400 and without.json()["error"] == "invalid_grant"
    with_totp = await world.token({**form, "totp": world.totp_code()})
    assert with_totp.status_code == 200
    assert "otp" in decode(world, with_totp.json()["access_token"])["amr"]


async def test_unsupported_grant_type(world: World) -> None:
    response = await world.token({"grant_type": "urn:ietf:params:oauth:grant-type:device_code"})
    assert response.status_code == 400 and response.json()["error"] == "unsupported_grant_type"


async def test_expired_authorization_code_and_refresh_token_are_refused(world: World) -> None:
    import dataclasses

    world.service.config = dataclasses.replace(world.service.config, code_lifetime_s=-1)
    code, verifier = await world.authorize("vera", world.vendor_password)
    late = await world.token({"grant_type": "authorization_code", "code": code,
                              "redirect_uri": world.redirect_uri, "code_verifier": verifier})
    assert late.status_code == 400 and late.json() == {"error": "invalid_grant",
                                                       "error_description": "authorization code expired"}
    world.service.config = dataclasses.replace(world.service.config, code_lifetime_s=60,
                                               refresh_token_lifetime_s=-1)
    code, verifier = await world.authorize("vera", world.vendor_password)
    issued = (await world.token({"grant_type": "authorization_code", "code": code,
                                 "redirect_uri": world.redirect_uri, "code_verifier": verifier})).json()
    stale = await world.token({"grant_type": "refresh_token", "refresh_token": issued["refresh_token"]})
    assert stale.status_code == 400 and stale.json()["error_description"] == "refresh token expired"
