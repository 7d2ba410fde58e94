"""Requests and responses in XACML XML and in the JSON Profile; invalid requests are refused before evaluation."""

from __future__ import annotations

import json

import pytest

from sleutelbos.policy.xacml import InvalidRequest, Pdp, load_policy, parse_request_json, parse_request_xml

NS = 'xmlns="urn:oasis:names:tc:xacml:3.0:core:schema:wd-17"'
S = "http://www.w3.org/2001/XMLSchema#string"
I = "http://www.w3.org/2001/XMLSchema#integer"  # noqa: E741
SUBJECT = "urn:oasis:names:tc:xacml:1.0:subject-category:access-subject"
RESOURCE = "urn:oasis:names:tc:xacml:3.0:attribute-category:resource"
F = "urn:oasis:names:tc:xacml:1.0:function:"

# Permit when the subject is over 17; the obligation echoes the subject's name.
POLICY = f"""<Policy {NS} PolicyId="adults" Version="1.0"
    RuleCombiningAlgId="urn:oasis:names:tc:xacml:3.0:rule-combining-algorithm:deny-unless-permit"><Target/>
  <Rule RuleId="adult" Effect="Permit"><Condition>
    <Apply FunctionId="{F}integer-greater-than">
      <Apply FunctionId="{F}integer-one-and-only">
        <AttributeDesignator Category="{SUBJECT}" AttributeId="age" DataType="{I}" MustBePresent="true"/></Apply>
      <AttributeValue DataType="{I}">17</AttributeValue></Apply></Condition>
    <ObligationExpressions><ObligationExpression ObligationId="log" FulfillOn="Permit">
      <AttributeAssignmentExpression AttributeId="who">
        <AttributeDesignator Category="{SUBJECT}" AttributeId="name" DataType="{S}" MustBePresent="false"/>
      </AttributeAssignmentExpression></ObligationExpression></ObligationExpressions>
  </Rule></Policy>"""


@pytest.fixture(scope="module")
def pdp() -> Pdp:
    return Pdp(load_policy(POLICY.encode()))


def xml_request(*subjects: tuple[str, int], include: bool = False, combined: bool = False) -> bytes:
    groups = "".join(f"""<Attributes Category="{SUBJECT}">
        <Attribute AttributeId="name" IncludeInResult="{str(include).lower()}">
          <AttributeValue DataType="{S}">{name}</AttributeValue></Attribute>
        <Attribute AttributeId="age" IncludeInResult="false"><AttributeValue DataType="{I}">{age}</AttributeValue>
        </Attribute></Attributes>""" for name, age in subjects)
    return (f'<Request {NS} ReturnPolicyIdList="false" CombinedDecision="{str(combined).lower()}">{groups}'
            "</Request>").encode()


def test_xml_decision_with_obligation(pdp: Pdp) -> None:
    response = pdp.decide(parse_request_xml(xml_request(("Ann", 30))))
    (result,) = response.results
    assert result.decision == "Permit"
    (obligation,) = result.obligations
    assert obligation.obligation_id == "log"
    assert [(a.attribute_id, a.value.value) for a in obligation.assignments] == [("who", "Ann")]
    body = pdp.decide_xml(xml_request(("Bob", 12)))
    assert b"<Decision>Deny</Decision>" in body and b"Obligation" not in body


def test_missing_attribute_is_indeterminate_with_detail_in_both_formats(pdp: Pdp) -> None:
    request = (f'<Request {NS} ReturnPolicyIdList="false" CombinedDecision="false">'
               f'<Attributes Category="{RESOURCE}"/></Request>')
    # deny-unless-permit turns the Indeterminate rule into Deny, so ask the rule's policy through a permit-overrides
    body = pdp.decide_xml(request.encode())
    assert b"<Decision>Deny</Decision>" in body
    strict = Pdp(load_policy(POLICY.replace("deny-unless-permit", "permit-overrides").encode()))
    body = strict.decide_xml(request.encode())
    assert b"<Decision>Indeterminate</Decision>" in body and b"missing-attribute" in body
    assert b'<MissingAttributeDetail Category="' + SUBJECT.encode() in body
    as_json = json.loads(strict.decide_json(json.dumps({"Request": {"Resource": {"Attribute": []}}})))
    (result,) = as_json["Response"]
    assert result["Decision"] == "Indeterminate"
    assert result["Status"]["StatusCode"]["Value"].endswith("missing-attribute")
    assert result["Status"]["StatusDetail"]["MissingAttributeDetail"][0]["AttributeId"] == "age"


def test_json_profile_shorthands_and_inferred_types(pdp: Pdp) -> None:
    request = {"Request": {"AccessSubject": {"Attribute": [
        {"AttributeId": "age", "Value": 30},  # inferred integer
        {"AttributeId": "name", "Value": "Ann", "DataType": "string", "IncludeInResult": True},
    ]}}}
    (result,) = json.loads(pdp.decide_json(json.dumps(request).encode()))["Response"]
    assert result["Decision"] == "Permit"
    assert result["Obligations"] == [{"Id": "log", "AttributeAssignment": [
        {"AttributeId": "who", "Value": "Ann", "DataType": S}]}]
    assert result["Category"] == [{"CategoryId": SUBJECT, "Attribute": [
        {"AttributeId": "name", "Value": ["Ann"], "DataType": S, "IncludeInResult": True}]}]


def test_include_in_result_in_xml(pdp: Pdp) -> None:
    body = pdp.decide_xml(xml_request(("Ann", 30), include=True))
    assert b'<Attribute AttributeId="name" IncludeInResult="true">' in body


def test_repeated_categories_give_one_result_each(pdp: Pdp) -> None:
    """Multiple Decision Profile §2.3."""
    response = pdp.decide(parse_request_xml(xml_request(("Ann", 30), ("Bob", 12), include=True)))
    assert [r.decision for r in response.results] == ["Permit", "Deny"]
    assert [r.attributes[0].attributes[0].values[0].value for r in response.results] == ["Ann", "Bob"]


def test_combined_decision(pdp: Pdp) -> None:
    both_adults = pdp.decide(parse_request_xml(xml_request(("Ann", 30), ("Cy", 40), combined=True)))
    assert [r.decision for r in both_adults.results] == ["Indeterminate"]  # obligations cannot be combined
    both_minors = pdp.decide(parse_request_xml(xml_request(("Bob", 12), ("Dee", 9), combined=True)))
    assert [r.decision for r in both_minors.results] == ["Deny"]


def test_multi_requests_by_reference(pdp: Pdp) -> None:
    body = f"""<Request {NS} ReturnPolicyIdList="false" CombinedDecision="false">
      <Attributes Category="{SUBJECT}" xml:id="young"><Attribute AttributeId="age" IncludeInResult="false">
        <AttributeValue DataType="{I}">5</AttributeValue></Attribute></Attributes>
      <Attributes Category="{SUBJECT}" xml:id="old"><Attribute AttributeId="age" IncludeInResult="false">
        <AttributeValue DataType="{I}">50</AttributeValue></Attribute></Attributes>
      <MultiRequests><RequestReference><AttributesReference ReferenceId="old"/></RequestReference>
        <RequestReference><AttributesReference ReferenceId="young"/></RequestReference></MultiRequests>
    </Request>"""
    assert [r.decision for r in pdp.decide(parse_request_xml(body.encode())).results] == ["Permit", "Deny"]


@pytest.mark.parametrize("body", [
    b"<Request",
    f'<Request {NS}><Attributes Category="{SUBJECT}"><Attribute AttributeId="age" IncludeInResult="false">'
    f'<AttributeValue DataType="{I}">old</AttributeValue></Attribute></Attributes></Request>'.encode(),
    f'<Request {NS}><Attributes><Attribute AttributeId="a"/></Attributes></Request>'.encode(),
    f'<Request {NS}><Attributes Category="c"><Attribute AttributeId="a" IncludeInResult="false">'
    '<AttributeValue DataType="urn:unknown-type">x</AttributeValue></Attribute></Attributes></Request>'.encode(),
    f'<Request {NS}><Bogus/></Request>'.encode(),
    b'<Request xmlns="urn:oasis:names:tc:xacml:2.0:context:schema:os"/>',
])
def test_invalid_xml_requests_are_refused(body: bytes) -> None:
    with pytest.raises(InvalidRequest):
        parse_request_xml(body)


@pytest.mark.parametrize("body", [
    b"{", b"[]", b'{"Request": {"Bogus": 1}}', b'{"Request": {}}',
    b'{"Request": {"AccessSubject": {"Attribute": [{"AttributeId": "age", "Value": "x", "DataType": "integer"}]}}}',
    b'{"Request": {"AccessSubject": {"Attribute": [{"Value": 1}]}}}',
    b'{"Request": {"AccessSubject": {"Attribute": [{"AttributeId": "a", "Value": [1, "x"]}]}}}',
    b'{"Request": {"ReturnPolicyIdList": "yes", "Resource": {}}}',
    b'{"Request": {"Resource": {"Attribute": [{"AttributeId": "a", "Value": 1, "Colour": "red"}]}}}',
    b'{"Request": {"Resource": {"Attribute": [{"AttributeId": "a", "Value": 1, "IncludeInResult": "no"}]}}}',
    b'{"Request": {"Resource": {"Attribute": [{"AttributeId": "a", "Value": []}]}}}',
])
def test_invalid_json_requests_are_refused(body: bytes) -> None:
    with pytest.raises(InvalidRequest):
        parse_request_json(body)


def test_current_time_is_supplied_when_the_request_has_none() -> None:
    policy = f"""<Policy {NS} PolicyId="clock" Version="1.0"
        RuleCombiningAlgId="urn:oasis:names:tc:xacml:3.0:rule-combining-algorithm:deny-unless-permit"><Target/>
      <Rule RuleId="after-2000" Effect="Permit"><Condition>
        <Apply FunctionId="{F}dateTime-greater-than">
          <Apply FunctionId="{F}dateTime-one-and-only">
            <AttributeDesignator Category="urn:oasis:names:tc:xacml:3.0:attribute-category:environment"
              AttributeId="urn:oasis:names:tc:xacml:1.0:environment:current-dateTime"
              DataType="http://www.w3.org/2001/XMLSchema#dateTime" MustBePresent="true"/></Apply>
          <AttributeValue DataType="http://www.w3.org/2001/XMLSchema#dateTime">2000-01-01T00:00:00Z</AttributeValue>
        </Apply></Condition></Rule></Policy>"""
    pdp = Pdp(load_policy(policy.encode()))
    assert pdp.decide(parse_request_json(b'{"Request": {"Resource": {}}}')).results[0].decision == "Permit"


def test_a_request_that_expands_to_too_many_individual_requests_is_refused(pdp: Pdp) -> None:
    from sleutelbos.policy.xacml.context import MAX_INDIVIDUAL_REQUESTS

    repeated = "".join(f'<Attributes Category="urn:c{c}"><Attribute AttributeId="a" IncludeInResult="false">'
                       f'<AttributeValue DataType="{S}">v</AttributeValue></Attribute></Attributes>' * 4
                       for c in range(6))  # 4**6 = 4096 combinations
    assert MAX_INDIVIDUAL_REQUESTS < 4**6
    body = f'<Request {NS} ReturnPolicyIdList="false" CombinedDecision="false">{repeated}</Request>'.encode()
    with pytest.raises(InvalidRequest, match="individual requests"):
        pdp.decide_xml(body)


def test_attribute_selector_reads_json_content() -> None:
    """JSON Profile ``Content`` is XML text; an AttributeSelector reads it like the XML request's ``<Content>``."""
    policy = f"""<Policy {NS} PolicyId="xpath" Version="1.0"
        RuleCombiningAlgId="urn:oasis:names:tc:xacml:3.0:rule-combining-algorithm:deny-unless-permit">
      <PolicyDefaults><XPathVersion>http://www.w3.org/TR/1999/REC-xpath-19991116</XPathVersion></PolicyDefaults>
      <Target/>
      <Rule RuleId="owner" Effect="Permit" xmlns:m="urn:meter"><Target><AnyOf><AllOf>
        <Match MatchId="{F}string-equal"><AttributeValue DataType="{S}">ann</AttributeValue>
          <AttributeSelector Category="{RESOURCE}" Path="/m:meter/m:owner/text()" DataType="{S}"
            MustBePresent="true"/></Match></AllOf></AnyOf></Target></Rule></Policy>"""
    pdp = Pdp(load_policy(policy.encode()))

    def decide(owner: str) -> str:
        content = f'<meter xmlns="urn:meter"><owner>{owner}</owner></meter>'
        body = json.dumps({"Request": {"Resource": {"Content": content, "Attribute": []}}})
        return json.loads(pdp.decide_json(body.encode()))["Response"][0]["Decision"]

    assert decide("ann") == "Permit"
    assert decide("bob") == "Deny"
    broken = json.dumps({"Request": {"Resource": {"Content": "not xml", "Attribute": []}}})
    assert json.loads(pdp.decide_json(broken.encode()))["Response"][0]["Decision"] == "Deny"  # Indeterminate rule
