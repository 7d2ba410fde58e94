"""The /v1 admin API: who may call it, every resource, bad input, and write-ahead audit (recorded BEFORE the change
takes effect; a failing audit sink blocks the change)."""

from __future__ import annotations

import pytest

from sleutelbos.core.protocols import SYSTEM_ACTOR

from .conftest import World


@pytest.fixture
async def admin(world: World) -> dict[str, str]:
    return {"Authorization": f"Bearer {await world.admin_token()}"}


async def test_admin_api_is_for_operator_admins_with_a_second_factor(world: World) -> None:
    none = await world.http.get("/v1/organisations")
    assert none.status_code == 401 and none.json()["error"] == "invalid_token"
    code, verifier = await world.authorize("vera", world.vendor_password)
    vendor = (await world.token({"grant_type": "authorization_code", "code": code,
                                 "redirect_uri": world.redirect_uri, "code_verifier": verifier})).json()
    refused = await world.http.get("/v1/organisations",
                                   headers={"Authorization": f"Bearer {vendor['access_token']}"})
    assert refused.status_code == 403 and refused.json()["error"] == "insufficient_scope"
    await world.service.directory.create_user(SYSTEM_ACTOR, {
        "organisation_id": world.operator_id, "username": "olaf", "email": "olaf@op.example",
        "password": "operator-member-1", "role": "member"})
    code, verifier = await world.authorize("olaf", "operator-member-1")
    member = (await world.token({"grant_type": "authorization_code", "code": code,
                                 "redirect_uri": world.redirect_uri, "code_verifier": verifier})).json()
    refused2 = await world.http.get("/v1/organisations",
                                    headers={"Authorization": f"Bearer {member['access_token']}"})
    assert refused2.status_code == 403
    # an application role that happens to be called "admin" does not make an operator administrator
    d = world.service.directory
    role = await d.create_role(SYSTEM_ACTOR, world.app_id, {"name": "admin"})
    olaf = await world.service.store.get_user_by_username("olaf")
    await d.enrol_totp(SYSTEM_ACTOR, olaf.id)
    olaf = await world.service.store.get_user_by_username("olaf")
    await d.assign_role(SYSTEM_ACTOR, world.app_id, {"role_id": role.id, "principal_type": "user",
                                                      "principal_id": olaf.id})
    code, verifier = await world.authorize("olaf", "operator-member-1", world.totp_code(olaf.totp_secret))
    app_admin = (await world.token({"grant_type": "authorization_code", "code": code,
                                    "redirect_uri": world.redirect_uri, "code_verifier": verifier})).json()
    claims = await world.service.validate(app_admin["access_token"])
    assert claims["roles"] == ["admin"] and claims["org_role"] == "member" and "otp" in claims["amr"]
    refused3 = await world.http.get("/v1/organisations",
                                    headers={"Authorization": f"Bearer {app_admin['access_token']}"})
    assert refused3.status_code == 403 and refused3.json()["error"] == "insufficient_scope"
    ok = await world.http.get("/v1/organisations",
                              headers={"Authorization": f"Bearer {await world.admin_token()}"})
    assert ok.status_code == 200 and {o["kind"] for o in ok.json()} == {"operator", "vendor"}


async def test_organisations_with_vendor_tender_facts(world: World, admin: dict[str, str]) -> None:
    body = {"name": "Zhongmeter", "kind": "vendor", "country": "NL", "establishment_country": "cn",
            "assembly_country": "CN", "ubo_countries": ["CN", "HK"]}

    async def before(event):  # write-ahead: at record time the organisation does not exist yet
        return await world.service.store.find_organisation("Zhongmeter")

    world.sink.probe = before
    created = await world.http.post("/v1/organisations", json=body, headers=admin)
    world.sink.probe = None
    assert created.status_code == 201, created.text
    org = created.json()
    assert org["establishment_country"] == "CN" and org["ubo_countries"] == ["CN", "HK"] and org["enabled"]
    event = world.sink.events[-1]
    assert event.action == "identity.org.create" and event.target == org["id"] and world.sink.probed == [None]
    assert event.actor.principal.startswith("user:") and event.actor.kind == "operator"
    assert event.details["ubo_countries"] == ["CN", "HK"]

    fetched = await world.http.get(f"/v1/organisations/{org['id']}", headers=admin)
    assert fetched.json() == org
    patched = await world.http.patch(f"/v1/organisations/{org['id']}", json={"ubo_countries": ["DE"]},
                                     headers=admin)
    assert patched.status_code == 200 and patched.json()["ubo_countries"] == ["DE"]
    assert world.sink.events[-1].details["before"]["ubo_countries"] == ["CN", "HK"]

    disabled = await world.http.post(f"/v1/organisations/{org['id']}/disable", headers=admin)
    assert disabled.status_code == 200 and disabled.json()["enabled"] is False
    assert world.sink.events[-1].action == "identity.org.disable"


@pytest.mark.parametrize(("body", "fragment"), [
    ({"name": "X", "kind": "manufacturer", "country": "NL"}, "kind must be one of"),
    ({"name": "X", "kind": "supplier", "country": "XX"}, "ISO 3166-1"),
    ({"name": "X", "kind": "supplier", "country": "NL", "assembly_country": "CN"}, "vendors only"),
    ({"name": "X", "kind": "vendor", "country": "NL", "ubo_countries": "CN"}, "ubo_countries"),
    ({"name": "", "kind": "vendor", "country": "NL"}, "name"),
    ({"name": "Meterco", "kind": "vendor", "country": "NL"}, "already exists"),
])
async def test_bad_organisations_are_refused_and_nothing_changes(
    world: World, admin: dict[str, str], body: dict, fragment: str,
) -> None:
    before = await world.service.store.list_organisations()
    events = len(world.sink.events)
    response = await world.http.post("/v1/organisations", json=body, headers=admin)
    assert response.status_code in (400, 409) and fragment in response.json()["error_description"]
    assert response.json()["error"] in ("invalid_request", "conflict")
    assert await world.service.store.list_organisations() == before and len(world.sink.events) == events


async def test_failing_audit_sink_blocks_every_change(world: World, admin: dict[str, str]) -> None:
    world.sink.failing = True
    response = await world.http.post("/v1/organisations", json={"name": "Ghost", "kind": "supplier",
                                                                "country": "BE"}, headers=admin)
    assert response.status_code == 503 and response.json()["error"] == "server_error"
    assert await world.service.store.find_organisation("Ghost") is None
    disable = await world.http.post(f"/v1/organisations/{world.vendor_id}/disable", headers=admin)
    assert disable.status_code == 503
    assert (await world.service.store.get_organisation(world.vendor_id)).enabled is True
    cursor = (await world.service.feed.since(0)).cursor
    svc = await world.http.post("/v1/service-accounts", json={"organisation_id": world.vendor_id,
                                                              "name": "ghost"}, headers=admin)
    assert svc.status_code == 503 and "client_secret" not in svc.json()
    assert not [c for c in await world.service.store.list_clients() if c.name == "ghost"]
    assert (await world.service.feed.since(0)).cursor == cursor


async def test_malformed_admin_requests(world: World, admin: dict[str, str]) -> None:
    bad_json = await world.http.post("/v1/organisations", content=b"{not json",
                                     headers={**admin, "content-type": "application/json"})
    assert bad_json.status_code == 400 and bad_json.json()["error"] == "invalid_request"
    array = await world.http.post("/v1/organisations", json=[1, 2], headers=admin)
    assert array.status_code == 400 and "JSON object" in array.json()["error_description"]
    form = await world.http.post("/v1/organisations", data={"name": "x"}, headers=admin)
    assert form.status_code == 400 and "application/json" in form.json()["error_description"]
    huge = await world.http.post("/v1/organisations", content=b'{"name": "' + b"a" * 70_000 + b'"}',
                                 headers={**admin, "content-type": "application/json"})
    assert huge.status_code == 413
    missing = await world.http.get("/v1/organisations/does-not-exist", headers=admin)
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"


async def test_users_memberships_and_mfa_roles(world: World, admin: dict[str, str]) -> None:
    created = await world.http.post("/v1/users", json={
        "organisation_id": world.operator_id, "username": "annie", "email": "annie@op.example",
        "password": "approver-pass-1", "role": "approver"}, headers=admin)
    assert created.status_code == 201
    annie = created.json()
    assert annie["totp_enrolled"] is True and len(annie["totp_secret"]) == 32
    assert annie["totp_uri"].startswith("otpauth://totp/")
    assert "password_hash" not in annie and "password" not in annie
    plain = await world.http.post("/v1/users", json={
        "organisation_id": world.operator_id, "username": "bob", "email": "bob@op.example",
        "password": "member-pass-123", "role": "member"}, headers=admin)
    bob = plain.json()
    assert "totp_secret" not in bob
    promote = await world.http.put(f"/v1/users/{bob['id']}/memberships/{world.operator_id}",
                                   json={"role": "breakglass-officer"}, headers=admin)
    assert promote.status_code == 409 and "TOTP" in promote.json()["error_description"]
    enrol = await world.http.post(f"/v1/users/{bob['id']}/totp", headers=admin)
    assert enrol.status_code == 200 and enrol.json()["totp_secret"]
    promote2 = await world.http.put(f"/v1/users/{bob['id']}/memberships/{world.operator_id}",
                                    json={"role": "breakglass-officer"}, headers=admin)
    assert promote2.status_code == 200
    detail = (await world.http.get(f"/v1/users/{bob['id']}", headers=admin)).json()
    assert detail["memberships"] == [{"organisation_id": world.operator_id, "role": "breakglass-officer"}]
    # bob now needs his second factor to log in
    from sleutelbos.identity.errors import InvalidGrant

    with pytest.raises(InvalidGrant, match="TOTP"):
        await world.service.authenticate_user("bob", "member-pass-123", None, None)
    short = await world.http.post("/v1/users", json={
        "organisation_id": world.operator_id, "username": "carl", "email": "carl@op.example",
        "password": "short", "role": "member"}, headers=admin)
    assert short.status_code == 400 and "password" in short.json()["error_description"]
    disabled = await world.http.post(f"/v1/users/{bob['id']}/disable", headers=admin)
    assert disabled.json()["enabled"] is False
    actions = world.sink.actions()
    for action in ("identity.user.create", "identity.user.totp.enrol", "identity.membership.set",
                   "identity.user.disable"):
        assert action in actions


async def test_password_change_revokes_earlier_tokens(world: World, admin: dict[str, str]) -> None:
    code, verifier = await world.authorize("vera", world.vendor_password)
    token = (await world.token({"grant_type": "authorization_code", "code": code,
                                "redirect_uri": world.redirect_uri, "code_verifier": verifier})).json()
    changed = await world.http.put(f"/v1/users/{world.vendor_user_id}/password",
                                   json={"password": "a-brand-new-password"}, headers=admin)
    assert changed.status_code == 204
    from sleutelbos.identity.errors import InvalidToken

    with pytest.raises(InvalidToken, match="revoked"):
        await world.service.validate(token["access_token"])


async def test_applications_roles_permissions_assignments(world: World, admin: dict[str, str]) -> None:
    app = await world.http.post("/v1/applications", json={
        "organisation_id": world.operator_id, "name": "Grid portal", "redirect_uris": ["https://portal.example/cb"],
        "scope": "openid readings:read"}, headers=admin)
    assert app.status_code == 201
    app_body = app.json()
    assert app_body["client_secret"] and app_body["grant_types"] == ["authorization_code", "refresh_token"]
    app_id = app_body["client_id"]
    fetched = (await world.http.get(f"/v1/applications/{app_id}", headers=admin)).json()
    assert "client_secret" not in fetched  # shown once
    insecure = await world.http.post("/v1/applications", json={
        "organisation_id": world.operator_id, "name": "Bad", "redirect_uris": ["http://evil.example/cb"]},
        headers=admin)
    assert insecure.status_code == 400 and "https" in insecure.json()["error_description"]
    patched = await world.http.patch(f"/v1/applications/{app_id}", json={"password_grant": True}, headers=admin)
    assert "password" in patched.json()["grant_types"]

    role = (await world.http.post(f"/v1/applications/{app_id}/roles", json={"name": "reader"},
                                  headers=admin)).json()
    perm = (await world.http.post(f"/v1/applications/{app_id}/permissions", json={
        "name": "read readings", "action": "get", "resource": "/ngsi-ld/v1/entities?type=Reading"},
        headers=admin)).json()
    assert perm["action"] == "GET"
    grant = await world.http.put(f"/v1/applications/{app_id}/roles/{role['id']}/permissions/{perm['id']}",
                                 headers=admin)
    assert grant.status_code == 204
    perms = (await world.http.get(f"/v1/applications/{app_id}/roles/{role['id']}/permissions",
                                  headers=admin)).json()
    assert [p["id"] for p in perms] == [perm["id"]]
    assignment = await world.http.post(f"/v1/applications/{app_id}/role-assignments", json={
        "role_id": role["id"], "principal_type": "user", "principal_id": world.vendor_user_id}, headers=admin)
    assert assignment.status_code == 201
    again = await world.http.post(f"/v1/applications/{app_id}/role-assignments", json={
        "role_id": role["id"], "principal_type": "user", "principal_id": world.vendor_user_id}, headers=admin)
    assert again.status_code == 409
    ghost = await world.http.post(f"/v1/applications/{app_id}/role-assignments", json={
        "role_id": role["id"], "principal_type": "user", "principal_id": "nobody"}, headers=admin)
    assert ghost.status_code == 404
    listed = (await world.http.get(f"/v1/applications/{app_id}/role-assignments", headers=admin)).json()
    assert [a["principal_id"] for a in listed] == [world.vendor_user_id]
    removed = await world.http.delete(f"/v1/applications/{app_id}/role-assignments/{assignment.json()['id']}",
                                      headers=admin)
    assert removed.status_code == 204
    assert (await world.http.get(f"/v1/applications/{app_id}/role-assignments", headers=admin)).json() == []
    deleted = await world.http.delete(f"/v1/applications/{app_id}/roles/{role['id']}", headers=admin)
    assert deleted.status_code == 204
    for action in ("identity.application.create", "identity.application.update", "identity.role.create",
                   "identity.permission.create", "identity.role.permission.grant", "identity.role.assign",
                   "identity.role.unassign", "identity.role.delete"):
        assert action in world.sink.actions()


async def test_service_accounts_and_meters(world: World, admin: dict[str, str]) -> None:
    svc = await world.http.post("/v1/service-accounts", json={
        "organisation_id": world.vendor_id, "name": "telemetry", "scope": "readings:read"}, headers=admin)
    assert svc.status_code == 201 and svc.json()["grant_types"] == ["client_credentials"]
    token = await world.token({"grant_type": "client_credentials"}, (svc.json()["client_id"],
                                                                      svc.json()["client_secret"]))
    assert token.status_code == 200
    with_redirect = await world.http.post("/v1/service-accounts", json={
        "organisation_id": world.vendor_id, "name": "x", "redirect_uris": ["https://a.example/cb"]}, headers=admin)
    assert with_redirect.status_code == 400
    meter = await world.http.post("/v1/meters", json={
        "organisation_id": world.operator_id, "name": "E0025-42", "serial_number": "E0025-42"}, headers=admin)
    assert meter.status_code == 201 and meter.json()["client_type"] == "meter"
    no_serial = await world.http.post("/v1/meters", json={"organisation_id": world.operator_id, "name": "m"},
                                      headers=admin)
    assert no_serial.status_code == 400 and "serial_number" in no_serial.json()["error_description"]
    meters = (await world.http.get("/v1/meters", headers=admin)).json()
    assert [m["serial_number"] for m in meters] == ["E0025-42"]
    wrong_kind = await world.http.get(f"/v1/meters/{svc.json()['client_id']}", headers=admin)
    assert wrong_kind.status_code == 404
    disabled = await world.http.post(f"/v1/meters/{meter.json()['client_id']}/disable", headers=admin)
    assert disabled.json()["enabled"] is False and world.sink.events[-1].action == "identity.meter.disable"


async def test_a_demoted_admin_loses_the_admin_api_at_once(world: World, admin: dict[str, str]) -> None:
    assert (await world.http.get("/v1/organisations", headers=admin)).status_code == 200
    user = await world.service.store.get_user_by_username("admin")
    await world.service.directory.set_membership(SYSTEM_ACTOR, user.id, world.operator_id, "member")
    refused = await world.http.get("/v1/organisations", headers=admin)  # same, unexpired token
    assert refused.status_code == 403 and refused.json()["error"] == "insufficient_scope"


async def test_each_change_is_in_the_audit_log_before_it_takes_effect(world: World) -> None:
    """For several kinds of change: at the moment the sink records, the store still shows the old state."""
    d, store = world.service.directory, world.service.store
    role = await d.create_role(SYSTEM_ACTOR, world.app_id, {"name": "probe-role"})
    cases = [
        ("identity.user.disable", lambda: store.get_user(world.vendor_user_id),
         lambda: d.set_user_enabled(SYSTEM_ACTOR, world.vendor_user_id, False), lambda u: u.enabled),
        ("identity.role.assign", lambda: store.list_assignments(world.app_id),
         lambda: d.assign_role(SYSTEM_ACTOR, world.app_id, {"role_id": role.id, "principal_type": "organisation",
                                                             "principal_id": world.vendor_id}), lambda a: a == []),
        ("identity.service.create", lambda: store.list_clients(),
         lambda: world.service.create_client_for(world.vendor_id, "probe-svc", ""),
         lambda clients: "probe-svc" not in [c.name for c in clients]),
        ("identity.user.password.set", lambda: store.get_user(world.vendor_user_id),
         lambda: d.set_password(SYSTEM_ACTOR, world.vendor_user_id, "another-password-1"),
         lambda u: world.service.passwords.verify(u.password_hash, world.vendor_password)),
        ("identity.role.delete", lambda: store.get_role(role.id),
         lambda: d.delete_role(SYSTEM_ACTOR, world.app_id, role.id), lambda r: r is not None),
    ]
    for action, read_state, change, still_old in cases:
        world.sink.probe = lambda _event, read=read_state: read()
        world.sink.probed.clear()
        await change()
        assert world.sink.events[-1].action == action
        assert still_old(world.sink.probed[-1]), action  # recorded while the old state was still in force
        assert not still_old(await read_state()), action  # and the change happened afterwards
