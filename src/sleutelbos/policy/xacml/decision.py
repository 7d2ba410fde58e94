"""Decisions, status and the result of evaluating one rule, policy or policy set (XACML 3.0 §7.10-7.19).

XACML 3.0 refines ``Indeterminate`` while combining (§7.10, Appendix C): ``Indeterminate{D}`` (the element could
only have said Deny), ``Indeterminate{P}`` (only Permit) and ``Indeterminate{DP}`` (either). The response shows all
three as ``Indeterminate``. The decisions are small ints so that combining algorithms compare them cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .status import STATUS_MISSING_ATTRIBUTE as STATUS_MISSING_ATTRIBUTE
from .status import STATUS_OK as STATUS_OK
from .status import STATUS_PROCESSING_ERROR as STATUS_PROCESSING_ERROR
from .status import STATUS_SYNTAX_ERROR as STATUS_SYNTAX_ERROR

PERMIT = 0
DENY = 1
NOT_APPLICABLE = 2
INDETERMINATE_D = 3
INDETERMINATE_P = 4
INDETERMINATE_DP = 5

DECISION_NAMES = ("Permit", "Deny", "NotApplicable", "Indeterminate", "Indeterminate", "Indeterminate")
EXTENDED_NAMES = ("Permit", "Deny", "NotApplicable", "Indeterminate{D}", "Indeterminate{P}", "Indeterminate{DP}")



@dataclass(frozen=True, slots=True)
class MissingAttributeDetail:
    """§5.58: the attribute whose absence made the decision Indeterminate."""

    category: str
    attribute_id: str
    data_type: str
    issuer: str | None = None


@dataclass(frozen=True, slots=True)
class Status:
    """§5.54: why a result is Indeterminate (``code`` is a status URI)."""

    code: str
    message: str | None = None
    missing_attributes: tuple[MissingAttributeDetail, ...] = ()


@dataclass(frozen=True, slots=True)
class AttributeAssignment:
    """§5.36: one attribute of an obligation or advice; ``value`` is an ``AttributeValue``."""

    attribute_id: str
    value: Any
    category: str | None = None
    issuer: str | None = None


@dataclass(frozen=True, slots=True)
class Obligation:
    """§5.34 (obligation) / §5.35 (advice: same shape, ``AdviceId``)."""

    obligation_id: str
    assignments: tuple[AttributeAssignment, ...] = ()


Advice = Obligation


@dataclass(frozen=True, slots=True)
class PolicyIdentifier:
    """An entry of ``PolicyIdentifierList`` (§5.53): ``kind`` is ``Policy`` or ``PolicySet``."""

    kind: str
    policy_id: str
    version: str


class Evaluation:
    """What evaluating a rule, policy or policy set gave: the decision and what travels with it.

    Instances are treated as immutable so that the compiler can share constant results (a rule without obligations
    always gives the same ``Evaluation``); combining builds new ones instead of mutating.
    """

    __slots__ = ("advice", "decision", "obligations", "policies", "status")

    def __init__(self, decision: int, status: Status | None = None, obligations: tuple[Obligation, ...] = (),
                 advice: tuple[Obligation, ...] = (), policies: tuple[PolicyIdentifier, ...] = ()) -> None:
        self.decision = decision
        self.status = status
        self.obligations = obligations
        self.advice = advice
        self.policies = policies

    def __repr__(self) -> str:
        return (f"Evaluation({EXTENDED_NAMES[self.decision]}, status={self.status}, obligations={self.obligations}, "
                f"advice={self.advice})")


NOT_APPLICABLE_RESULT = Evaluation(NOT_APPLICABLE)


class IndeterminateError(Exception):
    """Raised by an expression that cannot be evaluated; rule/target evaluation turns it into Indeterminate."""

    def __init__(self, status: Status) -> None:
        super().__init__(status.message or status.code)
        self.status = status
