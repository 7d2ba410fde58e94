"""The primitive data types of XACML 3.0 (core spec §A.2): identifiers, Python value classes and lexical forms.

Each data type maps to one Python representation, chosen so that Python equality (``==`` and ``hash``) *is* the
XACML equality of that type — the bag and set functions, and ``AttributeValue.__eq__``, rely on it:

- ``string``, ``anyURI`` → ``str`` (code-point equality); ``boolean`` → ``bool``; ``integer`` → ``int``;
  ``double`` → ``float`` (IEEE 754, ``-0 = 0``) — except that ``NaN`` equals ``NaN``: the conformance suite
  requires it (IIC350, IIC358: ``double-equal(NaN + 1, NaN)`` is true, as Java's ``Double.equals`` has it), so
  every NaN is the one object :data:`NAN`, which Python's containers and tuple equality then treat as equal to
  itself. Ordering stays IEEE (``NaN`` is neither less nor greater than anything).
- ``dateTime`` → :class:`XsDateTime`, ``date`` → :class:`XsDate`, ``time`` → :class:`XsTime`. XML Schema keeps
  whether a value carried a time zone; XACML (§A.3.1, citing XQuery F&O §10.4) compares values without one as if
  they had the *implicit time zone* of the PDP. sleutelbos fixes that to UTC (decision 0300), so the result never
  depends on the host's clock settings.
- ``dayTimeDuration`` → :class:`DayTimeDuration` (exact seconds), ``yearMonthDuration`` → :class:`YearMonthDuration`.
- ``hexBinary``, ``base64Binary`` → ``bytes`` (octet equality).
- ``x500Name`` → :class:`X500Name` (RDN-wise, case- and space-insensitive, RFC 4514/4517 matching rules),
  ``rfc822Name`` → :class:`RFC822Name` (local part case-sensitive, domain case-insensitive, §A.3.1),
  ``ipAddress`` → :class:`IPAddress`, ``dnsName`` → :class:`DNSName` (§A.2, XACML 2.0 syntax).
- ``xpathExpression`` → :class:`XPathExpression` (the expression, its category and its namespace context).

Left out: ``dateTime``/``date`` years outside 0001–9999 (Python's calendar) are rejected as syntax errors, and
fractional seconds are kept to the microsecond (digits beyond are cut, not rounded).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from functools import lru_cache

from sleutelbos.policy.xacml.status import XacmlSyntaxError

XS = "http://www.w3.org/2001/XMLSchema#"
STRING = XS + "string"
BOOLEAN = XS + "boolean"
INTEGER = XS + "integer"
DOUBLE = XS + "double"
TIME = XS + "time"
DATE = XS + "date"
DATETIME = XS + "dateTime"
DAYTIMEDURATION = XS + "dayTimeDuration"
YEARMONTHDURATION = XS + "yearMonthDuration"
ANYURI = XS + "anyURI"
HEXBINARY = XS + "hexBinary"
BASE64BINARY = XS + "base64Binary"
RFC822NAME = "urn:oasis:names:tc:xacml:1.0:data-type:rfc822Name"
X500NAME = "urn:oasis:names:tc:xacml:1.0:data-type:x500Name"
IPADDRESS = "urn:oasis:names:tc:xacml:2.0:data-type:ipAddress"
DNSNAME = "urn:oasis:names:tc:xacml:2.0:data-type:dnsName"
XPATHEXPRESSION = "urn:oasis:names:tc:xacml:3.0:data-type:xpathExpression"

# XACML 1.0/2.0 named the duration types after a 2002 XQuery working draft; 3.0 keeps the old function ids that use
# them (§10.2.8, deprecated) so we keep the types too, with the same values.
LEGACY_DAYTIMEDURATION = "http://www.w3.org/TR/2002/WD-xquery-operators-20020816#dayTimeDuration"
LEGACY_YEARMONTHDURATION = "http://www.w3.org/TR/2002/WD-xquery-operators-20020816#yearMonthDuration"

IMPLICIT_TIMEZONE = UTC
"""The PDP's implicit time zone (XQuery F&O §10.4): assigned to date/time values written without one."""

_MICROS_PER_DAY = 86_400_000_000
_MAX_TZ_MINUTES = 14 * 60

# --- lexical helpers -------------------------------------------------------------------------------------------

_TZ = r"(?P<tz>Z|[+-][0-9]{2}:[0-9]{2})?"
_DATETIME_RE = re.compile(
    r"(?P<year>-?[0-9]{4,})-(?P<month>[0-9]{2})-(?P<day>[0-9]{2})"
    r"T(?P<hour>[0-9]{2}):(?P<minute>[0-9]{2}):(?P<second>[0-9]{2})(?P<frac>\.[0-9]+)?" + _TZ
)
_DATE_RE = re.compile(r"(?P<year>-?[0-9]{4,})-(?P<month>[0-9]{2})-(?P<day>[0-9]{2})" + _TZ)
_TIME_RE = re.compile(r"(?P<hour>[0-9]{2}):(?P<minute>[0-9]{2}):(?P<second>[0-9]{2})(?P<frac>\.[0-9]+)?" + _TZ)
_DAYTIME_RE = re.compile(
    r"(?P<sign>-)?P(?:(?P<d>[0-9]+)D)?(?:T(?:(?P<h>[0-9]+)H)?(?:(?P<m>[0-9]+)M)?(?:(?P<s>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)S)?)?"
)
_YEARMONTH_RE = re.compile(r"(?P<sign>-)?P(?:(?P<y>[0-9]+)Y)?(?:(?P<m>[0-9]+)M)?")


def _syntax(datatype: str, text: str, why: str = "") -> XacmlSyntaxError:
    name = datatype.rsplit("#", 1)[-1].rsplit(":", 1)[-1]
    return XacmlSyntaxError(f"{text!r} is not a valid {name}" + (f": {why}" if why else ""))


def _offset(tz: str | None, datatype: str, text: str) -> timedelta | None:
    """The time zone offset of an XML Schema date/time, or None when the value has none."""
    if tz is None:
        return None
    offset = _parse_offset(tz)
    if offset is None:
        raise _syntax(datatype, text, "time zone outside -14:00..+14:00")
    return offset


@lru_cache(maxsize=256)
def _parse_offset(tz: str) -> timedelta | None:
    """``Z`` or ``±hh:mm`` as an offset; None when out of range. Few distinct zones occur: cached."""
    if tz == "Z":
        return timedelta(0)
    hours, minutes = int(tz[1:3]), int(tz[4:6])
    total = hours * 60 + minutes
    if minutes > 59 or total > _MAX_TZ_MINUTES:
        return None
    return timedelta(minutes=-total if tz[0] == "-" else total)


def _format_offset(offset: timedelta | None) -> str:
    if offset is None:
        return ""
    minutes = int(offset.total_seconds()) // 60
    if minutes == 0:
        return "Z"
    sign = "-" if minutes < 0 else "+"
    minutes = abs(minutes)
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def _micros(frac: str | None) -> int:
    return int((frac[1:] + "000000")[:6]) if frac else 0


def _format_clock(hour: int, minute: int, second: int, micro: int) -> str:
    text = f"{hour:02d}:{minute:02d}:{second:02d}"
    if micro:
        text += ("." + f"{micro:06d}").rstrip("0")
    return text


def _clock(m: re.Match[str], datatype: str, text: str) -> tuple[int, int, int, int, bool]:
    """hour, minute, second, microsecond and whether the value was ``24:00:00`` (the end of the day)."""
    hour, minute, second = int(m["hour"]), int(m["minute"]), int(m["second"])
    micro = _micros(m["frac"])
    if hour == 24:
        if minute or second or micro:
            raise _syntax(datatype, text, "24:00:00 is the only time with hour 24")
        return 0, 0, 0, 0, True
    if hour > 23 or minute > 59 or second > 59:
        raise _syntax(datatype, text, "hour, minute or second out of range")
    return hour, minute, second, micro, False


def _calendar_day(m: re.Match[str], datatype: str, text: str) -> date:
    year = m["year"]
    if year.startswith("-") or len(year) > 4:
        raise _syntax(datatype, text, "years outside 0001-9999 are not supported")
    try:
        return date(int(year), int(m["month"]), int(m["day"]))
    except ValueError as exc:
        raise _syntax(datatype, text, str(exc)) from None


def _offset_micros(offset: timedelta) -> int:
    return (offset.days * 86_400 + offset.seconds) * 1_000_000 + offset.microseconds


_IMPLICIT_OFFSET_MICROS = _offset_micros(IMPLICIT_TIMEZONE.utcoffset(None))


def _key(day: date, micros_of_day: int, offset: timedelta | None) -> int:
    """The instant as microseconds since 0001-01-01T00:00Z, with the implicit time zone where none is given."""
    shift = _IMPLICIT_OFFSET_MICROS if offset is None else _offset_micros(offset)
    return day.toordinal() * _MICROS_PER_DAY + micros_of_day - shift


@lru_cache(maxsize=256)
def _zone(offset: timedelta) -> timezone:
    """One shared ``timezone`` object per offset (values are compared by instant, never by zone object)."""
    return timezone(offset)


# --- dates and times -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class XsDateTime:
    """An ``xs:dateTime``: a calendar moment, with a time zone offset or without one (then the implicit one applies).

    Equality and order compare the instants; ``moment`` keeps the value as written (naive when no zone was given).
    """

    moment: datetime = field(compare=False)
    key: int = field(repr=False)

    @classmethod
    def of(cls, moment: datetime) -> XsDateTime:
        tz = moment.tzinfo
        offset = moment.utcoffset() if tz is not None else None
        if offset is not None and type(tz) is not timezone:
            moment = moment.replace(tzinfo=_zone(offset))  # a fixed offset: XML Schema knows no named zones
        micros = ((moment.hour * 60 + moment.minute) * 60 + moment.second) * 1_000_000 + moment.microsecond
        return cls(moment, _key(moment, micros, offset))

    @classmethod
    def parse(cls, text: str) -> XsDateTime:
        m = _DATETIME_RE.fullmatch(text)
        if m is None:
            raise _syntax(DATETIME, text)
        day = _calendar_day(m, DATETIME, text)
        hour, minute, second, micro, end_of_day = _clock(m, DATETIME, text)
        offset = _offset(m["tz"], DATETIME, text)
        if end_of_day:
            try:
                day = day + timedelta(days=1)
            except OverflowError:
                raise _syntax(DATETIME, text, "beyond year 9999") from None
        tz = _zone(offset) if offset is not None else None
        return cls.of(datetime(day.year, day.month, day.day, hour, minute, second, micro, tzinfo=tz))

    @property
    def offset(self) -> timedelta | None:
        return self.moment.utcoffset()

    def lexical(self) -> str:
        m = self.moment
        return (
            f"{m.year:04d}-{m.month:02d}-{m.day:02d}T"
            + _format_clock(m.hour, m.minute, m.second, m.microsecond)
            + _format_offset(self.offset)
        )

    def __lt__(self, other: XsDateTime) -> bool:
        return self.key < other.key

    def __le__(self, other: XsDateTime) -> bool:
        return self.key <= other.key

    def __gt__(self, other: XsDateTime) -> bool:
        return self.key > other.key

    def __ge__(self, other: XsDateTime) -> bool:
        return self.key >= other.key


@dataclass(frozen=True, slots=True)
class XsDate:
    """An ``xs:date`` with an optional time zone; compared by its starting instant (XQuery ``op:date-equal``)."""

    day: date = field(compare=False)
    offset: timedelta | None = field(compare=False)
    key: int = field(repr=False)

    @classmethod
    def of(cls, day: date, offset: timedelta | None = None) -> XsDate:
        return cls(day, offset, _key(day, 0, offset))

    @classmethod
    def parse(cls, text: str) -> XsDate:
        m = _DATE_RE.fullmatch(text)
        if m is None:
            raise _syntax(DATE, text)
        return cls.of(_calendar_day(m, DATE, text), _offset(m["tz"], DATE, text))

    def lexical(self) -> str:
        d = self.day
        return f"{d.year:04d}-{d.month:02d}-{d.day:02d}" + _format_offset(self.offset)

    def __lt__(self, other: XsDate) -> bool:
        return self.key < other.key

    def __le__(self, other: XsDate) -> bool:
        return self.key <= other.key

    def __gt__(self, other: XsDate) -> bool:
        return self.key > other.key

    def __ge__(self, other: XsDate) -> bool:
        return self.key >= other.key


@dataclass(frozen=True, slots=True)
class XsTime:
    """An ``xs:time`` with an optional time zone.

    XML Schema orders times as dateTimes on an arbitrary common day (1972-12-31), *after* normalising to UTC:
    ``23:00:00-05:00`` is 04:00Z on the next day and so later than ``05:00:00Z``. ``key`` is that instant in
    microseconds relative to the reference day's midnight UTC.
    """

    clock: time = field(compare=False)
    offset: timedelta | None = field(compare=False)
    key: int = field(repr=False)

    @classmethod
    def of(cls, clock: time, offset: timedelta | None = None) -> XsTime:
        micros = ((clock.hour * 60 + clock.minute) * 60 + clock.second) * 1_000_000 + clock.microsecond
        # date(1, 1, 1) has ordinal 1: subtracting one day leaves the instant relative to the reference midnight.
        return cls(clock.replace(tzinfo=None), offset, _key(date(1, 1, 1), micros, offset) - _MICROS_PER_DAY)

    @classmethod
    def parse(cls, text: str) -> XsTime:
        m = _TIME_RE.fullmatch(text)
        if m is None:
            raise _syntax(TIME, text)
        hour, minute, second, micro, _ = _clock(m, TIME, text)
        return cls.of(time(hour, minute, second, micro), _offset(m["tz"], TIME, text))

    @property
    def micros_of_day_utc(self) -> int:
        """Microseconds since midnight UTC, folded into one day (what ``time-in-range`` compares)."""
        return self.key % _MICROS_PER_DAY

    def lexical(self) -> str:
        c = self.clock
        return _format_clock(c.hour, c.minute, c.second, c.microsecond) + _format_offset(self.offset)

    def __lt__(self, other: XsTime) -> bool:
        return self.key < other.key

    def __le__(self, other: XsTime) -> bool:
        return self.key <= other.key

    def __gt__(self, other: XsTime) -> bool:
        return self.key > other.key

    def __ge__(self, other: XsTime) -> bool:
        return self.key >= other.key


# --- durations -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, order=True)
class DayTimeDuration:
    """An ``xs:dayTimeDuration``: an exact (signed) number of seconds."""

    seconds: Decimal

    @classmethod
    def parse(cls, text: str, datatype: str = DAYTIMEDURATION) -> DayTimeDuration:
        m = _DAYTIME_RE.fullmatch(text)
        if m is None or (m["d"] is None and m["h"] is None and m["m"] is None and m["s"] is None) or (
            text.endswith("T")
        ):
            raise _syntax(datatype, text)
        total = Decimal(m["d"] or 0) * 86400 + Decimal(m["h"] or 0) * 3600 + Decimal(m["m"] or 0) * 60
        total += Decimal(m["s"] or 0)
        return cls(-total if m["sign"] else total)

    def timedelta(self) -> timedelta:
        micros = int(self.seconds * 1_000_000)
        return timedelta(microseconds=micros)

    def lexical(self) -> str:
        total = self.seconds
        if total == 0:
            return "PT0S"
        sign = "-" if total < 0 else ""
        total = abs(total)
        whole = int(total)
        frac = total - whole
        days, rest = divmod(whole, 86400)
        hours, rest = divmod(rest, 3600)
        minutes, secs = divmod(rest, 60)
        text = sign + "P" + (f"{days}D" if days else "")
        clock = (f"{hours}H" if hours else "") + (f"{minutes}M" if minutes else "")
        if secs or frac:
            s = format(Decimal(secs) + frac, "f")
            if "." in s:
                s = s.rstrip("0").rstrip(".")
            clock += f"{s}S"
        return text + ("T" + clock if clock else "")


@dataclass(frozen=True, slots=True, order=True)
class YearMonthDuration:
    """An ``xs:yearMonthDuration``: a (signed) number of months."""

    months: int

    @classmethod
    def parse(cls, text: str, datatype: str = YEARMONTHDURATION) -> YearMonthDuration:
        m = _YEARMONTH_RE.fullmatch(text)
        if m is None or (m["y"] is None and m["m"] is None):
            raise _syntax(datatype, text)
        months = int(m["y"] or 0) * 12 + int(m["m"] or 0)
        return cls(-months if m["sign"] else months)

    def lexical(self) -> str:
        if self.months == 0:
            return "P0M"
        sign = "-" if self.months < 0 else ""
        years, months = divmod(abs(self.months), 12)
        return sign + "P" + (f"{years}Y" if years else "") + (f"{months}M" if months else "")


# --- names ----------------------------------------------------------------------------------------------------

# RFC 4519 short names → OIDs, so that ``CN=x`` and ``2.5.4.3=x`` are the same attribute type.
_X500_TYPES = {
    "cn": "2.5.4.3", "commonname": "2.5.4.3", "sn": "2.5.4.4", "surname": "2.5.4.4", "serialnumber": "2.5.4.5",
    "c": "2.5.4.6", "countryname": "2.5.4.6", "l": "2.5.4.7", "localityname": "2.5.4.7", "st": "2.5.4.8",
    "s": "2.5.4.8", "stateorprovincename": "2.5.4.8", "street": "2.5.4.9", "streetaddress": "2.5.4.9",
    "o": "2.5.4.10", "organizationname": "2.5.4.10", "ou": "2.5.4.11", "organizationalunitname": "2.5.4.11",
    "title": "2.5.4.12", "givenname": "2.5.4.42", "initials": "2.5.4.43", "generationqualifier": "2.5.4.44",
    "dnqualifier": "2.5.4.46", "uid": "0.9.2342.19200300.100.1.1", "userid": "0.9.2342.19200300.100.1.1",
    "dc": "0.9.2342.19200300.100.1.25", "domaincomponent": "0.9.2342.19200300.100.1.25",
    "emailaddress": "1.2.840.113549.1.9.1", "email": "1.2.840.113549.1.9.1",
}
_OID_RE = re.compile(r"(?:oid\.)?([0-9]+(?:\.[0-9]+)+)", re.IGNORECASE)
_KEYWORD_RE = re.compile(r"[A-Za-z][A-Za-z0-9-]*")
_SPACES = re.compile(r"\s+")


def _split_unescaped(text: str, seps: str) -> list[str]:
    """Split an RFC 4514 string at separators that are neither escaped nor inside RFC 1779 quotes."""
    parts: list[str] = []
    current: list[str] = []
    i, quoted = 0, False
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            current.append(text[i : i + 2])
            i += 2
            continue
        if ch == '"':
            quoted = not quoted
        elif ch in seps and not quoted:
            parts.append("".join(current))
            current = []
            i += 1
            continue
        current.append(ch)
        i += 1
    parts.append("".join(current))
    return parts


def _unescape_dn_value(raw: str, text: str) -> str:
    raw = raw.strip()
    if raw.startswith("#"):  # BER-encoded value: compare the octets
        return raw.lower()
    if len(raw) >= 2 and raw[0] == raw[-1] == '"':
        raw = raw[1:-1]
    out = bytearray()
    i = 0
    while i < len(raw):
        ch = raw[i]
        if ch == "\\":
            if i + 2 < len(raw) + 1 and re.fullmatch(r"[0-9A-Fa-f]{2}", raw[i + 1 : i + 3] or ""):
                out.append(int(raw[i + 1 : i + 3], 16))
                i += 3
                continue
            if i + 1 >= len(raw):
                raise _syntax(X500NAME, text, "dangling escape")
            out.extend(raw[i + 1].encode())
            i += 2
            continue
        out.extend(ch.encode())
        i += 1
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError:
        raise _syntax(X500NAME, text, "escaped octets are not UTF-8") from None


@dataclass(frozen=True, slots=True)
class X500Name:
    """An X.500 distinguished name in its RFC 4514 string form (RFC 1779's ``;`` separators and quotes accepted).

    ``rdns`` is in string order (most specific first); each RDN is the set of its ``(type OID, value)`` pairs,
    with the value normalised as X.520 ``caseIgnoreMatch`` prescribes — insignificant spaces removed, inner runs
    of spaces collapsed, case folded — which is the equality XACML's ``x500Name-equal`` asks for (§A.3.1).
    """

    text: str = field(compare=False)
    rdns: tuple[frozenset[tuple[str, str]], ...]

    @classmethod
    def parse(cls, text: str) -> X500Name:
        stripped = text.strip()
        if not stripped:
            raise _syntax(X500NAME, text, "empty name")
        rdns: list[frozenset[tuple[str, str]]] = []
        for rdn in _split_unescaped(stripped, ",;"):
            pairs: list[tuple[str, str]] = []
            for ava in _split_unescaped(rdn, "+"):
                attr_type, eq, value = ava.partition("=")
                attr_type = attr_type.strip()
                if not eq or not attr_type:
                    raise _syntax(X500NAME, text, f"{ava.strip()!r} is not type=value")
                oid = _OID_RE.fullmatch(attr_type)
                if oid:
                    type_key = oid.group(1)
                elif _KEYWORD_RE.fullmatch(attr_type):
                    type_key = _X500_TYPES.get(attr_type.lower(), attr_type.lower())
                else:
                    raise _syntax(X500NAME, text, f"bad attribute type {attr_type!r}")
                normalised = _SPACES.sub(" ", _unescape_dn_value(value, text)).strip().casefold()
                pairs.append((type_key, normalised))
            rdns.append(frozenset(pairs))
        return cls(text, tuple(rdns))

    def lexical(self) -> str:
        return self.text

    def ends_with(self, other: X500Name) -> bool:
        """True when ``other``'s RDNs are a terminal sequence of ours (``x500Name-match``, §A.3.14)."""
        n = len(other.rdns)
        return n <= len(self.rdns) and self.rdns[len(self.rdns) - n :] == other.rdns


_DOMAIN_RE = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*")


@dataclass(frozen=True, slots=True)
class RFC822Name:
    """An e-mail address (RFC 2821 ``Local-part@Domain``): the local part compares case-sensitively, the domain
    case-insensitively (§A.3.1 ``rfc822Name-equal``)."""

    text: str = field(compare=False)
    local: str
    domain: str  # lower-cased

    @classmethod
    def parse(cls, text: str) -> RFC822Name:
        local, at, domain = text.rpartition("@")
        if not at or not local or not _DOMAIN_RE.fullmatch(domain):
            raise _syntax(RFC822NAME, text, "expected local-part@domain")
        if any(ch.isspace() for ch in local) and not (local.startswith('"') and local.endswith('"')):
            raise _syntax(RFC822NAME, text, "white space in the local part")
        return cls(text, local, domain.lower())

    def lexical(self) -> str:
        return self.text

    def matches(self, pattern: str) -> bool:
        """``rfc822Name-match`` (§A.3.14): a full address, a host (``sun.com``) or a domain (``.east.sun.com``)."""
        if "@" in pattern:
            local, _, domain = pattern.rpartition("@")
            return local == self.local and domain.lower() == self.domain
        if pattern.startswith("."):
            return self.domain.endswith(pattern.lower())
        return self.domain == pattern.lower()


@dataclass(frozen=True, slots=True)
class PortRange:
    """``portrange = portnumber | "-" portnumber | portnumber "-" [portnumber]`` (XACML §A.2)."""

    low: int | None
    high: int | None

    @classmethod
    def parse(cls, text: str, datatype: str, whole: str) -> PortRange:
        m = re.fullmatch(r"([0-9]*)(-?)([0-9]*)", text)
        if m is None or (not m.group(1) and not m.group(3)):
            raise _syntax(datatype, whole, f"bad port range {text!r}")
        low = int(m.group(1)) if m.group(1) else None
        high = int(m.group(3)) if m.group(3) else None
        if not m.group(2):
            high = low
        for port in (low, high):
            if port is not None and port > 65535:
                raise _syntax(datatype, whole, f"port {port} above 65535")
        if low is not None and high is not None and low > high:
            raise _syntax(datatype, whole, "port range low above high")
        return cls(low, high)

    def contains(self, port: int) -> bool:
        return (self.low is None or port >= self.low) and (self.high is None or port <= self.high)


@dataclass(frozen=True, slots=True)
class IPAddress:
    """``ipAddress = address [ "/" mask ] [ ":" portrange ]``; IPv6 addresses and masks in brackets (§A.2)."""

    text: str = field(compare=False)
    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    mask: ipaddress.IPv4Address | ipaddress.IPv6Address | None
    ports: PortRange | None

    @classmethod
    def parse(cls, text: str) -> IPAddress:
        if text.startswith("["):
            m = re.fullmatch(r"\[([^\]]+)\](?:/\[([^\]]+)\])?(?::(.*))?", text)
            version = ipaddress.IPv6Address
        else:
            m = re.fullmatch(r"([0-9.]+)(?:/([0-9.]+))?(?::(.*))?", text)
            version = ipaddress.IPv4Address  # type: ignore[assignment]
        if m is None:
            raise _syntax(IPADDRESS, text)
        try:
            address = version(m.group(1))
            mask = version(m.group(2)) if m.group(2) else None
        except ValueError as exc:
            raise _syntax(IPADDRESS, text, str(exc)) from None
        ports = PortRange.parse(m.group(3), IPADDRESS, text) if m.group(3) is not None else None
        return cls(text, address, mask, ports)

    def lexical(self) -> str:
        return self.text


_HOST_RE = re.compile(r"(?:\*\.)?" + _DOMAIN_RE.pattern + "|\\*")


@dataclass(frozen=True, slots=True)
class DNSName:
    """``dnsName = hostname [ ":" portrange ]``; a leading ``*.`` names every host of a domain (§A.2).

    Host names compare case-insensitively, as DNS does (RFC 4343)."""

    text: str = field(compare=False)
    hostname: str  # lower-cased
    ports: PortRange | None

    @classmethod
    def parse(cls, text: str) -> DNSName:
        host, colon, ports = text.partition(":")
        if not _HOST_RE.fullmatch(host):
            raise _syntax(DNSNAME, text, f"bad host name {host!r}")
        port_range = PortRange.parse(ports, DNSNAME, text) if colon else None
        return cls(text, host.lower(), port_range)

    def lexical(self) -> str:
        return self.text


@dataclass(frozen=True, slots=True)
class XPathExpression:
    """An ``xpathExpression`` value (§A.2): the expression plus the category of the content it selects from and the
    namespace bindings in scope where it was written (they give its prefixes meaning)."""

    path: str
    category: str
    namespaces: tuple[tuple[str, str], ...] = ()

    def lexical(self) -> str:
        return self.path


# --- the simple types ------------------------------------------------------------------------------------------

_INTEGER_RE = re.compile(r"[+-]?[0-9]+")
_DOUBLE_RE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[+-]?INF|NaN")
_BASE64_RE = re.compile(r"[A-Za-z0-9+/= ]*")
_HEX_RE = re.compile(r"[0-9A-Fa-f]*")


def parse_boolean(text: str) -> bool:
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    raise _syntax(BOOLEAN, text)


def parse_integer(text: str) -> int:
    if not _INTEGER_RE.fullmatch(text):
        raise _syntax(INTEGER, text)
    return int(text)


NAN = math.nan
"""The one NaN object every ``double`` NaN is represented by (see the module docstring)."""


def canonical_double(value: float) -> float:
    """``value``, with any NaN replaced by :data:`NAN`."""
    return NAN if value != value else value


def parse_double(text: str) -> float:
    if not _DOUBLE_RE.fullmatch(text):
        raise _syntax(DOUBLE, text)
    if text == "NaN":
        return NAN
    if text.endswith("INF"):
        return -math.inf if text.startswith("-") else math.inf
    return float(text)


def format_double(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "INF" if value > 0 else "-INF"
    return repr(value).replace("e", "E")


def parse_hex(text: str) -> bytes:
    if len(text) % 2 or not _HEX_RE.fullmatch(text):
        raise _syntax(HEXBINARY, text, "expected an even number of hexadecimal digits")
    return bytes.fromhex(text)


def parse_base64(text: str) -> bytes:
    if not _BASE64_RE.fullmatch(text):
        raise _syntax(BASE64BINARY, text)
    compact = text.replace(" ", "")
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise _syntax(BASE64BINARY, text) from None

