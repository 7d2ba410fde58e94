"""Parse a XACML 3.0 ``<Policy>`` or ``<PolicySet>`` document (core §5) into :mod:`.model` objects.

Only the XACML 3.0 namespace (``urn:oasis:names:tc:xacml:3.0:core:schema:wd-17``) is accepted. The parser checks
what the schema checks (required attributes, allowed children, ``Effect``/``FulfillOn`` values, version syntax) and
the identity rules of the standard that the schema cannot express: ``RuleId`` unique within a policy,
``VariableId`` unique within a policy, ``PolicyId``/``PolicySetId`` unique within a document. Types, functions and
variable cycles are checked by :mod:`.compiler`; references between documents by :mod:`.pdp`.

Every error is an :class:`InvalidPolicy` whose message names the element (with its id where it has one) and the
reason. DTDs and external entities are refused (no network, no entity expansion).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from lxml import etree

from .errors import InvalidPolicy
from .model import (
    XACML3_NS,
    AdviceExpression,
    AllOf,
    AnyOf,
    Apply,
    AttributeAssignmentExpression,
    AttributeDesignator,
    AttributeSelector,
    Condition,
    Constant,
    Expression,
    Function,
    IdReference,
    Match,
    ObligationExpression,
    Policy,
    PolicyDocument,
    PolicySet,
    Rule,
    Target,
    VariableDefinition,
    VariableReference,
)
from .status import UnknownDataType, XacmlSyntaxError
from .values import parse_value, xpath_expression_value

_NS = "{" + XACML3_NS + "}"
_VERSION = re.compile(r"^\d+(\.\d+)*$")
_VERSION_MATCH = re.compile(r"^((\d+|\*)\.)*(\d+|\*|\+)$")
XPATH_EXPRESSION = "urn:oasis:names:tc:xacml:3.0:data-type:xpathExpression"
STRING = "http://www.w3.org/2001/XMLSchema#string"

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, remove_comments=True,
                          remove_pis=True, huge_tree=False)


def parse_xml_bytes(xml: bytes, what: str) -> etree._Element:
    """Parse bytes into an element, refusing DTDs; ``what`` names the document in the error."""
    try:
        tree = etree.fromstring(xml, _PARSER)
    except etree.XMLSyntaxError as exc:
        raise InvalidPolicy(f"{what}: not well-formed XML: {exc}") from exc
    if tree.getroottree().docinfo.doctype:
        raise InvalidPolicy(f"{what}: a DOCTYPE is not allowed")
    return tree


def load_policy_document(xml: bytes) -> PolicyDocument:
    """Parse one top-level ``Policy``/``PolicySet`` (not yet type-checked: see :func:`.compiler.check_document`)."""
    root = parse_xml_bytes(xml, "policy document")
    parser = _PolicyParser()
    local = _local(root)
    if local == "Policy":
        node: Policy | PolicySet = parser.policy(root, None)
    elif local == "PolicySet":
        node = parser.policy_set(root, None)
    else:
        raise InvalidPolicy(f"<{_qname(root)}>: the document element must be a XACML 3.0 <Policy> or <PolicySet>")
    return PolicyDocument(root=node, xml=xml)


def _local(element: etree._Element) -> str:
    tag = element.tag
    if not isinstance(tag, str) or not tag.startswith(_NS):
        return ""
    return tag[len(_NS):]


def _qname(element: etree._Element) -> str:
    tag = element.tag
    if isinstance(tag, str) and tag.startswith(_NS):
        return tag[len(_NS):]
    return str(tag)


def _children(element: etree._Element) -> Iterator[etree._Element]:
    for child in element:
        if isinstance(child.tag, str):
            yield child


def _required(element: etree._Element, name: str, where: str) -> str:
    value = element.get(name)
    if value is None:
        raise InvalidPolicy(f"{where}: attribute {name} is required")
    return value


def _boolean(element: etree._Element, name: str, where: str, default: bool | None = None) -> bool:
    value = element.get(name)
    if value is None:
        if default is None:
            raise InvalidPolicy(f"{where}: attribute {name} is required")
        return default
    value = value.strip()
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise InvalidPolicy(f"{where}: attribute {name}={value!r} is not an xs:boolean")


def _version(element: etree._Element, where: str) -> str:
    version = element.get("Version", "1.0")
    if not _VERSION.match(version):
        raise InvalidPolicy(f"{where}: Version={version!r} is not a XACML VersionType (digits separated by dots)")
    return version


def _text(element: etree._Element) -> str:
    return "".join(element.itertext())


def parse_literal(element: etree._Element, where: str) -> Constant:
    """A policy ``<AttributeValue DataType=...>`` → a constant, parsed by the datatype's lexical rules."""
    data_type = _required(element, "DataType", where)
    if any(True for _ in _children(element)):
        raise InvalidPolicy(f"{where}: <AttributeValue DataType={data_type!r}> with element content is not supported")
    text = _text(element)
    if data_type != STRING:
        text = text.strip()
    try:
        if data_type == XPATH_EXPRESSION:
            namespaces = {prefix: uri for prefix, uri in element.nsmap.items() if prefix}
            return Constant(xpath_expression_value(text, element.get("XPathCategory", ""), namespaces))
        return Constant(parse_value(data_type, text))
    except (XacmlSyntaxError, UnknownDataType) as exc:
        raise InvalidPolicy(f"{where}: <AttributeValue DataType={data_type!r}> {text!r}: {exc}") from exc


class _PolicyParser:
    """Recursive descent over the element tree; keeps the ids seen in this document."""

    def __init__(self) -> None:
        self.policy_ids: set[tuple[str, str]] = set()
        self.policy_set_ids: set[tuple[str, str]] = set()

    # --- policy sets and policies (§5.1, §5.14)

    def policy_set(self, element: etree._Element, xpath_version: str | None) -> PolicySet:
        policy_set_id = _required(element, "PolicySetId", "<PolicySet>")
        where = f"<PolicySet PolicySetId={policy_set_id!r}>"
        version = _version(element, where)
        if policy_set_id in {i for i, _ in self.policy_set_ids}:
            raise InvalidPolicy(f"{where}: duplicate PolicySetId {policy_set_id!r} in the same document")
        self.policy_set_ids.add((policy_set_id, version))
        alg = _required(element, "PolicyCombiningAlgId", where)
        target = Target()
        children: list[Policy | PolicySet | IdReference] = []
        obligations: tuple[ObligationExpression, ...] = ()
        advice: tuple[AdviceExpression, ...] = ()
        seen_target = False
        for child in _children(element):
            local = _local(child)
            if local in ("Description", "PolicyIssuer", "CombinerParameters", "PolicyCombinerParameters",
                         "PolicySetCombinerParameters"):
                continue
            if local == "PolicySetDefaults":
                xpath_version = self._defaults(child, where)
            elif local == "Target":
                seen_target = True
                target = self.target(child, where)
            elif local == "Policy":
                children.append(self.policy(child, xpath_version))
            elif local == "PolicySet":
                children.append(self.policy_set(child, xpath_version))
            elif local in ("PolicyIdReference", "PolicySetIdReference"):
                children.append(self.reference(child, local))
            elif local == "ObligationExpressions":
                obligations = self.obligation_expressions(child, where)
            elif local == "AdviceExpressions":
                advice = self.advice_expressions(child, where)
            else:
                raise InvalidPolicy(f"{where}: unexpected child element <{_qname(child)}>")
        if not seen_target:
            raise InvalidPolicy(f"{where}: the <Target> element is required")
        return PolicySet(policy_set_id=policy_set_id, version=version, policy_combining_alg_id=alg, target=target,
                         children=tuple(children), obligation_expressions=obligations, advice_expressions=advice,
                         xpath_version=xpath_version)

    def policy(self, element: etree._Element, xpath_version: str | None) -> Policy:
        policy_id = _required(element, "PolicyId", "<Policy>")
        where = f"<Policy PolicyId={policy_id!r}>"
        version = _version(element, where)
        if policy_id in {i for i, _ in self.policy_ids}:
            raise InvalidPolicy(f"{where}: duplicate PolicyId {policy_id!r} in the same document")
        self.policy_ids.add((policy_id, version))
        alg = _required(element, "RuleCombiningAlgId", where)
        target = Target()
        variables: list[VariableDefinition] = []
        rules: list[Rule] = []
        obligations: tuple[ObligationExpression, ...] = ()
        advice: tuple[AdviceExpression, ...] = ()
        seen_target = False
        for child in _children(element):
            local = _local(child)
            if local in ("Description", "PolicyIssuer", "CombinerParameters", "RuleCombinerParameters"):
                continue
            if local == "PolicyDefaults":
                xpath_version = self._defaults(child, where)
            elif local == "Target":
                seen_target = True
                target = self.target(child, where)
            elif local == "VariableDefinition":
                variable_id = _required(child, "VariableId", f"{where} <VariableDefinition>")
                if any(v.variable_id == variable_id for v in variables):
                    raise InvalidPolicy(f"{where}: duplicate VariableId {variable_id!r}")
                expressions = list(_children(child))
                vwhere = f"{where} <VariableDefinition VariableId={variable_id!r}>"
                if len(expressions) != 1:
                    raise InvalidPolicy(f"{vwhere}: exactly one expression is required")
                variables.append(VariableDefinition(variable_id, self.expression(expressions[0], vwhere)))
            elif local == "Rule":
                rule = self.rule(child, where)
                if any(r.rule_id == rule.rule_id for r in rules):
                    raise InvalidPolicy(f"{where}: duplicate RuleId {rule.rule_id!r}")
                rules.append(rule)
            elif local == "ObligationExpressions":
                obligations = self.obligation_expressions(child, where)
            elif local == "AdviceExpressions":
                advice = self.advice_expressions(child, where)
            else:
                raise InvalidPolicy(f"{where}: unexpected child element <{_qname(child)}>")
        if not seen_target:
            raise InvalidPolicy(f"{where}: the <Target> element is required")
        return Policy(policy_id=policy_id, version=version, rule_combining_alg_id=alg, target=target,
                      variable_definitions=tuple(variables), rules=tuple(rules), obligation_expressions=obligations,
                      advice_expressions=advice, xpath_version=xpath_version)

    def _defaults(self, element: etree._Element, where: str) -> str | None:
        version = None
        for child in _children(element):
            if _local(child) == "XPathVersion":
                version = _text(child).strip()
            else:
                raise InvalidPolicy(f"{where} <{_qname(element)}>: unexpected child element <{_qname(child)}>")
        return version

    def reference(self, element: etree._Element, local: str) -> IdReference:
        ref_id = _text(element).strip()
        where = f"<{local}>{ref_id}</{local}>"
        if not ref_id:
            raise InvalidPolicy(f"<{local}>: the referenced id is empty")
        version = element.get("Version")
        earliest = element.get("EarliestVersion")
        latest = element.get("LatestVersion")
        for name, value in (("Version", version), ("EarliestVersion", earliest), ("LatestVersion", latest)):
            if value is not None and not _VERSION_MATCH.match(value):
                raise InvalidPolicy(f"{where}: {name}={value!r} is not a XACML VersionMatchType")
        kind = "Policy" if local == "PolicyIdReference" else "PolicySet"
        return IdReference(kind=kind, ref_id=ref_id, version=version, earliest_version=earliest, latest_version=latest)

    # --- rules (§5.21)

    def rule(self, element: etree._Element, parent: str) -> Rule:
        rule_id = _required(element, "RuleId", f"{parent} <Rule>")
        where = f"{parent} <Rule RuleId={rule_id!r}>"
        effect = _required(element, "Effect", where)
        if effect not in ("Permit", "Deny"):
            raise InvalidPolicy(f"{where}: Effect={effect!r} must be Permit or Deny")
        target = Target()
        condition = None
        obligations: tuple[ObligationExpression, ...] = ()
        advice: tuple[AdviceExpression, ...] = ()
        for child in _children(element):
            local = _local(child)
            if local == "Description":
                continue
            if local == "Target":
                target = self.target(child, where)
            elif local == "Condition":
                expressions = list(_children(child))
                if len(expressions) != 1:
                    raise InvalidPolicy(f"{where} <Condition>: exactly one expression is required")
                condition = Condition(self.expression(expressions[0], f"{where} <Condition>"))
            elif local == "ObligationExpressions":
                obligations = self.obligation_expressions(child, where)
            elif local == "AdviceExpressions":
                advice = self.advice_expressions(child, where)
            else:
                raise InvalidPolicy(f"{where}: unexpected child element <{_qname(child)}>")
        return Rule(rule_id=rule_id, effect=effect, target=target, condition=condition,  # type: ignore[arg-type]
                    obligation_expressions=obligations, advice_expressions=advice)

    # --- targets (§5.6-5.9)

    def target(self, element: etree._Element, parent: str) -> Target:
        where = f"{parent} <Target>"
        any_ofs = []
        for any_of in _children(element):
            if _local(any_of) != "AnyOf":
                raise InvalidPolicy(f"{where}: unexpected child element <{_qname(any_of)}>")
            all_ofs = []
            for all_of in _children(any_of):
                if _local(all_of) != "AllOf":
                    raise InvalidPolicy(f"{where} <AnyOf>: unexpected child element <{_qname(all_of)}>")
                matches = tuple(self.match(m, f"{where} <AnyOf> <AllOf>") for m in _children(all_of))
                if not matches:
                    raise InvalidPolicy(f"{where} <AnyOf> <AllOf>: at least one <Match> is required")
                all_ofs.append(AllOf(matches))
            if not all_ofs:
                raise InvalidPolicy(f"{where} <AnyOf>: at least one <AllOf> is required")
            any_ofs.append(AnyOf(tuple(all_ofs)))
        return Target(tuple(any_ofs))

    def match(self, element: etree._Element, parent: str) -> Match:
        if _local(element) != "Match":
            raise InvalidPolicy(f"{parent}: unexpected child element <{_qname(element)}>")
        match_id = _required(element, "MatchId", f"{parent} <Match>")
        where = f"{parent} <Match MatchId={match_id!r}>"
        parts = list(_children(element))
        if len(parts) != 2 or _local(parts[0]) != "AttributeValue" or _local(parts[1]) not in (
            "AttributeDesignator", "AttributeSelector"
        ):
            raise InvalidPolicy(f"{where}: must contain an <AttributeValue> then an <AttributeDesignator> or "
                                "<AttributeSelector>")
        value = parse_literal(parts[0], where)
        source = self.expression(parts[1], where)
        assert isinstance(source, AttributeDesignator | AttributeSelector)
        return Match(match_id=match_id, value=value, source=source)

    # --- expressions (§5.25-5.31)

    def expression(self, element: etree._Element, parent: str) -> Expression:
        local = _local(element)
        if local == "AttributeValue":
            return parse_literal(element, parent)
        if local == "AttributeDesignator":
            where = f"{parent} <AttributeDesignator>"
            return AttributeDesignator(
                category=_required(element, "Category", where),
                attribute_id=_required(element, "AttributeId", where),
                data_type=_required(element, "DataType", where),
                must_be_present=_boolean(element, "MustBePresent", where),
                issuer=element.get("Issuer"),
            )
        if local == "AttributeSelector":
            where = f"{parent} <AttributeSelector>"
            namespaces = tuple(sorted(((k, v) for k, v in element.nsmap.items()), key=lambda kv: kv[0] or ""))
            return AttributeSelector(
                category=_required(element, "Category", where),
                path=_required(element, "Path", where),
                data_type=_required(element, "DataType", where),
                must_be_present=_boolean(element, "MustBePresent", where),
                context_selector_id=element.get("ContextSelectorId"),
                namespaces=namespaces,
            )
        if local == "Apply":
            function_id = _required(element, "FunctionId", f"{parent} <Apply>")
            where = f"{parent} <Apply FunctionId={function_id!r}>"
            arguments = tuple(
                self.expression(child, where) for child in _children(element) if _local(child) != "Description"
            )
            return Apply(function_id=function_id, arguments=arguments)
        if local == "Function":
            return Function(_required(element, "FunctionId", f"{parent} <Function>"))
        if local == "VariableReference":
            return VariableReference(_required(element, "VariableId", f"{parent} <VariableReference>"))
        raise InvalidPolicy(f"{parent}: <{_qname(element)}> is not an expression")

    # --- obligations and advice (§5.39-5.41)

    def obligation_expressions(self, element: etree._Element, parent: str) -> tuple[ObligationExpression, ...]:
        found = []
        for child in _children(element):
            if _local(child) != "ObligationExpression":
                raise InvalidPolicy(f"{parent} <ObligationExpressions>: unexpected child <{_qname(child)}>")
            obligation_id = _required(child, "ObligationId", f"{parent} <ObligationExpression>")
            where = f"{parent} <ObligationExpression ObligationId={obligation_id!r}>"
            fulfill_on = _required(child, "FulfillOn", where)
            if fulfill_on not in ("Permit", "Deny"):
                raise InvalidPolicy(f"{where}: FulfillOn={fulfill_on!r} must be Permit or Deny")
            found.append(ObligationExpression(obligation_id, fulfill_on, self.assignments(child, where)))  # type: ignore[arg-type]
        if not found:
            raise InvalidPolicy(f"{parent} <ObligationExpressions>: at least one <ObligationExpression> is required")
        return tuple(found)

    def advice_expressions(self, element: etree._Element, parent: str) -> tuple[AdviceExpression, ...]:
        found = []
        for child in _children(element):
            if _local(child) != "AdviceExpression":
                raise InvalidPolicy(f"{parent} <AdviceExpressions>: unexpected child <{_qname(child)}>")
            advice_id = _required(child, "AdviceId", f"{parent} <AdviceExpression>")
            where = f"{parent} <AdviceExpression AdviceId={advice_id!r}>"
            applies_to = _required(child, "AppliesTo", where)
            if applies_to not in ("Permit", "Deny"):
                raise InvalidPolicy(f"{where}: AppliesTo={applies_to!r} must be Permit or Deny")
            found.append(AdviceExpression(advice_id, applies_to, self.assignments(child, where)))  # type: ignore[arg-type]
        if not found:
            raise InvalidPolicy(f"{parent} <AdviceExpressions>: at least one <AdviceExpression> is required")
        return tuple(found)

    def assignments(self, element: etree._Element, parent: str) -> tuple[AttributeAssignmentExpression, ...]:
        found = []
        for child in _children(element):
            if _local(child) != "AttributeAssignmentExpression":
                raise InvalidPolicy(f"{parent}: unexpected child element <{_qname(child)}>")
            attribute_id = _required(child, "AttributeId", f"{parent} <AttributeAssignmentExpression>")
            where = f"{parent} <AttributeAssignmentExpression AttributeId={attribute_id!r}>"
            expressions = list(_children(child))
            if len(expressions) != 1:
                raise InvalidPolicy(f"{where}: exactly one expression is required")
            found.append(AttributeAssignmentExpression(
                attribute_id=attribute_id,
                expression=self.expression(expressions[0], where),
                category=child.get("Category"),
                issuer=child.get("Issuer"),
            ))
        return tuple(found)
