"""Compile a validated policy tree into closures, once, so that deciding a request is calling functions.

This is where the semantics of XACML 3.0 §7 live, on top of :mod:`.expressions` (§7.3-7.5):

- targets (§7.6-7.7, tables 1-4): ``Match``/``AllOf``/``AnyOf``/``Target`` give ``True`` (match), ``False``
  (no match) or the :class:`.decision.Status` of an Indeterminate; equality matches use :mod:`.membership`;
- rules, policies and policy sets (§7.11-7.14, tables 5-7) with extended Indeterminate, obligations and advice
  (§7.18) and the identifiers for ``ReturnPolicyIdList``; children are combined by :mod:`.combining` over the
  candidates :mod:`.target_index` selects.

Type checking happens while compiling (§5.27, Appendix A): every function id must be known, take the number and
types of arguments given, ``MatchId`` must return a boolean, a ``Condition`` must be a single boolean; any violation
raises :class:`.errors.InvalidPolicy` naming the element.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from .combining import IDENTITY_ON_ONE, POLICY_COMBINING, RULE_COMBINING, Combiner
from .context import CURRENT_ATTRIBUTES, EvaluationContext
from .decision import (
    DENY,
    INDETERMINATE_D,
    INDETERMINATE_DP,
    INDETERMINATE_P,
    NOT_APPLICABLE,
    NOT_APPLICABLE_RESULT,
    PERMIT,
    STATUS_PROCESSING_ERROR,
    AttributeAssignment,
    Evaluation,
    Obligation,
    PolicyIdentifier,
    Status,
)
from .errors import InvalidPolicy
from .expressions import (
    BOOLEAN,
    ExpressionCompiler,
    PolicyVariables,
    check_match,
    status_of,
)
from .membership import EQUALITY_MATCHES
from .model import (
    AdviceExpression,
    AttributeDesignator,
    IdReference,
    Match,
    ObligationExpression,
    Policy,
    PolicySet,
    Rule,
    Target,
)
from .status import UnknownFunction
from .target_index import Guard, candidate_selector, policy_guards, rule_guards, target_guards
from .values import FALSE, Bag

TargetEvaluator = Callable[[EvaluationContext], "bool | Status"]


_pause_lock = threading.Lock()
_pause_depth = 0
_gc_was_enabled = False


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a policy is compiled.

    Compiling allocates hundreds of thousands of long-lived objects (closures, cells, model objects); each
    generation-2 collection then walks all of them, which made compiling a 1,000-role policy set several times
    slower. Reference counting still frees everything that is not cyclic. Compilations may overlap in threads (the
    PAP compiles off the event loop): the first one in pauses the collector, the last one out restores it as it was.
    """
    global _pause_depth, _gc_was_enabled
    with _pause_lock:
        if _pause_depth == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _pause_depth += 1
    try:
        yield
    finally:
        with _pause_lock:
            _pause_depth -= 1
            if _pause_depth == 0 and _gc_was_enabled:
                gc.enable()


class Node:
    """A compiled rule, policy or policy set, as combining algorithms see it."""

    __slots__ = ("evaluate", "evaluate_body", "identifier", "match_target")

    def __init__(self, evaluate: Callable[[EvaluationContext], Evaluation],
                 match_target: TargetEvaluator | None = None,
                 evaluate_body: Callable[[EvaluationContext], Evaluation] | None = None,
                 identifier: PolicyIdentifier | None = None) -> None:
        self.evaluate = evaluate
        self.match_target = match_target
        self.evaluate_body = evaluate_body
        self.identifier = identifier


def _always(_: EvaluationContext) -> bool:
    return True


Resolver = Callable[[IdReference, str], Node]


class Compiler(ExpressionCompiler):
    """Compiles one document; ``resolve`` compiles a ``Policy(Set)IdReference`` (the PDP supplies it). Without a
    resolver references compile to a placeholder that is never evaluated (used to validate a document alone)."""

    def __init__(self, resolve: Resolver | None = None, functions: Callable[[str], Any] | None = None) -> None:
        super().__init__(functions)
        self._resolve = resolve

    # --- policy sets and policies

    def policy_set(self, node: PolicySet) -> Node:
        where = f"<PolicySet PolicySetId={node.policy_set_id!r}>"
        combine = POLICY_COMBINING.get(node.policy_combining_alg_id)
        if combine is None:
            raise InvalidPolicy(f"{where}: unknown PolicyCombiningAlgId {node.policy_combining_alg_id!r}")
        children: list[Node] = []
        guards: list[list[Guard]] = []
        for child in node.children:
            if isinstance(child, Policy):
                children.append(self.policy(child))
                guards.append(policy_guards(child, self._get_function))
            elif isinstance(child, PolicySet):
                children.append(self.policy_set(child))
                guards.append(target_guards(child.target))
            else:
                children.append(self.reference(child, where))
                guards.append([])
        identifier = PolicyIdentifier("PolicySet", node.policy_set_id, node.version)
        return self._combined(where, identifier, node.target, combine, children, guards, {},
                              node.obligation_expressions, node.advice_expressions)

    def policy(self, node: Policy) -> Node:
        where = f"<Policy PolicyId={node.policy_id!r}>"
        combine = RULE_COMBINING.get(node.rule_combining_alg_id)
        if combine is None:
            raise InvalidPolicy(f"{where}: unknown RuleCombiningAlgId {node.rule_combining_alg_id!r}")
        variables = PolicyVariables(self, node, where)
        rules = [self.rule(rule, where, variables) for rule in node.rules]
        variables.compile_all()
        identifier = PolicyIdentifier("Policy", node.policy_id, node.version)
        return self._combined(where, identifier, node.target, combine, rules,
                              [rule_guards(r, self._get_function) for r in node.rules],
                              variables, node.obligation_expressions, node.advice_expressions)

    def reference(self, reference: IdReference, where: str) -> Node:
        if self._resolve is None:
            def unresolved(_: EvaluationContext) -> Evaluation:
                return Evaluation(INDETERMINATE_DP, Status(STATUS_PROCESSING_ERROR,
                                                           f"unresolved {reference.describe()}"))

            return Node(unresolved, lambda _: Status(STATUS_PROCESSING_ERROR, "unresolved reference"), unresolved)
        return self._resolve(reference, where)

    def _combined(self, where: str, identifier: PolicyIdentifier, target: Target, combine: Combiner,
                  children: list[Node], child_guards: Sequence[list[Guard]], variables: Any,
                  obligation_expressions: tuple[ObligationExpression, ...],
                  advice_expressions: tuple[AdviceExpression, ...]) -> Node:
        match_target = self.target(target, where, variables)
        select = candidate_selector(children, child_guards)
        # Algorithms that give a single child's result unchanged: with one child (or one candidate the index
        # selected) call it directly, without the combining loop.
        identity = combine in IDENTITY_ON_ONE
        only = children[0].evaluate if len(children) == 1 and identity and select is None else None
        pep = {
            PERMIT: self.pep_actions(obligation_expressions, advice_expressions, "Permit", where, variables),
            DENY: self.pep_actions(obligation_expressions, advice_expressions, "Deny", where, variables),
        }

        finish = None if pep[PERMIT] is None and pep[DENY] is None else self._finish_with_actions(pep, identifier)

        def evaluate_body(ctx: EvaluationContext) -> Evaluation:
            if only is not None:
                result = only(ctx)
            elif select is None:
                result = combine(children, ctx)
            else:
                chosen = select(ctx)
                result = chosen[0].evaluate(ctx) if identity and len(chosen) == 1 else combine(chosen, ctx)
            if finish is not None:
                return finish(result, ctx)
            if ctx.return_policy_ids and result.decision != NOT_APPLICABLE:
                return Evaluation(result.decision, result.status, result.obligations, result.advice,
                                  (*result.policies, identifier))
            return result

        if match_target is None:
            return Node(evaluate_body, _always, evaluate_body, identifier)

        def evaluate(ctx: EvaluationContext) -> Evaluation:
            matched = match_target(ctx)
            if matched is False:
                return NOT_APPLICABLE_RESULT
            if only is not None:
                result = only(ctx)
            elif select is None:
                result = combine(children, ctx)
            else:
                chosen = select(ctx)
                result = chosen[0].evaluate(ctx) if identity and len(chosen) == 1 else combine(chosen, ctx)
            if matched is True:
                if finish is not None:
                    return finish(result, ctx)
                if ctx.return_policy_ids and result.decision != NOT_APPLICABLE:
                    return Evaluation(result.decision, result.status, result.obligations, result.advice,
                                      (*result.policies, identifier))
                return result
            # §7.12/7.13 table 7: an Indeterminate target keeps what the children could have decided.
            decision = result.decision
            if decision == NOT_APPLICABLE:
                return NOT_APPLICABLE_RESULT
            extended = INDETERMINATE_P if decision == PERMIT else INDETERMINATE_D if decision == DENY else decision
            policies = (*result.policies, identifier) if ctx.return_policy_ids else ()
            return Evaluation(extended, matched, policies=policies)

        return Node(evaluate, match_target, evaluate_body, identifier)

    @staticmethod
    def _finish_with_actions(pep: dict[int, Any], identifier: PolicyIdentifier
                             ) -> Callable[[Evaluation, EvaluationContext], Evaluation]:
        """Adds the policy's own obligations and advice to a Permit/Deny (§7.18) and its id (ReturnPolicyIdList)."""

        def finish(result: Evaluation, ctx: EvaluationContext) -> Evaluation:
            decision = result.decision
            if decision == NOT_APPLICABLE:
                return result
            if decision <= DENY:
                actions = pep[decision]
                if actions is not None:
                    try:
                        obligations, advice = actions(ctx)
                    except Exception as exc:  # any failure makes the policy Indeterminate (§7.18)
                        return Evaluation(INDETERMINATE_P if decision == PERMIT else INDETERMINATE_D, status_of(exc),
                                          policies=result.policies)
                    result = Evaluation(decision, None, result.obligations + obligations, result.advice + advice,
                                        result.policies)
            if ctx.return_policy_ids:
                result = Evaluation(decision, result.status, result.obligations, result.advice,
                                    (*result.policies, identifier))
            return result

        return finish

    # --- rules (§7.11)

    def rule(self, rule: Rule, parent: str, variables: Any) -> Node:
        where = f"{parent} <Rule RuleId={rule.rule_id!r}>"
        decision = PERMIT if rule.effect == "Permit" else DENY
        indeterminate = INDETERMINATE_P if decision == PERMIT else INDETERMINATE_D
        match_target = self.target(rule.target, where, variables)
        condition = None
        if rule.condition is not None:
            compiled = self.expression(rule.condition.expression, f"{where} <Condition>", variables)
            if compiled.type != BOOLEAN:
                raise InvalidPolicy(f"{where} <Condition>: must evaluate to a single boolean, not {compiled.type}")
            if compiled.constant:
                if compiled.value.value is False:
                    condition = _never_true
                # a constant true condition is no condition at all
            else:
                condition = compiled.evaluate
        actions = self.pep_actions(rule.obligation_expressions, rule.advice_expressions, rule.effect, where,
                                   variables)
        constant = Evaluation(decision)
        if actions is None:
            # the usual rules (no obligations or advice): closures without the branches they do not need
            if condition is None:
                return Node(_constant_rule(match_target, constant, indeterminate), match_target)
            if match_target is None:
                return Node(_condition_rule(condition, constant, indeterminate), match_target)
            return Node(_target_condition_rule(match_target, condition, constant, indeterminate), match_target)

        def evaluate(ctx: EvaluationContext) -> Evaluation:
            if match_target is not None:
                matched = match_target(ctx)
                if matched is False:
                    return NOT_APPLICABLE_RESULT
                if matched is not True:
                    return Evaluation(indeterminate, matched)
            if condition is not None:
                try:
                    holds = condition(ctx).value
                except Exception as exc:  # §7.11: an error in the condition is Indeterminate
                    return Evaluation(indeterminate, status_of(exc))
                if holds is not True:
                    return NOT_APPLICABLE_RESULT
            if actions is None:
                return constant
            try:
                obligations, advice = actions(ctx)
            except Exception as exc:  # §7.18
                return Evaluation(indeterminate, status_of(exc))
            return Evaluation(decision, None, obligations, advice)

        return Node(evaluate, match_target)

    # --- obligations and advice (§7.18)

    def pep_actions(self, obligations: tuple[ObligationExpression, ...], advice: tuple[AdviceExpression, ...],
                    effect: str, where: str, variables: Any
                    ) -> Callable[[EvaluationContext], tuple[tuple[Obligation, ...], tuple[Obligation, ...]]] | None:
        """The obligations and advice to return with ``effect``; ``None`` when there are none."""
        chosen_o = [self._action(o.obligation_id, o.assignments, f"{where} <ObligationExpression "
                                 f"ObligationId={o.obligation_id!r}>", variables)
                    for o in obligations if o.fulfill_on == effect]
        chosen_a = [self._action(a.advice_id, a.assignments, f"{where} <AdviceExpression AdviceId={a.advice_id!r}>",
                                 variables)
                    for a in advice if a.applies_to == effect]
        if not chosen_o and not chosen_a:
            return None
        if all(isinstance(x, Obligation) for x in chosen_o + chosen_a):
            constant = (tuple(chosen_o), tuple(chosen_a))
            return lambda _ctx: constant

        def evaluate(ctx: EvaluationContext) -> tuple[tuple[Obligation, ...], tuple[Obligation, ...]]:
            return (tuple(x if isinstance(x, Obligation) else x(ctx) for x in chosen_o),
                    tuple(x if isinstance(x, Obligation) else x(ctx) for x in chosen_a))

        return evaluate

    def _action(self, action_id: str, assignments: Any, where: str, variables: Any) -> Any:
        compiled = []
        for assignment in assignments:
            expr = self.expression(assignment.expression,
                                   f"{where} <AttributeAssignmentExpression AttributeId={assignment.attribute_id!r}>",
                                   variables)
            compiled.append((assignment, expr))
        if all(expr.constant for _, expr in compiled):
            return Obligation(action_id, tuple(a for assignment, expr in compiled
                                                 for a in _assign(assignment, expr.value)))

        def evaluate(ctx: EvaluationContext) -> Obligation:
            out: list[AttributeAssignment] = []
            for assignment, expr in compiled:
                out.extend(_assign(assignment, expr.value if expr.constant else expr.evaluate(ctx)))
            return Obligation(action_id, tuple(out))

        return evaluate

    # --- targets (§7.6, §7.7)

    def target(self, target: Target, where: str, variables: Any) -> TargetEvaluator | None:
        """``None`` for an empty target (it matches everything)."""
        if not target.any_ofs:
            return None
        any_ofs = [self._any_of([self._all_of([self.match(m, f"{where} <Target>", variables) for m in all_of.matches])
                                 for all_of in any_of.all_ofs]) for any_of in target.any_ofs]
        # §7.7: a Target is the conjunction of its AnyOfs, with the same Indeterminate rule as an AllOf's Matches.
        return self._all_of(any_ofs)

    @staticmethod
    def _any_of(all_ofs: list[TargetEvaluator]) -> TargetEvaluator:
        if len(all_ofs) == 1:
            return all_ofs[0]

        def evaluate(ctx: EvaluationContext) -> bool | Status:
            status = None
            for all_of in all_ofs:
                result = all_of(ctx)
                if result is True:
                    return True
                if result is not False:
                    status = status or result
            return False if status is None else status

        return evaluate

    @staticmethod
    def _all_of(matches: list[TargetEvaluator]) -> TargetEvaluator:
        if len(matches) == 1:
            return matches[0]

        def evaluate(ctx: EvaluationContext) -> bool | Status:
            status = None
            for match in matches:
                result = match(ctx)
                if result is False:
                    return False
                if result is not True:
                    status = status or result
            return True if status is None else status

        return evaluate

    def match(self, match: Match, where: str, variables: Any) -> TargetEvaluator:
        """§7.6: ``True`` if the function holds for the literal and any value of the bag, ``False`` if it holds for
        none, the status of the first error if it holds for none and some evaluation failed."""
        where = f"{where} <Match MatchId={match.match_id!r}>"
        try:
            spec = self._get_function(match.match_id)
        except UnknownFunction as exc:
            raise InvalidPolicy(f"{where}: unknown function {match.match_id!r}") from exc
        literal = match.value.value
        source = self.expression(match.source, where, variables)
        check_match(spec, literal.datatype, source.type[0], where)
        fetch = source.evaluate
        designator = match.source
        if match.match_id in EQUALITY_MATCHES and literal.datatype == source.type[0]:
            if (isinstance(designator, AttributeDesignator) and designator.issuer is None
                    and (designator.category, designator.attribute_id, designator.data_type)
                    not in CURRENT_ATTRIBUTES):
                # The hot path of every target: one dict lookup and a tuple membership test, no Bag.
                key = (designator.category, designator.attribute_id, designator.data_type)
                raw = literal.value  # every value under ``key`` has the literal's data type: compare the values

                def equal_values(ctx: EvaluationContext) -> bool | Status:
                    found = ctx.values.get(key)
                    if found is not None:
                        for value in found:  # noqa: SIM110 - a loop is faster than any() over a generator
                            if value.value == raw:
                                return True
                        return False
                    try:
                        return literal in fetch(ctx).values
                    except Exception as exc:
                        return status_of(exc)

                return equal_values

            def equal(ctx: EvaluationContext) -> bool | Status:
                try:
                    return literal in fetch(ctx).values
                except Exception as exc:
                    return status_of(exc)

            return equal
        impl = spec.impl

        def evaluate(ctx: EvaluationContext) -> bool | Status:
            error = None
            try:
                values = fetch(ctx).values
            except Exception as exc:
                return status_of(exc)
            for value in values:
                try:
                    if impl(literal, value).value is True:
                        return True
                except Exception as exc:  # §7.6: an error only counts if nothing matched
                    error = error or exc
            if error is not None:
                return status_of(error)
            return False

        return evaluate

    # --- expressions (§7.3-7.5)


def _constant_rule(match_target: TargetEvaluator | None, constant: Evaluation, indeterminate: int
                   ) -> Callable[[EvaluationContext], Evaluation]:
    """A rule without condition, obligations or advice: its target decides (§7.11, table 4)."""
    if match_target is None:
        return lambda _ctx: constant

    def evaluate(ctx: EvaluationContext) -> Evaluation:
        matched = match_target(ctx)
        if matched is True:
            return constant
        if matched is False:
            return NOT_APPLICABLE_RESULT
        return Evaluation(indeterminate, matched)

    return evaluate


def _condition_rule(condition: Callable[[EvaluationContext], Any], constant: Evaluation, indeterminate: int
                    ) -> Callable[[EvaluationContext], Evaluation]:
    """A rule with an empty target and a condition, without obligations or advice (§7.11, table 4)."""

    def evaluate(ctx: EvaluationContext) -> Evaluation:
        try:
            holds = condition(ctx).value
        except Exception as exc:  # §7.11: an error in the condition is Indeterminate
            return Evaluation(indeterminate, status_of(exc))
        return constant if holds is True else NOT_APPLICABLE_RESULT

    return evaluate


def _target_condition_rule(match_target: TargetEvaluator, condition: Callable[[EvaluationContext], Any],
                           constant: Evaluation, indeterminate: int) -> Callable[[EvaluationContext], Evaluation]:
    """A rule with a target and a condition, without obligations or advice (§7.11, table 4)."""

    def evaluate(ctx: EvaluationContext) -> Evaluation:
        matched = match_target(ctx)
        if matched is False:
            return NOT_APPLICABLE_RESULT
        if matched is not True:
            return Evaluation(indeterminate, matched)
        try:
            holds = condition(ctx).value
        except Exception as exc:  # §7.11: an error in the condition is Indeterminate
            return Evaluation(indeterminate, status_of(exc))
        return constant if holds is True else NOT_APPLICABLE_RESULT

    return evaluate


def _never_true(_: EvaluationContext) -> Any:
    return FALSE


def _assign(assignment: Any, value: Any) -> list[AttributeAssignment]:
    values = value.values if isinstance(value, Bag) else (value,)
    return [AttributeAssignment(assignment.attribute_id, v, assignment.category, assignment.issuer) for v in values]
