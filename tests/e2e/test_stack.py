"""The embedded stack as an operator meets it: one `sleutelbos up`, every component on one port, and the
operator's CLI acting on the same data directory (identity, custody, audit)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import jwt

from tests.conftest import CONFORMANCE, softhsm_module

from .conftest import ROOT, start_stack

DEVICE = CONFORMANCE / "ngsi-ld" / "smart-data-models" / "Device" / "example-normalized.jsonld"
CORE_CONTEXT = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld"

POLICY = b"""<PolicySet xmlns="urn:oasis:names:tc:xacml:3.0:core:schema:wd-17" PolicySetId="root" Version="1.0"
  PolicyCombiningAlgId="urn:oasis:names:tc:xacml:3.0:policy-combining-algorithm:deny-unless-permit">
  <Target/>
  <Policy PolicyId="operators-read" Version="1.0"
    RuleCombiningAlgId="urn:oasis:names:tc:xacml:3.0:rule-combining-algorithm:deny-unless-permit">
    <Target/>
    <Rule RuleId="operator-may-read" Effect="Permit">
      <Target><AnyOf><AllOf>
        <Match MatchId="urn:oasis:names:tc:xacml:1.0:function:string-equal">
          <AttributeValue DataType="http://www.w3.org/2001/XMLSchema#string">operator</AttributeValue>
          <AttributeDesignator Category="urn:oasis:names:tc:xacml:1.0:subject-category:access-subject"
            AttributeId="org_kind" DataType="http://www.w3.org/2001/XMLSchema#string" MustBePresent="false"/>
        </Match>
      </AllOf></AnyOf></Target>
    </Rule>
  </Policy>
</PolicySet>"""


def _decision_request(org_kind: str) -> dict:
    return {"Request": {"AccessSubject": {"Attribute": [
        {"AttributeId": "org_kind", "Value": org_kind, "DataType": "http://www.w3.org/2001/XMLSchema#string"}]}}}


def _cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, "-m", "sleutelbos", *args, "--data-dir", str(data_dir)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)


def test_the_embedded_stack_end_to_end(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    stack = start_stack(data_dir)
    try:
        http = httpx.Client(base_url=stack.url, timeout=10)
        assert set(http.get("/").json()["components"]) == {"custody", "audit", "policy", "identity", "broker"}

        # broker: a meter from the Smart Data Model example, with the core context only
        device = json.loads(DEVICE.read_text())
        device.pop("@context", None)
        created = http.post("/ngsi-ld/v1/entities", content=json.dumps(device),
                            headers={"Content-Type": "application/json"})
        assert created.status_code == 201, created.text
        got = http.get(f"/ngsi-ld/v1/entities/{device['id']}")
        assert got.status_code == 200 and got.json()["batteryLevel"]["value"] == 0.75

        # identity: a client made with the CLI gets an ES256 token that the stack's JWKS verifies
        made = _cli(data_dir, "identity", "create-client", "--org", "Operator", "--name", "head-end",
                    "--scope", "meters:read", "--json")
        assert made.returncode == 0, made.stderr
        client = json.loads(made.stdout.strip().splitlines()[-1])
        token = http.post("/oauth2/token", data={"grant_type": "client_credentials", "scope": "meters:read"},
                          auth=(client["client_id"], client["client_secret"]))
        assert token.status_code == 200, token.text
        access = token.json()["access_token"]
        header = jwt.get_unverified_header(access)
        assert header["alg"] == "ES256"
        jwks = http.get("/.well-known/jwks.json").json()
        key = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
        claims = jwt.decode(access, jwt.PyJWK(key).key, algorithms=["ES256"], options={"verify_aud": False})
        assert claims["org_kind"] == "operator" and claims["country"] == "NL"

        # policy: an AuthZForce domain, a policy, the root, a decision in the JSON Profile
        domain = http.post("/authzforce-ce/domains", headers={"Content-Type": "application/xml"}, content=(
            b'<domainProperties xmlns="http://authzforce.github.io/rest-api-model/xmlns/authz/5" externalId="e2e"/>'))
        assert domain.status_code == 200, domain.text
        domain_id = domain.text.split('href="')[1].split('"')[0].rstrip("/").split("/")[-1]
        base = f"/authzforce-ce/domains/{domain_id}"
        added = http.post(f"{base}/pap/policies", content=POLICY, headers={"Content-Type": "application/xml"})
        assert added.status_code == 200, added.text
        root = http.put(f"{base}/pap/pdp.properties", headers={"Content-Type": "application/xml"}, content=(
            b'<pdpPropertiesUpdate xmlns="http://authzforce.github.io/rest-api-model/xmlns/authz/5">'
            b"<rootPolicyRefExpression>root</rootPolicyRefExpression></pdpPropertiesUpdate>"))
        assert root.status_code == 200, root.text
        for kind, expected in (("operator", "Permit"), ("vendor", "Deny")):
            decided = http.post(f"{base}/pdp", content=json.dumps(_decision_request(kind)),
                                headers={"Content-Type": "application/xacml+json", "Accept": "application/xacml+json"})
            assert decided.status_code == 200, decided.text
            assert decided.json()["Response"][0]["Decision"] == expected
    finally:
        assert stack.stop() == 0

    # identity bootstrap: credentials printed once, kept 0600
    bootstrap = data_dir / "bootstrap.json"
    assert stat.S_IMODE(bootstrap.stat().st_mode) == 0o600
    password = json.loads(bootstrap.read_text())["password"]
    assert password in stack.output

    # custody: the keys the stack made are in the token, and the inventory says where
    inventory = _cli(data_dir, "custody", "inventory", "--json")
    assert inventory.returncode == 0, inventory.stderr
    purposes = {k["purpose"]: k for k in json.loads(inventory.stdout)}
    assert {"identity-token", "audit-checkpoint"} <= set(purposes)
    if softhsm_module() is not None:
        assert purposes["identity-token"]["sovereign"] is True

    # audit: every control action above is in the log, which verifies offline and live
    export = tmp_path / "audit.jsonl"
    assert _cli(data_dir, "audit", "export", str(export)).returncode == 0
    actions = [json.loads(json.loads(line)["entry"])["action"]
               for line in export.read_text().splitlines() if json.loads(line)["type"] == "entry"]
    for action in ("identity.org.create", "identity.service.create", "policy.domain.create"):
        assert action in actions, actions
    verified = _cli(data_dir, "audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr

    # a second start resumes: the meter is still there, and no new credentials are printed
    again = start_stack(data_dir)
    try:
        assert httpx.get(f"{again.url}/ngsi-ld/v1/entities/{device['id']}").status_code == 200
    finally:
        assert again.stop() == 0
    assert password not in again.output
