"""The request readers' shortcuts (the common JSON attribute shape, the cache of parsed values) read exactly what
the general readers read, and bad values still get their precise errors — also after a good value was cached."""

from __future__ import annotations

import orjson
import pytest

from sleutelbos.policy.xacml import InvalidRequest, parse_request_json
from sleutelbos.policy.xacml import json_profile as json_module
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
