"""Equality predicates (§A.3.1), bag functions (§A.3.10) and set functions (§A.3.11), for every data type.

The value classes of :mod:`~.datatypes` make Python ``==`` the XACML equality of each type, so one generic
implementation serves all types. ``double`` is IEEE 754 except that ``NaN`` equals ``NaN`` (what the conformance
suite requires, see :mod:`~.datatypes`): all NaNs are one object, and comparisons here test identity first.
The set functions treat bags as sets: duplicates (by the type's equality) are dropped.

Identifiers follow the XACML version that introduced each type: ``1.0`` for most, ``3.0`` for the XML Schema
duration types, ``2.0`` for ``ipAddress`` and ``dnsName``. The deprecated ``1.0`` duration identifiers over the
2002 XQuery-draft duration types are kept (§10.2.8). ``ipAddress``/``dnsName`` have only ``one-and-only``,
``bag-size`` and ``bag`` in the standard; their ``is-in`` and set functions here are an extension, with equality
on the parsed address, mask and port range (host names case-insensitively).
"""

from __future__ import annotations

from sleutelbos.policy.xacml import datatypes as dt
from sleutelbos.policy.xacml.function_spec import FunctionSpec, ParamSpec
from sleutelbos.policy.xacml.status import XacmlProcessingError
from sleutelbos.policy.xacml.values import AttributeValue, Bag, boolean

V10 = "urn:oasis:names:tc:xacml:1.0:function:"
V20 = "urn:oasis:names:tc:xacml:2.0:function:"
V30 = "urn:oasis:names:tc:xacml:3.0:function:"

# (name in the function ids, data type, id prefix, has a standard equality function)
TYPES: tuple[tuple[str, str, str, bool], ...] = (
    ("string", dt.STRING, V10, True),
    ("boolean", dt.BOOLEAN, V10, True),
    ("integer", dt.INTEGER, V10, True),
    ("double", dt.DOUBLE, V10, True),
    ("time", dt.TIME, V10, True),
    ("date", dt.DATE, V10, True),
    ("dateTime", dt.DATETIME, V10, True),
    ("anyURI", dt.ANYURI, V10, True),
    ("hexBinary", dt.HEXBINARY, V10, True),
    ("base64Binary", dt.BASE64BINARY, V10, True),
    ("dayTimeDuration", dt.DAYTIMEDURATION, V30, True),
    ("yearMonthDuration", dt.YEARMONTHDURATION, V30, True),
    ("dayTimeDuration", dt.LEGACY_DAYTIMEDURATION, V10, True),
    ("yearMonthDuration", dt.LEGACY_YEARMONTHDURATION, V10, True),
    ("x500Name", dt.X500NAME, V10, True),
    ("rfc822Name", dt.RFC822NAME, V10, True),
    ("ipAddress", dt.IPADDRESS, V20, False),
    ("dnsName", dt.DNSNAME, V20, False),
)


def _equal(a: AttributeValue, b: AttributeValue) -> AttributeValue:
    x, y = a.value, b.value
    return boolean(x is y or x == y)


def _one_and_only(bag: Bag) -> AttributeValue:
    if len(bag.values) != 1:
        raise XacmlProcessingError(f"one-and-only on a bag of {len(bag.values)} values of {bag.datatype}")
    return bag.values[0]


def _bag_size(bag: Bag) -> AttributeValue:
    return AttributeValue(dt.INTEGER, len(bag.values))


def _is_in(value: AttributeValue, bag: Bag) -> AttributeValue:
    v = value.value
    for member in bag.values:
        m = member.value
        if m is v or m == v:
            return boolean(True)
    return boolean(False)


def _distinct(values: tuple[AttributeValue, ...]) -> tuple[AttributeValue, ...]:
    return tuple(dict.fromkeys(values))


def _bag_maker(datatype: str):  # type: ignore[no-untyped-def]
    def bag(*values: AttributeValue) -> Bag:
        return Bag(datatype, values)

    return bag


def _intersection(a: Bag, b: Bag) -> Bag:
    members = set(b.values)
    return Bag(a.datatype, _distinct(tuple(v for v in a.values if v in members)))


def _at_least_one_member_of(a: Bag, b: Bag) -> AttributeValue:
    members = set(b.values)
    return boolean(any(v in members for v in a.values))


def _union(*bags: Bag) -> Bag:
    return Bag(bags[0].datatype, _distinct(tuple(v for bag in bags for v in bag.values)))


def _subset(a: Bag, b: Bag) -> AttributeValue:
    return boolean(set(a.values) <= set(b.values))


def _set_equals(a: Bag, b: Bag) -> AttributeValue:
    return boolean(set(a.values) == set(b.values))


def _specs() -> list[FunctionSpec]:
    specs: list[FunctionSpec] = []
    for name, uri, prefix, has_equal in TYPES:
        one, bag = ParamSpec(uri), ParamSpec(uri, bag=True)
        boolean_ = dt.BOOLEAN
        if has_equal:
            specs.append(FunctionSpec(f"{prefix}{name}-equal", (one, one), boolean_, False, _equal))
        specs += [
            FunctionSpec(f"{prefix}{name}-one-and-only", (bag,), uri, False, _one_and_only),
            FunctionSpec(f"{prefix}{name}-bag-size", (bag,), dt.INTEGER, False, _bag_size),
            FunctionSpec(f"{prefix}{name}-is-in", (one, bag), boolean_, False, _is_in),
            FunctionSpec(f"{prefix}{name}-bag", (ParamSpec(uri, variadic=True),), uri, True, _bag_maker(uri)),
            FunctionSpec(f"{prefix}{name}-intersection", (bag, bag), uri, True, _intersection),
            FunctionSpec(f"{prefix}{name}-at-least-one-member-of", (bag, bag), boolean_, False,
                         _at_least_one_member_of),
            FunctionSpec(f"{prefix}{name}-union", (bag, bag, ParamSpec(uri, bag=True, variadic=True)), uri, True,
                         _union),
            FunctionSpec(f"{prefix}{name}-subset", (bag, bag), boolean_, False, _subset),
            FunctionSpec(f"{prefix}{name}-set-equals", (bag, bag), boolean_, False, _set_equals),
        ]
    return specs


SPECS: list[FunctionSpec] = _specs()
