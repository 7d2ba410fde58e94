"""The OASIS XACML 3.0 conformance tests (AuthZForce layout) as cases, and how to run and compare one.

Layout and comparison rules: ``../shared/conformance/xacml/README.md`` and ``UPSTREAM-NOTES.md``.

- ``mandatory/<ID>``: ``Policy.xml`` (or ``Policies/Policy.xml`` with the referenced policies beside it),
  ``Request.xml``/``Response.xml`` and their JSON Profile twins; ``Request.xml.ignore`` marks a policy that must be
  rejected at load, ``Policy.xml.ignore`` a request that must be rejected before evaluation.
- ``others/<name>``: ``policy.xml`` or ``policies/policy.xml`` (the root) with ``policies/*.xml`` as the repository,
  ``request.xml``/``response.xml``; no request means the policies must be rejected. These have no JSON files: the
  JSON case converts ``request.xml`` to the JSON Profile here, element by element (independently of the engine's
  parsers), and compares the JSON response with ``response.xml``.
- ``optional/xml+json`` (both formats) and ``optional/xml`` (XML only).

Responses are compared after normalisation: decision, status code (``ok`` = absent), obligations and advice with
their assignments (values compared in their data type's canonical form), returned attributes (category order
ignored) and, when the request asks for it, the policy identifier list (as a multiset).

``python tests/policy/conformance_suite.py`` (with ``PYTHONPATH=src``) prints the pass count per category.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lxml import etree

XACML = "urn:oasis:names:tc:xacml:3.0:core:schema:wd-17"
NS = "{" + XACML + "}"
ROOT = Path(__file__).resolve().parents[2]
SUITE = ROOT.parent / "shared" / "conformance" / "xacml"
STATUS_OK = "urn:oasis:names:tc:xacml:1.0:status:ok"


@dataclass(frozen=True)
class Case:
    """One conformance test in one format."""

    group: str  # mandatory / others / optional-xml+json / optional-xml
    name: str
    fmt: str  # "xml" or "json"
    directory: Path
    root_policy: Path
    repository: tuple[Path, ...]
    request: Path | None  # None: the policy must be rejected
    response: Path | None
    invalid_request: bool = False

    @property
    def id(self) -> str:
        return f"{self.group}/{self.name}/{self.fmt}"


def _first(directory: Path, *names: str) -> Path | None:
    for name in names:
        if (directory / name).exists():
            return directory / name
    return None


def _case_for(group: str, directory: Path, formats: tuple[str, ...]) -> list[Case]:
    lower = group == "others"
    policies_dir = _first(directory, "policies", "Policies")
    root = _first(directory, "policy.xml", "Policy.xml", "Policy.xml.ignore")
    repository: list[Path] = []
    if policies_dir is not None:
        files = sorted(policies_dir.glob("*.xml"))
        if root is None:
            root = _first(policies_dir, "policy.xml", "Policy.xml")
        repository = [f for f in files if f != root]
    assert root is not None, f"no root policy in {directory}"
    cases = []
    for fmt in formats:
        if fmt == "xml":
            request = _first(directory, "request.xml" if lower else "Request.xml")
            response = _first(directory, "response.xml" if lower else "Response.xml")
        else:
            request = _first(directory, "Request.json") or (_first(directory, "request.xml") if lower else None)
            response = _first(directory, "Response.json") or (_first(directory, "response.xml") if lower else None)
            if request is None and (directory / "Request.xml").exists():
                continue  # no JSON twin for this test
        invalid_request = root.name.endswith(".ignore")
        if invalid_request:
            request = _first(directory, "Request.xml" if fmt == "xml" else "Request.json")
            if request is None:
                continue
            response = None
        cases.append(Case(group, directory.name, fmt, directory, root, tuple(repository), request, response,
                          invalid_request))
    return cases


def discover() -> list[Case]:
    """Every case of the suite, in a stable order."""
    cases: list[Case] = []
    for group, folder, formats in (
        ("mandatory", SUITE / "mandatory", ("xml", "json")),
        ("others", SUITE / "others", ("xml", "json")),
        ("optional-xml+json", SUITE / "optional" / "xml+json", ("xml", "json")),
        ("optional-xml", SUITE / "optional" / "xml", ("xml",)),
    ):
        if not folder.is_dir():
            continue
        for directory in sorted(p for p in folder.iterdir() if p.is_dir()):
            cases.extend(_case_for(group, directory, formats))
    return cases


# --- normalising responses


def _canonical(data_type: str, value: Any, from_json: bool) -> str:
    from sleutelbos.policy.xacml.values import lexical, parse_json_value, parse_value

    try:
        parsed = parse_json_value(data_type, value) if from_json else parse_value(data_type, value)
        return lexical(parsed)
    except Exception:  # an unparsable expected value is compared as text
        return str(value)


def _xml_assignments(element: etree._Element) -> tuple[Any, ...]:
    return tuple(sorted(
        (a.get("AttributeId"), a.get("Category"), a.get("Issuer"), a.get("DataType"),
         _canonical(a.get("DataType"), "".join(a.itertext()), False))
        for a in element.iter(NS + "AttributeAssignment")
    ))


def normalise_xml_response(xml: bytes, with_policy_ids: bool) -> list[dict[str, Any]]:
    root = etree.fromstring(xml)
    assert root.tag == NS + "Response", f"not a XACML 3.0 Response: {root.tag}"
    results = []
    for result in root.findall(NS + "Result"):
        code = result.find(f"{NS}Status/{NS}StatusCode")
        status = code.get("Value") if code is not None else None
        obligations = sorted((o.get("ObligationId"), _xml_assignments(o))
                             for o in result.findall(f"{NS}Obligations/{NS}Obligation"))
        advice = sorted((o.get("AdviceId"), _xml_assignments(o))
                        for o in result.findall(f"{NS}AssociatedAdvice/{NS}Advice"))
        attributes = sorted(
            (group.get("Category"), tuple(sorted(
                (a.get("AttributeId"), a.get("Issuer"), tuple(sorted(
                    (v.get("DataType"), _canonical(v.get("DataType"), "".join(v.itertext()), False))
                    for v in a.findall(NS + "AttributeValue"))))
                for a in group.findall(NS + "Attribute"))))
            for group in result.findall(NS + "Attributes")
        )
        entry: dict[str, Any] = {
            "decision": result.findtext(NS + "Decision").strip(),
            "status": None if status in (None, STATUS_OK) else status,
            "obligations": obligations,
            "advice": advice,
            "attributes": attributes,
        }
        if with_policy_ids:
            entry["policies"] = sorted(
                (ref.tag[len(NS):], (ref.text or "").strip(), ref.get("Version"))
                for ref in result.iterfind(f"{NS}PolicyIdentifierList/*")
            )
        results.append(entry)
    return results


def _json_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _json_assignments(action: dict[str, Any]) -> tuple[Any, ...]:
    from sleutelbos.policy.xacml.values import datatype_from_json, infer_json_datatype

    out = []
    for a in _json_list(action.get("AttributeAssignment")):
        data_type = datatype_from_json(a["DataType"]) if "DataType" in a else infer_json_datatype(a["Value"])
        for value in _json_list(a["Value"]):
            out.append((a["AttributeId"], a.get("Category"), a.get("Issuer"), data_type,
                        _canonical(data_type, value, True)))
    return tuple(sorted(out))


def normalise_json_response(body: bytes | str, with_policy_ids: bool) -> list[dict[str, Any]]:
    from sleutelbos.policy.xacml.values import datatype_from_json, infer_json_datatype

    document = json.loads(body)
    results = []
    for result in _json_list(document["Response"]):
        status = (result.get("Status") or {}).get("StatusCode", {}).get("Value")
        attributes = []
        for group in _json_list(result.get("Category")):
            items = []
            for a in _json_list(group.get("Attribute")):
                data_type = datatype_from_json(a["DataType"]) if "DataType" in a else infer_json_datatype(a["Value"])
                items.append((a["AttributeId"], a.get("Issuer"), tuple(sorted(
                    (data_type, _canonical(data_type, v, True)) for v in _json_list(a["Value"])))))
            if items:
                attributes.append((group["CategoryId"], tuple(sorted(items))))
        entry: dict[str, Any] = {
            "decision": result["Decision"],
            "status": None if status in (None, STATUS_OK) else status,
            "obligations": sorted((o["Id"], _json_assignments(o)) for o in _json_list(result.get("Obligations"))),
            "advice": sorted((o["Id"], _json_assignments(o)) for o in _json_list(result.get("AssociatedAdvice"))),
            "attributes": sorted(attributes),
        }
        if with_policy_ids:
            lists = result.get("PolicyIdentifierList") or {}
            entry["policies"] = sorted(
                (kind, ref["Id"], ref.get("Version"))
                for kind in ("PolicyIdReference", "PolicySetIdReference")
                for ref in _json_list(lists.get(kind))
            )
        results.append(entry)
    return results


# --- converting an XML request to the JSON Profile (for the ``others`` tests, which have no JSON twin)


def xml_request_to_json(xml: bytes) -> bytes:
    root = etree.fromstring(xml)
    categories = []
    for group in root.findall(NS + "Attributes"):
        attributes = []
        for attribute in group.findall(NS + "Attribute"):
            values = [v.text or "" for v in attribute.findall(NS + "AttributeValue")]
            item: dict[str, Any] = {
                "AttributeId": attribute.get("AttributeId"),
                "DataType": attribute.find(NS + "AttributeValue").get("DataType"),
                "Value": values,
                "IncludeInResult": attribute.get("IncludeInResult") == "true",
            }
            if attribute.get("Issuer") is not None:
                item["Issuer"] = attribute.get("Issuer")
            attributes.append(item)
        categories.append({"CategoryId": group.get("Category"), "Attribute": attributes})
    request = {
        "ReturnPolicyIdList": root.get("ReturnPolicyIdList") == "true",
        "CombinedDecision": root.get("CombinedDecision") == "true",
        "Category": categories,
    }
    return json.dumps({"Request": request}).encode()


# --- running a case


class Mismatch(AssertionError):
    """The engine's answer differs from the expected one."""


def run(case: Case) -> None:
    """Run one case; raise :class:`Mismatch` (or any error) when the engine does not conform."""
    from sleutelbos.policy.xacml import InvalidPolicy, InvalidRequest, Pdp, load_policy

    def build() -> Pdp:
        root = load_policy(case.root_policy.read_bytes())
        provider = None
        if (case.directory / "AttributeProvider.xml").exists():
            from sleutelbos.policy.xacml.context import StaticAttributeProvider
            from sleutelbos.policy.xacml.request_xml import parse_attributes_xml

            provider = StaticAttributeProvider(parse_attributes_xml(
                (case.directory / "AttributeProvider.xml").read_bytes()))
        return Pdp(root, [load_policy(p.read_bytes()) for p in case.repository], provider)

    if case.request is None or (case.request.name.endswith(".ignore") and not case.invalid_request):
        try:
            build()
        except InvalidPolicy:
            return
        raise Mismatch("the policy was accepted, but it is invalid and must be rejected at load")
    body = case.request.read_bytes()
    if case.invalid_request:
        from sleutelbos.policy.xacml import parse_request_json, parse_request_xml

        try:
            (parse_request_xml if case.fmt == "xml" else parse_request_json)(body)
        except InvalidRequest:
            return
        raise Mismatch("the request was accepted, but it is invalid and must be rejected before evaluation")
    pdp = build()
    with_ids = b'ReturnPolicyIdList="true"' in body or b'"ReturnPolicyIdList":true' in body.replace(b" ", b"")
    assert case.response is not None
    expected_bytes = case.response.read_bytes()
    if case.fmt == "xml":
        actual = normalise_xml_response(pdp.decide_xml(body), with_ids)
        expected = normalise_xml_response(expected_bytes, with_ids)
    else:
        if case.request.suffix == ".xml":
            body = xml_request_to_json(body)
        actual = normalise_json_response(pdp.decide_json(body), with_ids)
        if case.response.suffix == ".xml":
            expected = normalise_xml_response(expected_bytes, with_ids)
        else:
            expected = normalise_json_response(expected_bytes, with_ids)
    if actual != expected:
        raise Mismatch(f"expected {expected}\n     got {actual}")


def main() -> int:
    """Run every case and print the pass count per category and format."""
    passed: Counter[tuple[str, str]] = Counter()
    total: Counter[tuple[str, str]] = Counter()
    failures = []
    for case in discover():
        key = (case.group, case.fmt)
        total[key] += 1
        try:
            run(case)
        except Exception as exc:  # a report lists every failure, whatever its kind
            failures.append((case.id, f"{type(exc).__name__}: {exc}"))
        else:
            passed[key] += 1
    for case_id, reason in failures:
        print(f"FAIL {case_id}: {reason.splitlines()[0][:300]}")
    print_summary(passed, total)
    return 0 if not failures else 1


def print_summary(passed: Counter[tuple[str, str]], total: Counter[tuple[str, str]],
                  write: Callable[[str], Any] = print) -> None:
    write("XACML 3.0 conformance (passed / cases):")
    for key in sorted(total):
        write(f"  {key[0]:<20} {key[1]:<5} {passed[key]:>4} / {total[key]:<4}")
    write(f"  {'all':<26} {sum(passed.values()):>4} / {sum(total.values())}")


if __name__ == "__main__":
    sys.exit(main())
