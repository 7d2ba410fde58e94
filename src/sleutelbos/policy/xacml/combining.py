"""Rule- and policy-combining algorithms (XACML 3.0 §7.10-7.13 and Appendix C), with extended Indeterminate.

Each algorithm is a plain function ``combine(children, ctx) -> Evaluation`` over compiled children in document
order (every child has ``evaluate(ctx)``; only-one-applicable also uses ``match_target``/``evaluate_body``). The
pseudo-code of Appendix C is followed literally, including where it stops early. Obligations and advice are those of
the children whose decision equals the combined decision (§7.18), in evaluation order; ``ReturnPolicyIdList``
collects the identifiers of every evaluated child that was not NotApplicable.

The legacy algorithms of XACML 1.0/1.1 (C.10-C.13) keep their old behaviour (e.g. the legacy policy
deny-overrides turns an Indeterminate child into Deny); the 1.1 "ordered" ones are the 1.0 ones, since every
algorithm here already evaluates children in document order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .decision import (
    DENY,
    INDETERMINATE_D,
    INDETERMINATE_DP,
    INDETERMINATE_P,
    NOT_APPLICABLE,
    NOT_APPLICABLE_RESULT,
    PERMIT,
    Evaluation,
    Status,
)

Combiner = Callable[[Sequence[Any], Any], Evaluation]

_PLAIN = tuple(Evaluation(decision) for decision in range(6))

_R3 = "urn:oasis:names:tc:xacml:3.0:rule-combining-algorithm:"
_P3 = "urn:oasis:names:tc:xacml:3.0:policy-combining-algorithm:"
_R1 = "urn:oasis:names:tc:xacml:1.0:rule-combining-algorithm:"
_P1 = "urn:oasis:names:tc:xacml:1.0:policy-combining-algorithm:"
_R11 = "urn:oasis:names:tc:xacml:1.1:rule-combining-algorithm:"
_P11 = "urn:oasis:names:tc:xacml:1.1:policy-combining-algorithm:"


def _merge(decision: int, sources: list[Evaluation], seen: list[Evaluation] | None,
           status: Status | None = None) -> Evaluation:
    """The combined result: obligations/advice of ``sources``; policy ids of every applicable ``seen`` child."""
    if seen is None:
        if len(sources) == 1 and sources[0].decision == decision:
            return sources[0]
        if not sources:
            return Evaluation(decision, status) if status is not None else _PLAIN[decision]
        obligations: tuple[Any, ...] = ()
        advice: tuple[Any, ...] = ()
        for source in sources:
            if source.obligations:
                obligations += source.obligations
            if source.advice:
                advice += source.advice
        return Evaluation(decision, status, obligations, advice)
    obligations = tuple(o for s in sources for o in s.obligations)
    advice = tuple(a for s in sources for a in s.advice)
    policies = tuple(p for s in seen for p in s.policies)
    return Evaluation(decision, status, obligations, advice, policies)


def _overrides(wins: int, loses: int, wins_maybe: int, loses_maybe: int, doc: str) -> Combiner:
    """C.2-C.5: deny-overrides (``wins`` = Deny) and permit-overrides (``wins`` = Permit) are one algorithm with the
    two decisions swapped: any ``wins`` child wins; an Indeterminate{``wins``} taints a ``loses`` result."""

    def combine(children: Sequence[Any], ctx: Any) -> Evaluation:
        seen: list[Evaluation] | None = [] if ctx.return_policy_ids else None
        losers: list[Evaluation] = []
        error_win = error_lose = error_dp = None
        for child in children:
            result = child.evaluate(ctx)
            decision = result.decision
            if decision == NOT_APPLICABLE:
                continue
            if seen is not None:
                seen.append(result)
            if decision == wins:
                return result if seen is None else _merge(wins, [result], seen)
            if decision == loses:
                losers.append(result)
            elif decision == wins_maybe:
                error_win = error_win or result.status
            elif decision == loses_maybe:
                error_lose = error_lose or result.status
            else:
                error_dp = error_dp or result.status
        if error_dp is not None:
            return _merge(INDETERMINATE_DP, [], seen, error_dp)
        if error_win is not None and (error_lose is not None or losers):
            return _merge(INDETERMINATE_DP, [], seen, error_win)
        if error_win is not None:
            return _merge(wins_maybe, [], seen, error_win)
        if losers:
            return _merge(loses, losers, seen)
        if error_lose is not None:
            return _merge(loses_maybe, [], seen, error_lose)
        return NOT_APPLICABLE_RESULT

    combine.__doc__ = doc
    return combine


deny_overrides = _overrides(DENY, PERMIT, INDETERMINATE_D, INDETERMINATE_P,
                            "C.2 (rules) / C.3 (policies): any Deny wins; Indeterminate{D} taints a Permit.")
permit_overrides = _overrides(PERMIT, DENY, INDETERMINATE_P, INDETERMINATE_D,
                              "C.4 (rules) / C.5 (policies): any Permit wins; Indeterminate{P} taints a Deny.")


def _unless(wins: int, otherwise: int, doc: str) -> Combiner:
    """C.6/C.7: ``otherwise`` unless some child decides ``wins`` (never NotApplicable or Indeterminate)."""

    def combine(children: Sequence[Any], ctx: Any) -> Evaluation:
        seen: list[Evaluation] | None = [] if ctx.return_policy_ids else None
        others: list[Evaluation] = []
        for child in children:
            result = child.evaluate(ctx)
            decision = result.decision
            if decision == NOT_APPLICABLE:
                continue
            if seen is not None:
                seen.append(result)
            if decision == wins:
                return result if seen is None else _merge(wins, [result], seen)
            if decision == otherwise:
                others.append(result)
        return _merge(otherwise, others, seen)

    combine.__doc__ = doc
    return combine


deny_unless_permit = _unless(PERMIT, DENY, "C.6: Permit if any child permits, else Deny.")
permit_unless_deny = _unless(DENY, PERMIT, "C.7: Deny if any child denies, else Permit.")


def first_applicable(children: Sequence[Any], ctx: Any) -> Evaluation:
    """C.8: the first child that is not NotApplicable decides (an Indeterminate one included)."""
    for child in children:
        result = child.evaluate(ctx)
        if result.decision != NOT_APPLICABLE:
            return result
    return NOT_APPLICABLE_RESULT


def only_one_applicable(children: Sequence[Any], ctx: Any) -> Evaluation:
    """C.9 (policies only): exactly one child's target may match; two, or an Indeterminate target, is
    Indeterminate{DP}."""
    selected = None
    for child in children:
        applicable = child.match_target(ctx)
        if applicable is False:
            continue
        if applicable is not True:
            return Evaluation(INDETERMINATE_DP, applicable)
        if selected is not None:
            return Evaluation(INDETERMINATE_DP, Status(
                "urn:oasis:names:tc:xacml:1.0:status:processing-error",
                "only-one-applicable: more than one policy is applicable"))
        selected = child
    if selected is None:
        return NOT_APPLICABLE_RESULT
    return selected.evaluate_body(ctx)


def _legacy_overrides_rules(wins: int, loses: int, loses_maybe: int, doc: str) -> Combiner:
    """C.10/C.12: XACML 1.0 rule deny-/permit-overrides, one algorithm with the decisions swapped: an Indeterminate
    rule that is not Indeterminate{``loses``} is a potential ``wins``."""

    def combine(children: Sequence[Any], ctx: Any) -> Evaluation:
        seen: list[Evaluation] | None = [] if ctx.return_policy_ids else None
        losers: list[Evaluation] = []
        error = None
        potential = False
        for child in children:
            result = child.evaluate(ctx)
            decision = result.decision
            if decision == NOT_APPLICABLE:
                continue
            if seen is not None:
                seen.append(result)
            if decision == wins:
                return result if seen is None else _merge(wins, [result], seen)
            if decision == loses:
                losers.append(result)
                continue
            error = error or result.status
            if decision != loses_maybe:
                potential = True
        if potential:
            return _merge(INDETERMINATE_DP, [], seen, error)
        if losers:
            return _merge(loses, losers, seen)
        if error is not None:
            return _merge(loses_maybe, [], seen, error)
        return NOT_APPLICABLE_RESULT

    combine.__doc__ = doc
    return combine


legacy_deny_overrides_rules = _legacy_overrides_rules(
    DENY, PERMIT, INDETERMINATE_P,
    "C.10: XACML 1.0 rule deny-overrides; an Indeterminate Deny rule is a potential Deny.")
legacy_permit_overrides_rules = _legacy_overrides_rules(
    PERMIT, DENY, INDETERMINATE_D,
    "C.12: XACML 1.0 rule permit-overrides; an Indeterminate Permit rule is a potential Permit.")


def legacy_deny_overrides_policies(children: Sequence[Any], ctx: Any) -> Evaluation:
    """C.11: XACML 1.0 policy deny-overrides; an Indeterminate policy counts as Deny."""
    seen: list[Evaluation] | None = [] if ctx.return_policy_ids else None
    permits: list[Evaluation] = []
    for child in children:
        result = child.evaluate(ctx)
        decision = result.decision
        if decision == NOT_APPLICABLE:
            continue
        if seen is not None:
            seen.append(result)
        if decision == DENY:
            return result if seen is None else _merge(DENY, [result], seen)
        if decision == PERMIT:
            permits.append(result)
            continue
        return _merge(DENY, [], seen)
    if permits:
        return _merge(PERMIT, permits, seen)
    return NOT_APPLICABLE_RESULT


def legacy_permit_overrides_policies(children: Sequence[Any], ctx: Any) -> Evaluation:
    """C.13: XACML 1.0 policy permit-overrides."""
    seen: list[Evaluation] | None = [] if ctx.return_policy_ids else None
    denies: list[Evaluation] = []
    error = None
    for child in children:
        result = child.evaluate(ctx)
        decision = result.decision
        if decision == NOT_APPLICABLE:
            continue
        if seen is not None:
            seen.append(result)
        if decision == PERMIT:
            return result if seen is None else _merge(PERMIT, [result], seen)
        if decision == DENY:
            denies.append(result)
        else:
            error = error or result.status
    if denies:
        return _merge(DENY, denies, seen)
    if error is not None:
        return _merge(INDETERMINATE_DP, [], seen, error)
    return NOT_APPLICABLE_RESULT


RULE_COMBINING: dict[str, Combiner] = {
    _R3 + "deny-overrides": deny_overrides,
    _R3 + "ordered-deny-overrides": deny_overrides,
    _R3 + "permit-overrides": permit_overrides,
    _R3 + "ordered-permit-overrides": permit_overrides,
    _R3 + "deny-unless-permit": deny_unless_permit,
    _R3 + "permit-unless-deny": permit_unless_deny,
    _R1 + "first-applicable": first_applicable,
    _R1 + "deny-overrides": legacy_deny_overrides_rules,
    _R11 + "ordered-deny-overrides": legacy_deny_overrides_rules,
    _R1 + "permit-overrides": legacy_permit_overrides_rules,
    _R11 + "ordered-permit-overrides": legacy_permit_overrides_rules,
}

POLICY_COMBINING: dict[str, Combiner] = {
    _P3 + "deny-overrides": deny_overrides,
    _P3 + "ordered-deny-overrides": deny_overrides,
    _P3 + "permit-overrides": permit_overrides,
    _P3 + "ordered-permit-overrides": permit_overrides,
    _P3 + "deny-unless-permit": deny_unless_permit,
    _P3 + "permit-unless-deny": permit_unless_deny,
    _P1 + "first-applicable": first_applicable,
    _P1 + "only-one-applicable": only_one_applicable,
    _P1 + "deny-overrides": legacy_deny_overrides_policies,
    _P11 + "ordered-deny-overrides": legacy_deny_overrides_policies,
    _P1 + "permit-overrides": legacy_permit_overrides_policies,
    _P11 + "ordered-permit-overrides": legacy_permit_overrides_policies,
}

#: Algorithms whose result over a single child is that child's result (the compiler then skips the loop).
IDENTITY_ON_ONE = frozenset({deny_overrides, permit_overrides, first_applicable})
