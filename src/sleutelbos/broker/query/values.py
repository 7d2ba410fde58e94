"""Typed literals of the NGSI-LD Query Language (ETSI GS CIM 009 v1.8/v1.9, clause 4.9) and how they compare.

The grammar's ``ComparableValue`` is a JSON number, a quoted JSON string, a ``dateTime``, a ``date`` or a ``time``
(clause 4.6.3); ``OtherValue`` is ``true``/``false``; a ``URI`` is allowed on the right of ``==``/``!=``. Clause 4.9
says dates and times compare *temporally* and that values of different data types are never equal nor ordered.

This module is the one place that decides what a stored JSON value "is" for the comparison: the Python evaluator, the
SQLite functions and the PostgreSQL expressions all follow :func:`temporal_key`, so the back-ends agree:

* a dateTime is ``YYYY-MM-DDTHH:MM[:SS[.fraction]]`` with ``Z``, ``±HH:MM`` or no zone (read as UTC), compared in UTC
  at millisecond precision (key ``YYYY-MM-DDTHH:MM:SS.mmmZ``);
* a date is ``YYYY-MM-DD`` (compared as text, which is calendar order);
* a time is ``HH:MM[:SS[.fraction]]`` with an optional ``Z`` (key ``HH:MM:SS.mmm``).

Left out: week dates, ordinal dates and other ISO 8601 forms; time zone offsets on ``time`` values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from functools import lru_cache
from typing import Any, Final
from typing import Literal as TypingLiteral

LiteralKind = TypingLiteral["number", "string", "boolean", "datetime", "date", "time", "uri"]

DATETIME_RE: Final = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?(Z|[+-]\d{2}:\d{2})?$", re.ASCII
)
DATE_RE: Final = re.compile(r"^\d{4}-\d{2}-\d{2}$", re.ASCII)
TIME_RE: Final = re.compile(r"^(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?Z?$", re.ASCII)
#: RFC 3986 ``scheme ":" hier-part`` with no white space — what an unquoted URI in ``q`` looks like.
URI_RE: Final = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:[^\s\"<>\\^`{}]+$")
NUMBER_RE: Final = re.compile(r"^-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?$", re.ASCII)


@lru_cache(maxsize=16384)
def datetime_key(text: str) -> str | None:
    """The comparison key of a dateTime string (UTC, milliseconds), or None if it is not one."""
    m = DATETIME_RE.match(text)
    if m is None:
        return None
    year, month, day, hour, minute = (int(m.group(i)) for i in range(1, 6))
    second = int(m.group(6) or 0)
    micro = int(((m.group(7) or "") + "000000")[:6])
    zone = m.group(8)
    tz = UTC
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        tz = timezone(sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
    try:
        moment = datetime(year, month, day, hour, minute, second, micro, tzinfo=tz).astimezone(UTC)
    except (ValueError, OverflowError):
        return None
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def date_key(text: str) -> str | None:
    return text if DATE_RE.match(text) else None


def time_key(text: str) -> str | None:
    m = TIME_RE.match(text)
    if m is None:
        return None
    hour, minute, second = int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
    if hour > 23 or minute > 59 or second > 59:
        return None
    millis = ((m.group(4) or "") + "000")[:3]
    return f"{hour:02d}:{minute:02d}:{second:02d}.{millis}"


TEMPORAL_KEYS: Final = {"datetime": datetime_key, "date": date_key, "time": time_key}


def temporal_key(kind: str, value: Any) -> str | None:
    """The sortable key of ``value`` read as a ``kind`` (datetime/date/time), or None when it is not one."""
    if not isinstance(value, str):
        return None
    return TEMPORAL_KEYS[kind](value)


@dataclass(frozen=True, slots=True)
class Literal:
    """One value on the right of an operator: its kind, its Python value, and the text it was written as.

    ``value`` is an ``int``/``float`` for numbers, ``bool`` for booleans, ``str`` for strings and URIs, and the
    comparison key (see :func:`temporal_key`) for dateTime, date and time.
    """

    kind: LiteralKind
    value: Any
    text: str

    @property
    def is_temporal(self) -> bool:
        return self.kind in TEMPORAL_KEYS

    @property
    def is_textual(self) -> bool:
        return self.kind in ("string", "uri")


def classify_bare(text: str) -> Literal | None:
    """Type an unquoted value: boolean, number, dateTime, date, time or URI (in that order); None if none fits."""
    if text in ("true", "false"):
        return Literal("boolean", text == "true", text)
    if NUMBER_RE.match(text):
        number: float | int = float(text) if any(c in text for c in ".eE") else int(text)
        return Literal("number", number, text)
    key = datetime_key(text)
    if key is not None:
        return Literal("datetime", key, text)
    if DATE_RE.match(text):
        return Literal("date", text, text)
    key = time_key(text)
    if key is not None:
        return Literal("time", key, text)
    if URI_RE.match(text):
        return Literal("uri", text, text)
    return None


def element_matches_kind(element: Any, literal: Literal) -> Any:
    """The element as a value comparable with ``literal``, or ``None`` when the data types differ (clause 4.9)."""
    kind = literal.kind
    if kind == "number":
        if isinstance(element, int | float) and not isinstance(element, bool):
            return element
        return None
    if kind in ("string", "uri"):
        return element if isinstance(element, str) else None
    if kind == "boolean":
        return element if isinstance(element, bool) else None
    return temporal_key(kind, element)
