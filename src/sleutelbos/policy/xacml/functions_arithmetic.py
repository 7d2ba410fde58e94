"""Arithmetic (§A.3.2), numeric conversion (§A.3.4) and numeric comparison (§A.3.6) functions.

Integers are unbounded (XML Schema ``integer`` is), doubles are IEEE 754. Division and ``mod`` by zero are
Indeterminate with ``processing-error`` (§A.3.2). ``integer-divide`` and ``integer-mod`` truncate toward zero, as
XQuery's ``op:numeric-integer-divide``/``op:numeric-mod`` do (so ``-7 mod 2 = -1``); ``round`` rounds halves up
(XQuery ``fn:round``: ``round(-2.5) = -2``); ``double-to-integer`` truncates toward zero, and has no answer for
``NaN`` or the infinities (processing-error).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from sleutelbos.policy.xacml import datatypes as dt
from sleutelbos.policy.xacml.function_spec import FunctionSpec, ParamSpec
from sleutelbos.policy.xacml.status import XacmlProcessingError
from sleutelbos.policy.xacml.values import AttributeValue, boolean

V10 = "urn:oasis:names:tc:xacml:1.0:function:"

INT, DBL = ParamSpec(dt.INTEGER), ParamSpec(dt.DOUBLE)


def _int(value: int) -> AttributeValue:
    return AttributeValue(dt.INTEGER, value)


def _dbl(value: float) -> AttributeValue:
    return AttributeValue(dt.DOUBLE, dt.NAN if value != value else value)


def integer_add(*args: AttributeValue) -> AttributeValue:
    return _int(sum(a.value for a in args))


def double_add(*args: AttributeValue) -> AttributeValue:
    total = 0.0
    for a in args:
        total += a.value
    return _dbl(total)


def integer_multiply(*args: AttributeValue) -> AttributeValue:
    return _int(math.prod(a.value for a in args))


def double_multiply(*args: AttributeValue) -> AttributeValue:
    product = 1.0
    for a in args:
        product *= a.value
    return _dbl(product)


def integer_subtract(a: AttributeValue, b: AttributeValue) -> AttributeValue:
    return _int(a.value - b.value)


def double_subtract(a: AttributeValue, b: AttributeValue) -> AttributeValue:
    return _dbl(a.value - b.value)


def _truncated_quotient(n: int, d: int) -> int:
    q = abs(n) // abs(d)
    return q if (n >= 0) == (d > 0) else -q


def integer_divide(a: AttributeValue, b: AttributeValue) -> AttributeValue:
    if b.value == 0:
        raise XacmlProcessingError("integer-divide by zero")
    return _int(_truncated_quotient(a.value, b.value))


def integer_mod(a: AttributeValue, b: AttributeValue) -> AttributeValue:
    if b.value == 0:
        raise XacmlProcessingError("integer-mod by zero")
    return _int(a.value - b.value * _truncated_quotient(a.value, b.value))


def double_divide(a: AttributeValue, b: AttributeValue) -> AttributeValue:
    if b.value == 0:
        raise XacmlProcessingError("double-divide by zero")
    return _dbl(a.value / b.value)


def integer_abs(a: AttributeValue) -> AttributeValue:
    return _int(abs(a.value))


def double_abs(a: AttributeValue) -> AttributeValue:
    return _dbl(abs(a.value))


def round_(a: AttributeValue) -> AttributeValue:
    x = a.value
    if math.isnan(x) or math.isinf(x):
        return a
    return _dbl(float(math.floor(x + 0.5)))


def floor(a: AttributeValue) -> AttributeValue:
    x = a.value
    if math.isnan(x) or math.isinf(x):
        return a
    return _dbl(float(math.floor(x)))


def double_to_integer(a: AttributeValue) -> AttributeValue:
    x = a.value
    if math.isnan(x) or math.isinf(x):
        raise XacmlProcessingError(f"double-to-integer of {dt.format_double(x)}")
    return _int(int(x))


def integer_to_double(a: AttributeValue) -> AttributeValue:
    try:
        return _dbl(float(a.value))
    except OverflowError:
        raise XacmlProcessingError(f"integer-to-double: {a.value} is beyond the double range") from None


def _comparison(op: Callable[[object, object], bool]) -> Callable[[AttributeValue, AttributeValue], AttributeValue]:
    def compare(a: AttributeValue, b: AttributeValue) -> AttributeValue:
        return boolean(op(a.value, b.value))

    return compare


def greater_than(x: object, y: object) -> bool:
    return x > y  # type: ignore[operator,no-any-return]


def greater_than_or_equal(x: object, y: object) -> bool:
    return x >= y  # type: ignore[operator,no-any-return]


def less_than(x: object, y: object) -> bool:
    return x < y  # type: ignore[operator,no-any-return]


def less_than_or_equal(x: object, y: object) -> bool:
    return x <= y  # type: ignore[operator,no-any-return]


ORDERINGS: tuple[tuple[str, Callable[[object, object], bool]], ...] = (
    ("greater-than", greater_than),
    ("greater-than-or-equal", greater_than_or_equal),
    ("less-than", less_than),
    ("less-than-or-equal", less_than_or_equal),
)


def comparison_specs(prefix: str, name: str, datatype: str) -> list[FunctionSpec]:
    """``<name>-greater-than`` … ``<name>-less-than-or-equal`` over a totally (or IEEE-) ordered type."""
    p = ParamSpec(datatype)
    return [
        FunctionSpec(f"{prefix}{name}-{suffix}", (p, p), dt.BOOLEAN, False, _comparison(op))
        for suffix, op in ORDERINGS
    ]


SPECS: list[FunctionSpec] = [
    FunctionSpec(V10 + "integer-add", (INT, INT, ParamSpec(dt.INTEGER, variadic=True)), dt.INTEGER, False,
                 integer_add),
    FunctionSpec(V10 + "double-add", (DBL, DBL, ParamSpec(dt.DOUBLE, variadic=True)), dt.DOUBLE, False, double_add),
    FunctionSpec(V10 + "integer-subtract", (INT, INT), dt.INTEGER, False, integer_subtract),
    FunctionSpec(V10 + "double-subtract", (DBL, DBL), dt.DOUBLE, False, double_subtract),
    FunctionSpec(V10 + "integer-multiply", (INT, INT, ParamSpec(dt.INTEGER, variadic=True)), dt.INTEGER, False,
                 integer_multiply),
    FunctionSpec(V10 + "double-multiply", (DBL, DBL, ParamSpec(dt.DOUBLE, variadic=True)), dt.DOUBLE, False,
                 double_multiply),
    FunctionSpec(V10 + "integer-divide", (INT, INT), dt.INTEGER, False, integer_divide),
    FunctionSpec(V10 + "double-divide", (DBL, DBL), dt.DOUBLE, False, double_divide),
    FunctionSpec(V10 + "integer-mod", (INT, INT), dt.INTEGER, False, integer_mod),
    FunctionSpec(V10 + "integer-abs", (INT,), dt.INTEGER, False, integer_abs),
    FunctionSpec(V10 + "double-abs", (DBL,), dt.DOUBLE, False, double_abs),
    FunctionSpec(V10 + "round", (DBL,), dt.DOUBLE, False, round_),
    FunctionSpec(V10 + "floor", (DBL,), dt.DOUBLE, False, floor),
    FunctionSpec(V10 + "double-to-integer", (DBL,), dt.INTEGER, False, double_to_integer),
    FunctionSpec(V10 + "integer-to-double", (INT,), dt.DOUBLE, False, integer_to_double),
    *comparison_specs(V10, "integer", dt.INTEGER),
    *comparison_specs(V10, "double", dt.DOUBLE),
]
