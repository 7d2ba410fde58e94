"""Discovery (RFC 8414, OIDC), JWKS before and after a key rotation, userinfo, the Keyrock-compatible /user, the
authorization endpoint's page and its redirected errors."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata
from starlette.applications import Starlette

from sleutelbos.core.protocols import SYSTEM_ACTOR
from sleutelbos.identity import api
from sleutelbos.identity.errors import InvalidToken
from sleutelbos.identity.jose import jwk_from_public_key
from sleutelbos.identity.verifier import TokenVerifier

from .conftest import ISSUER, World


@pytest.fixture
def signers(fresh_custody):  # these tests rotate, destroy and close custody keys: a token of their own each
    return fresh_custody


async def test_discovery_documents(world: World) -> None:
    oidc = (await world.http.get("/.well-known/openid-configuration")).json()
    oauth = (await world.http.get("/.well-known/oauth-authorization-server")).json()
    assert oidc == oauth
    AuthorizationServerMetadata(oauth).validate()
    assert oauth["issuer"] == ISSUER and oauth["jwks_uri"] == f"{ISSUER}/.well-known/jwks.json"
    assert oauth["code_challenge_methods_supported"] == ["S256"]
    assert oauth["id_token_signing_alg_values_supported"] == ["ES256"]
    assert oauth["sleutelbos_revocation_feed_endpoint"] == f"{ISSUER}/oauth2/revocations"
    for endpoint in ("token_endpoint", "introspection_endpoint", "revocation_endpoint", "userinfo_endpoint"):
        assert oauth[endpoint].startswith(ISSUER + "/oauth2/")


async def test_jwks_serves_the_custody_key_and_after_rotation_old_and_new(world: World) -> None:
    first = world.signers.signer_for("identity-token")
    jwks = (await world.http.get("/.well-known/jwks.json")).json()
    assert jwks == {"keys": [jwk_from_public_key(first.public_key())]}
    assert jwks["keys"][0]["kty"] == "EC" and jwks["keys"][0]["crv"] == "P-256" and "d" not in jwks["keys"][0]

    cid, secret = await world.service_account()
    old_token = (await world.token({"grant_type": "client_credentials"}, (cid, secret))).json()["access_token"]
    app = Starlette(routes=api.routes(world.service))
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ISSUER)
    remote = TokenVerifier(issuer=ISSUER, jwks=f"{ISSUER}/.well-known/jwks.json",
                           feed=f"{ISSUER}/oauth2/revocations", http=http, jwks_min_refresh_s=0.0)
    await remote.start()
    try:
        await world.signers.rotate("identity-token")
        second = world.signers.signer_for("identity-token")
        assert second.key_id != first.key_id
        rotated = (await world.http.get("/.well-known/jwks.json")).json()
        assert {k["kid"] for k in rotated["keys"]} == {first.key_id, second.key_id}
        new_token = (await world.token({"grant_type": "client_credentials"}, (cid, secret))).json()["access_token"]
        assert new_token.split(".")[0] != old_token.split(".")[0]  # a different kid in the header
        assert remote.verify(old_token)["sub"] == cid  # the still-valid previous key keeps verifying
        with pytest.raises(InvalidToken, match="unknown key"):
            remote.verify(new_token)  # cached JWKS predates the rotation ...
        assert (await remote.verify_async(new_token))["sub"] == cid  # ... so the new kid triggers one refresh
        await world.signers.destroy(first.key_id)
        await remote.refresh_jwks(force=True)
        with pytest.raises(InvalidToken, match="unknown key"):
            remote.verify(old_token)  # once custody retires the old key, its tokens die with it
    finally:
        await remote.stop()
        await http.aclose()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # python-pkcs11 GC after close
async def test_custody_unavailable_means_nothing_issued(world: World) -> None:
    cid, secret = await world.service_account()
    world.signers.close()  # the HSM session is gone
    response = await world.token({"grant_type": "client_credentials"}, (cid, secret))
    assert response.status_code == 503 and response.json()["error"] == "server_error"
    assert "access_token" not in response.json()


async def test_userinfo(world: World) -> None:
    code, verifier = await world.authorize("vera", world.vendor_password, scope="openid profile email")
    token = (await world.token({"grant_type": "authorization_code", "code": code,
                                "redirect_uri": world.redirect_uri, "code_verifier": verifier})).json()
    info = await world.http.get("/oauth2/userinfo", headers={"Authorization": f"Bearer {token['access_token']}"})
    assert info.status_code == 200
    assert info.json() == {"sub": world.vendor_user_id, "org": world.vendor_id, "org_kind": "vendor",
                           "country": "DE", "roles": [], "org_role": "member", "preferred_username": "vera",
                           "name": "vera", "email": "vera@meterco.example"}
    none = await world.http.get("/oauth2/userinfo")
    assert none.status_code == 401 and none.json()["error"] == "invalid_token"
    cid, secret = await world.service_account()
    machine = (await world.token({"grant_type": "client_credentials"}, (cid, secret))).json()["access_token"]
    refused = await world.http.get("/oauth2/userinfo", headers={"Authorization": f"Bearer {machine}"})
    assert refused.status_code == 403 and refused.json()["error"] == "insufficient_scope"


async def test_keyrock_user_shape_with_application_and_organisation_roles(world: World) -> None:
    d = world.service.directory
    reader = await d.create_role(SYSTEM_ACTOR, world.app_id, {"name": "reader"})
    auditor = await d.create_role(SYSTEM_ACTOR, world.app_id, {"name": "auditor"})
    perm = await d.create_permission(SYSTEM_ACTOR, world.app_id,
                                     {"name": "read meters", "action": "get", "resource": "/ngsi-ld/v1/entities"})
    await d.grant_permission(SYSTEM_ACTOR, world.app_id, reader.id, perm.id)
    await d.assign_role(SYSTEM_ACTOR, world.app_id, {"role_id": reader.id, "principal_type": "user",
                                                      "principal_id": world.vendor_user_id})
    await d.assign_role(SYSTEM_ACTOR, world.app_id, {"role_id": auditor.id, "principal_type": "organisation",
                                                      "principal_id": world.vendor_id})
    code, verifier = await world.authorize("vera", world.vendor_password, scope="meters:read")
    token = (await world.token({"grant_type": "authorization_code", "code": code,
                                "redirect_uri": world.redirect_uri, "code_verifier": verifier})).json()
    claims = await world.service.validate(token["access_token"])
    assert claims["roles"] == ["auditor", "reader"] and claims["org_role"] == "member"

    response = await world.http.get("/user", params={"access_token": token["access_token"], "app_id": world.app_id})
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == world.vendor_user_id and body["username"] == "vera"
    assert body["email"] == "vera@meterco.example" and body["app_id"] == world.app_id
    assert body["roles"] == [{"id": reader.id, "name": "reader"}]
    assert body["organizations"] == [{
        "id": world.vendor_id, "name": "Meterco", "kind": "vendor", "country": "DE", "membership": "member",
        "roles": [{"id": auditor.id, "name": "auditor"}]}]
    assert body["displayName"] == "vera" and body["isGravatarEnabled"] is False and body["type"] == "user"
    without_app = await world.http.get("/user", params={"access_token": token["access_token"]})
    assert without_app.json() == body
    bearer = await world.http.get("/user", headers={"Authorization": f"Bearer {token['access_token']}"})
    assert bearer.json() == body
    missing = await world.http.get("/user")
    assert missing.status_code == 401 and missing.json()["error"] == "invalid_token"


async def test_keyrock_user_for_a_client_token(world: World) -> None:
    cid, secret = await world.service_account()
    token = (await world.token({"grant_type": "client_credentials"}, (cid, secret))).json()["access_token"]
    body = (await world.http.get("/user", params={"access_token": token, "app_id": cid})).json()
    assert body["id"] == cid and body["app_id"] == cid and body["type"] == "app" and body["roles"] == []
    assert body["org_kind"] == "vendor" and body["organizations"] == []


async def test_login_page_escapes_and_deny_redirects_access_denied(world: World) -> None:
    params = {"response_type": "code", "client_id": world.app_id, "redirect_uri": world.redirect_uri,
              "code_challenge": "A" * 43, "code_challenge_method": "S256", "state": '"><script>x</script>',
              "scope": "openid"}
    page = await world.http.get("/oauth2/authorize", params=params)
    assert page.status_code == 200 and "<script>x" not in page.text and "&lt;script&gt;" in page.text
    assert page.headers["x-frame-options"] == "DENY" and page.headers["cache-control"] == "no-store"
    assert "Console" in page.text and 'name="totp"' in page.text
    deny = await world.http.post("/oauth2/authorize", data={**params, "consent": "deny"})
    assert deny.status_code == 302
    query = parse_qs(urlsplit(deny.headers["location"]).query)
    assert query["error"] == ["access_denied"] and query["state"] == [params["state"]] and "code" not in query
    wrong = await world.http.post("/oauth2/authorize", data={**params, "consent": "allow", "username": "vera",
                                                            "password": "wrong-wrong-wrong"})
    assert wrong.status_code == 401 and "invalid username or password" in wrong.text


async def test_authorization_errors_are_redirected_with_state_and_iss(world: World) -> None:
    base = {"client_id": world.app_id, "redirect_uri": world.redirect_uri, "state": "abc",
            "code_challenge": "A" * 43, "code_challenge_method": "S256"}
    cases = [({"response_type": "token"}, "unsupported_response_type"),
             ({"response_type": "code", "scope": "firmware:push"}, "invalid_scope")]
    for extra, error in cases:
        response = await world.http.get("/oauth2/authorize", params={**base, **extra})
        assert response.status_code == 302
        query = parse_qs(urlsplit(response.headers["location"]).query)
        assert query == {"error": [error], "error_description": query["error_description"], "state": ["abc"],
                         "iss": [ISSUER]}


async def test_totp_code_cannot_be_replayed(world: World) -> None:
    code = world.totp_code()
    first = await world.service.authenticate_user("admin", world.admin_password, code, None)
    assert "otp" in first.amr
    from sleutelbos.identity.errors import InvalidGrant

    with pytest.raises(InvalidGrant, match="TOTP"):
        await world.service.authenticate_user("admin", world.admin_password, code, None)


async def test_unknown_kid_refreshes_the_jwks_at_most_once_per_interval(world: World) -> None:
    fetches = 0

    async def counting_jwks() -> dict:
        nonlocal fetches
        fetches += 1
        return world.service.jwks()

    verifier = TokenVerifier(issuer=ISSUER, jwks=counting_jwks, feed=None, jwks_min_refresh_s=3600)
    await verifier.start()
    from .test_attacks import valid_token

    _, claims = await valid_token(world)
    from sleutelbos.identity.jose import sign_compact

    from .conftest import AttackerKey

    for version in range(5):
        forged = sign_compact({"typ": "at+jwt"}, claims, AttackerKey("identity-token", 100 + version))
        with pytest.raises(InvalidToken, match="unknown key"):
            await verifier.verify_async(forged)
    assert fetches == 1  # the start-up fetch only: made-up kids cannot make the verifier hammer the issuer
