"""String functions (§A.3.3, §A.3.9), string ordering (§A.3.8), regular-expression matching (§A.3.13) and the
special matching functions ``x500Name-match`` and ``rfc822Name-match`` (§A.3.14).

Regular expressions are XML Schema / XPath 2.0 regular expressions with the semantics of XQuery ``fn:matches``
(§A.3.13 cites XQuery F&O §7.6.2): *unanchored* — ``"b"`` matches ``"abc"`` — unless the expression itself uses
``^``/``$``. elementpath translates them to Python's dialect (``\\i``, ``\\c``, ``\\p{IsBasicLatin}``, class
subtraction ``[a-z-[aeiou]]`` …); compiled expressions are cached. The ``*-regexp-match`` functions of the other
types match against the string form of the value (``string-from-<type>``), as §A.3.13 prescribes.

``string-normalize-space`` strips leading and trailing XML white space only (§A.3.3: it does not collapse inner
runs, unlike XPath's ``normalize-space``). Positions in ``string-substring`` count Unicode code points from 0.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache

from elementpath.regex import RegexError, translate_pattern

from sleutelbos.policy.xacml import datatypes as dt
from sleutelbos.policy.xacml.function_spec import FunctionSpec, ParamSpec
from sleutelbos.policy.xacml.functions_arithmetic import comparison_specs
from sleutelbos.policy.xacml.status import XacmlProcessingError
from sleutelbos.policy.xacml.values import AttributeValue, boolean, lexical, parse_value

V10 = "urn:oasis:names:tc:xacml:1.0:function:"
V20 = "urn:oasis:names:tc:xacml:2.0:function:"
V30 = "urn:oasis:names:tc:xacml:3.0:function:"

STR, URI, INT = ParamSpec(dt.STRING), ParamSpec(dt.ANYURI), ParamSpec(dt.INTEGER)


def _str(value: str) -> AttributeValue:
    return AttributeValue(dt.STRING, value)


def string_equal_ignore_case(a: AttributeValue, b: AttributeValue) -> AttributeValue:
    return boolean(a.value.lower() == b.value.lower())


def string_concatenate(*args: AttributeValue) -> AttributeValue:
    return _str("".join(a.value for a in args))


def string_normalize_space(a: AttributeValue) -> AttributeValue:
    return _str(a.value.strip(" \t\r\n"))


def string_normalize_to_lower_case(a: AttributeValue) -> AttributeValue:
    return _str(a.value.lower())


def starts_with(prefix: AttributeValue, whole: AttributeValue) -> AttributeValue:
    """``*-starts-with``: true when the *second* argument begins with the first."""
    return boolean(whole.value.startswith(prefix.value))


def ends_with(suffix: AttributeValue, whole: AttributeValue) -> AttributeValue:
    return boolean(whole.value.endswith(suffix.value))


def contains(part: AttributeValue, whole: AttributeValue) -> AttributeValue:
    return boolean(part.value in whole.value)


def substring(whole: AttributeValue, begin: AttributeValue, end: AttributeValue) -> AttributeValue:
    """Characters from ``begin`` up to (not including) ``end``; ``end = -1`` means to the end (§A.3.9)."""
    text: str = whole.value
    start, stop = begin.value, end.value
    if stop == -1:
        stop = len(text)
    if start < 0 or start > len(text) or stop < start or stop > len(text):
        raise XacmlProcessingError(f"substring({start}, {end.value}) out of bounds for a string of {len(text)}")
    return _str(text[start:stop])


def _from_string(datatype: str) -> Callable[[AttributeValue], AttributeValue]:
    def convert(a: AttributeValue) -> AttributeValue:
        return parse_value(datatype, a.value)

    return convert


def string_from(a: AttributeValue) -> AttributeValue:
    return _str(lexical(a))


@lru_cache(maxsize=4096)
def compile_regexp(pattern: str) -> re.Pattern[str]:
    """The Python form of an XML Schema/XPath regular expression; :class:`XacmlProcessingError` if it is invalid."""
    try:
        return re.compile(translate_pattern(pattern))
    except (RegexError, re.error, ValueError) as exc:
        raise XacmlProcessingError(f"invalid regular expression {pattern!r}: {exc}") from None


def regexp_match(pattern: AttributeValue, subject: AttributeValue) -> AttributeValue:
    text = subject.value if isinstance(subject.value, str) else lexical(subject)
    return boolean(compile_regexp(pattern.value).search(text) is not None)


def x500name_match(a: AttributeValue, b: AttributeValue) -> AttributeValue:
    """True when the first name is a terminal sequence of RDNs of the second (``o=Medico,c=US`` matches
    ``cn=John,o=Medico,c=US``)."""
    return boolean(b.value.ends_with(a.value))


def rfc822name_match(pattern: AttributeValue, name: AttributeValue) -> AttributeValue:
    return boolean(name.value.matches(pattern.value))


# (name in the function ids, data type, id prefix of its regexp-match)
_CONVERTIBLE: tuple[tuple[str, str], ...] = (
    ("boolean", dt.BOOLEAN), ("integer", dt.INTEGER), ("double", dt.DOUBLE), ("time", dt.TIME), ("date", dt.DATE),
    ("dateTime", dt.DATETIME), ("anyURI", dt.ANYURI), ("dayTimeDuration", dt.DAYTIMEDURATION),
    ("yearMonthDuration", dt.YEARMONTHDURATION), ("x500Name", dt.X500NAME), ("rfc822Name", dt.RFC822NAME),
    ("ipAddress", dt.IPADDRESS), ("dnsName", dt.DNSNAME),
)


def _conversions() -> list[FunctionSpec]:
    specs: list[FunctionSpec] = []
    for name, datatype in _CONVERTIBLE:
        specs.append(FunctionSpec(f"{V30}{name}-from-string", (STR,), datatype, False, _from_string(datatype)))
        specs.append(FunctionSpec(f"{V30}string-from-{name}", (ParamSpec(datatype),), dt.STRING, False, string_from))
    return specs


def _regexps() -> list[FunctionSpec]:
    return [
        FunctionSpec(V10 + "string-regexp-match", (STR, STR), dt.BOOLEAN, False, regexp_match),
        *(
            FunctionSpec(f"{V20}{name}-regexp-match", (STR, ParamSpec(datatype)), dt.BOOLEAN, False, regexp_match)
            for name, datatype in (
                ("anyURI", dt.ANYURI), ("ipAddress", dt.IPADDRESS), ("dnsName", dt.DNSNAME),
                ("rfc822Name", dt.RFC822NAME), ("x500Name", dt.X500NAME),
            )
        ),
    ]


SPECS: list[FunctionSpec] = [
    FunctionSpec(V30 + "string-equal-ignore-case", (STR, STR), dt.BOOLEAN, False, string_equal_ignore_case),
    FunctionSpec(V20 + "string-concatenate", (STR, STR, ParamSpec(dt.STRING, variadic=True)), dt.STRING, False,
                 string_concatenate),
    # Deprecated in 3.0 (§10.2.8) but still accepted: concatenates strings onto a URI.
    FunctionSpec(V20 + "uri-string-concatenate", (URI, STR, ParamSpec(dt.STRING, variadic=True)), dt.ANYURI, False,
                 lambda *args: AttributeValue(dt.ANYURI, "".join(a.value for a in args))),
    FunctionSpec(V10 + "string-normalize-space", (STR,), dt.STRING, False, string_normalize_space),
    FunctionSpec(V10 + "string-normalize-to-lower-case", (STR,), dt.STRING, False, string_normalize_to_lower_case),
    FunctionSpec(V30 + "string-starts-with", (STR, STR), dt.BOOLEAN, False, starts_with),
    FunctionSpec(V30 + "anyURI-starts-with", (STR, URI), dt.BOOLEAN, False, starts_with),
    FunctionSpec(V30 + "string-ends-with", (STR, STR), dt.BOOLEAN, False, ends_with),
    FunctionSpec(V30 + "anyURI-ends-with", (STR, URI), dt.BOOLEAN, False, ends_with),
    FunctionSpec(V30 + "string-contains", (STR, STR), dt.BOOLEAN, False, contains),
    FunctionSpec(V30 + "anyURI-contains", (STR, URI), dt.BOOLEAN, False, contains),
    FunctionSpec(V30 + "string-substring", (STR, INT, INT), dt.STRING, False, substring),
    FunctionSpec(V30 + "anyURI-substring", (URI, INT, INT), dt.STRING, False, substring),
    *_conversions(),
    *comparison_specs(V10, "string", dt.STRING),
    *_regexps(),
    FunctionSpec(V10 + "x500Name-match", (ParamSpec(dt.X500NAME), ParamSpec(dt.X500NAME)), dt.BOOLEAN, False,
                 x500name_match),
    FunctionSpec(V10 + "rfc822Name-match", (STR, ParamSpec(dt.RFC822NAME)), dt.BOOLEAN, False, rfc822name_match),
]
