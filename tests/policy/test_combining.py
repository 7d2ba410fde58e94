"""Combining algorithms (XACML 3.0 Appendix C) with extended Indeterminate, and §7.11-7.13 at rule/policy level."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sleutelbos.policy.xacml import Attribute, Attributes, Pdp, load_policy
from sleutelbos.policy.xacml.combining import POLICY_COMBINING, RULE_COMBINING, only_one_applicable
from sleutelbos.policy.xacml.decision import (
    DENY,
    INDETERMINATE_D,
    INDETERMINATE_DP,
    INDETERMINATE_P,
    NOT_APPLICABLE,
    PERMIT,
    Evaluation,
    Obligation,
    Status,
)
from sleutelbos.policy.xacml.values import AttributeValue

P, D, NA, ID, IP, IDP = PERMIT, DENY, NOT_APPLICABLE, INDETERMINATE_D, INDETERMINATE_P, INDETERMINATE_DP
ERR = Status("urn:oasis:names:tc:xacml:1.0:status:processing-error", "boom")
R3 = "urn:oasis:names:tc:xacml:3.0:rule-combining-algorithm:"
P3 = "urn:oasis:names:tc:xacml:3.0:policy-combining-algorithm:"
R1 = "urn:oasis:names:tc:xacml:1.0:rule-combining-algorithm:"
P1 = "urn:oasis:names:tc:xacml:1.0:policy-combining-algorithm:"
CTX = SimpleNamespace(return_policy_ids=False)


class Child:
    """A combinable child with a fixed result; remembers whether it was evaluated."""

    def __init__(self, decision: int, obligation: str | None = None) -> None:
        status = ERR if decision >= INDETERMINATE_D else None
        obligations = (Obligation(obligation),) if obligation else ()
        self.result = Evaluation(decision, status, obligations)
        self.evaluated = False

    def evaluate(self, _ctx: object) -> Evaluation:
        self.evaluated = True
        return self.result


def combine(algorithm: str, *decisions: int) -> int:
    table = RULE_COMBINING if "rule-combining" in algorithm else POLICY_COMBINING
    return table[algorithm]([Child(d) for d in decisions], CTX).decision


@pytest.mark.parametrize(("decisions", "expected"), [
    ((), NA), ((NA, NA), NA), ((P, D), D), ((IDP, D), D), ((P, ID), IDP), ((ID,), ID), ((ID, IP), IDP),
    ((IP, P), P), ((IP,), IP), ((IDP, P), IDP), ((P, NA), P),
])
@pytest.mark.parametrize("alg", [R3 + "deny-overrides", R3 + "ordered-deny-overrides", P3 + "deny-overrides",
                                 P3 + "ordered-deny-overrides"])
def test_deny_overrides(alg: str, decisions: tuple[int, ...], expected: int) -> None:
    assert combine(alg, *decisions) == expected


@pytest.mark.parametrize(("decisions", "expected"), [
    ((), NA), ((D, P), P), ((IDP, P), P), ((D, IP), IDP), ((IP,), IP), ((ID, IP), IDP), ((ID, D), D),
    ((ID,), ID), ((IDP, D), IDP),
])
@pytest.mark.parametrize("alg", [R3 + "permit-overrides", P3 + "ordered-permit-overrides"])
def test_permit_overrides(alg: str, decisions: tuple[int, ...], expected: int) -> None:
    assert combine(alg, *decisions) == expected


def test_unless_algorithms_never_answer_not_applicable_or_indeterminate() -> None:
    assert combine(R3 + "deny-unless-permit", IDP, NA) == D
    assert combine(R3 + "deny-unless-permit", D, P) == P
    assert combine(P3 + "permit-unless-deny", IDP, NA) == P
    assert combine(P3 + "permit-unless-deny", P, D) == D
    assert combine(P3 + "deny-unless-permit") == D


def test_first_applicable_stops_at_the_first_applicable_child() -> None:
    children = [Child(NA), Child(ID), Child(P)]
    result = RULE_COMBINING[R1 + "first-applicable"](children, CTX)
    assert result.decision == ID
    assert not children[2].evaluated


def test_deny_overrides_stops_at_the_first_deny() -> None:
    children = [Child(P), Child(D), Child(P)]
    assert POLICY_COMBINING[P3 + "deny-overrides"](children, CTX).decision == D
    assert not children[2].evaluated


class Targeted(Child):
    def __init__(self, target: bool | Status, decision: int) -> None:
        super().__init__(decision)
        self.target = target

    def match_target(self, _ctx: object) -> bool | Status:
        return self.target

    def evaluate_body(self, ctx: object) -> Evaluation:
        return self.evaluate(ctx)


def test_only_one_applicable() -> None:
    assert only_one_applicable([Targeted(False, P), Targeted(True, D)], CTX).decision == D
    assert only_one_applicable([Targeted(True, P), Targeted(True, D)], CTX).decision == IDP
    assert only_one_applicable([Targeted(ERR, P), Targeted(True, D)], CTX).decision == IDP
    assert only_one_applicable([Targeted(False, P)], CTX).decision == NA


def test_legacy_algorithms() -> None:
    # C.10: an Indeterminate rule whose effect is Deny is a potential Deny, even next to a Permit.
    assert combine(R1 + "deny-overrides", ID, P) == IDP
    assert combine(R1 + "deny-overrides", IP, P) == P
    assert combine(R1 + "deny-overrides", IP) == IP
    # C.11: an Indeterminate policy counts as Deny.
    assert combine(P1 + "deny-overrides", IDP, P) == D
    # C.12 / C.13
    assert combine(R1 + "permit-overrides", IP, D) == IDP
    assert combine(R1 + "permit-overrides", ID, D) == D
    assert combine(P1 + "permit-overrides", IDP, D) == D
    assert combine(P1 + "permit-overrides", IDP) == IDP
    assert combine("urn:oasis:names:tc:xacml:1.1:policy-combining-algorithm:ordered-permit-overrides", D, P) == P


def test_obligations_come_from_the_children_that_agree_with_the_decision() -> None:
    alg = POLICY_COMBINING[P3 + "deny-overrides"]
    both_permit = alg([Child(P, "p1"), Child(NA, "na"), Child(P, "p2")], CTX)
    assert [o.obligation_id for o in both_permit.obligations] == ["p1", "p2"]
    denied = alg([Child(P, "p1"), Child(D, "d1")], CTX)
    assert [o.obligation_id for o in denied.obligations] == ["d1"]
    unless = POLICY_COMBINING[P3 + "deny-unless-permit"]([Child(D, "d1"), Child(IDP), Child(D, "d2")], CTX)
    assert unless.decision == D and [o.obligation_id for o in unless.obligations] == ["d1", "d2"]


# --- rule and policy evaluation (§7.11-7.13) on real policies

NS = 'xmlns="urn:oasis:names:tc:xacml:3.0:core:schema:wd-17"'
S = "http://www.w3.org/2001/XMLSchema#string"
SUBJECT = "urn:oasis:names:tc:xacml:1.0:subject-category:access-subject"


def _policy(target: str, rules: str, alg: str = "deny-overrides") -> Pdp:
    return Pdp(load_policy(f"""<Policy {NS} PolicyId="p" Version="1.0"
        RuleCombiningAlgId="{R3}{alg}"><Target>{target}</Target>{rules}</Policy>""".encode()))


MISSING_TARGET = f"""<AnyOf><AllOf><Match MatchId="urn:oasis:names:tc:xacml:1.0:function:string-equal">
    <AttributeValue DataType="{S}">x</AttributeValue>
    <AttributeDesignator Category="{SUBJECT}" AttributeId="absent" DataType="{S}" MustBePresent="true"/>
    </Match></AllOf></AnyOf>"""
REQUEST = (Attributes(SUBJECT, (Attribute("role", (AttributeValue(S, "nurse"),)),)),)


def test_indeterminate_policy_target_keeps_what_the_rules_would_have_said() -> None:
    """§7.13 table 7: target Indeterminate + rules Permit → Indeterminate{P}; Deny → {D}; NotApplicable → NA."""
    assert _policy(MISSING_TARGET, '<Rule RuleId="r" Effect="Permit"/>').evaluate(REQUEST).decision == IP
    assert _policy(MISSING_TARGET, '<Rule RuleId="r" Effect="Deny"/>').evaluate(REQUEST).decision == ID
    no_match = f"""<Rule RuleId="r" Effect="Deny"><Target><AnyOf><AllOf>
        <Match MatchId="urn:oasis:names:tc:xacml:1.0:function:string-equal">
        <AttributeValue DataType="{S}">doctor</AttributeValue>
        <AttributeDesignator Category="{SUBJECT}" AttributeId="role" DataType="{S}" MustBePresent="false"/>
        </Match></AllOf></AnyOf></Target></Rule>"""
    assert _policy(MISSING_TARGET, no_match).evaluate(REQUEST).decision == NA


def test_rule_with_indeterminate_condition_is_indeterminate_of_its_effect() -> None:
    condition = f"""<Condition><Apply FunctionId="urn:oasis:names:tc:xacml:1.0:function:string-equal">
        <Apply FunctionId="urn:oasis:names:tc:xacml:1.0:function:string-one-and-only">
        <AttributeDesignator Category="{SUBJECT}" AttributeId="absent" DataType="{S}" MustBePresent="false"/>
        </Apply><AttributeValue DataType="{S}">x</AttributeValue></Apply></Condition>"""
    permit = _policy("", f'<Rule RuleId="r" Effect="Permit">{condition}</Rule>').evaluate(REQUEST)
    assert permit.decision == IP
    assert permit.status is not None and permit.status.code.endswith("processing-error")
    deny = _policy("", f'<Rule RuleId="r" Effect="Deny">{condition}</Rule>').evaluate(REQUEST)
    assert deny.decision == ID


def test_missing_attribute_detail_names_the_attribute() -> None:
    result = _policy(MISSING_TARGET, '<Rule RuleId="r" Effect="Permit"/>').evaluate(REQUEST)
    assert result.status is not None and result.status.code.endswith("missing-attribute")
    (detail,) = result.status.missing_attributes
    assert (detail.category, detail.attribute_id, detail.data_type) == (SUBJECT, "absent", S)


# --- properties of Appendix C that hold for every input

DECISIONS = st.lists(st.sampled_from([P, D, NA, ID, IP, IDP]), max_size=8)
SWAP = {P: D, D: P, NA: NA, ID: IP, IP: ID, IDP: IDP}


@given(DECISIONS)
def test_overrides_algorithms_ignore_order(decisions: list[int]) -> None:
    for alg in (R3 + "deny-overrides", R3 + "permit-overrides", P3 + "deny-unless-permit"):
        assert combine(alg, *decisions) == combine(alg, *reversed(decisions))


@given(DECISIONS)
def test_permit_overrides_is_the_mirror_of_deny_overrides(decisions: list[int]) -> None:
    mirrored = [SWAP[d] for d in decisions]
    assert combine(R3 + "permit-overrides", *mirrored) == SWAP[combine(R3 + "deny-overrides", *decisions)]
    assert combine(R3 + "permit-unless-deny", *mirrored) == SWAP[combine(R3 + "deny-unless-permit", *decisions)]


@given(DECISIONS)
def test_not_applicable_children_never_change_the_result(decisions: list[int]) -> None:
    """What makes the target index safe: skipping NotApplicable children changes nothing."""
    applicable = [d for d in decisions if d != NA]
    for alg in [*RULE_COMBINING, *POLICY_COMBINING]:
        if alg.endswith("only-one-applicable"):
            continue
        assert combine(alg, *decisions) == combine(alg, *applicable)
