"""The request readers' shortcuts (the common JSON attribute shape, the cache of parsed values) read exactly what
the general readers read, and bad values still get their precise errors — also after a good value was cached."""

from __future__ import annotations

import json

import orjson
import pytest

from sleutelbos.policy.meter_data import MeterDataRequest, meter_data_policy
from sleutelbos.policy.rbac import wilma_request_json
from sleutelbos.policy.xacml import (
    InvalidPolicy,
    InvalidRequest,
    Pdp,
    load_policy,
    parse_request_json,
    render_response_json,
)
from sleutelbos.policy.xacml import json_profile as json_module
from sleutelbos.policy.xacml.json_profile import simple_request_values
from sleutelbos.policy.xacml.request_xml import parse_request_xml

RESOURCE = "urn:oasis:names:tc:xacml:3.0:attribute-category:resource"
XS = "http://www.w3.org/2001/XMLSchema#"

COMMON_SHAPES = [
    ("string", "meter-1"), (XS + "string", "meter-1"), ("boolean", "false"), ("boolean", True),
    ("integer", 42), ("integer", "42"), ("double", 1), ("double", 2.5), ("dateTime", "2026-11-28T10:00:00Z"),
    (XS + "date", "2026-11-28"), ("anyURI", "urn:x"),
]


def body(*attributes: dict[str, object]) -> bytes:
    return orjson.dumps({"Request": {"Category": [{"CategoryId": RESOURCE, "Attribute": list(attributes)}]}})


@pytest.mark.parametrize(("data_type", "value"), COMMON_SHAPES)
def test_the_common_shape_reads_like_the_general_reader(data_type: str, value: object,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    request = body({"AttributeId": "a", "DataType": data_type, "Value": value})
    fast = parse_request_json(request)
    fast_again = parse_request_json(request)  # through the cache now
    monkeypatch.setattr(json_module, "_common_attribute", lambda item: None)
    monkeypatch.setattr(json_module, "_STRING_NAMES", frozenset())
    general = parse_request_json(request)
    assert fast.attributes == general.attributes == fast_again.attributes


@pytest.mark.parametrize(("data_type", "good", "bad", "message"), [
    ("integer", 1, True, "JSON boolean"),        # True == 1 in Python: the JSON type is part of the cache key
    ("double", 1, True, "JSON boolean"),
    ("boolean", "false", "no", "boolean"),
    ("dateTime", "2026-11-28T10:00:00Z", "yesterday", "dateTime"),
    ("urn:unknown-type", None, "x", "unknown data type"),
])
def test_bad_values_keep_their_errors_after_good_ones_were_cached(data_type: str, good: object, bad: object,
                                                                  message: str) -> None:
    if good is not None:
        parse_request_json(body({"AttributeId": "a", "DataType": data_type, "Value": good}))
    for _ in range(2):  # the failure is not cached either
        with pytest.raises(InvalidRequest, match=message) as raised:
            parse_request_json(body({"AttributeId": "a", "DataType": data_type, "Value": bad}))
        assert "Attribute[0]" in raised.value.detail


@pytest.mark.parametrize("attribute", [
    {"AttributeId": "", "DataType": "string", "Value": "x"},
    {"AttributeId": "a", "DataType": "string", "Value": None},
    {"AttributeId": "a", "DataType": 5, "Value": "x"},
    {"AttributeId": "a", "DataType": "string", "Valeu": "x"},
    {"AttributeId": "a", "DataType": "string", "Value": []},
])
def test_near_misses_of_the_common_shape_are_refused_precisely(attribute: dict[str, object]) -> None:
    with pytest.raises(InvalidRequest, match=r"Attribute\[0\]"):
        parse_request_json(body(attribute))


def test_xml_values_through_the_cache_equal_fresh_ones() -> None:
    def xml(text: str) -> bytes:
        return (f'<Request xmlns="urn:oasis:names:tc:xacml:3.0:core:schema:wd-17" ReturnPolicyIdList="false" '
                f'CombinedDecision="false"><Attributes Category="{RESOURCE}"><Attribute AttributeId="q" '
                f'IncludeInResult="false"><AttributeValue DataType="{XS}boolean">{text}</AttributeValue>'
                f'</Attribute></Attributes></Request>').encode()

    first = parse_request_xml(xml("true")).attributes[0].attributes[0].values[0]
    again = parse_request_xml(xml("true")).attributes[0].attributes[0].values[0]
    assert first == again and first.value is True
    for _ in range(2):
        with pytest.raises(InvalidRequest, match="boolean"):
            parse_request_xml(xml("yes"))


# --- the simple JSON request read straight into the evaluation context (Pdp.decide_json)


def _general(pdp: Pdp, request: bytes) -> bytes:
    """What ``decide_json`` answers through the general reader, the decide loop and the renderer."""
    return render_response_json(pdp.decide(parse_request_json(request)))


def _same_answer(pdp: Pdp, request: bytes) -> bool:
    """``decide_json`` and the general path agree: the same bytes, or both refuse the request. Returns whether the
    request was simple (read by the fast reader)."""
    try:
        expected: bytes | str = _general(pdp, request)
    except InvalidRequest as exc:
        expected = f"InvalidRequest: {exc.detail}"
    try:
        actual: bytes | str = pdp.decide_json(request)
    except InvalidRequest as exc:
        actual = f"InvalidRequest: {exc.detail}"
    assert actual == expected, request
    return simple_request_values(request) is not None


def test_decide_json_answers_every_conformance_request_as_the_general_path() -> None:
    """Every JSON request of the OASIS suite (and the XML ones in their JSON form), valid and invalid, against its
    own policies: the fast reader and the pre-encoded answers change no byte of any response."""
    from conformance_suite import discover, xml_request_to_json

    simple = total = 0
    for case in discover():
        if case.fmt != "json" or case.request is None or case.request.name.endswith(".ignore"):
            continue
        try:
            root = load_policy(case.root_policy.read_bytes())
            pdp = Pdp(root, [load_policy(p.read_bytes()) for p in case.repository])
        except InvalidPolicy:
            continue
        request = case.request.read_bytes()
        if case.request.suffix == ".xml":
            request = xml_request_to_json(request)
        total += 1
        simple += _same_answer(pdp, request)
    assert total > 300
    assert simple > total // 2, f"only {simple} of {total} requests took the fast reader"


def _meter_pdp() -> Pdp:
    return Pdp(load_policy(meter_data_policy()))


def _categories(*attributes: tuple[str, str, str, object]) -> list[dict[str, object]]:
    out: dict[str, list[dict[str, object]]] = {}
    for category, attribute_id, data_type, value in attributes:
        out.setdefault(category, []).append({"AttributeId": attribute_id, "DataType": data_type, "Value": value})
    return [{"CategoryId": c, "Attribute": a} for c, a in out.items()]


MD = "urn:sleutelbos:names:"
SUBJECT = "urn:oasis:names:tc:xacml:1.0:subject-category:access-subject"
ACTION = "urn:oasis:names:tc:xacml:3.0:attribute-category:action"
ENVIRONMENT = "urn:oasis:names:tc:xacml:3.0:attribute-category:environment"
HOUSEHOLD = [
    (SUBJECT, "urn:oasis:names:tc:xacml:1.0:subject:subject-id", "string", "h1"),
    (SUBJECT, MD + "subject:organisation-kind", "string", "household"),
    (RESOURCE, "urn:oasis:names:tc:xacml:1.0:resource:resource-id", "string", "m1"),
    (RESOURCE, MD + "resource:type", "string", "meter"),
    (RESOURCE, MD + "resource:owner", "string", "h1"),
    (RESOURCE, MD + "resource:quarantined", "boolean", False),
    (ACTION, "urn:oasis:names:tc:xacml:1.0:action:action-id", "string", "read"),
    (ENVIRONMENT, MD + "environment:break-glass", "boolean", "false"),
]


def _request(categories: object, **members: object) -> bytes:
    return json.dumps({"Request": {"Category": categories, **members}}).encode()


@pytest.mark.parametrize("request_body", [
    _request(_categories(*HOUSEHOLD)),                                                   # Permit
    _request(_categories(*HOUSEHOLD[:-1], (ENVIRONMENT, MD + "environment:break-glass", "boolean", True))),  # Deny
    _request(_categories(*HOUSEHOLD[:-1])),                   # break-glass missing: Indeterminate, MissingAttribute
    _request(_categories(*HOUSEHOLD[:3])),                                               # NotApplicable
    _request(_categories(*HOUSEHOLD), ReturnPolicyIdList=True),                          # policy ids
    _request(_categories(*HOUSEHOLD), ReturnPolicyIdList=False, CombinedDecision=False),
    _request(_categories(*HOUSEHOLD), CombinedDecision=True),
    _request(_categories(*HOUSEHOLD), XPathVersion="http://www.w3.org/TR/1999/REC-xpath-19991116"),
    _request(_categories(*HOUSEHOLD) + _categories(HOUSEHOLD[0])),                       # repeated category
    _request(_categories(*HOUSEHOLD, HOUSEHOLD[0])),                                     # attribute twice
    _request(_categories(*HOUSEHOLD, (SUBJECT, "x", "integer", 1 << 70))),               # beyond orjson's int
    _request(_categories(*HOUSEHOLD, (SUBJECT, "x", "integer", -(1 << 63)))),
    _request(_categories(*HOUSEHOLD, (SUBJECT, "x", "double", 1))),
    _request(_categories(*HOUSEHOLD, (SUBJECT, "x", "integer", 2.0))),
    _request(_categories(*HOUSEHOLD, (SUBJECT, "x", "string", ["a", "b"]))),
    _request(_categories(*HOUSEHOLD, (SUBJECT, "x", "string", ["a", 1]))),               # invalid
    _request(_categories(*HOUSEHOLD, (SUBJECT, "x", "integer", [1, "2", 3]))),
    _request(_categories(*HOUSEHOLD, (SUBJECT, "x", "string", []))),                     # invalid
    _request(_categories(*HOUSEHOLD, (SUBJECT, "x", "string", None))),                   # invalid
    _request(_categories(*HOUSEHOLD, (SUBJECT, "x", "boolean", "yes"))),                 # invalid
    _request(_categories(*HOUSEHOLD, (SUBJECT, "x", "urn:no-such-type", "a"))),          # invalid
    _request(_categories(*HOUSEHOLD, (SUBJECT, "", "string", "a"))),                     # invalid
    _request([{"CategoryId": SUBJECT, "Attribute": {"AttributeId": "x", "DataType": "string", "Value": "a"}}]),
    _request({"CategoryId": SUBJECT, "Attribute": []}),
    _request([{"CategoryId": SUBJECT, "Attribute": None}]),                              # invalid
    _request([{"CategoryId": None, "Attribute": []}]),                                   # invalid
    _request([{"CategoryId": "", "Attribute": []}]),                                     # invalid
    _request([{"Attribute": []}]),                                                       # invalid
    _request([]),                                                                        # invalid: no category
    _request([{"CategoryId": SUBJECT, "Attribute": [], "Id": "s"}]),
    _request([{"CategoryId": SUBJECT, "Attribute": [{"AttributeId": "x", "DataType": "string", "Value": "a",
                                                     "IncludeInResult": True}]}]),
    _request([{"CategoryId": SUBJECT, "Attribute": [{"AttributeId": "x", "DataType": "string", "Value": "a",
                                                     "Issuer": "me"}]}]),
    _request([{"CategoryId": SUBJECT, "Attribute": [{"AttributeId": "x", "Value": "a"}]}]),  # inferred types
    _request([{"CategoryId": SUBJECT, "Attribute": [{"AttributeId": "x", "Value": v}]}
              for v in (1, 2.5, True, ["a", "b"], [1, 2.5], [1, 2], [True, False])]),
    _request([{"CategoryId": SUBJECT, "Attribute": [{"AttributeId": "x", "Value": [True, 1]}]}]),   # invalid
    _request([{"CategoryId": SUBJECT, "Attribute": [{"AttributeId": "x", "Value": ["a", 1]}]}]),    # invalid
    _request([{"CategoryId": SUBJECT, "Attribute": [{"AttributeId": "x", "Value": "a", "DataType": None}]}]),
    orjson.dumps({"Request": {"AccessSubject": {"Attribute": [{"AttributeId": "x", "DataType": "string",
                                                               "Value": "a"}]},
                              "Resource": [{"Attribute": []}], "Category": _categories(*HOUSEHOLD[6:])}}),
    orjson.dumps({"Request": {"AccessSubject": {"CategoryId": None, "Attribute": []}}}),  # invalid
    orjson.dumps({"Request": {"AccessSubject": {"CategoryId": "Resource", "Attribute": []}, "Resource": []}}),
    orjson.dumps({"Request": {"AccessSubject": {}, "Category": {"CategoryId": "AccessSubject"}}}),  # repeated
    orjson.dumps({"Request": {}}),                                                       # invalid
    orjson.dumps({"Request": {"Category": []}, "Other": 1}),                             # invalid
    orjson.dumps([1]),                                                                   # invalid
    b'{"Request": {"Category": [{"CategoryId": "x", "Attribute": [{"AttributeId": "a", "DataType": "string", '
    b'"Value": "\\ud800"}]}]}}',                                                         # invalid: lone surrogate
    b'{"Request": {"Category": [{"CategoryId": "x", "CategoryId": "y"}]}}',              # duplicate key
    b'{"Request": {"Category": [{"CategoryId": "x"}]}} trailing',                        # invalid
    b'\xff',                                                                             # invalid
])
def test_decide_json_answers_like_the_general_path(request_body: bytes) -> None:
    _same_answer(_meter_pdp(), request_body)


def test_simple_requests_take_the_fast_reader() -> None:
    """The shapes a PEP sends (MeterDataRequest, the benchmark's requests) are simple; the others are not."""
    request = MeterDataRequest("h1", "h1", "household", "m1", owner="h1")
    assert simple_request_values(request.to_json()) is not None
    assert simple_request_values(wilma_request_json("app", ["r1", "r2"], "/v2/x", "GET")) is not None
    assert simple_request_values(_request(_categories(*HOUSEHOLD), ReturnPolicyIdList=True)) is None
    values = simple_request_values(_request(_categories(*HOUSEHOLD)))
    assert values is not None
    assert values[(RESOURCE, MD + "resource:quarantined", XS + "boolean")][0].value is False
    assert _meter_pdp().decide_json(request.to_json()) == b'{"Response":[{"Decision":"Permit","Status":{"StatusCode":' \
        b'{"Value":"urn:oasis:names:tc:xacml:1.0:status:ok"}}}]}'


def test_decide_json_answers_every_meter_request_shape_as_the_general_path() -> None:
    """Every scenario of the meter-data policy (each kind, grants expired or not, quarantine, break-glass, other
    actions): the simple path's answers are the general path's, Permit, Deny and Indeterminate alike."""
    from datetime import UTC, datetime, timedelta

    pdp = _meter_pdp()
    now = datetime.now(UTC)
    decisions = set()
    for quarantined in (False, True):
        for break_glass in (False, True):
            common = {"quarantined": quarantined, "break_glass": break_glass}
            for request in (
                MeterDataRequest("h1", "h1", "household", "m1", owner="h1", **common),
                MeterDataRequest("h1", "h1", "household", "m1", owner="h2", **common),
                MeterDataRequest("s", "energy", "supplier", "m1", contracted_suppliers=("energy", "x"), **common),
                MeterDataRequest("s", "energy", "supplier", "m1", contracted_suppliers=("x",), **common),
                MeterDataRequest("v", "vend", "vendor", "m1", granted_meters=("m1",),
                                 grant_expires=now + timedelta(hours=1), **common),
                MeterDataRequest("v", "vend", "vendor", "m1", granted_meters=("m1",),
                                 grant_expires=now - timedelta(hours=1), **common),
                MeterDataRequest("v", "vend", "vendor", "m1", granted_meters=("m1",), **common),  # no expiry
                MeterDataRequest("o", "grid", "operator", "m1", **common),
                MeterDataRequest("o", "grid", "operator", "m1", action="write", **common),
            ):
                body = request.to_json()
                assert simple_request_values(body) is not None
                _same_answer(pdp, body)
                decisions.add(orjson.loads(pdp.decide_json(body))["Response"][0]["Decision"])
    assert decisions == {"Permit", "Deny", "Indeterminate"}
