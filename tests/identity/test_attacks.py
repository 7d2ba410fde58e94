"""Bad input and attacks, one test each: every one answered with the standard OAuth error, nothing issued."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import orjson
import pytest
from cryptography.hazmat.primitives import serialization

from sleutelbos.identity.errors import InvalidToken
from sleutelbos.identity.jose import b64url, sign_compact
from sleutelbos.identity.verifier import TokenVerifier

from .conftest import ISSUER, AttackerKey, World, public_key_of


def forge(header: dict, claims: dict, signature: bytes = b"") -> str:
    return f"{b64url(orjson.dumps(header))}.{b64url(orjson.dumps(claims))}.{b64url(signature)}"


async def valid_token(world: World) -> tuple[str, dict]:
    cid, secret = await world.service_account()
    token = (await world.token({"grant_type": "client_credentials"}, (cid, secret))).json()["access_token"]
    claims = world.service.verifier.verify(token)
    return token, claims


def parts(token: str) -> tuple[dict, dict]:
    h, p, _ = token.split(".")
    pad = lambda s: s + "=" * (-len(s) % 4)  # noqa: E731
    return json.loads(base64.urlsafe_b64decode(pad(h))), json.loads(base64.urlsafe_b64decode(pad(p)))


async def assert_refused(world: World, token: str, fragment: str) -> None:
    """Refused by the verifier, by introspection (active false) and by /user (401 invalid_token)."""
    with pytest.raises(InvalidToken, match=fragment):
        await world.service.validate(token)
    intro = await world.http.post("/oauth2/introspect", data={"token": token}, headers=world.basic())
    assert intro.status_code == 200 and intro.json() == {"active": False}
    user = await world.http.get("/user", params={"access_token": token})
    assert user.status_code == 401 and user.json()["error"] == "invalid_token"
    assert user.headers["www-authenticate"] == 'Bearer error="invalid_token"'


async def test_alg_none_is_refused(world: World) -> None:
    token, claims = await valid_token(world)
    header, _ = parts(token)
    await assert_refused(world, forge({**header, "alg": "none"}, claims), "algorithm 'none' refused")
    await assert_refused(world, forge({**header, "alg": "none"}, claims)[:-1] + "", "refused|segments")


async def test_hs256_signed_with_the_public_key_is_refused(world: World) -> None:
    token, claims = await valid_token(world)
    header, _ = parts(token)
    kid = world.signers.signer_for("identity-token").key_id
    pem = public_key_of(world.signers, kid).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    h = {**header, "alg": "HS256"}
    signing_input = f"{b64url(orjson.dumps(h))}.{b64url(orjson.dumps(claims))}"
    mac = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    await assert_refused(world, f"{signing_input}.{b64url(mac)}", "algorithm 'HS256' refused")


async def test_expired_token_is_refused(world: World) -> None:
    signer = world.signers.signer_for("identity-token")
    _, claims = await valid_token(world)
    past = int(time.time()) - 1000
    token = sign_compact({"typ": "at+jwt"}, {**claims, "iat": past, "nbf": past, "exp": past + 600}, signer)
    await assert_refused(world, token, "expired")


async def test_not_yet_valid_token_is_refused(world: World) -> None:
    signer = world.signers.signer_for("identity-token")
    _, claims = await valid_token(world)
    future = int(time.time()) + 300
    token = sign_compact({"typ": "at+jwt"}, {**claims, "nbf": future, "exp": future + 600}, signer)
    await assert_refused(world, token, "not yet valid")
    token2 = sign_compact({"typ": "at+jwt"}, {**claims, "iat": future, "nbf": future - 600}, signer)
    await assert_refused(world, token2, "not yet valid")


async def test_wrong_issuer_is_refused(world: World) -> None:
    signer = world.signers.signer_for("identity-token")
    _, claims = await valid_token(world)
    token = sign_compact({"typ": "at+jwt"}, {**claims, "iss": "https://evil.example"}, signer)
    await assert_refused(world, token, "issuer")


async def test_wrong_audience_is_refused(world: World) -> None:
    token, _ = await valid_token(world)
    with pytest.raises(InvalidToken, match="audience"):
        world.service.verifier.verify(token, audience="https://other-resource.example")
    user = await world.http.get("/user", params={"access_token": token, "app_id": world.app_id})
    assert user.status_code == 401 and "app_id" in user.json()["error_description"]


async def test_unknown_kid_is_refused(world: World) -> None:
    _, claims = await valid_token(world)
    stranger = AttackerKey("identity-token", 99)  # a key custody never issued
    token = sign_compact({"typ": "at+jwt"}, claims, stranger)
    await assert_refused(world, token, "unknown key")


async def test_tampered_payload_is_refused(world: World) -> None:
    token, claims = await valid_token(world)
    h, _, s = token.split(".")
    tampered = f"{h}.{b64url(orjson.dumps({**claims, 'org_kind': 'operator', 'roles': ['admin']}))}.{s}"
    await assert_refused(world, tampered, "signature does not verify")


async def test_wrong_token_type_is_refused(world: World) -> None:
    """An ID token (typ JWT) is not an access token (RFC 9068 §4: typ at+jwt)."""
    signer = world.signers.signer_for("identity-token")
    _, claims = await valid_token(world)
    await assert_refused(world, sign_compact({"typ": "JWT"}, claims, signer), "token type")


async def test_malformed_tokens_are_refused(world: World) -> None:
    for junk, why in [("", "missing"), ("a.b", "three"), ("a.b.c.d", "three"), ("x" * 9000, "8 KiB"),
                      ("!!.??.**", "base64url"), (forge({"alg": "ES256", "kid": "k"}, {}, b"short"), "64 bytes")]:
        with pytest.raises(InvalidToken, match=why):
            world.service.verifier.verify(junk)


async def test_reused_authorization_code_is_refused_and_revokes_what_it_issued(world: World) -> None:
    code, verifier = await world.authorize("vera", world.vendor_password, scope="openid")
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": world.redirect_uri,
            "code_verifier": verifier}
    first = await world.token(form)
    assert first.status_code == 200
    again = await world.token(form)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    assert "access_token" not in again.json()
    with pytest.raises(InvalidToken, match="revoked"):
        await world.service.validate(first.json()["access_token"])
    refresh = await world.token({"grant_type": "refresh_token", "refresh_token": first.json()["refresh_token"]})
    assert refresh.status_code == 400 and refresh.json()["error"] == "invalid_grant"
    assert "identity.code.replay" in world.sink.actions()


async def test_pkce_verifier_mismatch_is_refused(world: World) -> None:
    code, _verifier = await world.authorize("vera", world.vendor_password)
    wrong = "W" * 43
    response = await world.token({"grant_type": "authorization_code", "code": code,
                                  "redirect_uri": world.redirect_uri, "code_verifier": wrong})
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"
    assert "PKCE" in response.json()["error_description"]
    missing = await world.token({"grant_type": "authorization_code", "code": code,
                                 "redirect_uri": world.redirect_uri})
    assert missing.status_code == 400 and missing.json()["error"] == "invalid_grant"  # and the code is spent


async def test_pkce_is_mandatory_and_s256_only(world: World) -> None:
    base = {"response_type": "code", "client_id": world.app_id, "redirect_uri": world.redirect_uri,
            "state": "s"}
    for extra in ({}, {"code_challenge": "A" * 43, "code_challenge_method": "plain"},
                  {"code_challenge": "A" * 43}):
        response = await world.http.get("/oauth2/authorize", params={**base, **extra})
        assert response.status_code == 302
        location = response.headers["location"]
        assert location.startswith(world.redirect_uri + "?") and "error=invalid_request" in location
        assert "code=" not in location and "state=s" in location


async def test_code_bound_to_redirect_uri_and_client(world: World) -> None:
    code, verifier = await world.authorize("vera", world.vendor_password)
    other_id, other_secret = await world.service_account()
    response = await world.token({"grant_type": "authorization_code", "code": code,
                                  "redirect_uri": "https://app.example/other", "code_verifier": verifier})
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"
    code2, verifier2 = await world.authorize("vera", world.vendor_password)
    stolen = await world.http.post("/oauth2/token", data={
        "grant_type": "authorization_code", "code": code2, "redirect_uri": world.redirect_uri,
        "code_verifier": verifier2}, headers=world.basic(other_id, other_secret))
    assert stolen.status_code == 400 and stolen.json()["error"] == "unauthorized_client"


async def test_refresh_replay_after_rotation_revokes_the_whole_family(world: World) -> None:
    code, verifier = await world.authorize("vera", world.vendor_password)
    first = (await world.token({"grant_type": "authorization_code", "code": code,
                                "redirect_uri": world.redirect_uri, "code_verifier": verifier})).json()
    second = (await world.token({"grant_type": "refresh_token", "refresh_token": first["refresh_token"]})).json()
    replay = await world.token({"grant_type": "refresh_token", "refresh_token": first["refresh_token"]})
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    assert "family" in replay.json()["error_description"]
    # the legitimate successor is dead too, and so are the access tokens of the family
    after = await world.token({"grant_type": "refresh_token", "refresh_token": second["refresh_token"]})
    assert after.status_code == 400 and after.json()["error"] == "invalid_grant"
    for access in (first["access_token"], second["access_token"]):
        with pytest.raises(InvalidToken, match="revoked"):
            await world.service.validate(access)
    assert "identity.refresh.replay" in world.sink.actions()


async def test_brute_force_login_locks_out_with_backoff(world: World) -> None:
    """Policy in the fixture: 3 failures → locked 2 s, then 4 s, ... (doubling)."""
    params = {"response_type": "code", "client_id": world.app_id, "redirect_uri": world.redirect_uri,
              "code_challenge": "A" * 43, "code_challenge_method": "S256"}
    for _ in range(3):
        bad = await world.http.post("/oauth2/authorize", data={**params, "username": "vera",
                                                              "password": "wrong-password-1", "consent": "allow"})
        assert bad.status_code == 401
    locked = await world.http.post("/oauth2/authorize", data={**params, "username": "vera",
                                                             "password": world.vendor_password, "consent": "allow"})
    assert locked.status_code == 429 and int(locked.headers["retry-after"]) >= 1
    assert "code=" not in locked.headers.get("location", "")
    assert "identity.login.lockout" in world.sink.actions()
    failures, until = await world.service.store.login_failures("user:vera")
    assert failures == 3 and 1.5 < until - time.time() <= 2.0
    # after the lockout one more failure doubles it
    await world.service.store.set_login_failures("user:vera", 3, time.time() - 1, time.time())
    await world.service.guard.failed("vera", None)
    _, until2 = await world.service.store.login_failures("user:vera")
    assert 3.5 < until2 - time.time() <= 4.0


async def test_brute_force_rate_limit_per_source(world: World) -> None:
    guard = world.service.guard
    for i in range(guard.policy.per_source_limit):
        await guard.failed(f"spray-{i}", "192.0.2.7")
    from sleutelbos.identity.errors import LoginThrottled

    with pytest.raises(LoginThrottled, match="address"):
        await guard.check("someone-else", "192.0.2.7")
    await guard.check("someone-else", "192.0.2.8")


async def test_password_grant_lockout_answers_oauth_error(world: World) -> None:
    from sleutelbos.core.protocols import SYSTEM_ACTOR

    await world.service.directory.update_application(SYSTEM_ACTOR, world.app_id, {"password_grant": True})
    for _ in range(3):
        r = await world.token({"grant_type": "password", "username": "vera", "password": "nope-nope-nope"})
        assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    locked = await world.token({"grant_type": "password", "username": "vera", "password": world.vendor_password})
    assert locked.status_code == 429 and locked.json()["error"] == "invalid_grant"
    assert "access_token" not in locked.json()


async def test_unregistered_redirect_uri_is_not_redirected_to(world: World) -> None:
    params = {"response_type": "code", "client_id": world.app_id, "redirect_uri": "https://evil.example/cb",
              "code_challenge": "A" * 43, "code_challenge_method": "S256", "state": "x"}
    response = await world.http.get("/oauth2/authorize", params=params)
    assert response.status_code == 400 and "location" not in response.headers
    assert "not registered" in response.text
    posted = await world.http.post("/oauth2/authorize", data={**params, "username": "vera",
                                                             "password": world.vendor_password, "consent": "allow"})
    assert posted.status_code == 400 and "location" not in posted.headers
    unknown = await world.http.get("/oauth2/authorize", params={**params, "client_id": "nobody"})
    assert unknown.status_code == 401 and "location" not in unknown.headers


async def test_oversized_and_malformed_token_requests(world: World) -> None:
    huge = await world.http.post("/oauth2/token", content=b"grant_type=client_credentials&x=" + b"a" * 20_000,
                                 headers={**world.basic(), "content-type": "application/x-www-form-urlencoded"})
    assert huge.status_code == 413 and huge.json()["error"] == "invalid_request"
    dup = await world.http.post("/oauth2/token", content=b"grant_type=client_credentials&grant_type=password",
                                headers={**world.basic(), "content-type": "application/x-www-form-urlencoded"})
    assert dup.status_code == 400 and "more than once" in dup.json()["error_description"]
    as_json = await world.http.post("/oauth2/token", json={"grant_type": "client_credentials"},
                                    headers=world.basic())
    assert as_json.status_code == 400 and as_json.json()["error"] == "invalid_request"
    bad_utf8 = await world.http.post("/oauth2/token", content=b"grant_type=\xff\xfe",
                                     headers={**world.basic(), "content-type": "application/x-www-form-urlencoded"})
    assert bad_utf8.status_code == 400 and bad_utf8.json()["error"] == "invalid_request"
    bad_basic = await world.http.post("/oauth2/token", data={"grant_type": "client_credentials"},
                                      headers={"Authorization": "Basic !!!"})
    assert bad_basic.status_code == 401 and bad_basic.json()["error"] == "invalid_client"
    both = await world.http.post("/oauth2/token", data={"grant_type": "client_credentials",
                                                       "client_secret": world.app_secret}, headers=world.basic())
    assert both.status_code == 400 and both.json()["error"] == "invalid_request"
    wrong_secret = await world.token({"grant_type": "client_credentials"}, (world.app_id, "not-the-secret"))
    assert wrong_secret.status_code == 401 and wrong_secret.json()["error"] == "invalid_client"
    get = await world.http.get("/oauth2/token", params={"grant_type": "client_credentials"}, headers=world.basic())
    assert get.status_code == 405 and get.json()["error"] == "invalid_request" and "access_token" not in get.json()
    feed = await world.http.get("/oauth2/revocations", params={"since": "-1"})
    assert feed.status_code == 400 and feed.json()["error"] == "invalid_request"


async def test_verifier_refuses_everything_when_its_feed_is_stale(world: World) -> None:
    token, _ = await valid_token(world)
    verifier = TokenVerifier(issuer=ISSUER, jwks=world.service.jwks_async, feed="http://127.0.0.1:9/feed",
                             max_staleness_s=5.0)
    await verifier.refresh_jwks(force=True)  # keys known, but the feed never answered
    with pytest.raises(InvalidToken, match="stale"):
        verifier.verify(token)


async def test_a_token_verified_before_is_still_checked_for_expiry_and_audience(world: World) -> None:
    """The verifier caches signature results, never claim results."""
    token, claims = await valid_token(world)
    verifier = world.service.verifier
    assert verifier.verify(token)["jti"] == claims["jti"]  # signature verified, now cached
    with pytest.raises(InvalidToken, match="expired"):
        verifier.verify(token, now=claims["exp"] + 1)
    with pytest.raises(InvalidToken, match="audience"):
        verifier.verify(token, audience="https://elsewhere.example")
    returned = verifier.verify(token)
    returned["roles"].append("admin")  # callers get a copy: the cached claims cannot be altered through it
    returned["sub"] = "someone-else"
    again = verifier.verify(token)
    assert again["roles"] == [] and again["sub"] == claims["sub"]


async def test_embedded_keys_in_the_header_are_ignored(world: World) -> None:
    """A forger who signs with their own key and points at it (jwk / jku headers) still hits "unknown key"."""
    _, claims = await valid_token(world)
    forger = AttackerKey("identity-token", 7)
    from sleutelbos.identity.jose import jwk_from_public_key

    token = sign_compact({"typ": "at+jwt", "jwk": jwk_from_public_key(forger.public_key()),
                          "jku": "https://evil.example/jwks.json"}, claims, forger)
    await assert_refused(world, token, "unknown key")
    crit = sign_compact({"typ": "at+jwt", "crit": ["exp"]}, claims, world.signers.signer_for("identity-token"))
    await assert_refused(world, crit, "critical")
