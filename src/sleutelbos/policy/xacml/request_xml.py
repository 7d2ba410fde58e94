"""XACML 3.0 request and response contexts in XML (core §5.42-5.58, schema ``xacml-core-v3-schema-wd-17``).

:func:`parse_request_xml` checks the request as the schema would (root ``Request`` in the XACML 3.0 namespace, the
required attributes, only the allowed children, every ``AttributeValue`` in its data type's lexical space) and
raises :class:`.errors.InvalidRequest` otherwise — nothing is evaluated. ``<Content>`` is kept (a copy of its one
child element) for ``AttributeSelector``. :func:`render_response_xml` writes a schema-valid ``<Response>``.

The other direction serves a PEP that asks a remote PDP (e.g. AuthZForce): :func:`render_request_xml` writes a
request and :func:`parse_response_xml` reads the answer (:class:`.errors.InvalidResponse` if it is not one).
"""

from __future__ import annotations

import copy
from typing import Any

from lxml import etree

from .context import Attribute, Attributes, Request, Response, Result
from .decision import STATUS_OK, AttributeAssignment, MissingAttributeDetail, Obligation, PolicyIdentifier, Status
from .errors import InvalidRequest, InvalidResponse
from .model import XACML3_NS
from .status import UnknownDataType, XacmlSyntaxError
from .values import AttributeValue, lexical, parse_value, parse_value_cached, xpath_expression_value

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


_ATTRIBUTE = _NS + "Attribute"
_ATTRIBUTE_VALUE = _NS + "AttributeValue"
_CONTENT = _NS + "Content"


def _attributes(element: etree._Element) -> Attributes:
    category = element.get("Category")
    if not category:
        raise InvalidRequest("<Attributes>: attribute Category is required")
    attributes: list[Attribute] = []
    content = None
    for child in element:
        tag = child.tag
        if tag == _ATTRIBUTE:
            _attribute(child, category, attributes)
        elif tag == _CONTENT:
            inner = _elements(child)
            if len(inner) != 1 or content is not None:
                raise InvalidRequest(f"<Attributes Category={category!r}> <Content>: exactly one element is required")
            content = etree.ElementTree(copy.deepcopy(inner[0]))  # its own document: '//' stays inside it
        elif isinstance(tag, str):
            raise InvalidRequest(f"<Attributes Category={category!r}>: unexpected child element <{tag}>")
    return Attributes(category, tuple(attributes), content, element.get(_XML_ID))


def _attribute(element: etree._Element, category: str, into: list[Attribute]) -> None:
    """Appends one :class:`.context.Attribute` per data type of the ``<Attribute>`` (see its docstring); error
    messages are only formatted when there is an error (requests are parsed on the hot path of the HTTP PDP)."""
    attribute_id = element.get("AttributeId")
    if not attribute_id:
        raise InvalidRequest(f"<Attributes Category={category!r}> <Attribute>: attribute AttributeId is required")
    include = element.get("IncludeInResult")
    if include is None or include == "false":
        included = False
    else:
        included = _boolean(element, "IncludeInResult", _where(category, attribute_id), False)
    values = []
    for child in element:
        if child.tag != _ATTRIBUTE_VALUE:
            if isinstance(child.tag, str):
                raise InvalidRequest(f"{_where(category, attribute_id)}: unexpected child element <{child.tag}>")
            continue
        data_type = child.get("DataType")
        if not data_type:
            raise InvalidRequest(f"{_where(category, attribute_id)} <AttributeValue>: attribute DataType is required")
        if len(child):
            raise InvalidRequest(f"{_where(category, attribute_id)} <AttributeValue DataType={data_type!r}>: element "
                                 "content is not supported")
        text = child.text or ""
        if data_type == STRING:  # the common case: no parser, no cache
            values.append(AttributeValue(STRING, text))
            continue
        try:
            if data_type == XPATH_EXPRESSION:
                nsmap = {k: v for k, v in child.nsmap.items() if k}
                values.append(xpath_expression_value(text, child.get("XPathCategory", ""), nsmap))
            else:
                values.append(parse_value_cached(data_type, text))
        except (XacmlSyntaxError, UnknownDataType) as exc:
            raise InvalidRequest(f"{_where(category, attribute_id)} <AttributeValue DataType={data_type!r}>: {exc}"
                                 ) from exc
    if not values:
        raise InvalidRequest(f"{_where(category, attribute_id)}: at least one <AttributeValue> is required")
    issuer = element.get("Issuer")
    datatype = values[0].datatype
    if len(values) == 1 or all(value.datatype == datatype for value in values):
        into.append(Attribute(attribute_id, tuple(values), issuer, included))
        return
    by_type: dict[str, list[Any]] = {}
    for value in values:
        by_type.setdefault(value.datatype, []).append(value)
    into.extend(Attribute(attribute_id, tuple(group), issuer, included) for group in by_type.values())


def _where(category: str, attribute_id: str) -> str:
    return f"<Attributes Category={category!r}> <Attribute AttributeId={attribute_id!r}>"


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
            _value_element(node, "AttributeAssignment", attrib, assignment.value)


_PLAIN_RESPONSE = (b"<?xml version='1.0' encoding='UTF-8'?>\n<Response xmlns=\"" + XACML3_NS.encode()
                   + b"\"><Result><Decision>%s</Decision><Status><StatusCode Value=\"" + STATUS_OK.encode()
                   + b"\"/></Status></Result></Response>")


def render_response_xml(response: Response) -> bytes:
    """:class:`.context.Response` → a ``<Response>`` document (UTF-8).

    The most common answer — one Permit, Deny or NotApplicable with nothing attached — is written from a template;
    everything else is built with lxml.
    """
    if len(response.results) == 1:
        only = response.results[0]
        if (only.status is None and only.decision != "Indeterminate" and not only.obligations and not only.advice
                and not only.attributes and only.policy_identifiers is None):
            return _PLAIN_RESPONSE % only.decision.encode()
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
                    _value_element(a_node, "AttributeValue", {"DataType": value.datatype}, value)
        if result.policy_identifiers is not None:
            holder = _sub(node, "PolicyIdentifierList")
            for identifier in result.policy_identifiers:
                _sub(holder, f"{identifier.kind}IdReference", {"Version": identifier.version}, identifier.policy_id)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def render_request_xml(request: Request) -> bytes:
    """:class:`.context.Request` → a ``<Request>`` document (what a PEP sends to a remote PDP)."""
    root = etree.Element(_NS + "Request", nsmap={None: XACML3_NS}, ReturnPolicyIdList=_xs_bool(
        request.return_policy_id_list), CombinedDecision=_xs_bool(request.combined_decision))
    if request.xpath_version:
        _sub(_sub(root, "RequestDefaults"), "XPathVersion", text=request.xpath_version)
    for group in request.attributes:
        attrib = {"Category": group.category}
        if group.xml_id is not None:
            attrib[_XML_ID] = group.xml_id
        node = _sub(root, "Attributes", attrib)
        if group.content is not None:
            content = _sub(node, "Content")
            if isinstance(group.content, str):
                content.append(etree.fromstring(group.content.encode(), _PARSER))
            else:
                tree = group.content
                content.append(copy.deepcopy(tree.getroot() if isinstance(tree, etree._ElementTree) else tree))
        for attribute in group.attributes:
            _render_attribute(node, attribute, attribute.include_in_result)
    if request.multi_requests:
        multi = _sub(root, "MultiRequests")
        for refs in request.multi_requests:
            reference = _sub(multi, "RequestReference")
            for ref in refs:
                _sub(reference, "AttributesReference", {"ReferenceId": ref})
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def _xs_bool(flag: bool) -> str:
    return "true" if flag else "false"


def _render_attribute(parent: etree._Element, attribute: Attribute, include: bool) -> None:
    attrib = {"AttributeId": attribute.attribute_id, "IncludeInResult": _xs_bool(include)}
    if attribute.issuer is not None:
        attrib["Issuer"] = attribute.issuer
    node = _sub(parent, "Attribute", attrib)
    for value in attribute.values:
        _value_element(node, "AttributeValue", {"DataType": value.datatype}, value)


def _value_element(parent: etree._Element, name: str, attrib: dict[str, str], value: Any) -> None:
    if value.datatype == XPATH_EXPRESSION:
        # §A.2: the expression's prefixes mean what the namespace declarations in scope say; declare them here.
        nsmap = {prefix: uri for prefix, uri in value.value.namespaces if prefix}
        element = etree.SubElement(parent, _NS + name, {**attrib, "XPathCategory": value.value.category},
                                   nsmap=nsmap)
        element.text = value.value.path
        return
    _sub(parent, name, attrib, _value_text(value))


def parse_response_xml(body: bytes) -> Response:
    """A ``<Response>`` document (from a remote PDP) → :class:`.context.Response`."""
    try:
        root = etree.fromstring(body, _PARSER)
    except etree.XMLSyntaxError as exc:
        raise InvalidResponse(f"response: not well-formed XML: {exc}") from exc
    if _local(root) != "Response":
        raise InvalidResponse(f"response: the document element must be a XACML 3.0 <Response>, not <{root.tag}>")
    try:
        return Response(tuple(_result(result) for result in _elements(root)))
    except (XacmlSyntaxError, UnknownDataType, InvalidRequest, KeyError) as exc:
        raise InvalidResponse(f"response: {exc}") from exc


def _result(element: etree._Element) -> Result:
    if _local(element) != "Result":
        raise InvalidResponse(f"<Response>: unexpected child element <{element.tag}>")
    decision = None
    status = None
    obligations: tuple[Obligation, ...] = ()
    advice: tuple[Obligation, ...] = ()
    attributes: list[Attributes] = []
    identifiers = None
    for child in _elements(element):
        local = _local(child)
        if local == "Decision":
            decision = (child.text or "").strip()
        elif local == "Status":
            status = _status(child)
        elif local == "Obligations":
            obligations = _pep_actions(child, "ObligationId")
        elif local == "AssociatedAdvice":
            advice = _pep_actions(child, "AdviceId")
        elif local == "Attributes":
            attributes.append(_attributes(child))
        elif local == "PolicyIdentifierList":
            identifiers = tuple(
                PolicyIdentifier(_local(ref)[: -len("IdReference")], (ref.text or "").strip(),  # type: ignore[index]
                                 ref.get("Version", ""))
                for ref in _elements(child) if _local(ref) in ("PolicyIdReference", "PolicySetIdReference"))
        else:
            raise InvalidResponse(f"<Result>: unexpected child element <{child.tag}>")
    if decision not in ("Permit", "Deny", "NotApplicable", "Indeterminate"):
        raise InvalidResponse(f"<Result>: {decision!r} is not a decision")
    if status is not None and status.code == STATUS_OK and not status.message:
        status = None
    return Result(decision, status, obligations, advice, tuple(attributes), identifiers)


def _status(element: etree._Element) -> Status:
    code = element.find(_NS + "StatusCode")
    if code is None or not code.get("Value"):
        raise InvalidResponse("<Status>: a <StatusCode Value=...> is required")
    message = element.findtext(_NS + "StatusMessage")
    missing = tuple(
        MissingAttributeDetail(m.get("Category", ""), m.get("AttributeId", ""), m.get("DataType", ""),
                               m.get("Issuer"))
        for m in element.iterfind(f"{_NS}StatusDetail/{_NS}MissingAttributeDetail"))
    return Status(code.get("Value"), message, missing)


def _pep_actions(element: etree._Element, id_name: str) -> tuple[Obligation, ...]:
    actions = []
    for action in _elements(element):
        assignments = []
        for assignment in _elements(action):
            data_type = assignment.get("DataType", STRING)
            text = "".join(assignment.itertext())
            if data_type == XPATH_EXPRESSION:
                value = xpath_expression_value(text, assignment.get("XPathCategory", ""),
                                               {k: v for k, v in assignment.nsmap.items() if k})
            else:
                value = parse_value(data_type, text)
            assignments.append(AttributeAssignment(assignment.get("AttributeId", ""), value,
                                                   assignment.get("Category"), assignment.get("Issuer")))
        actions.append(Obligation(action.get(id_name, ""), tuple(assignments)))
    return tuple(actions)
