"""The q parser (clause 4.9 ABNF): valid queries give the expected AST, invalid ones a BadRequestData with position."""

from __future__ import annotations

import pytest

from sleutelbos.broker.context import ContextStore
from sleutelbos.broker.errors import BadRequestData, OperationNotSupported, TooComplexQuery
from sleutelbos.broker.query import And, Comparison, Exists, Or, Pattern, QuerySyntaxError, Range, parse_query

V = "https://uri.etsi.org/ngsi-ld/default-context/"
CTX = ContextStore().core


def q(text: str):
    return parse_query(text, CTX)


def test_and_binds_tighter_than_or():
    node = q("a==1;b==2|c==3")
    assert isinstance(node, Or)
    assert isinstance(node.terms[0], And) and len(node.terms[0].terms) == 2
    assert isinstance(node.terms[1], Comparison) and node.terms[1].path.attribute == V + "c"


def test_parentheses_group_and_nest_like_example_6():
    node = q('((speed>50|rpm>3000);brandName=="Mercedes")')
    assert isinstance(node, And)
    assert isinstance(node.terms[0], Or)
    assert [t.path.attribute for t in node.terms[0].terms] == [V + "speed", V + "rpm"]
    assert node.terms[1].value.value == "Mercedes"


def test_example_7_or_of_group():
    node = q("(temperature>=20;temperature<=25)|capacity<=10")
    assert isinstance(node, Or) and isinstance(node.terms[0], And)


@pytest.mark.parametrize(("text", "kind", "value"), [
    ("a==20", "number", 20),
    ("a==-1.5e2", "number", -150.0),
    ('a=="Mercedes"', "string", "Mercedes"),
    ('a=="with \\"quote\\" and ;|)"', "string", 'with "quote" and ;|)'),
    ("a==true", "boolean", True),
    ("a==false", "boolean", False),
    ("a==2017-12-24T12:00:00Z", "datetime", "2017-12-24T12:00:00.000Z"),
    ("a==2017-12-24T13:00:00.5+01:00", "datetime", "2017-12-24T12:00:00.500Z"),
    ("a==2017-12-24", "date", "2017-12-24"),
    ("a==12:30:00Z", "time", "12:30:00.000"),
    ("a==urn:ngsi-ld:OffStreetParking:Downtown1", "uri", "urn:ngsi-ld:OffStreetParking:Downtown1"),
    ("a==Mercedes", "string", "Mercedes"),
])
def test_literal_kinds(text, kind, value):
    node = q(text)
    assert node.value.kind == kind
    assert node.value.value == value


def test_range_and_value_list():
    rng = q("temperature==10..20").value
    assert isinstance(rng, Range) and (rng.low.value, rng.high.value) == (10, 20)
    dates = q("d==2020-01-01..2020-12-31").value
    assert dates.low.kind == dates.high.kind == "date"
    values = q('color=="black","red",3').value
    assert [v.value for v in values] == ["black", "red", 3]


def test_paths_are_expanded_with_the_callers_context():
    node = q("temperature.observedAt>=2017-12-24T12:00:00Z")
    assert node.path.attribute == V + "temperature"
    assert node.path.metadata == "observedAt"
    node = q("sensor.rawdata[airquality.particulate]==40")
    assert node.path.sub_attributes == (V + "rawdata",)
    assert node.path.compound == ("airquality", "particulate")
    node = q('name[en-GB]=="red"')
    assert node.path.compound == ("en-GB",)


def test_context_terms_expand_to_their_iris():
    import asyncio

    ctx = asyncio.run(ContextStore().compile({"serialNumber": "https://smartdatamodels.org/serialNumber"}))
    assert parse_query('serialNumber=="9845A"', ctx).path.attribute == "https://smartdatamodels.org/serialNumber"


def test_existence_negation_and_patterns():
    assert q("isMonitoredBy") == Exists(q("isMonitoredBy").path)
    assert q("!isMonitoredBy").negated is True
    pat = q("name~=(?i)^bob(by)?;x==1").terms[0]
    assert isinstance(pat, Pattern) and pat.regex == "(?i)^bob(by)?" and not pat.negated
    assert q('name!~="a|b"').negated is True and q('name!~="a|b"').regex == "a|b"


def test_vocab_values_are_expanded():
    assert q("gender==Male").vocab_values == (V + "Male",)


@pytest.mark.parametrize(("text", "position", "fragment"), [
    ("", 0, "empty query"),
    ("a==", 3, "expected a value"),
    ("a=1", 1, "expected an operator"),
    ("1a==2", 0, "expected an attribute name"),
    ("a==1)", 4, "unbalanced ')'"),
    ("(a==1", 5, "expected ')' to close the '(' at position 0"),
    ("a==1;;b", 5, "expected an attribute name"),
    ("a==1|", 5, "expected an attribute name"),
    ("a>true", 2, "not boolean"),
    ("a<urn:x:y", 2, "not uri"),
    ("a>1,2", 1, "only allowed with == and !="),
    ("a<1..5", 1, "only allowed with == and !="),
    ("a==1..true", 6, "range bound"),
    ('a==1.."z"', 6, "different types"),
    ('a=="open', 3, "unterminated or invalid quoted string"),
    ("a~=(", 3, "invalid regular expression"),
    ("a~=", 3, "expected a regular expression"),
    ("a[b==1", 6, "expected ']'"),
    ("a.==1", 2, "attribute name after '.'"),
    ("a==hello world", 3, "is not a number"),
    ("a.observedAt.b==1", 0, "must be the last name"),
    ("!a==1", 2, "takes no operator"),
    ("a==1 b", 3, "is not a number"),
])
def test_syntax_errors_say_where_and_what(text, position, fragment):
    with pytest.raises(QuerySyntaxError) as info:
        q(text)
    err = info.value
    assert isinstance(err, BadRequestData)
    assert err.position == position, err.detail
    assert fragment in err.detail
    assert f"position {position}" in err.detail


def test_linked_entity_paths_are_reported_as_unsupported():
    with pytest.raises(OperationNotSupported, match="linked-entity"):
        q("sensor{humidity}==40")


def test_too_deep_or_too_long_queries_are_too_complex():
    with pytest.raises(TooComplexQuery):
        q("(" * 40 + "a" + ")" * 40)
    with pytest.raises(TooComplexQuery):
        q(";".join(["a==1"] * 300))
    with pytest.raises(TooComplexQuery):
        q("a==" + "1" * 9000)
