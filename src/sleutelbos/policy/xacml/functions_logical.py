"""Logical functions (§A.3.5) and higher-order bag functions (§A.3.12).

``and``, ``or`` and ``n-of`` are *lazy*: they receive thunks and evaluate their arguments from first to last,
stopping as soon as the result is known (§A.3.5), so an argument that would be Indeterminate is harmless once the
answer is decided — and fatal if it is reached first. ``n-of`` with fewer remaining arguments than its count is
Indeterminate (processing-error).

The higher-order functions follow XACML 3.0: ``any-of``, ``all-of`` and ``map`` take the function, then any number
of primitive arguments and exactly *one* bag, in any position (3.0 lifted 1.0's "bag last"); ``any-of-any``
takes any mix of primitives and bags and is true when some combination satisfies the function; ``all-of-any``,
``any-of-all`` and ``all-of-all`` take two bags. The 1.0 identifiers of ``any-of``, ``all-of``, ``any-of-any``
and ``map`` (deprecated in 3.0, used by older policies) are the same functions — 1.0's shapes are special cases.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

from sleutelbos.policy.xacml import datatypes as dt
from sleutelbos.policy.xacml.function_spec import (
    FUNCTION,
    ArgType,
    FunctionSpec,
    ParamSpec,
    call,
    check_arguments,
)
from sleutelbos.policy.xacml.status import FunctionSignatureError, XacmlProcessingError
from sleutelbos.policy.xacml.values import FALSE, TRUE, AttributeValue, Bag, boolean

V10 = "urn:oasis:names:tc:xacml:1.0:function:"
V30 = "urn:oasis:names:tc:xacml:3.0:function:"

Thunk = Callable[[], AttributeValue]


def and_(*args: Thunk) -> AttributeValue:
    for arg in args:
        if not arg().value:
            return FALSE
    return TRUE


def or_(*args: Thunk) -> AttributeValue:
    for arg in args:
        if arg().value:
            return TRUE
    return FALSE


def n_of(count: Thunk, *args: Thunk) -> AttributeValue:
    needed = count().value
    if needed <= 0:
        return TRUE
    if needed > len(args):
        raise XacmlProcessingError(f"n-of needs {needed} true arguments but has only {len(args)}")
    remaining = len(args)
    for arg in args:
        if arg().value:
            needed -= 1
            if needed == 0:
                return TRUE
        remaining -= 1
        if remaining < needed:
            return FALSE
    return FALSE


def not_(a: AttributeValue) -> AttributeValue:
    return FALSE if a.value else TRUE


# --- higher-order ---------------------------------------------------------------------------------------------


def _bag_position(args: Sequence[Any]) -> int:
    for i, arg in enumerate(args):
        if isinstance(arg, Bag):
            return i
    raise XacmlProcessingError("a higher-order function needs one bag argument")


def _each_member(fn: FunctionSpec, args: Sequence[Any]):  # type: ignore[no-untyped-def]
    """Apply ``fn`` with the bag argument replaced by each of its members in turn."""
    position = _bag_position(args)
    before, bag, after = list(args[:position]), args[position], list(args[position + 1 :])
    for member in bag.values:
        yield call(fn, [*before, member, *after])


def any_of(fn: FunctionSpec, *args: Any) -> AttributeValue:
    return boolean(any(result.value for result in _each_member(fn, args)))


def all_of(fn: FunctionSpec, *args: Any) -> AttributeValue:
    return boolean(all(result.value for result in _each_member(fn, args)))


def map_(fn: FunctionSpec, *args: Any) -> Bag:
    return Bag(fn.returns, tuple(_each_member(fn, args)))


def any_of_any(fn: FunctionSpec, *args: Any) -> AttributeValue:
    choices = [arg.values if isinstance(arg, Bag) else (arg,) for arg in args]
    for combination in itertools.product(*choices):
        if call(fn, combination).value:
            return TRUE
    return FALSE


def all_of_any(fn: FunctionSpec, first: Bag, second: Bag) -> AttributeValue:
    return boolean(all(any(call(fn, (x, y)).value for y in second.values) for x in first.values))


def any_of_all(fn: FunctionSpec, first: Bag, second: Bag) -> AttributeValue:
    return boolean(any(all(call(fn, (x, y)).value for y in second.values) for x in first.values))


def all_of_all(fn: FunctionSpec, first: Bag, second: Bag) -> AttributeValue:
    return boolean(all(call(fn, (x, y)).value for x in first.values for y in second.values))


# --- static typing of the higher-order applications ------------------------------------------------------------


def _function_argument(spec: FunctionSpec, args: Sequence[ArgType]) -> FunctionSpec:
    if not args or not isinstance(args[0], FunctionSpec):
        raise FunctionSignatureError(f"{spec.short_name}: the first argument must be a <Function>")
    fn = args[0]
    if fn.higher_order:
        raise FunctionSignatureError(f"{spec.short_name}: {fn.short_name} is itself higher-order")
    if any(isinstance(a, FunctionSpec) for a in args[1:]):
        raise FunctionSignatureError(f"{spec.short_name}: only the first argument may be a <Function>")
    return fn


def _element_types(args: Sequence[ArgType]) -> list[ArgType]:
    return [(a[0], False) for a in args if not isinstance(a, FunctionSpec)]


def _applied(spec: FunctionSpec, fn: FunctionSpec, args: Sequence[ArgType]) -> tuple[str, bool]:
    try:
        return check_arguments(fn, _element_types(args))
    except FunctionSignatureError as exc:
        raise FunctionSignatureError(f"{spec.short_name}: {exc.detail}") from None


def _one_bag(spec: FunctionSpec, args: Sequence[ArgType]) -> tuple[str, bool]:
    """any-of, all-of, map: the function, then primitives and exactly one bag."""
    fn = _function_argument(spec, args)
    rest = args[1:]
    bags = sum(1 for a in rest if not isinstance(a, FunctionSpec) and a[1])
    if not rest or bags != 1:
        raise FunctionSignatureError(f"{spec.short_name} needs exactly one bag argument after the function")
    returns = _applied(spec, fn, rest)
    if spec.returns_bag:
        if returns[1]:
            raise FunctionSignatureError(f"{spec.short_name}: {fn.short_name} returns a bag; bags of bags do not exist")
        return returns[0], True
    if returns != (dt.BOOLEAN, False):
        raise FunctionSignatureError(f"{spec.short_name}: {fn.short_name} does not return a boolean")
    return dt.BOOLEAN, False


def _any_mix(spec: FunctionSpec, args: Sequence[ArgType]) -> tuple[str, bool]:
    fn = _function_argument(spec, args)
    if len(args) < 2:
        raise FunctionSignatureError(f"{spec.short_name} needs arguments after the function")
    if _applied(spec, fn, args[1:]) != (dt.BOOLEAN, False):
        raise FunctionSignatureError(f"{spec.short_name}: {fn.short_name} does not return a boolean")
    return dt.BOOLEAN, False


def _two_bags(spec: FunctionSpec, args: Sequence[ArgType]) -> tuple[str, bool]:
    fn = _function_argument(spec, args)
    rest = args[1:]
    if len(rest) != 2 or not all(not isinstance(a, FunctionSpec) and a[1] for a in rest):
        raise FunctionSignatureError(f"{spec.short_name} takes a function and two bags")
    if _applied(spec, fn, rest) != (dt.BOOLEAN, False):
        raise FunctionSignatureError(f"{spec.short_name}: {fn.short_name} does not return a boolean")
    return dt.BOOLEAN, False


_ANY = ParamSpec("*", variadic=True)
_FN = ParamSpec(FUNCTION)


def _higher(fid: str, impl: Callable[..., Any], checker: Callable[..., tuple[str, bool]], *, bag: bool = False,
            returns: str = dt.BOOLEAN) -> FunctionSpec:
    return FunctionSpec(fid, (_FN, _ANY), returns, bag, impl, higher_order=True, checker=checker)


_BOOL = ParamSpec(dt.BOOLEAN)
_BOOLS = ParamSpec(dt.BOOLEAN, variadic=True)

SPECS: list[FunctionSpec] = [
    FunctionSpec(V10 + "and", (_BOOLS,), dt.BOOLEAN, False, and_, lazy=True),
    FunctionSpec(V10 + "or", (_BOOLS,), dt.BOOLEAN, False, or_, lazy=True),
    FunctionSpec(V10 + "n-of", (ParamSpec(dt.INTEGER), _BOOLS), dt.BOOLEAN, False, n_of, lazy=True),
    FunctionSpec(V10 + "not", (_BOOL,), dt.BOOLEAN, False, not_),
    _higher(V30 + "any-of", any_of, _one_bag),
    _higher(V30 + "all-of", all_of, _one_bag),
    _higher(V30 + "any-of-any", any_of_any, _any_mix),
    _higher(V10 + "all-of-any", all_of_any, _two_bags),
    _higher(V10 + "any-of-all", any_of_all, _two_bags),
    _higher(V10 + "all-of-all", all_of_all, _two_bags),
    _higher(V30 + "map", map_, _one_bag, bag=True, returns="*"),
    # XACML 1.0 identifiers, deprecated by 3.0 (§10.2.8) and still found in policies.
    _higher(V10 + "any-of", any_of, _one_bag),
    _higher(V10 + "all-of", all_of, _one_bag),
    _higher(V10 + "any-of-any", any_of_any, _any_mix),
    _higher(V10 + "map", map_, _one_bag, bag=True, returns="*"),
]
