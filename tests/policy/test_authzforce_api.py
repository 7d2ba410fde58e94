"""The AuthZForce-compatible REST API end to end, as Keyrock and Wilma use it, on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from lxml import etree
from pap_support import RecordingAuditSink, action_request_json, action_request_xml, simple_policy
from starlette.testclient import TestClient

from sleutelbos.core.settings import Settings
from sleutelbos.policy.rbac import Permission, keyrock_policy_set, wilma_request_json, wilma_request_xml
from sleutelbos.policy.serving import create_app, with_decision_fast_path
from sleutelbos.stack import StackContext, build_app

AZ = "http://authzforce.github.io/rest-api-model/xmlns/authz/5"
ATOM = "http://www.w3.org/2005/Atom"
NS = {"az": AZ, "atom": ATOM, "x": "urn:oasis:names:tc:xacml:3.0:core:schema:wd-17"}
XML = {"Content-Type": "application/xml;charset=UTF-8"}
BASE = "/authzforce-ce/domains"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'policy.sqlite'}"
    return request.getfixturevalue("pg_database_url")


@pytest.fixture
def audit() -> RecordingAuditSink:
    return RecordingAuditSink()


@pytest.fixture(params=["stack", "serve-policy"])
def client(request: pytest.FixtureRequest, database_url: str, tmp_path: Path,
           audit: RecordingAuditSink) -> Iterator[TestClient]:
    """The API as the whole stack serves it (Starlette routes only) and as ``sleutelbos serve policy`` does
    (decisions answered by the fast path before the router)."""
    settings = Settings(data_dir=tmp_path, policy_database_url=database_url, max_body_bytes=200_000)
    ctx = StackContext(settings=settings, audit_sink=audit)
    app = build_app(ctx, expose=("policy",))
    with TestClient(with_decision_fast_path(app, ctx) if request.param == "serve-policy" else app) as client:
        yield client


def xml(response) -> etree._Element:  # type: ignore[no-untyped-def]
    return etree.fromstring(response.content)


def hrefs(response) -> list[str]:  # type: ignore[no-untyped-def]
    return [link.get("href") for link in xml(response).iter(f"{{{ATOM}}}link")]


def decision(response) -> str:  # type: ignore[no-untyped-def]
    if response.headers["content-type"].startswith("application/xacml+json"):
        return response.json()["Response"][0]["Decision"]
    return xml(response).findtext("x:Result/x:Decision", namespaces=NS)


def new_domain(client: TestClient, external_id: str) -> str:
    body = f'<domainProperties xmlns="{AZ}" externalId="{external_id}"/>'.encode()
    response = client.post(BASE, content=body, headers=XML)
    assert response.status_code == 200, response.text
    return hrefs(response)[0]


KEYROCK_ROLES = {
    "role-admin": [Permission("perm-1", "GET", "/v2/entities"), Permission("perm-2", "POST", "/v2/entities"),
                   Permission("perm-3", "DELETE", "^/v2/entities/[^/]+$", is_regex=True)],
    "role-reader": [Permission("perm-4", "GET", "/v2/entities")],
}


def test_keyrock_and_wilma_round_trip(client: TestClient, audit: RecordingAuditSink) -> None:
    app_id = "5d0e7ca6-keyrock-app"
    # Keyrock: a domain per application, found again by its externalId
    domain = new_domain(client, app_id)
    assert hrefs(client.get(BASE, params={"externalId": app_id})) == [domain]
    assert hrefs(client.get(BASE, params={"externalId": "someone-else"})) == []
    described = xml(client.get(f"{BASE}/{domain}"))
    assert described.find("az:properties", NS).get("externalId") == app_id
    assert "/pdp" in [link.get("href") for link in described.iter(f"{{{ATOM}}}link")]

    # Keyrock: post the application's policy set, then make it the root
    posted = client.post(f"{BASE}/{domain}/pap/policies", content=keyrock_policy_set(app_id, KEYROCK_ROLES, "1"),
                         headers=XML)
    assert posted.status_code == 200, posted.text
    assert hrefs(posted) == [f"{app_id}/1"]
    root = f'<pdpPropertiesUpdate xmlns="{AZ}"><rootPolicyRefExpression>{app_id}</rootPolicyRefExpression>' \
           "</pdpPropertiesUpdate>"
    properties = client.put(f"{BASE}/{domain}/pap/pdp.properties", content=root.encode(), headers=XML)
    assert properties.status_code == 200, properties.text
    applicable = xml(properties).find("az:applicablePolicies/az:rootPolicyRef", NS)
    assert (applicable.text, applicable.get("Version")) == (app_id, "1")

    # Wilma: one request per call, in XML or in the JSON Profile
    def ask(roles: list[str], path: str, verb: str, form: str = "xml") -> str:
        if form == "xml":
            response = client.post(f"{BASE}/{domain}/pdp", content=wilma_request_xml(app_id, roles, path, verb),
                                   headers={"Content-Type": "application/xacml+xml"})
            assert response.headers["content-type"].startswith("application/xacml+xml")
        else:
            response = client.post(f"{BASE}/{domain}/pdp", content=wilma_request_json(app_id, roles, path, verb),
                                   headers={"Content-Type": "application/xacml+json"})
            assert response.headers["content-type"].startswith("application/xacml+json")
        assert response.status_code == 200, response.text
        return decision(response)

    for form in ("xml", "json"):
        assert ask(["role-reader"], "/v2/entities", "GET", form) == "Permit"
        assert ask(["role-reader"], "/v2/entities", "POST", form) == "NotApplicable"
        assert ask(["role-reader", "role-admin"], "/v2/entities", "POST", form) == "Permit"
        assert ask(["role-admin"], "/v2/entities/urn:ngsi-ld:Meter:1", "DELETE", form) == "Permit"
        assert ask(["role-admin"], "/v2/entities/a/attrs", "DELETE", form) == "NotApplicable"
        assert ask([], "/v2/entities", "GET", form) == "NotApplicable"

    # a second version replaces the first as root (the root follows the latest version)
    reduced = {"role-reader": KEYROCK_ROLES["role-reader"]}
    assert client.post(f"{BASE}/{domain}/pap/policies", content=keyrock_policy_set(app_id, reduced, "2"),
                       headers=XML).status_code == 200
    assert ask(["role-admin"], "/v2/entities", "POST") == "NotApplicable"
    assert hrefs(client.get(f"{BASE}/{domain}/pap/policies/{app_id}")) == ["2", "1"]
    assert sorted(hrefs(client.get(f"{BASE}/{domain}/pap/policies"))) == sorted([app_id, "root"])
    assert client.get(f"{BASE}/{domain}/pap/policies/{app_id}/1").content == keyrock_policy_set(
        app_id, KEYROCK_ROLES, "1")
    assert b'Version="2"' in client.get(f"{BASE}/{domain}/pap/policies/{app_id}/latest").content

    assert audit.actions() == ["policy.domain.create", "policy.version.add", "policy.root.set", "policy.version.add"]


def test_invalid_policies_are_rejected_with_400_and_not_stored(client: TestClient,
                                                               audit: RecordingAuditSink) -> None:
    domain = new_domain(client, "app")
    bad_function = simple_policy("p").replace(b"string-equal", b"string-eqaul")
    bad_version = simple_policy("p").replace(b'Version="1.0"', b'Version="x"')
    for body in (bad_function, b"<Policy", b"<Nonsense/>", bad_version):
        response = client.post(f"{BASE}/{domain}/pap/policies", content=body, headers=XML)
        assert response.status_code == 400, body
        assert xml(response).tag == f"{{{AZ}}}error" and xml(response).findtext("az:message", namespaces=NS)
    assert "string-eqaul" in client.post(f"{BASE}/{domain}/pap/policies", content=bad_function,
                                          headers=XML).text
    assert hrefs(client.get(f"{BASE}/{domain}/pap/policies")) == ["root"]
    assert client.get(f"{BASE}/{domain}/pap/policies/p").status_code == 404
    assert audit.actions() == ["policy.domain.create"]


def test_policies_as_root_and_their_removal(client: TestClient) -> None:
    domain = new_domain(client, "app")
    assert client.post(f"{BASE}/{domain}/pap/policies", content=simple_policy("p", "1.0", "Permit"),
                       headers=XML).status_code == 200
    assert client.post(f"{BASE}/{domain}/pap/policies", content=simple_policy("p", "1.0", "Deny"),
                       headers=XML).status_code == 409
    pinned = f'<pdpPropertiesUpdate xmlns="{AZ}"><rootPolicyRefExpression Version="1.0">p' \
             "</rootPolicyRefExpression></pdpPropertiesUpdate>"
    assert client.put(f"{BASE}/{domain}/pap/pdp.properties", content=pinned.encode(), headers=XML).status_code == 200
    shown = xml(client.get(f"{BASE}/{domain}/pap/pdp.properties"))
    assert shown.find("az:rootPolicyRefExpression", NS).get("Version") == "1.0"
    ask = client.post(f"{BASE}/{domain}/pdp", content=action_request_xml("read"), headers=XML)
    assert decision(ask) == "Permit" and ask.headers["content-type"].startswith("application/xml")
    assert client.delete(f"{BASE}/{domain}/pap/policies/p/1.0").status_code == 409  # the root needs it
    assert client.delete(f"{BASE}/{domain}/pap/policies/root").status_code == 200
    assert hrefs(client.get(f"{BASE}/{domain}/pap/policies")) == ["p"]
    unknown_root = pinned.replace(">p<", ">nothing<")
    assert client.put(f"{BASE}/{domain}/pap/pdp.properties", content=unknown_root.encode(),
                      headers=XML).status_code == 400


def test_requests_the_pdp_cannot_take(client: TestClient) -> None:
    domain = new_domain(client, "app")
    url = f"{BASE}/{domain}/pdp"
    bad_xml = client.post(url, content=b"<Request xmlns='urn:nope'/>", headers=XML)
    assert bad_xml.status_code == 400
    status = xml(bad_xml).find("x:Result/x:Status/x:StatusCode", NS).get("Value")
    assert status == "urn:oasis:names:tc:xacml:1.0:status:syntax-error"
    bad_json = client.post(url, content=b'{"Request": 5}', headers={"Content-Type": "application/xacml+json"})
    assert bad_json.status_code == 400
    assert bad_json.json()["Response"][0]["Status"]["StatusCode"]["Value"].endswith("syntax-error")
    assert client.post(url, content=b"read", headers={"Content-Type": "text/plain"}).status_code == 415
    assert client.post(url, content=action_request_xml("x" * 300_000), headers=XML).status_code == 413
    ok = client.post(url, content=action_request_json("read"), headers={"Content-Type": "application/xacml+json"})
    assert decision(ok) == "Deny"  # the default root


def test_unknown_domains_and_bad_bodies(client: TestClient, audit: RecordingAuditSink) -> None:
    for method, path in (("GET", ""), ("DELETE", ""), ("GET", "/pap/policies"), ("GET", "/pap/pdp.properties"),
                         ("POST", "/pdp"), ("GET", "/properties")):
        response = client.request(method, f"{BASE}/no-such-domain{path}", content=action_request_xml("read"),
                                  headers=XML)
        assert response.status_code == 404, (method, path)
    assert client.post(BASE, content=b"<domainProperties/>", headers=XML).status_code == 400  # wrong namespace
    assert client.post(BASE, content=b"<!DOCTYPE x [<!ENTITY e 'x'>]><x/>", headers=XML).status_code == 400
    domain = new_domain(client, "app")
    assert client.post(BASE, content=f'<domainProperties xmlns="{AZ}" externalId="app"/>'.encode(),
                       headers=XML).status_code == 409
    assert client.put(f"{BASE}/{domain}/pap/pdp.properties", content=f'<pdpPropertiesUpdate xmlns="{AZ}"/>'.encode(),
                      headers=XML).status_code == 400
    renamed = client.put(f"{BASE}/{domain}/properties",
                         content=f'<domainProperties xmlns="{AZ}" externalId="renamed"/>'.encode(), headers=XML)
    assert renamed.status_code == 200 and xml(renamed).get("externalId") == "renamed"
    assert hrefs(client.get(BASE, params={"externalId": "renamed"})) == [domain]
    assert client.delete(f"{BASE}/{domain}").status_code == 200
    assert client.get(f"{BASE}/{domain}").status_code == 404
    audit.failing = True
    refused = client.post(BASE, content=f'<domainProperties xmlns="{AZ}"/>'.encode(), headers=XML)
    assert refused.status_code == 503
    assert hrefs(client.get(BASE)) == []


def test_a_second_worker_on_the_same_database_follows_changes(tmp_path: Path, audit: RecordingAuditSink) -> None:
    import time

    url = f"sqlite:///{tmp_path / 'shared.sqlite'}"

    def app() -> TestClient:
        settings = Settings(data_dir=tmp_path, policy_database_url=url, policy_sync_interval_s=0.05)
        return TestClient(build_app(StackContext(settings=settings, audit_sink=audit), expose=("policy",)))

    with app() as first, app() as second:
        domain = new_domain(first, "app")
        ask = {"content": action_request_json("read"), "headers": {"Content-Type": "application/xacml+json"}}
        assert decision(second.post(f"{BASE}/{domain}/pdp", **ask)) == "Deny"
        first.post(f"{BASE}/{domain}/pap/policies", content=simple_policy("p", "1.0", "Permit"), headers=XML)
        root = f'<pdpPropertiesUpdate xmlns="{AZ}"><rootPolicyRefExpression>p</rootPolicyRefExpression>' \
               "</pdpPropertiesUpdate>"
        assert first.put(f"{BASE}/{domain}/pap/pdp.properties", content=root.encode(), headers=XML).status_code == 200
        deadline = time.monotonic() + 10
        while decision(second.post(f"{BASE}/{domain}/pdp", **ask)) != "Permit":
            assert time.monotonic() < deadline, "the second worker never picked up the new root"
            time.sleep(0.05)


def test_the_serve_policy_factory_builds_the_whole_component(tmp_path: Path) -> None:
    """``sleutelbos serve policy --workers N`` starts each worker from ``create_app``: the real stack (its own
    audit log in the data directory), decisions through the fast path, everything else through the router."""
    with TestClient(create_app(data_dir=tmp_path)) as client:
        assert client.get("/health").json() == {"status": "ok"}
        domain = new_domain(client, "factory")
        url = f"{BASE}/{domain}/pdp"
        answer = client.post(url, content=action_request_json("read"),
                             headers={"Content-Type": "application/xacml+json"})
        assert answer.status_code == 200 and decision(answer) == "Deny"  # the default root
        assert client.post(f"{BASE}/nope/pdp", content=action_request_json("read"),
                           headers={"Content-Type": "application/xacml+json"}).status_code == 404
        assert client.post(f"{BASE}/{domain}/pdp/x", content=b"{}",
                           headers={"Content-Type": "application/xacml+json"}).status_code == 404
        assert client.get(url).status_code == 405
