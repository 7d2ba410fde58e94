"""Keyrock-style role-based policies and Wilma-style requests (FIWARE's RBAC over XACML).

Keyrock turns an application's roles and permissions into one ``PolicySet`` per application (``PolicySetId`` = the
application id, ``permit-overrides``): one ``Policy`` per role, one ``Rule`` per permission of that role. A rule
matches the requested path (``urn:thales:xacml:2.0:resource:sub-resource-id``, exactly or by regular expression)
and HTTP verb (``action-id``); its condition requires the role among the subject's roles
(``urn:oasis:names:tc:xacml:2.0:subject:role``). Wilma, the PEP, asks with the user's roles, the application id
(``resource-id``), the path and the verb. This module writes both, so that tests, benchmarks and the identity
component produce exactly that shape.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import orjson
from lxml import etree

XACML = "urn:oasis:names:tc:xacml:3.0:core:schema:wd-17"
STRING = "http://www.w3.org/2001/XMLSchema#string"
ACCESS_SUBJECT = "urn:oasis:names:tc:xacml:1.0:subject-category:access-subject"
RESOURCE = "urn:oasis:names:tc:xacml:3.0:attribute-category:resource"
ACTION = "urn:oasis:names:tc:xacml:3.0:attribute-category:action"
ROLE = "urn:oasis:names:tc:xacml:2.0:subject:role"
RESOURCE_ID = "urn:oasis:names:tc:xacml:1.0:resource:resource-id"
SUB_RESOURCE_ID = "urn:thales:xacml:2.0:resource:sub-resource-id"
ACTION_ID = "urn:oasis:names:tc:xacml:1.0:action:action-id"
F = "urn:oasis:names:tc:xacml:1.0:function:"


@dataclass(frozen=True)
class Permission:
    """One Keyrock permission: an HTTP verb on a path (a regular expression when ``is_regex``)."""

    permission_id: str
    action: str
    resource: str
    is_regex: bool = False


def _e(parent: etree._Element, tag: str, **attributes: str) -> etree._Element:
    return etree.SubElement(parent, f"{{{XACML}}}{tag}", attributes)


def _match(parent: etree._Element, function: str, value: str, category: str, attribute_id: str) -> None:
    all_of = _e(_e(parent, "AnyOf"), "AllOf")
    match = _e(all_of, "Match", MatchId=F + function)
    _e(match, "AttributeValue", DataType=STRING).text = value
    _e(match, "AttributeDesignator", Category=category, AttributeId=attribute_id, DataType=STRING,
       MustBePresent="true")


def keyrock_policy_set(app_id: str, roles: Mapping[str, Sequence[Permission]], version: str = "1") -> bytes:
    """The ``PolicySet`` Keyrock would post to AuthZForce for an application with these roles."""
    policy_set = etree.Element(f"{{{XACML}}}PolicySet", nsmap={None: XACML}, PolicySetId=app_id, Version=version,
                               PolicyCombiningAlgId=F.replace("function", "policy-combining-algorithm")
                               + "permit-overrides")
    _e(policy_set, "Description").text = f"Policy set for application {app_id}"
    _e(policy_set, "Target")
    for role_id, permissions in roles.items():
        policy = _e(policy_set, "Policy", PolicyId=role_id, Version="1.0",
                    RuleCombiningAlgId="urn:oasis:names:tc:xacml:3.0:rule-combining-algorithm:permit-overrides")
        _e(policy, "Description").text = f"Role {role_id} of application {app_id}"
        _match(_e(policy, "Target"), "string-equal", app_id, RESOURCE, RESOURCE_ID)
        for permission in permissions:
            rule = _e(policy, "Rule", RuleId=permission.permission_id, Effect="Permit")
            target = _e(rule, "Target")
            _match(target, "string-regexp-match" if permission.is_regex else "string-equal", permission.resource,
                   RESOURCE, SUB_RESOURCE_ID)
            _match(target, "string-equal", permission.action, ACTION, ACTION_ID)
            condition = _e(rule, "Condition")
            any_of = _e(condition, "Apply", FunctionId="urn:oasis:names:tc:xacml:3.0:function:any-of")
            _e(any_of, "Function", FunctionId=F + "string-equal")
            _e(any_of, "AttributeValue", DataType=STRING).text = role_id
            _e(any_of, "AttributeDesignator", Category=ACCESS_SUBJECT, AttributeId=ROLE, DataType=STRING,
               MustBePresent="false")
    return etree.tostring(policy_set, xml_declaration=True, encoding="UTF-8")


def wilma_request_xml(app_id: str, roles: Sequence[str], path: str, action: str) -> bytes:
    """The XACML XML request Wilma sends for a user with ``roles`` calling ``action path`` on ``app_id``."""
    request = etree.Element(f"{{{XACML}}}Request", nsmap={None: XACML}, CombinedDecision="false",
                            ReturnPolicyIdList="false")

    def attributes(category: str, values: Sequence[tuple[str, Sequence[str]]]) -> None:
        element = _e(request, "Attributes", Category=category)
        for attribute_id, texts in values:
            if not texts:  # a XACML Attribute has at least one value: a user without roles sends none
                continue
            attribute = _e(element, "Attribute", AttributeId=attribute_id, IncludeInResult="false")
            for text in texts:
                _e(attribute, "AttributeValue", DataType=STRING).text = text

    attributes(ACCESS_SUBJECT, [(ROLE, roles)])
    attributes(RESOURCE, [(RESOURCE_ID, [app_id]), (SUB_RESOURCE_ID, [path])])
    attributes(ACTION, [(ACTION_ID, [action])])
    return etree.tostring(request, xml_declaration=True, encoding="UTF-8")


def wilma_request_json(app_id: str, roles: Sequence[str], path: str, action: str) -> bytes:
    """The same request in the JSON Profile of XACML 3.0."""
    return orjson.dumps({"Request": {
        "AccessSubject": {"Attribute": [{"AttributeId": ROLE, "Value": list(roles)}] if roles else []},
        "Resource": {"Attribute": [{"AttributeId": RESOURCE_ID, "Value": app_id},
                                   {"AttributeId": SUB_RESOURCE_ID, "Value": path}]},
        "Action": {"Attribute": [{"AttributeId": ACTION_ID, "Value": action}]},
    }})
