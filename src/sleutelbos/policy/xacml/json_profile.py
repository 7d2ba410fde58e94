"""Requests and responses in the JSON Profile of XACML 3.0 (v1.1; media type ``application/xacml+json``).

Reading (§4.2): ``{"Request": {...}}`` with ``Category`` objects (``CategoryId``, ``Id``, ``Content``, ``Attribute``)
or the category shorthands (``AccessSubject``, ``Action``, ``Resource``, ``Environment``, ``RecipientSubject``,
``IntermediarySubject``, ``Codebase``, ``RequestingMachine``), each an object or an array; ``Value`` a single
value or an array; ``DataType`` a URI, a shorthand, or inferred from the JSON type (§3.3.2); ``MultiRequests``.
``Content`` (XML as a string) is kept as text and parsed only when an ``AttributeSelector`` reads it (a
malformed one then makes that selector Indeterminate, as the XML would never have been needed otherwise).

Writing (§4.2.2): ``{"Response": [result, ...]}`` with ``Decision``, ``Status``, ``Obligations``,
``AssociatedAdvice``, ``Category`` and ``PolicyIdentifierList``.

Anything that does not fit is an :class:`.errors.InvalidRequest` — the request is not evaluated.

For a PEP asking a remote PDP: :func:`render_request_json` and :func:`parse_response_json`
(:class:`.errors.InvalidResponse`).
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
import orjson
from msgspec import UNSET, UnsetType

from .context import Attribute, Attributes, Request, Response, Result
from .decision import STATUS_OK, AttributeAssignment, MissingAttributeDetail, Obligation, PolicyIdentifier, Status
from .errors import InvalidRequest, InvalidResponse
from .status import UnknownDataType, XacmlSyntaxError
from .values import AttributeValue, datatype_from_json, infer_json_datatype, parse_json_value, to_json_value

CATEGORY_SHORTHANDS = {
    "AccessSubject": "urn:oasis:names:tc:xacml:1.0:subject-category:access-subject",
    "Action": "urn:oasis:names:tc:xacml:3.0:attribute-category:action",
    "Resource": "urn:oasis:names:tc:xacml:3.0:attribute-category:resource",
    "Environment": "urn:oasis:names:tc:xacml:3.0:attribute-category:environment",
    "RecipientSubject": "urn:oasis:names:tc:xacml:1.0:subject-category:recipient-subject",
    "IntermediarySubject": "urn:oasis:names:tc:xacml:1.0:subject-category:intermediary-subject",
    "Codebase": "urn:oasis:names:tc:xacml:1.0:subject-category:codebase",
    "RequestingMachine": "urn:oasis:names:tc:xacml:1.0:subject-category:requesting-machine",
}
_REQUEST_MEMBERS = {"ReturnPolicyIdList", "CombinedDecision", "XPathVersion", "Category", "MultiRequests",
                    *CATEGORY_SHORTHANDS}


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidRequest(f"{where} must be a JSON boolean")
    return value


def load_json(body: bytes | str) -> Any:
    """The parsed JSON document, or :class:`.errors.InvalidRequest` if ``body`` is not JSON."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"request: not valid JSON: {exc}") from exc


def parse_request_json(body: bytes | str) -> Request:
    """A JSON Profile request → :class:`.context.Request`, or :class:`.errors.InvalidRequest`."""
    return request_from_document(load_json(body))


def request_from_document(document: Any) -> Request:
    """A parsed JSON Profile document → :class:`.context.Request`, or :class:`.errors.InvalidRequest`."""
    if not isinstance(document, dict) or len(document) != 1 or not isinstance(document.get("Request"), dict):
        raise InvalidRequest('request: the JSON document must be {"Request": {...}}')
    request = document["Request"]
    if not request.keys() <= _REQUEST_MEMBERS:
        raise InvalidRequest(f"Request: unknown member(s) {sorted(set(request) - _REQUEST_MEMBERS)}")
    groups: list[Attributes] = []
    categories = request.get("Category", [])
    for name, category in CATEGORY_SHORTHANDS.items():
        if name in request:
            shorthand = request[name]
            for item in shorthand if isinstance(shorthand, list) else [shorthand]:
                groups.append(_category(item, category, f"Request.{name}"))
    if not isinstance(categories, list):
        categories = [categories]
    for position, item in enumerate(categories):
        groups.append(_category(item, None, f"Request.Category[{position}]"))
    if not groups:
        raise InvalidRequest("Request: at least one category is required")
    multi: list[tuple[str, ...]] = []
    if "MultiRequests" in request:
        multi_requests = request["MultiRequests"]
        references = multi_requests.get("RequestReference") if isinstance(multi_requests, dict) else None
        if not isinstance(references, list) or not references:
            raise InvalidRequest("Request.MultiRequests: RequestReference must be a non-empty array")
        ids = {g.xml_id for g in groups if g.xml_id is not None}
        for reference in references:
            refs = reference.get("ReferenceId") if isinstance(reference, dict) else None
            if not isinstance(refs, list) or not refs or not all(isinstance(r, str) and r in ids for r in refs):
                raise InvalidRequest("Request.MultiRequests: each ReferenceId must list category Ids of the request")
            multi.append(tuple(refs))
    return Request(
        tuple(groups),
        _bool(request.get("ReturnPolicyIdList", False), "Request.ReturnPolicyIdList"),
        _bool(request.get("CombinedDecision", False), "Request.CombinedDecision"),
        tuple(multi),
        request.get("XPathVersion"),
    )


_CATEGORY_MEMBERS = frozenset({"CategoryId", "Id", "Content", "Attribute"})
_ATTRIBUTE_MEMBERS = frozenset({"AttributeId", "Value", "Issuer", "DataType", "IncludeInResult"})


def _category(item: Any, category: str | None, where: str) -> Attributes:
    if not isinstance(item, dict):
        raise InvalidRequest(f"{where} must be an object")
    get = item.get
    content = get("Content")
    attributes = get("Attribute", [])
    xml_id = get("Id")
    if len(item) != ("CategoryId" in item) + (content is not None) + ("Attribute" in item) + (xml_id is not None):
        unknown = sorted(set(item) - _CATEGORY_MEMBERS)
        raise InvalidRequest(f"{where}: unknown member(s) {unknown}" if unknown else f"{where}: null members")
    category = get("CategoryId", category)
    if not isinstance(category, str) or not category:
        raise InvalidRequest(f"{where}: CategoryId is required")
    category = CATEGORY_SHORTHANDS.get(category, category)
    if content is not None and not isinstance(content, str):
        raise InvalidRequest(f"{where}.Content must be a string of XML")
    if not isinstance(attributes, list):
        attributes = [attributes]
    if xml_id is not None and not isinstance(xml_id, str):
        raise InvalidRequest(f"{where}.Id must be a string")
    parsed = []
    append = parsed.append
    for position, item in enumerate(attributes):
        # the common shape inline (see _common_attribute); anything else through _attribute and its errors
        if type(item) is dict and len(item) == 3:
            attribute_id = item.get("AttributeId")
            raw = item.get("Value")
            if (type(raw) is str and item.get("DataType") in _STRING_NAMES and type(attribute_id) is str
                    and attribute_id):
                attribute = _new_attribute(Attribute)
                _set_attribute_id(attribute, attribute_id)
                _set_values(attribute, (AttributeValue(_STRING, raw),))
                _set_issuer(attribute, None)
                _set_include(attribute, False)
                append(attribute)
            else:
                append(_common_attribute(item) or _attribute(item, where, position))
        else:
            append(_attribute(item, where, position))
    return Attributes(category, tuple(parsed), content, xml_id)


_MISSING = object()
_STRING = "http://www.w3.org/2001/XMLSchema#string"
_STRING_NAMES = frozenset({"string", _STRING})
_SCALARS = frozenset({str, bool, int, float})
_VALUE_CACHE: dict[tuple[str, type, Any], AttributeValue] = {}
_VALUE_CACHE_SIZE = 4096
_new_attribute = Attribute.__new__
_set_attribute_id = Attribute.__dict__["attribute_id"].__set__
_set_values = Attribute.__dict__["values"].__set__
_set_issuer = Attribute.__dict__["issuer"].__set__
_set_include = Attribute.__dict__["include_in_result"].__set__


def _common_attribute(item: dict[str, Any]) -> Attribute | None:
    """The common shape — ``{"AttributeId": …, "DataType": …, "Value": <one JSON scalar>}`` — or ``None`` for
    anything else (which :func:`_attribute` then reads, with its precise errors).

    Strings of the ``string`` type become values without a parser call; values of other types (``"false"``,
    ``true``, ``42``, a date…) come from a small cache of parsed values keyed by the data type *as written*, the
    JSON type and the value, because parsing is pure and requests repeat such values; values that do not parse are
    never cached, so a bad one still gets its error from :func:`_attribute`. The :class:`.context.Attribute` is
    built through its slots: one value of one data type needs none of the constructor's checks.
    """
    attribute_id = item.get("AttributeId")
    data_type = item.get("DataType")
    raw = item.get("Value")
    if type(attribute_id) is not str or not attribute_id or type(data_type) is not str:
        return None
    kind = type(raw)
    if kind is str and data_type in _STRING_NAMES:
        value = AttributeValue(_STRING, raw)
    elif kind in _SCALARS:
        value = _cached_value(data_type, kind, raw)  # type: ignore[assignment]
        if value is None:
            return None
    else:
        return None
    attribute = _new_attribute(Attribute)
    _set_attribute_id(attribute, attribute_id)
    _set_values(attribute, (value,))
    _set_issuer(attribute, None)
    _set_include(attribute, False)
    return attribute


# --- the simple request, read straight into the evaluation context's values


_Scalar = str | bool | int | float


class _SimpleAttribute(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    AttributeId: Annotated[str, msgspec.Meta(min_length=1)]
    Value: _Scalar | list[_Scalar]
    DataType: str | UnsetType = UNSET  # absent: inferred from the JSON value (§3.3.2); null: the general reader
    IncludeInResult: bool = False


_Attributes = list[_SimpleAttribute] | _SimpleAttribute


class _SimpleCategory(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    CategoryId: str | UnsetType = UNSET  # absent, never null: an explicit null is invalid (the general reader says so)
    Attribute: _Attributes = []


_Categories = list[_SimpleCategory] | _SimpleCategory | UnsetType


class _SimpleRequest(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    Category: _Categories = UNSET
    ReturnPolicyIdList: bool = False
    CombinedDecision: bool = False
    AccessSubject: _Categories = UNSET
    Action: _Categories = UNSET
    Resource: _Categories = UNSET
    Environment: _Categories = UNSET
    RecipientSubject: _Categories = UNSET
    IntermediarySubject: _Categories = UNSET
    Codebase: _Categories = UNSET
    RequestingMachine: _Categories = UNSET


class _SimpleDocument(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    Request: _SimpleRequest


_SIMPLE_DECODER = msgspec.json.Decoder(_SimpleDocument)
_STRING_OR_ABSENT = frozenset({"string", "http://www.w3.org/2001/XMLSchema#string", UNSET})
_new_value = AttributeValue.__new__
_set_datatype = AttributeValue.__dict__["datatype"].__set__
_set_value = AttributeValue.__dict__["value"].__set__
_SHORTHAND_FIELDS = tuple(CATEGORY_SHORTHANDS.items())
_INT_RANGE = range(-(1 << 63), 1 << 64)  # the integers orjson reads as int (the general reader's view of a number)


def simple_request_values(body: bytes | str) -> dict[tuple[str, str, str], tuple[AttributeValue, ...]] | None:
    """The attribute values of a *simple* JSON Profile request, keyed as the evaluation context keys them
    (``(category, attribute id, data type)``), or ``None`` when the request is not simple.

    Simple is what a PEP sends for one decision: one individual request (every category at most once, no
    ``MultiRequests``), ``ReturnPolicyIdList`` and ``CombinedDecision`` absent or ``false``, no ``XPathVersion``,
    categories with only ``CategoryId`` (or a shorthand) and ``Attribute``, every attribute exactly
    ``AttributeId``/``Value``/``DataType`` (absent: inferred) and ``IncludeInResult`` if ``false``, with one scalar
    or an array of scalars that parse as that type, and no attribute twice. The body is decoded by msgspec into
    typed structs of exactly that shape (≈3× faster than decoding to dicts, and the shape checks are done in C);
    the values go into the dict the evaluation context uses, without ``Attribute``/``Attributes``/``Request``
    objects.

    Anything else, *including every invalid request*, gives ``None``, and the caller goes through
    :func:`parse_request_json`, which reads all of the profile and raises the precise
    :class:`.errors.InvalidRequest`. So this function only decides how fast a valid request is read, never what it
    means (``tests/policy/test_request_fast_paths.py`` compares the two on every request of the conformance suite).
    """
    try:
        request = _SIMPLE_DECODER.decode(body).Request
    except (msgspec.DecodeError, ValueError):  # not JSON, not UTF-8, or not of the simple shape
        return None
    if request.ReturnPolicyIdList or request.CombinedDecision:
        return None
    values: dict[tuple[str, str, str], tuple[AttributeValue, ...]] = {}
    seen: set[str] = set()
    count = 0
    groups = request.Category
    if (request.AccessSubject is not UNSET or request.Action is not UNSET or request.Resource is not UNSET
            or request.Environment is not UNSET or request.RecipientSubject is not UNSET
            or request.IntermediarySubject is not UNSET or request.Codebase is not UNSET
            or request.RequestingMachine is not UNSET):
        groups = _with_shorthands(request, groups)
    if groups is UNSET:
        return None  # no category: invalid
    if type(groups) is not list:
        groups = [groups]
    for item in groups:
        category = item.CategoryId
        if category is UNSET or not category:
            return None
        category = CATEGORY_SHORTHANDS.get(category, category)
        if category in seen:
            return None  # a repeated category: several individual requests
        seen.add(category)
        attributes = item.Attribute
        if type(attributes) is not list:
            attributes = [attributes]
        for attribute in attributes:
            raw = attribute.Value
            if attribute.IncludeInResult:
                return None
            if type(raw) is str and attribute.DataType in _STRING_OR_ABSENT:
                # the common case inline: a string (declared, or inferred from the JSON string), built through its
                # slots (half the cost of the constructor)
                value = _new_value(AttributeValue)
                _set_datatype(value, _STRING)
                _set_value(value, raw)
                values[(category, attribute.AttributeId, _STRING)] = (value,)
            else:
                found = _simple_values(attribute.DataType, raw)
                if found is None:
                    return None
                values[(category, attribute.AttributeId, found[0].datatype)] = found
            count += 1
    if not seen or count != len(values):
        return None  # no category (invalid), or an attribute given twice (the general reader merges the values)
    return values


def _simple_values(data_type: Any, raw: Any) -> tuple[AttributeValue, ...] | None:
    """The values of a simple attribute that is not one string of type ``string``; ``None`` when the general
    reader must read it (it does not parse, or cannot be inferred)."""
    if data_type is UNSET:
        data_type = _inferred_datatype(raw)
        if data_type is None:
            return None
    if type(raw) is list:
        if not raw:
            return None
        if data_type in _STRING_NAMES:
            for one in raw:
                if type(one) is not str:
                    return None
            return tuple([AttributeValue(_STRING, one) for one in raw])
        parsed = []
        for one in raw:
            value = _cached_value(data_type, type(one), one)
            if value is None:
                return None
            parsed.append(value)
        return tuple(parsed)
    value = _VALUE_CACHE.get((data_type, type(raw), raw))
    if value is None:
        value = _cached_value(data_type, type(raw), raw)
        if value is None:
            return None
    return (value,)


def _inferred_datatype(raw: Any) -> str | None:
    """The data type of a value given without ``DataType`` (§3.3.2), or ``None`` when it cannot be inferred."""
    kind = type(raw)
    if kind is str:
        return _STRING
    if kind is list:
        try:
            return infer_json_datatype(raw)
        except XacmlSyntaxError:
            return None
    return _INFERRED.get(kind)


_INFERRED = {bool: "http://www.w3.org/2001/XMLSchema#boolean", int: "http://www.w3.org/2001/XMLSchema#integer",
             float: "http://www.w3.org/2001/XMLSchema#double"}


def _with_shorthands(request: _SimpleRequest, groups: Any) -> Any:
    """``Category`` and the shorthand categories (§4.2.2) as one list, the shorthands' ``CategoryId`` filled in."""
    for name, shorthand in _SHORTHAND_FIELDS:
        items = getattr(request, name)
        if items is not UNSET:
            if type(items) is not list:
                items = [items]
            for item in items:
                if item.CategoryId is UNSET:
                    item.CategoryId = shorthand
            groups = items if groups is UNSET else [*items, *(groups if type(groups) is list else [groups])]
    return groups


def _cached_value(data_type: str, kind: type, raw: Any) -> AttributeValue | None:
    """A parsed non-string JSON scalar from the bounded cache (see :func:`_common_attribute`); ``None`` if it does
    not parse (the general reader then reports it)."""
    if kind is int and raw not in _INT_RANGE:
        return None  # orjson reads it as a float: leave it to the general reader
    key = (data_type, kind, raw)
    value = _VALUE_CACHE.get(key)
    if value is None:
        try:
            value = parse_json_value(data_type, raw)
        except (XacmlSyntaxError, UnknownDataType):
            return None
        if len(_VALUE_CACHE) >= _VALUE_CACHE_SIZE:
            _VALUE_CACHE.clear()
        _VALUE_CACHE[key] = value
    return value


def _attribute(item: Any, parent: str, position: int) -> Attribute:
    """One JSON attribute; the location for an error message is only formatted when there is an error.

    Written for speed (the HTTP PDP parses every attribute of every request): members are counted instead of
    compared as sets, and string values of the ``string`` type become values without a parser call.
    """
    if not isinstance(item, dict):
        raise InvalidRequest(f"{parent}.Attribute[{position}] must be an object")
    get = item.get
    attribute_id = get("AttributeId")
    raw = get("Value", _MISSING)
    issuer = get("Issuer")
    include = get("IncludeInResult", False)
    data_type = get("DataType")
    present = 2 + ("Issuer" in item) + ("IncludeInResult" in item) + ("DataType" in item)
    if (len(item) != present or not isinstance(attribute_id, str) or not attribute_id or raw is _MISSING
            or (issuer is not None and not isinstance(issuer, str)) or not isinstance(include, bool)):
        raise InvalidRequest(_attribute_problem(item, f"{parent}.Attribute[{position}]"))
    try:
        if data_type is None:
            data_type = infer_json_datatype(raw)
        elif isinstance(data_type, str):
            data_type = datatype_from_json(data_type)
        else:
            raise InvalidRequest(f"{parent}.Attribute[{position}].DataType must be a string")
        if isinstance(raw, list):
            if not raw:
                raise InvalidRequest(f"{parent}.Attribute[{position}]: Value must not be an empty array")
            if data_type == _STRING and all(isinstance(v, str) for v in raw):
                values = tuple([AttributeValue(_STRING, v) for v in raw])
            else:
                values = tuple([parse_json_value(data_type, v) for v in raw])
        elif data_type == _STRING and isinstance(raw, str):
            values = (AttributeValue(_STRING, raw),)
        else:
            values = (parse_json_value(data_type, raw),)
    except (XacmlSyntaxError, UnknownDataType) as exc:
        raise InvalidRequest(f"{parent}.Attribute[{position}] (AttributeId {attribute_id!r}): {exc}") from exc
    return Attribute(attribute_id, values, issuer, include)


def _attribute_problem(item: dict[str, Any], where: str) -> str:
    unknown = set(item) - _ATTRIBUTE_MEMBERS
    if unknown:
        return f"{where}: unknown member(s) {sorted(unknown)}"
    if not isinstance(item.get("AttributeId"), str) or not item.get("AttributeId"):
        return f"{where}: AttributeId is required"
    if "Value" not in item:
        return f"{where}: Value is required"
    return f"{where}: Issuer must be a string and IncludeInResult a boolean"


# --- responses


def _json_actions(actions: tuple[Obligation, ...]) -> list[dict[str, Any]]:
    out = []
    for action in actions:
        entry: dict[str, Any] = {"Id": action.obligation_id}
        if action.assignments:
            assignments = []
            for assignment in action.assignments:
                item: dict[str, Any] = {"AttributeId": assignment.attribute_id,
                                        "Value": to_json_value(assignment.value),
                                        "DataType": assignment.value.datatype}
                if assignment.category is not None:
                    item["Category"] = assignment.category
                if assignment.issuer is not None:
                    item["Issuer"] = assignment.issuer
                assignments.append(item)
            entry["AttributeAssignment"] = assignments
        out.append(entry)
    return out


def response_to_json(response: Response) -> dict[str, Any]:
    """:class:`.context.Response` → the JSON Profile object (before serialisation)."""
    results = []
    for result in response.results:
        entry: dict[str, Any] = {"Decision": result.decision}
        status = result.status
        status_entry: dict[str, Any] = {"StatusCode": {"Value": status.code if status else STATUS_OK}}
        if status is not None and status.message:
            status_entry["StatusMessage"] = status.message
        if status is not None and status.missing_attributes:
            status_entry["StatusDetail"] = {"MissingAttributeDetail": [
                {k: v for k, v in (("Category", m.category), ("AttributeId", m.attribute_id),
                                   ("DataType", m.data_type), ("Issuer", m.issuer)) if v is not None}
                for m in status.missing_attributes
            ]}
        entry["Status"] = status_entry
        if result.obligations:
            entry["Obligations"] = _json_actions(result.obligations)
        if result.advice:
            entry["AssociatedAdvice"] = _json_actions(result.advice)
        if result.attributes:
            categories = []
            for group in result.attributes:
                category: dict[str, Any] = {"CategoryId": group.category}
                if group.xml_id is not None:
                    category["Id"] = group.xml_id
                category["Attribute"] = [
                    {k: v for k, v in (
                        ("AttributeId", a.attribute_id),
                        ("Value", [to_json_value(v) for v in a.values]),
                        ("DataType", a.values[0].datatype),
                        ("Issuer", a.issuer),
                        ("IncludeInResult", True),
                    ) if v is not None}
                    for a in group.attributes
                ]
                categories.append(category)
            entry["Category"] = categories
        if result.policy_identifiers is not None:
            lists: dict[str, list[dict[str, str]]] = {}
            for identifier in result.policy_identifiers:
                lists.setdefault(f"{identifier.kind}IdReference", []).append(
                    {"Id": identifier.policy_id, "Version": identifier.version})
            entry["PolicyIdentifierList"] = lists
        results.append(entry)
    return {"Response": results}


def render_response_json(response: Response) -> bytes:
    """:class:`.context.Response` → ``application/xacml+json`` bytes."""
    return orjson.dumps(response_to_json(response))


def request_to_json(request: Request) -> dict[str, Any]:
    """:class:`.context.Request` → the JSON Profile object (before serialisation)."""
    categories = []
    for group in request.attributes:
        category: dict[str, Any] = {"CategoryId": group.category}
        if group.xml_id is not None:
            category["Id"] = group.xml_id
        if group.content is not None:
            if isinstance(group.content, str):
                category["Content"] = group.content
            else:
                from lxml import etree

                tree = group.content
                element = tree.getroot() if isinstance(tree, etree._ElementTree) else tree
                category["Content"] = etree.tostring(element, encoding="unicode")
        category["Attribute"] = [_json_attribute(a) for a in group.attributes]
        categories.append(category)
    body: dict[str, Any] = {"ReturnPolicyIdList": request.return_policy_id_list,
                            "CombinedDecision": request.combined_decision, "Category": categories}
    if request.xpath_version:
        body["XPathVersion"] = request.xpath_version
    if request.multi_requests:
        body["MultiRequests"] = {"RequestReference": [{"ReferenceId": list(refs)}
                                                      for refs in request.multi_requests]}
    return {"Request": body}


def _json_attribute(attribute: Attribute) -> dict[str, Any]:
    item: dict[str, Any] = {"AttributeId": attribute.attribute_id,
                            "Value": [to_json_value(v) for v in attribute.values],
                            "DataType": attribute.values[0].datatype}
    if attribute.issuer is not None:
        item["Issuer"] = attribute.issuer
    if attribute.include_in_result:
        item["IncludeInResult"] = True
    return item


def render_request_json(request: Request) -> bytes:
    """:class:`.context.Request` → ``application/xacml+json`` bytes (what a PEP sends to a remote PDP)."""
    return orjson.dumps(request_to_json(request))


def parse_response_json(body: bytes | str) -> Response:
    """A JSON Profile response (from a remote PDP) → :class:`.context.Response`."""
    try:
        document = orjson.loads(body)
        results = document["Response"]
        if isinstance(results, dict):
            results = [results]
        return Response(tuple(_json_result(r) for r in results))
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError, XacmlSyntaxError,
            UnknownDataType, InvalidRequest) as exc:
        raise InvalidResponse(f"response: not a JSON Profile response: {exc}") from exc


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _json_result(result: dict[str, Any]) -> Result:
    decision = result["Decision"]
    if decision not in ("Permit", "Deny", "NotApplicable", "Indeterminate"):
        raise ValueError(f"{decision!r} is not a decision")
    status = None
    if "Status" in result:
        entry = result["Status"]
        code = entry["StatusCode"]["Value"]
        detail = (entry.get("StatusDetail") or {}).get("MissingAttributeDetail")
        missing = tuple(MissingAttributeDetail(m.get("Category", ""), m.get("AttributeId", ""),
                                               m.get("DataType", ""), m.get("Issuer")) for m in _as_list(detail))
        status = Status(code, entry.get("StatusMessage"), missing)
        if code == STATUS_OK and not status.message:
            status = None
    identifiers = None
    if "PolicyIdentifierList" in result:
        lists = result["PolicyIdentifierList"]
        identifiers = tuple(PolicyIdentifier(kind, ref["Id"], ref.get("Version", ""))
                            for kind in ("Policy", "PolicySet")
                            for ref in _as_list(lists.get(f"{kind}IdReference")))
    attributes = tuple(_category(c, None, "Response.Category") for c in _as_list(result.get("Category")))
    return Result(decision, status, _json_pep_actions(result.get("Obligations")),
                  _json_pep_actions(result.get("AssociatedAdvice")), attributes, identifiers)


def _json_pep_actions(actions: Any) -> tuple[Obligation, ...]:
    out = []
    for action in _as_list(actions):
        assignments = []
        for a in _as_list(action.get("AttributeAssignment")):
            data_type = datatype_from_json(a["DataType"]) if "DataType" in a else infer_json_datatype(a["Value"])
            for raw in _as_list(a["Value"]):
                assignments.append(AttributeAssignment(a["AttributeId"], parse_json_value(data_type, raw),
                                                       a.get("Category"), a.get("Issuer")))
        out.append(Obligation(action["Id"], tuple(assignments)))
    return tuple(out)
