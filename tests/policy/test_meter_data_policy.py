"""The project's ABAC policy for meter data, decided in XML and in the JSON Profile, and the CLI around it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from lxml import etree
from typer.testing import CliRunner

from sleutelbos.cli import app as cli
from sleutelbos.policy.meter_data import BREAK_GLASS, MeterDataRequest, meter_data_policy
from sleutelbos.policy.xacml import Pdp, load_policy

NOW = datetime.now(UTC)
NS = {"x": "urn:oasis:names:tc:xacml:3.0:core:schema:wd-17"}


@pytest.fixture(scope="module")
def pdp() -> Pdp:
    return Pdp(load_policy(meter_data_policy()))


def decide(pdp: Pdp, request: MeterDataRequest) -> str:
    """The decision, checked to be the same in both forms."""
    from_json = orjson.loads(pdp.decide_json(request.to_json()))["Response"][0]["Decision"]
    from_xml = etree.fromstring(pdp.decide_xml(request.to_xml())).findtext("x:Result/x:Decision", namespaces=NS)
    assert from_json == from_xml
    return from_json


def household(meter: str = "meter-1", **kw: object) -> MeterDataRequest:
    return MeterDataRequest("household:jansen", "household:jansen", "household", meter, **kw)  # type: ignore[arg-type]


def supplier(**kw: object) -> MeterDataRequest:
    return MeterDataRequest("svc:energy-nl", "energy-nl", "supplier", "meter-1", **kw)  # type: ignore[arg-type]


def vendor(**kw: object) -> MeterDataRequest:
    return MeterDataRequest("support@vendor", "meters-inc", "vendor", "meter-1", **kw)  # type: ignore[arg-type]


def test_households_see_their_own_meter_only(pdp: Pdp) -> None:
    assert decide(pdp, household(owner="household:jansen")) == "Permit"
    assert decide(pdp, household(owner="household:de-vries")) == "Deny"
    assert decide(pdp, household()) == "Deny"  # owner unknown


def test_suppliers_see_meters_with_a_contract(pdp: Pdp) -> None:
    assert decide(pdp, supplier(contracted_suppliers=("other", "energy-nl"))) == "Permit"
    assert decide(pdp, supplier(contracted_suppliers=("other",))) == "Deny"
    assert decide(pdp, supplier()) == "Deny"


def test_vendors_see_nothing_without_an_unexpired_grant(pdp: Pdp) -> None:
    assert decide(pdp, vendor()) == "Deny"
    assert decide(pdp, vendor(granted_meters=("meter-1",), grant_expires=NOW + timedelta(hours=1))) == "Permit"
    assert decide(pdp, vendor(granted_meters=("meter-2",), grant_expires=NOW + timedelta(hours=1))) == "Deny"
    assert decide(pdp, vendor(granted_meters=("meter-1",), grant_expires=NOW - timedelta(seconds=1))) == "Deny"
    # a grant without an expiry is not time-boxed: not a Permit (Indeterminate, which a PEP denies)
    assert decide(pdp, vendor(granted_meters=("meter-1",))) == "Indeterminate"


def test_quarantine_and_break_glass_deny_everyone(pdp: Pdp) -> None:
    operator = MeterDataRequest("alice", "gridco", "operator", "meter-1")
    assert decide(pdp, operator) == "Permit"
    assert decide(pdp, household(owner="household:jansen", action="write")) == "Deny"
    granted = {"granted_meters": ("meter-1",), "grant_expires": NOW + timedelta(hours=1)}
    for request in (operator, household(owner="household:jansen"), supplier(contracted_suppliers=("energy-nl",)),
                    vendor(**granted)):
        assert decide(pdp, MeterDataRequest(**{**request.__dict__, "quarantined": True})) == "Deny"
        assert decide(pdp, MeterDataRequest(**{**request.__dict__, "break_glass": True})) == "Deny"


def test_a_request_that_does_not_say_whether_break_glass_is_active_is_not_permitted(pdp: Pdp) -> None:
    body = orjson.loads(household(owner="household:jansen").to_json())
    for category in body["Request"]["Category"]:
        category["Attribute"] = [a for a in category["Attribute"] if a["AttributeId"] != BREAK_GLASS]
    answer = orjson.loads(pdp.decide_json(orjson.dumps(body)))["Response"][0]
    assert answer["Decision"] == "Indeterminate"
    assert answer["Status"]["StatusCode"]["Value"].endswith("missing-attribute")


def test_cli_decides_xml_and_json(tmp_path: Path) -> None:
    policy = tmp_path / "meter-data.xml"
    policy.write_bytes(meter_data_policy())
    request = household(owner="household:jansen")
    (tmp_path / "r.json").write_bytes(request.to_json())
    (tmp_path / "r.xml").write_bytes(request.to_xml())
    runner = CliRunner()
    as_json = runner.invoke(cli, ["policy", "decide", "--policy", str(policy), "--request", str(tmp_path / "r.json")])
    assert as_json.exit_code == 0, as_json.output
    assert orjson.loads(as_json.stdout)["Response"][0]["Decision"] == "Permit"
    as_xml = runner.invoke(cli, ["policy", "decide", "--policy", str(policy), "--request", str(tmp_path / "r.xml")])
    assert as_xml.exit_code == 0 and "<Decision>Permit</Decision>" in as_xml.stdout


def test_cli_resolves_references_from_a_directory_and_reports_errors(tmp_path: Path) -> None:
    from pap_support import action_request_json, referencing_set, simple_policy

    repository = tmp_path / "policies"
    repository.mkdir()
    (repository / "p.xml").write_bytes(simple_policy("p", "1.0", "Permit"))
    (tmp_path / "root.xml").write_bytes(referencing_set("root", "1.0", "p"))
    (tmp_path / "r.json").write_bytes(action_request_json("read"))
    runner = CliRunner()
    args = ["policy", "decide", "--policy", str(tmp_path / "root.xml"), "--request", str(tmp_path / "r.json")]
    assert runner.invoke(cli, [*args, "--policies", str(repository)]).stdout.count('"Permit"') == 1
    missing = runner.invoke(cli, args)  # the reference cannot be resolved
    assert missing.exit_code == 2 and "invalid policy" in missing.output
    (tmp_path / "bad.json").write_bytes(b"{}")
    bad = runner.invoke(cli, [*args[:-1], str(tmp_path / "bad.json"), "--policies", str(repository)])
    assert bad.exit_code == 2 and "invalid request" in bad.output
