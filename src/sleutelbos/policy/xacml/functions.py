"""The function registry: every function of XACML 3.0 Appendix A (§A.3.1–A.3.14) by identifier.

The families live in their own modules, named after the appendix's sections:
:mod:`~.functions_bags` (equality, bag and set functions for every type), :mod:`~.functions_arithmetic`,
:mod:`~.functions_temporal`, :mod:`~.functions_strings` (strings, conversions, regular expressions, name matching)
and :mod:`~.functions_logical` (logical and higher-order). :mod:`~.function_spec` defines the calling convention.

Not here: the XPath functions of §A.3.15 (``xpath-node-count``, ``xpath-node-equal``, ``xpath-node-match``) need
the request's ``<Content>``; the evaluator provides them (:mod:`~.selector`), and :func:`get_function` does not
know them.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from sleutelbos.policy.xacml import (
    functions_arithmetic,
    functions_bags,
    functions_logical,
    functions_strings,
    functions_temporal,
)
from sleutelbos.policy.xacml.function_spec import (
    FUNCTION,
    ArgType,
    FunctionSpec,
    ParamSpec,
    call,
    check_arguments,
)
from sleutelbos.policy.xacml.status import UnknownFunction


def _registry() -> dict[str, FunctionSpec]:
    registry: dict[str, FunctionSpec] = {}
    for family in (functions_bags, functions_arithmetic, functions_temporal, functions_strings, functions_logical):
        for spec in family.SPECS:
            if spec.id in registry:
                raise RuntimeError(f"function {spec.id} defined twice")
            registry[spec.id] = spec
    return registry


FUNCTIONS: Mapping[str, FunctionSpec] = MappingProxyType(_registry())


def get_function(function_id: str) -> FunctionSpec:
    """The function named ``function_id``; :class:`UnknownFunction` if this PDP does not implement it."""
    try:
        return FUNCTIONS[function_id]
    except KeyError:
        raise UnknownFunction(f"unknown function {function_id!r}") from None


__all__ = [
    "FUNCTION",
    "FUNCTIONS",
    "ArgType",
    "FunctionSpec",
    "ParamSpec",
    "UnknownFunction",
    "call",
    "check_arguments",
    "get_function",
]
