"""``/v1/...``: the admin REST API for organisations, users, service accounts, applications (OAuth clients),
roles, permissions, role assignments and meters (device clients).

Callers are operator administrators: a Bearer access token of the operator organisation with the ``admin`` role,
obtained with a second factor (``amr`` contains ``otp``). Every change goes through :class:`Directory`, which
writes it to the audit log before it takes effect. JSON in, JSON out; errors use the OAuth error body.
Secrets (client secrets, TOTP secrets) appear once, in the response that created them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from sleutelbos.core.protocols import Actor
from sleutelbos.identity import mfa
from sleutelbos.identity.http import NO_STORE, json_response, oauth_errors, read_json
from sleutelbos.identity.models import ClientType
from sleutelbos.identity.service import IdentityService

_CLIENT_PATHS = {
    "applications": ClientType.APPLICATION,
    "service-accounts": ClientType.SERVICE_ACCOUNT,
    "meters": ClientType.METER,
}

Action = Callable[[Request, Actor], Awaitable[Any]]


def routes(service: IdentityService) -> list[BaseRoute]:
    d = service.directory

    def admin(action: Action, status: int = 200) -> Callable[[Request], Awaitable[Response]]:
        @oauth_errors
        async def endpoint(request: Request) -> Response:
            actor = await service.admin_actor(request.headers.get("authorization"))
            result = await action(request, actor)
            if result is None:
                return Response(status_code=204)
            return json_response(result, status, headers=NO_STORE)

        return endpoint

    def p(request: Request, name: str) -> str:
        return str(request.path_params[name])

    # organisations -----------------------------------------------------------------------------------------
    async def list_orgs(r: Request, a: Actor) -> Any:
        return [o.as_dict() for o in await service.store.list_organisations()]

    async def create_org(r: Request, a: Actor) -> Any:
        return (await d.create_organisation(a, await read_json(r))).as_dict()

    async def get_org(r: Request, a: Actor) -> Any:
        return (await d.organisation(p(r, "org_id"))).as_dict()

    async def patch_org(r: Request, a: Actor) -> Any:
        return (await d.update_organisation(a, p(r, "org_id"), await read_json(r))).as_dict()

    async def disable_org(r: Request, a: Actor) -> Any:
        return (await d.set_organisation_enabled(a, p(r, "org_id"), False)).as_dict()

    async def enable_org(r: Request, a: Actor) -> Any:
        return (await d.set_organisation_enabled(a, p(r, "org_id"), True)).as_dict()

    # users -------------------------------------------------------------------------------------------------
    async def list_users(r: Request, a: Actor) -> Any:
        org = r.query_params.get("organisation_id")
        return [u.as_dict() for u in await service.store.list_users(org)]

    async def create_user(r: Request, a: Actor) -> Any:
        user, secret = await d.create_user(a, await read_json(r))
        body = user.as_dict()
        if secret is not None:
            body["totp_secret"] = secret
            body["totp_uri"] = mfa.provisioning_uri(secret, user.username)
        return body

    async def get_user(r: Request, a: Actor) -> Any:
        user = await d.user(p(r, "user_id"))
        return {**user.as_dict(), "memberships": [
            {"organisation_id": m.organisation_id, "role": m.role} for m in await service.store.memberships_of(user.id)
        ]}

    async def disable_user(r: Request, a: Actor) -> Any:
        return (await d.set_user_enabled(a, p(r, "user_id"), False)).as_dict()

    async def enable_user(r: Request, a: Actor) -> Any:
        return (await d.set_user_enabled(a, p(r, "user_id"), True)).as_dict()

    async def enrol_totp(r: Request, a: Actor) -> Any:
        user = await d.user(p(r, "user_id"))
        secret = await d.enrol_totp(a, user.id)
        return {"totp_secret": secret, "totp_uri": mfa.provisioning_uri(secret, user.username)}

    async def set_password(r: Request, a: Actor) -> Any:
        await d.set_password(a, p(r, "user_id"), (await read_json(r)).get("password"))
        return None

    async def put_membership(r: Request, a: Actor) -> Any:
        m = await d.set_membership(a, p(r, "user_id"), p(r, "org_id"), (await read_json(r)).get("role"))
        return {"user_id": m.user_id, "organisation_id": m.organisation_id, "role": m.role}

    # clients: applications, service accounts, meters -----------------------------------------------------------
    def client_routes(path: str, ctype: ClientType) -> list[BaseRoute]:
        async def list_clients(r: Request, a: Actor) -> Any:
            return [c.as_dict() for c in await service.store.list_clients(ctype)]

        async def create_client(r: Request, a: Actor) -> Any:
            client, secret = await d.create_client(a, ctype, await read_json(r))
            return {**client.as_dict(), "client_secret": secret}

        async def get_client(r: Request, a: Actor) -> Any:
            return (await d.client(p(r, "client_id"), ctype)).as_dict()

        async def disable_client(r: Request, a: Actor) -> Any:
            await d.client(p(r, "client_id"), ctype)
            return (await d.set_client_enabled(a, p(r, "client_id"), False)).as_dict()

        async def enable_client(r: Request, a: Actor) -> Any:
            await d.client(p(r, "client_id"), ctype)
            return (await d.set_client_enabled(a, p(r, "client_id"), True)).as_dict()

        out: list[BaseRoute] = [
            Route(f"/v1/{path}", admin(list_clients), methods=["GET"]),
            Route(f"/v1/{path}", admin(create_client, 201), methods=["POST"]),
            Route(f"/v1/{path}/{{client_id}}", admin(get_client), methods=["GET"]),
            Route(f"/v1/{path}/{{client_id}}/disable", admin(disable_client), methods=["POST"]),
            Route(f"/v1/{path}/{{client_id}}/enable", admin(enable_client), methods=["POST"]),
        ]
        if ctype is ClientType.APPLICATION:
            async def patch_app(r: Request, a: Actor) -> Any:
                return (await d.update_application(a, p(r, "client_id"), await read_json(r))).as_dict()

            out.append(Route(f"/v1/{path}/{{client_id}}", admin(patch_app), methods=["PATCH"]))
        return out

    # roles, permissions, assignments ---------------------------------------------------------------------------
    async def app_id(r: Request) -> str:
        return (await d.client(p(r, "app_id"), ClientType.APPLICATION)).id

    async def list_roles(r: Request, a: Actor) -> Any:
        return [x.as_dict() for x in await service.store.list_roles(await app_id(r))]

    async def create_role(r: Request, a: Actor) -> Any:
        return (await d.create_role(a, p(r, "app_id"), await read_json(r))).as_dict()

    async def delete_role(r: Request, a: Actor) -> Any:
        await d.delete_role(a, p(r, "app_id"), p(r, "role_id"))
        return None

    async def list_permissions(r: Request, a: Actor) -> Any:
        return [x.as_dict() for x in await service.store.list_permissions(await app_id(r))]

    async def create_permission(r: Request, a: Actor) -> Any:
        return (await d.create_permission(a, p(r, "app_id"), await read_json(r))).as_dict()

    async def role_permissions(r: Request, a: Actor) -> Any:
        role = await d.role(p(r, "app_id"), p(r, "role_id"))
        return [x.as_dict() for x in await service.store.permissions_of_role(role.id)]

    async def grant_permission(r: Request, a: Actor) -> Any:
        await d.grant_permission(a, p(r, "app_id"), p(r, "role_id"), p(r, "perm_id"))
        return None

    async def list_assignments(r: Request, a: Actor) -> Any:
        return [x.as_dict() for x in await service.store.list_assignments(await app_id(r))]

    async def assign(r: Request, a: Actor) -> Any:
        return (await d.assign_role(a, p(r, "app_id"), await read_json(r))).as_dict()

    async def unassign(r: Request, a: Actor) -> Any:
        await d.unassign_role(a, p(r, "app_id"), p(r, "assignment_id"))
        return None


    app = "/v1/applications/{app_id}"
    result: list[BaseRoute] = [
        Route("/v1/organisations", admin(list_orgs), methods=["GET"]),
        Route("/v1/organisations", admin(create_org, 201), methods=["POST"]),
        Route("/v1/organisations/{org_id}", admin(get_org), methods=["GET"]),
        Route("/v1/organisations/{org_id}", admin(patch_org), methods=["PATCH"]),
        Route("/v1/organisations/{org_id}/disable", admin(disable_org), methods=["POST"]),
        Route("/v1/organisations/{org_id}/enable", admin(enable_org), methods=["POST"]),
        Route("/v1/users", admin(list_users), methods=["GET"]),
        Route("/v1/users", admin(create_user, 201), methods=["POST"]),
        Route("/v1/users/{user_id}", admin(get_user), methods=["GET"]),
        Route("/v1/users/{user_id}/disable", admin(disable_user), methods=["POST"]),
        Route("/v1/users/{user_id}/enable", admin(enable_user), methods=["POST"]),
        Route("/v1/users/{user_id}/totp", admin(enrol_totp), methods=["POST"]),
        Route("/v1/users/{user_id}/password", admin(set_password), methods=["PUT"]),
        Route("/v1/users/{user_id}/memberships/{org_id}", admin(put_membership), methods=["PUT"]),
        Route(f"{app}/roles", admin(list_roles), methods=["GET"]),
        Route(f"{app}/roles", admin(create_role, 201), methods=["POST"]),
        Route(f"{app}/roles/{{role_id}}", admin(delete_role), methods=["DELETE"]),
        Route(f"{app}/roles/{{role_id}}/permissions", admin(role_permissions), methods=["GET"]),
        Route(f"{app}/roles/{{role_id}}/permissions/{{perm_id}}", admin(grant_permission), methods=["PUT"]),
        Route(f"{app}/permissions", admin(list_permissions), methods=["GET"]),
        Route(f"{app}/permissions", admin(create_permission, 201), methods=["POST"]),
        Route(f"{app}/role-assignments", admin(list_assignments), methods=["GET"]),
        Route(f"{app}/role-assignments", admin(assign, 201), methods=["POST"]),
        Route(f"{app}/role-assignments/{{assignment_id}}", admin(unassign), methods=["DELETE"]),
    ]
    for path, ctype in _CLIENT_PATHS.items():
        result.extend(client_routes(path, ctype))
    return result
