"""XACML attribute values and bags (core spec §5.31 ``AttributeValue``, §7.3.2 bags) and their lexical forms.

A value is its data type identifier plus the Python form of :mod:`sleutelbos.policy.xacml.datatypes`, whose
equality is the XACML equality of the type; a bag is an unordered collection of values of one data type (order is
kept only so that responses echo attributes as they came). :func:`parse_value` reads the XML lexical form and
raises :class:`XacmlSyntaxError` (status ``syntax-error``) for text outside the type's lexical space;
:func:`lexical` writes the canonical form for responses; :func:`parse_json_value` / :func:`to_json_value` do the
same for the JSON Profile of XACML 3.0 (v1.1, §3.3 "Representation of the XACML data types"), whose data type
shorthands ("string", "dateTime" …) :func:`datatype_from_json` resolves.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sleutelbos.policy.xacml import datatypes as dt
from sleutelbos.policy.xacml.status import UnknownDataType, XacmlSyntaxError


@dataclass(frozen=True, slots=True)
class AttributeValue:
    """One typed value. Equality is XACML equality of the data type (see :mod:`~.datatypes`)."""

    datatype: str
    value: Any


_set_datatype = AttributeValue.__dict__["datatype"].__set__
_set_value = AttributeValue.__dict__["value"].__set__


def _init_attribute_value(self: AttributeValue, datatype: str, value: Any) -> None:
    # The generated frozen __init__ goes through object.__setattr__; the slot descriptors do the same job in half
    # the time, and values are made for every attribute of every request.
    _set_datatype(self, datatype)
    _set_value(self, value)


AttributeValue.__init__ = _init_attribute_value  # type: ignore[method-assign]


@dataclass(frozen=True, slots=True)
class Bag:
    """A bag of values of one data type (§7.3.2); possibly empty."""

    datatype: str
    values: tuple[AttributeValue, ...]

    def __len__(self) -> int:
        return len(self.values)

    def __iter__(self) -> Iterator[AttributeValue]:
        return iter(self.values)


TRUE = AttributeValue(dt.BOOLEAN, True)
FALSE = AttributeValue(dt.BOOLEAN, False)


def boolean(flag: bool) -> AttributeValue:
    """The shared ``true``/``false`` value (functions return these rather than allocating)."""
    return TRUE if flag else FALSE


_XML_SPACE = re.compile(r"[ \t\n\r]+")


def _collapse(text: str) -> str:
    """XML Schema's ``whiteSpace="collapse"`` facet (every type here but ``string``)."""
    return _XML_SPACE.sub(" ", text).strip(" ")


def _parse_string(text: str) -> str:
    return text


def _parse_anyuri(text: str) -> str:
    stripped = text.strip(" \t\n\r")
    return _collapse(stripped) if _XML_SPACE.search(stripped) else stripped


def _collapsed(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """For the types whose lexical space has no inner white space, collapsing is stripping."""
    return lambda text: parse(text.strip(" \t\n\r"))


def _legacy_day_time(text: str) -> dt.DayTimeDuration:
    return dt.DayTimeDuration.parse(text, dt.LEGACY_DAYTIMEDURATION)


def _legacy_year_month(text: str) -> dt.YearMonthDuration:
    return dt.YearMonthDuration.parse(text, dt.LEGACY_YEARMONTHDURATION)


_PARSERS: dict[str, Callable[[str], Any]] = {
    dt.STRING: _parse_string,
    dt.BOOLEAN: _collapsed(dt.parse_boolean),
    dt.INTEGER: _collapsed(dt.parse_integer),
    dt.DOUBLE: _collapsed(dt.parse_double),
    dt.TIME: _collapsed(dt.XsTime.parse),
    dt.DATE: _collapsed(dt.XsDate.parse),
    dt.DATETIME: _collapsed(dt.XsDateTime.parse),
    dt.DAYTIMEDURATION: _collapsed(dt.DayTimeDuration.parse),
    dt.YEARMONTHDURATION: _collapsed(dt.YearMonthDuration.parse),
    dt.LEGACY_DAYTIMEDURATION: _collapsed(_legacy_day_time),
    dt.LEGACY_YEARMONTHDURATION: _collapsed(_legacy_year_month),
    dt.ANYURI: _parse_anyuri,
    dt.HEXBINARY: _collapsed(dt.parse_hex),
    dt.BASE64BINARY: _collapsed(dt.parse_base64),
    dt.RFC822NAME: _collapsed(dt.RFC822Name.parse),
    dt.X500NAME: dt.X500Name.parse,
    dt.IPADDRESS: _collapsed(dt.IPAddress.parse),
    dt.DNSNAME: _collapsed(dt.DNSName.parse),
}

DATATYPES: frozenset[str] = frozenset((*_PARSERS, dt.XPATHEXPRESSION))
"""Every data type identifier this PDP knows."""


def is_known_datatype(datatype_uri: str) -> bool:
    return datatype_uri in DATATYPES


def parse_value(datatype_uri: str, text: str) -> AttributeValue:
    """The value of ``datatype_uri`` written as ``text`` (the content of an XML ``AttributeValue``).

    Raises :class:`XacmlSyntaxError` for text outside the type's lexical space and :class:`UnknownDataType` for a
    type this PDP does not implement. ``xpathExpression`` needs its ``XPathCategory`` too: use
    :func:`xpath_expression_value`.
    """
    if datatype_uri == dt.STRING:
        return AttributeValue(dt.STRING, text)
    parser = _PARSERS.get(datatype_uri)
    if parser is None:
        if datatype_uri == dt.XPATHEXPRESSION:
            raise XacmlSyntaxError("an xpathExpression value needs its XPathCategory")
        raise UnknownDataType(f"unknown data type {datatype_uri!r}")
    return AttributeValue(datatype_uri, parser(text))


_PARSED: dict[tuple[str, str], AttributeValue] = {}
_PARSED_SIZE = 4096


def parse_value_cached(datatype_uri: str, text: str) -> AttributeValue:
    """:func:`parse_value` through a small cache: request parsers see the same ``false``, ``read`` or dates again
    and again, parsing is pure and values are immutable. Text that does not parse raises and is not cached; the
    cache is emptied when full (bounded memory whatever the requests)."""
    key = (datatype_uri, text)
    value = _PARSED.get(key)
    if value is None:
        value = parse_value(datatype_uri, text)
        if len(_PARSED) >= _PARSED_SIZE:
            _PARSED.clear()
        _PARSED[key] = value
    return value


def xpath_expression_value(
    path: str, category: str, namespaces: Mapping[str, str] | None = None
) -> AttributeValue:
    """An ``xpathExpression`` value (§A.2, §5.31 ``XPathCategory``) with the namespace bindings in scope."""
    if not category:
        raise XacmlSyntaxError("an xpathExpression value needs its XPathCategory")
    bindings = tuple(sorted((namespaces or {}).items()))
    return AttributeValue(dt.XPATHEXPRESSION, dt.XPathExpression(path.strip(), category, bindings))


def _lexical_bytes_hex(value: bytes) -> str:
    return value.hex().upper()


def _lexical_bytes_base64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


_FORMATTERS: dict[str, Callable[[Any], str]] = {
    dt.STRING: str,
    dt.ANYURI: str,
    dt.BOOLEAN: lambda v: "true" if v else "false",
    dt.INTEGER: str,
    dt.DOUBLE: dt.format_double,
    dt.HEXBINARY: _lexical_bytes_hex,
    dt.BASE64BINARY: _lexical_bytes_base64,
}


def lexical(av: AttributeValue) -> str:
    """The canonical lexical form of a value, as it goes into a response.

    Numbers, booleans, dates, times and durations get XML Schema's canonical form (``P12DT148H`` is written
    ``P18DT4H``); names (x500Name, rfc822Name, ipAddress, dnsName) keep the text they were written with, since
    their equality ignores distinctions (case, spacing) that the writer may want to see again.
    """
    formatter = _FORMATTERS.get(av.datatype)
    if formatter is not None:
        return formatter(av.value)
    return av.value.lexical()  # type: ignore[no-any-return]


# --- JSON Profile of XACML 3.0 ---------------------------------------------------------------------------------

JSON_SHORTHANDS: Mapping[str, str] = {
    "string": dt.STRING,
    "boolean": dt.BOOLEAN,
    "integer": dt.INTEGER,
    "double": dt.DOUBLE,
    "time": dt.TIME,
    "date": dt.DATE,
    "dateTime": dt.DATETIME,
    "dayTimeDuration": dt.DAYTIMEDURATION,
    "yearMonthDuration": dt.YEARMONTHDURATION,
    "anyURI": dt.ANYURI,
    "hexBinary": dt.HEXBINARY,
    "base64Binary": dt.BASE64BINARY,
    "rfc822Name": dt.RFC822NAME,
    "x500Name": dt.X500NAME,
    "ipAddress": dt.IPADDRESS,
    "dnsName": dt.DNSNAME,
    "xpathExpression": dt.XPATHEXPRESSION,
}
"""JSON Profile §3.3.1: the short names a JSON request may use instead of a data type URI."""

JSON_SHORTHAND_OF: Mapping[str, str] = {uri: short for short, uri in JSON_SHORTHANDS.items()}


def datatype_from_json(name: str) -> str:
    """The data type URI for a JSON ``DataType`` member (a shorthand or a full URI)."""
    return JSON_SHORTHANDS.get(name, name)


def infer_json_datatype(json_value: Any) -> str:
    """JSON Profile §3.3.2: the data type of a value given without ``DataType``, from its JSON type.

    For an array the rule applies to its members: all integers → integer; integers mixed with other numbers →
    double; anything else must agree.
    """
    if isinstance(json_value, str):
        return dt.STRING
    if isinstance(json_value, list):
        kinds = {infer_json_datatype(v) for v in json_value}
        if kinds <= {dt.INTEGER, dt.DOUBLE} and kinds:
            return dt.DOUBLE if dt.DOUBLE in kinds else dt.INTEGER
        if len(kinds) == 1:
            return kinds.pop()
        if not kinds:
            return dt.STRING
        raise XacmlSyntaxError("array values of different JSON types need an explicit DataType")
    if isinstance(json_value, bool):
        return dt.BOOLEAN
    if isinstance(json_value, int):
        return dt.INTEGER
    if isinstance(json_value, float):
        return dt.DOUBLE
    if isinstance(json_value, str):
        return dt.STRING
    if isinstance(json_value, dict) and "XPath" in json_value:
        return dt.XPATHEXPRESSION
    raise XacmlSyntaxError(f"cannot infer a data type for the JSON value {json_value!r}")


def parse_json_value(datatype_uri: str, json_value: Any) -> AttributeValue:
    """A value from the JSON Profile: JSON booleans and numbers for boolean/integer/double, strings in the XML
    lexical form for everything (including those three), an object for ``xpathExpression`` (§3.3.1).

    ``datatype_uri`` may be a shorthand.
    """
    datatype = JSON_SHORTHANDS.get(datatype_uri, datatype_uri)
    if isinstance(json_value, str):
        if datatype == dt.STRING:  # the common case, first
            return AttributeValue(dt.STRING, json_value)
        return parse_value(datatype, json_value)
    if isinstance(json_value, bool):
        if datatype != dt.BOOLEAN:
            raise XacmlSyntaxError(f"JSON boolean {json_value} given for {datatype}")
        return boolean(json_value)
    if isinstance(json_value, int):
        if datatype == dt.INTEGER:
            return AttributeValue(dt.INTEGER, json_value)
        if datatype == dt.DOUBLE:
            return AttributeValue(dt.DOUBLE, float(json_value))
        raise XacmlSyntaxError(f"JSON number {json_value} given for {datatype}")
    if isinstance(json_value, float):
        if datatype == dt.DOUBLE:
            return AttributeValue(dt.DOUBLE, dt.canonical_double(json_value))
        if datatype == dt.INTEGER and json_value.is_integer():
            return AttributeValue(dt.INTEGER, int(Decimal(repr(json_value))))
        raise XacmlSyntaxError(f"JSON number {json_value} given for {datatype}")
    if isinstance(json_value, dict) and datatype == dt.XPATHEXPRESSION:
        path, category = json_value.get("XPath"), json_value.get("XPathCategory")
        if not isinstance(path, str) or not isinstance(category, str):
            raise XacmlSyntaxError("an xpathExpression object needs XPath and XPathCategory strings")
        namespaces = {
            ns.get("Prefix", ""): ns["Namespace"]
            for ns in json_value.get("Namespaces", [])
            if isinstance(ns, dict) and isinstance(ns.get("Namespace"), str)
        }
        return xpath_expression_value(path, category, namespaces)
    if datatype not in DATATYPES:
        raise UnknownDataType(f"unknown data type {datatype!r}")
    raise XacmlSyntaxError(f"JSON value {json_value!r} cannot be a {datatype}")


def to_json_value(av: AttributeValue) -> Any:
    """The JSON Profile form of a value: native JSON for boolean, integer and finite double, the canonical lexical
    string otherwise (``NaN``, ``INF`` and ``-INF`` have no JSON number), an object for ``xpathExpression``."""
    datatype = av.datatype
    if datatype in (dt.STRING, dt.BOOLEAN, dt.INTEGER, dt.ANYURI):
        return av.value
    if datatype == dt.DOUBLE:
        value = av.value
        return value if value == value and value not in (float("inf"), float("-inf")) else dt.format_double(value)
    if datatype == dt.XPATHEXPRESSION:
        xpath: dt.XPathExpression = av.value
        out: dict[str, Any] = {"XPathCategory": xpath.category, "XPath": xpath.path}
        if xpath.namespaces:
            out["Namespaces"] = [{"Prefix": p, "Namespace": n} if p else {"Namespace": n} for p, n in xpath.namespaces]
        return out
    return lexical(av)


# --- the environment attributes the context handler supplies (§10.2.5) ----------------------------------------

CURRENT_TIME = "urn:oasis:names:tc:xacml:1.0:environment:current-time"
CURRENT_DATE = "urn:oasis:names:tc:xacml:1.0:environment:current-date"
CURRENT_DATETIME = "urn:oasis:names:tc:xacml:1.0:environment:current-dateTime"


def current_environment(now: datetime) -> dict[str, AttributeValue]:
    """``current-time``, ``current-date`` and ``current-dateTime`` for the moment ``now`` (an aware datetime)."""
    return {name: current_value(now, name) for name in (CURRENT_TIME, CURRENT_DATE, CURRENT_DATETIME)}


def current_value(now: datetime, attribute_id: str) -> AttributeValue:
    """One of the three current-instant attributes for ``now`` (a policy usually reads one: the PDP builds only
    that one per request)."""
    offset = now.utcoffset()
    if offset is None:
        raise ValueError("the current time must carry its time zone")
    if attribute_id == CURRENT_DATETIME:
        return AttributeValue(dt.DATETIME, dt.XsDateTime.of(now))
    if attribute_id == CURRENT_TIME:
        return AttributeValue(dt.TIME, dt.XsTime.of(now.timetz(), offset))
    if attribute_id == CURRENT_DATE:
        return AttributeValue(dt.DATE, dt.XsDate.of(now.date(), offset))
    raise KeyError(attribute_id)
