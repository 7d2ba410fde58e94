"""The temporal query (ETSI GS CIM 009 v1.8, clause 4.11 TemporalQuery; 5.7.3/5.7.4; 6.18.3.2 query parameters)
and the aggregation parameters (clause 4.5.19 aggregated temporal representation: ``aggrMethods``,
``aggrPeriodDuration``).

``timerel``: ``before`` (t < timeAt), ``after`` (t > timeAt), ``between`` (timeAt <= t < endTimeAt);
``timeproperty``: ``observedAt`` (default), ``modifiedAt`` or ``createdAt`` — the last two are the time the broker
recorded the instance (its row's ``modified_at``: each history row is one instance, created when recorded).
``lastN``: the last N instances per attribute (in time order). Bad values raise BadRequestData with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

import isodate

from sleutelbos.broker.errors import BadRequestData, TooComplexQuery
from sleutelbos.broker.temporal.instants import format_instant, parse_instant

TIMERELS: Final = frozenset({"before", "after", "between"})
TIME_PROPERTIES: Final = {"observedAt": "observed_at", "modifiedAt": "modified_at", "createdAt": "modified_at"}
AGGR_METHODS: Final = ("totalCount", "distinctCount", "sum", "avg", "min", "max", "stddev", "sumsq")
MAX_PERIODS: Final = 5000


@dataclass
class Aggregation:
    methods: list[str]
    period: timedelta | isodate.Duration | None  # None or zero: one period over the whole range

    @property
    def fixed_seconds(self) -> float | None:
        """The period length in seconds when it is fixed (no months or years), for bucketing in SQL."""
        if isinstance(self.period, timedelta) and self.period > timedelta(0):
            return self.period.total_seconds()
        if isinstance(self.period, isodate.Duration) and not (self.period.years or self.period.months) \
                and self.period.tdelta > timedelta(0):
            return float(self.period.tdelta.total_seconds())
        return None

    def periods(self, start: datetime, end: datetime) -> list[tuple[str, str]]:
        """``[(from, to), ...]`` covering ``[start, end)`` (calendar-aware for months and years)."""
        if self.period is None or _is_zero(self.period):
            return [(format_instant(start), format_instant(end))]
        out: list[tuple[str, str]] = []
        cursor = start
        while cursor < end:
            nxt = cursor + self.period
            if nxt <= cursor:
                raise BadRequestData("aggrPeriodDuration must be positive")
            out.append((format_instant(cursor), format_instant(min(nxt, end))))
            if len(out) > MAX_PERIODS:
                raise TooComplexQuery(f"more than {MAX_PERIODS} aggregation periods; narrow the time range or "
                                      f"lengthen aggrPeriodDuration")
            cursor = nxt
        return out


@dataclass
class TemporalQuery:
    timerel: str | None = None
    time_at: str | None = None
    end_time_at: str | None = None
    time_column: str = "observed_at"
    time_property: str = "observedAt"
    last_n: int | None = None
    attrs: list[str] | None = None
    aggregation: Aggregation | None = None
    temporal_values: bool = False
    sys_attrs: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def range_from(self) -> datetime | None:
        return parse_instant(self.time_at) if self.time_at and self.timerel in ("after", "between") else None

    @property
    def range_to(self) -> datetime | None:
        if self.timerel == "before" and self.time_at:
            return parse_instant(self.time_at)
        if self.timerel == "between" and self.end_time_at:
            return parse_instant(self.end_time_at)
        return None


def _is_zero(period: Any) -> bool:
    if isinstance(period, isodate.Duration):
        return not (period.years or period.months or period.tdelta)
    return bool(period == timedelta(0))


def _instant(raw: str, what: str) -> str:
    try:
        return format_instant(parse_instant(raw))
    except ValueError as exc:
        raise BadRequestData(f"{what} must be an ISO 8601 date-time, got {raw!r}") from exc


def parse_temporal_query(params: dict[str, Any], options: set[str]) -> TemporalQuery:
    """From the query parameters (or the ``temporalQ`` of a POST query, same names)."""
    q = TemporalQuery()
    timerel = params.get("timerel")
    if timerel is not None:
        if timerel not in TIMERELS:
            raise BadRequestData(f"timerel must be before, after or between, got {timerel!r}")
        if not params.get("timeAt"):
            raise BadRequestData(f"timerel={timerel} needs timeAt")
        q.timerel = timerel
        q.time_at = _instant(params["timeAt"], "timeAt")
        if timerel == "between":
            if not params.get("endTimeAt"):
                raise BadRequestData("timerel=between needs endTimeAt (the end of the interval)")
            q.end_time_at = _instant(params["endTimeAt"], "endTimeAt")
            if q.end_time_at <= q.time_at:
                raise BadRequestData("endTimeAt must be after timeAt")
    elif params.get("timeAt") or params.get("endTimeAt"):
        raise BadRequestData("timeAt/endTimeAt need timerel (before, after or between)")
    prop = params.get("timeproperty", "observedAt")
    if prop not in TIME_PROPERTIES:
        raise BadRequestData(f"timeproperty must be observedAt, createdAt or modifiedAt, got {prop!r}")
    q.time_property, q.time_column = prop, TIME_PROPERTIES[prop]
    if params.get("lastN") is not None:
        raw = str(params["lastN"])
        if not raw.isdigit() or int(raw) < 1 or len(raw) > 9:
            raise BadRequestData(f"lastN must be a positive integer, got {raw!r}")
        q.last_n = int(raw)
    q.temporal_values = "temporalValues" in options
    q.sys_attrs = "sysAttrs" in options
    if "aggregatedValues" in options:
        if q.temporal_values:
            raise BadRequestData("options temporalValues and aggregatedValues exclude each other")
        methods = [m.strip() for m in str(params.get("aggrMethods") or "").split(",") if m.strip()]
        if not methods:
            raise BadRequestData(f"options=aggregatedValues needs aggrMethods (some of {', '.join(AGGR_METHODS)})")
        unknown = [m for m in methods if m not in AGGR_METHODS]
        if unknown:
            raise BadRequestData(f"unknown aggrMethods {', '.join(unknown)}; allowed: {', '.join(AGGR_METHODS)}")
        period = None
        if params.get("aggrPeriodDuration"):
            raw = params["aggrPeriodDuration"]
            try:
                period = isodate.parse_duration(raw)
            except (isodate.ISO8601Error, ValueError, TypeError) as exc:
                raise BadRequestData(f"aggrPeriodDuration must be an ISO 8601 duration (e.g. P1D, PT15M), "
                                     f"got {raw!r}") from exc
            if (isinstance(period, timedelta) and period < timedelta(0)) or (
                    isinstance(period, isodate.Duration) and (period.years < 0 or period.months < 0)):
                raise BadRequestData(f"aggrPeriodDuration must not be negative, got {raw!r}")
        q.aggregation = Aggregation(list(dict.fromkeys(methods)), period)
    elif params.get("aggrMethods") or params.get("aggrPeriodDuration"):
        raise BadRequestData("aggrMethods/aggrPeriodDuration need options=aggregatedValues")
    return q
