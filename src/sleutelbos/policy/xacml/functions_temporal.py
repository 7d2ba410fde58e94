"""Date and time arithmetic (§A.3.7) and comparison (§A.3.8), and ``time-in-range``.

Arithmetic follows XQuery F&O §10.8: a ``dayTimeDuration`` is added to the value as written, in its own time zone
(a value without a zone stays without one); adding months keeps the day of the month unless the target month is
shorter, then it is the last day (``2002-01-31`` + ``P1M`` = ``2002-02-28``). A result outside years 0001–9999 is
a processing error. Comparisons order instants, with the implicit time zone for values without one (see
:mod:`~.datatypes`).

``time-in-range`` (§A.3.8, XACML 2.0): the first argument is inside the range that starts at the second and runs
forward — possibly past midnight — to the third, bounds included; the bounds take the first argument's time zone
when they have none.
"""

from __future__ import annotations

import calendar
from datetime import datetime, timedelta

from sleutelbos.policy.xacml import datatypes as dt
from sleutelbos.policy.xacml.function_spec import FunctionSpec, ParamSpec
from sleutelbos.policy.xacml.functions_arithmetic import comparison_specs
from sleutelbos.policy.xacml.status import XacmlProcessingError
from sleutelbos.policy.xacml.values import AttributeValue, boolean

V10 = "urn:oasis:names:tc:xacml:1.0:function:"
V20 = "urn:oasis:names:tc:xacml:2.0:function:"
V30 = "urn:oasis:names:tc:xacml:3.0:function:"

_DAY = 86_400_000_000


def _shift_months(year: int, month: int, day: int, months: int) -> tuple[int, int, int]:
    total = year * 12 + (month - 1) + months
    new_year, new_month = divmod(total, 12)
    new_month += 1
    if not 1 <= new_year <= 9999:
        raise XacmlProcessingError(f"date arithmetic leaves the years 0001-9999 (year {new_year})")
    return new_year, new_month, min(day, calendar.monthrange(new_year, new_month)[1])


def _datetime_plus(value: dt.XsDateTime, delta: timedelta) -> AttributeValue:
    try:
        moment: datetime = value.moment + delta
    except OverflowError:
        raise XacmlProcessingError("dateTime arithmetic leaves the years 0001-9999") from None
    return AttributeValue(dt.DATETIME, dt.XsDateTime.of(moment))


def datetime_add_daytime(a: AttributeValue, d: AttributeValue) -> AttributeValue:
    return _datetime_plus(a.value, d.value.timedelta())


def datetime_subtract_daytime(a: AttributeValue, d: AttributeValue) -> AttributeValue:
    return _datetime_plus(a.value, -d.value.timedelta())


def _datetime_months(a: AttributeValue, months: int) -> AttributeValue:
    moment = a.value.moment
    year, month, day = _shift_months(moment.year, moment.month, moment.day, months)
    return AttributeValue(dt.DATETIME, dt.XsDateTime.of(moment.replace(year=year, month=month, day=day)))


def datetime_add_yearmonth(a: AttributeValue, d: AttributeValue) -> AttributeValue:
    return _datetime_months(a, d.value.months)


def datetime_subtract_yearmonth(a: AttributeValue, d: AttributeValue) -> AttributeValue:
    return _datetime_months(a, -d.value.months)


def _date_months(a: AttributeValue, months: int) -> AttributeValue:
    value: dt.XsDate = a.value
    year, month, day = _shift_months(value.day.year, value.day.month, value.day.day, months)
    return AttributeValue(dt.DATE, dt.XsDate.of(value.day.replace(year=year, month=month, day=day), value.offset))


def date_add_yearmonth(a: AttributeValue, d: AttributeValue) -> AttributeValue:
    return _date_months(a, d.value.months)


def date_subtract_yearmonth(a: AttributeValue, d: AttributeValue) -> AttributeValue:
    return _date_months(a, -d.value.months)


def _utc_micros(value: dt.XsTime, offset: timedelta | None) -> int:
    """Microseconds since midnight UTC of a time, read in ``offset`` when it has no zone of its own."""
    if value.offset is not None or offset is None:
        return value.micros_of_day_utc
    return dt.XsTime.of(value.clock, offset).micros_of_day_utc


def time_in_range(t: AttributeValue, low: AttributeValue, high: AttributeValue) -> AttributeValue:
    subject: dt.XsTime = t.value
    zone = subject.offset if subject.offset is not None else dt.IMPLICIT_TIMEZONE.utcoffset(None)
    at = subject.micros_of_day_utc
    start = _utc_micros(low.value, zone)
    end = _utc_micros(high.value, zone)
    return boolean((at - start) % _DAY <= (end - start) % _DAY)


def _arithmetic(prefix: str, daytime: str, yearmonth: str) -> list[FunctionSpec]:
    dtm, dat = ParamSpec(dt.DATETIME), ParamSpec(dt.DATE)
    dtd, ymd = ParamSpec(daytime), ParamSpec(yearmonth)
    return [
        FunctionSpec(prefix + "dateTime-add-dayTimeDuration", (dtm, dtd), dt.DATETIME, False, datetime_add_daytime),
        FunctionSpec(prefix + "dateTime-subtract-dayTimeDuration", (dtm, dtd), dt.DATETIME, False,
                     datetime_subtract_daytime),
        FunctionSpec(prefix + "dateTime-add-yearMonthDuration", (dtm, ymd), dt.DATETIME, False,
                     datetime_add_yearmonth),
        FunctionSpec(prefix + "dateTime-subtract-yearMonthDuration", (dtm, ymd), dt.DATETIME, False,
                     datetime_subtract_yearmonth),
        FunctionSpec(prefix + "date-add-yearMonthDuration", (dat, ymd), dt.DATE, False, date_add_yearmonth),
        FunctionSpec(prefix + "date-subtract-yearMonthDuration", (dat, ymd), dt.DATE, False,
                     date_subtract_yearmonth),
    ]


_TIME = ParamSpec(dt.TIME)

SPECS: list[FunctionSpec] = [
    *_arithmetic(V30, dt.DAYTIMEDURATION, dt.YEARMONTHDURATION),
    *_arithmetic(V10, dt.LEGACY_DAYTIMEDURATION, dt.LEGACY_YEARMONTHDURATION),
    *comparison_specs(V10, "time", dt.TIME),
    *comparison_specs(V10, "date", dt.DATE),
    *comparison_specs(V10, "dateTime", dt.DATETIME),
    FunctionSpec(V20 + "time-in-range", (_TIME, _TIME, _TIME), dt.BOOLEAN, False, time_in_range),
]
