"""What a XACML function is to the evaluator: its identifier, parameter types, return type and implementation.

The calling convention (shared with the evaluator):

- ``impl(*args)`` receives :class:`AttributeValue` for primitive parameters and :class:`Bag` for bag parameters,
  and returns an ``AttributeValue`` (or a ``Bag`` when ``returns_bag``). It raises :class:`XacmlProcessingError`
  or :class:`XacmlSyntaxError`; the evaluator makes the enclosing expression Indeterminate with that status.
- ``lazy`` functions (``and``, ``or``, ``n-of``, §A.3.5) receive *thunks* — zero-argument callables that evaluate
  one argument each — so that they can stop at the first decisive argument, as the spec requires; an argument that
  cannot be evaluated raises from its thunk, and only matters if it is reached.
- ``higher_order`` functions (§A.3.12) receive the :class:`FunctionSpec` named by the ``<Function>`` element as
  their first argument, then the evaluated values and bags.

:func:`check_arguments` types an application when the policy is loaded — the "wrong types" part of policy
validation — so that evaluation never meets a type error.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Union

from sleutelbos.policy.xacml.status import FunctionSignatureError

FUNCTION = "function"
"""The ``datatype`` of a parameter that takes a ``<Function>`` element (higher-order functions)."""


@dataclass(frozen=True, slots=True)
class ParamSpec:
    """One parameter: its data type, whether it is a bag, and whether it repeats (zero or more times, last only)."""

    datatype: str
    bag: bool = False
    variadic: bool = False

    def describe(self) -> str:
        kind = "function" if self.datatype == FUNCTION else self.datatype
        return ("bag of " if self.bag else "") + kind


ArgType = Union[tuple[str, bool], "FunctionSpec"]
"""The static type of an argument: ``(datatype, is_bag)``, or the function a ``<Function>`` element names."""

Checker = Callable[["FunctionSpec", Sequence[ArgType]], tuple[str, bool]]


@dataclass(frozen=True)
class FunctionSpec:
    """A function of Appendix A (or a legacy 1.0/2.0 identifier still in use)."""

    id: str
    params: tuple[ParamSpec, ...]
    returns: str
    returns_bag: bool
    impl: Callable[..., Any]
    lazy: bool = False
    higher_order: bool = False
    checker: Checker | None = None
    """For functions whose result type depends on their arguments (``map``) or whose arguments are not a fixed
    list (the higher-order family): types an application, raising :class:`FunctionSignatureError`."""

    @property
    def short_name(self) -> str:
        return self.id.rsplit(":", 1)[-1]


def _describe(arg: ArgType) -> str:
    if isinstance(arg, FunctionSpec):
        return f"function {arg.short_name}"
    datatype, is_bag = arg
    return ("bag of " if is_bag else "") + datatype


def check_arguments(spec: FunctionSpec, args: Sequence[ArgType]) -> tuple[str, bool]:
    """The ``(datatype, is_bag)`` an application of ``spec`` to arguments of these types returns.

    Raises :class:`FunctionSignatureError` naming the function, the argument position and both types.
    """
    if spec.checker is not None:
        return spec.checker(spec, args)
    params = spec.params
    variadic = params[-1] if params and params[-1].variadic else None
    fixed = params[:-1] if variadic else params
    if len(args) < len(fixed) or (variadic is None and len(args) > len(fixed)):
        expected = f"at least {len(fixed)}" if variadic else str(len(fixed))
        raise FunctionSignatureError(f"{spec.short_name} takes {expected} arguments, got {len(args)}")
    for position, arg in enumerate(args, start=1):
        param = fixed[position - 1] if position <= len(fixed) else variadic
        assert param is not None
        if not _fits(param, arg):
            raise FunctionSignatureError(
                f"{spec.short_name}: argument {position} must be {param.describe()}, got {_describe(arg)}"
            )
    return spec.returns, spec.returns_bag


def _fits(param: ParamSpec, arg: ArgType) -> bool:
    if isinstance(arg, FunctionSpec):
        return param.datatype == FUNCTION
    datatype, is_bag = arg
    return param.datatype == datatype and param.bag == is_bag


def call(spec: FunctionSpec, args: Sequence[Any]) -> Any:
    """Apply ``spec`` to already evaluated arguments (what higher-order functions do with the function they get)."""
    if spec.lazy:
        return spec.impl(*[_constant(a) for a in args])
    return spec.impl(*args)


def _constant(value: Any) -> Callable[[], Any]:
    return lambda: value
