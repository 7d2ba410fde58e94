"""The target index: among siblings, evaluate only those that can apply (a sleutelbos optimisation).

A *guard* is an attribute and a few constants such that a child (rule, policy) is certainly NotApplicable unless
the attribute has one of the constants. A sibling that is not a candidate would have been NotApplicable, and no
combining algorithm lets a NotApplicable child change the result (Appendix C; checked for every algorithm in
``tests/policy/test_combining.py``), so decisions are unchanged (``tests/policy/test_target_index.py``).

Guards come from:

- a target (§7.7): an ``AnyOf`` with, in each ``AllOf``, an equality match on the same designator — a value outside
  the constants makes every such match False, hence every AllOf, the AnyOf and the target (whatever else is
  Indeterminate: tables 1-4 let False win);
- a rule's condition (§7.11), e.g. Keyrock's ``any-of(string-equal, "role", subject role)``, ``T-is-in`` or an
  ``and`` that starts with one: false when no value matches, so the rule is NotApplicable — provided its target
  cannot be Indeterminate. That holds when its matches are total functions (equality, a regular expression that
  compiles) on designators, and every ``MustBePresent`` one is in the request: the guard *requires* those attributes
  and the index falls back to evaluating every child when one is missing;
- a policy whose rules all have guards on the same attribute, under a rule-combining algorithm that gives
  NotApplicable when every rule does (all but deny-unless-permit and permit-unless-deny). Keyrock's one-policy-per-
  role sets, whose policies all share the application's target, are indexed on the role this way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .context import CURRENT_ATTRIBUTES, EvaluationContext
from .membership import EQUALITY_MATCHES, EXACT_EQUALITY_TYPES
from .model import Apply, AttributeDesignator, Constant, Function, Policy, Rule, Target
from .values import AttributeValue

INDEX_MIN_SIBLINGS = 4
"""Fewer siblings than this are simply evaluated in turn."""

Key = tuple[str, str, str]

_REGEXP_MATCHES = frozenset({"urn:oasis:names:tc:xacml:1.0:function:string-regexp-match"})
_ANY_OF = frozenset({"urn:oasis:names:tc:xacml:3.0:function:any-of", "urn:oasis:names:tc:xacml:1.0:function:any-of"})
_AND = "urn:oasis:names:tc:xacml:1.0:function:and"
_STRING = "http://www.w3.org/2001/XMLSchema#string"
#: Rule-combining algorithms whose result is NotApplicable when every rule is NotApplicable.
_NOT_APPLICABLE_WHEN_ALL_ARE = frozenset(
    prefix + name
    for prefix, names in (
        ("urn:oasis:names:tc:xacml:3.0:rule-combining-algorithm:",
         ("deny-overrides", "permit-overrides", "ordered-deny-overrides", "ordered-permit-overrides")),
        ("urn:oasis:names:tc:xacml:1.0:rule-combining-algorithm:",
         ("deny-overrides", "permit-overrides", "first-applicable")),
        ("urn:oasis:names:tc:xacml:1.1:rule-combining-algorithm:",
         ("ordered-deny-overrides", "ordered-permit-overrides")),
    )
    for name in names
)


@dataclass(frozen=True)
class Guard:
    """``key`` must have one of ``constants`` for the child to apply, provided every key in ``requires`` is
    present; ``must_be_present``: an absent ``key`` makes the child Indeterminate rather than NotApplicable."""

    key: Key
    constants: frozenset[AttributeValue]
    must_be_present: bool
    requires: frozenset[Key] = frozenset()


def _key_of(designator: Any, datatype: str) -> Key | None:
    if (not isinstance(designator, AttributeDesignator) or designator.issuer is not None
            or designator.data_type != datatype or datatype not in EXACT_EQUALITY_TYPES):
        return None
    key = (designator.category, designator.attribute_id, designator.data_type)
    return None if key in CURRENT_ATTRIBUTES else key


def target_guards(target: Target) -> list[Guard]:
    """Every guard a target gives (one per ``AnyOf`` that has one)."""
    guards = []
    for any_of in target.any_ofs:
        key: Key | None = None
        constants: set[AttributeValue] = set()
        must_be_present = False
        usable = True
        for all_of in any_of.all_ofs:
            found = False
            for match in all_of.matches:
                literal = match.value.value
                candidate = _key_of(match.source, literal.datatype) if match.match_id in EQUALITY_MATCHES else None
                if candidate is None:
                    continue
                if key is None:
                    key = candidate
                if candidate == key:
                    constants.add(literal)
                    must_be_present = must_be_present or match.source.must_be_present  # type: ignore[union-attr]
                    found = True
            if not found:
                usable = False
                break
        if usable and key is not None:
            guards.append(Guard(key, frozenset(constants), must_be_present))
    return guards


def _total_target_requirements(target: Target, functions: Callable[[str], Any]) -> frozenset[Key] | None:
    """The attributes that must be present for ``target`` never to be Indeterminate; ``None`` if it may be
    Indeterminate anyway (a selector, a function that may fail)."""
    requires: set[Key] = set()
    for any_of in target.any_ofs:
        for all_of in any_of.all_ofs:
            for match in all_of.matches:
                source = match.source
                if not isinstance(source, AttributeDesignator):
                    return None
                if match.match_id in _REGEXP_MATCHES:
                    try:  # a pattern that compiles never fails on a string
                        functions(match.match_id).impl(match.value.value, AttributeValue(_STRING, ""))
                    except Exception:
                        return None
                elif match.match_id not in EQUALITY_MATCHES:
                    return None
                if source.must_be_present:
                    if source.issuer is not None:
                        return None
                    requires.add((source.category, source.attribute_id, source.data_type))
    return frozenset(requires)


def _condition_guard(expression: Any) -> Guard | None:
    """``any-of(equality, constant, designator)``, ``T-is-in(constant, designator)``, ``and(<guard>, ...)``."""
    if not isinstance(expression, Apply):
        return None
    args = expression.arguments
    if expression.function_id == _AND and args:
        return _condition_guard(args[0])
    if expression.function_id in _ANY_OF and len(args) == 3 and isinstance(args[0], Function) \
            and args[0].function_id in EQUALITY_MATCHES:
        constant, designator = (args[1], args[2]) if isinstance(args[1], Constant) else (args[2], args[1])
    elif expression.function_id.endswith("-is-in") and len(args) == 2:
        constant, designator = args
    else:
        return None
    if not isinstance(constant, Constant):
        return None
    key = _key_of(designator, constant.value.datatype)
    if key is None:
        return None
    return Guard(key, frozenset({constant.value}), designator.must_be_present)  # type: ignore[union-attr]


def rule_guards(rule: Rule, functions: Callable[[str], Any]) -> list[Guard]:
    guards = target_guards(rule.target)
    if rule.condition is not None:
        from_condition = _condition_guard(rule.condition.expression)
        if from_condition is not None:
            requires = _total_target_requirements(rule.target, functions)
            if requires is not None:
                guards.append(Guard(from_condition.key, from_condition.constants, from_condition.must_be_present,
                                    requires))
    return guards


def policy_guards(policy: Policy, functions: Callable[[str], Any]) -> list[Guard]:
    """The target's guards, and one on an attribute that guards every rule (a NotApplicable target-Indeterminate
    policy is NotApplicable too, table 7, so the policy's target need not be total)."""
    guards = target_guards(policy.target)
    if policy.rules and policy.rule_combining_alg_id in _NOT_APPLICABLE_WHEN_ALL_ARE:
        per_rule = [{g.key: g for g in rule_guards(rule, functions)} for rule in policy.rules]
        for key in set(per_rule[0]).intersection(*per_rule[1:]):
            chosen = [found[key] for found in per_rule]
            guards.append(Guard(key, frozenset().union(*(g.constants for g in chosen)),
                                any(g.must_be_present for g in chosen),
                                frozenset().union(*(g.requires for g in chosen))))
    return guards


def candidate_selector(children: list[Any], guards: Sequence[list[Guard]]
                       ) -> Callable[[EvaluationContext], Sequence[Any]] | None:
    """When enough siblings have guards on one attribute, a function selecting those that can apply; else
    ``None`` (evaluate them all). The attribute with the most distinct constants is chosen."""
    if len(children) < INDEX_MIN_SIBLINGS:
        return None
    distinct: dict[Key, set[Any]] = {}
    counts: dict[Key, int] = {}
    for child_guards in guards:
        for guard in {g.key: g for g in child_guards}.values():
            counts[guard.key] = counts.get(guard.key, 0) + 1
            distinct.setdefault(guard.key, set()).update(guard.constants)
    usable = [key for key, count in counts.items() if count >= INDEX_MIN_SIBLINGS // 2]
    if not usable:
        return None
    attribute = max(usable, key=lambda k: (len(distinct[k]), counts[k]))
    chosen: list[Guard | None] = []
    for child_guards in guards:
        on_key = [g for g in child_guards if g.key == attribute]
        # prefer a guard that requires nothing (from a target) over one that does (from conditions)
        chosen.append(min(on_key, key=lambda g: len(g.requires)) if on_key else None)
    requires = tuple(frozenset().union(*(g.requires for g in chosen if g is not None)))
    always: list[int] = []
    when_absent: list[int] = []
    by_value: dict[Any, list[int]] = {}
    for position, guard in enumerate(chosen):
        if guard is None:
            always.append(position)
            when_absent.append(position)
            continue
        if guard.must_be_present:
            when_absent.append(position)  # MustBePresent: an absent attribute is Indeterminate, not NoMatch
        for constant in guard.constants:
            # keyed by the raw value: every value under ``attribute`` has its data type, and str/int/bool hash fast
            by_value.setdefault(constant.value, []).append(position)
    absent = [children[i] for i in sorted(when_absent)]
    single = {value: [children[i] for i in sorted(set(always) | set(positions))]
              for value, positions in by_value.items()}
    positions_of = {value: frozenset(positions) for value, positions in by_value.items()}
    only_always = [children[i] for i in always]
    always_set = frozenset(always)

    def select(ctx: EvaluationContext) -> Sequence[Any]:
        present = ctx.values
        for key in requires:
            if key not in present:
                return children  # a required attribute is missing: a guard may not hold, evaluate everything
        values = present.get(attribute)
        if values is None and ctx.provider is not None:
            values = ctx.provide(attribute, None).values
        if not values:
            return absent
        if len(values) == 1:
            return single.get(values[0].value, only_always)
        positions = set(always_set)
        for value in values:
            found = positions_of.get(value.value)
            if found is not None:
                positions |= found
        return [children[i] for i in sorted(positions)]

    return select
