"""Log entries: the canonical JSON that is hashed into the Merkle tree as one leaf (RFC 9162 §2.1.1 ``d``).

The canonical form is: UTF-8, object keys sorted (by Unicode code point, at every depth), no insignificant
whitespace, strings with only the escapes JSON requires, numbers in their shortest round-trip form (what
``orjson`` writes). The bytes are what is stored, exported and hashed; a verifier re-canonicalises them to detect an
entry that was rewritten in a different (but equivalent-looking) form.

Fields (the issue's list): ``time`` (RFC 3339 UTC with microseconds, stamped by the log when the event is
recorded), ``actor`` (principal, organisation, kind, country), ``action``, ``target``, ``decision``, ``reason``,
``request_id``, ``details`` (a JSON object). Left out: RFC 8785 (JCS) number and key-order rules for astral-plane
characters; entries never need them (keys are ASCII field names, details are ours).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from sleutelbos.core.errors import SleutelbosError
from sleutelbos.core.protocols import Actor, AuditEvent

_OPTS = orjson.OPT_SORT_KEYS
_dumps = orjson.dumps


class InvalidAuditEvent(SleutelbosError):
    """The event cannot be written as a canonical JSON entry (e.g. details that are not JSON)."""


class NonCanonicalEntry(SleutelbosError):
    """Stored or exported entry bytes that are not the canonical form of the JSON they contain."""


def format_time(moment: datetime) -> str:
    """RFC 3339 UTC with a fixed six-digit fraction, so that text order is time order (used by search)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LogClock:
    """The log's time stamps: :func:`format_time` of now, never earlier than the previous stamp (so that entry
    times never go backwards in log order even if the wall clock is stepped back), and cheap — the seconds part is
    formatted once per second, since every append pays for this."""

    __slots__ = ("_last", "_prefix", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""
        self._last = 0

    def now(self) -> str:
        micros = time.time_ns() // 1000
        if micros < self._last:
            micros = self._last
        self._last = micros
        second, fraction = divmod(micros, 1_000_000)
        if second != self._second:
            self._second = second
            self._prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{self._prefix}.{fraction:06d}Z"


def parse_time(text: str) -> datetime:
    """Accepts RFC 3339 / ISO 8601 (``Z`` or an offset); naive times are taken as UTC."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise InvalidAuditEvent(f"not an RFC 3339 time: {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass(slots=True)
class Entry:
    """One log entry as stored: its canonical bytes and the fields a search needs (built once per append, hence
    a plain slotted class rather than a frozen one)."""

    time: str
    actor: str
    action: str
    target: str
    decision: str
    data: bytes  # canonical JSON, the RFC 9162 leaf input


def entry_document(event: AuditEvent, stamp: str) -> dict[str, Any]:
    """The JSON object for ``event``: every field present (``null`` where absent), so entries have one shape.

    Keys are inserted in canonical (sorted) order, at both levels, so that ``orjson``'s sort finds them already
    in place; ``details`` is the caller's own dict (sorted by the same call)."""
    details = event.details
    if type(details) is not dict:  # the common case skips the (slow) ABC check
        if not isinstance(details, Mapping):
            raise InvalidAuditEvent("details must be a JSON object")
        details = dict(details)
    action = event.action
    if not action or (type(action) is not str and not isinstance(action, str)):
        raise InvalidAuditEvent("action must be a non-empty string")
    target = event.target
    if type(target) is not str and not isinstance(target, str):
        raise InvalidAuditEvent("target must be a string")
    actor: Actor = event.actor
    return {
        "action": action,
        "actor": {
            "country": actor.country,
            "kind": actor.kind,
            "organisation": actor.organisation,
            "principal": actor.principal,
        },
        "decision": event.decision,
        "details": details,
        "reason": event.reason,
        "request_id": event.request_id,
        "target": target,
        "time": stamp,
    }


def make_entry(event: AuditEvent, stamp: str | None = None) -> Entry:
    """Canonicalise ``event`` stamped with ``stamp`` (default: now); raises :class:`InvalidAuditEvent` before
    anything is written. On every append's path: one dict, one ``orjson`` call, one :class:`Entry`."""
    stamp = stamp or format_time(datetime.now(UTC))
    document = entry_document(event, stamp)
    try:
        data = _dumps(document, option=_OPTS)
    except TypeError as exc:
        raise InvalidAuditEvent(f"audit entry is not plain JSON: {exc}") from None
    return Entry(stamp, event.actor.principal, document["action"], document["target"], event.decision, data)


def check_canonical(data: bytes) -> dict[str, Any]:
    """Parse entry bytes and insist they are in canonical form; returns the parsed object."""
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise NonCanonicalEntry(f"entry is not JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise NonCanonicalEntry("entry is not a JSON object")
    if orjson.dumps(parsed, option=_OPTS) != data:
        raise NonCanonicalEntry("entry bytes are not in canonical form (sorted keys, no whitespace)")
    return parsed
