"""Membership tests on raw values: the shortcuts the compiler takes on the hot path (XACML 3.0 §A.3.1, §A.3.10,
§A.3.11).

A designator's values live in the evaluation context as a tuple of ``AttributeValue`` of the designator's own data
type; for the types whose XACML equality is Python's ``==`` on the underlying value, "is this constant among the
values" needs neither a ``Bag`` nor a function call. The compiler uses these for equality ``Match``es,
``T-is-in(constant, designator)`` and ``T-at-least-one-member-of(designator, designator)``; an absent attribute falls
back to the designator's closure (``MustBePresent``, attribute provider), so the result is always the one the
function library would give (``tests/policy/test_fast_paths.py``).
"""

from __future__ import annotations

from typing import Any

from .context import CURRENT_ATTRIBUTES, EvaluationContext
from .model import Apply, AttributeDesignator
from .values import FALSE, TRUE

Evaluator = Any  # a closure over an EvaluationContext (see .compiler)

#: Equality functions whose XACML semantics is Python ``==`` on ``AttributeValue`` of one data type.
EQUALITY_MATCHES = frozenset(
    "urn:oasis:names:tc:xacml:1.0:function:" + name
    for name in ("string-equal", "anyURI-equal", "integer-equal", "boolean-equal", "x500Name-equal",
                 "rfc822Name-equal", "hexBinary-equal", "base64Binary-equal", "date-equal", "time-equal",
                 "dateTime-equal")
)

#: Types whose XACML equality is exactly Python ``==`` on ``AttributeValue`` (no NaN, no time-zone subtleties).
EXACT_EQUALITY_TYPES = frozenset("http://www.w3.org/2001/XMLSchema#" + t for t in ("string", "boolean", "integer",
                                                                                   "anyURI"))


def plain_key(expr: Any) -> tuple[str, str, str] | None:
    """The lookup key of a designator without issuer, of a type whose equality is Python's, not PDP-supplied."""
    if (not isinstance(expr, AttributeDesignator) or expr.issuer is not None
            or expr.data_type not in EXACT_EQUALITY_TYPES):
        return None
    key = (expr.category, expr.attribute_id, expr.data_type)
    return None if key in CURRENT_ATTRIBUTES else key


def member_of_shortcut(apply: Apply, args: list[Any]) -> Evaluator | None:
    """``T-at-least-one-member-of(designator, designator)`` (§A.3.11) on the raw value tuples."""
    if not apply.function_id.endswith("-at-least-one-member-of") or len(args) != 2:
        return None
    left, right = plain_key(apply.arguments[0]), plain_key(apply.arguments[1])
    if left is None or right is None:
        return None
    fetch_left, fetch_right = args[0].evaluate, args[1].evaluate

    def member_of(ctx: EvaluationContext) -> Any:
        values = ctx.values
        first = values.get(left)
        if first is None:
            first = fetch_left(ctx).values  # absent: MustBePresent, attribute provider
        second = values.get(right)
        if second is None:
            second = fetch_right(ctx).values
        if len(second) == 1:
            raw = second[0].value
            for value in first:
                if value.value == raw:
                    return TRUE
            return FALSE
        raws = {value.value for value in second}
        for value in first:
            if value.value in raws:
                return TRUE
        return FALSE

    return member_of


def membership_shortcut(apply: Apply, args: list[Any]) -> Evaluator | None:
    """``T-is-in(constant, designator)`` (§A.3.10) as one dict lookup and a tuple membership test."""
    if apply.function_id.endswith("-at-least-one-member-of"):
        return member_of_shortcut(apply, args)
    if not apply.function_id.endswith("-is-in") or len(args) != 2 or not args[0].constant:
        return None
    literal, source = args[0].value, apply.arguments[1]
    if (not isinstance(source, AttributeDesignator) or source.issuer is not None
            or literal.datatype not in EXACT_EQUALITY_TYPES or literal.datatype != source.data_type):
        return None
    key = (source.category, source.attribute_id, source.data_type)
    if key in CURRENT_ATTRIBUTES:
        return None
    fetch = args[1].evaluate

    raw = literal.value

    def is_in(ctx: EvaluationContext) -> Any:
        found = ctx.values.get(key)
        if found is None:
            found = fetch(ctx).values  # absent: MustBePresent, attribute provider
        for value in found:
            if value.value == raw:
                return TRUE
        return FALSE

    return is_in
