"""The identity manager's public HTTP routes (Starlette, thin: parse, call the service, map typed errors).

``/oauth2/authorize`` (GET: login/consent page; POST: login, then 302 to the client), ``/oauth2/token``,
``/oauth2/introspect`` (RFC 7662), ``/oauth2/revoke`` (RFC 7009), ``/oauth2/userinfo`` (OIDC §5.3),
``/oauth2/revocations`` (the revocation feed), ``/.well-known/openid-configuration``,
``/.well-known/oauth-authorization-server`` (RFC 8414), ``/.well-known/jwks.json`` (RFC 7517), ``/user``
(Keyrock-compatible), and the admin API's ``/v1/...`` (``admin_api``).
"""

from __future__ import annotations

import base64
import binascii
from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from sleutelbos.identity import admin_api
from sleutelbos.identity.errors import (
    AccessDenied,
    IdentityError,
    InvalidClient,
    InvalidRequest,
    InvalidToken,
    LoginThrottled,
    MethodNotAllowed,
)
from sleutelbos.identity.http import NO_STORE, json_response, oauth_errors, query_params, read_form
from sleutelbos.identity.keyrock import KeyrockUserInfo
from sleutelbos.identity.login_page import error_page, login_page
from sleutelbos.identity.models import Client
from sleutelbos.identity.oauth2 import rfc7009, rfc7662
from sleutelbos.identity.oauth2.rfc6749 import authorization, grants
from sleutelbos.identity.oauth2.rfc8414 import authorization_server_metadata, openid_configuration
from sleutelbos.identity.oidc import userinfo
from sleutelbos.identity.service import IdentityService


def _source(request: Request) -> str | None:
    return request.client.host if request.client else None


async def _client_from(request: Request, form: dict[str, str], service: IdentityService) -> Client:
    """RFC 6749 §2.3.1: HTTP Basic (form-urlencoded id and secret) or the body; never both (§2.3)."""
    header = request.headers.get("authorization")
    if header is not None:
        if "client_secret" in form:
            raise InvalidRequest("use one client authentication method, not both")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            raise InvalidClient("unsupported client authentication scheme")
        try:
            client_id, sep, secret = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise InvalidClient("malformed Basic credentials") from exc
        if not sep:
            raise InvalidClient("malformed Basic credentials")
        client_id, secret = unquote(client_id), unquote(secret)
        if form.get("client_id") not in (None, client_id):
            raise InvalidRequest("client_id in the body differs from the authenticated client")
        return await service.authenticate_client(client_id, secret)
    return await service.authenticate_client(form.get("client_id"), form.get("client_secret"))


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    if not header.startswith("Bearer "):
        raise InvalidToken("a Bearer access token is required")
    return header[7:].strip()


def routes(service: IdentityService) -> list[BaseRoute]:
    keyrock = KeyrockUserInfo(service)
    issuer = service.config.issuer
    as_metadata = authorization_server_metadata(issuer)
    oidc_metadata = openid_configuration(issuer)

    async def authorize_get(request: Request) -> Response:
        try:
            params = query_params(request)
            req = await authorization.validate(service, params)
        except authorization.RedirectableError as exc:
            return RedirectResponse(exc.location, status_code=302, headers=NO_STORE)
        except IdentityError as exc:
            return error_page(exc.error, exc.detail, exc.status)
        return login_page(req.client.name, req.scope, req.as_form())

    async def authorize_post(request: Request) -> Response:
        try:
            form = await read_form(request)
            req = await authorization.validate(service, form)
        except authorization.RedirectableError as exc:
            return RedirectResponse(exc.location, status_code=302, headers=NO_STORE)
        except IdentityError as exc:
            return error_page(exc.error, exc.detail, exc.status)
        if form.get("consent") != "allow":
            location = authorization.denied(service, req, AccessDenied("the user refused"))
            return RedirectResponse(location, status_code=302, headers=NO_STORE)
        try:
            auth = await service.authenticate_user(form.get("username"), form.get("password"), form.get("totp"),
                                                   _source(request))
            location = await authorization.approve(service, req, auth)
        except LoginThrottled as exc:
            response = login_page(req.client.name, req.scope, req.as_form(), exc.detail, 429)
            response.headers["Retry-After"] = str(exc.retry_after)
            return response
        except AccessDenied as exc:
            return RedirectResponse(authorization.denied(service, req, exc), status_code=302, headers=NO_STORE)
        except IdentityError as exc:
            return login_page(req.client.name, req.scope, req.as_form(), exc.detail, 401)
        return RedirectResponse(location, status_code=302, headers=NO_STORE)

    @oauth_errors
    async def token(request: Request) -> Response:
        form = await read_form(request)
        client = await _client_from(request, form, service)
        body = await grants.token(service, client, form, _source(request))
        return json_response(body, headers=NO_STORE)

    @oauth_errors
    async def introspect(request: Request) -> Response:
        form = await read_form(request)
        client = await _client_from(request, form, service)
        body = await rfc7662.introspect(service, client, form.get("token"), form.get("token_type_hint"))
        return json_response(body, headers=NO_STORE)

    @oauth_errors
    async def revoke(request: Request) -> Response:
        form = await read_form(request)
        client = await _client_from(request, form, service)
        await rfc7009.revoke(service, client, form.get("token"), form.get("token_type_hint"))
        return Response(status_code=200, headers=NO_STORE)

    @oauth_errors
    async def userinfo_endpoint(request: Request) -> Response:
        claims = await service.validate(_bearer(request))
        return json_response(await userinfo(service, claims), headers=NO_STORE)

    @oauth_errors
    async def revocations(request: Request) -> Response:
        params = query_params(request)
        since = params.get("since", "0")
        if not since.isdigit() or len(since) > 18:
            raise InvalidRequest("since must be a non-negative integer cursor")
        limit = params.get("limit", "1000")
        if not limit.isdigit() or not 1 <= int(limit) <= 1000:
            raise InvalidRequest("limit must be 1-1000")
        page = await service.feed.since(int(since), int(limit))
        return json_response(page.as_dict(), headers={"Cache-Control": "no-store"})

    @oauth_errors
    async def keyrock_user(request: Request) -> Response:
        params = query_params(request)
        token_value = params.get("access_token")
        if token_value is None and request.headers.get("authorization", "").startswith("Bearer "):
            token_value = _bearer(request)
        body = await keyrock.user(token_value, params.get("app_id"))
        return json_response(body, headers=NO_STORE)

    @oauth_errors
    async def jwks(request: Request) -> Response:
        return json_response(service.jwks(), headers={"Cache-Control": "public, max-age=60"})

    async def openid(request: Request) -> Response:
        return json_response(oidc_metadata)

    async def oauth_metadata(request: Request) -> Response:
        return json_response(as_metadata)

    @oauth_errors
    async def post_only(request: Request) -> Response:
        raise MethodNotAllowed(f"{request.method} is not allowed here: use POST (RFC 6749 §3.2)")

    others = ["GET", "PUT", "PATCH", "DELETE"]
    return [
        Route("/oauth2/authorize", authorize_get, methods=["GET"]),
        Route("/oauth2/authorize", authorize_post, methods=["POST"]),
        Route("/oauth2/token", token, methods=["POST"]),
        Route("/oauth2/introspect", introspect, methods=["POST"]),
        Route("/oauth2/revoke", revoke, methods=["POST"]),
        *(Route(path, post_only, methods=others) for path in ("/oauth2/token", "/oauth2/introspect",
                                                               "/oauth2/revoke")),
        Route("/oauth2/userinfo", userinfo_endpoint, methods=["GET", "POST"]),
        Route("/oauth2/revocations", revocations, methods=["GET"]),
        Route("/.well-known/openid-configuration", openid, methods=["GET"]),
        Route("/.well-known/oauth-authorization-server", oauth_metadata, methods=["GET"]),
        Route("/.well-known/jwks.json", jwks, methods=["GET"]),
        Route("/user", keyrock_user, methods=["GET"]),
        *admin_api.routes(service),
    ]
