"""The target index never changes a decision: with and without it, every request gets the same result."""

from __future__ import annotations

import random

import pytest

from sleutelbos.policy.xacml import Attribute, Attributes, Pdp, load_policy, target_index
from sleutelbos.policy.xacml import compiler as compiler_module
from sleutelbos.policy.xacml.values import AttributeValue

NS = 'xmlns="urn:oasis:names:tc:xacml:3.0:core:schema:wd-17"'
S = "http://www.w3.org/2001/XMLSchema#string"
SUBJECT = "urn:oasis:names:tc:xacml:1.0:subject-category:access-subject"
RESOURCE = "urn:oasis:names:tc:xacml:3.0:attribute-category:resource"
ACTION = "urn:oasis:names:tc:xacml:3.0:attribute-category:action"
ROLE = "urn:oasis:names:tc:xacml:2.0:subject:role"
SUB_RESOURCE = "urn:thales:xacml:2.0:resource:sub-resource-id"
ACTION_ID = "urn:oasis:names:tc:xacml:1.0:action:action-id"
EQ = "urn:oasis:names:tc:xacml:1.0:function:string-equal"


def match(value: str, category: str, attribute_id: str, must: bool = False) -> str:
    return (f'<Match MatchId="{EQ}"><AttributeValue DataType="{S}">{value}</AttributeValue>'
            f'<AttributeDesignator Category="{category}" AttributeId="{attribute_id}" DataType="{S}" '
            f'MustBePresent="{str(must).lower()}"/></Match>')


def keyrock_policy_set(roles: int, permissions: int, seed: int) -> bytes:
    """One Policy per role (target: the role), one Rule per permission (target: resource and action), as
    Keyrock generates them; some rules have two actions, some roles require the role attribute."""
    rng = random.Random(seed)
    policies = []
    for role in range(roles):
        rules = []
        for n in range(permissions):
            actions = "".join(f"<AllOf>{match(a, ACTION, ACTION_ID)}</AllOf>"
                              for a in rng.sample(["GET", "POST", "PATCH", "DELETE"], rng.choice([1, 2])))
            rules.append(f"""<Rule RuleId="role{role}-perm{n}" Effect="{rng.choice(['Permit', 'Permit', 'Deny'])}">
              <Target><AnyOf><AllOf>{match(f"/meters/{rng.randrange(12)}", RESOURCE, SUB_RESOURCE)}</AllOf></AnyOf>
              <AnyOf>{actions}</AnyOf></Target></Rule>""")
        policies.append(f"""<Policy PolicyId="role{role}" Version="1.0"
          RuleCombiningAlgId="urn:oasis:names:tc:xacml:3.0:rule-combining-algorithm:permit-overrides">
          <Target><AnyOf><AllOf>{match(f"role{role}", SUBJECT, ROLE, must=role % 7 == 0)}</AllOf></AnyOf></Target>
          {"".join(rules)}</Policy>""")
    return (f"""<PolicySet {NS} PolicySetId="keyrock" Version="1.0"
        PolicyCombiningAlgId="urn:oasis:names:tc:xacml:3.0:policy-combining-algorithm:deny-unless-permit">
        <Target/>{"".join(policies)}</PolicySet>""").encode()


def request(rng: random.Random, roles: int) -> tuple[Attributes, ...]:
    def values(*texts: str) -> tuple[AttributeValue, ...]:
        return tuple(AttributeValue(S, t) for t in texts)

    groups = []
    if rng.random() < 0.9:  # sometimes no role at all: MustBePresent roles become Indeterminate
        role_values = values(*{f"role{rng.randrange(roles + 2)}" for _ in range(rng.choice([1, 1, 2, 3]))})
        groups.append(Attributes(SUBJECT, (Attribute(ROLE, role_values),)))
    groups.append(Attributes(RESOURCE, (Attribute(SUB_RESOURCE, values(f"/meters/{rng.randrange(14)}")),)))
    groups.append(Attributes(ACTION, (Attribute(ACTION_ID, values(rng.choice(["GET", "POST", "DELETE"]))),)))
    return tuple(groups)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_index_and_full_scan_agree(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    xml = keyrock_policy_set(roles=30, permissions=8, seed=seed)
    indexed = Pdp(load_policy(xml))
    monkeypatch.setattr(target_index, "INDEX_MIN_SIBLINGS", 10**9)
    scanned = Pdp(load_policy(xml))  # compiled again, without the index
    assert scanned._root is not indexed._root
    rng = random.Random(seed)
    decisions = set()
    for _ in range(400):
        attributes = request(rng, 30)
        for with_ids in (False, True):
            a, b = indexed.evaluate(attributes, with_ids), scanned.evaluate(attributes, with_ids)
            assert (a.decision, a.status, a.obligations, a.policies) == (b.decision, b.status, b.obligations,
                                                                          b.policies)
        decisions.add(a.decision)
    assert len(decisions) >= 2  # the requests exercise more than one outcome


def test_index_skips_policies_that_cannot_apply(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the index, only the rules whose resource constant is the request's are evaluated at all."""
    evaluated: list[object] = []
    original = compiler_module.Compiler.rule

    def counting_rule(self, rule, parent, variables):  # type: ignore[no-untyped-def]
        node = original(self, rule, parent, variables)
        inner = node.evaluate

        def evaluate(ctx):  # type: ignore[no-untyped-def]
            evaluated.append(rule)
            return inner(ctx)

        node.evaluate = evaluate
        return node

    monkeypatch.setattr(compiler_module.Compiler, "rule", counting_rule)
    pdp = Pdp(load_policy(keyrock_policy_set(roles=50, permissions=10, seed=4)))
    attributes = (Attributes(SUBJECT, (Attribute(ROLE, (AttributeValue(S, "role3"),)),)),
                  Attributes(RESOURCE, (Attribute(SUB_RESOURCE, (AttributeValue(S, "/meters/1"),)),)),
                  Attributes(ACTION, (Attribute(ACTION_ID, (AttributeValue(S, "GET"),)),)))
    pdp.evaluate(attributes)
    assert evaluated
    for rule in evaluated:
        assert rule.rule_id.startswith("role3-")  # type: ignore[attr-defined]
        resource_match = rule.target.any_ofs[0].all_ofs[0].matches[0]  # type: ignore[attr-defined]
        assert resource_match.value.value.value == "/meters/1"


# --- Keyrock's shape: every role's Policy has the application's target; the role is tested in each rule's Condition


def keyrock_shaped(roles: int, permissions: int, seed: int) -> bytes:
    from sleutelbos.policy.rbac import Permission
    from sleutelbos.policy.rbac import keyrock_policy_set as keyrock

    rng = random.Random(seed)
    return keyrock("app-1", {
        f"role{r}": [Permission(f"r{r}p{n}", rng.choice(["GET", "POST", "DELETE"]),
                                f"/meters/{rng.randrange(8)}" if rng.random() < 0.8 else r"/meters/[0-9]+/readings",
                                is_regex=rng.random() >= 0.8)
                     for n in range(permissions)]
        for r in range(roles)
    })


def wilma_like(rng: random.Random, roles: int) -> tuple[Attributes, ...]:
    from sleutelbos.policy.rbac import RESOURCE_ID

    def values(*texts: str) -> tuple[AttributeValue, ...]:
        return tuple(AttributeValue(S, t) for t in texts)

    subject = []
    if rng.random() < 0.85:
        subject.append(Attribute(ROLE, values(*{f"role{rng.randrange(roles + 3)}" for _ in range(rng.choice([1, 2]))})))
    resource = [Attribute(RESOURCE_ID, values(rng.choice(["app-1", "app-1", "app-2"])))]
    if rng.random() < 0.9:  # MustBePresent in every rule target: without it every rule is Indeterminate
        path = rng.choice([f"/meters/{rng.randrange(9)}", f"/meters/{rng.randrange(9)}/readings"])
        resource.append(Attribute(SUB_RESOURCE, values(path)))
    groups = [Attributes(SUBJECT, tuple(subject)), Attributes(RESOURCE, tuple(resource))]
    if rng.random() < 0.95:
        groups.append(Attributes(ACTION, (Attribute(ACTION_ID, values(rng.choice(["GET", "POST", "PUT"]))),)))
    return tuple(groups)


@pytest.mark.parametrize("seed", [5, 6])
def test_role_guards_from_conditions_agree_with_a_full_scan(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    xml = keyrock_shaped(roles=40, permissions=6, seed=seed)
    indexed = Pdp(load_policy(xml))
    monkeypatch.setattr(target_index, "INDEX_MIN_SIBLINGS", 10**9)
    scanned = Pdp(load_policy(xml))
    rng = random.Random(seed)
    decisions = set()
    for _ in range(500):
        attributes = wilma_like(rng, 40)
        a, b = indexed.evaluate(attributes, True), scanned.evaluate(attributes, True)
        assert (a.decision, a.status, a.policies) == (b.decision, b.status, b.policies), attributes
        decisions.add(a.decision)
    assert len(decisions) >= 3  # Permit, NotApplicable and Indeterminate (missing MustBePresent attributes)


def test_role_guards_skip_the_other_roles_policies(monkeypatch: pytest.MonkeyPatch) -> None:
    evaluated: list[str] = []
    original = compiler_module.Compiler.policy

    def counting_policy(self, node):  # type: ignore[no-untyped-def]
        compiled = original(self, node)
        inner = compiled.evaluate

        def evaluate(ctx):  # type: ignore[no-untyped-def]
            evaluated.append(node.policy_id)
            return inner(ctx)

        compiled.evaluate = evaluate
        return compiled

    monkeypatch.setattr(compiler_module.Compiler, "policy", counting_policy)
    pdp = Pdp(load_policy(keyrock_shaped(roles=200, permissions=5, seed=7)))
    from sleutelbos.policy.rbac import RESOURCE_ID

    request = (Attributes(SUBJECT, (Attribute(ROLE, (AttributeValue(S, "role12"),)),)),
               Attributes(RESOURCE, (Attribute(RESOURCE_ID, (AttributeValue(S, "app-1"),)),
                                     Attribute(SUB_RESOURCE, (AttributeValue(S, "/meters/1"),)))),
               Attributes(ACTION, (Attribute(ACTION_ID, (AttributeValue(S, "GET"),)),)))
    pdp.evaluate(request)
    assert evaluated == ["role12"]
    evaluated.clear()
    pdp.evaluate(request[:2])  # no action-id, which every rule requires: the guards may not hold, so no skipping
    assert len(evaluated) == 200


def test_a_rule_whose_target_may_fail_is_never_skipped() -> None:
    """A regular expression that does not compile makes its rule Indeterminate for every request, whatever the
    role: that policy must stay a candidate."""
    from sleutelbos.policy.rbac import Permission, wilma_request_json
    from sleutelbos.policy.rbac import keyrock_policy_set as keyrock

    roles = {f"role{r}": [Permission(f"p{r}", "GET", "/m/1")] for r in range(6)}
    roles["broken"] = [Permission("bad", "GET", "([", is_regex=True)]
    pdp = Pdp(load_policy(keyrock("app", roles)))
    (result,) = pdp.decide_json(wilma_request_json("app", ["role9"], "/m/1", "GET")).decode().split('"Decision":')[1:]
    assert result.startswith('"Indeterminate"')
