"""The compiler's shortcuts (membership tests on raw values) decide exactly like the generic function calls."""

from __future__ import annotations

import itertools

import pytest

from sleutelbos.policy.xacml import Attribute, Attributes, Pdp, load_policy
from sleutelbos.policy.xacml import compiler as compiler_module
from sleutelbos.policy.xacml import expressions as expressions_module
from sleutelbos.policy.xacml.values import AttributeValue

NS = 'xmlns="urn:oasis:names:tc:xacml:3.0:core:schema:wd-17"'
S = "http://www.w3.org/2001/XMLSchema#string"
SUBJECT = "urn:oasis:names:tc:xacml:1.0:subject-category:access-subject"
RESOURCE = "urn:oasis:names:tc:xacml:3.0:attribute-category:resource"
F = "urn:oasis:names:tc:xacml:1.0:function:"


def designator(category: str, attribute_id: str, must: bool) -> str:
    return (f'<AttributeDesignator Category="{category}" AttributeId="{attribute_id}" DataType="{S}" '
            f'MustBePresent="{str(must).lower()}"/>')


def policy(must: bool) -> bytes:
    rules = f"""
      <Rule RuleId="is-in" Effect="Permit"><Condition><Apply FunctionId="{F}string-is-in">
        <AttributeValue DataType="{S}">admin</AttributeValue>{designator(SUBJECT, "role", must)}
      </Apply></Condition></Rule>
      <Rule RuleId="member-of" Effect="Deny"><Condition><Apply FunctionId="{F}string-at-least-one-member-of">
        {designator(SUBJECT, "group", must)}{designator(RESOURCE, "blocked-group", must)}
      </Apply></Condition></Rule>
      <Rule RuleId="match" Effect="Permit"><Target><AnyOf><AllOf><Match MatchId="{F}string-equal">
        <AttributeValue DataType="{S}">public</AttributeValue>{designator(RESOURCE, "label", must)}
      </Match></AllOf></AnyOf></Target></Rule>"""
    return (f'<Policy {NS} PolicyId="p" Version="1.0" RuleCombiningAlgId='
            f'"urn:oasis:names:tc:xacml:3.0:rule-combining-algorithm:deny-overrides"><Target/>{rules}</Policy>'
            ).encode()


def requests() -> list[tuple[Attributes, ...]]:
    """Every combination of absent, one and several values for the four attributes the policy reads."""
    choices = {
        (SUBJECT, "role"): [(), ("admin",), ("user", "admin"), ("user",)],
        (SUBJECT, "group"): [(), ("g1",), ("g2", "g3")],
        (RESOURCE, "blocked-group"): [(), ("g3",), ("g4", "g1")],
        (RESOURCE, "label"): [(), ("public",), ("secret",)],
    }
    out = []
    for combination in itertools.product(*choices.values()):
        groups: dict[str, list[Attribute]] = {SUBJECT: [], RESOURCE: []}
        for (category, attribute_id), values in zip(choices, combination, strict=True):
            if values:
                groups[category].append(Attribute(attribute_id, tuple(AttributeValue(S, v) for v in values)))
        out.append(tuple(Attributes(category, tuple(attributes)) for category, attributes in groups.items()))
    return out


@pytest.mark.parametrize("must", [False, True])
def test_shortcuts_agree_with_the_function_library(must: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    fast = Pdp(load_policy(policy(must)))
    monkeypatch.setattr(expressions_module, "membership_shortcut", lambda apply, args: None)
    monkeypatch.setattr(compiler_module, "EQUALITY_MATCHES", frozenset())
    generic = Pdp(load_policy(policy(must)))
    outcomes = set()
    for attributes in requests():
        a, b = fast.evaluate(attributes), generic.evaluate(attributes)
        assert (a.decision, a.status) == (b.decision, b.status), attributes
        outcomes.add(a.decision)
    assert len(outcomes) >= 3
