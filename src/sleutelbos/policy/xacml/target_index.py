"""The target index: among siblings, evaluate only those whose target can match (a sleutelbos optimisation).

Keyrock-style policy sets have one policy per role (target: the role) and one rule per permission (target:
``sub-resource-id`` and ``action-id``); the ABAC meter policy has one rule per organisation kind. When several
siblings' targets require the same attribute to equal one of a few constants, a dict from the attribute's value to
the candidate siblings replaces evaluating every target. A sibling that is not a candidate would have been
NotApplicable, and no combining algorithm lets a NotApplicable child change the result (Appendix C; checked for every
algorithm in ``tests/policy/test_combining.py``), so decisions are unchanged (``tests/policy/test_target_index.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .context import CURRENT_ATTRIBUTES, EvaluationContext
from .membership import EQUALITY_MATCHES, EXACT_EQUALITY_TYPES
from .model import AttributeDesignator, Target

INDEX_MIN_SIBLINGS = 4
"""Fewer siblings than this are simply evaluated in turn."""


def target_index_key(target: Target | None) -> tuple[tuple[str, str, str], frozenset[Any], bool] | None:
    """An attribute and a set of constants such that the target cannot match unless the attribute has one of them.

    Found when some ``AnyOf`` has, in each of its ``AllOf``, an equality match on the same designator (no issuer):
    a value outside the constants makes every such match False, hence every AllOf, the AnyOf and the target.
    """
    if target is None:
        return None
    for any_of in target.any_ofs:
        key = None
        constants: set[Any] = set()
        must_be_present = False
        usable = True
        for all_of in any_of.all_ofs:
            found = False
            for match in all_of.matches:
                source = match.source
                literal = match.value.value
                if (match.match_id in EQUALITY_MATCHES and isinstance(source, AttributeDesignator)
                        and source.issuer is None and literal.datatype == source.data_type
                        and literal.datatype in EXACT_EQUALITY_TYPES):  # hashing must agree with equality
                    candidate = (source.category, source.attribute_id, source.data_type)
                    if candidate in CURRENT_ATTRIBUTES:
                        continue
                    if key is None:
                        key = candidate
                    if candidate == key:
                        constants.add(literal)
                        must_be_present = must_be_present or source.must_be_present
                        found = True
            if not found:
                usable = False
                break
        if usable and key is not None:
            return key, frozenset(constants), must_be_present
    return None


def candidate_selector(children: list[Any], targets: Sequence[Target | None]
                        ) -> Callable[[EvaluationContext], Sequence[Any]] | None:
    """When enough siblings share an indexable attribute, a function selecting those that can apply; else
    ``None`` (evaluate them all)."""
    if len(children) < INDEX_MIN_SIBLINGS:
        return None
    keys = [target_index_key(t) for t in targets]
    counts: dict[tuple[str, str, str], int] = {}
    for found in keys:
        if found is not None:
            counts[found[0]] = counts.get(found[0], 0) + 1
    if not counts:
        return None
    attribute, count = max(counts.items(), key=lambda kv: kv[1])
    if count < INDEX_MIN_SIBLINGS // 2:
        return None
    always: list[int] = []
    when_absent: list[int] = []
    by_value: dict[Any, list[int]] = {}
    for position, found in enumerate(keys):
        if found is None or found[0] != attribute:
            always.append(position)
            when_absent.append(position)
            continue
        if found[2]:
            when_absent.append(position)  # MustBePresent: an absent attribute is Indeterminate, not NoMatch
        for constant in found[1]:
            # keyed by the raw value: every value under ``attribute`` has its data type, and str/int/bool hash fast
            by_value.setdefault(constant.value, []).append(position)
    absent = [children[i] for i in sorted(when_absent)]
    single = {value: [children[i] for i in sorted(set(always) | set(positions))]
              for value, positions in by_value.items()}
    positions_of = {value: frozenset(positions) for value, positions in by_value.items()}
    only_always = [children[i] for i in always]
    always_set = frozenset(always)

    def select(ctx: EvaluationContext) -> Sequence[Any]:
        values = ctx.values.get(attribute)
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
