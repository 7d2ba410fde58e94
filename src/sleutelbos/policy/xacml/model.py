"""The XACML 3.0 policy language as plain, immutable Python objects (XACML 3.0 core, §5).

Class and field names follow the schema's elements and attributes (``PolicySet.policy_combining_alg_id`` is
``PolicySet/@PolicyCombiningAlgId``), so a reader of the specification finds the code and vice versa. These objects
are what :mod:`.policy_xml` parses and what :mod:`.compiler` turns into closures; nothing evaluates them directly.

Left out on purpose: ``CombinerParameters`` / ``RuleCombinerParameters`` / ``PolicyCombinerParameters`` (no
standard combining algorithm reads them; they are parsed over and ignored), ``PolicyIssuer`` and
``MaxDelegationDepth`` (the Administration and Delegation profile is not implemented).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

XACML3_NS = "urn:oasis:names:tc:xacml:3.0:core:schema:wd-17"

Effect: TypeAlias = Literal["Permit", "Deny"]


@dataclass(frozen=True, slots=True)
class AttributeDesignator:
    """§5.29: the bag of values of one attribute of one category in the request context."""

    category: str
    attribute_id: str
    data_type: str
    must_be_present: bool
    issuer: str | None = None


@dataclass(frozen=True, slots=True)
class AttributeSelector:
    """§5.30: the bag of values selected by an XPath expression from a category's ``<Content>``."""

    category: str
    path: str
    data_type: str
    must_be_present: bool
    context_selector_id: str | None = None
    namespaces: tuple[tuple[str | None, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Constant:
    """§5.31 ``<AttributeValue>`` inside a policy: a constant (``value`` is a parsed ``AttributeValue``)."""

    value: Any


@dataclass(frozen=True, slots=True)
class Function:
    """§5.28 ``<Function>``: names a function passed to a higher-order function."""

    function_id: str


@dataclass(frozen=True, slots=True)
class VariableReference:
    """§5.26: the value of the ``VariableDefinition`` of the same ``Policy``."""

    variable_id: str


@dataclass(frozen=True, slots=True)
class Apply:
    """§5.27: the application of a function to its arguments."""

    function_id: str
    arguments: tuple[Expression, ...]


Expression: TypeAlias = AttributeDesignator | AttributeSelector | Constant | Function | VariableReference | Apply


@dataclass(frozen=True, slots=True)
class VariableDefinition:
    """§5.25: a named expression shared by the rules of one ``Policy``."""

    variable_id: str
    expression: Expression


@dataclass(frozen=True, slots=True)
class Match:
    """§5.9: ``MatchId(AttributeValue, each value of the designator/selector)``, true if any is true."""

    match_id: str
    value: Constant
    source: AttributeDesignator | AttributeSelector


@dataclass(frozen=True, slots=True)
class AllOf:
    """§5.8: a conjunction of matches."""

    matches: tuple[Match, ...]


@dataclass(frozen=True, slots=True)
class AnyOf:
    """§5.7: a disjunction of ``AllOf``."""

    all_ofs: tuple[AllOf, ...]


@dataclass(frozen=True, slots=True)
class Target:
    """§5.6: a conjunction of ``AnyOf``; an empty target matches every request."""

    any_ofs: tuple[AnyOf, ...] = ()


@dataclass(frozen=True, slots=True)
class AttributeAssignmentExpression:
    """§5.41: one attribute of an obligation or advice, computed from the request."""

    attribute_id: str
    expression: Expression
    category: str | None = None
    issuer: str | None = None


@dataclass(frozen=True, slots=True)
class ObligationExpression:
    """§5.39: an obligation returned with the decision ``fulfill_on``."""

    obligation_id: str
    fulfill_on: Effect
    assignments: tuple[AttributeAssignmentExpression, ...] = ()


@dataclass(frozen=True, slots=True)
class AdviceExpression:
    """§5.40: advice returned with the decision ``applies_to``."""

    advice_id: str
    applies_to: Effect
    assignments: tuple[AttributeAssignmentExpression, ...] = ()


@dataclass(frozen=True, slots=True)
class Condition:
    """§5.25: a boolean expression that refines a rule's target."""

    expression: Expression


@dataclass(frozen=True, slots=True)
class Rule:
    """§5.21."""

    rule_id: str
    effect: Effect
    target: Target = field(default_factory=Target)
    condition: Condition | None = None
    obligation_expressions: tuple[ObligationExpression, ...] = ()
    advice_expressions: tuple[AdviceExpression, ...] = ()


@dataclass(frozen=True, slots=True)
class IdReference:
    """§5.10/§5.11 ``PolicyIdReference`` / ``PolicySetIdReference`` with the §5.13 version constraints."""

    kind: Literal["Policy", "PolicySet"]
    ref_id: str
    version: str | None = None
    earliest_version: str | None = None
    latest_version: str | None = None

    def describe(self) -> str:
        constraints = [
            f"{name}={value}"
            for name, value in (
                ("Version", self.version),
                ("EarliestVersion", self.earliest_version),
                ("LatestVersion", self.latest_version),
            )
            if value is not None
        ]
        suffix = f" ({', '.join(constraints)})" if constraints else ""
        return f"{self.kind}IdReference {self.ref_id!r}{suffix}"


@dataclass(frozen=True, slots=True)
class Policy:
    """§5.14."""

    policy_id: str
    version: str
    rule_combining_alg_id: str
    target: Target = field(default_factory=Target)
    variable_definitions: tuple[VariableDefinition, ...] = ()
    rules: tuple[Rule, ...] = ()
    obligation_expressions: tuple[ObligationExpression, ...] = ()
    advice_expressions: tuple[AdviceExpression, ...] = ()
    xpath_version: str | None = None


@dataclass(frozen=True, slots=True)
class PolicySet:
    """§5.1: ``children`` keeps the document order of policies, policy sets and references."""

    policy_set_id: str
    version: str
    policy_combining_alg_id: str
    target: Target = field(default_factory=Target)
    children: tuple[Policy | PolicySet | IdReference, ...] = ()
    obligation_expressions: tuple[ObligationExpression, ...] = ()
    advice_expressions: tuple[AdviceExpression, ...] = ()
    xpath_version: str | None = None


@dataclass(frozen=True, slots=True)
class PolicyDocument:
    """One loaded, validated top-level ``Policy`` or ``PolicySet`` and the XML it came from."""

    root: Policy | PolicySet
    xml: bytes = field(repr=False, compare=False, default=b"")
    compiled: Any = field(repr=False, compare=False, default=None)
    """The closures :func:`sleutelbos.policy.xacml.load_policy` compiled while validating; a :class:`Pdp` reuses
    them for a document without references instead of compiling it again."""

    @property
    def kind(self) -> Literal["Policy", "PolicySet"]:
        return "Policy" if isinstance(self.root, Policy) else "PolicySet"

    @property
    def policy_id(self) -> str:
        return self.root.policy_id if isinstance(self.root, Policy) else self.root.policy_set_id

    @property
    def version(self) -> str:
        return self.root.version

    def references(self) -> list[IdReference]:
        """Every ``Policy(Set)IdReference`` in the document, depth first."""
        found: list[IdReference] = []

        def walk(node: Policy | PolicySet | IdReference) -> None:
            if isinstance(node, IdReference):
                found.append(node)
            elif isinstance(node, PolicySet):
                for child in node.children:
                    walk(child)

        walk(self.root)
        return found
