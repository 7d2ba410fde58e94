"""Instants of the temporal API (ETSI GS CIM 009 v1.8, clause 4.5.3 ``observedAt``; 5.2.x DateTime): one text form.

The history table compares times as text, so every time stored in ``observed_at``/``modified_at`` and every bound a
client sends is brought to the broker's one format, ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` in UTC — the form
:func:`sleutelbos.broker.entity.now_iso` writes — in which lexical order is time order on SQLite and PostgreSQL alike.
A client's ``observedAt`` stays as sent inside the instance JSON; only the indexed column is normalized.
"""

from __future__ import annotations

from datetime import UTC, datetime

FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def parse_instant(value: str) -> datetime:
    """An ISO 8601 date-time as an aware UTC datetime (a value without offset is taken as UTC); ValueError if not."""
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def format_instant(value: datetime) -> str:
    return value.astimezone(UTC).strftime(FORMAT)


def instant(value: str | None) -> str | None:
    """The stored text form of an ISO 8601 date-time; ``None`` stays ``None``; an unparsable value is kept as is
    (validation rejects those before they reach the store)."""
    if value is None:
        return None
    try:
        return format_instant(parse_instant(value))
    except ValueError:
        return value


def sql_instant(value: object) -> str | None:
    """``ngsild_instant(text)``, registered on the SQLite store's connections: :func:`instant` for the temporal reads
    of observedAt forms that SQL does not bring to the stored form itself (offsets, other precisions)."""
    return instant(value) if isinstance(value, str) else None


def observed_span(instances: dict[str, list[dict[str, object]]] | None) -> tuple[str, str]:
    """The first 19 characters (``YYYY-MM-DDTHH:MM:SS``, UTC) of the earliest and the latest ``observedAt`` among a
    history row's instances, ``("", "")`` when none has one: written beside the row on SQLite, so that the flush
    learns a bucket's time range without taking the row's JSON apart again (docs/decisions/0720). The forms in UTC
    (ending in Z, what meters send) are cut as they are; the others go through :func:`instant`."""
    low = high = ""
    for instances_of_attr in (instances or {}).values():
        for inst in instances_of_attr:
            observed = inst.get("observedAt")
            if not isinstance(observed, str):
                continue
            second = observed[:19] if observed[-1:] == "Z" else (instant(observed) or observed)[:19]
            if not low or second < low:
                low = second
            if second > high:
                high = second
    return low, high
