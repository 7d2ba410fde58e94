"""XACML data types: lexical spaces, canonical forms and the equality each type defines (core spec §A.2, §A.3.1)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sleutelbos.policy.xacml import datatypes as dt
from sleutelbos.policy.xacml.status import STATUS_SYNTAX_ERROR, UnknownDataType, XacmlSyntaxError
from sleutelbos.policy.xacml.values import (
    AttributeValue,
    Bag,
    current_environment,
    datatype_from_json,
    infer_json_datatype,
    lexical,
    parse_json_value,
    parse_value,
    to_json_value,
)

CONFORMANCE_XACML = Path(__file__).resolve().parents[2].parent / "shared" / "conformance" / "xacml"


def v(datatype: str, text: str) -> AttributeValue:
    return parse_value(datatype, text)


def bad(datatype: str, text: str) -> None:
    with pytest.raises(XacmlSyntaxError) as info:
        parse_value(datatype, text)
    assert info.value.status_code == STATUS_SYNTAX_ERROR


# --- simple types ----------------------------------------------------------------------------------------------


def test_integer_lexical_space() -> None:
    assert v(dt.INTEGER, "+5").value == 5
    assert v(dt.INTEGER, " -0012 \n").value == -12  # whiteSpace collapse, leading zeros
    assert v(dt.INTEGER, "123456789012345678901234567890").value == 123456789012345678901234567890
    for text in ("1.0", "1_000", "", "0x10", "١٢"):
        bad(dt.INTEGER, text)


def test_double_lexical_space_and_ieee_equality() -> None:
    assert v(dt.DOUBLE, "27.50") == v(dt.DOUBLE, "2.75E1")
    assert v(dt.DOUBLE, "-0") == v(dt.DOUBLE, "0")
    assert v(dt.DOUBLE, "INF").value == math.inf and v(dt.DOUBLE, "-INF").value == -math.inf
    nan = v(dt.DOUBLE, "NaN")
    # NaN equals NaN (conformance IIC350), in bags and sets too; it still is not a number equal to any other
    assert math.isnan(nan.value) and nan == v(dt.DOUBLE, " NaN ") and nan != v(dt.DOUBLE, "INF")
    assert len({nan, v(dt.DOUBLE, "NaN"), parse_json_value("double", float("nan"))}) == 1
    assert [lexical(v(dt.DOUBLE, t)) for t in ("27.50", "NaN", "-INF", "1e20")] == ["27.5", "NaN", "-INF", "1E+20"]
    for text in ("inf", "nan", "1.2.3", "", "1e", "Infinity"):
        bad(dt.DOUBLE, text)


def test_boolean_lexical_space() -> None:
    assert v(dt.BOOLEAN, "1").value is True and v(dt.BOOLEAN, " false ").value is False
    assert lexical(v(dt.BOOLEAN, "0")) == "false"
    for text in ("True", "yes", ""):
        bad(dt.BOOLEAN, text)


def test_string_keeps_white_space_but_anyuri_collapses_it() -> None:
    assert v(dt.STRING, "  a  b ").value == "  a  b "
    assert v(dt.ANYURI, " http://x/a\n").value == "http://x/a"
    assert v(dt.ANYURI, "http://x/a") != v(dt.STRING, "http://x/a")  # different data types never equal


def test_binary_types_compare_octets() -> None:
    assert v(dt.HEXBINARY, "0fb8") == v(dt.HEXBINARY, "0FB8")
    assert lexical(v(dt.HEXBINARY, "0fb8")) == "0FB8"
    assert v(dt.BASE64BINARY, "c3VyZS4=").value == b"sure."
    assert lexical(v(dt.BASE64BINARY, "c3Vy ZS4=")) == "c3VyZS4="
    bad(dt.HEXBINARY, "0FB")
    bad(dt.HEXBINARY, "0G")
    bad(dt.BASE64BINARY, "c3VyZS4")  # padding missing
    bad(dt.BASE64BINARY, "c3Vy*S4=")


def test_unknown_data_type_is_not_a_syntax_error() -> None:
    with pytest.raises(UnknownDataType):
        parse_value("urn:example:no-such-type", "x")


# --- dates and times -------------------------------------------------------------------------------------------


def test_datetime_equality_is_on_instants_across_time_zones() -> None:
    assert v(dt.DATETIME, "2002-03-22T08:23:47-05:00") == v(dt.DATETIME, "2002-03-22T13:23:47Z")
    assert v(dt.DATETIME, "2002-03-22T08:23:47-05:00") == v(dt.DATETIME, "2002-03-22T14:23:47+01:00")
    assert v(dt.DATETIME, "2002-03-22T08:23:47-05:00") != v(dt.DATETIME, "2002-03-22T08:23:47-05:01")
    # a value without a time zone gets the implicit one (UTC, decision 0300)
    assert v(dt.DATETIME, "2002-03-22T13:23:47") == v(dt.DATETIME, "2002-03-22T13:23:47Z")
    assert v(dt.DATETIME, "2002-03-22T08:23:47-05:00").value < v(dt.DATETIME, "2002-03-22T13:23:48Z").value


def test_datetime_lexical_forms() -> None:
    assert lexical(v(dt.DATETIME, "2002-03-22T08:23:47.500-05:00")) == "2002-03-22T08:23:47.5-05:00"
    assert lexical(v(dt.DATETIME, "2002-03-22T08:23:47+00:00")) == "2002-03-22T08:23:47Z"
    assert lexical(v(dt.DATETIME, "2002-03-22T08:23:47")) == "2002-03-22T08:23:47"  # stays zone-less
    assert lexical(v(dt.DATETIME, "1999-12-31T24:00:00Z")) == "2000-01-01T00:00:00Z"  # end of day = next midnight
    assert lexical(v(dt.DATETIME, "1056-11-05T19:08:12-14:00")) == "1056-11-05T19:08:12-14:00"
    for text in ("2002-02-29T00:00:00Z", "2002-03-22T25:00:00Z", "2002-03-22T24:00:01Z", "2002-03-22 08:23:47",
                 "2002-03-22T08:23:47+14:30", "2002-03-22T08:23", "-0044-03-15T12:00:00Z", "12002-01-01T00:00:00"):
        bad(dt.DATETIME, text)


def test_date_compares_starting_instants() -> None:
    assert v(dt.DATE, "2002-03-22") == v(dt.DATE, "2002-03-22Z")
    assert v(dt.DATE, "2002-03-22-05:00") != v(dt.DATE, "2002-03-22Z")
    assert v(dt.DATE, "2002-03-22Z").value < v(dt.DATE, "2002-03-22-05:00").value  # its day starts 5 h later
    assert lexical(v(dt.DATE, "2002-03-22+01:00")) == "2002-03-22+01:00"
    bad(dt.DATE, "2002-02-29")
    bad(dt.DATE, "2002-3-22")


def test_time_follows_xml_schema_order() -> None:
    # XQuery F&O's own example: 21:30+10:30 and 06:00-05:00 are both 11:00Z
    assert v(dt.TIME, "21:30:00+10:30") == v(dt.TIME, "06:00:00-05:00")
    assert v(dt.TIME, "24:00:00") == v(dt.TIME, "00:00:00")
    # 23:00-05:00 is 04:00Z on the following day, so later than 05:00Z
    assert v(dt.TIME, "23:00:00-05:00").value > v(dt.TIME, "05:00:00Z").value
    assert lexical(v(dt.TIME, "08:23:47.120-05:00")) == "08:23:47.12-05:00"
    bad(dt.TIME, "8:23:47")
    bad(dt.TIME, "08:60:00")


def test_current_environment_attributes_share_one_instant() -> None:
    now = datetime(2026, 3, 1, 23, 30, tzinfo=timezone(timedelta(hours=-5)))
    env = current_environment(now)
    assert lexical(env["urn:oasis:names:tc:xacml:1.0:environment:current-dateTime"]) == "2026-03-01T23:30:00-05:00"
    assert lexical(env["urn:oasis:names:tc:xacml:1.0:environment:current-date"]) == "2026-03-01-05:00"
    current_time = env["urn:oasis:names:tc:xacml:1.0:environment:current-time"]
    assert current_time == v(dt.TIME, "23:30:00-05:00")
    # 04:30Z on the *following* day: the same clock reading in UTC, yet not equal under XML Schema's time order
    assert current_time.value.micros_of_day_utc == v(dt.TIME, "04:30:00Z").value.micros_of_day_utc
    assert current_time != v(dt.TIME, "04:30:00Z")
    with pytest.raises(ValueError):
        current_environment(datetime(2026, 3, 1))


# --- durations -------------------------------------------------------------------------------------------------


def test_day_time_duration_is_an_exact_number_of_seconds() -> None:
    assert v(dt.DAYTIMEDURATION, "P12DT148H18M21S") == v(dt.DAYTIMEDURATION, "P18DT4H18M21S")
    assert lexical(v(dt.DAYTIMEDURATION, "P12DT148H18M21S")) == "P18DT4H18M21S"
    assert lexical(v(dt.DAYTIMEDURATION, "-PT0.50S")) == "-PT0.5S"
    assert lexical(v(dt.DAYTIMEDURATION, "PT0S")) == "PT0S"
    assert lexical(v(dt.DAYTIMEDURATION, "-P0D")) == "PT0S"
    assert v(dt.DAYTIMEDURATION, "PT1.000001S").value.seconds == Decimal("1.000001")
    for text in ("P1Y", "P", "PT", "P1DT", "1D", "PT1.S5", "P-1D"):
        bad(dt.DAYTIMEDURATION, text)


def test_year_month_duration_counts_months() -> None:
    assert v(dt.YEARMONTHDURATION, "P1Y2M") == v(dt.YEARMONTHDURATION, "P14M")
    assert v(dt.YEARMONTHDURATION, "-P0M") == v(dt.YEARMONTHDURATION, "P0Y")
    assert lexical(v(dt.YEARMONTHDURATION, "-P28Y7M")) == "-P28Y7M"
    assert lexical(v(dt.YEARMONTHDURATION, "P24M")) == "P2Y"
    for text in ("P1D", "P", "P1Y2M3D", "PT1M"):
        bad(dt.YEARMONTHDURATION, text)


def test_legacy_duration_types_parse_with_their_own_identifiers() -> None:
    legacy = v(dt.LEGACY_DAYTIMEDURATION, "P1D")
    assert legacy.datatype == dt.LEGACY_DAYTIMEDURATION
    assert legacy.value == v(dt.DAYTIMEDURATION, "PT24H").value


# --- names -----------------------------------------------------------------------------------------------------


def test_x500_name_equality_ignores_case_spacing_and_type_spelling() -> None:
    a = v(dt.X500NAME, "cn=John Smith, o=Medico Corp, c=US")
    assert a == v(dt.X500NAME, "CN=john  smith,O=MEDICO CORP,C=us")
    assert a == v(dt.X500NAME, "2.5.4.3=John Smith;o=Medico Corp;c=US")
    assert a != v(dt.X500NAME, "o=Medico Corp, cn=John Smith, c=US")  # RDN order matters
    # multi-valued RDNs are sets; escaped and quoted separators are part of the value
    assert v(dt.X500NAME, "cn=A+uid=b,o=X") == v(dt.X500NAME, "uid=b+cn=A,o=X")
    assert v(dt.X500NAME, r"cn=Smith\, John,o=X") == v(dt.X500NAME, 'cn="Smith, John",o=X')
    assert len(v(dt.X500NAME, r"cn=Smith\, John,o=X").value.rdns) == 2
    assert v(dt.X500NAME, r"cn=J\4Fhn") == v(dt.X500NAME, "cn=JOhn")
    assert lexical(a) == "cn=John Smith, o=Medico Corp, c=US"  # written back as given
    for text in ("", "John Smith", "cn=a,,o=b", "c n=x"):
        bad(dt.X500NAME, text)


def test_rfc822_name_local_part_is_case_sensitive_domain_is_not() -> None:
    assert v(dt.RFC822NAME, "Anderson@SUN.COM") == v(dt.RFC822NAME, "Anderson@sun.com")
    assert v(dt.RFC822NAME, "Anderson@sun.com") != v(dt.RFC822NAME, "anderson@sun.com")
    assert lexical(v(dt.RFC822NAME, "j_hibbert@MEDICO.COM")) == "j_hibbert@MEDICO.COM"
    for text in ("no-domain", "@sun.com", "a@b_c.com", "a b@sun.com", "a@-sun.com"):
        bad(dt.RFC822NAME, text)


def test_ip_address_with_mask_and_port_range() -> None:
    ip = v(dt.IPADDRESS, "122.45.38.245/255.255.255.64:8080").value
    assert str(ip.address) == "122.45.38.245" and str(ip.mask) == "255.255.255.64"
    assert ip.ports.low == ip.ports.high == 8080
    v6 = v(dt.IPADDRESS, "[2001:db8::1]/[ffff:ffff::]:80-").value
    assert v6.address.version == 6 and v6.ports.contains(65535) and not v6.ports.contains(79)
    assert v(dt.IPADDRESS, "10.0.0.1:-1024").value.ports.contains(1)
    assert v(dt.IPADDRESS, "10.0.0.1") != v(dt.IPADDRESS, "10.0.0.1:80")
    for text in ("300.1.1.1", "10.0.0.1:99999", "10.0.0.1:90-80", "2001:db8::1", "10.0.0.1/[ffff::]", "10.0.0.1:"):
        bad(dt.IPADDRESS, text)


def test_dns_name_with_wildcard_and_ports() -> None:
    name = v(dt.DNSNAME, "*.Example.COM:147-874").value
    assert name.hostname == "*.example.com" and name.ports.contains(500)
    assert v(dt.DNSNAME, "a.different.host:-45").value.ports.contains(45)
    assert v(dt.DNSNAME, "Host.example") == v(dt.DNSNAME, "host.EXAMPLE")
    for text in ("exa mple.com", "a..b", "host:abc", "*example.com"):
        bad(dt.DNSNAME, text)


# --- JSON Profile ----------------------------------------------------------------------------------------------


def test_json_shorthands_and_native_types() -> None:
    assert datatype_from_json("dateTime") == dt.DATETIME
    assert datatype_from_json(dt.RFC822NAME) == dt.RFC822NAME
    assert parse_json_value("integer", 5) == v(dt.INTEGER, "5")
    assert parse_json_value("integer", "5") == v(dt.INTEGER, "5")
    assert parse_json_value("double", 5) == v(dt.DOUBLE, "5.0")
    assert parse_json_value("boolean", True) == v(dt.BOOLEAN, "true")
    assert parse_json_value("dayTimeDuration", "P1D") == v(dt.DAYTIMEDURATION, "PT24H")
    for datatype, value in (("integer", True), ("string", 5), ("integer", 5.5), ("boolean", 1), ("date", None)):
        with pytest.raises(XacmlSyntaxError):
            parse_json_value(datatype, value)
    with pytest.raises(UnknownDataType):
        parse_json_value("urn:example:unknown", None)


def test_json_type_inference() -> None:
    assert infer_json_datatype("x") == dt.STRING
    assert infer_json_datatype(True) == dt.BOOLEAN
    assert infer_json_datatype(3) == dt.INTEGER
    assert infer_json_datatype(3.5) == dt.DOUBLE
    assert infer_json_datatype([1, 2.5]) == dt.DOUBLE
    with pytest.raises(XacmlSyntaxError):
        infer_json_datatype(["a", 1])


def test_json_output_uses_native_types_where_json_has_them() -> None:
    assert to_json_value(v(dt.INTEGER, "12")) == 12
    assert to_json_value(v(dt.DOUBLE, "27.50")) == 27.5
    assert [to_json_value(v(dt.DOUBLE, t)) for t in ("NaN", "INF", "-INF")] == ["NaN", "INF", "-INF"]
    assert to_json_value(v(dt.DAYTIMEDURATION, "P12DT148H18M21S")) == "P18DT4H18M21S"
    xpath = parse_json_value("xpathExpression", {
        "XPathCategory": "urn:oasis:names:tc:xacml:3.0:attribute-category:resource",
        "XPath": "md:record/md:name", "Namespaces": [{"Prefix": "md", "Namespace": "urn:example:md"}],
    })
    assert xpath.value.namespaces == (("md", "urn:example:md"),)
    assert to_json_value(xpath)["XPath"] == "md:record/md:name"


def test_bag_is_sized_and_iterable() -> None:
    bag = Bag(dt.INTEGER, (v(dt.INTEGER, "1"), v(dt.INTEGER, "2")))
    assert len(bag) == 2 and [a.value for a in bag] == [1, 2]
    assert Bag(dt.INTEGER, ()) != Bag(dt.STRING, ())


def test_every_value_in_the_conformance_suite_parses_and_round_trips() -> None:
    from lxml import etree

    assert CONFORMANCE_XACML.is_dir(), "the OASIS conformance suite belongs in ../shared/conformance/xacml"
    count = 0
    for path in CONFORMANCE_XACML.rglob("*.xml*"):
        try:
            tree = etree.parse(str(path))
        except etree.XMLSyntaxError:
            continue
        for element in tree.iter("{*}AttributeValue"):
            datatype = element.get("DataType")
            if datatype == dt.XPATHEXPRESSION:
                continue
            value = parse_value(datatype, "".join(element.itertext()))
            again = parse_value(datatype, lexical(value))
            assert again == value, path
            count += 1
    assert count > 3000


def test_implicit_timezone_is_utc() -> None:
    assert dt.IMPLICIT_TIMEZONE.utcoffset(None) == timedelta(0)
    assert v(dt.DATETIME, "2002-03-22T13:23:47").value.moment.tzinfo is None
    assert v(dt.DATETIME, "2002-03-22T13:23:47Z").value.moment.tzinfo.utcoffset(None) == UTC.utcoffset(None)


# --- properties --------------------------------------------------------------------------------------------------

_offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
_moments = st.datetimes(min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31), timezones=_offsets)


@given(_moments, _moments)
def test_datetime_lexical_round_trip_and_order_follow_the_instants(a: datetime, b: datetime) -> None:
    x, y = dt.XsDateTime.of(a), dt.XsDateTime.of(b)
    assert parse_value(dt.DATETIME, x.lexical()).value == x
    assert (x == y) == (a == b)
    assert (x < y) == (a < b)


@given(st.integers(min_value=-10**15, max_value=10**15), st.integers(min_value=0, max_value=6))
def test_day_time_duration_lexical_round_trip(micros: int, places: int) -> None:
    seconds = Decimal(micros).scaleb(-places)
    duration = dt.DayTimeDuration(seconds)
    assert parse_value(dt.DAYTIMEDURATION, duration.lexical()).value == duration


@given(st.integers(min_value=-10**6, max_value=10**6))
def test_year_month_duration_lexical_round_trip(months: int) -> None:
    duration = dt.YearMonthDuration(months)
    assert parse_value(dt.YEARMONTHDURATION, duration.lexical()).value == duration


@given(st.times(timezones=_offsets), st.times(timezones=_offsets))
def test_time_order_is_the_order_of_utc_instants_on_one_day(a, b) -> None:  # type: ignore[no-untyped-def]
    x, y = dt.XsTime.of(a, a.utcoffset()), dt.XsTime.of(b, b.utcoffset())
    day = datetime(1972, 12, 31)
    assert (x < y) == (day.replace(hour=a.hour, minute=a.minute, second=a.second, microsecond=a.microsecond,
                                   tzinfo=a.tzinfo)
                       < day.replace(hour=b.hour, minute=b.minute, second=b.second, microsecond=b.microsecond,
                                     tzinfo=b.tzinfo))
    assert parse_value(dt.TIME, x.lexical()).value == x
