"""XACML 3.0 Appendix A functions: behaviour, edge cases and load-time typing."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sleutelbos.policy.xacml import datatypes as dt
from sleutelbos.policy.xacml.functions import FUNCTIONS, FunctionSpec, check_arguments, get_function
from sleutelbos.policy.xacml.status import (
    STATUS_PROCESSING_ERROR,
    FunctionSignatureError,
    UnknownFunction,
    XacmlProcessingError,
    XacmlSyntaxError,
)
from sleutelbos.policy.xacml.values import AttributeValue, Bag, lexical, parse_value

CONFORMANCE_XACML = Path(__file__).resolve().parents[2].parent / "shared" / "conformance" / "xacml"
V1 = "urn:oasis:names:tc:xacml:1.0:function:"
V2 = "urn:oasis:names:tc:xacml:2.0:function:"
V3 = "urn:oasis:names:tc:xacml:3.0:function:"
SHORT = {"string": dt.STRING, "integer": dt.INTEGER, "double": dt.DOUBLE, "boolean": dt.BOOLEAN, "date": dt.DATE,
         "time": dt.TIME, "dateTime": dt.DATETIME, "anyURI": dt.ANYURI, "dtd": dt.DAYTIMEDURATION,
         "ymd": dt.YEARMONTHDURATION, "rfc822": dt.RFC822NAME, "x500": dt.X500NAME, "ip": dt.IPADDRESS,
         "dns": dt.DNSNAME, "hex": dt.HEXBINARY}


def v(kind: str, text: str) -> AttributeValue:
    return parse_value(SHORT[kind], text)


def bag(kind: str, *texts: str) -> Bag:
    return Bag(SHORT[kind], tuple(v(kind, t) for t in texts))


def f(function_id: str) -> FunctionSpec:
    return get_function(function_id)


def run(function_id: str, *args: Any) -> Any:
    """Apply a function as the evaluator does (thunks for the lazy ones)."""
    spec = f(function_id)
    if spec.lazy:
        return spec.impl(*[(lambda a=a: a) for a in args]).value
    result = spec.impl(*args)
    return result if isinstance(result, Bag) else result.value


def processing_error(function_id: str, *args: Any) -> None:
    with pytest.raises(XacmlProcessingError) as info:
        run(function_id, *args)
    assert info.value.status_code == STATUS_PROCESSING_ERROR


# --- the registry ----------------------------------------------------------------------------------------------


def test_every_function_the_conformance_suite_uses_is_registered() -> None:
    assert CONFORMANCE_XACML.is_dir()
    used: set[str] = set()
    for path in CONFORMANCE_XACML.rglob("*.xml*"):
        used |= set(re.findall(r'(?:FunctionId|MatchId)="([^"]+)"', path.read_text(errors="replace")))
    assert len(used) > 150
    # xpath-node-count needs the request's <Content>: the evaluator's business (optional XPath tests)
    assert used - set(FUNCTIONS) == {V3 + "xpath-node-count"}


def test_registry_covers_appendix_a_for_every_type() -> None:
    for name, prefix in (("string", V1), ("boolean", V1), ("integer", V1), ("double", V1), ("time", V1),
                         ("date", V1), ("dateTime", V1), ("anyURI", V1), ("hexBinary", V1), ("base64Binary", V1),
                         ("dayTimeDuration", V3), ("yearMonthDuration", V3), ("x500Name", V1), ("rfc822Name", V1)):
        for suffix in ("equal", "one-and-only", "bag-size", "is-in", "bag", "intersection",
                       "at-least-one-member-of", "union", "subset", "set-equals"):
            assert f"{prefix}{name}-{suffix}" in FUNCTIONS
    for name in ("ipAddress", "dnsName"):
        for suffix in ("one-and-only", "bag-size", "bag", "regexp-match"):
            assert f"{V2}{name}-{suffix}" in FUNCTIONS
        assert f"{V3}{name}-from-string" in FUNCTIONS and f"{V3}string-from-{name}" in FUNCTIONS
    assert len(FUNCTIONS) > 280


def test_unknown_function() -> None:
    with pytest.raises(UnknownFunction, match="no-such"):
        get_function(V1 + "no-such-function")


# --- load-time typing ------------------------------------------------------------------------------------------


def test_check_arguments_types_plain_applications() -> None:
    i, s = (dt.INTEGER, False), (dt.STRING, False)
    assert check_arguments(f(V1 + "integer-add"), [i, i, i, i]) == (dt.INTEGER, False)
    assert check_arguments(f(V1 + "string-bag"), []) == (dt.STRING, True)
    assert check_arguments(f(V1 + "and"), []) == (dt.BOOLEAN, False)
    with pytest.raises(FunctionSignatureError, match=r"argument 2 must be .*integer, got .*string"):
        check_arguments(f(V1 + "integer-add"), [i, s])
    with pytest.raises(FunctionSignatureError, match="at least 2"):
        check_arguments(f(V1 + "integer-add"), [i])
    with pytest.raises(FunctionSignatureError, match="takes 2"):
        check_arguments(f(V1 + "string-equal"), [s, s, s])
    with pytest.raises(FunctionSignatureError, match="bag of"):
        check_arguments(f(V1 + "string-one-and-only"), [s])


def test_check_arguments_types_higher_order_applications() -> None:
    s, sb, ib = (dt.STRING, False), (dt.STRING, True), (dt.INTEGER, True)
    assert check_arguments(f(V3 + "any-of"), [f(V1 + "string-equal"), s, sb]) == (dt.BOOLEAN, False)
    assert check_arguments(f(V3 + "any-of"), [f(V1 + "string-equal"), sb, s]) == (dt.BOOLEAN, False)
    assert check_arguments(f(V3 + "map"), [f(V1 + "string-normalize-to-lower-case"), sb]) == (dt.STRING, True)
    assert check_arguments(f(V3 + "map"), [f(V1 + "integer-to-double"), ib]) == (dt.DOUBLE, True)
    assert check_arguments(f(V1 + "all-of-any"), [f(V1 + "integer-greater-than"), ib, ib]) == (dt.BOOLEAN, False)
    with pytest.raises(FunctionSignatureError, match="bags of bags"):
        check_arguments(f(V3 + "map"), [f(V1 + "string-bag"), sb])
    with pytest.raises(FunctionSignatureError, match="exactly one bag"):
        check_arguments(f(V3 + "any-of"), [f(V1 + "string-equal"), sb, sb])
    with pytest.raises(FunctionSignatureError, match="does not return a boolean"):
        check_arguments(f(V3 + "any-of"), [f(V1 + "string-normalize-space"), sb])
    with pytest.raises(FunctionSignatureError, match=r"must be .*string, got .*integer"):
        check_arguments(f(V3 + "any-of"), [f(V1 + "string-equal"), s, ib])
    with pytest.raises(FunctionSignatureError, match="first argument must be a <Function>"):
        check_arguments(f(V3 + "any-of"), [s, sb])
    with pytest.raises(FunctionSignatureError, match="two bags"):
        check_arguments(f(V1 + "all-of-all"), [f(V1 + "string-equal"), s, sb])
    with pytest.raises(FunctionSignatureError, match="higher-order"):
        check_arguments(f(V3 + "any-of"), [f(V3 + "any-of"), sb])


# --- equality, bags and sets -----------------------------------------------------------------------------------


def test_equality_per_type() -> None:
    assert run(V1 + "string-equal", v("string", "a"), v("string", "a")) is True
    assert run(V1 + "string-equal", v("string", "a"), v("string", "A")) is False
    assert run(V3 + "string-equal-ignore-case", v("string", "Straße"), v("string", "STRASSE")) is False
    assert run(V3 + "string-equal-ignore-case", v("string", "AbC"), v("string", "aBc")) is True
    # conformance IIC350/IIC358: NaN equals NaN, also when computed; INF is not -INF (IIC355)
    assert run(V1 + "double-equal", v("double", "NaN"), v("double", "NaN")) is True
    nan_plus_one = f(V1 + "double-add").impl(v("double", "NaN"), v("double", "1.0"))
    assert run(V1 + "double-equal", nan_plus_one, v("double", "NaN")) is True
    inf_minus_inf = f(V1 + "double-subtract").impl(v("double", "INF"), v("double", "INF"))
    assert run(V1 + "double-equal", inf_minus_inf, v("double", "NaN")) is True
    assert run(V1 + "double-equal", v("double", "NaN"), v("double", "-INF")) is False
    assert run(V1 + "double-equal", v("double", "INF"), v("double", "-INF")) is False
    assert run(V1 + "dateTime-equal", v("dateTime", "2002-03-22T08:23:47-05:00"),
               v("dateTime", "2002-03-22T13:23:47Z")) is True
    assert run(V1 + "rfc822Name-equal", v("rfc822", "Anderson@SUN.COM"), v("rfc822", "Anderson@sun.com")) is True
    assert run(V1 + "rfc822Name-equal", v("rfc822", "anderson@sun.com"), v("rfc822", "Anderson@sun.com")) is False
    assert run(V1 + "x500Name-equal", v("x500", "CN=A, O=B"), v("x500", "cn=a,o=b")) is True
    assert run(V3 + "dayTimeDuration-equal", v("dtd", "P1D"), v("dtd", "PT24H")) is True
    assert run(V3 + "yearMonthDuration-equal", v("ymd", "P1Y"), v("ymd", "P12M")) is True


def test_bag_functions() -> None:
    assert run(V1 + "string-one-and-only", bag("string", "x")) == "x"
    processing_error(V1 + "string-one-and-only", bag("string"))
    processing_error(V1 + "string-one-and-only", bag("string", "x", "y"))
    assert run(V1 + "integer-bag-size", bag("integer", "1", "1", "2")) == 3
    assert run(V1 + "rfc822Name-is-in", v("rfc822", "a@SUN.com"), bag("rfc822", "b@sun.com", "a@sun.com")) is True
    assert run(V1 + "double-is-in", v("double", "NaN"), bag("double", "1", "NaN")) is True
    assert run(V1 + "double-is-in", v("double", "NaN"), bag("double", "1", "INF")) is False
    made = run(V1 + "string-bag", v("string", "a"), v("string", "b"))
    assert made == bag("string", "a", "b") and run(V1 + "string-bag") == bag("string")


def test_set_functions_ignore_duplicates() -> None:
    a, b = bag("integer", "1", "2", "2", "3"), bag("integer", "3", "2", "4")
    assert run(V1 + "integer-intersection", a, b) == bag("integer", "2", "3")
    assert run(V1 + "integer-union", a, b) == bag("integer", "1", "2", "3", "4")
    assert run(V1 + "integer-union", a, b, bag("integer", "9")) == bag("integer", "1", "2", "3", "4", "9")
    assert run(V1 + "integer-at-least-one-member-of", a, b) is True
    assert run(V1 + "integer-at-least-one-member-of", a, bag("integer", "7")) is False
    assert run(V1 + "integer-subset", bag("integer", "2", "2"), a) is True
    assert run(V1 + "integer-subset", bag("integer"), bag("integer")) is True
    assert run(V1 + "integer-subset", b, a) is False
    assert run(V1 + "integer-set-equals", bag("integer", "1", "1", "2"), bag("integer", "2", "1")) is True
    assert run(V1 + "time-set-equals", bag("time", "21:30:00+10:30"), bag("time", "06:00:00-05:00")) is True


# --- arithmetic ------------------------------------------------------------------------------------------------


def test_integer_arithmetic() -> None:
    one, two, seven = v("integer", "1"), v("integer", "2"), v("integer", "7")
    assert run(V1 + "integer-add", one, two, seven) == 10
    assert run(V1 + "integer-subtract", one, seven) == -6
    assert run(V1 + "integer-multiply", two, seven, seven) == 98
    assert run(V1 + "integer-divide", seven, two) == 3
    assert run(V1 + "integer-divide", v("integer", "-7"), two) == -3  # toward zero, not floor
    assert run(V1 + "integer-mod", v("integer", "-7"), two) == -1  # sign of the dividend
    assert run(V1 + "integer-mod", seven, v("integer", "-2")) == 1
    assert run(V1 + "integer-abs", v("integer", "-7")) == 7
    processing_error(V1 + "integer-divide", seven, v("integer", "0"))
    processing_error(V1 + "integer-mod", seven, v("integer", "0"))


def test_double_arithmetic_and_conversions() -> None:
    assert run(V1 + "double-add", v("double", "0.5"), v("double", "0.25")) == 0.75
    assert run(V1 + "double-divide", v("double", "1"), v("double", "4")) == 0.25
    processing_error(V1 + "double-divide", v("double", "1"), v("double", "-0"))
    assert run(V1 + "round", v("double", "2.5")) == 3.0
    assert run(V1 + "round", v("double", "-2.5")) == -2.0  # fn:round rounds halves up
    assert run(V1 + "floor", v("double", "-2.5")) == -3.0
    assert run(V1 + "double-abs", v("double", "-INF")) == float("inf")
    assert run(V1 + "double-to-integer", v("double", "-2.7")) == -2
    processing_error(V1 + "double-to-integer", v("double", "NaN"))
    assert run(V1 + "integer-to-double", v("integer", "3")) == 3.0
    processing_error(V1 + "integer-to-double", v("integer", "1" + "0" * 400))


def test_numeric_comparisons() -> None:
    assert run(V1 + "integer-greater-than-or-equal", v("integer", "3"), v("integer", "3")) is True
    assert run(V1 + "integer-less-than", v("integer", "3"), v("integer", "3")) is False
    assert run(V1 + "double-greater-than", v("double", "NaN"), v("double", "1")) is False
    assert run(V1 + "double-less-than", v("double", "-INF"), v("double", "-1E308")) is True


# --- strings ---------------------------------------------------------------------------------------------------


def test_string_normalization() -> None:
    assert run(V1 + "string-normalize-space", v("string", " \t a  b \n")) == "a  b"  # inner runs stay
    assert run(V1 + "string-normalize-to-lower-case", v("string", "AbC Ü")) == "abc ü"
    assert run(V2 + "string-concatenate", v("string", "a"), v("string", "b"), v("string", "c")) == "abc"


def test_starts_ends_contains_take_the_part_first() -> None:
    assert run(V3 + "string-starts-with", v("string", "ab"), v("string", "abc")) is True
    assert run(V3 + "string-starts-with", v("string", "abc"), v("string", "ab")) is False
    assert run(V3 + "string-ends-with", v("string", "bc"), v("string", "abc")) is True
    assert run(V3 + "string-contains", v("string", "b"), v("string", "abc")) is True
    assert run(V3 + "anyURI-starts-with", v("string", "http://medico.com/"),
               v("anyURI", "http://medico.com/record")) is True
    assert run(V3 + "anyURI-ends-with", v("string", "/record"), v("anyURI", "http://medico.com/record")) is True
    assert run(V3 + "anyURI-contains", v("string", "medico"), v("anyURI", "http://medico.com/record")) is True


def test_substring_bounds() -> None:
    s = v("string", "medico")
    assert run(V3 + "string-substring", s, v("integer", "1"), v("integer", "3")) == "ed"
    assert run(V3 + "string-substring", s, v("integer", "2"), v("integer", "-1")) == "dico"
    assert run(V3 + "string-substring", s, v("integer", "6"), v("integer", "-1")) == ""
    assert run(V3 + "anyURI-substring", v("anyURI", "http://x"), v("integer", "0"), v("integer", "4")) == "http"
    for begin, end in (("-1", "2"), ("3", "2"), ("0", "7"), ("7", "-1")):
        processing_error(V3 + "string-substring", s, v("integer", begin), v("integer", end))


def test_string_ordering_is_by_code_point() -> None:
    assert run(V1 + "string-less-than", v("string", "Z"), v("string", "a")) is True
    assert run(V1 + "string-greater-than-or-equal", v("string", "b"), v("string", "b")) is True


def test_conversions_to_and_from_string() -> None:
    assert run(V3 + "integer-from-string", v("string", "+42")) == 42
    assert run(V3 + "string-from-dayTimeDuration", v("dtd", "PT36H")) == "P1DT12H"
    assert run(V3 + "string-from-boolean", v("boolean", "1")) == "true"
    assert run(V3 + "string-from-double", v("double", "1.50")) == "1.5"
    assert run(V3 + "boolean-from-string", v("string", "0")) is False
    assert run(V3 + "rfc822Name-from-string", v("string", "a@B.com")) == parse_value(dt.RFC822NAME, "a@b.com").value
    with pytest.raises(XacmlSyntaxError):
        run(V3 + "integer-from-string", v("string", "4.2"))
    with pytest.raises(XacmlSyntaxError):
        run(V3 + "dateTime-from-string", v("string", "yesterday"))


# --- regular expressions and name matching ---------------------------------------------------------------------


def test_regexp_match_is_unanchored_xpath_syntax() -> None:
    def matches(pattern: str, text: str) -> bool:
        return bool(run(V1 + "string-regexp-match", v("string", pattern), v("string", text)))

    assert matches("b", "abc")  # fn:matches searches
    assert not matches("^b", "abc")
    assert matches("^a.*c$", "abc")
    assert matches(r"^\p{Lu}+$", "ÉCOLE") and not matches(r"^\p{Lu}+$", "École")
    assert matches("^[a-z-[aeiou]]+$", "xyz") and not matches("^[a-z-[aeiou]]+$", "xaz")  # class subtraction
    assert matches(r"^\d{3}$", "123")
    processing_error(V1 + "string-regexp-match", v("string", "(unclosed"), v("string", "x"))


def test_regexp_match_on_other_types_uses_their_string_form() -> None:
    pattern = v("string", r"^122\.45\.")
    assert run(V2 + "ipAddress-regexp-match", pattern, v("ip", "122.45.38.245/255.255.255.64:8080")) is True
    assert run(V2 + "dnsName-regexp-match", v("string", r"\.host\.name"), v("dns", "some.host.name:147-874")) is True
    assert run(V2 + "rfc822Name-regexp-match", v("string", "@MEDICO"), v("rfc822", "j_hibbert@MEDICO.COM")) is True
    assert run(V2 + "x500Name-regexp-match", v("string", "o=Medi"), v("x500", "cn=J, o=Medi Corporation")) is True
    assert run(V2 + "anyURI-regexp-match", v("string", "^http://medico"), v("anyURI", "http://medico.com")) is True


def test_x500_name_match_is_a_terminal_sequence() -> None:
    name = v("x500", "cn=John Smith, o=Medico Corp, c=US")
    assert run(V1 + "x500Name-match", v("x500", "O=medico corp,C=us"), name) is True
    assert run(V1 + "x500Name-match", name, name) is True
    assert run(V1 + "x500Name-match", v("x500", "cn=John Smith, o=Medico Corp"), name) is False
    assert run(V1 + "x500Name-match", v("x500", "o=Other, o=Medico Corp, c=US"), name) is False


def test_rfc822_name_match_rules() -> None:
    def match(pattern: str, name: str) -> bool:
        return bool(run(V1 + "rfc822Name-match", v("string", pattern), v("rfc822", name)))

    assert match("Anderson@sun.com", "Anderson@SUN.COM")
    assert not match("anderson@sun.com", "Anderson@sun.com")  # local part is case-sensitive
    assert match("sun.com", "Baxter@SUN.COM")
    assert not match("sun.com", "Baxter@east.sun.com")  # a host matches only itself
    assert match(".east.sun.com", "x@isrg.east.sun.com")
    assert not match(".east.sun.com", "x@east.sun.com")  # a domain matches its sub-domains only


# --- dates and times -------------------------------------------------------------------------------------------


def test_adding_months_clamps_to_the_end_of_the_month() -> None:
    add = V3 + "dateTime-add-yearMonthDuration"
    result = run(add, v("dateTime", "2002-01-31T10:00:00-05:00"), v("ymd", "P1M"))
    assert result.lexical() == "2002-02-28T10:00:00-05:00"
    assert run(add, v("dateTime", "2004-01-31T10:00:00"), v("ymd", "P1M")).lexical() == "2004-02-29T10:00:00"
    assert run(V3 + "dateTime-subtract-yearMonthDuration", v("dateTime", "2002-03-31T00:00:00Z"),
               v("ymd", "P1Y1M")).lexical() == "2001-02-28T00:00:00Z"
    assert run(V3 + "date-add-yearMonthDuration", v("date", "2002-12-15+01:00"),
               v("ymd", "-P13M")).lexical() == "2001-11-15+01:00"
    assert run(V3 + "date-subtract-yearMonthDuration", v("date", "2002-03-22"),
               v("ymd", "P1Y")).lexical() == "2001-03-22"
    processing_error(add, v("dateTime", "9999-12-01T00:00:00Z"), v("ymd", "P1M"))


def test_adding_day_time_durations_keeps_the_time_zone() -> None:
    result = run(V3 + "dateTime-add-dayTimeDuration", v("dateTime", "2002-03-22T20:00:00-05:00"), v("dtd", "PT5H"))
    assert result.lexical() == "2002-03-23T01:00:00-05:00"
    result = run(V3 + "dateTime-subtract-dayTimeDuration", v("dateTime", "2002-03-01T00:00:00"), v("dtd", "P1D"))
    assert result.lexical() == "2002-02-28T00:00:00"
    # the deprecated 1.0 identifier works on the 1.0 duration type
    legacy = parse_value(dt.LEGACY_DAYTIMEDURATION, "PT1H")
    assert run(V1 + "dateTime-add-dayTimeDuration", v("dateTime", "2002-03-22T00:00:00Z"),
               legacy).lexical() == "2002-03-22T01:00:00Z"
    processing_error(V3 + "dateTime-add-dayTimeDuration", v("dateTime", "9999-12-31T23:00:00Z"), v("dtd", "PT2H"))


def test_date_and_time_comparisons_across_zones() -> None:
    assert run(V1 + "dateTime-greater-than", v("dateTime", "2002-03-22T08:23:47-05:00"),
               v("dateTime", "2002-03-22T13:00:00Z")) is True
    assert run(V1 + "date-less-than", v("date", "2002-03-22Z"), v("date", "2002-03-22-05:00")) is True
    assert run(V1 + "time-less-than-or-equal", v("time", "08:23:47-05:00"), v("time", "13:23:47Z")) is True


def test_time_in_range() -> None:
    def in_range(t: str, low: str, high: str) -> bool:
        return bool(run(V2 + "time-in-range", v("time", t), v("time", low), v("time", high)))

    assert in_range("10:00:00Z", "09:00:00Z", "17:00:00Z")
    assert in_range("09:00:00Z", "09:00:00Z", "17:00:00Z") and in_range("17:00:00Z", "09:00:00Z", "17:00:00Z")
    assert not in_range("18:00:00Z", "09:00:00Z", "17:00:00Z")
    assert in_range("23:30:00Z", "22:00:00Z", "06:00:00Z")  # the range runs past midnight
    assert in_range("01:00:00Z", "22:00:00Z", "06:00:00Z")
    assert not in_range("12:00:00Z", "22:00:00Z", "06:00:00Z")
    # bounds without a zone take the first argument's zone: 10:00-05:00 is inside 09:00..17:00 local
    assert in_range("10:00:00-05:00", "09:00:00", "17:00:00")
    assert not in_range("10:00:00-05:00", "09:00:00Z", "12:00:00Z")  # 15:00Z


# --- logical ---------------------------------------------------------------------------------------------------


def _thunk(value: AttributeValue | None, seen: list[str], name: str) -> Callable[[], AttributeValue]:
    def evaluate() -> AttributeValue:
        seen.append(name)
        if value is None:
            raise XacmlProcessingError(f"{name} is Indeterminate")
        return value

    return evaluate


T, F = parse_value(dt.BOOLEAN, "true"), parse_value(dt.BOOLEAN, "false")


def test_and_or_stop_at_the_decisive_argument() -> None:
    seen: list[str] = []
    assert f(V1 + "and").impl(_thunk(T, seen, "a"), _thunk(F, seen, "b"), _thunk(None, seen, "c")).value is False
    assert seen == ["a", "b"]
    seen.clear()
    with pytest.raises(XacmlProcessingError):
        f(V1 + "and").impl(_thunk(None, seen, "a"), _thunk(F, seen, "b"))
    assert f(V1 + "or").impl(_thunk(T, seen, "x"), _thunk(None, seen, "y")).value is True
    assert f(V1 + "and").impl().value is True and f(V1 + "or").impl().value is False
    assert run(V1 + "not", T) is False


def test_n_of() -> None:
    two = parse_value(dt.INTEGER, "2")
    seen: list[str] = []
    args = [_thunk(T, seen, "a"), _thunk(F, seen, "b"), _thunk(T, seen, "c"), _thunk(None, seen, "d")]
    assert f(V1 + "n-of").impl(lambda: two, *args).value is True
    assert seen == ["a", "b", "c"]
    seen.clear()
    # three trues needed: once "c" is false, one argument is left for two more trues, so "d" is never evaluated
    args = [_thunk(T, seen, "a"), _thunk(F, seen, "b"), _thunk(F, seen, "c"), _thunk(None, seen, "d")]
    assert f(V1 + "n-of").impl(lambda: parse_value(dt.INTEGER, "3"), *args).value is False
    assert seen == ["a", "b", "c"]
    assert run(V1 + "n-of", parse_value(dt.INTEGER, "0")) is True
    processing_error(V1 + "n-of", parse_value(dt.INTEGER, "3"), T, T)


# --- higher-order ----------------------------------------------------------------------------------------------


def test_any_of_and_all_of_take_the_bag_anywhere() -> None:
    equal, greater = f(V1 + "string-equal"), f(V1 + "integer-greater-than")
    names = bag("string", "Ann", "Bob")
    assert run(V3 + "any-of", equal, v("string", "Bob"), names) is True
    assert run(V3 + "any-of", equal, names, v("string", "Eve")) is False
    # 10 > every member, but not every member > 2 when the bag comes first
    nums = bag("integer", "1", "3", "5")
    assert run(V3 + "all-of", greater, v("integer", "10"), nums) is True
    assert run(V3 + "all-of", greater, nums, v("integer", "2")) is False
    assert run(V3 + "any-of", greater, nums, v("integer", "4")) is True
    assert run(V3 + "all-of", greater, v("integer", "0"), bag("integer")) is True  # vacuous truth
    assert run(V1 + "any-of", equal, v("string", "Ann"), names) is True  # the 1.0 id


def test_any_of_any_over_bags_and_values() -> None:
    equal = f(V1 + "string-equal")
    assert run(V3 + "any-of-any", equal, bag("string", "a", "b"), bag("string", "c", "b")) is True
    assert run(V3 + "any-of-any", equal, bag("string", "a"), bag("string", "c")) is False
    assert run(V3 + "any-of-any", equal, v("string", "c"), bag("string", "a", "c")) is True
    assert run(V3 + "any-of-any", equal, bag("string"), bag("string", "c")) is False


def test_spec_examples_for_the_two_bag_functions() -> None:
    greater = f(V1 + "integer-greater-than")
    # §A.3.12's own examples
    assert run(V1 + "all-of-any", greater, bag("integer", "10", "20"), bag("integer", "1", "3", "5", "19")) is True
    assert run(V1 + "all-of-any", greater, bag("integer", "10", "20"), bag("integer", "11", "21")) is False
    assert run(V1 + "any-of-all", greater, bag("integer", "3", "5"), bag("integer", "1", "2", "3", "4")) is True
    assert run(V1 + "any-of-all", greater, bag("integer", "3", "4"), bag("integer", "1", "2", "3", "4")) is False
    assert run(V1 + "all-of-all", greater, bag("integer", "6", "5"), bag("integer", "1", "2", "3", "4")) is True
    assert run(V1 + "all-of-all", greater, bag("integer", "6", "4"), bag("integer", "1", "2", "3", "4")) is False


def test_map_applies_to_each_member_wherever_the_bag_is() -> None:
    lower = f(V1 + "string-normalize-to-lower-case")
    assert run(V3 + "map", lower, bag("string", "Hello", "World")) == bag("string", "hello", "world")
    # MapFunction.ArgsAfterBag: primitive arguments may follow the bag
    concat = f(V2 + "string-concatenate")
    mapped = run(V3 + "map", concat, bag("string", "a", "b"), v("string", "!"))
    assert mapped == bag("string", "a!", "b!")
    assert [lexical(x) for x in run(V3 + "map", f(V1 + "integer-to-double"), bag("integer", "2"))] == ["2.0"]


def test_higher_order_functions_propagate_errors_of_the_function_applied() -> None:
    one_and_only = f(V1 + "integer-divide")
    with pytest.raises(XacmlProcessingError):
        run(V3 + "map", one_and_only, v("integer", "1"), bag("integer", "1", "0"))
    # a lazy function can be applied too
    assert run(V3 + "any-of", f(V1 + "and"), T, Bag(dt.BOOLEAN, (F, T))) is True
