"""Policies are validated when loaded: every rejection names the element and the reason."""

from __future__ import annotations

import pytest

from sleutelbos.policy.xacml import InvalidPolicy, Pdp, load_policy
from sleutelbos.policy.xacml.model import IdReference
from sleutelbos.policy.xacml.pdp import version_matches

NS = 'xmlns="urn:oasis:names:tc:xacml:3.0:core:schema:wd-17"'
S = "http://www.w3.org/2001/XMLSchema#string"
I = "http://www.w3.org/2001/XMLSchema#integer"  # noqa: E741
F = "urn:oasis:names:tc:xacml:1.0:function:"
RULE_ALG = "urn:oasis:names:tc:xacml:3.0:rule-combining-algorithm:deny-overrides"
POLICY_ALG = "urn:oasis:names:tc:xacml:3.0:policy-combining-algorithm:deny-overrides"
SUBJECT = "urn:oasis:names:tc:xacml:1.0:subject-category:access-subject"


def policy(body: str, policy_id: str = "p", version: str = "1.0") -> bytes:
    return (f'<Policy {NS} PolicyId="{policy_id}" Version="{version}" RuleCombiningAlgId="{RULE_ALG}">'
            f"<Target/>{body}</Policy>").encode()


def policy_set(body: str, set_id: str = "ps", version: str = "1.0") -> bytes:
    return (f'<PolicySet {NS} PolicySetId="{set_id}" Version="{version}" PolicyCombiningAlgId="{POLICY_ALG}">'
            f"<Target/>{body}</PolicySet>").encode()


def condition(expression: str) -> str:
    return f'<Rule RuleId="r" Effect="Permit"><Condition>{expression}</Condition></Rule>'


def value(text: str, datatype: str = S) -> str:
    return f'<AttributeValue DataType="{datatype}">{text}</AttributeValue>'


def designator(attribute_id: str, datatype: str = S) -> str:
    return (f'<AttributeDesignator Category="{SUBJECT}" AttributeId="{attribute_id}" DataType="{datatype}" '
            'MustBePresent="false"/>')


def rejected(xml: bytes) -> str:
    with pytest.raises(InvalidPolicy) as caught:
        load_policy(xml)
    return caught.value.detail


def test_a_valid_policy_loads_with_its_identity() -> None:
    document = load_policy(policy('<Rule RuleId="r" Effect="Permit"/>', "urn:p", "2.1.3"))
    assert (document.kind, document.policy_id, document.version) == ("Policy", "urn:p", "2.1.3")


def test_duplicate_ids_are_rejected() -> None:
    detail = rejected(policy('<Rule RuleId="r" Effect="Permit"/><Rule RuleId="r" Effect="Deny"/>'))
    assert "duplicate RuleId 'r'" in detail and "<Policy PolicyId='p'>" in detail
    twice = f'<VariableDefinition VariableId="v">{value("a")}</VariableDefinition>' * 2
    assert "duplicate VariableId 'v'" in rejected(policy(twice))
    inner = policy('<Rule RuleId="r" Effect="Permit"/>', "same").decode().replace(f" {NS}", "")
    assert "duplicate PolicyId 'same'" in rejected(policy_set(inner + inner))
    nested = policy_set("", "ps").decode().replace(f" {NS}", "")
    assert "duplicate PolicySetId 'ps'" in rejected(policy_set(nested, "ps"))


def test_functions_and_types_are_checked() -> None:
    unknown = rejected(policy(condition(f'<Apply FunctionId="{F}no-such-function">{value("a")}</Apply>')))
    assert "unknown function" in unknown and "no-such-function" in unknown
    arity = rejected(policy(condition(f'<Apply FunctionId="{F}string-equal">{value("a")}</Apply>')))
    assert "string-equal" in arity and "<Condition>" in arity
    wrong_type = rejected(policy(condition(f'<Apply FunctionId="{F}string-equal">{value("a")}{value("1", I)}</Apply>')))
    assert "integer" in wrong_type
    bag_for_value = rejected(policy(condition(f'<Apply FunctionId="{F}string-equal">{value("a")}{designator("x")}'
                                              "</Apply>")))
    assert "bag" in bag_for_value
    not_boolean = rejected(policy(condition(f'<Apply FunctionId="{F}integer-add">{value("1", I)}{value("2", I)}'
                                            "</Apply>")))
    assert "boolean" in not_boolean


def test_match_functions_are_checked() -> None:
    target = (f'<Rule RuleId="r" Effect="Permit"><Target><AnyOf><AllOf><Match MatchId="{F}string-equal">'
              f'{value("45", I)}{designator("x")}</Match></AllOf></AnyOf></Target></Rule>')
    assert "string-equal" in rejected(policy(target))


def test_values_must_be_in_their_lexical_space() -> None:
    detail = rejected(policy(condition(f'<Apply FunctionId="{F}integer-equal">{value("forty", I)}'
                                       f'{value("1", I)}</Apply>')))
    assert "forty" in detail and "AttributeValue" in detail


def test_constant_expressions_that_always_fail_are_rejected() -> None:
    substring = (f'<Apply FunctionId="{F}string-equal"><Apply FunctionId="urn:oasis:names:tc:xacml:3.0:function:'
                 f'string-substring">{value("abc")}{value("-2", I)}{value("1", I)}</Apply>{value("a")}</Apply>')
    assert "always fails" in rejected(policy(condition(substring)))


def test_variables_must_be_defined_and_acyclic() -> None:
    undefined = rejected(policy(condition('<VariableReference VariableId="nowhere"/>')))
    assert "nowhere" in undefined and "no VariableDefinition" in undefined
    cycle = ('<VariableDefinition VariableId="a"><VariableReference VariableId="b"/></VariableDefinition>'
             '<VariableDefinition VariableId="b"><VariableReference VariableId="a"/></VariableDefinition>')
    assert "circular VariableReference" in rejected(policy(cycle))


def test_schema_violations_are_rejected() -> None:
    assert "Effect='Maybe'" in rejected(policy('<Rule RuleId="r" Effect="Maybe"/>'))
    no_target = f'<Policy {NS} PolicyId="p" Version="1.0" RuleCombiningAlgId="{RULE_ALG}"/>'.encode()
    assert "<Target> element is required" in rejected(no_target)
    assert "unknown RuleCombiningAlgId" in rejected(policy("").replace(RULE_ALG.encode(), b"urn:nope"))
    assert "not a XACML VersionType" in rejected(policy("", version="1.x"))
    assert "not well-formed" in rejected(b"<Policy")
    assert "must be a XACML 3.0" in rejected(b'<Policy xmlns="urn:oasis:names:tc:xacml:2.0:policy:schema:os"/>')


def test_external_entities_are_never_resolved() -> None:
    xxe = (b'<?xml version="1.0"?><!DOCTYPE p [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
           + policy(condition(f'<Apply FunctionId="{F}string-equal">{value("&e;")}{value("a")}</Apply>')))
    with pytest.raises(InvalidPolicy):
        load_policy(xxe)


# --- references (§5.10-5.13), checked when the PDP is built


def reference(kind: str, ref_id: str, **constraints: str) -> str:
    attributes = "".join(f' {k}="{v}"' for k, v in constraints.items())
    return f"<{kind}IdReference{attributes}>{ref_id}</{kind}IdReference>"


def test_undefined_reference_is_rejected() -> None:
    root = load_policy(policy_set(reference("Policy", "missing")))
    with pytest.raises(InvalidPolicy, match="PolicyIdReference 'missing'"):
        Pdp(root, [])


def test_circular_reference_is_rejected() -> None:
    a = load_policy(policy_set(reference("PolicySet", "b"), "a"))
    b = load_policy(policy_set(reference("PolicySet", "a"), "b"))
    with pytest.raises(InvalidPolicy, match="circular policy reference"):
        Pdp(load_policy(policy_set(reference("PolicySet", "a"), "root")), [a, b])


def test_reference_takes_the_latest_matching_version() -> None:
    versions = [load_policy(policy(f'<Rule RuleId="r{v}" Effect="Permit"/>', "target", v))
                for v in ("1.0", "1.2", "1.10", "2.0")]
    pdp = Pdp(load_policy(policy_set(reference("Policy", "target", Version="1.*"))), versions)
    result = pdp.evaluate((), return_policy_ids=True)
    assert [(p.policy_id, p.version) for p in result.policies if p.kind == "Policy"] == [("target", "1.10")]


@pytest.mark.parametrize(("constraints", "version", "expected"), [
    ({"version": "1.*"}, "1.4", True), ({"version": "1.*"}, "1.4.1", False), ({"version": "1.+"}, "1.4.1", True),
    ({"version": "2.0"}, "2.0", True), ({"version": "2.0"}, "2.0.1", False),
    ({"earliest_version": "1.5"}, "1.4", False), ({"earliest_version": "1.5"}, "1.10", True),
    ({"latest_version": "1.5"}, "1.10", False), ({"latest_version": "1.*"}, "1.99", True),
    ({"latest_version": "1.*"}, "2.0", False),
])
def test_version_matching(constraints: dict[str, str], version: str, expected: bool) -> None:
    assert version_matches(IdReference("Policy", "x", **constraints), version) is expected  # type: ignore[arg-type]


def test_compiling_restores_the_garbage_collector_even_when_compilations_overlap() -> None:
    import gc
    import threading

    from sleutelbos.policy.xacml.compiler import gc_paused

    assert gc.isenabled()
    inside = threading.Event()
    release = threading.Event()

    def compile_slowly() -> None:
        with gc_paused():
            inside.set()
            release.wait(5)

    worker = threading.Thread(target=compile_slowly)
    worker.start()
    inside.wait(5)
    with gc_paused():
        assert not gc.isenabled()
    assert not gc.isenabled()  # the other compilation is still running
    release.set()
    worker.join(5)
    assert gc.isenabled()
    with pytest.raises(InvalidPolicy):
        load_policy(b"<Policy")
    assert gc.isenabled()  # restored after a failed load too
