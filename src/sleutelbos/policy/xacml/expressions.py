"""Expressions (XACML 3.0 §5.25-5.31, §7.3-7.5) compiled to closures ``evaluate(ctx) -> AttributeValue | Bag``.

Each ``Apply`` becomes a closure over its argument closures, specialised on the arity, with constant arguments
inlined; an ``Apply`` whose arguments are all constant is evaluated here, once (and a constant expression that can
only fail rejects the policy, conformance IIC332/IIC335). Lazy functions (``and``, ``or``, ``n-of``) get thunks;
higher-order functions get the named ``FunctionSpec`` first. Every application is type-checked with the function
library's :func:`.function_spec.check_arguments`; variable references are resolved per policy with cycle
detection (:class:`PolicyVariables`). Errors while evaluating are raised (``IndeterminateError`` /
``XacmlError``) and turned into Indeterminate by the rule, target or obligation that evaluates the expression.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .context import CURRENT_ATTRIBUTES, EvaluationContext, missing
from .decision import STATUS_PROCESSING_ERROR, IndeterminateError, Status
from .errors import InvalidPolicy
from .function_spec import check_arguments
from .membership import membership_shortcut
from .model import (
    Apply,
    AttributeDesignator,
    AttributeSelector,
    Constant,
    Expression,
    Function,
    Policy,
    VariableReference,
)
from .selector import XPATH_EXPRESSION, XPATH_FUNCTIONS, compile_selector, xpath_function
from .status import FunctionSignatureError, UnknownFunction, XacmlError
from .values import Bag

StaticType = tuple[str, bool]
BOOLEAN: StaticType = ("http://www.w3.org/2001/XMLSchema#boolean", False)
INTEGER = "http://www.w3.org/2001/XMLSchema#integer"
Evaluator = Callable[[EvaluationContext], Any]


def status_of(exc: Exception) -> Status:
    """The status of an error raised while evaluating an expression (unexpected errors are processing errors)."""
    if isinstance(exc, IndeterminateError):
        return exc.status
    if isinstance(exc, XacmlError):
        return Status(exc.status_code, exc.detail)
    return Status(STATUS_PROCESSING_ERROR, f"{type(exc).__name__}: {exc}")


@dataclass(frozen=True, slots=True)
class Compiled:
    """A compiled expression: its closure, its static type and, when it does not depend on the request, its
    value (``constant`` is then ``True``)."""

    evaluate: Evaluator
    type: StaticType
    constant: bool = False
    value: Any = None
    function: Any = None


class ExpressionCompiler:
    """Compiles expressions; :class:`.compiler.Compiler` adds targets, rules and policies on top."""

    def __init__(self, functions: Callable[[str], Any] | None = None) -> None:
        from .functions import get_function

        self._get_function = functions or get_function

    def expression(self, expr: Expression, where: str, variables: Any) -> Compiled:
        """Compile ``expr``; ``where`` names the enclosing element for error messages, ``variables`` is the
        enclosing policy's :class:`PolicyVariables` (or anything else outside a policy)."""
        if isinstance(expr, Constant):
            value = expr.value
            return Compiled(lambda _ctx: value, (value.datatype, False), True, value)
        if isinstance(expr, AttributeDesignator):
            return self._designator(expr)
        if isinstance(expr, AttributeSelector):
            return self._selector(expr, where)
        if isinstance(expr, Apply):
            return self._apply(expr, where, variables)
        if isinstance(expr, VariableReference):
            if not isinstance(variables, PolicyVariables):
                raise InvalidPolicy(f"{where}: <VariableReference VariableId={expr.variable_id!r}> outside a Policy")
            return variables.reference(expr.variable_id, where)
        if isinstance(expr, Function):
            raise InvalidPolicy(f"{where}: <Function FunctionId={expr.function_id!r}> is only allowed as the first "
                                "argument of a higher-order function")
        raise InvalidPolicy(f"{where}: unsupported expression {type(expr).__name__}")

    def _designator(self, d: AttributeDesignator) -> Compiled:
        data_type = d.data_type
        empty = Bag(data_type, ())
        if d.issuer is None:
            key = (d.category, d.attribute_id, data_type)
            if key in CURRENT_ATTRIBUTES:
                attribute_id = d.attribute_id

                def current(ctx: EvaluationContext) -> Bag:
                    bag = ctx.bag(key)
                    return bag if bag is not None else ctx.current(attribute_id, data_type)

                return Compiled(current, (data_type, True))
            must = d.must_be_present
            status = missing(d.category, d.attribute_id, data_type, None)

            def designate(ctx: EvaluationContext) -> Bag:
                bag = ctx.bags.get(key)
                if bag is not None:
                    return bag
                found = ctx.values.get(key)
                if found is not None:
                    bag = ctx.bags[key] = Bag(data_type, found)
                    return bag
                if ctx.provider is not None:
                    bag = ctx.provide(key, None)
                    if bag.values:
                        return bag
                if must:
                    raise IndeterminateError(status)
                return empty

            return Compiled(designate, (data_type, True))
        issued_key = (d.category, d.attribute_id, data_type, d.issuer)
        plain_key = (d.category, d.attribute_id, data_type)
        issuer = d.issuer
        must = d.must_be_present
        status = missing(d.category, d.attribute_id, data_type, d.issuer)

        def issued(ctx: EvaluationContext) -> Bag:
            bag = ctx.issued_bag(issued_key)
            if bag is None:
                if ctx.provider is not None:
                    bag = ctx.provide(plain_key, issuer)
                    if bag.values:
                        return bag
                if must:
                    raise IndeterminateError(status)
                return empty
            return bag

        return Compiled(issued, (data_type, True))

    def _selector(self, s: AttributeSelector, where: str) -> Compiled:
        return Compiled(compile_selector(s, where), (s.data_type, True))

    def _xpath_apply(self, apply: Apply, where: str, variables: Any) -> Compiled:
        """§A.3.15: the XPath functions read the request's content, so they are compiled here, not in
        :mod:`.functions`."""
        args = [self.expression(a, where, variables) for a in apply.arguments]
        result_type = _xpath_apply_types(apply.function_id, [a.type for a in args], where)
        return Compiled(xpath_function(apply.function_id, [a.evaluate for a in args]), result_type)

    def _apply(self, apply: Apply, where: str, variables: Any) -> Compiled:
        where = f"{where} <Apply FunctionId={apply.function_id!r}>"
        if apply.function_id in XPATH_FUNCTIONS:
            return self._xpath_apply(apply, where, variables)
        try:
            spec = self._get_function(apply.function_id)
        except UnknownFunction as exc:
            raise InvalidPolicy(f"{where}: unknown function {apply.function_id!r}") from exc
        args: list[Compiled] = []
        for position, argument in enumerate(apply.arguments):
            if isinstance(argument, Function):
                if position != 0:
                    raise InvalidPolicy(f"{where}: <Function> may only be the first argument")
                try:
                    inner = self._get_function(argument.function_id)
                except UnknownFunction as exc:
                    raise InvalidPolicy(f"{where}: unknown function {argument.function_id!r}") from exc
                args.append(Compiled(lambda _ctx, inner=inner: inner, ("function", False), True, inner, inner))
            else:
                args.append(self.expression(argument, where, variables))
        result_type = check_call(spec, [a.type for a in args], [a.function for a in args], where)
        fast = membership_shortcut(apply, args)
        if fast is not None:
            return Compiled(fast, result_type)
        impl = spec.impl
        if getattr(spec, "lazy", False):
            thunks = [a.evaluate for a in args]

            def lazy(ctx: EvaluationContext) -> Any:
                return impl(*[_thunk(t, ctx) for t in thunks])

            evaluate: Evaluator = lazy
        else:
            evaluate = _strict(impl, args)
        if all(a.constant for a in args):
            try:
                value = evaluate(None)  # type: ignore[arg-type]
            except Exception as exc:  # a constant expression that fails can never succeed
                raise InvalidPolicy(f"{where}: this constant expression always fails: {status_of(exc).message}"
                                    ) from exc
            return Compiled(lambda _ctx: value, result_type, True, value)
        return Compiled(evaluate, result_type)


def check_call(spec: Any, types: Sequence[StaticType], functions: Sequence[Any], where: str) -> StaticType:
    """The type an application returns (``function_spec.check_arguments``), or :class:`InvalidPolicy`."""
    args = [function if function is not None else static for static, function in zip(types, functions, strict=True)]
    try:
        return check_arguments(spec, args)
    except FunctionSignatureError as exc:
        raise InvalidPolicy(f"{where}: {exc.detail}") from exc


def check_match(spec: Any, literal_type: str, source_type: str, where: str) -> None:
    """§5.9: ``MatchId`` takes the literal and one value of the designator's type and returns a boolean."""
    if check_call(spec, [(literal_type, False), (source_type, False)], [None, None], where) != BOOLEAN:
        raise InvalidPolicy(f"{where}: a MatchId function must return a boolean")


def _xpath_apply_types(function_id: str, types: list[StaticType], where: str) -> StaticType:
    expected = 1 if function_id.endswith("count") else 2
    if types != [(XPATH_EXPRESSION, False)] * expected:
        raise InvalidPolicy(f"{where}: takes {expected} xpathExpression argument(s), got {types}")
    return (INTEGER, False) if expected == 1 else BOOLEAN


def _thunk(evaluate: Evaluator, ctx: EvaluationContext) -> Callable[[], Any]:
    return lambda: evaluate(ctx)


def _strict(impl: Callable[..., Any], args: list[Compiled]) -> Evaluator:
    """A closure specialised on the arity, constants inlined (the hot path of every condition)."""
    getters = [a.evaluate for a in args]
    if len(args) == 1:
        (a0,) = getters
        return lambda ctx: impl(a0(ctx))
    if len(args) == 2:
        if args[1].constant:
            a0, c1 = getters[0], args[1].value
            return lambda ctx: impl(a0(ctx), c1)
        if args[0].constant:
            c0, a1 = args[0].value, getters[1]
            return lambda ctx: impl(c0, a1(ctx))
        a0, a1 = getters
        return lambda ctx: impl(a0(ctx), a1(ctx))
    if len(args) == 3:
        a0, a1, a2 = getters
        return lambda ctx: impl(a0(ctx), a1(ctx), a2(ctx))
    return lambda ctx: impl(*[g(ctx) for g in getters])


class PolicyVariables:
    """The ``VariableDefinition`` of one policy, compiled on first reference; detects undefined and circular
    references (§5.25-5.26)."""

    def __init__(self, compiler: ExpressionCompiler, policy: Policy, where: str) -> None:
        self._compiler = compiler
        self._where = where
        self._definitions = {v.variable_id: v for v in policy.variable_definitions}
        self._compiled: dict[str, Compiled] = {}
        self._compiling: list[str] = []

    def reference(self, variable_id: str, where: str) -> Compiled:
        compiled = self._compiled.get(variable_id)
        if compiled is not None:
            return compiled
        definition = self._definitions.get(variable_id)
        if definition is None:
            raise InvalidPolicy(f"{where}: <VariableReference VariableId={variable_id!r}> has no VariableDefinition "
                                f"in {self._where}")
        if variable_id in self._compiling:
            cycle = " -> ".join([*self._compiling[self._compiling.index(variable_id):], variable_id])
            raise InvalidPolicy(f"{self._where}: circular VariableReference {cycle}")
        self._compiling.append(variable_id)
        try:
            compiled = self._compiler.expression(
                definition.expression, f"{self._where} <VariableDefinition VariableId={variable_id!r}>", self)
        finally:
            self._compiling.pop()
        self._compiled[variable_id] = compiled
        return compiled

    def compile_all(self) -> None:
        """Unreferenced definitions are type-checked too."""
        for variable_id in self._definitions:
            self.reference(variable_id, self._where)


