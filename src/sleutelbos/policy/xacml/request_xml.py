"""XACML 3.0 request and response contexts in XML (core §5.42-5.58, schema ``xacml-core-v3-schema-wd-17``).

:func:`parse_request_xml` checks the request as the schema would (root ``Request`` in the XACML 3.0 namespace, the
required attributes, only the allowed children, every ``AttributeValue`` in its data type's lexical space) and
raises :class:`.errors.InvalidRequest` otherwise — nothing is evaluated. ``<Content>`` is kept (a copy of its one
child element) for ``AttributeSelector``. :func:`render_response_xml` writes a schema-valid ``<Response>``.
"""

from __future__ import annotations

import copy
from typing import Any

from lxml import etree

from .context import Attribute, Attributes, Request, Response
from .decision import STATUS_OK, Obligation
from .errors import InvalidRequest
from .model import XACML3_NS
from .status import UnknownDataType, XacmlSyntaxError
from .values import lexical, parse_value, xpath_expression_value

_NS = "{" + XACML3_NS + "}"
_XML_ID = "{http://www.w3.org/XML/1998/namespace}id"
STRING = "http://www.w3.org/2001/XMLSchema#string"
XPATH_EXPRESSION = "urn:oasis:names:tc:xacml:3.0:data-type:xpathExpression"
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, remove_comments=True,
                          remove_pis=True)


def _local(element: etree._Element) -> str | None:
    tag = element.tag
    if isinstance(tag, str) and tag.startswith(_NS):
        return tag[len(_NS):]
    return None


def _elements(element: etree._Element) -> list[etree._Element]:
    return [child for child in element if isinstance(child.tag, str)]


def _boolean(element: etree._Element, name: str, where: str, default: bool | None) -> bool:
    value = element.get(name)
    if value is None:
        if default is None:
            raise InvalidRequest(f"{where}: attribute {name} is required")
        return default
    value = value.strip()
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise InvalidRequest(f"{where}: {name}={value!r} is not an xs:boolean")


def parse_request_xml(body: bytes) -> Request:
    """A ``<Request>`` document → :class:`.context.Request`, or :class:`.errors.InvalidRequest`."""
    try:
        root = etree.fromstring(body, _PARSER)
    except etree.XMLSyntaxError as exc:
        raise InvalidRequest(f"request: not well-formed XML: {exc}") from exc
    if root.getroottree().docinfo.doctype:
        raise InvalidRequest("request: a DOCTYPE is not allowed")
    if _local(root) != "Request":
        raise InvalidRequest(f"request: the document element must be a XACML 3.0 <Request>, not <{root.tag}>")
    return_policy_id_list = _boolean(root, "ReturnPolicyIdList", "<Request>", False)
    combined_decision = _boolean(root, "CombinedDecision", "<Request>", False)
    groups: list[Attributes] = []
    multi: list[tuple[str, ...]] = []
    xpath_version = None
    for child in _elements(root):
        local = _local(child)
        if local == "Attributes":
            groups.append(_attributes(child))
        elif local == "RequestDefaults" and not groups:
            for default in _elements(child):
                if _local(default) != "XPathVersion":
                    raise InvalidRequest(f"<RequestDefaults>: unexpected child <{default.tag}>")
                xpath_version = (default.text or "").strip()
        elif local == "MultiRequests":
            for reference in _elements(child):
                if _local(reference) != "RequestReference":
                    raise InvalidRequest(f"<MultiRequests>: unexpected child <{reference.tag}>")
                refs = []
                for attributes_reference in _elements(reference):
                    if _local(attributes_reference) != "AttributesReference" or not attributes_reference.get(
                            "ReferenceId"):
                        raise InvalidRequest("<RequestReference>: expected <AttributesReference ReferenceId=...>")
                    refs.append(attributes_reference.get("ReferenceId"))
                if not refs:
                    raise InvalidRequest("<RequestReference>: at least one <AttributesReference> is required")
                multi.append(tuple(refs))
        else:
            raise InvalidRequest(f"<Request>: unexpected child element <{child.tag}>")
    if not groups:
        raise InvalidRequest("<Request>: at least one <Attributes> element is required")
    if multi:
        ids = {g.xml_id for g in groups if g.xml_id is not None}
        for refs in multi:
            for ref in refs:
                if ref not in ids:
                    raise InvalidRequest(f"<MultiRequests>: ReferenceId {ref!r} names no <Attributes xml:id>")
    return Request(tuple(groups), return_policy_id_list, combined_decision, tuple(multi), xpath_version)


def parse_attributes_xml(body: bytes) -> tuple[Attributes, ...]:
    """Every XACML ``<Attributes>`` element of a document (e.g. the attributes a static attribute provider adds)."""
    try:
        root = etree.fromstring(body, _PARSER)
    except etree.XMLSyntaxError as exc:
        raise InvalidRequest(f"attributes: not well-formed XML: {exc}") from exc
    return tuple(_attributes(element) for element in root.iter(_NS + "Attributes"))


def _attributes(element: etree._Element) -> Attributes:
    category = element.get("Category")
    if not category:
        raise InvalidRequest("<Attributes>: attribute Category is required")
    where = f"<Attributes Category={category!r}>"
    attributes = []
    content = None
    for child in _elements(element):
        local = _local(child)
        if local == "Content":
            inner = _elements(child)
            if len(inner) != 1 or content is not None:
                raise InvalidRequest(f"{where} <Content>: exactly one element is required")
            content = etree.ElementTree(copy.deepcopy(inner[0]))  # its own document: '//' stays inside it
        elif local == "Attribute":
            values, issuer, include = _attribute(child, where)
            attributes.extend(_split_by_datatype(child.get("AttributeId"), values, issuer, include))
        else:
            raise InvalidRequest(f"{where}: unexpected child element <{child.tag}>")
    return Attributes(category, tuple(attributes), content, element.get(_XML_ID))


def _attribute(element: etree._Element, parent: str) -> tuple[list[Any], str | None, bool]:
    attribute_id = element.get("AttributeId")
    if not attribute_id:
        raise InvalidRequest(f"{parent} <Attribute>: attribute AttributeId is required")
    where = f"{parent} <Attribute AttributeId={attribute_id!r}>"
    include = _boolean(element, "IncludeInResult", where, False)
    values = []
    for child in _elements(element):
        if _local(child) != "AttributeValue":
            raise InvalidRequest(f"{where}: unexpected child element <{child.tag}>")
        data_type = child.get("DataType")
        if not data_type:
            raise InvalidRequest(f"{where} <AttributeValue>: attribute DataType is required")
        if _elements(child):
            raise InvalidRequest(f"{where} <AttributeValue DataType={data_type!r}>: element content is not supported")
        text = "".join(child.itertext())
        try:
            if data_type == XPATH_EXPRESSION:
                nsmap = {k: v for k, v in child.nsmap.items() if k}
                values.append(xpath_expression_value(text, child.get("XPathCategory", ""), nsmap))
            else:
                values.append(parse_value(data_type, text))
        except (XacmlSyntaxError, UnknownDataType) as exc:
            raise InvalidRequest(f"{where} <AttributeValue DataType={data_type!r}>: {exc}") from exc
    if not values:
        raise InvalidRequest(f"{where}: at least one <AttributeValue> is required")
    return values, element.get("Issuer"), include


def _split_by_datatype(attribute_id: str, values: list[Any], issuer: str | None, include: bool) -> list[Attribute]:
    """One :class:`.context.Attribute` per data type (see its docstring), in order of first appearance."""
    by_type: dict[str, list[Any]] = {}
    for value in values:
        by_type.setdefault(value.datatype, []).append(value)
    return [Attribute(attribute_id, tuple(group), issuer, include) for group in by_type.values()]


# --- responses


def _sub(parent: etree._Element, name: str, attrib: dict[str, str] | None = None, text: str | None = None
         ) -> etree._Element:
    element = etree.SubElement(parent, _NS + name, attrib or {})
    if text is not None:
        element.text = text
    return element


def _value_text(value: Any) -> str:
    return lexical(value)


def _actions(parent: etree._Element, container: str, element: str, id_name: str,
             actions: tuple[Obligation, ...]) -> None:
    if not actions:
        return
    holder = _sub(parent, container)
    for action in actions:
        node = _sub(holder, element, {id_name: action.obligation_id})
        for assignment in action.assignments:
            attrib = {"AttributeId": assignment.attribute_id, "DataType": assignment.value.datatype}
            if assignment.category is not None:
                attrib["Category"] = assignment.category
            if assignment.issuer is not None:
                attrib["Issuer"] = assignment.issuer
            _sub(node, "AttributeAssignment", attrib, _value_text(assignment.value))


def render_response_xml(response: Response) -> bytes:
    """:class:`.context.Response` → a ``<Response>`` document (UTF-8)."""
    root = etree.Element(_NS + "Response", nsmap={None: XACML3_NS})
    for result in response.results:
        node = _sub(root, "Result")
        _sub(node, "Decision", text=result.decision)
        status = result.status
        if status is not None or result.decision != "Indeterminate":
            status_node = _sub(node, "Status")
            _sub(status_node, "StatusCode", {"Value": status.code if status else STATUS_OK})
            if status is not None and status.message:
                _sub(status_node, "StatusMessage", text=status.message)
            if status is not None and status.missing_attributes:
                detail = _sub(status_node, "StatusDetail")
                for missing in status.missing_attributes:
                    attrib = {"Category": missing.category, "AttributeId": missing.attribute_id,
                              "DataType": missing.data_type}
                    if missing.issuer is not None:
                        attrib["Issuer"] = missing.issuer
                    _sub(detail, "MissingAttributeDetail", attrib)
        _actions(node, "Obligations", "Obligation", "ObligationId", result.obligations)
        _actions(node, "AssociatedAdvice", "Advice", "AdviceId", result.advice)
        for group in result.attributes:
            attrib = {"Category": group.category}
            if group.xml_id is not None:
                attrib[_XML_ID] = group.xml_id
            group_node = _sub(node, "Attributes", attrib)
            for attribute in group.attributes:
                a_attrib = {"AttributeId": attribute.attribute_id, "IncludeInResult": "true"}
                if attribute.issuer is not None:
                    a_attrib["Issuer"] = attribute.issuer
                a_node = _sub(group_node, "Attribute", a_attrib)
                for value in attribute.values:
                    _sub(a_node, "AttributeValue", {"DataType": value.datatype}, _value_text(value))
        if result.policy_identifiers is not None:
            holder = _sub(node, "PolicyIdentifierList")
            for identifier in result.policy_identifiers:
                _sub(holder, f"{identifier.kind}IdReference", {"Version": identifier.version}, identifier.policy_id)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")
